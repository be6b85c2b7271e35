"""Key files of the local profile: the linkage key, the master key for project keys, the
services' key, and the audit log's two keys.

Each key is 32 random bytes in a file of mode 0600 under ``<TRE home>/keys``, owned by the one
account that uses it (``tre init`` as root): the link key by ingest (``tre-ingest``), the
master key and the project keys by provisioning (``tre-provision``), the services' key (from
which the portal's and the hub's own secrets are derived) by the services (``tre``). The
audit key (which MACs each audit event) is read by all three (root's, group ``tre``, 0640);
the audit signing key (an Ed25519 seed, which signs the audit log's checkpoints) by root
alone, in the privileged helper. A key file is created once, atomically, and never
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
SERVICE_KEY = "service.key"
AUDIT_KEY = "audit.key"
AUDIT_SIGNING_KEY = "audit-signing.key"
ALL_KEYS = (LINK_KEY, MASTER_KEY, SERVICE_KEY, AUDIT_KEY, AUDIT_SIGNING_KEY)
#: Keys the services' group may read (mode 0640).
SHARED_KEYS = (AUDIT_KEY,)


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


def read_key(path: Path, group_read: bool = False) -> bytes:
    """Read a key file, refusing one that others can read (or its group, unless
    ``group_read``: a key the services share) or that is not a whole key."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"The key file {path.name} is missing from the TRE home. Run `tre init` for a new "
            "TRE, or restore the file from your key backup for an existing one."
        ) from None
    exposed = stat.S_IRWXO | (stat.S_IWGRP | stat.S_IXGRP if group_read else stat.S_IRWXG)
    if info.st_mode & exposed:
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


def purpose_key(keys_dir: Path, purpose: str) -> bytes:
    """A key for one purpose of the TRE's services (signing the portal's cookies, the hub's
    API token), derived from the services' key: neither the portal nor the hub reads the
    master key."""
    import hashlib
    import hmac

    return hmac.new(
        read_key(keys_dir / SERVICE_KEY), f"tre purpose key v1|{purpose}".encode(), hashlib.sha256
    ).digest()


# -- project keys --------------------------------------------------------------------------
#
# K_project = HKDF-SHA256(master key, salt, info = "tre project key v1|<project id>"), with a
# random 32-byte salt per project in <home>/keys/projects/<id>.salt (mode 0600). The salt is
# what closure destroys: without it K_project, and so the project's pseudonyms, can never be
# recomputed, even by someone holding the master key (crypto-shredding).

PROJECT_KEYS = "projects"


def project_salt_path(keys_dir: Path, project_id: str) -> Path:
    return keys_dir / PROJECT_KEYS / f"{project_id}.salt"


def create_project_salt(keys_dir: Path, project_id: str) -> bool:
    folder = keys_dir / PROJECT_KEYS
    folder.mkdir(mode=0o700, exist_ok=True)
    return create_key_file(project_salt_path(keys_dir, project_id))


def project_key(keys_dir: Path, project_id: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    master = read_key(keys_dir / MASTER_KEY)
    salt_path = project_salt_path(keys_dir, project_id)
    if not salt_path.exists():
        raise IntegrityError(
            f"The key of project {project_id} does not exist (never provisioned, or destroyed "
            "at closure): its pseudonyms cannot be computed."
        )
    salt = read_key(salt_path)
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=salt,
        info=f"tre project key v1|{project_id}".encode(),
    ).derive(master)


def destroy_project_key(keys_dir: Path, project_id: str) -> bool:
    """Overwrite and delete the project's salt. Return whether there was one."""
    path = project_salt_path(keys_dir, project_id)
    if not path.exists():
        return False
    with open(path, "r+b") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    return True
