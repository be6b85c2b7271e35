"""The TRE home: the folder holding the data stores, the keys and the local metadata database.

```
<TRE home>/               root:tre 0751   (others pass through, to their project only)
  landing/    custodians' deliveries as received     tre-ingest, 0700
  curated/    validated, linked, pseudonymised data  tre-ingest:tre, 2750 (files 0640)
  projects/   per-project extracts and working folders
              tre-provision:tre 0751; each project tre-provision:tre-p-<id> 0750 (extracts
              0550/0440, read by the project's group; work/ root:tre-p-<id> 0750, a 0700
              folder per member owned by their workspace account)
  outputs/    plain files kept for the airlock       tre, 0700
  released/   outputs released through the airlock   tre, 0700
  keys/       root:tre 0750: link.key (tre-ingest), master.key and projects/ (tre-provision),
              service.key (tre), each 0600; audit.key (root:tre 0640, every service MACs
              the audit events with it), audit-signing.key (root, 0600: the helper's)
  audit/      the audit log's signed checkpoints and public key  root:tre 2750 (files 0440)
  identity/   the local Keycloak's state; secrets.json (0640: the services' group)
  run/        the privileged helper's socket (root:tre 0660) and log
  work/       ingest's working folder (locks, staging)   tre-ingest, 0700
  demo/       the demo's custodian keys and deliveries      tre-ingest, 0700
  hub/, portal/  the servers' state and logs               tre, 0700
  db/tre.db   metadata database (SQLite, unless TRE_DATABASE_URL points elsewhere), tre:tre
              2770 (file 0660)
```

Ownership and modes are those of a home made by ``tre init`` as root, which creates the
service accounts (:mod:`tre.privileged.accounts`) and hands each part to its owner, again at
every run (a home restored from a backup, or written as root by an older tre, is put right).
Made without root, the home belongs to the account that made it and runs without separation
(a developer's home: no workspaces, nothing kept from one part of the TRE by another).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tre import audit
from tre.config import Settings
from tre.db import Database
from tre.exceptions import ConfigError, IntegrityError, NotInitialised, ServiceUnavailable
from tre.keys import (
    ALL_KEYS,
    AUDIT_KEY,
    AUDIT_SIGNING_KEY,
    LINK_KEY,
    MASTER_KEY,
    PROJECT_KEYS,
    SERVICE_KEY,
    SHARED_KEYS,
    create_key_file,
    read_key,
)
from tre.privileged import accounts, folders

log = logging.getLogger(__name__)

STORES = ("landing", "curated", "projects", "outputs", "released")
#: Each store's owner, group and modes (folders, files) in a home with separated accounts;
#: without, the same modes for the one account.
STORE_OWNERS = {
    "landing": (accounts.INGEST, accounts.INGEST, 0o700, 0o600),
    # setgid: what ingest writes there belongs to the services' group (provisioning and the
    # portal's risk report read it), not to ingest's own.
    "curated": (accounts.INGEST, accounts.SERVICE_GROUP, 0o2750, 0o640),
    "projects": (accounts.PROVISION, accounts.SERVICE_GROUP, 0o751, None),
    "outputs": (accounts.SERVICE, accounts.SERVICE_GROUP, 0o700, 0o600),
    "released": (accounts.SERVICE, accounts.SERVICE_GROUP, 0o700, 0o600),
}
STORE_MODES = {store: modes[2] for store, modes in STORE_OWNERS.items()}
KEY_OWNERS = {
    LINK_KEY: accounts.INGEST,
    MASTER_KEY: accounts.PROVISION,
    SERVICE_KEY: accounts.SERVICE,
    AUDIT_KEY: "root",  # group tre, 0640: every service account MACs audit events
    AUDIT_SIGNING_KEY: "root",  # the privileged helper signs the checkpoints
}
PRIVATE_DIRS = ("keys", "identity")
#: Made by root in a separated home (the home's own folder is root's: no service account may
#: create or replace a name in it), then given to their owners (:func:`hand_over`).
SERVICE_DIRS = ("db", "hub", "portal", "run", "demo", "work")
DATABASE = "tre.db"


@dataclasses.dataclass(frozen=True)
class Home:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    @property
    def projects(self) -> Path:
        return self.root / "projects"

    @property
    def released(self) -> Path:
        return self.root / "released"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def identity(self) -> Path:
        return self.root / "identity"

    @property
    def checkpoints(self) -> audit.Store:
        """The audit log's signed checkpoints."""
        return audit.Store.of_home(self.root)

    def key(self, name: str) -> bytes:
        return read_key(self.keys / name, group_read=name in SHARED_KEYS)

    def check(self) -> None:
        """Refuse to run over a folder that is not an initialised TRE home."""
        missing = [d for d in (*STORES, "keys") if not (self.root / d).is_dir()]
        if missing:
            raise NotInitialised(
                f"{self.root} is not an initialised TRE home (no {', '.join(missing)}). "
                "Run `tre init` (or set TRE_HOME to the right folder)."
            )


@dataclasses.dataclass
class InitReport:
    home: Path
    changes: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def init(settings: Settings) -> InitReport:
    """Create whatever part of the TRE home is missing; leave existing parts untouched. As
    root, also create the service accounts and give each part of the home to its owner.

    Every step checks what exists before acting, so an interrupted run is finished by
    running it again. As root, the home's own folder belongs to root and everything in it is
    made by root before any service account may write there; the database is opened by the
    services' account only, never by root.
    """
    home = Home(settings.home)
    if home.root.exists() and not home.root.is_dir():
        raise ConfigError(f"TRE_HOME={home.root} is a file, not a folder. Choose another path.")
    changes: list[str] = []
    separate = accounts.running_as_root()
    if separate:
        closed = [str(p) for p in home.root.parents if p.exists() and not p.stat().st_mode & 1]
        if closed:
            raise ConfigError(
                f"The TRE's accounts cannot reach {home.root}: {', '.join(closed)} "
                f"{'is' if len(closed) == 1 else 'are'} closed to other accounts. Give "
                f"{'it' if len(closed) == 1 else 'them'} the execute bit for others (chmod o+x), "
                "or put the TRE home elsewhere (e.g. /srv/tre)."
            )
    if separate and not accounts.service_accounts_exist():
        # The machine's accounts, not the home's: said in the log, not among the home's changes.
        accounts.ensure_service_accounts()
        log.info(
            "created the service accounts %s (group %s)",
            ", ".join(accounts.SERVICE_ACCOUNTS),
            accounts.SERVICE_GROUP,
        )

    def make_dir(path: Path, mode: int) -> None:
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a link, which the TRE never follows: remove it and run `tre init` "
                "again."
            )
        if not path.is_dir():
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(path, mode)
            changes.append(f"created folder {path.relative_to(home.root.parent)}")

    make_dir(home.root, 0o751 if separate else 0o755)
    if separate:
        _take_home(home)  # root's, before anything is made in it
    for store in STORES:
        make_dir(home.root / store, STORE_MODES[store])
        if (home.root / store).stat().st_mode & 0o7777 != STORE_MODES[store]:
            os.chmod(home.root / store, STORE_MODES[store])  # made by an older version
            changes.append(f"restricted folder {store} to mode {STORE_MODES[store]:o}")
    for private in PRIVATE_DIRS:
        make_dir(home.root / private, 0o700)
    make_dir(home.root / audit.checkpoints.FOLDER, 0o2750)
    if separate:
        for name in SERVICE_DIRS:
            make_dir(home.root / name, 0o700)
        make_dir(home.keys / PROJECT_KEYS, 0o700)  # provisioning's, which cannot make it
    for name in ALL_KEYS:
        if create_key_file(home.keys / name):
            changes.append(f"created key {name} (32 random bytes, mode 0600)")
        home.key(name)  # refuse a key file that is unreadable, exposed or damaged
    _move_database(home)
    if separate:
        hand_over(home)
        changes += _as_services(settings.metadata_url, str(home.root))
    else:
        changes += _initialise_database(settings.metadata_url, str(home.root), getpass.getuser())
    return InitReport(home.root, changes)


def _as_services(url: str, home_root: str) -> list[str]:
    """:func:`_initialise_database` in a new process of the services' account: root never
    opens the database (a link there would be followed), and SQLite must not be used in a
    process forked from one that has it open."""
    service = accounts.Account.named(accounts.SERVICE)
    code = (
        "import json, sys; from tre.home import _initialise_database; "
        "print(json.dumps(_initialise_database(*sys.argv[1:])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, url, home_root, "root"],
        user=service.uid,
        group=service.gid,
        extra_groups=list(service.groups[1:]),
        umask=0o077,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"},
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
        raise ServiceUnavailable(
            f"The metadata database could not be opened by the services' account ({reason}): "
            "its folder db/ must hold the database itself, not a link; check "
            "TRE_DATABASE_URL."
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _move_database(home: Home) -> None:
    """A database of an older tre, in the home's own folder, moved into ``db/``."""
    old, new = home.root / DATABASE, home.root / "db" / DATABASE
    if old.is_file() and not old.is_symlink() and not new.exists():
        (home.root / "db").mkdir(mode=0o700, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{old}{suffix}").is_file():
                os.replace(f"{old}{suffix}", f"{new}{suffix}")
                if accounts.running_as_root():  # db/ is root's still: nothing planted there
                    service, group = accounts.uid(accounts.SERVICE), accounts.gid("tre")
                    os.chown(f"{new}{suffix}", service, group, follow_symlinks=False)
                    os.chmod(f"{new}{suffix}", 0o660)


def _initialise_database(url: str, home_root: str, actor: str) -> list[str]:
    """Create or migrate the metadata database and record it in the audit log (as the
    services' account when the home is separated). Events written before the home had an
    audit key are sealed with it, while no checkpoint exists yet. Returns what changed."""
    changes: list[str] = []
    home_name = Path(home_root).name
    db = Database.of_home(url, Path(home_root))
    if db.is_sqlite:
        db_file = Path(db.engine.url.database)
        db_file.parent.mkdir(mode=0o700, exist_ok=True)
        # Made before SQLite first opens it, readable and writable by the services' group
        # (ingest and provisioning write it too); SQLite gives its journal files the same
        # mode. An existing one is not opened here: closing a descriptor of it would drop
        # this process's SQLite locks.
        if db_file.is_symlink():
            raise ConfigError(f"{db_file} is a link, which the TRE never follows: remove it.")
        with contextlib.suppress(FileExistsError):
            fd = os.open(db_file, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o660 if accounts.running_as_root() or _grouped() else 0o600)
            finally:
                os.close(fd)
    try:
        before, after = db.migrate()
        # Events written before the audit key (revision 0009) get their MACs in the run that
        # migrates past it, once their chain is checked, and never again: after that an event
        # without a MAC is tampering.
        sealing = before is not None and int(before) < MACS_REVISION
        if sealing:
            plain = Database(url)  # the chain alone: these events have no MAC yet
            try:
                chain = audit.verify(plain)
            finally:
                plain.dispose()
            if not chain.intact:
                raise IntegrityError(
                    f"The audit log is NOT intact ({chain.problem}): its events are not given "
                    "MACs. Restore the database from a backup, or investigate first."
                )
            sealing = not audit.Store.of_home(Path(home_root)).read().checkpoints
        if before != after:
            changes.append(
                f"created metadata database (schema {after})"
                if before is None
                else f"migrated metadata database {before} → {after}"
            )
        with db.write() as session:
            initialised = session.execute(
                sa.select(audit.AuditEventRow.seq).where(
                    audit.AuditEventRow.action == "tre.initialised"
                )
            ).first()
            who = dict(actor=actor, actor_role="tre-admin")
            if sealing:
                assert db.audit_key is not None
                sealed = audit.seal(session, db.audit_key)
                audit.record(
                    session,
                    audit.Event(
                        **who,
                        action="audit.sealed",
                        object_type="tre",
                        object_id=home_name,
                        details={"events": sealed, "head": [chain.head_seq, chain.head_hash]},
                    ),
                )
                changes.append(f"gave {sealed} earlier audit events their MACs")
            if initialised is None:
                audit.record(
                    session,
                    audit.Event(
                        **who,
                        action="tre.initialised",
                        object_type="tre",
                        object_id=home_name,
                        details={"stores": list(STORES), "schema": after},
                    ),
                )
            elif before != after:
                audit.record(
                    session,
                    audit.Event(
                        **who,
                        action="tre.migrated",
                        object_type="tre",
                        object_id=home_name,
                        details={"from": before, "to": after},
                    ),
                )
    finally:
        db.dispose()
    return changes


def checkpoint_audit(home: Path, db: Database) -> audit.Checkpoint | None:
    """Have the audit log's committed head checked and signed into the checkpoints (by the
    privileged helper in a separated home) and count it in the database. Returns the newest
    checkpoint, or None when one written meanwhile by another process is newer."""
    from tre import privileged

    written = privileged.call(Path(home), "write_audit_checkpoint", database_url=db.url)
    if written is None:
        return None
    checkpoint = audit.Checkpoint(**written)
    with db.write() as session:
        head = session.execute(
            sa.select(audit.AuditHead).where(audit.AuditHead.id == 1).with_for_update()
        ).one()[0]
        head.checkpoint = max(head.checkpoint or 0, checkpoint.index)
    return checkpoint


#: The schema revision from which each audit event carries a MAC.
MACS_REVISION = 9


def _grouped() -> bool:
    """Whether this process is the services' account of a separated home."""
    return accounts.exists(accounts.SERVICE) and os.geteuid() == accounts.uid(accounts.SERVICE)


# -- ownership (as root) ------------------------------------------------------------------------


def _take_home(home: Home) -> None:
    """The home's own folder: root's, the services' group may pass and list (0751)."""
    root = os.open(home.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(root, 0, accounts.gid(accounts.SERVICE_GROUP))
        os.fchmod(root, 0o751)
    finally:
        os.close(root)


def hand_over(home: Home) -> None:
    """Give every part of the home to its owner (as root), by file descriptor: a symlink met on
    the way is left alone, never followed. Workspaces' own folders are the helper's, not
    touched here."""
    service = accounts.Account.named(accounts.SERVICE)
    group = accounts.gid(accounts.SERVICE_GROUP)
    root = os.open(home.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(root, 0, group)
        os.fchmod(root, 0o751)
        for store, (owner, store_group, dir_mode, file_mode) in STORE_OWNERS.items():
            uid, gid = accounts.uid(owner), accounts.gid(store_group)
            with _opened(root, store) as fd:
                if store == "projects":
                    _own(fd, uid, gid, dir_mode, None)
                    for project in sorted(os.listdir(fd)):
                        with contextlib.suppress(OSError):  # a link, or gone: left alone
                            _hand_over_project(fd, project, uid)
                else:
                    _own_tree(fd, uid, gid, dir_mode, file_mode)
        with _opened(root, "keys") as keys:
            _own(keys, 0, group, 0o750, None)
            for name, owner in KEY_OWNERS.items():
                with _opened(keys, name) as fd:
                    if name in SHARED_KEYS:
                        _own(fd, 0, group, None, 0o640)
                    else:
                        _own(fd, accounts.uid(owner), accounts.gid(owner), None, 0o600)
            with contextlib.suppress(FileNotFoundError), _opened(keys, PROJECT_KEYS) as fd:
                provision = accounts.uid(accounts.PROVISION)
                _own_tree(fd, provision, accounts.gid(accounts.PROVISION), 0o700, 0o600)
        with _opened(root, audit.checkpoints.FOLDER) as fd:
            # root's alone: the services read the checkpoints, the helper alone adds one.
            _own_tree(fd, 0, group, 0o2750, 0o440)
        with _opened(root, "identity") as identity:
            _own_tree(identity, service.uid, group, 0o700, None)  # Keycloak's scripts stay runnable
            os.fchmod(identity, 0o750)
            with contextlib.suppress(FileNotFoundError), _opened(identity, "secrets.json") as fd:
                os.fchmod(fd, 0o640)  # the client secrets: provisioning syncs Keycloak's groups
        with _opened(root, "db") as fd:
            # The folder only: its files are the services' own, made 0660 by them, and opening
            # the database here would drop this process's SQLite locks on it (closing any
            # descriptor of a file drops them all).
            # setgid: the journal files whichever service makes first are the group's too.
            _own(fd, service.uid, group, 0o2770, None)
        for name in ("hub", "portal"):
            with _opened(root, name) as fd:
                _own_tree(fd, service.uid, service.gid, 0o700, None)
        with _opened(root, "run") as fd:
            _own(fd, 0, group, 0o750, None)
        ingest = accounts.uid(accounts.INGEST)
        with _opened(root, "demo") as fd:  # the demo's keys and deliveries
            _own_tree(fd, ingest, accounts.gid(accounts.INGEST), 0o700, 0o600)
        with _opened(root, "work") as fd:
            # Ingest's working folder: what it stages there becomes curated data, whose group
            # is the services' (setgid, so that it is from the start); nobody else enters it.
            _own_tree(fd, ingest, group, 0o2750, 0o640)
            _own(fd, ingest, group, 0o2700, None)
    finally:
        os.close(root)


def _hand_over_project(projects: int, name: str, provision: int) -> None:
    try:
        gid = accounts.ensure_project(name).gid
    except Exception:
        return
    with _opened(projects, name) as base:
        if not stat.S_ISDIR(os.fstat(base).st_mode):
            return
        _own(base, provision, gid, 0o750, None)
        missing = contextlib.suppress(FileNotFoundError, NotADirectoryError)
        with missing, _opened(base, "extracts") as extracts:
            _own_tree(extracts, provision, gid, 0o550, 0o440)
        with missing, _opened(base, "work") as work:
            _own(work, 0, gid, 0o750, None)


#: How root opens an entry of the home: never through a link, never waiting on a FIFO.
_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@contextlib.contextmanager
def _opened(parent: int, name: str):
    fd = os.open(name, _ENTRY, dir_fd=parent)
    try:
        yield fd
    finally:
        os.close(fd)


def _own(fd: int, uid: int, gid: int, dir_mode: int | None, file_mode: int | None) -> None:
    info = os.fstat(fd)
    os.fchown(fd, uid, gid)
    mode = dir_mode if stat.S_ISDIR(info.st_mode) else file_mode
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)


def _own_tree(fd: int, uid: int, gid: int, dir_mode: int, file_mode: int | None) -> None:
    """``fd`` and everything under it, folders and files only (links left alone, files with
    other hard links too), walked without recursion: each folder reopened from ``fd`` one
    name at a time (:func:`tre.privileged.folders.walk`)."""
    _own(fd, uid, gid, dir_mode, file_mode)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        return
    pending: list[list[str]] = [[]]
    while pending:
        names = pending.pop()
        with contextlib.ExitStack() as stack:
            try:
                folder = stack.enter_context(folders.walk(fd, names))
            except OSError:  # gone meanwhile, or a link now: not ours to change
                continue
            for name in os.listdir(folder):
                try:
                    child = os.open(name, _ENTRY, dir_fd=folder)
                except OSError:  # a link (ELOOP), or gone meanwhile
                    continue
                try:
                    info = os.fstat(child)
                    if stat.S_ISDIR(info.st_mode):
                        _own(child, uid, gid, dir_mode, file_mode)
                        pending.append([*names, name])
                    elif stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                        _own(child, uid, gid, dir_mode, file_mode)
                finally:
                    os.close(child)
