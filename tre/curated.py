"""The curated store: validated, linked, pseudonymised Parquet, one version per ingest.

```
<home>/curated/<custodian>/<dataset>/<version>/<partition>=<value>/data_0.parquet
<home>/work/ingest-<version>/...              staging, never read by anything else
```

A delivery lands whole or not at all. Ingest writes every new version into its staging folder,
then :func:`publish` records the delivery and its versions as *publishing* in one transaction
(with the audit event): that commit is the point of no return. The staging folders are then
renamed into place and a second transaction makes the new versions *current*. If the process
dies before the first commit, nothing in the curated store or the database has changed (the
staging folder is deleted by the next :func:`recover`); if it dies after, :func:`recover`
finishes the renames. Every command that reads the curated store runs :func:`recover` first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from tre import audit
from tre.db import Base, Database
from tre.exceptions import NotInitialised
from tre.home import Home

audit.declare_actions(
    {
        "delivery.ingested": "A delivery was verified, validated, linked, pseudonymised and "
        "published to the curated store.",
        "delivery.refused": "A delivery was refused (signature, checksums, row counts or "
        "validation); details say why, never which values.",
    }
)


class Delivery(Base):
    __tablename__ = "deliveries"

    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    custodian: Mapped[str] = mapped_column(sa.String(32), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    received_at: Mapped[str] = mapped_column(sa.String(32))
    ingested_by: Mapped[str] = mapped_column(sa.String(200))
    state: Mapped[str] = mapped_column(sa.String(16))
    landing_path: Mapped[str] = mapped_column(sa.String(500))
    catalog_version: Mapped[str] = mapped_column(sa.String(64))
    rows: Mapped[dict] = mapped_column(sa.JSON)
    quarantined: Mapped[dict] = mapped_column(sa.JSON)
    linkage: Mapped[dict] = mapped_column(sa.JSON)


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(sa.String(64), index=True)
    custodian: Mapped[str] = mapped_column(sa.String(32))
    delivery: Mapped[str] = mapped_column(sa.ForeignKey("deliveries.digest"))
    path: Mapped[str] = mapped_column(sa.String(500))
    staging_path: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    files: Mapped[list] = mapped_column(sa.JSON)
    catalog_version: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[str] = mapped_column(sa.String(32))


@dataclasses.dataclass(frozen=True)
class StagedVersion:
    dataset: str
    custodian: str
    staging: Path
    final: Path


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def version_files(folder: Path) -> tuple[int, list[dict]]:
    """Row count and (relative path, rows, SHA-256) of every Parquet file under ``folder``
    (files hashed in parallel: hashing releases the GIL)."""

    def describe(path: Path) -> dict:
        rows = pq.ParquetFile(path).metadata.num_rows
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"path": str(path.relative_to(folder)), "rows": rows, "sha256": digest}

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        files = list(pool.map(describe, sorted(folder.rglob("*.parquet"))))
    return sum(f["rows"] for f in files), files


def work_dir(home: Home) -> Path:
    path = home.root / "work"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive(home: Home, name: str = "ingest") -> Iterator[None]:
    """Hold the TRE home's lock for ``name`` (one ingest at a time)."""
    with open(work_dir(home) / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def failpoint(name: str) -> None:
    """Die here, as a kill would, when TRE_FAILPOINT names this point (crash tests only)."""
    if os.environ.get("TRE_FAILPOINT") == name:
        os._exit(137)


def publish(
    db: Database,
    home: Home,
    delivery: Delivery,
    staged: list[StagedVersion],
    event: audit.Event,
) -> None:
    created = now()
    with db.write() as session:
        session.add(delivery)
        session.flush()
        for version in staged:
            rows, files = version_files(version.staging)
            session.add(
                DatasetVersion(
                    dataset=version.dataset,
                    custodian=version.custodian,
                    delivery=delivery.digest,
                    path=str(version.final.relative_to(home.root)),
                    staging_path=str(version.staging.relative_to(home.root)),
                    state="publishing",
                    rows=rows,
                    files=files,
                    catalog_version=delivery.catalog_version,
                    created_at=created,
                )
            )
        audit.record(session, event)
    failpoint("ingest-after-commit")
    finish(db, home)


def finish(db: Database, home: Home) -> int:
    """Complete every publication that passed its commit point. Return how many versions.
    Only ingest's account may (the others read the versions already current)."""
    if not os.access(home.curated, os.W_OK):
        return 0
    with db.read() as session:
        pending = (
            session.execute(sa.select(DatasetVersion).where(DatasetVersion.state == "publishing"))
            .scalars()
            .all()
        )
    for version in pending:
        final = home.root / version.path
        staging = home.root / version.staging_path if version.staging_path else None
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # another process finished it first
                staging.rename(final)
        failpoint("ingest-after-rename")
    if not pending:
        return 0
    with db.write() as session:
        for version in pending:
            session.execute(
                sa.update(DatasetVersion)
                .where(DatasetVersion.dataset == version.dataset, DatasetVersion.state == "current")
                .values(state="superseded")
            )
            session.execute(
                sa.update(DatasetVersion)
                .where(DatasetVersion.id == version.id)
                .values(state="current", staging_path=None)
            )
        for digest in {v.delivery for v in pending}:
            session.execute(
                sa.update(Delivery).where(Delivery.digest == digest).values(state="ingested")
            )
    return len(pending)


def recover(db: Database, home: Home) -> None:
    """Finish committed publications, then delete staging folders no publication needs.

    Call it holding :func:`exclusive`; readers that do not hold it call :func:`finish`."""
    finish(db, home)
    work = work_dir(home)
    for staging in work.glob("ingest-*"):
        shutil.rmtree(staging, ignore_errors=True)


def current_versions(session: Session) -> dict[str, DatasetVersion]:
    rows = session.execute(
        sa.select(DatasetVersion).where(DatasetVersion.state == "current")
    ).scalars()
    return {v.dataset: v for v in rows}


def current_deliveries(session: Session) -> dict[str, Delivery]:
    """The newest ingested delivery of each custodian."""
    rows = session.execute(
        sa.select(Delivery)
        .where(Delivery.state == "ingested")
        .order_by(Delivery.received_at, Delivery.digest)
    ).scalars()
    return {d.custodian: d for d in rows}


def parquet_files(home: Home, version: DatasetVersion) -> list[Path]:
    """The Parquet files of a published version, as its record lists them."""
    return [home.root / version.path / f["path"] for f in version.files]


def check_person_keys(home: Home, versions: Iterable[DatasetVersion]) -> None:
    """Refuse curated data whose person keys are not UUIDs (:mod:`tre.pseudonyms`): written
    by an earlier tre, as the 64 hex digits of the whole HMAC, they join with no new key."""
    old = sorted(
        v.dataset
        for v in versions
        if (files := parquet_files(home, v))
        and pq.read_schema(files[0]).field("person_key").type != pa.uuid()
    )
    if old:
        raise NotInitialised(
            f"The curated data of {', '.join(old)} was written by an earlier version of tre, "
            "whose person keys were 64 hex digits; this version's are UUIDs (the first 128 "
            "bits of the same HMAC), and the two cannot be joined. Create a new TRE home "
            "(`tre init` in an empty folder) and ingest the deliveries into it again: this "
            "home's landing store keeps them."
        )
