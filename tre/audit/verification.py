"""Verifying the audit log: its chain, its MACs, and the checkpoints outside the database.

:func:`verify` walks the events in order and stops at the first one that breaks a rule; what
each kind of tampering looks like is in ``docs/audit-log.md``:

- the chain: each event follows the one before (``prev_hash``) and its hash is its content's;
- the MACs, when the database was opened with the audit key: a chain recomputed by someone
  without the key has MACs that do not match;
- the anchors: every sound signed checkpoint of the store (and a head published earlier, or a
  custodian's exported checkpoint) names a seq the log must still hold, with that hash. A seq
  past the end of the log means events were deleted from its end;
- the store itself: a checkpoint missing, replaced or forged, or fewer than the database
  counts, is reported as such.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from tre.audit.checkpoints import Checkpoint, Store
from tre.audit.log import (
    GENESIS_HASH,
    AuditEventRow,
    AuditHead,
    _body,
    _event_hash,
    canonical_json,
    mac_of,
)
from tre.db import Database
from tre.exceptions import IntegrityError


@dataclasses.dataclass(frozen=True)
class Verification:
    intact: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str = ""
    #: Whether each event's MAC was checked (the database was opened with the audit key).
    macs_checked: bool = False
    #: The newest sound checkpoint the log was checked against (0: none).
    checkpoint: int = 0
    checkpoint_seq: int | None = None


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A (seq, hash) the log must still hold, and who says so."""

    seq: int
    hash: str
    source: str


def verify(
    db: Database,
    anchor: tuple[int, str] | None = None,
    store: Store | None = None,
    exported: Checkpoint | None = None,
) -> Verification:
    """Recompute the chain from the first event; stop at the first problem.

    ``anchor`` is a (seq, hash) published earlier; ``store`` the home's checkpoints (the TRE's
    own verification always passes it); ``exported`` a checkpoint a custodian kept.
    """
    anchors: list[Anchor] = []
    if anchor is not None:
        anchors.append(Anchor(anchor[0], anchor[1], "the published anchor"))
    if exported is not None:
        anchors.append(Anchor(exported.seq, exported.head, f"the exported {exported.describe()}"))
    store_problems: list[str] = []
    newest: Checkpoint | None = None
    if store is not None:
        reading = store.read()
        store_problems = list(reading.problems)
        newest = reading.latest
        anchors += [Anchor(cp.seq, cp.head, cp.describe()) for cp in reading.checkpoints]
    with db.read() as session:
        head = session.execute(sa.select(AuditHead).where(AuditHead.id == 1)).scalar_one_or_none()
        if head is None:
            return Verification(
                False,
                0,
                0,
                GENESIS_HASH,
                None,
                "the chain head (the row of audit_head) was deleted",
                db.audit_key is not None,
            )
        if store is not None:
            written = head.checkpoint or 0
            kept = max([0, *(cp.index for cp in reading.checkpoints)])
            if written > kept:
                store_problems.append(
                    f"checkpoint {kept + 1}{f' to {written}' if written > kept + 1 else ''} "
                    "is missing from the store, which the database says was written: the "
                    "store lost checkpoints, or the database's count was raised"
                )
        result = session.execute(
            sa.select(AuditEventRow).order_by(AuditEventRow.seq).execution_options(yield_per=1000)
        )
        try:
            found = _verify_rows(result.scalars(), head, anchors, db.audit_key)
        finally:
            result.close()
    rewriting = rewriters(db)
    if found.intact and rewriting:
        found = dataclasses.replace(
            found,
            intact=False,
            problem=f"the audit tables have {', '.join(rewriting)}, which could change or "
            "drop events as they are written: none is ever made by the TRE",
        )
    if found.intact and store_problems:
        found = dataclasses.replace(found, intact=False, problem="; ".join(store_problems))
    if newest is not None:
        found = dataclasses.replace(found, checkpoint=newest.index, checkpoint_seq=newest.seq)
    return found


#: The columns of an event as :func:`segment` hands them over.
ROW_FIELDS = (
    "seq",
    "time",
    "actor",
    "actor_role",
    "action",
    "object_type",
    "object_id",
    "details",
    "prev_hash",
    "hash",
    "mac",
)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _row_problem(row: Any, expected_seq: int, prev_hash: str, key: bytes | None) -> str | None:
    """What is wrong with ``row`` as the event after ``prev_hash`` at ``expected_seq``
    (None: nothing). Never raises on what a database may hold."""
    try:
        seq = int(row.seq)
    except (TypeError, ValueError):
        return f"seq {expected_seq} holds a seq that is not a number"
    if seq < expected_seq:
        return f"seq {seq} appears out of order"
    if seq > expected_seq:
        return f"seq {expected_seq} is missing: the event was deleted"
    if row.prev_hash != prev_hash:
        return (
            f"seq {seq} does not follow seq {seq - 1}: its prev_hash differs "
            "(an event was inserted, deleted or reordered before it)"
        )
    try:
        body = _body(row)
        # The stored text must be exactly what was hashed: else a duplicated key, say, would
        # show one value to SQL and hash the other.
        canonical = row.details == canonical_json(body["details"])
        recomputed = _event_hash(prev_hash, body) if canonical else ""
    except (TypeError, ValueError, AttributeError):
        recomputed = ""
    if recomputed != row.hash:
        return f"seq {seq} was modified: its content does not match its hash"
    if key is not None:
        if row.mac is None:
            return (
                f"seq {seq} has no MAC: it was written or rewritten without the audit key "
                "(events deleted, changed or inserted and the chain recomputed)"
            )
        if not (
            isinstance(row.mac, str)
            and _HEX64.fullmatch(row.mac)
            and hmac.compare_digest(row.mac, mac_of(key, row.hash))
        ):
            return (
                f"seq {seq} was rewritten: its MAC does not match (the chain was recomputed "
                "by someone without the audit key, after events were deleted, changed or "
                "inserted)"
            )
    return None


def _verify_rows(
    rows: Iterable[Any],
    head: Any,
    anchors: list[Anchor],
    key: bytes | None,
) -> Verification:
    expected_seq, prev_hash, n = 1, GENESIS_HASH, 0
    at: dict[int, list[Anchor]] = {}
    for a in anchors:
        at.setdefault(a.seq, []).append(a)

    def broken(seq: int, problem: str) -> Verification:
        return Verification(False, n, head.seq, head.hash, seq, problem, key is not None)

    for row in rows:
        problem = _row_problem(row, expected_seq, prev_hash, key)
        if problem is not None:
            return broken(
                min(int(row.seq), expected_seq) if _is_int(row.seq) else expected_seq, problem
            )
        for a in at.get(row.seq, ()):
            if row.hash != a.hash:
                return broken(
                    row.seq,
                    f"seq {row.seq} does not match {a.source}: the log was rewritten and "
                    "its chain recomputed",
                )
        prev_hash, expected_seq, n = row.hash, expected_seq + 1, n + 1

    last_seq = expected_seq - 1
    if head.seq > last_seq:
        return broken(
            last_seq + 1,
            f"seq {last_seq + 1} to {head.seq} are missing: events were deleted "
            "from the end of the log",
        )
    if head.seq < last_seq:
        return broken(
            head.seq + 1,
            f"seq {head.seq + 1} is past the chain head: it was appended outside the TRE",
        )
    if head.hash != prev_hash:
        return broken(last_seq, f"seq {last_seq} does not match the chain head's hash")
    beyond = [a for a in anchors if a.seq > last_seq]
    if beyond:
        a = max(beyond, key=lambda a: a.seq)
        return broken(
            last_seq + 1,
            f"the log ends at seq {last_seq} but {a.source} saw seq {a.seq}: events "
            f"{last_seq + 1} to {a.seq} were deleted from its end (truncated)",
        )
    return Verification(True, n, head.seq, head.hash, macs_checked=key is not None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- what the privileged helper checks before it signs a checkpoint ------------------------------


def segment(db: Database, start: int) -> dict[str, Any]:
    """The events from seq ``start`` on, as plain values, and what would rewrite them as they
    are written (triggers, rules, policies on the audit tables): what the helper is handed,
    read by the services' account."""
    with db.read() as session:
        rows = session.execute(
            sa.select(*(getattr(AuditEventRow, f) for f in ROW_FIELDS))
            .where(AuditEventRow.seq >= start)
            .order_by(AuditEventRow.seq)
        ).all()
        head = session.execute(sa.select(AuditHead.seq, AuditHead.hash)).first()
    return {
        "rows": [list(r) for r in rows],
        "head": None if head is None else list(head),
        "rewriters": rewriters(db),
    }


def checked_head(
    found: dict[str, Any], start: tuple[int, str] | None, key: bytes
) -> tuple[int, str]:
    """The head of the events ``found`` by :func:`segment`, once each is checked (chain and
    MAC) to extend ``start`` (the newest checkpoint's seq and head; None: from the first
    event). IntegrityError, naming what is wrong, when they do not: nothing is signed."""
    if found.get("rewriters"):
        raise IntegrityError(
            "The audit tables have " + ", ".join(found["rewriters"]) + ": they could change "
            "events as they are written. Remove them and investigate; no checkpoint is signed."
        )
    rows = [dict(zip(ROW_FIELDS, r, strict=True)) for r in found.get("rows", [])]
    expected, prev = (1, GENESIS_HASH) if start is None else (start[0], None)
    if start is not None:
        if not rows or rows[0]["seq"] != start[0] or rows[0]["hash"] != start[1]:
            raise IntegrityError(
                f"seq {start[0]} no longer has the head the newest checkpoint signed: the "
                "log was truncated or rewritten. Run `tre audit verify`; no checkpoint is signed."
            )
        prev, expected = rows[0]["hash"], start[0] + 1
        rows = rows[1:]
    for raw in rows:
        problem = _row_problem(SimpleNamespace(**raw), expected, prev, key)
        if problem is not None:
            raise IntegrityError(
                f"The audit log is NOT intact: {problem}. No checkpoint is signed."
            )
        prev, expected = raw["hash"], expected + 1
    if found.get("head") != [expected - 1, prev]:
        raise IntegrityError(
            f"The audit log is NOT intact: its chain head says {found.get('head')}, but its "
            f"events end at seq {expected - 1}. No checkpoint is signed; run `tre audit verify`."
        )
    return expected - 1, prev


def rewriters(db: Database) -> list[str]:
    """Triggers, rules and row policies on the audit tables: none is ever made by the TRE,
    and each could change or drop an event as it is written."""
    tables = ("audit_events", "audit_head")
    with db.rows() as rows:
        if db.is_sqlite:
            found = rows.execute(
                sa.text(
                    "SELECT 'trigger ' || name FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name IN ('audit_events', 'audit_head')"
                )
            ).scalars()
            return sorted(found)
        statements = (
            "SELECT 'trigger ' || t.tgname FROM pg_trigger t JOIN pg_class c "
            "ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relname IN :tables",
            "SELECT 'rule ' || rulename FROM pg_rules WHERE tablename IN :tables",
            "SELECT 'policy ' || policyname FROM pg_policies WHERE tablename IN :tables",
        )
        out: list[str] = []
        for statement in statements:
            query = sa.text(statement).bindparams(sa.bindparam("tables", expanding=True))
            out += rows.execute(query, {"tables": list(tables)}).scalars()
        return sorted(out)
