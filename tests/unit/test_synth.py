"""Synthetic deliveries: deterministic, valid, and realistic enough to analyse."""

import hashlib
from pathlib import Path

import duckdb
import pytest

from tre import catalog, synth
from tre.catalog.constraints import NHSNumber


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    synth.generate(500, 3, tmp_path / "a")
    synth.generate(500, 3, tmp_path / "b")
    synth.generate(500, 4, tmp_path / "c")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert digests(tmp_path / "a") != digests(tmp_path / "c")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synth.generate(6000, 11, out)
    con = duckdb.connect()
    for custodian in catalog.CUSTODIANS.values():
        for d in custodian.datasets:
            path = out / custodian.id / d.file_name
            con.execute(
                f"CREATE TABLE {d.name} AS SELECT * FROM read_csv('{path}', all_varchar = true)"
            )
    for name in ("pupils", "nhs_records"):
        con.execute(
            f"CREATE TABLE truth_{name} AS SELECT * FROM read_csv('{out / 'truth' / name}.csv', "
            "all_varchar = true)"
        )
    return con


def one(con, sql):
    return con.execute(sql).fetchone()[0]


def test_shares_of_fsm_and_sen_are_realistic(data):
    latest = (
        "(SELECT * FROM pupils QUALIFY row_number() OVER "
        "(PARTITION BY upn ORDER BY academic_year DESC) = 1)"
    )
    fsm = one(data, f"SELECT avg((fsm_eligible = '1')::INT) FROM {latest}")
    sen = one(data, f"SELECT avg((sen_provision <> 'N')::INT) FROM {latest}")
    assert 0.16 < fsm < 0.25
    assert 0.11 < sen < 0.19


def test_attainment_is_lower_with_deprivation_and_sen(data):
    by = data.execute("""
        SELECT p.fsm_eligible, avg(k.attainment8::DOUBLE)
        FROM ks4 k JOIN (SELECT DISTINCT upn, fsm_eligible FROM pupils) p USING (upn)
        GROUP BY ALL ORDER BY 1""").fetchall()
    assert by[1][1] < by[0][1] - 4  # FSM pupils score lower
    sen = data.execute("""
        SELECT p.sen_provision, avg(k.attainment8::DOUBLE)
        FROM ks4 k JOIN (SELECT DISTINCT upn, sen_provision FROM pupils) p USING (upn)
        GROUP BY ALL""").fetchall()
    means = dict(sen)
    assert means["E"] < means["K"] < means["N"]


def test_attainment_is_lower_after_asthma_or_injury_admissions(data):
    rows = data.execute("""
        WITH admitted AS (
            SELECT DISTINCT r.child FROM hes_apc h
            JOIN truth_nhs_records r ON r.dataset = 'hes_apc' AND r.record_id = h.episode_id
            WHERE h.primary_diagnosis LIKE 'J45%' OR h.primary_diagnosis LIKE 'J46%'
               OR h.primary_diagnosis LIKE 'S%' OR h.primary_diagnosis LIKE 'T%')
        SELECT t.child IN (SELECT child FROM admitted) AS admitted, avg(k.read_score::DOUBLE)
        FROM ks2 k JOIN truth_pupils t USING (upn) WHERE k.read_score IS NOT NULL
        GROUP BY ALL ORDER BY 1""").fetchall()
    assert rows[1][1] < rows[0][1]


def test_admission_rates_are_plausible(data):
    children = one(data, "SELECT count(*) FROM truth_pupils")
    episodes = one(data, "SELECT count(*) FROM hes_apc")
    per_child_year = episodes / (children * 1.07) / 6
    assert 0.02 < per_child_year < 0.12  # tens per thousand children a year


def test_hospital_identifiers_carry_linkage_errors(data):
    missing_nhs = one(data, "SELECT avg((nhs_number IS NULL)::INT) FROM hes_ae")
    assert 0.01 < missing_nhs < 0.06
    differ = data.execute("""
        SELECT avg((h.forename <> p.forename)::INT), avg((h.date_of_birth <> p.date_of_birth)::INT),
               avg((h.postcode <> p.postcode)::INT)
        FROM hes_ae h
        JOIN truth_nhs_records r ON r.dataset = 'hes_ae' AND r.record_id = h.attendance_id
        JOIN truth_pupils t USING (child)
        JOIN (SELECT upn, any_value(forename) forename,
                     any_value(date_of_birth) date_of_birth, max(postcode) postcode
              FROM pupils GROUP BY upn) p ON p.upn = t.upn""").fetchone()
    names, dobs, postcodes = differ
    assert 0.02 < names < 0.25 and 0.001 < dobs < 0.05 and postcodes > 0.02
    assert one(data, "SELECT count(*) FROM truth_pupils WHERE twin = 'true'") > 20


def test_pupils_are_in_both_custodians_data_and_some_children_only_in_one(data):
    in_npd = data.execute(
        "SELECT in_npd, count(DISTINCT child) FROM truth_nhs_records GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert in_npd[0][1] > 0 and in_npd[1][1] > 1000


def test_generated_identifiers_are_valid(data):
    bad = [
        n
        for (n,) in data.execute(
            "SELECT DISTINCT nhs_number FROM hes_apc WHERE nhs_number IS NOT NULL"
        ).fetchall()
        if not NHSNumber().valid(n)
    ]
    assert bad == []
