"""Secondary suppression holds on many random tables, checked by an attacker's linear program
written here independently of tre's: every suppressed cell keeps a feasible range at least the
protection level wide, and no empty cell is used to protect another."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from tre.outputs import results, tables
from tre.outputs import rules as R
from tre.sql import Connection


def attacker_ranges(released: results.Result, truth: dict) -> dict:
    """For each suppressed cell: [min, max] it can take given what is published."""
    keys = list(truth)
    index = {k: i for i, k in enumerate(keys)}
    n_dims = len(keys[0][0] + keys[0][1])
    interior = [k for k in keys if tables.ALL not in k[0] + k[1]]
    equations = []
    for k in keys:
        labels = k[0] + k[1]
        if tables.ALL not in labels:
            continue
        row = np.zeros(len(keys))
        row[index[k]] = 1
        for cell in interior:
            cell_labels = cell[0] + cell[1]
            if all(labels[d] in (tables.ALL, cell_labels[d]) for d in range(n_dims)):
                row[index[cell]] = -1
        equations.append(row)
    published = {(tuple(c.row), tuple(c.col)): c.value for c in released.cells}
    bounds = [(0, None) if published[k] is None else (published[k], published[k]) for k in keys]
    out = {}
    for k in keys:
        if published[k] is not None:
            continue
        c = np.zeros(len(keys))
        c[index[k]] = 1
        low = linprog(c, A_eq=np.array(equations), b_eq=np.zeros(len(equations)), bounds=bounds)
        high = linprog(-c, A_eq=np.array(equations), b_eq=np.zeros(len(equations)), bounds=bounds)
        assert low.status == 0, "the published table must be consistent"
        assert high.status in (0, 3)  # 3: unbounded, i.e. nothing limits the cell from above
        out[k] = (low.fun, -high.fun if high.status == 0 else np.inf)
    return out


def build(counts: dict[tuple[str, ...], int], dims: tuple[int, int]) -> tables.Table:
    con = duckdb.connect()
    names = [f"d{i}" for i in range(sum(dims))]
    con.execute("CREATE TABLE t (" + ", ".join(f"{n} VARCHAR" for n in names) + ", p INTEGER)")
    person = 0
    rows = []
    for labels, n in counts.items():
        for _ in range(n):
            person += 1
            rows.append((*labels, person))
    if rows:
        con.executemany(
            f"INSERT INTO t VALUES ({', '.join('?' for _ in range(len(names) + 1))})", rows
        )
    table = tables.compute(
        Connection(con), "t", names[: dims[0]], names[dims[0] :], unit="p", margins=True
    )
    return tables.with_empty_cells(table)


@st.composite
def random_tables(draw):
    dims = draw(st.sampled_from([(1, 0), (1, 1), (2, 1), (1, 2)]))
    sizes = [draw(st.integers(2, 4)) for _ in range(sum(dims))]
    labels = [[f"v{j}" for j in range(s)] for s in sizes]
    counts = {}
    for combination in itertools.product(*labels):
        counts[combination] = draw(
            st.one_of(st.integers(0, 9), st.integers(10, 60), st.integers(10, 60))
        )
    if sum(counts.values()) == 0:
        counts[next(iter(counts))] = 20
    return counts, dims


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_tables())
def test_no_suppressed_cell_can_be_recovered(case):
    counts, dims = case
    table = build(counts, dims)
    rule_set = R.RuleSet()
    checked = results.check_table(table, rule_set)
    truth = {c.key: c.value or 0.0 for c in table.cells}
    by_key = {(tuple(c.row), tuple(c.col)): c for c in checked.cells}
    # every cell failing a rule is suppressed
    for cell in checked.cells:
        if cell.status == R.FAIL:
            assert cell.value is None
    # published values are the truth
    for key, cell in by_key.items():
        if cell.value is not None:
            assert cell.value == truth[key]
    # no empty cell protects another
    for key, cell in by_key.items():
        if cell.suppression == "secondary":
            assert truth[key] != 0
    # the attacker cannot narrow a primary cell below the protection level
    ranges = attacker_ranges(checked, truth)
    for key, cell in by_key.items():
        if cell.suppression == "primary":
            low, high = ranges[key]
            assert low <= truth[key] + 1e-6 <= high + 2e-6
            assert high - low >= rule_set.protection - 1e-6, (key, low, high, truth[key])


def test_suppression_is_not_wasted_on_a_table_without_small_cells():
    table = build({("a", "x"): 20, ("a", "y"): 30, ("b", "x"): 25, ("b", "y"): 40}, (1, 1))
    checked = results.check_table(table, R.RuleSet())
    assert all(c.suppression is None for c in checked.cells)


def test_a_dominant_contribution_stays_hidden_to_within_p_percent():
    """In a sum table, a cell hidden because one person dominates it must stay uncertain by
    p % of that person's value, not by a few units: else the margins give it away."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (r VARCHAR, c VARCHAR, p INTEGER, spend DOUBLE)")
    cells = {
        ("r1", "c1"): [1_000_000.0] + [100.0] * 11,
        ("r1", "c2"): [0.5] * 12,
        ("r2", "c1"): [0.5] * 12,
        ("r2", "c2"): [0.6] * 12,
        ("r1", "c3"): [100_000.0] * 20,
        ("r2", "c3"): [500.0] * 20,
        ("r3", "c1"): [100_000.0] * 20,
        ("r3", "c2"): [500.0] * 20,
        ("r3", "c3"): [500.0] * 20,
    }
    rows = [
        (r, c, person, value)
        for person, (r, c, value) in enumerate(
            (r, c, v) for (r, c), values in cells.items() for v in values
        )
    ]
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    table = tables.compute(
        Connection(con), "t", ["r"], ["c"], statistic="sum", value="spend", unit="p", margins=True
    )
    rule_set = R.RuleSet()
    checked = results.check_table(table, rule_set)
    dominated = (("r1",), ("c1",))
    by_key = {(tuple(c.row), tuple(c.col)): c for c in checked.cells}
    assert by_key[dominated].suppression == "primary"
    truth = {c.key: c.value or 0.0 for c in table.cells}
    low, high = attacker_ranges(checked, truth)[dominated]
    assert high - low >= 1_000_000 * rule_set.p_percent / 100
