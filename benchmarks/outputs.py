"""Output checking: tre vs SACRO's ACRO vs a plain DuckDB GROUP BY, on the same data.

    .venv/bin/python benchmarks/outputs.py --rows 1000000 10000000

For each size, an 11 × 10 table (a few rare cells) of a count and of a mean, with margins and
suppression on:

* ACRO 1.0.2: ``acro.crosstab(..., margins=True)`` (count) and with ``values``/``aggfunc``
  (mean), ``suppress=True``, on a pandas DataFrame already in memory;
* plain: ``SELECT r, c, count(DISTINCT p) / avg(v) FROM parquet GROUP BY r, c`` (the figures
  tre releases: people per cell, and the mean);
* tre: what the output engine does for each table, from the Parquet file: per-cell statistics
  by person (units, totals, top contributions), every rule, primary and LP-verified secondary
  suppression, and differencing by populations (:mod:`tre.outputs.populations`) against the
  project's releases: none; 1,056 released cells (8 tables like it of the records above 8
  cuts of ``v``: no population close in size, so nothing is sketched); and those plus a table
  over all but a handful of people (sketches computed and compared, cells failed);
* the sketches an output keeps when it may be released (computed at submission and release).

Each record is one person (``p``), as in the pupils' census. The last line is JSON. Goals: tre
≥ 10× faster than ACRO and within 5× of the GROUP BY; 1,000 released cells add at most 50 %
to the check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(rows: int, path: Path, seed: int = 1) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    r = rng.integers(0, 11, rows)
    c = rng.integers(0, 10, rows)
    # A few rare cells: nearly all records of (r10, c9), (r10, c8) and (r9, c9) move away.
    rare = ((r == 10) & (c >= 8)) | ((r == 9) & (c == 9))
    keep = rng.random(rows) < 4 / max(rows / 110, 1)  # about 4 records stay in each
    c = np.where(rare & ~keep, rng.integers(0, 8, rows), c)
    v = rng.gamma(2.0, 20.0, rows)
    p = np.arange(rows)  # the person: one record each
    table = pa.table({"p": p, "r": [f"r{x:02d}" for x in r], "c": [f"c{x}" for x in c], "v": v})
    pq.write_table(table, path, row_group_size=1 << 20)


def time_it(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(rows: int, repeats: int) -> dict:
    import acro
    import pandas as pd

    from tre.outputs import engine, populations, results, tables
    from tre.outputs import rules as R
    from tre.sql import Connection, sandboxed_duckdb

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        make_data(rows, path)
        source = f"read_parquet('{path}')"
        # Both on the output engine's sandboxed connection (it reads the data's folder only).
        con = Connection(sandboxed_duckdb(Path(tmp), Path(tmp) / "spill"))
        frame = pd.read_parquet(path)

        def plain():
            con.execute(f"SELECT r, c, count(DISTINCT p) FROM {source} GROUP BY r, c").fetchall()
            con.execute(f"SELECT r, c, avg(v) FROM {source} GROUP BY r, c").fetchall()

        rule_set = R.RuleSet()
        width, key = populations.width_for(rule_set.threshold), b"k" * 32

        def sketches(where: str, only=None) -> populations.Populations:
            cells = populations.compute(
                con, source, where, ["r"], ["c"], "p", key, width, True, only
            )
            return populations.Populations(width, cells)

        # Released earlier: the same table of the records above each of 8 cuts of v.
        earlier = [
            populations.Released(f"#{i}", sketches(f"v > {cut}").cells)
            for i, cut in enumerate((2, 3, 4, 6, 8, 16, 32, 64))
        ]
        released_cells = sum(len(r.cells) for r in earlier)
        # And one over all but the few records of v ≤ 0.05: every cell close to the new ones.
        close = [*earlier, populations.Released("#close", sketches("v > 0.05").cells)]

        def ours(releases=()):
            sizes = sorted(s.n for r in releases for s in r.cells.values())
            for statistic, value in (("count", None), ("mean", "v")):
                table = tables.compute(
                    con,
                    source,
                    ["r"],
                    ["c"],
                    statistic=statistic,
                    value=value,
                    unit="p",
                    margins=True,
                )
                if statistic == "count":
                    table = tables.with_empty_cells(table)
                found = {}
                close = [
                    c.key
                    for c in table.cells
                    if engine._close(c.stats.units, sizes, rule_set.threshold)
                ]
                if close:  # as the engine does: only the cells close in size to a release
                    mine = sketches("true", close)
                    empty = populations.Sketch.empty(width)
                    near = {k: mine.cells.get(k, empty) for k in close}
                    units = {c.key: c.stats.units for c in table.cells}
                    if any(near[k].n != units[k] for k in close):
                        whole = sketches("true")
                        near = {k: whole.cells.get(k, empty) for k in close}
                    found = populations.findings(
                        populations.Populations(width, near), releases, rule_set.threshold
                    )
                results.check_table(table, rule_set, found)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = acro.ACRO(suppress=True)

            def theirs():
                session.crosstab(frame.r, frame.c, margins=True)
                session.crosstab(frame.r, frame.c, values=frame.v, aggfunc="mean", margins=True)

            acro_s = time_it(theirs, repeats)
        plain_s = time_it(plain, repeats)
        ours_s = time_it(ours, repeats)
        against_s = time_it(lambda: ours(earlier), repeats)
        close_s = time_it(lambda: ours(close), repeats)
        kept_s = time_it(lambda: sketches("true"), repeats)
    return {
        "rows": rows,
        "acro_s": round(acro_s, 3),
        "group_by_s": round(plain_s, 3),
        "tre_s": round(ours_s, 3),
        "released_cells": released_cells,
        "tre_against_released_s": round(against_s, 3),
        "tre_against_close_s": round(close_s, 3),
        "sketches_kept_s": round(kept_s, 3),
        "acro_over_tre": round(acro_s / ours_s, 1),
        "tre_over_group_by": round(ours_s / plain_s, 2),
        "released_over_none": round(against_s / ours_s, 2),
        "close_over_none": round(close_s / ours_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures = []
    for rows in args.rows:
        result = run(rows, args.repeats)
        figures.append(result)
        print(
            f"{rows:,} rows: ACRO {result['acro_s']} s, GROUP BY {result['group_by_s']} s, "
            f"tre {result['tre_s']} s: {result['acro_over_tre']}× faster than ACRO, "
            f"{result['tre_over_group_by']}× the GROUP BY; against {result['released_cells']} "
            f"released cells {result['tre_against_released_s']} s, "
            f"{result['released_over_none']}× the check with none; with a release close to "
            f"every cell {result['tre_against_close_s']} s, {result['close_over_none']}×; "
            f"sketches kept at release {result['sketches_kept_s']} s",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "benchmark": "outputs",
                "results": figures,
                "goal": {
                    "acro_over_tre": 10,
                    "tre_over_group_by": 5,
                    "released_over_none": 1.5,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
