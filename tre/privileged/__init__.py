"""The part of the TRE that holds root: OS accounts, and the fixed set of operations the
unprivileged services ask of the privileged helper (:mod:`tre.privileged.helper`)."""

from tre.privileged.accounts import (
    INGEST,
    PROVISION,
    SERVICE,
    SERVICE_GROUP,
    project_group,
    running_as_root,
    workspace_account,
)
from tre.privileged.helper import Helper, call, separated

__all__ = [
    "INGEST",
    "PROVISION",
    "SERVICE",
    "SERVICE_GROUP",
    "Helper",
    "call",
    "project_group",
    "running_as_root",
    "separated",
    "workspace_account",
]
