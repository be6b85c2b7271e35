"""The catalog: declarations that hold together, and constraints whose SQL and Python agree."""

import datetime as dt

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tre import catalog
from tre.catalog.constraints import (
    ICD10,
    UPN,
    Codes,
    DateRange,
    NHSNumber,
    Pattern,
    Postcode,
    Range,
    nhs_check_digit,
    upn_check_letter,
)
from tre.catalog.model import Column, Sensitivity, Transform, Type
from tre.exceptions import NotFound


def test_every_direct_identifier_is_dropped_or_pseudonymised():
    for dataset in catalog.DATASETS.values():
        for column in dataset.columns:
            if column.sensitivity is Sensitivity.DIRECT_IDENTIFIER:
                assert not column.released, (dataset.name, column.name)


def test_a_direct_identifier_cannot_be_declared_as_kept():
    with pytest.raises(ValueError, match="must be dropped or pseudonymised"):
        Column("nhs_number", Type.STRING, "x", Sensitivity.DIRECT_IDENTIFIER, Transform.KEEP)


def test_full_dates_of_birth_and_postcodes_are_generalised():
    for dataset in catalog.DATASETS.values():
        for column in dataset.columns:
            if column.name == "date_of_birth":
                assert column.transform is Transform.YEAR_MONTH
            if column.name == "postcode":
                assert column.transform is Transform.AREA_CODE


def test_an_area_code_is_taken_only_from_a_checked_postcode():
    for constraints in ((), (Pattern(".*", "anything", "postcode_format"),)):
        with pytest.raises(ValueError, match="needs the Postcode"):
            Column(
                "home",
                Type.STRING,
                "x",
                Sensitivity.QUASI_IDENTIFIER,
                Transform.AREA_CODE,
                constraints=constraints,
            )


def test_codes_apply_to_text_and_integers_only():
    with pytest.raises(ValueError, match="allowed codes"):
        Column("flag", Type.BOOLEAN, "x", Sensitivity.SAFE, constraints=(Codes({"1": "yes"}),))
    Column("year", Type.INTEGER, "x", Sensitivity.SAFE, constraints=(Codes({"1": "one"}),))


def test_a_file_whose_rules_all_pass_their_prechecks_is_valid(tmp_path):
    """Only rules checked on distinct values, all finding nothing: no pass over the rows."""
    from tre import validation
    from tre.catalog.model import Dataset

    dataset = Dataset(
        "codes_only",
        "dfe",
        "x",
        "a file of codes",
        (
            Column(
                "code",
                Type.STRING,
                "x",
                Sensitivity.SAFE,
                constraints=(Codes({"A": "a", "B": "b"}),),
                required=False,
            ),
        ),
    )
    path = tmp_path / "codes_only.csv"
    path.write_text("code\nA\n\nB\n")
    with duckdb.connect() as con:
        loaded, problems = validation.check(con, dataset, str(path))
        assert (loaded.rows, problems) == (3, [])
        path.write_text("code\nA\nC\n")
        loaded, problems = validation.check(con, dataset, str(path))
        assert [(p.rule, p.rows) for p in problems] == [("allowed_codes", (2,))]


def test_every_dataset_belongs_to_its_custodian_and_describes_every_column():
    for custodian in catalog.CUSTODIANS.values():
        for dataset in custodian.datasets:
            assert dataset.custodian == custodian.id
            for column in dataset.columns:
                assert len(column.description) > 5


def test_unknown_names_get_a_helpful_error():
    with pytest.raises(NotFound) as e:
        catalog.dataset("pupil")
    assert "Known datasets" in str(e.value)


def test_known_nhs_numbers_and_upns():
    assert NHSNumber().valid("9434765919")  # the NHS's published example
    assert not NHSNumber().valid("9434765918")
    assert nhs_check_digit("943476591") == 9
    assert UPN().valid(upn_check_letter("820200101001") + "820200101001")


SQL_CASES = [
    (NHSNumber(), Type.STRING, st.text(alphabet="0123456789", min_size=9, max_size=11)),
    (
        UPN(),
        Type.STRING,
        st.text(alphabet="ABCDEFGHJKLMNPQRTUVWXYZ0123456789", min_size=12, max_size=14),
    ),
    (ICD10(), Type.STRING, st.from_regex(r"[A-Z.]?[0-9X]{0,4}[.]?", fullmatch=True)),
    (
        Postcode(),
        Type.STRING,
        st.from_regex(r"[A-Z]{1,3}[0-9]{1,2}[A-Z]? ?[0-9][A-Z]{1,3}", fullmatch=True),
    ),
    (Codes({"M": "Male", "F": "Female"}), Type.STRING, st.sampled_from(["M", "F", "X", "m"])),
    (Range(1, 10), Type.INTEGER, st.integers(-5, 20)),
    (
        DateRange("2000-01-01", "2010-12-31"),
        Type.DATE,
        st.dates(dt.date(1990, 1, 1), dt.date(2020, 1, 1)),
    ),
]


@pytest.mark.parametrize(
    ("constraint", "type_", "values"), SQL_CASES, ids=[c[0].name for c in SQL_CASES]
)
def test_sql_and_python_forms_agree(constraint, type_, values):
    con = duckdb.connect()

    @settings(max_examples=200, deadline=None)
    @given(values)
    def agree(value):
        invalid = con.execute(
            f"SELECT {constraint.sql_invalid('v')} FROM (SELECT CAST(? AS {type_.sql}) AS v)",
            [value],
        ).fetchone()[0]
        assert bool(invalid) is (not constraint.valid(value)), value

    agree()


@given(st.integers(0, 10**9 - 1))
def test_every_nine_digit_prefix_has_at_most_one_valid_nhs_number(prefix):
    first_nine = f"{prefix:09d}"
    valid = [d for d in range(10) if NHSNumber().valid(first_nine + str(d))]
    assert len(valid) <= 1
    assert valid == (
        [nhs_check_digit(first_nine)] if nhs_check_digit(first_nine) is not None else []
    )


def test_catalog_version_changes_when_a_declaration_changes(monkeypatch):
    before = catalog._fingerprint()
    pupils = catalog.DATASETS["pupils"]
    changed = pupils.__class__(**{**pupils.__dict__, "columns": pupils.columns[:-1]})
    monkeypatch.setitem(catalog.DATASETS, "pupils", changed)
    assert catalog._fingerprint() != before
