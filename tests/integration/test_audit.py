"""The audit log on real SQLite and PostgreSQL: appends, verification, tampering, concurrency."""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing

import pytest
import sqlalchemy as sa

from tre import audit
from tre.audit import AuditEventRow, AuditHead, Event, canonical_json
from tre.audit.log import _body, _event_hash


@pytest.fixture(autouse=True)
def _test_action():
    audit.declare_actions({"test.happened": "Something happened in a test."})
    yield
    del audit.ACTIONS["test.happened"]


def event(i: int = 0, **details) -> Event:
    return Event(
        actor="alice",
        actor_role="researcher",
        action="test.happened",
        object_type="thing",
        object_id=f"thing-{i}",
        details=details or {"i": i},
    )


def append(db, n: int) -> None:
    for i in range(n):
        with db.write() as session:
            audit.record(session, event(i))


def test_events_chain_and_verify(db):
    append(db, 5)
    result = audit.verify(db)
    assert result.intact and result.events == 5 and result.head_seq == 5
    with db.read() as session:
        rows = list(audit.events(session))
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == audit.GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    assert result.head_hash == rows[-1]["hash"]


def test_a_failed_change_leaves_no_event(db):
    with pytest.raises(RuntimeError), db.write() as session:
        audit.record(session, event(1))
        raise RuntimeError("the change itself failed")
    assert audit.verify(db).events == 0


def test_export_writes_the_chain_as_json_lines(db):
    append(db, 3)
    out = io.StringIO()
    assert audit.export(db, out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["object_id"] for line in lines] == ["thing-0", "thing-1", "thing-2"]
    for line in lines:  # each exported line carries what is needed to re-check it elsewhere
        body = {k: v for k, v in line.items() if k not in ("prev_hash", "hash")}
        assert _event_hash(line["prev_hash"], body) == line["hash"]


@pytest.mark.parametrize(
    "details",
    [
        {"note": "NHS number 943 476 5919 was seen"},
        {"nhs": "9434765919"},
        {"pupil": "A123456789012"},
        {"header": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"},
        {"password": "x"},
        {"client_secret": "x"},
        {"nested": {"date_of_birth": "2010-01-01"}},
        {"people": [{"postcode": "AB1 2CD"}]},
    ],
)
def test_details_may_not_hold_identifiers_keys_or_tokens(db, details):
    with pytest.raises(ValueError, match="audit details"), db.write() as session:
        audit.record(session, event(**details))
    assert audit.verify(db).events == 0


def test_hashes_and_counts_are_allowed_in_details(db):
    digest = "b" * 20 + "9434765919" + "c" * 34  # a SHA-256 with an NHS-number-like run
    with db.write() as session:
        audit.record(session, event(sha256=digest, rows=9434765919, person_key_column="x"))
    assert audit.verify(db).intact


def test_unknown_actions_are_refused(db):
    with pytest.raises(ValueError, match="not declared"), db.write() as session:
        audit.record(session, event().but(action="made.up"))


# -- tampering ---------------------------------------------------------------------------------


def _rehash(row: AuditEventRow, prev: str) -> None:
    row.prev_hash = prev
    row.hash = _event_hash(prev, _body(row))


def tamper_modify(session):
    row = session.get(AuditEventRow, 4)
    row.details = canonical_json({"i": 999})
    return 4


def tamper_modify_and_rehash(session):
    # A forger who recomputes the row's own hash still breaks the link to the next row.
    row = session.get(AuditEventRow, 4)
    row.actor = "mallory"
    _rehash(row, row.prev_hash)
    return 5


def tamper_delete(session):
    session.delete(session.get(AuditEventRow, 4))
    return 4


def tamper_delete_last(session):
    session.delete(session.get(AuditEventRow, 8))
    return 8


def tamper_insert(session):
    # Make room at seq 4 and insert a forged event there with a plausible but wrong hash.
    for seq in range(8, 3, -1):
        session.execute(
            sa.update(AuditEventRow).where(AuditEventRow.seq == seq).values(seq=seq + 1)
        )
    prev = session.get(AuditEventRow, 3).hash
    session.add(
        AuditEventRow(
            seq=4,
            time="2026-01-01T00:00:00.000000Z",
            actor="mallory",
            actor_role="researcher",
            action="test.happened",
            object_type="thing",
            object_id="forged",
            details="{}",
            prev_hash=prev,
            hash="f" * 64,
        )
    )
    return 4


def tamper_insert_well_formed(session):
    # Insert a correctly hashed event at seq 4: the event after it no longer follows.
    for seq in range(8, 3, -1):
        session.execute(
            sa.update(AuditEventRow).where(AuditEventRow.seq == seq).values(seq=seq + 1)
        )
    forged = AuditEventRow(
        seq=4,
        time="2026-01-01T00:00:00.000000Z",
        actor="mallory",
        actor_role="researcher",
        action="test.happened",
        object_type="thing",
        object_id="forged",
        details="{}",
    )
    _rehash(forged, session.get(AuditEventRow, 3).hash)
    session.add(forged)
    session.get(AuditHead, 1).seq = 9
    return 5


def tamper_append(session):
    last = session.get(AuditEventRow, 8)
    forged = AuditEventRow(
        seq=9,
        time="2026-01-01T00:00:00.000000Z",
        actor="mallory",
        actor_role="researcher",
        action="test.happened",
        object_type="thing",
        object_id="forged",
        details="{}",
    )
    _rehash(forged, last.hash)
    session.add(forged)
    return 9


def tamper_duplicate_key(session):
    # Prepend a key the JSON already holds: parsers keep the last one (what is hashed), SQL's
    # json_extract may read the first.
    row = session.get(AuditEventRow, 5)
    row.details = '{"i":999,' + row.details[1:]
    return 5


def tamper_reorder(session):
    a, b = session.get(AuditEventRow, 3), session.get(AuditEventRow, 6)
    fields = ("time", "actor", "object_id", "details")
    for name in fields:
        va, vb = getattr(a, name), getattr(b, name)
        setattr(a, name, vb)
        setattr(b, name, va)
    return 3


@pytest.mark.parametrize(
    "tamper",
    [
        tamper_modify,
        tamper_modify_and_rehash,
        tamper_delete,
        tamper_delete_last,
        tamper_insert,
        tamper_insert_well_formed,
        tamper_append,
        tamper_reorder,
        tamper_duplicate_key,
    ],
)
def test_verify_names_the_first_bad_seq(db, tamper):
    append(db, 8)
    assert audit.verify(db).intact
    with db.write() as session:
        bad_seq = tamper(session)
    result = audit.verify(db)
    assert not result.intact
    assert result.first_bad_seq == bad_seq, result.problem
    assert f"seq {bad_seq}" in result.problem


def test_an_anchor_catches_a_rewritten_chain(db):
    append(db, 5)
    published = audit.verify(db)
    anchor = (published.head_seq, published.head_hash)
    with db.write() as session:  # rewrite history from seq 2 on, consistently
        rows = session.execute(sa.select(AuditEventRow).order_by(AuditEventRow.seq)).scalars()
        prev = audit.GENESIS_HASH
        for row in rows:
            if row.seq == 2:
                row.actor = "mallory"
            _rehash(row, prev)
            prev = row.hash
        head = session.get(AuditHead, 1)
        head.hash = prev
    assert audit.verify(db).intact  # self-consistent
    result = audit.verify(db, anchor=anchor)
    assert not result.intact and result.first_bad_seq == 5


# -- concurrency -------------------------------------------------------------------------------

WRITERS, EVENTS_EACH = 8, 200


def _writer(url: str, worker: int) -> None:
    from tre.db import Database

    audit.declare_actions({"test.happened": "Something happened in a test."})
    db = Database(url)
    for i in range(EVENTS_EACH):
        with db.write() as session:
            audit.record(session, event(i).but(object_id=f"w{worker}-{i}"))
    db.dispose()


@pytest.mark.slow
def test_concurrent_writers_never_fork_the_chain(db):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(db.url, w)) for w in range(WRITERS)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=600)
        assert p.exitcode == 0
    result = audit.verify(db)
    assert result.intact, result.problem
    assert result.events == WRITERS * EVENTS_EACH
    with db.read() as session:
        ids = session.execute(sa.select(AuditEventRow.object_id)).scalars().all()
        prevs = session.execute(sa.select(AuditEventRow.prev_hash)).scalars().all()
    assert len(set(ids)) == WRITERS * EVENTS_EACH  # every event landed exactly once
    assert len(set(prevs)) == len(prevs)  # no two events share a parent: no fork
