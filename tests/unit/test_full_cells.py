"""Full cells: a cell holding everyone of its group goes to review (class disclosure), but
one overall figure is not a group's."""

from __future__ import annotations

import duckdb

from tre.outputs import results, tables
from tre.outputs import rules as R
from tre.sql import Connection


def test_one_overall_figure_is_not_a_full_cell():
    """A table of no variables (how many people in all) describes everyone, not a group: it
    passes on its own; one category holding everyone still goes to review."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS p, 'a' AS g FROM range(25)")
    con = Connection(con)
    overall = results.check_table(tables.compute(con, "t", (), unit="p"), R.RuleSet())
    assert overall.status == R.PASS and overall.cells[0].value == 25
    everyone = results.check_table(tables.compute(con, "t", ("g",), unit="p"), R.RuleSet())
    assert everyone.status == R.REVIEW and "full_cell" in everyone.cells[0].rules
