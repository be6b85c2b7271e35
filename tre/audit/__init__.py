"""The tamper-evident audit log: events chained and MACed in the metadata database
(:mod:`tre.audit.log`), signed checkpoints outside it (:mod:`tre.audit.checkpoints`), and
their verification (:mod:`tre.audit.verification`)."""

from tre.audit.checkpoints import Checkpoint, Store
from tre.audit.log import (
    ACTIONS,
    GENESIS_HASH,
    AuditEventRow,
    AuditHead,
    Event,
    canonical_json,
    declare_actions,
    events,
    export,
    mac_of,
    record,
    seal,
)
from tre.audit.verification import Verification, verify

__all__ = [
    "ACTIONS",
    "GENESIS_HASH",
    "AuditEventRow",
    "AuditHead",
    "Checkpoint",
    "Event",
    "Store",
    "Verification",
    "canonical_json",
    "declare_actions",
    "events",
    "export",
    "mac_of",
    "record",
    "seal",
    "verify",
]
