"""Mean tables with margins: with the counts of the same people (which a count table gives),
the means and their totals are sums, and no suppressed mean's sum may be narrowed below the
protection level. The attacker's linear program is written here, independently of tre's."""

from __future__ import annotations

import random

import duckdb
import numpy as np
from scipy.optimize import linprog

from tre.outputs import results, tables
from tre.outputs import rules as R
from tre.sql import Connection

ROWS, COLS = ("a", "b", "c", "d"), ("x", "y", "z")


def data(seed: int) -> Connection:
    rng = random.Random(seed)
    con = duckdb.connect()
    con.execute("CREATE TABLE t (p INTEGER, r VARCHAR, c VARCHAR, v DOUBLE)")
    rows, person = [], 0
    for r in ROWS:
        for c in COLS:
            # Mostly groups of 10 to 40 people; some of 1 to 6 (below the threshold).
            n = rng.randint(1, 6) if rng.random() < 0.25 else rng.randint(10, 40)
            for _ in range(n):
                person += 1
                rows.append((person, r, c, float(rng.randint(1, 100))))
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    return Connection(con)


def sum_ranges(table: tables.Table, result: results.Result) -> dict:
    """Each suppressed cell's [min, max] sum, given every cell's count and the published means
    (a published mean times its count is its sum) and that margins add up."""
    cells = {c.key: c for c in table.cells}
    interior = [k for k in cells if not cells[k].margin]

    def row(key) -> np.ndarray:
        labels = key[0] + key[1]
        return np.array(
            [
                all(a in ("All", x) for a, x in zip(labels, f[0] + f[1], strict=True))
                for f in interior
            ],
            dtype=float,
        )

    published = {(c.row, c.col): c.value for c in result.cells}
    known = [
        (row(k), published[k] * cells[k].stats.units) for k in cells if published[k] is not None
    ]
    a_eq, b_eq = np.array([k for k, _ in known]), np.array([v for _, v in known])
    ranges = {}
    for key, value in published.items():
        if value is None:
            low = linprog(row(key), A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
            high = linprog(-row(key), A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
            ranges[key] = (low.fun, -high.fun if high.status == 0 else np.inf)
    return ranges


def test_suppressed_means_keep_their_sums_out_of_reach_of_the_counts():
    rule_set = R.RuleSet()
    checked = 0
    for seed in range(12):
        con = data(seed)
        table = tables.compute(
            con, "t", ("r",), ("c",), statistic="mean", value="v", unit="p", margins=True
        )
        result = results.check_table(table, rule_set)
        primary = [(c.row, c.col) for c in result.cells if c.suppression == "primary"]
        if not primary:
            continue
        checked += 1
        assert any(c.suppression == "secondary" for c in result.cells)
        ranges = sum_ranges(table, result)
        for key in primary:
            low, high = ranges[key]
            assert high - low >= rule_set.protection - 1e-6, (seed, key, low, high)
    assert checked >= 6, "most seeds give small cells"
