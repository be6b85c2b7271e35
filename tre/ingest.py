"""Ingest: verify → validate → link → pseudonymise → generalise → publish.

``ingest(settings, folder, ...)`` takes one custodian's signed delivery:

1. **verify** the manifest's signature against the custodian's registered key, the file list
   and sizes; copy the files into the landing store from the descriptors the checks opened
   (:mod:`tre.deliveries`), hash the copies, and compare with the manifest (what is processed
   is exactly what was verified);
2. **load** each file as text into DuckDB and compare its row count with the manifest;
3. **validate** every row against the catalog (:mod:`tre.validation`): by default any finding
   refuses the whole delivery with a report; with ``quarantine=True`` failing rows are set
   aside in the landing store and counted;
4. **link** the custodian's identities with the other custodians' latest ones
   (:mod:`tre.linkage`) and derive each person's ``person_key``;
5. **pseudonymise and generalise**: direct identifiers are dropped, quasi-identifiers
   generalised as the catalog says, ``person_key`` added; written as zstd Parquet, one folder
   per partition value;
6. **re-key** other custodians' curated data if linkage changed any of their keys;
7. **publish** all of it at once (:mod:`tre.curated`), with the audit event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tre import audit, catalog, curated, deliveries, linkage, pseudonyms, validation
from tre.catalog import Column, Custodian, Dataset, Identity, Transform, Type
from tre.catalog.constraints import Codes
from tre.config import Settings
from tre.db import Database
from tre.exceptions import IntegrityError, InvalidInput, TREError
from tre.home import Home
from tre.keys import LINK_KEY
from tre.sql import file_list, literal

log = logging.getLogger(__name__)

DUCKDB_MEMORY_LIMIT = "3GB"
#: zstd level 1: random person keys do not compress, and level 3 costs twice the time.
ZSTD_LEVEL = 1
IDENTITIES = "identities.parquet"
ROW_GROUP = 122880


@dataclasses.dataclass
class IngestReport:
    delivery: str
    custodian: str
    already: bool = False
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    quarantined: dict[str, int] = dataclasses.field(default_factory=dict)
    linkage: dict = dataclasses.field(default_factory=dict)
    rekeyed: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        if self.already:
            return [
                f"Delivery {self.delivery} of {self.custodian} was already ingested; nothing to do."
            ]
        out = [f"Ingested delivery {self.delivery} of {self.custodian}:"]
        for name, n in self.rows.items():
            q = self.quarantined.get(name, 0)
            out.append(f"  {name:<11} {n:>10,} rows" + (f" ({q:,} quarantined)" if q else ""))
        if self.linkage:
            links = self.linkage
            out.append(
                f"  linkage: {links['pupils']:,} pupils, {links['patients']:,} patients; "
                f"{links['records_linked_to_pupils']:,} of {links['records']:,} hospital "
                "records linked to a pupil"
            )
        if self.rekeyed:
            out.append(f"  re-keyed after new links: {', '.join(self.rekeyed)}")
        return out


class Progress:
    """Steps shown on a terminal (a bar), silent otherwise."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False)

    def step(self, what: str) -> None:
        log.debug("ingest: %s", what)
        if self._bar is not None:
            self._bar.set_description(what)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- release transforms ------------------------------------------------------------------------


def released_expr(column: Column, typed: bool) -> str:
    value = validation.value(column, typed)
    name = f'"{column.released_name}"'
    match column.transform:
        case Transform.KEEP:
            codes = next((k.codes for k in column.constraints if isinstance(k, Codes)), None)
            if codes and column.type is Type.STRING:
                # Valid rows hold only the codes. Parquet has no enum: the column is written as
                # the same strings, but from the enum's own dictionary, where the writer
                # otherwise hashes every value into one.
                listed = ", ".join(literal(code) for code in codes)
                return f"CAST({value} AS ENUM({listed})) AS {name}"
            return f"{value} AS {name}"
        case Transform.YEAR_MONTH:
            return f"strftime({value}, '%Y-%m') AS {name}"
        case Transform.AGE_BAND:
            band = f"(({value}) // 5) * 5"
            return f"CAST({band} AS VARCHAR) || '-' || CAST({band} + 4 AS VARCHAR) AS {name}"
        case Transform.AREA_CODE:
            # Valid postcodes are in capitals with one space (the catalog requires it).
            return f"split_part({value}, ' ', 1) AS {name}"
    raise AssertionError(column.transform)


def _copy_options(dataset: Dataset | None) -> str:
    """COPY options for a dataset's curated files (None: one file, not partitioned)."""
    options = [
        "FORMAT parquet",
        "COMPRESSION zstd",
        f"COMPRESSION_LEVEL {ZSTD_LEVEL}",
        f"ROW_GROUP_SIZE {ROW_GROUP}",
        # Format 2's encodings write the random person keys about a tenth faster.
        "PARQUET_VERSION V2",
    ]
    if dataset and dataset.partition_by:
        options += [f'PARTITION_BY ("{dataset.partition_by}")', "WRITE_PARTITION_COLUMNS true"]
    return ", ".join(options)


# -- steps -------------------------------------------------------------------------------------


def _copy_to_landing(delivery: deliveries.Delivery, target: Path) -> None:
    """Copy the verified delivery into the landing store (the manifest and its signature as
    they were verified, the files from the descriptors the checks opened) and hash each copy
    (files in parallel: copying and hashing release the GIL)."""
    manifest = delivery.manifest
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, mode=0o700)
    (partial / deliveries.MANIFEST).write_bytes(delivery.manifest_bytes)
    (partial / deliveries.SIGNATURE).write_bytes(delivery.signature_bytes)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        digests = list(
            pool.map(lambda f: _copy_hashing(delivery, f, partial / f.file), manifest.files)
        )
    for f, digest in zip(manifest.files, digests, strict=True):
        if digest != f.sha256:
            shutil.rmtree(partial)
            raise IntegrityError(
                f"{f.file} does not match the SHA-256 in the manifest: the file was changed "
                "after signing. Ask the custodian to send the delivery again."
            )
    if target.exists():  # left by an earlier attempt that did not reach its commit
        shutil.rmtree(target)
    partial.rename(target)


def _copy_hashing(delivery: deliveries.Delivery, f: deliveries.DeliveryFile, target: Path) -> str:
    """Copy in the kernel, then hash the copy: what is checked against the manifest is what
    was landed."""
    delivery.copy_file(f, target)
    return deliveries.sha256_file(target)


def _identities_sql(con, dataset: Dataset) -> str:
    """Normalised identities of the valid rows of a delivered dataset, for linkage.

    Pupils: one row per distinct identity, with the pupil's person_key (from
    ``link_pupil_keys``, :func:`_store_pupil_keys`). Patients: one row per
    distinct identity of those with an NHS number (with how many records carry it), and one
    per record without one (with its dataset and record id)."""
    # The valid rows, their identity columns under the names linkage uses (upn, forename, …).
    named = ", ".join(f'"{c.name}" AS {role}' for role, c in dataset.identity_columns().items())
    if dataset.record_key:
        named += f', "{dataset.record_key}" AS record_id'
    rows = (
        f"(SELECT {named} FROM {validation.raw_table(dataset)} "
        f"WHERE {validation.valid_rows(con, dataset)}) AS v"
    )
    ids = "forename, surname, date_of_birth, sex, postcode"
    if dataset.record_key is None:
        distinct = f"(SELECT DISTINCT upn, {ids} FROM {rows}) AS d"
        return (
            f"SELECT i.*, k.person_key FROM ({linkage.identity_select(distinct, nhs=False)}) i "
            "JOIN link_pupil_keys k USING (upn)"
        )
    grouped = (
        f"(SELECT nhs_number, {ids}, count(*) AS records FROM {rows} "
        "WHERE nhs_number IS NOT NULL GROUP BY ALL) AS g"
    )
    patients = linkage.identity_select(grouped, nhs=True, keep="records")
    orphans = linkage.identity_select(
        rows,
        nhs=True,
        keep=f"'{dataset.name}' AS dataset, record_id",
        where="nhs_number IS NULL",
    )
    return linkage.patient_identities(patients, orphans)


def _person_key_join(dataset: Dataset) -> tuple[str, str]:
    """The FROM clause joining a raw table to its person keys, and the person_key expression."""
    raw = validation.raw_table(dataset)
    identity = dataset.identity_columns()
    if dataset.record_key is None:
        upn = identity[Identity.UPN].name
        return f'{raw} r JOIN link_pupil_keys k ON k.upn = r."{upn}"', "k.person_key"
    nhs = identity[Identity.NHS_NUMBER].name
    return (
        f'{raw} r LEFT JOIN link_nhs_keys n ON n.nhs = r."{nhs}" '
        f"LEFT JOIN link_orphan_keys o ON o.dataset = '{dataset.name}' "
        f'AND o.record_id = r."{dataset.record_key}"',
        "coalesce(n.person_key, o.person_key)",
    )


def _write_parquet(con, select: str, dataset: Dataset, staging: Path) -> None:
    """Write ``select`` as the dataset's Parquet; an empty result still gets a file, so the
    dataset's columns are known to whoever reads it."""
    con.execute(f"COPY ({select}) TO {literal(staging)} ({_copy_options(dataset)})")
    if not any(staging.rglob("*.parquet")):
        staging.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY ({select} LIMIT 0) TO {literal(staging / 'data_0.parquet')} "
            f"({_copy_options(None)})"
        )


def _write_curated(con, dataset: Dataset, staging: Path, typed: bool) -> None:
    columns = ", ".join(released_expr(c, typed) for c in dataset.released_columns)
    source, person_key = _person_key_join(dataset)
    where = validation.valid_rows(con, dataset, "r")
    _write_parquet(
        con,
        f"SELECT {person_key} AS person_key, {columns} FROM {source} WHERE {where}",
        dataset,
        staging,
    )


def _rekey(
    con, home: Home, version: curated.DatasetVersion, landing: Path | None, staging: Path
) -> bool:
    """Rewrite another custodian's current hospital data when linkage changed its keys.

    A pupil's key derives from their UPN alone and never changes; a hospital record's key
    changes when its patient is newly linked to (or unlinked from) a pupil. Which record is
    whose is read again from the file of the latest delivery, in the landing store."""
    dataset = catalog.dataset(version.dataset)
    if dataset.record_key is None or landing is None:
        return False
    delivered = landing / dataset.file_name
    if not delivered.is_file():
        # Only in a home that took partial hospital deliveries before they were refused.
        log.warning(
            "%s was not re-keyed: the latest delivery of its custodian does not hold it. "
            "Ask the custodian for a delivery with all of its datasets.",
            dataset.name,
        )
        return False
    nhs = dataset.identity_columns()[Identity.NHS_NUMBER].name
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE rekey_records AS "
        f"SELECT '{dataset.name}' AS dataset, \"{dataset.record_key}\" AS record_id, "
        f'"{nhs}" AS nhs FROM read_csv(?, all_varchar = true, header = true)',
        [str(delivered)],
    )
    records = "SELECT * FROM rekey_records"
    source = f"read_parquet({file_list(curated.parquet_files(home, version))})"
    join = (
        f"{source} c LEFT JOIN ({linkage.record_keys(records)}) k "
        f'ON k.record_id = c."{dataset.record_key}"'
    )
    changed = con.execute(
        f"SELECT count(*) FROM {join} WHERE k.person_key IS DISTINCT FROM c.person_key"
    ).fetchone()[0]
    if not changed:
        return False
    _write_parquet(
        con,
        f"SELECT coalesce(k.person_key, c.person_key) AS person_key, "
        f"c.* EXCLUDE (person_key) FROM {join}",
        dataset,
        staging,
    )
    return True


def _references(con, custodian, dataset: Dataset) -> tuple[validation.Reference, ...]:
    """Every UPN in the DfE's other files must be a pupil of the census delivered with them."""
    if custodian.id != "dfe" or dataset.name == "pupils":
        return ()
    column = dataset.identity_columns()[Identity.UPN].name
    census = catalog.dataset("pupils")
    checked = census.identity_columns()[Identity.UPN].constraints
    return (validation.Reference(column, _census_upns(con), census.file_name, checked),)


def _census_upns(con) -> str:
    """The table (``upn``) of the distinct UPNs of the census's valid rows, made once per
    delivery, after the census is validated."""
    tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "census_upns" in tables:
        return "census_upns"
    census = catalog.dataset("pupils")
    upn = census.identity_columns()[Identity.UPN].name
    distinct = validation.distinct_values(census, upn)
    rows = validation.valid_rows(con, census)
    if distinct in tables and rows == "true":
        # Every row of the census is valid: its UPNs are the distinct ones validation kept.
        valid = f"SELECT v AS upn FROM {distinct}"
    else:
        valid = f'SELECT DISTINCT "{upn}" AS upn FROM {validation.raw_table(census)} WHERE {rows}'
    con.execute(f"CREATE TEMP TABLE census_upns AS {valid}")
    return "census_upns"


def _store_pupil_keys(con) -> None:
    """``link_pupil_keys`` (upn, person_key): each pupil of the census with their key, the
    HMAC of their UPN (hashed once per pupil, not once per way they were recorded)."""
    key = pseudonyms.person_key_sql("'upn:' || upn")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE link_pupil_keys AS "
        f"SELECT upn, {key} AS person_key FROM {_census_upns(con)}"
    )


def _report_problems(problems: list[validation.Problem]) -> str:
    lines = [str(p) for p in problems[:20]]
    if len(problems) > 20:
        lines.append(f"… and {len(problems) - 20} more rules")
    return (
        "The delivery was refused: some rows do not meet the catalog.\n  "
        + "\n  ".join(lines)
        + "\nFix them and send the delivery again, or run ingest with --quarantine to set "
        "the failing rows aside and ingest the rest."
    )


def ingest(
    settings: Settings,
    folder: Path,
    *,
    actor: str,
    actor_role: str = "tre-admin",
    quarantine: bool = False,
    progress: bool = False,
    connect: Callable[[], duckdb.DuckDBPyConnection] | None = None,
) -> IngestReport:
    home = Home(settings.home)
    home.check()
    db = Database.of_settings(settings)
    db.check_current()
    folder = Path(folder).resolve()
    event = audit.Event(actor, actor_role, "delivery.ingested", "delivery", "?")
    with curated.exclusive(home), _small_pages():
        curated.recover(db, home)
        name = folder.name  # until the manifest is read
        try:
            with deliveries.opened(folder) as delivery:
                name = delivery.manifest.delivery
                return _ingest(settings, home, db, delivery, event, quarantine, progress, connect)
        except TREError as e:
            _audit_refusal(db, event, name, e)
            raise
        finally:
            shutil.rmtree(curated.work_dir(home) / "duckdb", ignore_errors=True)
            db.dispose()


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Arrow's jemalloc pool, and numpy without transparent huge pages, while ingest runs.

    Both defaults (Arrow's mimalloc pool, and numpy for arrays of 4 MiB and more) ask the
    kernel for huge pages, which it compacts and zeroes in the thread that first touches them:
    on a machine whose memory is mostly page cache (the delivery just read), that cost ingest
    of the 1 M-pupil delivery about 2 s of its 17 (docs/benchmarks.md). Pages of 4 KiB fault
    in as they are touched."""
    pool = pa.default_memory_pool()
    with contextlib.suppress(NotImplementedError):  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    core = getattr(np, "_core", None) or np.core  # numpy 2, numpy 1
    madvise = getattr(core.multiarray, "_set_madvise_hugepage", None)
    huge = madvise(False) if madvise else None
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        if madvise:
            madvise(huge)


def _audit_refusal(db: Database, event: audit.Event, name: str, error: TREError) -> None:
    """Record a refused delivery under the name its manifest gives (not yet verified), or the
    name of its folder."""
    with db.write() as session:
        audit.record(
            session,
            event.but(
                action="delivery.refused",
                object_id=name[:200],
                details={
                    "reason": type(error).__name__,
                    "first_line": str(error).splitlines()[0][:300],
                },
            ),
        )


def _ingest(
    settings: Settings,
    home: Home,
    db: Database,
    delivery: deliveries.Delivery,
    event: audit.Event,
    quarantine: bool,
    show_progress: bool,
    connect: Callable[[], duckdb.DuckDBPyConnection] | None,
) -> IngestReport:
    with db.read() as session:
        manifest = delivery.verify(session, hash_files=False)
        done = session.get(curated.Delivery, manifest.digest)
        current = curated.current_versions(session)
        others = {
            c: d for c, d in curated.current_deliveries(session).items() if c != manifest.custodian
        }
    report = IngestReport(manifest.delivery, manifest.custodian)
    if done is not None:
        report.already = True
        return report
    curated.check_person_keys(home, current.values())
    custodian = catalog.custodian(manifest.custodian)
    if custodian.id == "dfe" and "pupils" not in {f.dataset for f in manifest.files}:
        raise InvalidInput(
            "A DfE delivery must include the school census (pupils.csv): it says who the "
            "pupils of the other files are."
        )
    _check_complete(custodian, manifest, current)
    # In catalog order, so the census is validated before the files that refer to it.
    order = [d.name for d in custodian.datasets]
    files = sorted(manifest.files, key=lambda f: order.index(f.dataset))
    datasets = [catalog.dataset(f.dataset) for f in files]
    progress = Progress(3 + 2 * len(datasets), show_progress)
    try:
        progress.step("copying and hashing")
        landing = home.landing / custodian.id / manifest.digest[:16]
        _copy_to_landing(delivery, landing)

        work = curated.work_dir(home)
        tmp = work / "duckdb"
        tmp.mkdir(mode=0o700, exist_ok=True)
        con = connect() if connect else duckdb.connect(config={"threads": os.cpu_count() or 2})
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = {literal(tmp)}")
        # A partitioned write hands each thread's rows on to its files about a row group at a
        # time: DuckDB's default, about four, holds four times the memory, faulted in anew.
        con.execute(f"SET partitioned_write_flush_threshold = {ROW_GROUP}")

        problems: list[validation.Problem] = []
        loaded: dict[str, validation.Loaded] = {}
        in_memory = 0  # bytes of the files read into memory (validation.ARROW_BYTES at most)
        for f, dataset in zip(files, datasets, strict=True):
            progress.step(f"loading and validating {f.file}")
            references = _references(con, custodian, dataset)
            size = (landing / f.file).stat().st_size
            fits = in_memory + size <= validation.ARROW_BYTES
            in_memory += size if fits else 0
            loaded[dataset.name], found = validation.check(
                con, dataset, str(landing / f.file), references, in_memory=fits
            )
            problems += found
            rows = loaded[dataset.name].rows
            if rows != f.rows:
                raise IntegrityError(
                    f"{f.file} holds {rows:,} rows but the manifest says {f.rows:,}: rows were "
                    "added or removed after signing."
                )
            report.rows[dataset.name] = rows
        if problems and not quarantine:
            raise InvalidInput(_report_problems(problems))
        for dataset in datasets:
            bad = con.execute(f"SELECT count(*) FROM bad_{dataset.name}").fetchone()[0]
            if bad:
                report.quarantined[dataset.name] = bad
                qdir = landing / "quarantine"
                qdir.mkdir(mode=0o700, exist_ok=True)
                con.execute(
                    f"COPY (SELECT rowid + 1 AS row_number, * FROM {validation.raw_table(dataset)} "
                    f"WHERE rowid + 1 IN (SELECT row_number FROM bad_{dataset.name})) "
                    f"TO {literal(qdir / dataset.file_name)} (HEADER)"
                )

        progress.step("linking")
        key = home.key(LINK_KEY)
        pseudonyms.load_key(con, key)
        # This delivery's identities (kept in the landing store for later linkage), and the
        # latest identities of the other custodian.
        own, other = (
            (linkage.PUPIL_IDS, linkage.PATIENT_IDS)
            if custodian.id == "dfe"
            else (linkage.PATIENT_IDS, linkage.PUPIL_IDS)
        )
        if custodian.id == "dfe":
            _store_pupil_keys(con)
        selects = [
            _identities_sql(con, d) for d in datasets if Identity.FORENAME in d.identity_columns()
        ]
        # Kept in the landing store for later linkage, and read there by this one.
        con.execute(
            f"COPY ({' UNION ALL '.join(selects)}) TO {literal(landing / IDENTITIES)} "
            # Uncompressed: format 2's encodings make it about as small as compressed.
            "(FORMAT parquet, COMPRESSION uncompressed, PARQUET_VERSION V2)"
        )
        _load_identities(con, own, landing)
        other_custodian = "nhs" if custodian.id == "dfe" else "dfe"
        other_landing = _landing_of(home, others.get(other_custodian))
        _load_identities(con, other, other_landing)
        result = linkage.link(con, key)
        report.linkage = result.as_dict()

        version = manifest.digest[:16]
        staging_root = work / f"ingest-{version}"
        shutil.rmtree(staging_root, ignore_errors=True)
        staging_root.mkdir(mode=0o700)
        staged: list[curated.StagedVersion] = []
        for dataset in datasets:
            progress.step(f"writing {dataset.name}")
            staging = staging_root / dataset.name
            _write_curated(con, dataset, staging, loaded[dataset.name].typed)
            staged.append(
                curated.StagedVersion(
                    dataset.name,
                    custodian.id,
                    staging,
                    home.curated / custodian.id / dataset.name / version,
                )
            )
        for name, existing in current.items():
            if existing.custodian == custodian.id:
                continue
            staging = staging_root / name
            if _rekey(con, home, existing, other_landing, staging):
                report.rekeyed.append(name)
                staged.append(
                    curated.StagedVersion(
                        name,
                        existing.custodian,
                        staging,
                        home.curated / existing.custodian / name / version,
                    )
                )
        con.close()
        curated.failpoint("ingest-before-commit")

        progress.step("publishing")
        delivery = curated.Delivery(
            digest=manifest.digest,
            custodian=custodian.id,
            name=manifest.delivery,
            received_at=curated.now(),
            ingested_by=event.actor,
            state="publishing",
            landing_path=str(landing.relative_to(home.root)),
            catalog_version=catalog.CATALOG_VERSION,
            rows=report.rows,
            quarantined=report.quarantined,
            linkage=report.linkage,
        )
        curated.publish(
            db,
            home,
            delivery,
            staged,
            event.but(
                object_id=manifest.delivery[:200],
                details={
                    "custodian": custodian.id,
                    "manifest_sha256": manifest.digest,
                    "rows": report.rows,
                    "quarantined": report.quarantined,
                    "rekeyed": report.rekeyed,
                    "catalog_version": catalog.CATALOG_VERSION,
                },
            ),
        )
        shutil.rmtree(staging_root, ignore_errors=True)
        return report
    finally:
        progress.close()


def _check_complete(
    custodian: Custodian, manifest: deliveries.Manifest, current: dict[str, curated.DatasetVersion]
) -> None:
    """Refuse a delivery that leaves out a dataset keyed by linkage which an earlier delivery
    of the custodian brought.

    Hospital records are keyed through linkage, which reads the identities of the custodian's
    latest delivery, and are re-keyed from that delivery's files: a dataset it left out would
    keep keys of an earlier linkage, and a person's records would carry two keys."""
    delivered = {f.dataset for f in manifest.files}
    left_out = sorted(
        catalog.dataset(name).file_name
        for name, version in current.items()
        if version.custodian == custodian.id
        and name not in delivered
        and catalog.dataset(name).record_key is not None
    )
    if left_out:
        files = ", ".join(left_out)
        raise InvalidInput(
            f"This delivery leaves out {files}, which an earlier {custodian.id} delivery "
            "brought. Hospital records are keyed by linkage over the identities of the latest "
            "delivery, so each delivery must hold every dataset delivered before: add "
            f"{files} (unchanged if nothing changed), write the manifest, sign it and send "
            "the delivery again."
        )


def _landing_of(home: Home, delivery: curated.Delivery | None) -> Path | None:
    return None if delivery is None else home.root / delivery.landing_path


EMPTY_IDENTITIES = {
    linkage.PUPIL_IDS: "upn VARCHAR, fn VARCHAR, sn VARCHAR, dob DATE, sex VARCHAR, pc VARCHAR, "
    f"person_key {pseudonyms.PERSON_KEY_TYPE}",
    linkage.PATIENT_IDS: "dataset VARCHAR, record_id VARCHAR, nhs VARCHAR, fn VARCHAR, "
    "sn VARCHAR, dob DATE, sex VARCHAR, pc VARCHAR, records BIGINT",
}


def _load_identities(con, table: str, landing: Path | None) -> None:
    """A custodian's identities, kept in the landing store of its delivery (``landing``; None:
    it has delivered none)."""
    if landing is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({EMPTY_IDENTITIES[table]})")
        return
    # A view: linkage reads them once or twice, and Parquet is quick to read again.
    source = f"read_parquet({literal(landing / IDENTITIES)})"
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    if table == linkage.PATIENT_IDS and "records" not in columns:
        # Kept by an earlier version, one row per record: grouped as they are now.
        ids = ", ".join(linkage.IDENTITY)
        source = (
            "("
            + linkage.patient_identities(
                f"SELECT nhs, {ids}, count(*) AS records FROM {source} "
                "WHERE nhs IS NOT NULL GROUP BY ALL",
                f"SELECT * FROM {source} WHERE nhs IS NULL",
            )
            + ")"
        )
    con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM {source}")
