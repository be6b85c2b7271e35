"""Key files of the local profile: the linkage key and the master key for project keys.

Each key is 32 random bytes in a file of mode 0600 under ``<TRE home>/keys`` (itself 0700),
owned by the account that runs the TRE. A key file is created once, atomically, and never
overwritten: replacing the linkage key would silently change every person_key. In production a
KMS or Vault holds these keys instead.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from tre.exceptions import ConfigError, IntegrityError

KEY_BYTES = 32
LINK_KEY = "link.key"
MASTER_KEY = "master.key"
ALL_KEYS = (LINK_KEY, MASTER_KEY)


def create_key_file(path: Path) -> bool:
    """Create ``path`` holding 32 fresh random bytes, mode 0600. Return False if it exists.

    The key is written to a temporary file first and then linked into place, so an interrupted
    run leaves either no key file or a whole one, and a key is never replaced.
    """
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def read_key(path: Path) -> bytes:
    """Read a key file, refusing one that others can read or that is not a whole key."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"The key file {path.name} is missing from the TRE home. Run `tre init` for a new "
            "TRE, or restore the file from your key backup for an existing one."
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"The key file {path} can be read by other accounts (mode "
            f"{stat.S_IMODE(info.st_mode):04o}). Run `chmod 600 {path}`."
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise IntegrityError(
            f"The key file {path.name} does not hold a {KEY_BYTES}-byte key: it was truncated "
            "or replaced. Restore it from your key backup; do not create a new one over "
            "existing data."
        )
    return key
