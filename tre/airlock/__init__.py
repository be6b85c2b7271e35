"""The airlock: export requests, two independent reviews per output, release and revocation.

A researcher of an active project puts checked outputs (each with a description) into a
request and submits it; the automatic checks run again (an earlier release may now make a
table disclosive by differencing). Output checkers who are neither the author nor a member of
the project review each output: approve, request changes or reject, with a comment for the
researcher or for checkers only. An output is decided when two reviews agree; two that
disagree make it *conflicted* until a further review breaks the tie. A reviewer sees the
others' votes only once the output has two. When every output is decided: one rejection
rejects the request; else any request for changes returns it (the researcher replaces those
outputs, which resets their reviews); else it is approved and released: the outputs are copied
to the released store, where the project's researchers download them (each download audited).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import functools
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from tre import audit, outputs, permissions, texts
from tre.airlock.lifecycle import State, transition
from tre.db import Base, Database, check_daily_cap
from tre.exceptions import IntegrityError, InvalidInput, NotFound, PermissionDenied, TREError
from tre.home import Home
from tre.outputs import rules as R
from tre.outputs import specs
from tre.people import SYSTEM, Person

VOTES = ("approve", "request_changes", "reject")
VISIBILITY = ("researcher", "checkers")
OUTCOME_OF = {"approve": "approved", "request_changes": "changes requested", "reject": "rejected"}
REVIEWS_NEEDED = 2


class ExportRequest(Base):
    __tablename__ = "export_requests"
    __table_args__ = (
        # The checkers' queue: requests in a state, oldest first, read in index order.
        sa.Index("ix_export_requests_queue", "state", "updated_at", "id"),
        sa.Index("ix_export_requests_state_project", "state", "project_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    author: Mapped[str] = mapped_column(sa.String(64))
    title: Mapped[str] = mapped_column(sa.String(300))
    state: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[str] = mapped_column(sa.String(32))
    updated_at: Mapped[str] = mapped_column(sa.String(32), index=True)

    @property
    def status(self) -> State:
        return State(self.state)


class RequestOutput(Base):
    __tablename__ = "request_outputs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("export_requests.id"), index=True)
    slot: Mapped[int] = mapped_column(sa.Integer)
    output_id: Mapped[int] = mapped_column(sa.ForeignKey("outputs.id"))
    description: Mapped[str] = mapped_column(sa.Text)
    round: Mapped[int] = mapped_column(sa.Integer, default=1)
    released_path: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)

    __table_args__ = (sa.UniqueConstraint("request_id", "slot"),)


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    request_output_id: Mapped[int] = mapped_column(sa.ForeignKey("request_outputs.id"), index=True)
    round: Mapped[int] = mapped_column(sa.Integer)
    reviewer: Mapped[str] = mapped_column(sa.String(64))
    vote: Mapped[str] = mapped_column(sa.String(16))
    comment: Mapped[str] = mapped_column(sa.Text)
    visibility: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[str] = mapped_column(sa.String(32))

    __table_args__ = (sa.UniqueConstraint("request_output_id", "round", "reviewer"),)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _event(by: Person, action: str, request_id: int, details: dict | None = None) -> audit.Event:
    return audit.Event(
        by.username, by.main_role, action, "export_request", str(request_id), details or {}
    )


def _move(
    session: Session, request: ExportRequest, action: str, by: Person, details: dict | None = None
) -> None:
    step = transition(request.status, action)
    request.state = step.target.value
    request.updated_at = now()
    audit.record(session, _event(by, step.event, request.id, details))


def _lock(session: Session, request_id: int) -> ExportRequest:
    request = session.execute(
        sa.select(ExportRequest).where(ExportRequest.id == request_id).with_for_update()
    ).scalar_one_or_none()
    if request is None:
        raise NotFound(f"There is no export request #{request_id}.")
    return request


def _locked_project(session: Session, request: ExportRequest):
    """The request's project, read in the transaction that locked the request."""
    from tre import projects

    return session.get(projects.Project, request.project_id)


def _project(db: Database, project_id: str):
    from tre import projects

    return projects.get(db, project_id)


# -- reading -----------------------------------------------------------------------------------


def get(db: Database, request_id: int) -> ExportRequest:
    with db.read() as session:
        request = session.get(ExportRequest, request_id)
        if request is None:
            raise NotFound(f"There is no export request #{request_id}.")
        return request


def slots(db: Database, request_id: int) -> list[RequestOutput]:
    with db.read() as session:
        return list(
            session.execute(
                sa.select(RequestOutput)
                .where(RequestOutput.request_id == request_id)
                .order_by(RequestOutput.slot)
            ).scalars()
        )


def outcome(reviews: list[Review]) -> str | None:
    """approved | changes requested | rejected once two reviews agree; conflicted when two or
    more disagree; None while fewer than two."""
    counts = Counter(r.vote for r in reviews)
    for vote, n in counts.most_common():
        if n >= REVIEWS_NEEDED:
            return OUTCOME_OF[vote]
    return "conflicted" if len(reviews) >= REVIEWS_NEEDED else None


@functools.cache
def _view_statements():
    """A request with its project, its outputs, and the reviews of their current round (built
    once)."""
    from tre import projects

    header = (
        sa.select(ExportRequest, projects.Project)
        .join(projects.Project, projects.Project.id == ExportRequest.project_id)
        .where(ExportRequest.id == sa.bindparam("request_id"))
    )
    filled = (
        sa.select(RequestOutput, outputs.Output)
        .join(outputs.Output, outputs.Output.id == RequestOutput.output_id)
        .where(RequestOutput.request_id == sa.bindparam("request_id"))
        .order_by(RequestOutput.slot)
    )
    votes = (
        sa.select(Review)
        .join(RequestOutput, RequestOutput.id == Review.request_output_id)
        .where(
            RequestOutput.request_id == sa.bindparam("request_id"),
            Review.round == RequestOutput.round,
        )
        .order_by(Review.id)
    )
    return header, filled, votes


def view(db: Database, request_id: int, viewer: Person) -> dict[str, Any]:
    """The request as ``viewer`` may see it: checkers see other reviewers' votes only once an
    output has two reviews and they gave one; researchers see the comments meant for them once
    an output is decided."""
    return view_with_records(db, request_id, viewer)[0]


def view_with_records(db: Database, request_id: int, viewer: Person):
    """:func:`view`, with the request and project records it was made from (for pages)."""
    header_q, filled_q, votes_q = _view_statements()
    with db.read() as session:  # one snapshot: what is shown is consistent
        found = session.execute(header_q, {"request_id": request_id}).first()
        if found is None:
            raise NotFound(f"There is no export request #{request_id}.")
        request, project = found
        permissions.check_can_view_request(viewer, request, project)
        filled = session.execute(filled_q, {"request_id": request_id}).all()
        votes: dict[int, list[Review]] = {slot.id: [] for slot, _ in filled}
        for review in session.execute(votes_q, {"request_id": request_id}).scalars():
            votes[review.request_output_id].append(review)
    items = []
    for slot, output in filled:
        reviews = votes[slot.id]
        decided = outcome(reviews)
        mine = [r for r in reviews if r.reviewer == viewer.username]
        checker = viewer.has_role("output-checker") and viewer.username not in project.members()
        if checker:
            visible = reviews if (mine and len(reviews) >= REVIEWS_NEEDED) else mine
        elif decided and decided != "conflicted":
            visible = [r for r in reviews if r.visibility == "researcher"]
        else:
            visible = []
        items.append(
            {
                "slot": slot.slot,
                "description": slot.description,
                "round": slot.round,
                "output": {
                    "id": output.id,
                    "name": output.name,
                    "kind": output.kind,
                    "spec": output.spec,
                    "result": outputs.shown_result(output, viewer, project),
                },
                "reviews_received": len(reviews),
                "outcome": decided,
                "reviews": [
                    {
                        "reviewer": r.reviewer if checker else "an output checker",
                        "vote": r.vote,
                        "comment": r.comment,
                        "visibility": r.visibility,
                        "at": r.created_at,
                    }
                    for r in visible
                ],
                "released": bool(slot.released_path) and request.state == State.RELEASED,
            }
        )
    detail = {
        "id": request.id,
        "project": request.project_id,
        "title": request.title,
        "author": request.author,
        "state": request.state,
        "created_at": request.created_at,
        "updated_at": request.updated_at,
        "outputs": items,
    }
    return detail, request, project


def output_submitted(db: Database, output_id: int) -> bool:
    """Whether the output is in a request that left the draft state (checkers may see it)."""
    with db.read() as session:
        return (
            session.execute(
                sa.select(RequestOutput.id)
                .join(ExportRequest, ExportRequest.id == RequestOutput.request_id)
                .where(RequestOutput.output_id == output_id)
                .where(ExportRequest.state != State.DRAFT.value)
                .limit(1)
            ).first()
            is not None
        )


def viewable_output(db: Database, output_id: int, viewer: Person) -> outputs.Output:
    output = outputs.get(db, output_id)
    project = _project(db, output.project_id)
    permissions.check_can_view_output(viewer, project, output_submitted(db, output_id))
    return output


def of_project(db: Database, project_id: str) -> list[ExportRequest]:
    with db.read() as session:
        return list(
            session.execute(
                sa.select(ExportRequest)
                .where(ExportRequest.project_id == project_id)
                .order_by(ExportRequest.id.desc())
            ).scalars()
        )


@functools.cache
def _queue_statements():
    """The queue's three queries, built once with bound parameters (building and keying a
    statement costs more than running it)."""
    from tre import projects

    waiting = ExportRequest.state == State.IN_REVIEW.value
    theirs = sa.select(projects.Project.id, projects.Project.spec).where(
        sa.exists().where(waiting, ExportRequest.project_id == projects.Project.id)
    )
    page = (
        sa.select(
            ExportRequest.id,
            ExportRequest.project_id,
            ExportRequest.title,
            ExportRequest.author,
            ExportRequest.updated_at,
        )
        .where(waiting)
        .where(ExportRequest.author != sa.bindparam("me"))
        .where(ExportRequest.project_id.not_in(sa.bindparam("theirs", expanding=True)))
        .order_by(ExportRequest.updated_at, ExportRequest.id)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )
    counts = (
        sa.select(
            RequestOutput.request_id,
            sa.func.count(sa.distinct(RequestOutput.id)),
            sa.func.count(Review.id).filter(Review.reviewer == sa.bindparam("me")),
        )
        .outerjoin(
            Review,
            sa.and_(
                Review.request_output_id == RequestOutput.id,
                Review.round == RequestOutput.round,
            ),
        )
        .where(RequestOutput.request_id.in_(sa.bindparam("ids", expanding=True)))
        .group_by(RequestOutput.request_id)
    )
    return theirs, page, counts


def queue(db: Database, checker: Person, limit: int = 50, offset: int = 0) -> list[dict]:
    """Requests in review that ``checker`` may review, oldest first, with what is left to do."""
    permissions.check_has_role(checker, "output-checker", "review export requests")
    theirs_q, page_q, counts_q = _queue_statements()
    with db.rows() as connection:
        # Members never review their own project: find those projects first (few, each found
        # by an index probe), so the page of requests below is exact.
        theirs = [
            project_id
            for project_id, spec in connection.execute(theirs_q)
            if checker.username in spec.get("members", [])
        ]
        me = checker.username
        page = connection.execute(
            page_q, {"me": me, "theirs": theirs, "limit": limit, "offset": offset}
        ).all()
        ids = [r.id for r in page]
        counts = {row[0]: row[1:] for row in connection.execute(counts_q, {"me": me, "ids": ids})}
        return [
            {
                "id": request.id,
                "project": request.project_id,
                "title": request.title,
                "author": request.author,
                "outputs": counts.get(request.id, (0, 0))[0],
                "reviewed_by_you": counts.get(request.id, (0, 0))[1],
                "waiting_since": request.updated_at,
            }
            for request in page
        ]


# -- changing ----------------------------------------------------------------------------------


#: The most export requests one researcher may start in a project in a day, and the most
#: outputs one request holds: each is free text read back from home, so their number is
#: bounded too, not only their length (found by the reviews of #20's and #21's changes).
MAX_REQUESTS_A_DAY = 100
MAX_OUTPUTS = 20


def create(db: Database, project_id: str, title: str, by: Person) -> ExportRequest:
    project = _project(db, project_id)
    permissions.check_can_request_export(by, project)
    if len(title.strip()) < 3:
        raise InvalidInput("Give the request a title (what the outputs are for).")
    title = texts.at_most(title, "title", texts.TITLE)
    with db.write() as session:
        from tre.projects import Project  # counted and made one at a time per project

        session.execute(sa.select(Project).where(Project.id == project_id).with_for_update())
        check_daily_cap(
            session,
            ExportRequest.created_at,
            MAX_REQUESTS_A_DAY,
            f"export requests of {project_id}",
            ExportRequest.project_id == project_id,
            ExportRequest.author == by.username,
        )
        stamp = now()
        request = ExportRequest(
            project_id=project_id,
            author=by.username,
            title=title.strip(),
            state=State.DRAFT.value,
            created_at=stamp,
            updated_at=stamp,
        )
        session.add(request)
        session.flush()
        audit.record(session, _event(by, "request.created", request.id, {"project": project_id}))
        return request


def _releasable(output: outputs.Output) -> None:
    result = output.result
    if (
        output.kind != "file"
        and result["summary"]["status"] == R.FAIL
        and not any(c.get("value") is not None for c in result.get("cells", []))
    ):
        raise InvalidInput(
            f"Output #{output.id} fails the rules and nothing of it could be released: change "
            "it (fewer or broader categories) before asking for its export."
        )


def put_output(
    db: Database,
    request_id: int,
    output_id: int,
    description: str,
    by: Person,
    slot: int | None = None,
) -> RequestOutput:
    """Add an output (new slot) or replace the output of ``slot`` (its reviews restart)."""
    with db.write() as session:
        request = _lock(session, request_id)
        permissions.check_is_author(by, request)
        permissions.check_project_active(_locked_project(session, request), "outputs are added")
        output = session.get(outputs.Output, output_id)
        if output is None or output.project_id != request.project_id:
            raise InvalidInput(
                f"Output #{output_id} is not an output of project {request.project_id}."
            )
        _releasable(output)
        if len(description.strip()) < 10:
            raise InvalidInput("Describe each output (what it shows, at least 10 characters).")
        texts.at_most(description, "description")
        existing = (
            session.execute(sa.select(RequestOutput).where(RequestOutput.request_id == request_id))
            .scalars()
            .all()
        )
        if slot is None:
            if len(existing) >= MAX_OUTPUTS:
                raise InvalidInput(
                    f"Request #{request_id} holds {MAX_OUTPUTS} outputs, the most one request "
                    "holds: start another request for the rest."
                )
            item = RequestOutput(
                request_id=request_id,
                slot=len(existing) + 1,
                output_id=output_id,
                description=description.strip(),
                round=1,
            )
            session.add(item)
        else:
            item = next((s for s in existing if s.slot == slot), None)
            if item is None:
                raise NotFound(f"Request #{request_id} has no output {slot}.")
            item.output_id, item.description = output_id, description.strip()
            item.round += 1  # a new round: the earlier reviews no longer count
        _move(session, request, "change", by, {"output": output_id, "slot": slot})
        session.flush()
        return item


def submit(home: Home, db: Database, request_id: int, by: Person) -> ExportRequest:
    """Submit: re-run the automatic checks of every output, then open the reviews. The checks
    run before anything moves: if one cannot run, the request stays as it was."""
    with db.read() as session:
        request = session.get(ExportRequest, request_id)
        if request is None:
            raise NotFound(f"There is no export request #{request_id}.")
        filled = _submittable(session, request, by)
    project = _project(db, request.project_id)
    results = {
        output.id: checked for _, output, checked in _checked_again(home, db, project, filled)
    }
    # Under the project's release lock: a release in progress releases the results it checked.
    with _release_lock(home, project.id), db.write() as session:
        request = _lock(session, request_id)
        filled_now = _submittable(session, request, by)
        if [(s.slot, s.output_id) for s in filled_now] != [(s.slot, s.output_id) for s in filled]:
            raise InvalidInput(
                f"Request #{request_id} changed while its outputs were checked: submit it again."
            )
        summary = {}
        for slot in filled_now:
            stored = session.get(outputs.Output, slot.output_id)
            if stored.id in results:
                checked = results[stored.id]
                stored.result, stored.status = checked.as_dict(), checked.status
                stored.populations = checked.populations
            summary[str(slot.slot)] = stored.status
        # A resubmission opens a new round of every output: votes cast on the request before
        # were cast beside outputs since replaced, which may disclose together with the ones
        # kept (issue #21).
        reset = [
            slot
            for slot in filled_now
            if session.execute(
                sa.select(sa.func.count())
                .select_from(Review)
                .where(Review.request_output_id == slot.id, Review.round == slot.round)
            ).scalar_one()
        ]
        for slot in reset:
            slot.round += 1
        details = {"votes_reset": [s.slot for s in reset]} if reset else None
        _move(session, request, "submit", by, details)
        _move(session, request, "checked", SYSTEM, {"checks": summary})
        return request


def _submittable(session: Session, request: ExportRequest, by: Person) -> list[RequestOutput]:
    """The request's slots, once it may be submitted by ``by``; else why not."""
    permissions.check_is_author(by, request)
    permissions.check_project_active(_locked_project(session, request), "requests are submitted")
    transition(request.status, "submit")  # refused, saying which moves are possible
    filled = list(
        session.execute(
            sa.select(RequestOutput)
            .where(RequestOutput.request_id == request.id)
            .order_by(RequestOutput.slot)
        ).scalars()
    )
    if not filled:
        raise InvalidInput("Add at least one output before submitting the request.")
    unchanged = [s.slot for s in filled if _outcome_of(session, s) == "changes requested"]
    if unchanged:
        raise InvalidInput(
            "The output checkers asked for changes to output(s) "
            f"{', '.join(map(str, unchanged))}: replace them before submitting again."
        )
    return filled


def review(
    home: Home,
    db: Database,
    request_id: int,
    slot_number: int,
    vote: str,
    comment: str,
    by: Person,
    visibility: str = "researcher",
) -> dict:
    with db.write() as session:
        request = _lock(session, request_id)
        project = _locked_project(session, request)
        permissions.check_can_review(by, request, project.members())
        permissions.check_project_active(project, "outputs are reviewed")
        if vote not in VOTES:
            raise InvalidInput(f"A vote is one of {', '.join(VOTES)}.")
        if visibility not in VISIBILITY:
            raise InvalidInput(f"A comment is visible to one of: {', '.join(VISIBILITY)}.")
        if vote != "approve" and len(comment.strip()) < 10:
            raise InvalidInput("Say why (at least 10 characters): the researcher needs to know.")
        texts.at_most(comment, "comment")
        transition(request.status, "review")
        slot = session.execute(
            sa.select(RequestOutput).where(
                RequestOutput.request_id == request_id, RequestOutput.slot == slot_number
            )
        ).scalar_one_or_none()
        if slot is None:
            raise NotFound(f"Request #{request_id} has no output {slot_number}.")
        current = (
            session.execute(
                sa.select(Review).where(
                    Review.request_output_id == slot.id, Review.round == slot.round
                )
            )
            .scalars()
            .all()
        )
        if any(r.reviewer == by.username for r in current):
            raise InvalidInput("You have already reviewed this output.")
        if outcome(current) not in (None, "conflicted"):
            raise InvalidInput("This output is already decided.")
        session.add(
            Review(
                request_output_id=slot.id,
                round=slot.round,
                reviewer=by.username,
                vote=vote,
                comment=comment.strip(),
                visibility=visibility,
                created_at=now(),
            )
        )
        session.flush()
        _move(session, request, "review", by, {"slot": slot_number, "vote": vote})
        decision = _decide(session, request)
    if decision == "approve":
        release_checked(home, db, request_id)
    return {"request": get(db, request_id).state}


def release_checked(home: Home, db: Database, request_id: int) -> ExportRequest:
    """Release an approved request, once its outputs pass the automatic checks again against
    everything the project released until now, one release of a project at a time: two
    requests reviewed side by side each passed against the releases before both, not against
    each other (issue #21). An output that would now show a cell its check hides, or fails
    where it did not, blocks the release: the request goes back to the researcher, saying
    which and why."""
    request = get(db, request_id)
    with _release_lock(home, request.project_id):
        project = _project(db, request.project_id)
        blocked: dict[str, list[str]] = {}
        rechecked: dict[int, dict] = {}
        try:
            for slot, output, now_ in _checked_again(home, db, project, slots(db, request_id)):
                why = _no_longer_passes(output.result, now_.as_dict())
                if why:
                    blocked[str(slot.slot)] = why
                rechecked[output.id] = now_
        except TREError as e:  # a check that cannot run again releases nothing
            blocked["all"] = [f"the checks could not run again: {e.message}"]
        with db.write() as session:
            request = _lock(session, request_id)
            if blocked:
                _move(session, request, "block", SYSTEM, {"outputs": blocked})
                return request
            for output_id, result in rechecked.items():  # what is released is what was checked
                stored = session.get(outputs.Output, output_id)
                stored.result, stored.status = result.as_dict(), result.status
                stored.populations = result.populations
        return release(home, db, request_id)


def _checked_again(
    home: Home, db: Database, project, filled: list[RequestOutput]
) -> list[tuple[RequestOutput, outputs.Output, outputs.results.Result]]:
    """Each table, summary and model of a request's slots, in order, computed and checked
    again against the project's releases and the outputs before it in the request (released
    together with it): the slot, its output and the result."""
    checked = []
    alongside: list[tuple[str, dict, list, dict | None]] = []  # label, spec, cells, populations
    for slot in filled:
        output = outputs.get(db, slot.output_id)
        if output.kind in ("table", "summary", "model"):
            spec = specs.parse(output.spec)
            result = outputs.compute(
                home, db, project, spec, alongside=alongside, keep_populations=True
            )
            checked.append((slot, output, result))
            cells = [c.as_dict() for c in result.cells]
            label = f"output {slot.slot} of this request"
            alongside.append((label, output.spec, cells, result.populations))
    return checked


def _no_longer_passes(before: dict, now_: dict) -> list[str]:
    """Why the result ``now_`` (checked again) no longer allows what ``before`` (as reviewed)
    shows: a cell shown then is hidden or failing now, or the whole fails where it did not."""
    shown = {
        (tuple(c["row"]), tuple(c["col"])): c
        for c in before.get("cells", [])
        if c.get("value") is not None
    }
    order = {R.PASS: 0, R.REVIEW: 1, R.FAIL: 2}
    reasons: list[str] = []
    for cell in now_.get("cells", []):
        key = (tuple(cell["row"]), tuple(cell["col"]))
        if key not in shown:
            continue
        was = shown[key]
        new = [r for r in cell.get("reasons", []) if r not in was.get("reasons", [])]
        # Hidden now, worse now, or with a reason the checkers never saw (found by the
        # review: a cell newly "for review" was released unreviewed).
        if (
            cell.get("value") is None
            or order.get(cell["status"], 2) > order.get(was["status"], 2)
            or new
        ):
            reasons += [r for r in (new or cell.get("reasons", [])) if r not in reasons]
            reasons = reasons or ["a cell's check changed since it was reviewed"]
    if now_["summary"]["status"] == R.FAIL and before["summary"]["status"] != R.FAIL:
        reasons = reasons or ["it fails the automatic checks now"]
    return reasons


@contextlib.contextmanager
def _release_lock(home: Home, project_id: str) -> Iterator[None]:
    """One release of ``project_id`` at a time, across the portal's processes and the
    command line (a file lock in the released store, which whoever releases writes)."""
    with open(home.released / f".release-{project_id}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _outcome_of(session: Session, slot: RequestOutput) -> str | None:
    current = session.execute(
        sa.select(Review).where(Review.request_output_id == slot.id, Review.round == slot.round)
    ).scalars()
    return outcome(list(current))


def _decide(session: Session, request: ExportRequest) -> str | None:
    """Once every output is decided, move the request on."""
    outcomes = [
        _outcome_of(session, slot)
        for slot in session.execute(
            sa.select(RequestOutput).where(RequestOutput.request_id == request.id)
        ).scalars()
    ]
    if any(o in (None, "conflicted") for o in outcomes):
        return None
    if "rejected" in outcomes:
        _move(session, request, "reject", SYSTEM, {"outcomes": outcomes})
        return "reject"
    if "changes requested" in outcomes:
        _move(session, request, "return", SYSTEM, {"outcomes": outcomes})
        return "return"
    _move(session, request, "approve", SYSTEM, {"outcomes": outcomes})
    return "approve"


def release(home: Home, db: Database, request_id: int) -> ExportRequest:
    """Copy the approved outputs into the released store (files readable by the TRE only;
    researchers download them through the portal)."""
    request = get(db, request_id)
    target = home.released / request.project_id / str(request_id)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o750)
    written = {}
    for slot in slots(db, request_id):
        output = outputs.get(db, slot.output_id)
        written[slot.id] = _write_released(tmp, slot, output)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    with db.write() as session:
        request = _lock(session, request_id)
        for slot_id, name in written.items():
            item = session.get(RequestOutput, slot_id)
            item.released_path = str((target / name).relative_to(home.root))
            outputs.mark_released(
                session,
                session.get(outputs.Output, item.output_id),
                _event(SYSTEM, "output.released", request_id),
            )
        _move(session, request, "release", SYSTEM, {"files": sorted(written.values())})
        return request


def _write_released(folder: Path, slot: RequestOutput, output: outputs.Output) -> str:
    safe = (
        "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in output.name)[:60] or "output"
    )
    if output.kind == "file" and output.file_path:
        from tre.outputs import files

        name = f"{slot.slot}-{safe}"
        shutil.copyfile(output.file_path, folder / name)
        if files.sha256(folder / name) != output.result.get("sha256"):
            raise IntegrityError(
                f"The kept copy of output #{output.id} changed after it was checked: it is not "
                "released. Tell the TRE operators."
            )
    else:
        from tre.outputs import labels

        name = f"{slot.slot}-{safe}.csv"
        leaving = labels.for_release(output.result, output.spec)
        with open(folder / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "column", "value", "note"])
            for cell in leaving.get("cells", []):
                note = "suppressed" if cell.get("value") is None else ""
                writer.writerow(
                    [
                        " / ".join(cell["row"]),
                        " / ".join(cell["col"]),
                        "" if cell.get("value") is None else cell["value"],
                        note,
                    ]
                )
        released = {k: v for k, v in leaving.items() if k != "population"}
        (folder / f"{slot.slot}-{safe}.json").write_text(json.dumps(released, indent=2))
    os.chmod(folder / name, 0o640)
    return name


def withdraw(db: Database, request_id: int, by: Person) -> ExportRequest:
    with db.write() as session:
        request = _lock(session, request_id)
        permissions.check_is_author(by, request)
        _move(session, request, "withdraw", by)
        return request


def revoke(home: Home, db: Database, request_id: int, by: Person, reason: str) -> ExportRequest:
    permissions.check_can_revoke(by)
    if len(reason.strip()) < 10:
        raise InvalidInput("Say why the release is revoked (at least 10 characters).")
    texts.at_most(reason, "reason")
    with db.write() as session:
        request = _lock(session, request_id)
        _move(session, request, "revoke", by, {"reason": reason.strip()})
        for item in session.execute(
            sa.select(RequestOutput).where(RequestOutput.request_id == request_id)
        ).scalars():
            item.released_path = None
    shutil.rmtree(home.released / request.project_id / str(request_id), ignore_errors=True)
    return get(db, request_id)


def download(home: Home, db: Database, request_id: int, slot_number: int, by: Person) -> Path:
    """The released file of a slot, for a member of the project; the download is audited."""
    request = get(db, request_id)
    project = _project(db, request.project_id)
    permissions.check_can_download(by, request, project)
    permissions.check_project_active(project, "released outputs are downloaded")
    if request.status is not State.RELEASED:
        raise PermissionDenied(f"Request #{request_id} is {request.state}: nothing is released.")
    item = next((s for s in slots(db, request_id) if s.slot == slot_number), None)
    if item is None or not item.released_path:
        raise NotFound(f"Request #{request_id} has no released output {slot_number}.")
    path = home.root / item.released_path
    with db.write() as session:
        audit.record(
            session,
            _event(
                by,
                "request.downloaded",
                request_id,
                {"slot": slot_number, "output": item.output_id},
            ),
        )
    return path
