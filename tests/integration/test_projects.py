"""Projects on real data: applications, decisions, extracts, expiry, closure, unlinkability.
On SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import json
import os
import stat
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from tests.conftest import ingest_synthetic, ingested_home, keys_of_an_earlier_version
from tre import audit, keys, projects
from tre.db import Database
from tre.exceptions import (
    IntegrityError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    NotInitialised,
    PermissionDenied,
)
from tre.home import Home
from tre.people import Person, local_person
from tre.projects import approvals, extracts, spec
from tre.projects.lifecycle import State

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB, DORA, HUGH, ADA, OLGA = (
    local_person(u) for u in ("alice", "bob", "dora", "hugh", "ada", "olga")
)


@dataclasses.dataclass
class World:
    environ: dict
    home: Home
    db: Database


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request, tmp_path_factory, synthetic):
    """A TRE home with both synthetic deliveries ingested, shared by this module's tests
    (each test uses its own project ids)."""
    with ingested_home(request, tmp_path_factory, synthetic, "projects") as (environ, home, db):
        yield World(environ, home, db)


def application(project_id: str, **changes) -> spec.ProjectSpec:
    base = spec.load(REPO / "projects" / "asthma-ks4.yaml")
    today = dt.date.today()
    return dataclasses.replace(
        base, id=project_id, start=today, end=today + dt.timedelta(days=365), **changes
    )


def approved(db, project_id, **changes):
    request = application(project_id, **changes)
    projects.submit(db, request, ALICE)
    deciders = {"dfe": DORA, "nhs": HUGH}
    for custodian in request.custodians:
        project = projects.decide(db, project_id, custodian, deciders[custodian], approve=True)
    return project


def events_of(db, project_id):
    with db.read() as session:
        return [e for e in audit.events(session, object_type="project", object_id=project_id)]


def read_extract(home: Home, project_id: str, dataset: str) -> list[tuple]:
    path = extracts.folder(home, project_id) / "extracts" / dataset
    with duckdb.connect() as con:
        result = con.execute(f"SELECT * FROM read_parquet('{path}/**/*.parquet')")
        columns = [d[0] for d in result.description]
        return columns, result.fetchall()


# -- the lifecycle -------------------------------------------------------------------------


def test_submit_approve_provision(world):
    home, db = world.home, world.db
    project = approved(db, "p-flow")
    assert project.status is State.APPROVED
    project, changed = extracts.provision(home, db, "p-flow", ADA)
    assert changed and project.status is State.PROVISIONED
    actions = [e["action"] for e in events_of(db, "p-flow")]
    assert actions == [
        "project.drafted",
        "project.submitted",
        "project.custodian_approved",
        "project.approved",
        "project.provisioned",
        "privacy.budget_set",
    ]
    manifest = json.loads(
        (extracts.folder(home, "p-flow") / "extracts" / "manifest.json").read_text()
    )
    assert set(manifest["datasets"]) == {"pupils", "ks4", "hes_apc"}
    columns, rows = read_extract(home, "p-flow", "pupils")
    assert columns[0] == "pseudo_id" and "person_key" not in columns
    assert len(rows) == manifest["datasets"]["pupils"]["rows"]
    nc_year = columns.index("nc_year")  # the cohort: everyone was once in year 11
    assert {r[0] for r in rows} == {r[0] for r in rows if r[nc_year] == 11}


def test_provisioning_is_idempotent_and_files_are_read_only(world):
    home, db = world.home, world.db
    approved(db, "p-idem")
    extracts.provision(home, db, "p-idem", ADA)
    target = extracts.folder(home, "p-idem") / "extracts"
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    _, changed = extracts.provision(home, db, "p-idem", ADA)
    assert not changed
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*")} == before
    for path in target.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert not mode & 0o222, path  # nobody may write
        assert not mode & 0o007, path  # others may not read
    manifest = json.loads((target / "manifest.json").read_text())
    for d in manifest["datasets"].values():
        for f in d["files"]:
            assert extracts._sha256(target / f["path"]) == f["sha256"]
    if os.geteuid() == 0:
        group = grp.getgrnam(extracts.os_group("p-idem"))
        assert all(p.stat().st_gid == group.gr_gid for p in target.rglob("*"))


def test_provisioning_refuses_unless_approved(world):
    home, db = world.home, world.db
    projects.submit(db, application("p-early"), ALICE)
    with pytest.raises(InvalidTransition, match="only an approved project is provisioned"):
        extracts.provision(home, db, "p-early", ADA)
    assert not (extracts.folder(home, "p-early") / "extracts").exists()


@pytest.mark.parametrize(
    ("state_after", "action", "allowed"),
    [
        ("provisioned", "suspend", True),
        ("provisioned", "resume", False),
        ("suspended", "resume", True),
        ("suspended", "suspend", False),
        ("approved", "suspend", False),
        ("submitted", "suspend", False),
    ],
)
def test_suspend_and_resume_transitions(world, state_after, action, allowed):
    home, db = world.home, world.db
    project_id = f"p-{state_after[:4]}-{action}"
    projects.submit(db, application(project_id), ALICE)
    if state_after != "submitted":
        projects.decide(db, project_id, "dfe", DORA, approve=True)
        projects.decide(db, project_id, "nhs", HUGH, approve=True)
    if state_after in ("provisioned", "suspended"):
        extracts.provision(home, db, project_id, ADA)
    if state_after == "suspended":
        projects.set_state(db, project_id, "suspend", ADA, "investigation")
    if allowed:
        assert projects.set_state(db, project_id, action, ADA).state in ("suspended", "provisioned")
    else:
        with pytest.raises(InvalidTransition, match=f"is {state_after} cannot be"):
            projects.set_state(db, project_id, action, ADA)


def test_only_administrators_provision_suspend_and_close(world):
    home, db = world.home, world.db
    approved(db, "p-admin")
    for person in (ALICE, DORA, OLGA):
        with pytest.raises(PermissionDenied, match="tre-admin role"):
            extracts.provision(home, db, "p-admin", person)
        with pytest.raises(PermissionDenied, match="tre-admin role"):
            projects.set_state(db, "p-admin", "suspend", person)
        with pytest.raises(PermissionDenied, match="tre-admin role"):
            extracts.close(home, db, "p-admin", person, "no")


# -- decisions -----------------------------------------------------------------------------


def test_a_custodian_decides_only_for_their_own_datasets(world):
    db = world.db
    projects.submit(db, application("p-wrong"), ALICE)
    with pytest.raises(PermissionDenied, match="not a custodian of dfe"):
        projects.decide(db, "p-wrong", "dfe", HUGH, approve=True)
    with pytest.raises(PermissionDenied, match="custodian role"):
        projects.decide(db, "p-wrong", "dfe", ADA, approve=True)
    with pytest.raises(PermissionDenied, match="custodian role"):
        projects.decide(db, "p-wrong", "dfe", ALICE, approve=True)
    assert projects.get(db, "p-wrong").status is State.SUBMITTED


def test_an_applicant_never_approves_their_own_project(world):
    db = world.db
    carol = Person("carol", frozenset({"researcher", "custodian"}), frozenset({"custodian-dfe"}))
    projects.submit(db, application("p-own", lead="carol", members=("carol",)), carol)
    with pytest.raises(PermissionDenied, match="member of project p-own"):
        projects.decide(db, "p-own", "dfe", carol, approve=True)


def test_only_the_lead_researcher_submits(world):
    db = world.db
    with pytest.raises(PermissionDenied, match="lead"):
        projects.submit(db, application("p-notlead"), BOB)
    with pytest.raises(PermissionDenied, match="researcher role"):
        projects.submit(db, application("p-notres", lead="dora"), DORA)


def test_approval_waits_for_every_custodian(world):
    home, db = world.home, world.db
    projects.submit(db, application("p-wait"), ALICE)
    assert projects.decide(db, "p-wait", "nhs", HUGH, approve=True).status is State.SUBMITTED
    with pytest.raises(InvalidTransition, match="only an approved project is provisioned"):
        extracts.provision(home, db, "p-wait", ADA)
    with pytest.raises(InvalidInput, match="already decided"):
        projects.decide(db, "p-wait", "nhs", HUGH, approve=True)
    assert projects.decide(db, "p-wait", "dfe", DORA, approve=True).status is State.APPROVED


def test_one_rejection_rejects_with_reasons(world):
    db = world.db
    projects.submit(db, application("p-reject"), ALICE)
    projects.decide(db, "p-reject", "nhs", HUGH, approve=True)
    with pytest.raises(InvalidInput, match="Say why"):
        projects.decide(db, "p-reject", "dfe", DORA, approve=False, reasons="no")
    project = projects.decide(
        db,
        "p-reject",
        "dfe",
        DORA,
        approve=False,
        reasons="The ethnicity column is not needed for the stated purpose.",
    )
    assert project.status is State.REJECTED
    reasons = [d.reasons for d in projects.decisions(db, "p-reject") if d.decision == "rejected"]
    assert reasons == ["The ethnicity column is not needed for the stated purpose."]
    with pytest.raises(InvalidTransition):
        projects.decide(db, "p-reject", "dfe", DORA, approve=True)


def test_an_approval_that_narrows_columns_cohort_end_budget_and_compute(world):
    home, db = world.home, world.db
    projects.submit(db, application("p-narrow"), ALICE)
    request = projects.get(db, "p-narrow").spec_object()
    conditions = approvals.Conditions(
        columns={"pupils": ("sex", "fsm_eligible", "academic_year", "nc_year")},
        cohort=(approvals.parse_cohort_condition(request, "pupils:academic_year gte 2020"),),
        end=request.end - dt.timedelta(days=30),
        privacy_budget=0.5,
        compute=spec.Compute(workers=2),
    )
    projects.decide(db, "p-narrow", "dfe", DORA, approve=True, conditions=conditions)
    smaller = approvals.Conditions(compute=spec.Compute(workers=3, worker_memory_gb=1.5))
    project = projects.decide(db, "p-narrow", "nhs", HUGH, approve=True, conditions=smaller)
    effective = project.approved()
    # Each custodian's smaller limit holds; what neither lowered stays as asked.
    assert request.compute == spec.Compute(workers=4, worker_cores=1, worker_memory_gb=2)
    assert effective.compute == spec.Compute(workers=2, worker_cores=1, worker_memory_gb=1.5)
    assert effective.datasets["pupils"] == ("sex", "fsm_eligible", "academic_year", "nc_year")
    assert effective.datasets["ks4"] == request.datasets["ks4"]
    assert effective.privacy_budget == 0.5 and effective.end == conditions.end
    extracts.provision(home, db, "p-narrow", ADA)
    columns, rows = read_extract(home, "p-narrow", "pupils")
    assert columns == ["pseudo_id", "sex", "fsm_eligible", "academic_year", "nc_year"]
    # the custodian's cohort condition holds for every person in the extract
    year, nc = columns.index("academic_year"), columns.index("nc_year")
    eligible = {r[0] for r in rows if r[year] >= 2020 and r[nc] == 11}
    assert {r[0] for r in rows} == eligible


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (approvals.Conditions(columns={"pupils": ("birth_month",)}), "were not requested"),
        (approvals.Conditions(columns={"hes_apc": ("age_band",)}), "own datasets"),
        (approvals.Conditions(privacy_budget=5.0), "only lower the privacy budget"),
        (approvals.Conditions(compute=spec.Compute(workers=8)), "clusters' workers, from 4"),
        (approvals.Conditions(compute=spec.Compute(worker_cores=0)), "compute.worker_cores"),
        (
            approvals.Conditions(end=dt.date.today() + dt.timedelta(days=3650)),
            "only bring the end forward",
        ),
    ],
)
def test_an_approval_can_only_narrow(world, conditions, message):
    db = world.db
    project_id = "p-widen-" + "".join(ch for ch in message if ch.isalpha())[:12]
    projects.submit(db, application(project_id), ALICE)
    with pytest.raises(InvalidInput, match=message):
        projects.decide(db, project_id, "dfe", DORA, approve=True, conditions=conditions)


# -- expiry and closure --------------------------------------------------------------------


def test_a_project_past_its_end_date_expires(world):
    home, db = world.home, world.db
    approved(db, "p-expire")
    extracts.provision(home, db, "p-expire", ADA)
    end = dt.date.fromisoformat(projects.get(db, "p-expire").end_date)
    assert "p-expire" not in projects.expire_due(db, today=end)
    assert "p-expire" in projects.expire_due(db, today=end + dt.timedelta(days=1))
    assert projects.get(db, "p-expire").status is State.EXPIRED
    expired = [e for e in events_of(db, "p-expire") if e["action"] == "project.expired"]
    assert len(expired) == 1 and expired[0]["actor"] == "tre"
    with pytest.raises(InvalidTransition, match="expired cannot be resumed"):
        projects.set_state(db, "p-expire", "resume", ADA)


def test_closure_destroys_extracts_and_key_and_certifies_it(world):
    home, db = world.home, world.db
    approved(db, "p-close")
    extracts.provision(home, db, "p-close", ADA)
    base = extracts.folder(home, "p-close")
    (base / "work" / "notes.txt").write_text("analysis notes")
    manifest = json.loads((base / "extracts" / "manifest.json").read_text())
    assert keys.project_key(home.keys, "p-close")
    certificate = extracts.close(home, db, "p-close", ADA, "project finished")
    assert not base.exists()
    with pytest.raises(IntegrityError, match="cannot be computed"):
        keys.project_key(home.keys, "p-close")
    assert projects.get(db, "p-close").status is State.CLOSED
    closed = next(e for e in events_of(db, "p-close") if e["action"] == "project.closed")
    listed = {f["sha256"] for f in closed["details"]["extract_files"]}
    assert listed == {f["sha256"] for d in manifest["datasets"].values() for f in d["files"]}
    assert closed["details"]["deleted_by"] == "ada"
    assert closed["details"]["project_key_destroyed"] is True
    assert closed["details"]["work_files_deleted"] == 1
    assert certificate["reason"] == "project finished"
    assert next(iter(events_of(db, "p-close")))["action"] == "project.drafted"  # kept
    with pytest.raises(InvalidTransition, match="already closed"):
        extracts.close(home, db, "p-close", ADA, "again")


# -- unlinkability -------------------------------------------------------------------------


def test_two_projects_over_the_same_data_cannot_join_their_rows(world):
    home, db = world.home, world.db
    datasets = {"pupils": ("sex", "academic_year"), "hes_apc": ("episode_id", "age_band")}
    for project_id in ("p-one", "p-two"):
        approved(db, project_id, datasets=datasets, cohort=())
        extracts.provision(home, db, project_id, ADA)
    for dataset in datasets:
        columns_1, rows_1 = read_extract(home, "p-one", dataset)
        columns_2, rows_2 = read_extract(home, "p-two", dataset)
        assert columns_1 == columns_2 and len(rows_1) == len(rows_2) > 0
        for i, column in enumerate(columns_1):
            values_1 = [r[i] for r in rows_1]
            values_2 = [r[i] for r in rows_2]
            # A column that identifies rows (most values distinct) must share no value.
            if len(set(values_1)) > 0.5 * len(values_1):
                assert not set(values_1) & set(values_2), (dataset, column)
    _, pupils_1 = read_extract(home, "p-one", "pupils")
    _, pupils_2 = read_extract(home, "p-two", "pupils")
    assert not {r[0] for r in pupils_1} & {r[0] for r in pupils_2}
    # and within a project, one person keeps one pseudo_id across datasets
    _, hes = read_extract(home, "p-one", "hes_apc")
    assert {r[0] for r in hes} & {r[0] for r in pupils_1}


def test_pseudo_ids_are_hmacs_under_the_project_key(world):
    home, db = world.home, world.db
    approved(db, "p-hmac", datasets={"pupils": ("sex",)}, cohort=())
    extracts.provision(home, db, "p-hmac", ADA)
    from tre import pseudonyms

    key = keys.project_key(home.keys, "p-hmac")
    with duckdb.connect() as con:
        curated_keys = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT person_key FROM "
                f"read_parquet('{home.curated}/dfe/pupils/**/*.parquet')"
            ).fetchall()
        }
    _, rows = read_extract(home, "p-hmac", "pupils")
    assert {r[0] for r in rows} == {pseudonyms.pseudonym(key, str(k)) for k in curated_keys}


def test_provisioning_refuses_curated_keys_of_an_earlier_version(environ, synthetic):
    home, db = ingest_synthetic(environ, synthetic)
    try:
        keys_of_an_earlier_version(home.root, "pupils")
        approved(db, "p-old", datasets={"pupils": ("sex",)}, cohort=())
        with pytest.raises(
            NotInitialised, match="curated data of pupils was written by an earlier"
        ):
            extracts.provision(home, db, "p-old", ADA)
        assert not (extracts.folder(home, "p-old") / "extracts").exists()
    finally:
        db.dispose()


# -- reading -------------------------------------------------------------------------------


def test_who_may_see_a_project(world):
    db = world.db
    projects.submit(db, application("p-see"), ALICE)
    for person in (ALICE, BOB, DORA, HUGH, ADA):
        assert projects.get(db, "p-see", person).id == "p-see"
    with pytest.raises(PermissionDenied):
        projects.get(db, "p-see", OLGA)
    assert "p-see" not in projects.ids(projects.listing(db, OLGA))
    with pytest.raises(NotFound, match="no project"):
        projects.get(db, "p-nothing")


def test_the_risk_report_shows_k_and_drivers(world):
    home, db = world.home, world.db
    from tre.projects import risk

    report = {r.dataset: r for r in risk.report(home, db, application("p-risk"))}
    hes = report["hes_apc"]
    assert hes.quasi_identifiers == ["admission_month", "age_band"]
    assert hes.k >= 1 and 0 <= hes.share_below_5 <= hes.share_below_10 <= 1
    assert hes.drivers[0][0] == "admission_month"  # the finest quasi-identifier drives risk
    assert report["ks4"].quasi_identifiers == [] and report["ks4"].persons > 0


def test_the_database_holds_what_the_functions_say(world):
    db = world.db
    approved(db, "p-db")
    with db.engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT custodian, decision FROM approvals WHERE project_id = 'p-db'")
        ).all()
    assert sorted(rows) == [("dfe", "approved"), ("nhs", "approved")]


def test_a_flood_of_refusals_is_itself_recorded_once_a_minute(world):
    """Found by the fourth review: a kernel posting refusals of its own could drown the
    server's genuine ones (past the limit they were dropped unrecorded)."""
    home, db = world.home, world.db
    approved(db, "p-refusals")
    extracts.provision(home, db, "p-refusals", ADA)
    for n in range(projects.REFUSALS_PER_MINUTE):
        projects.record_refusal(db, "p-refusals", ALICE, f"fake-{n}.csv", 1, "a flood")
    for _ in range(3):
        with pytest.raises(InvalidInput, match="recorded together"):
            projects.record_refusal(db, "p-refusals", ALICE, "big.csv", 50 << 20, "real")
    with db.read() as session:
        actions = [
            e["action"]
            for e in audit.events(session, object_type="project", object_id="p-refusals")
        ]
    assert actions.count("workspace.file_refused") == projects.REFUSALS_PER_MINUTE
    assert actions.count("workspace.refusals_throttled") == 1
