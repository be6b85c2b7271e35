"""Deliveries: a custodian's folder of CSV files, its manifest and the manifest's signature.

```
<delivery>/
  manifest.json      custodian, delivery id, and per file: dataset, rows, bytes, SHA-256
  manifest.sig       {"key_id": ..., "signature": base64 Ed25519 over manifest.json's bytes}
  pupils.csv ...     one file per dataset, named <dataset>.csv, columns in catalog order
```

:func:`verify` checks, in order: the manifest parses, names a known custodian and only that
custodian's datasets; the signature verifies against a registered key; the folder holds exactly
the listed files; each file's size and SHA-256 match. Row counts are checked when ingest loads
the files. Every refusal names what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import dataclasses
import hashlib
import json
from pathlib import Path

import duckdb
from sqlalchemy.orm import Session

from tre import catalog, custodians
from tre.exceptions import IntegrityError, InvalidInput

FORMAT = "tre-delivery/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


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
    read_manifest(folder)  # refuse to sign something that is not a manifest
    signature = signer.sign((folder / MANIFEST).read_bytes())
    path = folder / SIGNATURE
    path.write_text(
        json.dumps({"key_id": signer.key_id, "signature": base64.b64encode(signature).decode()})
        + "\n"
    )
    return path


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder. Give the folder of the delivery.")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(
            f"{folder} has no {MANIFEST}: it is not a delivery. The custodian's delivery "
            "tool writes the manifest and signs it."
        ) from None
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise InvalidInput(
                f"{MANIFEST} is in format {data.get('format')!r}; this TRE reads {FORMAT!r}."
            )
        custodian = catalog.custodian(data["custodian"])
        files = tuple(DeliveryFile(**f) for f in data["files"])
        manifest = Manifest(
            custodian=custodian.id,
            delivery=str(data["delivery"]),
            description=str(data.get("description", "")),
            catalog_version=str(data.get("catalog_version", "")),
            files=files,
            digest=hashlib.sha256(raw).hexdigest(),
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInput(f"{MANIFEST} is not a valid manifest ({e}).") from None
    own = {d.name for d in custodian.datasets}
    for f in files:
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


def verify(folder: Path, session: Session, *, hash_files: bool = True) -> Manifest:
    """Check the manifest, its signature and every file's size (and hash, unless the caller
    hashes the files itself as it copies them); return the manifest."""
    manifest = read_manifest(folder)
    try:
        signature = json.loads((folder / SIGNATURE).read_text())
        kid = str(signature["key_id"])
        signature_bytes = base64.b64decode(signature["signature"], validate=True)
    except FileNotFoundError:
        raise IntegrityError(
            f"The delivery has no {SIGNATURE}: it is not signed. The custodian signs it with "
            "`tre custodian sign DELIVERY --key THEIR.key`."
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError, binascii.Error):
        raise IntegrityError(f"{SIGNATURE} is damaged: it does not hold a signature.") from None
    custodians.verify_signature(
        session, manifest.custodian, kid, (folder / MANIFEST).read_bytes(), signature_bytes
    )
    listed = {f.file for f in manifest.files}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed | {MANIFEST, SIGNATURE})
    if extra:
        raise IntegrityError(
            f"The delivery holds files its manifest does not list: {', '.join(extra)}. "
            "Remove them, or ask the custodian for a manifest that lists them."
        )
    for f in manifest.files:
        path = folder / f.file
        if not path.is_file():
            raise IntegrityError(f"{f.file} is listed in the manifest but missing.")
        size = path.stat().st_size
        if size != f.bytes:
            raise IntegrityError(
                f"{f.file} has {size:,} bytes but the manifest says {f.bytes:,}: the file was "
                "changed or truncated after signing."
            )
    if not hash_files:
        return manifest
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        digests = dict(
            zip(
                manifest.files,
                pool.map(lambda f: sha256_file(folder / f.file), manifest.files),
                strict=True,
            )
        )
    for f, digest in digests.items():
        if digest != f.sha256:
            raise IntegrityError(
                f"{f.file} does not match the SHA-256 in the manifest: the file was changed "
                "after signing. Ask the custodian to send the delivery again."
            )
    return manifest
