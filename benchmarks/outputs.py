"""Output checking: tre vs SACRO's ACRO vs a plain DuckDB GROUP BY, on the same data.

    .venv/bin/python benchmarks/outputs.py --rows 1000000 10000000

For each size, an 11 × 10 table (a few rare cells) of a count and of a mean, with margins and
suppression on:

* ACRO 1.0.2: ``acro.crosstab(..., margins=True)`` (count) and with ``values``/``aggfunc``
  (mean), ``suppress=True``, on a pandas DataFrame already in memory;
* plain: ``SELECT r, c, count(*) / avg(v) FROM parquet GROUP BY r, c``;
* tre: :func:`tre.outputs.tables.compute` + :func:`tre.outputs.results.check_table` from the
  Parquet file: per-cell statistics (units, totals, top contributions), every rule, primary and
  LP-verified secondary suppression.

The last line is JSON. Goals: tre ≥ 10× faster than ACRO and within 5× of the GROUP BY.
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
    table = pa.table({"r": [f"r{x:02d}" for x in r], "c": [f"c{x}" for x in c], "v": v})
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

    from tre.outputs import results, tables
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
            con.execute(f"SELECT r, c, count(*) FROM {source} GROUP BY r, c").fetchall()
            con.execute(f"SELECT r, c, avg(v) FROM {source} GROUP BY r, c").fetchall()

        def ours():
            for statistic, value in (("count", None), ("mean", "v")):
                table = tables.compute(
                    con, source, ["r"], ["c"], statistic=statistic, value=value, margins=True
                )
                if statistic == "count":
                    table = tables.with_empty_cells(table)
                results.check_table(table, R.RuleSet())

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = acro.ACRO(suppress=True)

            def theirs():
                session.crosstab(frame.r, frame.c, margins=True)
                session.crosstab(frame.r, frame.c, values=frame.v, aggfunc="mean", margins=True)

            acro_s = time_it(theirs, repeats)
        plain_s = time_it(plain, repeats)
        ours_s = time_it(ours, repeats)
    return {
        "rows": rows,
        "acro_s": round(acro_s, 3),
        "group_by_s": round(plain_s, 3),
        "tre_s": round(ours_s, 3),
        "acro_over_tre": round(acro_s / ours_s, 1),
        "tre_over_group_by": round(ours_s / plain_s, 2),
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
            f"{result['tre_over_group_by']}× the GROUP BY",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "benchmark": "outputs",
                "results": figures,
                "goal": {"acro_over_tre": 10, "tre_over_group_by": 5},
            }
        )
    )


if __name__ == "__main__":
    main()
