"""A researcher's day in a real Chromium: she logs in to the hub on Keycloak's page, is refused
another project's workspace, starts her own, runs the safe-outputs template in JupyterLab
(which asks for its table's export), two output checkers approve it in the portal, and she
downloads the release."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import log_in
from tests.conftest import HUB_OTHER

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.keycloak]

TEMPLATE = "03-safe-outputs.ipynb"


def test_a_template_run_in_the_workspace_is_released_through_the_airlock(
    chromium, portal, hub, screenshot
):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{hub.hub_url}/hub/oauth_login")
    page.fill("#username", "alice")
    page.fill("#password", hub.demo_password)
    page.click("#kc-login")
    page.wait_for_url(re.compile(r"/hub/home"))
    # Her projects' workspaces, and only those.
    rows = page.inner_text("table.server-table")
    assert portal.project in rows and HUB_OTHER not in rows
    assert portal.pending not in rows  # bob's submitted project; alice is not in it
    screenshot(page, "hub-home")

    # Another project's workspace is refused, with the reason.
    page.goto(f"{hub.hub_url}/hub/spawn/alice/{HUB_OTHER}")
    assert "not a member of a project" in page.inner_text("body")
    assert portal.project in page.inner_text("body")  # says which one she may start
    screenshot(page, "hub-refused")

    # Her project's workspace starts from the home page and JupyterLab opens.
    page.goto(f"{hub.hub_url}/hub/home")
    page.click(f"#start-{portal.project}")
    page.wait_for_url(re.compile(rf"/user/alice/{portal.project}/lab"), timeout=120_000)
    page.goto(f"{hub.hub_url}/user/alice/{portal.project}/lab/tree/{TEMPLATE}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    for _ in range(3):  # a click on a menu JupyterLab is still laying out can be lost
        page.click("#jp-MainMenu >> text=Run")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_selector(".jp-InputPrompt:has-text('[1]')", timeout=20_000)
            break
        except PlaywrightTimeout:
            screenshot(page, "workspace-not-running")
    made = page.wait_for_selector(
        ".jp-OutputArea-output:has-text('Export request #')", timeout=300_000
    )
    request_id = int(re.search(r"Export request #(\d+)", made.inner_text()).group(1))
    assert "in_review" in made.inner_text()
    assert "Error" not in page.inner_text(".jp-Notebook")  # every cell ran
    made.scroll_into_view_if_needed()
    screenshot(page, "workspace-notebook")
    # She stops it from the hub's home page.
    page.goto(f"{hub.hub_url}/hub/home")
    page.click(f"#stop-{portal.project}")
    page.wait_for_selector(f"#start-{portal.project}:visible", timeout=60_000)
    servers = context.request.get(f"{hub.hub_url}/hub/api/users/alice").json()["servers"]
    assert not servers.get(portal.project, {}).get("ready")
    context.close()

    # Two output checkers approve it in the portal.
    for checker in ("olga", "oscar"):
        checker_page = log_in(chromium, portal, checker)
        checker_page.goto(f"{portal.url}/requests/{request_id}")
        assert "Attainment 8 by FSM eligibility and sex" in checker_page.inner_text("main")
        checker_page.check("input[name=vote][value=approve]")
        checker_page.click("text=Vote on output 1")
        checker_page.context.close()

    # She downloads the release.
    alice = log_in(chromium, portal, "alice")
    alice.goto(f"{portal.url}/requests/{request_id}")
    assert "released" in alice.inner_text(".state")
    with alice.expect_download() as info:
        alice.click("text=Download output 1")
    rows = list(csv.DictReader(io.StringIO(info.value.path().read_text())))
    assert rows and {"value", "note"} <= set(rows[0])
    alice.context.close()
