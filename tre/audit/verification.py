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
from collections.abc import Iterable

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
        head = session.execute(sa.select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        if store is not None:
            written = head.checkpoint or 0
            kept = max([0, *(cp.index for cp in reading.checkpoints)])
            if written > kept:
                store_problems.append(
                    f"checkpoint {kept + 1}{f' to {written}' if written > kept + 1 else ''} "
                    "is missing from the store, which the database says was written: deleted"
                )
        result = session.execute(
            sa.select(AuditEventRow).order_by(AuditEventRow.seq).execution_options(yield_per=1000)
        )
        try:
            found = _verify_rows(result.scalars(), head, anchors, db.audit_key)
        finally:
            result.close()
    if found.intact and store_problems:
        found = dataclasses.replace(found, intact=False, problem="; ".join(store_problems))
    if newest is not None:
        found = dataclasses.replace(found, checkpoint=newest.index, checkpoint_seq=newest.seq)
    return found


def _verify_rows(
    rows: Iterable[AuditEventRow],
    head: AuditHead,
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
        if row.seq < expected_seq:
            return broken(row.seq, f"seq {row.seq} appears out of order")
        if row.seq > expected_seq:
            return broken(
                expected_seq,
                f"seq {expected_seq} is missing: the event was deleted",
            )
        if row.prev_hash != prev_hash:
            return broken(
                row.seq,
                f"seq {row.seq} does not follow seq {row.seq - 1}: its prev_hash differs "
                "(an event was inserted, deleted or reordered before it)",
            )
        try:
            body = _body(row)
            # The stored text must be exactly what was hashed: else a duplicated key, say,
            # would show one value to SQL and hash the other.
            canonical = row.details == canonical_json(body["details"])
            recomputed = _event_hash(prev_hash, body) if canonical else ""
        except ValueError:
            recomputed = ""
        if recomputed != row.hash:
            return broken(
                row.seq, f"seq {row.seq} was modified: its content does not match its hash"
            )
        if key is not None:
            if row.mac is None:
                return broken(
                    row.seq,
                    f"seq {row.seq} has no MAC: it was written or rewritten without the "
                    "audit key (events deleted, changed or inserted and the chain recomputed)",
                )
            if not hmac.compare_digest(row.mac, mac_of(key, row.hash)):
                return broken(
                    row.seq,
                    f"seq {row.seq} was rewritten: its MAC does not match (the chain was "
                    "recomputed by someone without the audit key, after events were "
                    "deleted, changed or inserted)",
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
