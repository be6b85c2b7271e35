"""The audit log's events and their chain.

Every change of state in the TRE appends one event to ``audit_events`` in the same transaction
as the change itself, so a change without its record cannot be committed. Functions that change
state take the :class:`Event` describing it as a required argument.

Events form a hash chain: ``hash = SHA-256(prev_hash || canonical JSON of the event)``, where
the event holds its ``seq``, UTC time, actor, role, action, object and details. The newest
``seq`` and ``hash`` are also kept in the one-row table ``audit_head``; appending locks that row
(SQLite's write lock, PostgreSQL ``SELECT ... FOR UPDATE``), so concurrent writers queue up and
the chain never forks.

Anyone holding the database could recompute that chain after changing it. So each event also
carries a ``mac``: HMAC-SHA-256 of its hash under the audit key, a file outside the database
(``keys/audit.key``) that the TRE's services read and a database administrator does not. The
services open the database with it (:meth:`tre.db.Database.of_home`); a row rewritten without
it has a MAC that no longer matches. What the MAC cannot show (events deleted from the end of
the log) the signed checkpoints of :mod:`tre.audit.checkpoints` do.

Details must never hold a direct identifier, a key or a token; :func:`record` refuses details
that look like one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from tre.db import AUDIT_KEY, Base, Database
from tre.exceptions import IntegrityError

GENESIS_HASH = "0" * 64
_MAC_DOMAIN = b"tre audit event\0"

#: Every action the audit log knows, with what it means. Domain modules add theirs with
#: :func:`declare_actions`; the docs' audit reference is generated from this.
ACTIONS: dict[str, str] = {}


def declare_actions(actions: Mapping[str, str]) -> None:
    for name, meaning in actions.items():
        if ACTIONS.get(name, meaning) != meaning:
            raise ValueError(f"audit action {name!r} is declared twice with different meanings")
        ACTIONS[name] = meaning


declare_actions(
    {
        "tre.initialised": "A TRE home was created: stores, keys and the metadata database.",
        "tre.migrated": "The metadata database schema was upgraded to a newer revision.",
        "audit.sealed": "Events written before the TRE had an audit key were given their MACs "
        "(once, on upgrade, before the first checkpoint).",
    }
)


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(sa.String(32))
    actor: Mapped[str] = mapped_column(sa.String(200))
    actor_role: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(100), index=True)
    object_type: Mapped[str] = mapped_column(sa.String(64))
    object_id: Mapped[str] = mapped_column(sa.String(200))
    details: Mapped[str] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: HMAC of ``hash`` under the audit key (None only in a database opened without it).
    mac: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)

    __table_args__ = (sa.Index("ix_audit_events_object", "object_type", "object_id"),)


class AuditHead(Base):
    """The newest event of the chain; its row lock serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))
    #: The index of the newest signed checkpoint written (0: none yet). Kept here too, so that
    #: checkpoints deleted from their store are noticed.
    checkpoint: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


@dataclasses.dataclass(frozen=True)
class Event:
    """What happened, who did it, to what. Passed to every function that changes state."""

    actor: str
    actor_role: str
    action: str
    object_type: str
    object_id: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def but(self, **changes: Any) -> Event:
        """The same event with some fields replaced (e.g. the object id, once it is known)."""
        return dataclasses.replace(self, **changes)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _event_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def mac_of(key: bytes, event_hash: str) -> str:
    """The MAC that ties an event's hash (and so the whole chain up to it) to the audit key."""
    return hmac.new(key, _MAC_DOMAIN + event_hash.encode("ascii"), hashlib.sha256).hexdigest()


def _body(row: AuditEventRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "time": row.time,
        "actor": row.actor,
        "actor_role": row.actor_role,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "details": json.loads(row.details),
    }


# -- what details may not hold ---------------------------------------------------------------

_FORBIDDEN_KEYS = re.compile(
    r"password|secret|token|private|nhs_?number|\bupn\b|forename|surname|"
    r"first_?name|last_?name|date_of_birth|\bdob\b|postcode|key_material",
    re.IGNORECASE,
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
_TEN_DIGITS = re.compile(r"(?<![0-9A-Za-z])(\d{3}) ?(\d{3}) ?(\d{4})(?![0-9A-Za-z])")
_UPN = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NP-RT-Z]\d{11}[0-9A-HJ-NP-RT-Z](?![A-Za-z0-9])")


def _is_nhs_number(digits: str) -> bool:
    total = sum(int(d) * (10 - i) for i, d in enumerate(digits[:9]))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


def _check_safe(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _FORBIDDEN_KEYS.search(str(key)):
                raise ValueError(f"audit details may not hold {path}{key}: it names a secret")
            _check_safe(item, f"{path}{key}.")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_safe(item, path)
    elif isinstance(value, str):
        if _JWT.search(value):
            raise ValueError(f"audit details {path.rstrip('.')} hold what looks like a token")
        if _UPN.search(value):
            raise ValueError(f"audit details {path.rstrip('.')} hold what looks like a UPN")
        for match in _TEN_DIGITS.finditer(value):
            if _is_nhs_number("".join(match.groups())):
                raise ValueError(
                    f"audit details {path.rstrip('.')} hold what looks like an NHS number"
                )
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"audit details {path.rstrip('.')} must be JSON values")


# -- appending and reading -------------------------------------------------------------------


def record(session: Session, event: Event) -> int:
    """Append ``event`` to the chain inside the caller's write transaction; return its seq."""
    if event.action not in ACTIONS:
        raise ValueError(f"audit action {event.action!r} is not declared")
    for name in ("actor", "actor_role", "object_type", "object_id"):
        if not getattr(event, name):
            raise ValueError(f"audit event {event.action} has no {name}")
    details = dict(event.details)
    _check_safe(details, "")

    head = session.execute(
        sa.select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one()
    row = AuditEventRow(
        seq=head.seq + 1,
        time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=event.actor,
        actor_role=event.actor_role,
        action=event.action,
        object_type=event.object_type,
        object_id=str(event.object_id),
        details=canonical_json(details),
        prev_hash=head.hash,
    )
    row.hash = _event_hash(head.hash, _body(row))
    key = session.info.get(AUDIT_KEY)
    row.mac = mac_of(key, row.hash) if key else None
    session.add(row)
    head.seq, head.hash = row.seq, row.hash
    session.flush()
    # Read back, in the same transaction: a trigger or rule on the audit tables could drop or
    # change the event as it is written, and the change would then commit without its record.
    kept = session.execute(
        sa.select(AuditEventRow.hash, AuditEventRow.mac).where(AuditEventRow.seq == row.seq)
    ).one_or_none()
    now = session.execute(sa.select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    if kept is None or tuple(kept) != (row.hash, row.mac) or tuple(now) != (row.seq, row.hash):
        raise IntegrityError(
            f"The audit event {event.action} was changed or dropped as it was written (a "
            "trigger or rule on the audit tables?): the change is not made. Run `tre audit "
            "verify`."
        )
    return row.seq


def events(
    session: Session,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    after: int = 0,
) -> Iterator[dict[str, Any]]:
    """Events in chain order, as dicts (the form `tre audit export` writes)."""
    query = sa.select(AuditEventRow).where(AuditEventRow.seq > after).order_by(AuditEventRow.seq)
    if object_type is not None:
        query = query.where(AuditEventRow.object_type == object_type)
    if object_id is not None:
        query = query.where(AuditEventRow.object_id == object_id)
    result = session.execute(query.execution_options(yield_per=1000))
    try:
        for row in result.scalars():
            yield {**_body(row), "prev_hash": row.prev_hash, "hash": row.hash}
    finally:
        result.close()


def export(db: Database, out: IO[str]) -> int:
    """Write every event as one JSON line; return how many."""
    n = 0
    with db.read() as session:
        for event in events(session):
            out.write(canonical_json(event) + "\n")
            n += 1
    return n


def seal(session: Session, key: bytes) -> int:
    """Give the events written before the audit key existed their MACs; return how many.

    Only for a log that has no checkpoint yet (the caller checks the store): after the first
    checkpoint, an event without a MAC is tampering, never something to seal.
    """
    head = session.execute(
        sa.select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one()
    if head.checkpoint:
        raise ValueError("the audit log has checkpoints: events without a MAC are not sealed")
    rows = session.execute(sa.select(AuditEventRow).where(AuditEventRow.mac.is_(None))).scalars()
    n = 0
    for row in rows:
        row.mac = mac_of(key, row.hash)
        n += 1
    session.flush()
    return n
