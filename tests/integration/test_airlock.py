"""The airlock over a provisioned project's real outputs, on SQLite and PostgreSQL: every state
of an export request, independent reviews, conflicts, returns, release, download, revocation."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.factories import in_workspace
from tre import airlock, audit, outputs
from tre.airlock.lifecycle import OWNERS, TRANSITIONS, State
from tre.exceptions import (
    IntegrityError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
)
from tre.outputs import specs
from tre.people import Person, local_person

ALICE, BOB, DORA, ADA = (local_person(u) for u in ("alice", "bob", "dora", "ada"))
OLGA, OSCAR, OTTO = (local_person(u) for u in ("olga", "oscar", "otto"))
#: A researcher of the project who is also an output checker: still cannot review it.
BOB_CHECKER = Person("bob", frozenset({"researcher", "output-checker"}))


def table_output(world, name="pupils by sex", **fields):
    spec = specs.parse(
        {"name": name, "kind": "table", "dataset": "pupils", "rows": ["sex"], **fields}
    )
    output, _ = outputs.check(world.home, world.db, world.project, spec, ALICE)
    return output


def draft(world, *outputs_, title="Tables for the paper"):
    request = airlock.create(world.db, world.project, title, ALICE)
    for output in outputs_:
        airlock.put_output(
            world.db, request.id, output.id, f"{output.name}, for table 1 of the paper", ALICE
        )
    return request


def submitted(world, *outputs_):
    request = draft(world, *(outputs_ or (table_output(world),)))
    return airlock.submit(world.home, world.db, request.id, ALICE)


def vote(world, request, slot, by, choice="approve", comment="", visibility="researcher"):
    comment = comment or ("" if choice == "approve" else f"{by.username}: please change this")
    return airlock.review(world.home, world.db, request.id, slot, choice, comment, by, visibility)[
        "request"
    ]


def events_of(world, request_id):
    with world.db.read() as session:
        return [
            e["action"]
            for e in audit.events(session, object_type="export_request", object_id=str(request_id))
        ]


# -- the lifecycle -----------------------------------------------------------------------------


def test_every_state_has_an_owner_and_every_transition_an_audit_event():
    assert set(OWNERS) == set(State)
    reachable = {State.DRAFT} | {t.target for t in TRANSITIONS}
    assert reachable == set(State)
    for t in TRANSITIONS:
        assert t.event.startswith("request.")
        assert t.event in audit.ACTIONS


def test_every_state_is_reached_with_its_audit_event(world):
    seen: dict[str, set[str]] = {}

    def note(request):
        fresh = airlock.get(world.db, request.id)
        seen.setdefault(fresh.state, set()).update(events_of(world, request.id))
        return fresh

    # draft → withdrawn
    note(airlock.withdraw(world.db, note(draft(world, table_output(world))).id, ALICE))
    # submitted → in review → approved → released → revoked
    request = submitted(world)
    note(request)
    vote(world, request, 1, OLGA)
    assert vote(world, request, 1, OSCAR) == "released"
    note(request)
    note(airlock.revoke(world.home, world.db, request.id, ADA, "released by mistake, see #12"))
    # in review → returned ; returned → rejected
    request = submitted(world)
    vote(world, request, 1, OLGA, "request_changes")
    assert vote(world, request, 1, OSCAR, "request_changes") == "returned"
    note(request)
    with pytest.raises(InvalidInput, match=r"asked for changes to output\(s\) 1"):
        airlock.submit(world.home, world.db, request.id, ALICE)
    replacement = table_output(world, "pupils by sex again")
    airlock.put_output(world.db, request.id, replacement.id, "the same, checked again", ALICE, 1)
    airlock.submit(world.home, world.db, request.id, ALICE)
    vote(world, request, 1, OLGA, "reject")
    assert vote(world, request, 1, OSCAR, "reject") == "rejected"
    note(request)
    # the submitted state is passed through on every submission
    assert "request.submitted" in seen["in_review"] | seen["returned"]
    assert set(seen) | {"submitted", "in_review", "approved"} == {s.value for s in State}
    assert {"request.released", "request.approved"} <= seen["released"]
    assert "request.revoked" in seen["revoked"]
    assert "request.returned" in seen["returned"]
    assert "request.rejected" in seen["rejected"]
    assert "request.withdrawn" in seen["withdrawn"]


def test_impossible_moves_are_refused_and_say_what_is_possible(world):
    request = submitted(world)
    with pytest.raises(InvalidTransition, match=r"in review cannot be submitted\."):
        airlock.submit(world.home, world.db, request.id, ALICE)
    with pytest.raises(InvalidTransition, match=r"Possible: .*withdraw"):
        airlock.put_output(
            world.db, request.id, table_output(world).id, "another table of pupils", ALICE
        )
    with pytest.raises(PermissionDenied, match="Only the author"):
        airlock.withdraw(world.db, request.id, BOB)
    with pytest.raises(NotFound, match="no export request #999999"):
        airlock.withdraw(world.db, 999999, ALICE)


def test_only_researchers_of_the_active_project_create_requests(world):
    with pytest.raises(PermissionDenied):
        airlock.create(world.db, world.project, "tables", OLGA)
    with pytest.raises(PermissionDenied, match="not a member"):
        airlock.create(world.db, world.project, "tables", Person("rita", frozenset({"researcher"})))
    with pytest.raises(InvalidInput, match="title"):
        airlock.create(world.db, world.project, " ", ALICE)


def test_a_request_needs_described_outputs_of_its_own_project(world):
    request = airlock.create(world.db, world.project, "Empty for now", ALICE)
    with pytest.raises(InvalidInput, match="at least one output"):
        airlock.submit(world.home, world.db, request.id, ALICE)
    output = table_output(world)
    with pytest.raises(InvalidInput, match="Describe each output"):
        airlock.put_output(world.db, request.id, output.id, "a table", ALICE)
    with pytest.raises(InvalidInput, match="not an output of project"):
        airlock.put_output(world.db, request.id, 999999, "a table of nothing", ALICE)
    with pytest.raises(PermissionDenied, match="Only the author"):
        airlock.put_output(world.db, request.id, output.id, "bob adds a table here", BOB)
    assert airlock.slots(world.db, request.id) == []


def test_an_output_with_nothing_releasable_cannot_be_requested(world):
    # Every cell of a table by pupil-level categories is too small: nothing could leave.
    output = table_output(world, "too fine", rows=["sex", "ethnicity", "la_code", "idaci_decile"])
    assert output.result["summary"]["status"] == "fail"
    assert all(c.get("value") is None for c in output.result["cells"])
    request = airlock.create(world.db, world.project, "Too fine", ALICE)
    with pytest.raises(InvalidInput, match="nothing of it could be released"):
        airlock.put_output(world.db, request.id, output.id, "every combination", ALICE)


def test_submission_runs_the_automatic_checks_again(world):
    output = table_output(world)
    request = draft(world, output)
    with world.db.write() as session:  # as if the stored result had been edited
        stored = session.get(outputs.Output, output.id)
        stored.result = {**stored.result, "cells": []}
    airlock.submit(world.home, world.db, request.id, ALICE)
    again = outputs.get(world.db, output.id)
    assert again.result["cells"], "the result was recomputed from the extract"
    with world.db.read() as session:
        checked = [
            e
            for e in audit.events(session, object_type="export_request", object_id=str(request.id))
            if e["action"] == "request.checked"
        ]
    assert checked and checked[-1]["details"]["checks"]["1"] == again.status


# -- who reviews -------------------------------------------------------------------------------


def test_only_independent_output_checkers_review(world):
    request = submitted(world)
    for person, reason in [
        (ALICE, "output-checker"),
        (BOB_CHECKER, "is a member of project"),
        (DORA, "output-checker"),
        (ADA, "output-checker"),
    ]:
        with pytest.raises(PermissionDenied, match=reason):
            vote(world, request, 1, person)
    author_checker = Person("alice", frozenset({"researcher", "output-checker"}))
    with pytest.raises(PermissionDenied):
        vote(world, request, 1, author_checker)
    assert airlock.view(world.db, request.id, OLGA)["outputs"][0]["reviews_received"] == 0


def test_a_checker_reviews_an_output_once_and_says_why_unless_approving(world):
    request = submitted(world)
    with pytest.raises(InvalidInput, match="Say why"):
        airlock.review(world.home, world.db, request.id, 1, "reject", "no", OLGA)
    with pytest.raises(InvalidInput, match="A vote is one of"):
        airlock.review(world.home, world.db, request.id, 1, "maybe", "", OLGA)
    with pytest.raises(NotFound, match="no output 7"):
        vote(world, request, 7, OLGA)
    vote(world, request, 1, OLGA)
    with pytest.raises(InvalidInput, match="already reviewed"):
        vote(world, request, 1, OLGA)


def test_drafts_are_private_to_the_project(world):
    request = draft(world, table_output(world))
    with pytest.raises(PermissionDenied):
        airlock.view(world.db, request.id, OLGA)
    assert airlock.view(world.db, request.id, BOB)["state"] == "draft"
    assert request.id not in {r["id"] for r in airlock.queue(world.db, OLGA, limit=10_000)}


def test_a_reviewer_does_not_see_the_other_vote_until_both_have_voted(world):
    request = submitted(world, table_output(world), table_output(world, "pupils by fsm"))
    vote(world, request, 1, OLGA, "request_changes", "olga: merge the smaller ethnic groups")
    before = airlock.view(world.db, request.id, OSCAR)["outputs"][0]
    assert before["reviews"] == [] and before["reviews_received"] == 1
    mine = airlock.view(world.db, request.id, OLGA)["outputs"][0]["reviews"]
    assert [r["reviewer"] for r in mine] == ["olga"]
    researcher = airlock.view(world.db, request.id, ALICE)["outputs"][0]
    assert researcher["reviews"] == [] and researcher["outcome"] is None
    vote(world, request, 1, OSCAR, "approve")
    after = airlock.view(world.db, request.id, OSCAR)["outputs"][0]
    assert after["outcome"] == "conflicted"
    assert sorted(r["reviewer"] for r in after["reviews"]) == ["olga", "oscar"]
    # a third review resolves the conflict; the researcher sees comments meant for them only
    vote(world, request, 1, OTTO, "request_changes", "otto: checkers only", visibility="checkers")
    decided = airlock.view(world.db, request.id, ALICE)["outputs"][0]
    assert decided["outcome"] == "changes requested"
    comments = [r["comment"] for r in decided["reviews"]]
    assert "olga: merge the smaller ethnic groups" in comments
    assert "otto: checkers only" not in comments
    assert all(r["reviewer"] == "an output checker" for r in decided["reviews"])
    assert airlock.get(world.db, request.id).state == "in_review"  # output 2 is undecided
    with pytest.raises(InvalidInput, match="already decided"):
        vote(world, request, 1, Person("ivy", frozenset({"output-checker"})))


def test_a_return_lets_the_researcher_replace_an_output_and_restarts_every_review(world):
    first, second = table_output(world), table_output(world, "pupils by fsm")
    request = submitted(world, first, second)
    vote(world, request, 1, OLGA, "request_changes")
    vote(world, request, 1, OSCAR, "request_changes")
    vote(world, request, 2, OLGA)
    assert vote(world, request, 2, OSCAR) == "returned"
    better = table_output(world, "pupils by sex, rounded", rows=["sex"], cols=["fsm_eligible"])
    airlock.put_output(world.db, request.id, better.id, "the table, with broader groups", ALICE, 1)
    airlock.submit(world.home, world.db, request.id, ALICE)
    view = airlock.view(world.db, request.id, OTTO)
    assert view["outputs"][0]["output"]["id"] == better.id
    assert view["outputs"][0]["round"] == 2 and view["outputs"][0]["reviews_received"] == 0
    # The output kept is reviewed again too: it is released beside the new one (issue #21).
    assert view["outputs"][1]["round"] == 2 and view["outputs"][1]["outcome"] is None
    vote(world, request, 1, OLGA)
    vote(world, request, 1, OTTO)
    vote(world, request, 2, OLGA)
    assert vote(world, request, 2, OTTO) == "released"


def test_one_rejection_rejects_the_request_and_nothing_is_released(world):
    request = submitted(world, table_output(world), table_output(world, "pupils by fsm"))
    vote(world, request, 1, OLGA)
    vote(world, request, 1, OSCAR)
    vote(world, request, 2, OLGA, "reject")
    assert vote(world, request, 2, OSCAR, "reject") == "rejected"
    assert not (world.home.released / world.project / str(request.id)).exists()
    with pytest.raises(PermissionDenied, match="nothing is released"):
        airlock.download(world.home, world.db, request.id, 1, ALICE)


# -- release, download, revocation -------------------------------------------------------------


def test_approved_outputs_are_released_and_downloaded_by_the_project_only(world):
    figure = in_workspace(world.home.root, "alice", world.project, "figure.csv", "group,n\n")
    original = world.home.projects / world.project / "work" / "alice" / figure
    original.write_text("group,n\nA,120\nB,340\n")
    file_output = outputs.add_file(world.home, world.db, world.project, figure, ALICE, "counts")
    original.write_text("group,n\nA,1\nB,2\n")  # changing the original changes nothing released
    table = table_output(world)
    request = submitted(world, table, file_output)
    for slot in (1, 2):
        vote(world, request, slot, OLGA)
        vote(world, request, slot, OSCAR)
    assert airlock.get(world.db, request.id).state == "released"
    path = airlock.download(world.home, world.db, request.id, 1, BOB)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    released_cells = [c for c in outputs.get(world.db, table.id).result["cells"]]
    assert len(rows) == len(released_cells)
    for row in rows:
        assert row["note"] == "suppressed" or int(float(row["value"])) >= 10
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert "population" not in sidecar
    copied = airlock.download(world.home, world.db, request.id, 2, ALICE)
    assert copied.read_text() == "group,n\nA,120\nB,340\n"
    assert outputs.get(world.db, table.id).released_at is not None
    for person in (OLGA, DORA, ADA):
        with pytest.raises(PermissionDenied, match="Only the researchers"):
            airlock.download(world.home, world.db, request.id, 1, person)
    with world.db.read() as session:
        downloads = [
            (e["actor"], e["details"]["slot"])
            for e in audit.events(session, object_type="export_request", object_id=str(request.id))
            if e["action"] == "request.downloaded"
        ]
    assert downloads == [("bob", 1), ("alice", 2)]
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_a_kept_file_changed_behind_the_tre_is_not_released(world):
    notes = in_workspace(world.home.root, "alice", world.project, "notes.txt", "a model summary")
    output = outputs.add_file(world.home, world.db, world.project, notes, ALICE)
    kept = output.file_path
    request = submitted(world, output)
    vote(world, request, 1, OLGA)
    os.chmod(kept, 0o640)
    with open(kept, "w") as f:
        f.write("pupil 123 is in hospital")
    with pytest.raises(IntegrityError, match="changed after it was checked"):
        vote(world, request, 1, OSCAR)
    assert airlock.get(world.db, request.id).state == "approved"
    assert not (world.home.released / world.project / str(request.id)).exists()
    # Not left hanging: a checker closes it.
    revoked = airlock.revoke(world.home, world.db, request.id, OLGA, "the kept file was changed")
    assert revoked.state == "revoked"


def test_a_revoked_release_can_no_longer_be_downloaded(world):
    request = submitted(world)
    vote(world, request, 1, OLGA)
    vote(world, request, 1, OSCAR)
    with pytest.raises(PermissionDenied, match="Only output checkers and administrators"):
        airlock.revoke(world.home, world.db, request.id, ALICE, "I changed my mind about it")
    with pytest.raises(InvalidInput, match="Say why"):
        airlock.revoke(world.home, world.db, request.id, OTTO, "oops")
    airlock.revoke(world.home, world.db, request.id, OTTO, "a differencing attack was found")
    assert not (world.home.released / world.project / str(request.id)).exists()
    with pytest.raises(PermissionDenied, match="revoked: nothing is released"):
        airlock.download(world.home, world.db, request.id, 1, ALICE)


def test_the_queue_shows_what_each_checker_may_review_oldest_first(world):
    first, second = submitted(world), submitted(world)
    queue = [r["id"] for r in airlock.queue(world.db, OLGA, limit=10_000)]
    assert queue.index(first.id) < queue.index(second.id)
    vote(world, first, 1, OLGA)
    item = next(r for r in airlock.queue(world.db, OLGA, limit=10_000) if r["id"] == first.id)
    assert item["reviewed_by_you"] == 1 and item["outputs"] == 1
    assert all(r["id"] != first.id for r in airlock.queue(world.db, BOB_CHECKER, limit=10_000))
    with pytest.raises(PermissionDenied):
        airlock.queue(world.db, ALICE)
    # Pages are exact: page n holds the n-th request of the whole queue.
    pages = [airlock.queue(world.db, OLGA, limit=1, offset=n)[0]["id"] for n in range(2)]
    assert pages == queue[:2]


def test_values_left_for_review_are_shown_only_to_checkers_until_release(world):
    """The portal is no way round the airlock: a maximum (one person's value) and what a file
    holds are withheld from the project until two checkers have released them."""
    maximum = table_output(world, "oldest score", statistic="max", value="idaci_decile")
    figure = in_workspace(
        world.home.root, "alice", world.project, "list.csv", "pupil,score\nsomeone,31\n"
    )
    listed = outputs.add_file(world.home, world.db, world.project, figure, ALICE, "a list")
    request = submitted(world, maximum, listed)

    def shown(viewer) -> list[dict]:
        return [
            item["output"]["result"]
            for item in airlock.view(world.db, request.id, viewer)["outputs"]
        ]

    project = airlock._project(world.db, world.project)
    for viewer in (ALICE, BOB_CHECKER):  # outside the workspace: status and reasons alone
        table, file = shown(viewer)
        assert table["cells"] == [] and "workspace" in table["withheld"]
        assert file["cells"] == [] and file["withheld"]
    for viewer in (ALICE, DORA):  # custodians see outputs through the portal's output pages
        assert outputs.shown_result(outputs.get(world.db, maximum.id), viewer, project) == table
    # In the project's workspace, its researcher sees what passed; what is left for review is
    # withheld there too.
    inside = outputs.shown_result(outputs.get(world.db, maximum.id), ALICE, project, True)
    assert inside["cells"] and all(c["value"] is None for c in inside["cells"])
    assert all(c["withheld"] for c in inside["cells"] if c["status"] != "pass")
    table, file = shown(OLGA)
    assert all(c["value"] is not None for c in table["cells"])
    assert [c["value"] for c in file["cells"]] == [31.0]

    for slot in (1, 2):
        vote(world, request, slot, OLGA)
        vote(world, request, slot, OSCAR)
    table, file = shown(ALICE)
    assert all(c["value"] is not None and "withheld" not in c for c in table["cells"])
    assert [c["row"] for c in file["cells"]] == [["someone"]]


def test_nothing_moves_through_the_airlock_of_a_suspended_project(world):
    """Suspended (say, after a breach): no output added, no submission, no review and no
    download until an administrator resumes the project; then all carry on."""
    from tre import projects

    released = submitted(world)
    for by in (OLGA, OSCAR):
        vote(world, released, 1, by)
    waiting = submitted(world)
    drafted = draft(world)
    extra = table_output(world, "pupils by sex, again")
    projects.set_state(world.db, world.project, "suspend", ADA, "a breach is investigated")
    try:
        refused = {
            "add": lambda: airlock.put_output(
                world.db, drafted.id, extra.id, "another table", ALICE
            ),
            "submit": lambda: airlock.submit(world.home, world.db, drafted.id, ALICE),
            "review": lambda: vote(world, waiting, 1, OLGA),
            "download": lambda: airlock.download(world.home, world.db, released.id, 1, ALICE),
        }
        for what, action in refused.items():
            with pytest.raises(PermissionDenied, match="is suspended"):
                action()
            assert airlock.get(world.db, drafted.id).state == "draft", what
        assert airlock.get(world.db, waiting.id).state == "in_review"
        assert airlock.view(world.db, waiting.id, OLGA)["outputs"][0]["reviews_received"] == 0
    finally:
        projects.set_state(world.db, world.project, "resume", ADA, "cleared")
    assert airlock.download(world.home, world.db, released.id, 1, ALICE).is_file()
    assert vote(world, waiting, 1, OLGA)


def test_a_submission_whose_checks_cannot_run_leaves_the_request_as_it_was(world):
    """Say an output stored before a rule tightened (here, a formula patsy would have run as
    Python): the request is not left half-submitted, and its author can still withdraw it."""
    output = table_output(world, "to be spoilt")
    request = draft(world, output)
    with world.db.write() as session:
        stored = session.get(outputs.Output, output.id)
        stored.spec = {**stored.spec, "kind": "model", "formula": "x ~ I(__import__('os'))"}
    with pytest.raises(InvalidInput, match="formula"):
        airlock.submit(world.home, world.db, request.id, ALICE)
    assert airlock.get(world.db, request.id).state == "draft"
    assert "request.submitted" not in events_of(world, request.id)
    assert airlock.withdraw(world.db, request.id, ALICE).state == "withdrawn"


def a_few_people_apart(world, row: str, own: list[dict], label: str):
    """Two tables by ``row`` over a population of the caller's own (``own``): everyone, and
    everyone but a small ethnic group (a few people apart, so either subtracts the other)."""
    by_ethnicity = table_output(world, f"by ethnicity, {label}", rows=["ethnicity"])
    small = next(c["row"][0] for c in by_ethnicity.result["cells"] if c["value"] is None)
    everyone = table_output(world, f"by {row}, everyone", rows=[row], filters=own)
    fewer = table_output(
        world,
        f"by {row}, one group fewer",
        rows=[row],
        filters=[*own, {"column": "ethnicity", "op": "ne", "value": small}],
    )
    return everyone, fewer


def test_outputs_submitted_together_are_checked_against_each_other(world):
    """Two tables a few people apart, in one request: released together they could be
    subtracted, so the submission checks each against those before it."""
    # By SEN provision: no table of this layout is released by the other tests.
    # A population of this test's own: its totals are compared with every release's too.
    own = [{"column": "idaci_decile", "op": "gte", "value": 3}]
    everyone, fewer = a_few_people_apart(world, "sen_provision", own, "together")

    def differenced(cell) -> bool:
        return any("earlier release" in r and "differ" in r for r in cell["reasons"])

    assert not any(differenced(c) for c in fewer.result["cells"])  # alone: fine
    request = submitted(world, everyone, fewer)
    checked = outputs.get(world.db, fewer.id).result["cells"]
    failing = [c for c in checked if differenced(c)]
    assert failing and all(c["value"] is None for c in failing)
    assert "output 1 of this request" in " ".join(failing[0]["reasons"])
    assert airlock.get(world.db, request.id).state == "in_review"
