"""Loading a delivered file: Arrow's fast path and DuckDB's careful path read the same values."""

import dataclasses
import datetime as dt

import duckdb
import pytest

from tre import validation
from tre.catalog.model import Column, Dataset, Sensitivity, Type
from tre.exceptions import InvalidInput

DATASET = Dataset(
    "typed",
    "dfe",
    "x",
    "one column of each type",
    (
        Column("name", Type.STRING, "x", Sensitivity.SAFE, required=False),
        Column("count", Type.INTEGER, "x", Sensitivity.SAFE, required=False),
        Column("score", Type.DECIMAL, "x", Sensitivity.SAFE, required=False),
        Column("day", Type.DATE, "x", Sensitivity.SAFE, required=False),
        Column("flag", Type.BOOLEAN, "x", Sensitivity.SAFE, required=False),
    ),
)
HEADER = "name,count,score,day,flag\n"
# The values every file below spells in its own way.
EXPECTED = [
    ("Ann", 5, 1.5, dt.date(2010, 1, 5), True),
    ("NA", 0, None, None, False),
    (None, None, -2.0, dt.date(2011, 12, 31), None),
    ('a "quoted" name', 7, 1000.0, dt.date(2012, 2, 29), True),
]
CANONICAL = (
    "Ann,5,1.5,2010-01-05,true\nNA,0,,,false\n,,-2,2011-12-31,\n"
    '"a ""quoted"" name",7,1e3,2012-02-29,1\n'
)


def _read(con, dataset: Dataset, loaded: validation.Loaded) -> list[tuple]:
    values = ", ".join(validation.value(c, loaded.typed) for c in dataset.columns)
    rows = con.execute(f"SELECT {values} FROM {validation.raw_table(dataset)}").fetchall()
    return sorted(rows, key=repr)


def _load(tmp_path, text: str, dataset: Dataset = DATASET, header: str = HEADER):
    """The file loaded as ingest loads it, and (values, rows) as each path reads them."""
    path = tmp_path / f"{dataset.name}.csv"
    path.write_text(header + text)
    with duckdb.connect() as con:
        loaded, problems = validation.check(con, dataset, str(path))
        read = _read(con, dataset, loaded)
        careful = validation.load(con, dataset, str(path), fast=False)
        assert (careful.rows, _read(con, dataset, careful)) == (loaded.rows, read)
    return loaded, problems, read


def test_a_well_formed_file_takes_the_fast_path(tmp_path):
    loaded, problems, rows = _load(tmp_path, CANONICAL)
    assert (loaded.typed, loaded.rows, problems) == (True, 4, [])
    assert rows == sorted(EXPECTED, key=repr)


def test_a_byte_order_mark_and_empty_lines_are_read_as_by_duckdb(tmp_path):
    loaded, problems, rows = _load(tmp_path, CANONICAL + "\n\n", header="\ufeff" + HEADER)
    assert (loaded.typed, loaded.rows, problems) == (True, 4, [])
    assert rows == sorted(EXPECTED, key=repr)
    # With one column an empty line is a missing value (a row).
    one = Dataset("one", "dfe", "x", "x", (DATASET.columns[1],))
    loaded, _, rows = _load(tmp_path, "1\n\n2\n", one, header="count\n")
    assert (loaded.typed, rows) == (True, [(1,), (2,), (None,)])


@pytest.mark.parametrize(
    "text",
    [
        # Spellings DuckDB reads and Arrow does not: the careful path reads them.
        "Ann,+5,1.5,2010/01/05,t\nNA,0,,,no\n,,-2,2011-12-31,\n"
        '"a ""quoted"" name",7,1e3,2012-02-29,yes\n',
        "Ann,5,1.5,2010-01-05,true\nNA,0,,,false\n,,-2,2011-12-31 00:00:00,\n"
        '"a ""quoted"" name",7,1000,2012-2-29,1\n',
    ],
)
def test_spellings_arrow_refuses_are_read_carefully_to_the_same_values(tmp_path, text):
    loaded, problems, rows = _load(tmp_path, text)
    assert (loaded.typed, loaded.rows, problems) == (False, 4, [])
    assert rows == sorted(EXPECTED, key=repr)


def test_a_value_that_parses_nowhere_is_a_finding_with_its_row(tmp_path):
    loaded, problems, _ = _load(tmp_path, CANONICAL + "Bob,five,1,2010-01-01,true\n")
    assert not loaded.typed
    assert [(p.rule, p.column, p.rows) for p in problems] == [("type_integer", "count", (5,))]


def test_values_holding_line_breaks_are_read_whole(tmp_path):
    """Arrow reads in blocks of 1 MiB split at line breaks; a value holding one across a block
    boundary must not shift the rows after it (Arrow fails there, and DuckDB reads the file)."""
    rows = [(f"line {i}\nbreak" if i % 7 == 0 else f"name {i}" * 20, i) for i in range(30_000)]
    text = "".join(f'"{name}",{i},1,2010-01-01,true\n' for name, i in rows)
    loaded, problems, read = _load(tmp_path, text)
    assert (loaded.rows, problems) == (len(rows), [])
    assert sorted((name, i) for name, i, *_ in read) == sorted(rows)


@pytest.mark.parametrize(
    ("text", "line"),
    [("Bob,1,1,2010-01-01,true,extra\n", 82), ("Bob,1\n", 82), ("Bob;1;1;2010-01-01;true\n", 82)],
)
def test_a_row_with_too_many_or_too_few_values_is_refused_naming_its_line(tmp_path, text, line):
    with pytest.raises(InvalidInput, match=f"not well-formed CSV.*line {line}"):
        _load(tmp_path, CANONICAL * 20 + text + CANONICAL)


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="named twice: count"):
        _load(tmp_path, CANONICAL, header="name,count,score,day,flag,count\n")


def test_a_file_beyond_the_memory_budget_is_read_typed_by_duckdb(tmp_path):
    path = tmp_path / "typed.csv"
    path.write_text(HEADER + CANONICAL)
    with duckdb.connect() as con:
        loaded, problems = validation.check(con, DATASET, str(path), in_memory=False)
        assert (loaded.typed, loaded.rows, problems) == (True, 4, [])
        assert _read(con, DATASET, loaded) == sorted(EXPECTED, key=repr)
        kind = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'raw_typed'"
        ).fetchone()
        assert kind == ("LOCAL TEMPORARY",)  # a DuckDB table, which may spill to disk
        path.write_text(HEADER + CANONICAL + "Bob,five,1,2010-01-01,true\n")
        loaded, problems = validation.check(con, DATASET, str(path), in_memory=False)
        assert [(p.rule, p.rows) for p in problems] == [("type_integer", (5,))]


REQUIRED = Dataset(
    "required",
    "dfe",
    "x",
    "every column required",
    tuple(dataclasses.replace(c, required=True) for c in DATASET.columns),
)


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_missing_required_value_is_found_with_its_row_on_either_path(tmp_path, in_memory):
    """Arrow's own count of missing values stands in for the pass over the rows: a column it
    counts none in is not scanned, one it counts some in is (and the rows are named)."""
    path = tmp_path / "required.csv"
    path.write_text(HEADER + "Ann,5,1.5,2010-01-05,true\n" * 3)
    with duckdb.connect() as con:
        loaded, problems = validation.check(con, REQUIRED, str(path), in_memory=in_memory)
        assert (loaded.typed, problems) == (True, [])
        assert loaded.missing == ({c.name: 0 for c in REQUIRED.columns} if in_memory else None)
        path.write_text(
            HEADER + 'Ann,5,1.5,2010-01-05,true\n"",5,1.5,,true\nAnn,,1.5,2010-01-05,1\n'
        )
        loaded, problems = validation.check(con, REQUIRED, str(path), in_memory=in_memory)
    assert not loaded.typed  # loaded again carefully, to name the rows
    assert sorted((p.rule, p.column, p.rows) for p in problems) == [
        ("required", "count", (3,)),
        ("required", "day", (2,)),
        ("required", "name", (2,)),
    ]
