"""Ingest of signed synthetic deliveries into a real TRE home: DuckDB, Parquet, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.conftest import keys_of_an_earlier_version
from tests.factories import edit_csv, read_csv
from tre import audit, catalog, custodians, deliveries, linkage, pseudonyms
from tre.catalog.constraints import Codes
from tre.cli import main
from tre.config import Settings
from tre.db import Database
from tre.home import Home
from tre.keys import LINK_KEY


def curated_tree(environ) -> dict[str, bytes]:
    home = Path(environ["TRE_HOME"])
    return {
        str(p.relative_to(home)): p.read_bytes()
        for base in ("curated", "linkage")
        for p in sorted((home / base).rglob("*"))
        if p.is_file()
    }


def current_versions(environ) -> dict[str, int]:
    db = Database.of_settings(Settings.from_environ(environ))
    with db.engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT dataset, rows FROM dataset_versions WHERE state = 'current'")
        ).all()
    db.dispose()
    return dict(rows)


def test_both_deliveries_land_and_link(home_environ, synthetic, capsys):
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    assert main(["ingest", str(synthetic.nhs)], home_environ) == 0
    out = capsys.readouterr().out
    assert "Ingested delivery nhs-synthetic-300-seed7 of nhs" in out
    versions = current_versions(home_environ)
    for name in catalog.DATASETS:
        expected = len(read_csv(synthetic.root / catalog.dataset(name).custodian / f"{name}.csv"))
        assert versions[name] == expected, name
    home = Path(home_environ["TRE_HOME"])
    with duckdb.connect() as con:
        pupils = f"read_parquet('{home}/curated/dfe/pupils/*/**/*.parquet')"
        result = con.execute(f"SELECT * FROM {pupils} LIMIT 1")
        first = result.fetchone()
        assert [d[0] for d in result.description] == ["person_key"] + [
            c.released_name for c in catalog.dataset("pupils").released_columns
        ]
        # each pupil's key is the first 128 bits of the HMAC of their UPN, as a UUID
        keys = {k for (k,) in con.execute(f"SELECT DISTINCT person_key FROM {pupils}").fetchall()}
        link_key = Home(home).key(LINK_KEY)
        upns = {row["upn"] for row in read_csv(synthetic.dfe / "pupils.csv")}
        assert keys == {pseudonyms.person_key(link_key, f"upn:{upn}") for upn in upns}
        assert first[0] in keys and isinstance(first[0], uuid.UUID)
        linked = con.execute(f"""
            SELECT count(*) FROM read_parquet('{home}/curated/nhs/hes_ae/*/**/*.parquet')
            WHERE person_key IN (SELECT person_key FROM
                read_parquet('{home}/curated/dfe/pupils/*/**/*.parquet'))""").fetchone()[0]
    assert linked > 0.85 * versions["hes_ae"]  # hospital records joined to pupils
    # Columns of allowed codes are written through an enum: Parquet strings, as delivered.
    for name in ("pupils", "hes_ae"):
        dataset = catalog.dataset(name)
        files = sorted(home.glob(f"curated/{dataset.custodian}/{name}/*/**/*.parquet"))
        delivered = read_csv(synthetic.root / dataset.custodian / f"{name}.csv")
        coded = [
            c for c in dataset.released_columns if any(isinstance(k, Codes) for k in c.constraints)
        ]
        assert coded, name
        for column in coded:
            assert pq.read_schema(files[0]).field(column.released_name).type == pa.string()
            with duckdb.connect() as con:
                values = con.execute(
                    f'SELECT "{column.released_name}" FROM read_parquet(?)',
                    [[str(f) for f in files]],
                ).fetchall()
            assert sorted(v for (v,) in values) == sorted(row[column.name] for row in delivered)


def test_curated_data_with_keys_of_an_earlier_version_is_refused(home_environ, synthetic, capsys):
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    keys_of_an_earlier_version(Path(home_environ["TRE_HOME"]), "ks2")
    before = curated_tree(home_environ)
    capsys.readouterr()
    assert main(["ingest", str(synthetic.nhs)], home_environ) == 66
    err = capsys.readouterr().err
    assert "The curated data of ks2 was written by an earlier version of tre" in err
    assert "ingest the deliveries into it again" in err
    assert curated_tree(home_environ) == before


def test_the_linkage_report_refuses_keys_of_an_earlier_version(home_environ, synthetic, capsys):
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    assert main(["ingest", str(synthetic.nhs)], home_environ) == 0
    keys_of_an_earlier_version(Path(home_environ["TRE_HOME"]), "hes_ae")
    capsys.readouterr()
    assert main(["linkage", "report"], home_environ) == 66
    assert "The curated data of hes_ae was written" in capsys.readouterr().err


def test_the_same_delivery_again_is_a_no_op(home_environ, synthetic, capsys):
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    before = curated_tree(home_environ)
    capsys.readouterr()
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    assert "already ingested; nothing to do" in capsys.readouterr().out
    assert curated_tree(home_environ) == before


def test_no_direct_identifier_reaches_the_curated_store(home_environ, synthetic):
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    assert main(["ingest", str(synthetic.nhs)], home_environ) == 0
    identifiers: set[str] = set()
    for custodian in catalog.CUSTODIANS.values():
        for dataset in custodian.datasets:
            direct = [
                c.name
                for c in dataset.columns
                if c.sensitivity is catalog.Sensitivity.DIRECT_IDENTIFIER
                or c.name in ("date_of_birth", "postcode")  # full values are identifying
            ]
            for row in read_csv(synthetic.root / custodian.id / dataset.file_name):
                identifiers.update(row[c] for c in direct if row[c])
    assert len(identifiers) > 1000
    names = {v.upper() for v in identifiers}
    home = Path(home_environ["TRE_HOME"])
    files = list((home / "curated").rglob("*.parquet")) + list(
        (home / "linkage").rglob("*.parquet")
    )
    assert files
    with duckdb.connect() as con:
        for path in files:
            table = con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
            for row in table:
                for value in row:
                    text = str(value)
                    assert text not in identifiers and text.upper() not in names, (path, text)


def test_every_ingest_is_audited(home_environ, synthetic):
    assert main(["ingest", str(synthetic.dfe)], home_environ) == 0
    db = Database.of_settings(Settings.from_environ(home_environ))
    with db.read() as session:
        events = [e for e in audit.events(session) if e["action"] == "delivery.ingested"]
    db.dispose()
    assert len(events) == 1
    assert events[0]["details"]["rows"]["pupils"] > 0
    assert main(["audit", "verify"], home_environ) == 0


# -- refusals ------------------------------------------------------------------------------

BAD_ROWS = [
    # (custodian, dataset, row, column, value, rule)
    ("dfe", "pupils", 3, "upn", "Z" + "1" * 12, "upn_check_letter"),
    ("nhs", "hes_apc", 2, "nhs_number", "1234567890", "nhs_number_check_digit"),
    ("nhs", "hes_apc", 4, "primary_diagnosis", "J45.9", "icd10_format"),
    ("nhs", "hes_ae", 5, "diagnosis", "asthma", "icd10_format"),
    ("dfe", "pupils", 6, "date_of_birth", "2030-01-01", "date_range"),
    ("dfe", "pupils", 7, "date_of_birth", "31/12/2010", "type_date"),
    ("dfe", "pupils", 2, "ethnicity", "XXXX", "allowed_codes"),
    ("nhs", "hes_apc", 3, "admission_method", "99", "allowed_codes"),
    ("dfe", "pupils", 4, "postcode", "LS62AB", "postcode_format"),
    ("dfe", "pupils", 5, "idaci_decile", "11", "range"),
    ("dfe", "pupils", 8, "forename", "", "required"),
    ("dfe", "pupils", 9, "school_urn", "012345", "urn_format"),
    ("nhs", "hes_apc", 6, "episode_id", "bad id", "record_id_format"),
    ("nhs", "hes_apc", 7, "discharge_date", "2000-01-01", "discharge_after_admission"),
    ("nhs", "hes_apc", 8, "length_of_stay", "999", "length_of_stay_matches_dates"),
    ("dfe", "absence", 3, "sessions_authorised", "399", "absence_within_possible"),
    ("dfe", "ks2", 2, "upn", "A000000000000", "upn_in_pupils"),
    # Looked up among the census's UPNs first; one that is not is checked in full.
    ("dfe", "absence", 2, "upn", "Z" + "1" * 12, "upn_check_letter"),
    ("dfe", "ks4", 2, "attainment8", "ninety", "type_decimal"),
    ("nhs", "hes_ae", 2, "sex", "X", "allowed_codes"),
    ("dfe", "pupils", 10, "la_code", "999", "allowed_codes"),
    # Checked once per distinct value per delivery: the census's schools passed already.
    ("dfe", "ks2", 3, "school_urn", "012345", "urn_format"),
    ("nhs", "hes_ae", 4, "attendance_id", "<row 1>", "unique_record_id"),
]


@pytest.mark.parametrize(("custodian", "dataset", "row", "column", "value", "rule"), BAD_ROWS)
def test_a_row_that_breaks_the_catalog_refuses_the_delivery(
    environ, synthetic, deliveries, capsys, custodian, dataset, row, column, value, rule
):
    from tests.factories import init_home

    init_home(environ, synthetic.keys)
    if custodian == "nhs":
        assert main(["ingest", str(deliveries.dfe)], environ) == 0
    before = curated_tree(environ)
    path = deliveries.root / custodian / f"{dataset}.csv"
    rows = f"rows {row}"
    if value == "<row 1>":  # a duplicate: both rows are named
        value, rows = read_csv(path)[0][column], f"rows 1, {row}"
    edit_csv(path, row, column, value)
    deliveries.resign(custodian)
    capsys.readouterr()
    assert main(["ingest", str(deliveries.root / custodian)], environ) == 65
    err = capsys.readouterr().err
    assert f"{dataset}.csv" in err and rule in err, err
    assert rows in err, err  # the row number of the edited row is named
    if value and len(value) > 4:
        assert value not in err  # the offending value is never echoed
    assert curated_tree(environ) == before


def test_quarantine_sets_bad_rows_aside_and_counts_them(environ, synthetic, deliveries, capsys):
    from tests.factories import init_home

    init_home(environ, synthetic.keys)
    edit_csv(deliveries.dfe / "pupils.csv", 3, "upn", "Z" + "1" * 12)
    edit_csv(deliveries.dfe / "absence.csv", 3, "sessions_possible", "-1")
    deliveries.resign("dfe")
    assert main(["ingest", "--quarantine", str(deliveries.dfe)], environ) == 0
    out = capsys.readouterr().out
    assert "(1 quarantined)" in out
    versions = current_versions(environ)
    total = len(read_csv(deliveries.dfe / "pupils.csv"))
    assert versions["pupils"] == total - 1  # the curated version holds the valid rows
    home = Path(environ["TRE_HOME"])
    quarantined = list(home.glob("landing/dfe/*/quarantine/pupils.csv"))
    assert len(quarantined) == 1 and len(read_csv(quarantined[0])) == 1
    with duckdb.connect() as con:
        curated_rows = con.execute(
            f"SELECT count(*) FROM read_parquet('{home}/curated/dfe/pupils/*/**/*.parquet')"
        ).fetchone()[0]
    assert curated_rows == total - 1


def _ingest_refused(environ, folder, capsys, exit_code=3) -> str:
    before = curated_tree(environ)
    capsys.readouterr()
    assert main(["ingest", str(folder)], environ) == exit_code
    assert curated_tree(environ) == before
    return capsys.readouterr().err


@pytest.fixture
def home(environ, synthetic):
    from tests.factories import init_home

    init_home(environ, synthetic.keys)
    return environ


def test_a_tampered_file_is_refused(home, deliveries, capsys):
    path = deliveries.dfe / "ks4.csv"
    data = bytearray(path.read_bytes())
    data[-5] = ord("9") if data[-5] != ord("9") else ord("8")  # same size, other content
    path.write_bytes(bytes(data))
    err = _ingest_refused(home, deliveries.dfe, capsys)
    assert "ks4.csv does not match the SHA-256 in the manifest" in err


def test_a_truncated_file_is_refused(home, deliveries, capsys):
    path = deliveries.nhs / "hes_ae.csv"
    path.write_bytes(path.read_bytes()[:-100])
    err = _ingest_refused(home, deliveries.nhs, capsys)
    assert "hes_ae.csv has" in err and "bytes but the manifest says" in err


def test_a_manifest_changed_after_signing_is_refused(home, deliveries, capsys):
    manifest = deliveries.dfe / "manifest.json"
    data = json.loads(manifest.read_text())
    data["description"] = "edited"
    manifest.write_text(json.dumps(data, indent=2) + "\n")
    err = _ingest_refused(home, deliveries.dfe, capsys)
    assert "signature of the manifest does not verify" in err


def test_a_delivery_signed_by_another_key_is_refused(home, deliveries, tmp_path, capsys):
    custodians.keygen("dfe", tmp_path / "other")
    deliveries.sign_manifest_with = None
    from tre.deliveries import sign_manifest

    sign_manifest(deliveries.dfe, custodians.signer(tmp_path / "other" / "dfe.key"))
    err = _ingest_refused(home, deliveries.dfe, capsys)
    assert "not registered for custodian dfe" in err


def test_a_delivery_signed_by_the_other_custodian_is_refused(home, deliveries, capsys):
    deliveries_module_sign = deliveries.keys / "nhs.key"
    from tre.deliveries import sign_manifest

    sign_manifest(deliveries.dfe, custodians.signer(deliveries_module_sign))
    err = _ingest_refused(home, deliveries.dfe, capsys)
    assert "not registered for custodian dfe" in err


def test_an_unsigned_delivery_is_refused(home, deliveries, capsys):
    (deliveries.dfe / "manifest.sig").unlink()
    assert "it is not signed" in _ingest_refused(home, deliveries.dfe, capsys)


def test_a_revoked_key_is_refused(home, deliveries, capsys):
    kid = custodians.signer(deliveries.keys / "dfe.key").key_id
    assert main(["custodian", "revoke", kid], home) == 0
    assert "revoked" in _ingest_refused(home, deliveries.dfe, capsys)


def test_a_row_count_that_differs_from_the_manifest_is_refused(home, deliveries, capsys):
    folder = deliveries.dfe
    manifest = json.loads((folder / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["file"] == "ks2.csv":
            f["rows"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    deliveries_mod_signer = custodians.signer(deliveries.keys / "dfe.key")
    from tre.deliveries import sign_manifest

    sign_manifest(folder, deliveries_mod_signer)
    err = _ingest_refused(home, folder, capsys)
    assert "ks2.csv holds" in err and "rows but the manifest says" in err


def test_an_extra_file_is_refused(home, deliveries, capsys):
    (deliveries.dfe / "notes.txt").write_text("hello")
    assert "notes.txt" in _ingest_refused(home, deliveries.dfe, capsys)


def test_a_missing_column_is_refused(home, deliveries, capsys):
    path = deliveries.dfe / "ks4.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n")
    deliveries.resign("dfe")
    err = _ingest_refused(home, deliveries.dfe, capsys, exit_code=65)
    assert "missing column(s) school_urn" in err


def test_refusals_are_audited_without_values(home, deliveries, capsys):
    (deliveries.dfe / "manifest.sig").unlink()
    _ingest_refused(home, deliveries.dfe, capsys)
    db = Database.of_settings(Settings.from_environ(home))
    with db.read() as session:
        refused = [e for e in audit.events(session) if e["action"] == "delivery.refused"]
    db.dispose()
    assert len(refused) == 1 and refused[0]["details"]["reason"] == "IntegrityError"


# -- interrupted ingest --------------------------------------------------------------------


def _run_ingest(environ, folder, failpoint=None):
    env = {**environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    if failpoint:
        env["TRE_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "tre", "ingest", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("failpoint", "lands"),
    [
        ("ingest-before-commit", False),
        ("ingest-after-commit", True),
        ("ingest-after-rename", True),
    ],
)
def test_an_interrupted_ingest_lands_whole_or_not_at_all(home, synthetic, failpoint, lands):
    assert main(["ingest", str(synthetic.dfe)], home) == 0
    before_tree, before_versions = curated_tree(home), current_versions(home)
    assert main(["init"], home) == 0  # what this process wrote as root, handed to ingest's account
    result = _run_ingest(home, synthetic.nhs, failpoint)
    assert result.returncode == 137, result.stderr
    if not lands:
        assert curated_tree(home) == before_tree
        assert current_versions(home) == before_versions
    # The next command finishes what passed the commit point, or cleans up what did not.
    assert main(["ingest", str(synthetic.nhs)], home) == 0
    versions = current_versions(home)
    assert set(versions) == set(before_versions) | {"hes_apc", "hes_ae", "deaths"}
    assert not list((Path(home["TRE_HOME"]) / "work").glob("ingest-*"))
    assert main(["audit", "verify"], home) == 0


def test_a_killed_ingest_leaves_the_store_as_before(home, synthetic):
    assert main(["ingest", str(synthetic.dfe)], home) == 0
    before_tree, before_versions = curated_tree(home), current_versions(home)
    assert main(["init"], home) == 0  # what this process wrote as root, handed to ingest's account
    env = {**home, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for delay in (0.5, 1.0, 1.5):
        process = subprocess.Popen(
            [sys.executable, "-m", "tre", "ingest", str(synthetic.nhs)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        landed = "hes_apc" in current_versions(home)
        if not landed:
            assert curated_tree(home) == before_tree
            assert current_versions(home) == before_versions
        else:
            break
    assert main(["ingest", str(synthetic.nhs)], home) == 0
    assert "hes_apc" in current_versions(home)


# -- linkage quality -----------------------------------------------------------------------


def test_linkage_report_meets_its_targets_on_synthetic_data(home, synthetic, capsys):
    assert main(["ingest", str(synthetic.dfe)], home) == 0
    assert main(["ingest", str(synthetic.nhs)], home) == 0
    capsys.readouterr()
    assert main(["linkage", "report", "--truth", str(synthetic.truth), "--json"], home) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["truth"]["precision"] >= 0.99
    assert report["truth"]["recall"] >= 0.95
    assert set(report["link_rates"]) == {"sex", "ethnicity", "fsm_eligible"}
    assert report["link_rates"]["sex"]["F"]["pupils"] > 0


def test_deliveries_beyond_the_memory_budget_are_read_by_duckdb_to_the_same_data(
    home, synthetic, tmp_path, monkeypatch
):
    """Arrow reads files into memory; beyond ``validation.ARROW_BYTES`` DuckDB reads them (it
    can spill to disk). Both give the same curated rows and the same people."""
    from tests.factories import init_home
    from tre import validation

    spilling = {**home, "TRE_HOME": str(tmp_path / "spilling")}
    init_home(spilling, synthetic.keys)
    for custodian in (synthetic.dfe, synthetic.nhs):
        assert main(["ingest", str(custodian)], home) == 0

    def not_in_memory(*args):
        raise AssertionError("read into memory beyond the budget")

    monkeypatch.setattr(validation, "ARROW_BYTES", 0)
    monkeypatch.setattr(validation, "_read_typed", not_in_memory)
    for custodian in (synthetic.dfe, synthetic.nhs):
        assert main(["ingest", str(custodian)], spilling) == 0
    with duckdb.connect() as con:
        for name, dataset in catalog.DATASETS.items():
            files = [
                f"read_parquet('{env['TRE_HOME']}/curated/{dataset.custodian}/{name}/*/**/*.parquet')"
                for env in (home, spilling)
            ]
            rows = [f"SELECT * EXCLUDE (person_key) FROM {f}" for f in files]
            assert con.execute(
                f"SELECT count(*) FROM (({rows[0]} EXCEPT ALL {rows[1]}) "
                f"UNION ALL ({rows[1]} EXCEPT ALL {rows[0]}))"
            ).fetchone() == (0,), name
            people = [
                con.execute(f"SELECT count(DISTINCT person_key) FROM {f}").fetchone() for f in files
            ]
            assert people[0] == people[1], name


def test_nhs_first_then_dfe_rekeys_the_hospital_records(home, synthetic, capsys):
    assert main(["ingest", str(synthetic.nhs)], home) == 0
    assert main(["ingest", str(synthetic.dfe)], home) == 0
    out = capsys.readouterr().out
    assert "re-keyed after new links" in out and "hes_ae" in out
    capsys.readouterr()
    assert main(["linkage", "report", "--truth", str(synthetic.truth), "--json"], home) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["truth"]["recall"] >= 0.95 and report["truth"]["precision"] >= 0.99


def test_hospital_identities_kept_by_an_earlier_version_still_link(home, synthetic, capsys):
    """Landing stores written before identities were grouped per patient hold one row per
    record (no ``records`` column): a later DfE delivery links and re-keys with them."""
    assert main(["ingest", str(synthetic.nhs)], home) == 0
    (kept,) = Path(home["TRE_HOME"], "landing", "nhs").glob("*/identities.parquet")
    selects = []
    for name in ("hes_apc", "hes_ae", "deaths"):
        dataset = catalog.dataset(name)
        raw = f"read_csv('{kept.parent / dataset.file_name}', all_varchar = true)"
        selects.append(
            linkage.identity_select(
                raw, nhs=True, keep=f"'{name}' AS dataset, {dataset.record_key} AS record_id"
            )
        )
    with duckdb.connect() as con:
        con.execute(f"COPY ({' UNION ALL '.join(selects)}) TO '{kept}' (FORMAT parquet)")
    assert main(["ingest", str(synthetic.dfe)], home) == 0
    assert "re-keyed after new links" in capsys.readouterr().out
    assert main(["linkage", "report", "--truth", str(synthetic.truth), "--json"], home) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == sum(
        current_versions(home)[d] for d in ("hes_apc", "hes_ae", "deaths")
    )
    assert report["truth"]["recall"] >= 0.95 and report["truth"]["precision"] >= 0.99


def test_a_hospital_delivery_must_hold_every_dataset_delivered_before(
    home, synthetic, deliveries, tmp_path, capsys
):
    """A dataset left out would keep the keys of an earlier linkage: the same patient would
    have two person keys. A first delivery may hold only some datasets."""
    (deliveries.nhs / "hes_apc.csv").unlink()
    deliveries.resign("nhs")
    assert main(["ingest", str(deliveries.nhs)], home) == 0
    assert "hes_apc" not in current_versions(home)
    assert main(["ingest", str(synthetic.nhs)], home) == 0
    later = synthetic.copy(tmp_path / "later")
    (later.nhs / "hes_ae.csv").unlink()
    later.resign("nhs")
    err = _ingest_refused(home, later.nhs, capsys, exit_code=65)
    assert "leaves out hes_ae.csv" in err and "hes_apc" not in err
    # The DfE's files need not all come again: its keys come from the UPN, not from linkage.
    census_only = synthetic.copy(tmp_path / "census")
    for name in ("ks2", "ks4", "absence", "exclusions"):
        (census_only.dfe / f"{name}.csv").unlink()
    census_only.resign("dfe")
    assert main(["ingest", str(synthetic.dfe)], home) == 0
    assert main(["ingest", str(census_only.dfe)], home) == 0


def test_manifest_helpers_round_trip(tmp_path, synthetic):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "deaths.csv").write_bytes((synthetic.nhs / "deaths.csv").read_bytes())
    deliveries.write_manifest(folder, "nhs", "n", "d")
    manifest = deliveries.read_manifest(folder)
    assert [f.dataset for f in manifest.files] == ["deaths"]


def test_quotes_and_wildcards_in_the_home_path_break_no_statement(
    environ, deliveries, tmp_path, capsys, monkeypatch
):
    """Paths reach DuckDB as SQL literals (COPY targets, the files to read, the temporary
    folder), and files to read are listed rather than matched: a home under ``o'brien's
    [data]?`` ingests, re-keys, quarantines, reports, provisions and is read from a
    workspace."""
    from tests.conftest import ALICE, example_application, provision_project
    from tests.factories import init_home
    from tre.outputs import specs
    from tre.projects import extracts
    from tre.workspace import connect

    environ["TRE_HOME"] = str(tmp_path / "o'brien's [data]?" / "home")
    init_home(environ, deliveries.keys)
    edit_csv(deliveries.nhs / "hes_ae.csv", 2, "diagnosis", "not a code")
    deliveries.resign("nhs")
    assert main(["ingest", "--quarantine", str(deliveries.nhs)], environ) == 0
    assert main(["ingest", str(deliveries.dfe)], environ) == 0
    assert "re-keyed after new links" in capsys.readouterr().out
    assert main(["linkage", "report", "--truth", str(deliveries.truth), "--json"], environ) == 0
    assert json.loads(capsys.readouterr().out)["truth"]["precision"] >= 0.99

    settings = Settings.from_environ(environ)
    home, db = Home(settings.home), Database.of_settings(settings)
    try:
        provision_project(home, db, example_application("quoted"), ALICE)
    finally:
        db.dispose()
    folder = extracts.folder(home, "quoted") / "extracts"
    manifest = json.loads((folder / extracts.MANIFEST).read_text())
    sources = specs.Extracts.of(folder).sources
    with duckdb.connect() as con:
        for name, dataset in manifest["datasets"].items():
            assert (
                con.execute(f"SELECT count(*) FROM {sources[name]}").fetchone()[0]
                == (dataset["rows"])
            )
    monkeypatch.setenv("TRE_PROJECT", "quoted")
    monkeypatch.setenv("TRE_EXTRACTS", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert connect().execute("SELECT count(*) FROM pupils").fetchone()[0] > 0


def test_identity_columns_are_found_by_their_part_not_their_name(synthetic):
    """A dataset whose identity columns are named otherwise (``nhs_no``, ``first_name``)
    gives the same identities and joins to the same keys: ingest finds them in the catalog."""
    import dataclasses

    from tre import ingest, validation

    renames = {"nhs_number": "nhs_no", "forename": "first_name", "attendance_id": "ae_id"}
    original = catalog.dataset("hes_ae")
    renamed = dataclasses.replace(
        original,
        columns=tuple(
            dataclasses.replace(c, name=renames.get(c.name, c.name)) for c in original.columns
        ),
        record_key="ae_id",
    )
    source = f"read_csv('{synthetic.nhs / 'hes_ae.csv'}', all_varchar = true)"
    found = []
    for dataset in (original, renamed):
        with duckdb.connect() as con:
            new = renames if dataset is renamed else {}
            columns = ", ".join(
                f'"{c.name}" AS "{new.get(c.name, c.name)}"' for c in original.columns
            )
            table = validation.raw_table(dataset)
            con.execute(f"CREATE TABLE {table} AS SELECT {columns} FROM {source}")
            con.execute(f"CREATE TABLE bad_{dataset.name} (row_number BIGINT)")
            if dataset is renamed:  # the renamed table really has the new names only
                names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
                assert "nhs_no" in names and "nhs_number" not in names
            found.append(
                sorted(con.execute(ingest._identities_sql(con, dataset)).fetchall(), key=repr)
            )
            # the join from rows to keys names the dataset's own columns
            con.execute("CREATE TABLE link_nhs_keys (nhs VARCHAR, person_key VARCHAR)")
            con.execute(
                "CREATE TABLE link_orphan_keys (dataset VARCHAR, record_id VARCHAR, "
                "person_key VARCHAR)"
            )
            joined, key = ingest._person_key_join(dataset)
            con.execute(f"SELECT {key} FROM {joined}").fetchall()
    assert found[0] == found[1] and len(found[0]) > 0
