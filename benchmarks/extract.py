"""Provisioning a project's extracts vs a plain DuckDB COPY of the same rows and columns.

    .venv/bin/python benchmarks/extract.py --pupils 1000000
    .venv/bin/python benchmarks/extract.py --home /path/to/home   # data already ingested

The project is the example `projects/asthma-ks4.yaml` (three datasets: pupils, ks4, hes_apc,
with its cohort), submitted, approved by both custodians and provisioned through the real code.
The baseline copies the same columns of the same cohort rows, keyed by person_key, to Parquet
with the same layout. Both run ``--repeats`` times, alternating; medians are reported. The
last line is JSON. Goal over one million pupils: ratio ≤ 1.5.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare_home(tmp: Path, pupils: int) -> dict:
    from tests.factories import init_home, make_deliveries
    from tre.cli import main

    print(f"generating and ingesting {pupils:,} pupils…", file=sys.stderr)
    data = make_deliveries(tmp / "data", pupils=pupils, seed=42)
    env = {**os.environ, "TRE_HOME": str(tmp / "home"), "TRE_LOG_LEVEL": "WARNING"}
    init_home(env, data.keys)
    for folder in (data.dfe, data.nhs):
        assert main(["ingest", str(folder)], env) == 0
    return env


def run(env: dict, repeats: int) -> dict:
    import statistics

    import duckdb

    from tre import catalog, projects
    from tre.config import Settings
    from tre.db import Database
    from tre.home import Home
    from tre.people import local_person
    from tre.projects import extracts, spec

    settings = Settings.from_environ(env)
    home, db = Home(settings.home), Database.of_settings(settings)
    today = dt.date.today()
    baseline_times, tre_times, rows = [], [], 0
    for _ in range(repeats):
        # letters only: a run of ten digits could look like an NHS number to the audit log
        project_id = "bench-" + "".join(random.choice(string.ascii_lowercase) for _ in range(8))
        request = dataclasses.replace(
            spec.load(ROOT / "projects" / "asthma-ks4.yaml"),
            id=project_id,
            start=today,
            end=today + dt.timedelta(days=30),
        )
        projects.submit(db, request, local_person("alice"))
        for custodian, who in (("dfe", "dora"), ("nhs", "hugh")):
            project = projects.decide(db, project_id, custodian, local_person(who), approve=True)
        approved = project.approved()

        # Baseline: the same rows and columns, as they are, with a plain COPY.
        sources, _ = extracts.sources_of(home, db, approved)
        out = Path(tempfile.mkdtemp(prefix="tre-extract-baseline-"))
        con = duckdb.connect()
        start = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE cohort AS {extracts.cohort_sql(approved, sources)}")
        rows = 0
        for name, columns in approved.datasets.items():
            cols = ", ".join(f'"{c}"' for c in columns)
            target = extracts._copy_to(catalog.dataset(name), columns, out / name)
            rows += con.execute(
                f"COPY (SELECT person_key, {cols} FROM {sources[name]} "
                f"WHERE person_key IN (SELECT person_key FROM cohort)) TO {target}"
            ).fetchone()[0]
        baseline_times.append(time.perf_counter() - start)
        con.close()
        shutil.rmtree(out)

        start = time.perf_counter()
        extracts.provision(home, db, project_id, local_person("ada"))
        tre_times.append(time.perf_counter() - start)
        extracts.close(home, db, project_id, local_person("ada"), "benchmark finished")
    db.dispose()
    return {
        "rows": rows,
        "baseline_s": statistics.median(baseline_times),
        "tre_s": statistics.median(tre_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pupils", type=int, default=100_000)
    parser.add_argument("--home", type=Path, help="a TRE home with both deliveries ingested")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each; medians reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tre-bench-") as tmp:
        if args.home:
            env = {**os.environ, "TRE_HOME": str(args.home), "TRE_LOG_LEVEL": "WARNING"}
        else:
            env = prepare_home(Path(tmp), args.pupils)
        figures = run(env, args.repeats)
    result = {
        "benchmark": "extract",
        "pupils": args.pupils if not args.home else None,
        "rows": figures["rows"],
        "baseline_copy_s": round(figures["baseline_s"], 2),
        "tre_provision_s": round(figures["tre_s"], 2),
        "ratio": round(figures["tre_s"] / figures["baseline_s"], 2),
        "repeats": args.repeats,
        "goal": {"ratio": 1.5},
    }
    print(
        f"{result['rows']:,} rows: plain COPY {result['baseline_copy_s']} s, provisioning "
        f"{result['tre_provision_s']} s, ratio {result['ratio']}",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
