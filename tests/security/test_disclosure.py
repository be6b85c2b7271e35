"""Disclosure attacks on the output checks (issue #21), each seen passing before its fix.

- A median or quantile near either end of its cell is a minimum or maximum by another name
  (``quantile: 1e-12`` returned the exact minimum with status pass). Property: a quantile the
  checks let pass is never drawn from one of its cell's ``threshold`` lowest or highest values;
  one they send to review says why.
- Linked tables with rounding on were not protected together, and passed.
"""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_linked_tables import COLUMNS, FIELDS, people
from tre.catalog import Type
from tre.outputs import engine, results, specs, tables
from tre.outputs import rules as R
from tre.sql import Connection

RULES = R.RuleSet()


def _checked(values: list[float], statistic: str, quantile: float | None):
    con = duckdb.connect()
    con.execute("CREATE TABLE t (g VARCHAR, p INTEGER, v DOUBLE)")
    con.executemany("INSERT INTO t VALUES ('a', ?, ?)", list(enumerate(values)))
    table = tables.compute(
        Connection(con), "t", ["g"], statistic=statistic, value="v", quantile=quantile, unit="p"
    )
    return table, results.check_table(table, RULES)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=RULES.threshold, max_value=80),
    q=st.one_of(
        st.floats(min_value=1e-12, max_value=1 - 1e-12),
        st.sampled_from([1e-12, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1 - 1e-12]),
    ),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_a_quantile_that_passes_is_drawn_from_neither_end_of_its_cell(n, q, seed):
    import random

    rng = random.Random(seed)
    values = rng.sample(range(1, 100_000), n)  # distinct: each value is one person's
    table, checked = _checked([float(v) for v in values], "quantile", q)
    cell = checked.cells[0]
    ordered = sorted(values)
    ends = set(ordered[: RULES.threshold]) | set(ordered[-RULES.threshold :])
    reviewed = [
        r for rule, r in zip(cell.rules, cell.reasons, strict=True) if rule == "extreme_value"
    ]
    computed = table.cells[0].value
    # The two order statistics quantile_cont interpolates between.
    position = q * (n - 1)
    used = {ordered[int(position)], ordered[min(n - 1, int(position) + (position % 1 > 0))]}
    if used & ends:
        assert reviewed and cell.status == R.REVIEW, (n, q, computed)
        assert "close to a single person's value" in reviewed[0]
    else:
        assert not reviewed
        assert ordered[RULES.threshold] <= computed <= ordered[-RULES.threshold - 1]


def test_the_minimum_by_another_name_goes_to_review_with_its_reason():
    values = [float(v) for v in range(100, 130)]
    _, checked = _checked(values, "quantile", 1e-12)
    assert checked.cells[0].status == R.REVIEW
    assert any("among the 10 lowest" in r for r in checked.cells[0].reasons)
    _, median = _checked(values, "median", None)  # 30 values: the 15th and 16th, far from both
    assert "extreme_value" not in median.cells[0].rules
    _, small = _checked(values[:15], "median", None)  # 15 values: the median is the 8th
    assert small.cells[0].status == R.REVIEW


def test_linked_tables_with_rounding_go_to_review_never_pass_silently():
    con = people()
    rounded = R.RuleSet().strictest({"rounding_base": 5})
    extracts = specs.Extracts(
        {"pupils": "people"}, {"pupils": {specs.UNIT: Type.STRING, **COLUMNS}}
    )
    first_spec = specs.parse({**FIELDS, "name": "a"})
    first = engine.compute(con, first_spec, extracts, rounded)
    spec = specs.parse({**FIELDS, "name": "b", "margins": True})
    earlier = [("#1 'a'", first_spec, [c.as_dict() for c in first.cells])]
    second = engine.compute(con, spec, extracts, rounded, published=earlier)
    shown = [c for c in second.cells if c.value is not None]
    assert shown and all(c.status != R.PASS for c in shown)
    assert all(any("with rounding on" in r for r in c.reasons) for c in shown)
    alone = engine.compute(con, spec, extracts, rounded)  # no earlier release: no such review
    assert not any("linked_tables" in c.rules for c in alone.cells)
