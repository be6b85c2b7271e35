"""Output checking: tre vs SACRO's ACRO vs a plain DuckDB GROUP BY, on the same data.

    .venv/bin/python benchmarks/outputs.py --rows 1000000 10000000

For each size, an 11 × 10 table (a few rare cells) of a count and of a mean, with margins and
suppression on:

* ACRO 1.0.2: ``acro.crosstab(..., margins=True)`` (count) and with ``values``/``aggfunc``
  (mean), ``suppress=True``, on a pandas DataFrame already in memory;
* plain: ``SELECT r, c, count(DISTINCT pseudo_id) / avg(v) FROM parquet GROUP BY r, c`` (the
  figures tre releases: people per cell, and the mean);
* tre: the output engine itself (:func:`tre.outputs.engine.compute`) for each table, over the
  Parquet file: per-cell statistics by person (units, totals, top contributions), every rule,
  primary and LP-verified secondary suppression, and differencing by populations
  (:mod:`tre.outputs.populations`) against the project's releases: none; 1,056 released cells
  (both tables of the records above 4 cuts of ``v``); and those plus both tables over all but
  a handful of people (cells failed);
* the sketches an output keeps when it may be released (computed at submission and release),
  beyond the check itself.

Each record is one person (``pseudo_id``), as in the pupils' census. The last line is JSON.
Goals: tre ≥ 10× faster than ACRO and within 5× of the GROUP BY; 1,000 released cells add at
most 50 % to the check.
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
    p = [f"p{x}" for x in range(rows)]  # the person (a pseudo_id): one record each
    table = pa.table(
        {"pseudo_id": p, "r": [f"r{x:02d}" for x in r], "c": [f"c{x}" for x in c], "v": v}
    )
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

    from tre.catalog import Type
    from tre.outputs import engine, specs
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
            con.execute(
                f"SELECT r, c, count(DISTINCT pseudo_id) FROM {source} GROUP BY r, c"
            ).fetchall()
            con.execute(f"SELECT r, c, avg(v) FROM {source} GROUP BY r, c").fetchall()

        rule_set = R.RuleSet()
        extracts = specs.Extracts(
            {"data": source},
            {
                "data": {
                    specs.UNIT: Type.STRING,
                    "r": Type.STRING,
                    "c": Type.STRING,
                    "v": Type.DECIMAL,
                }
            },
        )
        layout = {"dataset": "data", "kind": "table", "rows": ["r"], "cols": ["c"], "margins": True}
        tables_of = (("count", {}), ("mean", {"statistic": "mean", "value": "v"}))

        def check(name: str, filters=(), published=(), keep=False):
            """What the output engine does for one output, with its key for the sketches."""
            spec = specs.parse(
                {
                    "name": name,
                    **layout,
                    **dict(tables_of)[name.split()[0]],
                    "filters": list(filters),
                }
            )
            return spec, engine.compute(
                con,
                spec,
                extracts,
                rule_set,
                published,
                population_key=b"k" * 32,
                keep_populations=keep,
            )

        def released(cut: float, label: str) -> list:
            """Both tables of the records above ``cut`` of v, released: as the engine is
            given them later."""
            out = []
            for name, _ in tables_of:
                spec, result = check(name, [{"column": "v", "op": "gt", "value": cut}], keep=True)
                out.append(
                    (
                        f"{label} {name}",
                        spec,
                        [c.as_dict() for c in result.cells],
                        result.populations,
                    )
                )
            return out

        # Released earlier: the same tables of the records above each of 4 cuts of v (1,056
        # cells), and, for the last scenario, those over all but a handful of people.
        earlier = [r for i, cut in enumerate((2, 4, 8, 16)) for r in released(cut, f"#{i}")]
        released_cells = sum(len(cells) for _, _, cells, _ in earlier)
        close = [*earlier, *released(0.05, "#close")]

        def ours(published=()):
            for name, _ in tables_of:
                check(name, published=published)

        def kept():
            for name, _ in tables_of:
                check(name, keep=True)

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
        kept_s = time_it(kept, repeats) - ours_s
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
