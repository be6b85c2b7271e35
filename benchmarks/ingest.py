"""Ingest vs a plain DuckDB COPY of the same delivery rows to Parquet.

    .venv/bin/python benchmarks/ingest.py --pupils 1000000

Generates signed synthetic deliveries (not timed), then, each in a fresh process:

* baseline: ``COPY (SELECT * FROM read_csv(file)) TO file.parquet (zstd)`` for every CSV file
  of both deliveries;
* tre: ``tre ingest`` of the DfE then the NHS delivery (verify + validate + link +
  pseudonymise + write) into a new TRE home.

The two alternate ``--repeat`` times (3 by default: on this machine one run of either can
be 2 s off the next); the figures are the medians, and the JSON lists every run. Prints
both times, the ratio and each process's peak RSS; the last line is JSON.
Goal at 1,000,000 pupils: ratio ≤ 2.5 and peak RSS ≤ 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline(data: Path, out: Path) -> dict:
    import duckdb

    files = sorted((data / "dfe").glob("*.csv")) + sorted((data / "nhs").glob("*.csv"))
    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    start = time.perf_counter()
    rows = 0
    for path in files:
        target = out / f"{path.parent.name}-{path.stem}.parquet"
        rows += con.execute(
            f"COPY (SELECT * FROM read_csv('{path}')) TO '{target}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        ).fetchone()[0]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "peak_rss": _peak_rss()}


def ingest(data: Path, home: Path) -> dict:
    from tre.cli import main

    env = {**os.environ, "TRE_HOME": str(home), "TRE_LOG_LEVEL": "WARNING"}
    assert main(["init"], env) == 0
    for custodian in ("dfe", "nhs"):
        assert (
            main(["custodian", "register", custodian, str(data / "keys" / f"{custodian}.pub")], env)
            == 0
        )
    start = time.perf_counter()
    for custodian in ("dfe", "nhs"):
        assert main(["ingest", str(data / custodian)], env) == 0
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss": _peak_rss()}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker(kind: str, data: Path, target: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--data", str(data), "--target", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pupils", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, help="reuse deliveries made by an earlier run")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--worker", choices=["baseline", "ingest"], help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = baseline if args.worker == "baseline" else ingest
        print(json.dumps(run(args.data, args.target)))
        return

    with tempfile.TemporaryDirectory(prefix="tre-bench-") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from tests.factories import make_deliveries

            print(f"generating synthetic deliveries for {args.pupils:,} pupils…", file=sys.stderr)
            made = make_deliveries(tmp / "data", pupils=args.pupils, seed=args.seed)
            data = made.root
            (data / "keys").symlink_to(made.keys)
        bases, ours = [], []
        for i in range(args.repeat):
            (tmp / f"baseline-{i}").mkdir()
            bases.append(_worker("baseline", data, tmp / f"baseline-{i}"))
            ours.append(_worker("ingest", data, tmp / f"home-{i}"))
            shutil.rmtree(tmp / f"baseline-{i}")
            shutil.rmtree(tmp / f"home-{i}")
    base_s = statistics.median(b["seconds"] for b in bases)
    ours_s = statistics.median(o["seconds"] for o in ours)
    result = {
        "benchmark": "ingest",
        "pupils": args.pupils,
        "rows": bases[0]["rows"],
        "baseline_copy_s": round(base_s, 2),
        "tre_ingest_s": round(ours_s, 2),
        "ratio": round(ours_s / base_s, 2),
        "baseline_peak_rss_mib": round(max(b["peak_rss"] for b in bases) / 2**20),
        "tre_peak_rss_mib": round(max(o["peak_rss"] for o in ours) / 2**20),
        "runs": [
            {"baseline_copy_s": round(b["seconds"], 2), "tre_ingest_s": round(o["seconds"], 2)}
            for b, o in zip(bases, ours, strict=True)
        ],
        "goal": {"ratio": 2.5, "peak_rss_mib": 4096},
    }
    print(
        f"{result['rows']:,} rows: plain COPY {result['baseline_copy_s']} s, "
        f"tre ingest {result['tre_ingest_s']} s (medians of {args.repeat}), "
        f"ratio {result['ratio']}; "
        f"peak RSS {result['tre_peak_rss_mib']} MiB",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
