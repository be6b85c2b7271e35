"""The whole journey of a project through the portal in a real Chromium, each person logging
in on Keycloak's own login page: a researcher applies, the custodians approve, an
administrator provisions, the researcher checks a table and asks for its export, two output
checkers approve it and the researcher downloads the release."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
import yaml

from tests.browser.conftest import log_in
from tests.conftest import REPO
from tre import outputs
from tre.outputs import specs
from tre.people import local_person

pytestmark = [pytest.mark.browser, pytest.mark.keycloak]

PROJECT = "browser-project"


def application() -> str:
    data = yaml.safe_load((REPO / "projects" / "asthma-ks4.yaml").read_text())
    today = dt.date.today()
    data.update(
        id=PROJECT, start=today.isoformat(), end=(today + dt.timedelta(days=90)).isoformat()
    )
    data.pop("cohort", None)
    return yaml.safe_dump(data, sort_keys=False)


def test_apply_approve_provision_request_review_download(chromium, portal, screenshot):
    # A researcher applies.
    alice = log_in(chromium, portal, "alice")
    alice.click("nav >> text=Apply")
    alice.fill("textarea[name=text]", application())
    alice.click("text=Submit the application")
    assert f"{PROJECT}:" in alice.inner_text("h1")
    assert "submitted" in alice.inner_text(".state")

    # Each custodian reads the disclosure-risk report and approves.
    for custodian, name in (("dora", "dfe"), ("hugh", "nhs")):
        page = log_in(chromium, portal, custodian)
        page.click("nav >> text=Decisions")
        page.click(f"a:has-text('{PROJECT}')")
        assert "Disclosure risk of the extract as requested" in page.content()
        if custodian == "dora":
            screenshot(page, "custodian-decision")
        page.click("button[value=approve]")
        assert re.search(rf"{name}\s*: approved by {custodian}", page.inner_text("main"))
        page.context.close()

    # An administrator provisions the project.
    ada = log_in(chromium, portal, "ada")
    ada.goto(f"{portal.url}/projects/{PROJECT}")
    ada.click("form[action$='/action/provision'] button")
    assert "provisioned" in ada.inner_text(".state")
    ada.click("nav >> text=Administration")
    assert "Audit log" in ada.inner_text("main")
    screenshot(ada, "admin")

    # The researcher checks a table and asks for its export.
    # (Outputs are computed in the workspace: here, as its kernel would, through the TRE.)
    table = specs.parse(
        {
            "name": "pupils by ethnicity and free school meals",
            "kind": "table",
            "dataset": "pupils",
            "rows": ["ethnicity"],
            "cols": ["fsm_eligible"],
            "margins": True,
        }
    )
    made, _ = outputs.check(portal.home, portal.db, PROJECT, table, local_person("alice"))
    alice.goto(f"{portal.url}/outputs/{made.id}")
    assert "pupils by ethnicity and free school meals" in alice.inner_text("h1")
    # Outside the workspace, before release: its status and reasons, no value or label.
    assert "shown in the project's workspace" in alice.inner_text("main")
    assert not alice.locator("table.result").count()
    screenshot(alice, "researcher-output")
    alice.goto(f"{portal.url}/projects/{PROJECT}")
    alice.fill("input[name=title]", "Table 1 of the paper")
    alice.click("text=New export request")
    option = alice.locator("select[name=output_id] option", has_text="pupils by ethnicity and free")
    alice.select_option("select[name=output_id]", value=option.get_attribute("value"))
    alice.fill("input[name=description]", "Pupils by ethnicity and FSM eligibility, for table 1")
    alice.click("button:has-text('Add')")
    alice.click("text=Submit for review")
    assert "in review" in alice.inner_text(".state")
    request_url = alice.url

    # Two output checkers review it, each without seeing the other's vote.
    for checker in ("olga", "oscar"):
        page = log_in(chromium, portal, checker)
        page.click("nav >> text=Review queue")
        page.click("a:has-text('Table 1 of the paper')")
        assert "Reviews: 0 of 2" in page.inner_text("main") or checker == "oscar"
        if checker == "olga":
            screenshot(page, "checker-review")
        page.check("input[name=vote][value=approve]")
        page.click("text=Vote on output 1")
        page.context.close()

    # The researcher downloads the release.
    alice.goto(request_url)
    assert "released" in alice.inner_text(".state")
    with alice.expect_download() as info:
        alice.click("text=Download output 1")
    released = info.value.path().read_text()
    rows = list(csv.DictReader(io.StringIO(released)))
    assert any(r["note"] == "suppressed" for r in rows)
    for row in rows:  # suppressed, or an empty cell, or at least the threshold
        assert (
            row["note"] == "suppressed" or float(row["value"]) in (0,) or float(row["value"]) >= 10
        )
    alice.click("nav >> text=Home")
    screenshot(alice, "researcher-home")
    alice.context.close()
    ada.context.close()
