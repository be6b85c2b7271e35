"""Workspaces: how long a workspace takes to start, and what the DuckDB sandbox costs a query.

    sudo .venv/bin/python benchmarks/workspace.py [--pupils 200000] [--spawns 10] [--queries 15]

A throw-away TRE home is built as ``make demo`` builds one (synthetic deliveries, ingest, the
example projects provisioned), with its own real Keycloak and JupyterHub (as ``tre hub up``
runs it). alice logs in through Keycloak's form, as a browser would.

* **spawn**: from the start request (``POST /hub/api/users/alice/servers/asthma-ks4``) until
  the hub reports the server ready, polled every 50 ms; then it is stopped and removed, and
  started again. Goal: median ≤ 3 s.
  Every start is inside the project's network enclave (its namespace and rules are made by
  the first start and rewritten by each).
* **dask**: in a further project, ``dask-bench`` (alice's; the ``pupils`` census, every year,
  no cohort: about 4.9 rows a pupil, so ``--pupils 2100000`` makes 10 M extract rows), inside
  its workspace's kernel, ``tre.workspace.cluster(workers=2)`` (on the hub's dask-gateway:
  scheduler and workers started by the privileged helper as the workspace's account in its
  enclave, TLS) started and shut down again, median time until both workers are ready (goal
  ≤ 5 s); then the same group-by over the ``pupils`` extract (``tre.workspace.dask``) on that
  cluster and on a plain ``LocalCluster`` (2 workers, no TLS, in the kernel) in turn, median
  of each (goal ≤ 1.2).
* **query**: inside that workspace's kernel (its account, its environment), the same
  aggregate over the ``ks4`` and ``pupils`` extracts on a ``tre.workspace.connect()``
  connection and on a plain ``duckdb.connect()`` with the same views over the same Parquet
  files, alternating, median of each. Goal: sandboxed / plain ≤ 1.05.

Needs root (workspaces run under OS accounts of their own). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROJECT = "asthma-ks4"
DASK_PROJECT = "dask-bench"
QUERY = """
    SELECT p.fsm_eligible, p.sex, count(*) AS pupils, avg(k.attainment8) AS attainment8,
           avg(k.eng_maths_grade4::INT) AS grade4
    FROM ks4 k JOIN pupils p USING (pseudo_id, academic_year)
    GROUP BY ALL ORDER BY ALL
"""

#: Run in the kernel: both connections, the query timed on each in turn.
IN_THE_KERNEL = """
import duckdb, time, statistics
from tre.workspace import connect
from tre.workspace.sandbox import Workspace

sandboxed = connect()
plain = duckdb.connect()
for name, paths in Workspace.here().files_by_table().items():
    files = ", ".join(repr(f) for f in paths)
    plain.execute(
        f'CREATE VIEW "{{name}}" AS SELECT * FROM read_parquet([{{files}}], '
        "hive_partitioning = false)"
    )
assert sandboxed.execute(QUERY).fetchall() == plain.execute(QUERY).fetchall()
times = {{"sandboxed": [], "plain": []}}
for _ in range({queries}):
    for kind, con in (("sandboxed", sandboxed), ("plain", plain)):
        started = time.perf_counter()
        con.execute(QUERY).fetchall()
        times[kind].append(time.perf_counter() - started)
rows = plain.execute("SELECT (SELECT count(*) FROM ks4), (SELECT count(*) FROM pupils)").fetchone()
"""

#: Run in the kernel: the TLS cluster's start, then a group-by on it and on a plain cluster.
DASK_IN_THE_KERNEL = """
import time, statistics
from dask.distributed import Client, LocalCluster
from tre.workspace import cluster, close_cluster, dask as extract

ready = []
for _ in range({starts}):
    started = time.perf_counter()
    cluster(workers=2)  # returns once both workers are there
    ready.append(time.perf_counter() - started)
    close_cluster()
tls = cluster(workers=2)
plain = Client(LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                            dashboard_address=None), set_as_default=False)
frame = extract("pupils")
query = frame.groupby(["academic_year", "sex"]).size()
counts = [c.compute(query).result().sort_index() for c in (tls, plain)]
assert (counts[0] == counts[1]).all()
group_by = {{"tls": [], "plain": []}}
for _ in range({queries}):
    for kind, client in (("tls", tls), ("plain", plain)):
        started = time.perf_counter()
        client.compute(query).result()
        group_by[kind].append(time.perf_counter() - started)
dask_rows = int(len(frame))
plain.close(); plain.cluster.close(); close_cluster()
"""


def dask_application():
    """The project the Dask group-by runs in: the whole census of pupils, alice's alone."""
    import dataclasses
    import datetime as dt

    from tre.projects import spec

    example = spec.load(ROOT / "projects" / f"{PROJECT}.yaml")
    today = dt.date.today()
    return dataclasses.replace(
        example,
        id=DASK_PROJECT,
        title="Dask benchmark",
        members=("alice",),
        start=today,
        end=today + dt.timedelta(days=30),
        datasets={"pupils": ("sex", "fsm_eligible", "academic_year")},
        cohort=(),
    )


def spawn_once(client, project: str = PROJECT) -> float:
    from tre.hub.kernels import start_workspace, workspace_ready

    started = time.perf_counter()
    answer = start_workspace(client, "alice", project)
    if answer.status_code not in (201, 202):
        raise SystemExit(f"the workspace did not start: {answer.status_code} {answer.text}")
    workspace_ready(client, "alice", project, poll=0.05)
    return time.perf_counter() - started


def stop(client, project: str = PROJECT) -> None:
    from tre.hub.kernels import stop_workspace

    stop_workspace(client, "alice", project, remove=True)
    while project in client.get("/hub/api/users/alice").json()["servers"]:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pupils", type=int, default=200_000)
    parser.add_argument("--spawns", type=int, default=10)
    parser.add_argument("--queries", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: each workspace runs under an OS account of its own")

    from tre import demo
    from tre.cli import main as tre
    from tre.config import Settings
    from tre.hub import HubServer
    from tre.hub.kernels import Kernel
    from tre.identity import KeycloakServer
    from tre.identity.tokens import hub_login
    from tre.privileged import Helper, enclaves
    from tre.services import free_port

    # /var/tmp, opened for passing through: workspace accounts must reach the project folders.
    with tempfile.TemporaryDirectory(prefix="tre-bench-workspace-", dir="/var/tmp") as tmp:
        Path(tmp).chmod(0o711)
        environ = {
            **os.environ,
            "TRE_HOME": str(Path(tmp) / "home"),
            "TRE_LOG_LEVEL": "WARNING",
            "TRE_KEYCLOAK_PORT": str(free_port()),
            "TRE_PORTAL_URL": f"http://127.0.0.1:{free_port()}",
            "TRE_HUB_URL": f"http://127.0.0.1:{free_port()}",
        }
        settings = Settings.from_environ(environ)
        started = time.perf_counter()
        demo.prepare_data(settings, pupils=args.pupils, say=lambda line: None)
        demo.prepare_projects(settings, say=lambda line: None, more=[dask_application()])
        print(f"demo home with {args.pupils:,} pupils ({time.perf_counter() - started:.0f} s)")
        assert tre(["init"], environ) == 0  # built here as root: each part to its owner
        keycloak = KeycloakServer.from_settings(settings)
        hub = HubServer.from_settings(settings, environ)
        helper = Helper(settings.home, environ)
        try:
            helper.start()  # it starts the workspaces for the hub, which runs as tre
            keycloak.start()
            hub.start()
            with closing(hub_login(settings.hub_url, "alice", settings.demo_password)) as alice:
                spawn_once(alice)  # the first start makes the OS account and copies templates
                stop(alice)
                spawns = []
                for n in range(args.spawns):
                    spawns.append(spawn_once(alice))
                    print(f"spawn {n + 1}: {spawns[-1]:.2f} s")
                    if n + 1 < args.spawns:
                        stop(alice)
                server = alice.get("/hub/api/users/alice").json()["servers"][PROJECT]
                with Kernel(alice, server["url"], timeout=900) as kernel:
                    kernel.run(f"QUERY = {QUERY!r}")
                    kernel.run(IN_THE_KERNEL.format(queries=args.queries))
                    times = kernel.value("times")
                    rows = kernel.value("list(rows)")
                stop(alice)
                spawn_once(alice, DASK_PROJECT)
                server = alice.get("/hub/api/users/alice").json()["servers"][DASK_PROJECT]
                with Kernel(alice, server["url"], timeout=1800) as kernel:
                    kernel.run(DASK_IN_THE_KERNEL.format(starts=5, queries=args.queries))
                    ready = kernel.value("ready")
                    group_by = kernel.value("group_by")
                    dask_rows = kernel.value("dask_rows")
                stop(alice, DASK_PROJECT)
        finally:
            hub.stop()
            keycloak.stop()
            helper.stop()
            for project, member in enclaves.of_home(settings.home):  # the throw-away home's
                enclaves.remove(settings.home, project, [member])
    sandboxed, plain = (statistics.median(times[k]) for k in ("sandboxed", "plain"))
    spawn_median = statistics.median(spawns)
    tls, untls = (statistics.median(group_by[k]) for k in ("tls", "plain"))
    print(f"spawn: median {spawn_median:.2f} s, max {max(spawns):.2f} s (goal: median ≤ 3 s)")
    print(
        f"query over {rows[0]:,} ks4 and {rows[1]:,} pupils rows: sandboxed {sandboxed * 1000:.1f}"
        f" ms, plain {plain * 1000:.1f} ms, ratio {sandboxed / plain:.3f} (goal ≤ 1.05)"
    )
    print(f"gateway cluster of 2 workers ready: median {statistics.median(ready):.2f} s (≤ 5 s)")
    print(
        f"dask group-by over {dask_rows:,} pupils rows: gateway cluster {tls * 1000:.0f} ms, "
        f"plain LocalCluster {untls * 1000:.0f} ms, ratio {tls / untls:.3f} (goal ≤ 1.2)"
    )
    print(
        json.dumps(
            {
                "pupils": args.pupils,
                "spawns": [round(s, 3) for s in spawns],
                "spawn_median_s": round(spawn_median, 3),
                "query_rows": {"ks4": rows[0], "pupils": rows[1]},
                "query_sandboxed_ms": round(sandboxed * 1000, 2),
                "query_plain_ms": round(plain * 1000, 2),
                "query_ratio": round(sandboxed / plain, 4),
                "dask_ready_s": [round(s, 3) for s in ready],
                "dask_rows": dask_rows,
                "dask_gateway_ms": round(tls * 1000, 1),
                "dask_plain_ms": round(untls * 1000, 1),
                "dask_ratio": round(tls / untls, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
