"""Deliveries: a custodian's folder of CSV files, its manifest and the manifest's signature.

```
<delivery>/
  manifest.json      custodian, delivery id, and per file: dataset, rows, bytes, SHA-256
  manifest.sig       {"key_id": ..., "signature": base64 Ed25519 over manifest.json's bytes}
  pupils.csv ...     one file per dataset, named <dataset>.csv, columns in catalog order
```

:func:`verify` checks, in order: the manifest parses, names a known custodian and only that
custodian's datasets, each in a file of a plain name; the signature verifies against a
registered key; the folder holds exactly the listed files; each file's size and SHA-256 match.
Row counts are checked when ingest loads the files. Every refusal names what is wrong.

Whoever can write the delivery folder may change it while the TRE reads it, so the folder is
opened once (:func:`opened`) and every name in it is opened relative to that descriptor, never
through a link and never waiting on a named pipe; anything but a regular file is refused.
manifest.json is read once: the signature is checked over exactly the bytes that are parsed.
Sizes, hashes and ingest's copies into the landing store come from the descriptors the checks
opened: nothing is opened again by its name after the checks.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import duckdb
from sqlalchemy.orm import Session

from tre import catalog, custodians
from tre.exceptions import IntegrityError, InvalidInput

FORMAT = "tre-delivery/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: The most bytes read of manifest.json and of manifest.sig (a manifest of every dataset of the
#: catalog takes about 2 KB).
MANIFEST_LIMIT = 1024 * 1024
SIGNATURE_LIMIT = 64 * 1024
#: How a name in the delivery folder is opened: never through a link, never waiting for the
#: writer of a named pipe.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: A file's name in a manifest: a plain name, for a file directly in the delivery folder.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
COPY_CHUNK = 1 << 30


@dataclasses.dataclass(frozen=True)
class DeliveryFile:
    dataset: str
    file: str
    rows: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    custodian: str
    delivery: str
    description: str
    catalog_version: str
    files: tuple[DeliveryFile, ...]
    digest: str
    """SHA-256 of the manifest's bytes: the identity of this delivery."""


def sha256_file(path: Path) -> str:
    # file_digest reads into one buffer it reuses (reading chunks as new bytes objects
    # faults fresh pages in for each).
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def count_rows(path: Path) -> int:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT count(*) FROM read_csv(?, all_varchar = true, header = true)", [str(path)]
        ).fetchone()[0]


def write_manifest(
    folder: Path,
    custodian_id: str,
    delivery: str,
    description: str,
    signer: custodians.Signer | None = None,
) -> Path:
    """Write ``manifest.json`` for the dataset files in ``folder`` (and sign it if asked)."""
    custodian = catalog.custodian(custodian_id)
    files = []
    for dataset in custodian.datasets:
        path = folder / dataset.file_name
        if path.exists():
            files.append(
                {
                    "dataset": dataset.name,
                    "file": dataset.file_name,
                    "rows": count_rows(path),
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
    manifest = {
        "format": FORMAT,
        "custodian": custodian_id,
        "delivery": delivery,
        "description": description,
        "catalog_version": catalog.CATALOG_VERSION,
        "files": files,
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    if signer is not None:
        sign_manifest(folder, signer)
    return path


def sign_manifest(folder: Path, signer: custodians.Signer) -> Path:
    """Write ``manifest.sig`` for the manifest in ``folder``."""
    with opened(folder) as delivery:  # refuse to sign something that is not a manifest
        signature = signer.sign(delivery.manifest_bytes)
    path = folder / SIGNATURE
    path.write_text(
        json.dumps({"key_id": signer.key_id, "signature": base64.b64encode(signature).decode()})
        + "\n"
    )
    return path


def read_manifest(folder: Path) -> Manifest:
    with opened(folder) as delivery:
        return delivery.manifest


def verify(folder: Path, session: Session, *, hash_files: bool = True) -> Manifest:
    """Check the manifest, its signature and every file's size (and hash, unless the caller
    hashes the files itself as it copies them); return the manifest."""
    with opened(folder) as delivery:
        return delivery.verify(session, hash_files=hash_files)


@contextlib.contextmanager
def opened(folder: Path) -> Iterator[Delivery]:
    """The delivery in ``folder``, its manifest read and parsed; its files are opened by
    :meth:`Delivery.verify` and closed when the block ends."""
    with contextlib.ExitStack() as stack:
        folder_fd = _open_folder(folder)
        stack.callback(os.close, folder_fd)
        try:
            raw = _read_file(folder_fd, MANIFEST, MANIFEST_LIMIT)
        except FileNotFoundError:
            raise InvalidInput(
                f"{folder} has no {MANIFEST}: it is not a delivery. The custodian's delivery "
                "tool writes the manifest and signs it."
            ) from None
        delivery = Delivery(folder_fd, raw, parse_manifest(raw))
        stack.callback(delivery.close)
        yield delivery


class Delivery:
    """A delivery folder opened once: every name in it is opened relative to that descriptor,
    and what is checked, hashed and copied is read from the descriptors the checks opened."""

    def __init__(self, folder_fd: int, manifest_bytes: bytes, manifest: Manifest):
        self._folder_fd = folder_fd
        self.manifest_bytes = manifest_bytes
        """manifest.json's bytes, as read once: parsed, signed and landed."""
        self.manifest = manifest
        self.signature_bytes = b""
        """manifest.sig's bytes, as read once by :meth:`verify`."""
        self._files: dict[str, int] = {}

    def verify(self, session: Session, *, hash_files: bool = True) -> Manifest:
        """Check the signature over the manifest's bytes, that the folder holds exactly the
        listed files, each a regular file of the listed size (and its hash, unless the caller
        hashes the copies it makes with :meth:`copy_file`); return the manifest."""
        kid, signature = self._read_signature()
        custodians.verify_signature(
            session, self.manifest.custodian, kid, self.manifest_bytes, signature
        )
        self._check_entries()
        for f in self.manifest.files:
            self._files[f.file] = self._open_listed(f)
        if hash_files:
            self._check_hashes()
        return self.manifest

    def copy_file(self, f: DeliveryFile, target: Path) -> None:
        """Copy ``f``, as opened by :meth:`verify`, into the new file ``target`` (in the
        kernel: no pass through Python)."""
        source = self._files[f.file]
        with open(target, "xb") as out:
            offset = 0
            while sent := os.sendfile(out.fileno(), source, offset, COPY_CHUNK):
                offset += sent

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def _read_signature(self) -> tuple[str, bytes]:
        try:
            self.signature_bytes = _read_file(self._folder_fd, SIGNATURE, SIGNATURE_LIMIT)
        except FileNotFoundError:
            raise IntegrityError(
                f"The delivery has no {SIGNATURE}: it is not signed. The custodian signs it "
                "with `tre custodian sign DELIVERY --key THEIR.key`."
            ) from None
        try:
            signature = json.loads(self.signature_bytes)
            return (
                str(signature["key_id"]),
                base64.b64decode(signature["signature"], validate=True),
            )
        except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
            raise IntegrityError(f"{SIGNATURE} is damaged: it does not hold a signature.") from None

    def _check_entries(self) -> None:
        """Refuse what the manifest does not list, and anything listed that is not a file."""
        expected = {f.file for f in self.manifest.files} | {MANIFEST, SIGNATURE}
        extra, not_files = [], []
        with os.scandir(self._folder_fd) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                if entry.name not in expected:
                    extra.append(entry.name + ("" if stat.S_ISREG(mode) else f" ({_kind(mode)})"))
                elif not stat.S_ISREG(mode):
                    not_files.append((entry.name, _kind(mode)))
        if extra:
            raise IntegrityError(
                f"The delivery holds files its manifest does not list: {', '.join(sorted(extra))}. "
                "Remove them, or ask the custodian for a manifest that lists them."
            )
        if not_files:
            raise _not_a_file(*min(not_files))

    def _open_listed(self, f: DeliveryFile) -> int:
        try:
            fd = _open_regular(self._folder_fd, f.file)
        except FileNotFoundError:
            raise IntegrityError(f"{f.file} is listed in the manifest but missing.") from None
        size = os.fstat(fd).st_size
        if size != f.bytes:
            os.close(fd)
            raise IntegrityError(
                f"{f.file} has {size:,} bytes but the manifest says {f.bytes:,}: the file was "
                "changed or truncated after signing."
            )
        return fd

    def _check_hashes(self) -> None:
        files = self.manifest.files
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            digests = list(pool.map(lambda f: _sha256_fd(self._files[f.file]), files))
        for f, digest in zip(files, digests, strict=True):
            if digest != f.sha256:
                raise IntegrityError(
                    f"{f.file} does not match the SHA-256 in the manifest: the file was changed "
                    "after signing. Ask the custodian to send the delivery again."
                )


def parse_manifest(raw: bytes) -> Manifest:
    """The manifest whose bytes are ``raw``, checked against the catalog; its digest is of
    exactly these bytes."""
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise InvalidInput(
                f"{MANIFEST} is in format {data.get('format')!r}; this TRE reads {FORMAT!r}."
            )
        custodian = catalog.custodian(data["custodian"])
        files = tuple(_delivery_file(f) for f in data["files"])
        manifest = Manifest(
            custodian=custodian.id,
            delivery=str(data["delivery"]),
            description=str(data.get("description", "")),
            catalog_version=str(data.get("catalog_version", "")),
            files=files,
            digest=hashlib.sha256(raw).hexdigest(),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSON's errors are ValueErrors
        raise InvalidInput(f"{MANIFEST} is not a valid manifest ({e}).") from None
    own = {d.name for d in custodian.datasets}
    for f in files:
        _check_plain_name(f)
        if f.dataset not in own:
            raise InvalidInput(
                f"{MANIFEST} lists dataset {f.dataset!r}, which custodian {custodian.id} does "
                f"not hold. Their datasets: {', '.join(sorted(own))}."
            )
        if f.file != catalog.dataset(f.dataset).file_name:
            raise InvalidInput(f"{MANIFEST}: dataset {f.dataset} must be in {f.dataset}.csv.")
    if not files:
        raise InvalidInput(f"{MANIFEST} lists no files.")
    if len({f.dataset for f in files}) != len(files):
        raise InvalidInput(f"{MANIFEST} lists a dataset twice.")
    return manifest


def _delivery_file(entry: dict) -> DeliveryFile:
    f = DeliveryFile(**entry)
    if not all(isinstance(v, str) for v in (f.dataset, f.file, f.sha256)):
        raise TypeError("a file's dataset, file and sha256 must be text")
    if not all(type(v) is int and v >= 0 for v in (f.rows, f.bytes)):
        raise TypeError("a file's rows and bytes must be whole numbers")
    return f


def _check_plain_name(f: DeliveryFile) -> None:
    """Refuse a file name that is not a plain name: the files of a delivery sit directly in
    its folder."""
    if PLAIN_NAME.fullmatch(f.file) and ".." not in f.file:
        return
    dataset = catalog.DATASETS.get(f.dataset)
    expected = dataset.file_name if dataset else "<dataset>.csv"
    raise InvalidInput(
        f"{MANIFEST} lists {f.file[:80]!r} for dataset {f.dataset[:80]!r}, which is not a plain "
        "file name: a delivery's files sit directly in its folder, each named after its "
        f"dataset ({expected}), never with '/', '..' or a folder in the name. Ask the custodian "
        "for a manifest that names the files so, signed again."
    )


# -- reading the folder ------------------------------------------------------------------------


def _open_folder(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidInput(f"{folder} is not a folder. Give the folder of the delivery.") from None


def _open_regular(folder_fd: int, name: str) -> int:
    """Open ``name`` in the folder of ``folder_fd``: a regular file, never through a link, and
    never waiting for the writer of a named pipe. FileNotFoundError when there is none."""
    mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
    if not stat.S_ISREG(mode):  # not even opened: a device may act when opened
        raise _not_a_file(name, _kind(mode))
    try:
        fd = os.open(name, OPEN_FLAGS, dir_fd=folder_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:  # it became a link since
            raise _not_a_file(name, "a link") from None
        raise
    mode = os.fstat(fd).st_mode  # what was opened, whatever the name holds now
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_a_file(name, _kind(mode))
    return fd


def _read_file(folder_fd: int, name: str, limit: int) -> bytes:
    """The bytes of the regular file ``name`` in the folder, at most ``limit`` of them."""
    with open(_open_regular(folder_fd, name), "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise InvalidInput(
            f"{name} holds more than {limit:,} bytes, more than any {name} of a delivery: it "
            "was not written by the delivery tool. Ask the custodian to send the delivery again."
        )
    return raw


def _sha256_fd(fd: int) -> str:
    with open(os.dup(fd), "rb") as f:  # closes the duplicate only
        f.seek(0)
        return hashlib.file_digest(f, "sha256").hexdigest()


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def _not_a_file(name: str, kind: str) -> IntegrityError:
    return IntegrityError(
        f"{name} in the delivery is {kind}, not a file: the TRE reads only files placed "
        "directly in the delivery folder, never through a link. Put the file itself in its "
        "place, or ask the custodian to send the delivery again."
    )
