"""The TRE home: the folder holding the data stores, the keys and the local metadata database.

```
<TRE home>/
  landing/    custodians' deliveries as received (mode 0700: the TRE's only)
  curated/    validated, linked, pseudonymised Parquet (0700)
  projects/   per-project extracts and working folders (0711: each opened to its group)
  released/   outputs released through the airlock (0700)
  keys/       link.key, master.key (mode 0600; folder 0700)
  identity/   the local Keycloak's state, log and generated client secrets
  tre.db      metadata database (SQLite, unless TRE_DATABASE_URL points elsewhere)
```
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path

import sqlalchemy as sa

from tre import audit
from tre.config import Settings
from tre.db import Database
from tre.exceptions import ConfigError, NotInitialised
from tre.keys import ALL_KEYS, create_key_file, read_key

STORES = ("landing", "curated", "projects", "released")
#: Only the TRE itself reads the stores; a workspace account passes through ``projects`` (it
#: cannot list it) to the one project folder its group opens.
STORE_MODES = {"landing": 0o700, "curated": 0o700, "projects": 0o711, "released": 0o700}
PRIVATE_DIRS = ("keys", "identity")


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
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def identity(self) -> Path:
        return self.root / "identity"

    def key(self, name: str) -> bytes:
        return read_key(self.keys / name)

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
    """Create whatever part of the TRE home is missing; leave existing parts untouched.

    Every step checks what exists before acting, so an interrupted run is finished by
    running it again.
    """
    home = Home(settings.home)
    if home.root.exists() and not home.root.is_dir():
        raise ConfigError(f"TRE_HOME={home.root} is a file, not a folder. Choose another path.")
    changes: list[str] = []

    def make_dir(path: Path, mode: int) -> None:
        if not path.is_dir():
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(path, mode)
            changes.append(f"created folder {path.relative_to(home.root.parent)}")

    make_dir(home.root, 0o755)
    for store in STORES:
        make_dir(home.root / store, STORE_MODES[store])
        if (home.root / store).stat().st_mode & 0o777 != STORE_MODES[store]:
            os.chmod(home.root / store, STORE_MODES[store])  # made by an older version
            changes.append(f"restricted folder {store} to mode {STORE_MODES[store]:o}")
    for private in PRIVATE_DIRS:
        make_dir(home.root / private, 0o700)
    for name in ALL_KEYS:
        if create_key_file(home.keys / name):
            changes.append(f"created key {name} (32 random bytes, mode 0600)")
        home.key(name)  # refuse a key file that is unreadable, exposed or damaged

    db = Database(settings.metadata_url)
    if db.is_sqlite:
        db_file = Path(db.engine.url.database)
        db_file.touch(mode=0o600, exist_ok=True)
        os.chmod(db_file, 0o600)
    try:
        before, after = db.migrate()
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
            actor = dict(actor=getpass.getuser(), actor_role="tre-admin")
            if initialised is None:
                audit.record(
                    session,
                    audit.Event(
                        **actor,
                        action="tre.initialised",
                        object_type="tre",
                        object_id=home.root.name,
                        details={"stores": list(STORES), "schema": after},
                    ),
                )
            elif before != after:
                audit.record(
                    session,
                    audit.Event(
                        **actor,
                        action="tre.migrated",
                        object_type="tre",
                        object_id=home.root.name,
                        details={"from": before, "to": after},
                    ),
                )
    finally:
        db.dispose()
    return InitReport(home.root, changes)
