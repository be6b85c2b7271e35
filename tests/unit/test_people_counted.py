"""Tables count people: a person with many records counts once, in a cell and its margins, and
their records add up to one contribution; where each record is a person of its own, the
cheaper count of records gives the very same table."""

from __future__ import annotations

import duckdb

from tre.outputs import tables
from tre.sql import Connection


def _table(rows: list[tuple[str, str, float]], statistic: str = "count"):
    raw = duckdb.connect()
    raw.execute("CREATE TABLE t (p VARCHAR, g VARCHAR, v DOUBLE)")
    raw.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    value = None if statistic == "count" else "v"
    table = tables.compute(
        Connection(raw), "t", ["g"], statistic=statistic, value=value, unit="p", margins=True
    )
    return {c.key: c for c in table.cells}


def test_a_person_with_many_records_counts_once():
    rows = [("p1", "a", 50.0)] * 3 + [(f"p{i}", "a", 1.0) for i in range(2, 11)]
    rows += [(f"q{i}", "b", 1.0) for i in range(12)]
    cells = _table(rows)
    assert cells[(("a",), ())].stats.units == 10 and cells[(("a",), ())].value == 10
    assert cells[(("All",), ())].value == 22
    sums = _table(rows, "sum")
    assert sums[(("a",), ())].stats.top[0] == 150.0  # p1's three records: one contribution


def test_one_record_a_person_gives_the_same_table_as_counting_people():
    rows = [(f"p{i}", "ab"[i % 2], float(i)) for i in range(40)]
    for statistic in ("count", "sum", "mean"):
        cells = _table(rows, statistic)
        assert cells[(("a",), ())].stats.units == 20
        assert cells[(("All",), ())].stats.units == 40
        if statistic == "sum":
            assert cells[(("b",), ())].stats.top[0] == 39.0
    missing = _table([*rows, (None, "a", 1.0)])  # a record of no one: people counted as such
    assert missing[(("a",), ())].stats.units == 20
