"""OS accounts and groups of the local profile: who runs what, and what each may open.

``tre`` runs the portal, the hub and Keycloak; ``tre-ingest`` runs ingest and alone reads the
link key and the landing store; ``tre-provision`` runs provisioning and closure and alone reads
the master key and the project keys. The three share the group ``tre`` (the metadata database,
the curated store, the Keycloak client secrets). Each project has a group (``tre-p-<id>``, which
reads its extracts) and an account of that name (its output worker); each researcher has an
account per project for their workspace (``tre-w-<user>_<project>``), in the project's group
only.

Names are made so that two different (researcher, project) pairs or two projects never share
an account: project ids have no ``_`` (:data:`tre.projects.spec.ID_PATTERN`), so the last ``_``
of a workspace account's name splits it back; a name past the system's 32 characters becomes a
digest under another prefix (``tre-x-``, ``tre-q-``), which no readable name can equal.

Everything here that creates or changes accounts runs as root, in the privileged helper
(:mod:`tre.privileged.operations`) or in ``tre init``.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import pwd
import re
import shutil
import subprocess

from tre.exceptions import ConfigError, InvalidInput

SERVICE = "tre"
INGEST = "tre-ingest"
PROVISION = "tre-provision"
#: The group every service account belongs to.
SERVICE_GROUP = "tre"
#: Each service account and its comment (a GECOS field: no ':' or ',').
SERVICE_ACCOUNTS = {
    SERVICE: "TRE services (portal and hub and identity server)",
    INGEST: "TRE ingest (link key and landing store)",
    PROVISION: "TRE provisioning (master key and project keys and extracts)",
}
WORKSPACE_PREFIX = "tre-w-"
WORKSPACE_DIGEST_PREFIX = "tre-x-"
PROJECT_PREFIX = "tre-p-"
PROJECT_DIGEST_PREFIX = "tre-q-"
MAX_NAME = 32
NOLOGIN = "/usr/sbin/nologin"

#: What a project id and a username look like, declared here (a base module the privileged
#: helper needs) and used by tre.projects.spec.
PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{2,29}")
USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,63}")


def check_project_id(project_id: object) -> str:
    if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
        raise InvalidInput(f"{str(project_id)[:40]!r} is not a project id.")
    return project_id


def check_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise InvalidInput(f"{str(username)[:70]!r} is not a username.")
    return username


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def project_group(project_id: str) -> str:
    """The project's group, which reads its extracts (also its output worker's account)."""
    name = PROJECT_PREFIX + check_project_id(project_id)
    if len(name) <= MAX_NAME:
        return name
    return PROJECT_DIGEST_PREFIX + _digest(project_id, MAX_NAME - len(PROJECT_DIGEST_PREFIX))


def workspace_account(username: str, project_id: str) -> str:
    """The OS account of ``username``'s workspace in ``project_id``."""
    name = f"{WORKSPACE_PREFIX}{check_username(username)}_{check_project_id(project_id)}"
    if len(name) <= MAX_NAME:
        return name
    digest = _digest(f"{username}/{project_id}", MAX_NAME - len(WORKSPACE_DIGEST_PREFIX))
    return WORKSPACE_DIGEST_PREFIX + digest


def running_as_root() -> bool:
    return os.geteuid() == 0


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # every group, the primary one first

    @classmethod
    def named(cls, name: str) -> Account:
        entry = pwd.getpwnam(name)
        groups = [
            entry.pw_gid,
            *(g for g in os.getgrouplist(name, entry.pw_gid) if g != entry.pw_gid),
        ]
        return cls(name, entry.pw_uid, entry.pw_gid, tuple(groups))


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _run(command: list[str]) -> None:
    found = shutil.which(command[0], path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise ConfigError(f"{command[0]} is not installed: the TRE makes its OS accounts with it.")
    done = subprocess.run([found, *command[1:]], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(
            f"`{' '.join(command)}` failed ({done.stderr.strip() or done.returncode}): the TRE "
            "creates its OS accounts as root, with Debian's useradd and groupadd."
        )


def ensure_group(name: str) -> int:
    if not group_exists(name):
        _run(["groupadd", "--system", name])
    return gid(name)


def ensure_account(
    name: str, comment: str, *, primary: str | None = None, groups: tuple[str, ...] = ()
) -> Account:
    """A system account with no home and no login shell, in exactly ``groups`` besides its
    primary group (its own, or ``primary``)."""
    if not exists(name):
        command = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"]
        command += ["--shell", NOLOGIN, "--comment", comment]
        command += ["--gid", primary] if primary else ["--user-group"]
        if groups:
            command += ["--groups", ",".join(groups)]
        _run([*command, name])
    account = Account.named(name)
    wanted = {account.gid, *(gid(g) for g in groups)}
    if set(account.groups) != wanted:
        _run(["usermod", "--groups", ",".join(groups), name])
        account = Account.named(name)
    return account


def ensure_service_accounts() -> dict[str, Account]:
    """``tre``, ``tre-ingest`` and ``tre-provision``, all in the group ``tre``."""
    made = {SERVICE: ensure_account(SERVICE, SERVICE_ACCOUNTS[SERVICE])}
    for name in (INGEST, PROVISION):
        made[name] = ensure_account(name, SERVICE_ACCOUNTS[name], groups=(SERVICE_GROUP,))
    return made


def service_accounts_exist() -> bool:
    return all(exists(name) for name in SERVICE_ACCOUNTS)


def ensure_project(project_id: str) -> Account:
    """The project's group and its output worker's account (in that group only)."""
    name = project_group(project_id)
    ensure_group(name)
    return ensure_account(name, f"TRE output worker of project {project_id}", primary=name)


def ensure_workspace_account(username: str, project_id: str) -> Account:
    """``username``'s workspace account in ``project_id``: its own group and the project's."""
    ensure_project(project_id)
    return ensure_account(
        workspace_account(username, project_id),
        f"TRE workspace of {username} in {project_id}",
        groups=(project_group(project_id),),
    )


def project_members(project_id: str) -> list[str]:
    """The workspace accounts in the project's group (the project's own account aside)."""
    try:
        members = grp.getgrnam(project_group(project_id)).gr_mem
    except KeyError:
        return []
    return [m for m in members if m.startswith((WORKSPACE_PREFIX, WORKSPACE_DIGEST_PREFIX))]


def leave_project(account: str) -> None:
    """Take every supplementary group from a workspace account (it keeps its own)."""
    if exists(account):
        _run(["usermod", "--groups", "", account])


def remove(name: str) -> None:
    """Delete an account (its processes must be gone) and a group of that name left behind."""
    if exists(name):
        _run(["userdel", name])
    if group_exists(name):
        _run(["groupdel", name])
