"""The project's extracts, as DuckDB views and Dask DataFrames.

:func:`connect` returns a DuckDB connection that can read the project's extracts and nothing
else: extensions are neither installed nor loaded, only the extracts folder (and the
connection's own temporary folder) may be read, nothing may be written or attached outside
memory, and the configuration is locked so none of that can be undone with ``SET``. Each extract
is a view named after its dataset. This constrains SQL only; what the workspace's account may
open at all is decided by the operating system (see docs/workspaces.md).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from tre.exceptions import ConfigError, InvalidInput
from tre.sql import file_list, identifier, sandboxed_duckdb

MANIFEST = "manifest.json"
#: Workers of the local Dask cluster: one process per core, up to 2 (a workspace shares the
#: machine with the others).
DASK_WORKERS = 2


@dataclasses.dataclass(frozen=True)
class Workspace:
    project: str
    extracts: Path
    portal_url: str

    @classmethod
    def here(cls) -> Workspace:
        """The workspace this kernel runs in, from the environment the hub gave it."""
        missing = [v for v in ("TRE_PROJECT", "TRE_EXTRACTS") if not os.environ.get(v)]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                "tre.workspace runs inside a TRE workspace, started from the hub."
            )
        return cls(
            os.environ["TRE_PROJECT"],
            Path(os.environ["TRE_EXTRACTS"]),
            os.environ.get("TRE_PORTAL_URL", "").rstrip("/"),
        )

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.extracts / MANIFEST).read_text())
        except FileNotFoundError:
            raise InvalidInput(
                f"Project {self.project} has no extracts yet: ask a TRE administrator whether "
                "it is provisioned."
            ) from None

    def files_by_table(self) -> dict[str, list[str]]:
        """The Parquet files of each extract (the manifest read once)."""
        return {
            name: [str(self.extracts / f["path"]) for f in d["files"]]
            for name, d in self.manifest()["datasets"].items()
        }

    def files(self, table: str) -> list[str]:
        found = self.files_by_table()
        if table not in found:
            raise InvalidInput(
                f"Project {self.project} has no extract {table!r}; it has "
                f"{', '.join(sorted(found))}."
            )
        return found[table]


def tables() -> dict[str, dict[str, Any]]:
    """The project's extracts: for each, its title, rows and columns (name, type, meaning)."""
    return {
        name: {"title": d["title"], "rows": d["rows"], "columns": d["columns"]}
        for name, d in Workspace.here().manifest()["datasets"].items()
    }


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over the project's extracts (one view per extract), sandboxed
    (:func:`tre.sql.sandboxed_duckdb`: the extracts folder is all it reads)."""
    workspace = Workspace.here()
    extracts = workspace.files_by_table()
    con = sandboxed_duckdb(workspace.extracts, Path.home() / ".duckdb-tmp", threads=threads)
    for name, paths in extracts.items():
        con.execute(
            f"CREATE VIEW {identifier(name)} AS SELECT * FROM read_parquet({file_list(paths)}, "
            "hive_partitioning = false)"
        )
    return con


_cluster_lock = threading.Lock()
_client = None
#: The name of the kernel's gateway cluster, while it has one.
_gateway_cluster: str | None = None
#: How long :func:`cluster` waits for its scheduler, then for its workers.
WORKERS_TIMEOUT_S = 120


def cluster(workers: int = DASK_WORKERS, cores: int | None = None, memory_gb: float | None = None):
    """The kernel's Dask client, on a cluster started the first time.

    In a workspace started by the hub, the cluster is the hub's dask-gateway's: ``workers``
    workers of ``cores`` cores and ``memory_gb`` GiB each (unset: 1 core, 2 GiB or the most
    the project's approval grants, if less; more than it grants is refused), run as this
    workspace's account in its network enclave, with TLS from credentials made for this
    cluster; it stops when this kernel closes it or ends, or when idle. Elsewhere (outside a
    hub), a local cluster on loopback, TLS with credentials of its own held in this kernel's
    memory. Either way, no HTTP route is served and no other process joins it."""
    global _client
    with _cluster_lock:
        if _client is not None and _client.status not in ("closed", "closing"):
            return _client
        if os.environ.get("DASK_GATEWAY__ADDRESS"):
            _client = _gateway_client(workers, cores, memory_gb)
        else:
            _client = _local_cluster(max(1, min(workers, os.cpu_count() or 1)))
        return _client


def _gateway_client(workers: int, cores: int | None, memory_gb: float | None):
    """A client of a new gateway cluster. Not dask-gateway's ``GatewayCluster``: it connects
    through the gateway's TLS proxy, which no enclave reaches (it waits out Dask's connect
    timeout, 30 s, then carries on). The scheduler is in this workspace's enclave, where it
    said (in the folder the TRE keeps its certificate in): reached directly, with the cluster's
    credentials."""
    global _gateway_cluster
    from dask.distributed import Client
    from dask_gateway import Gateway
    from dask_gateway.client import ClusterStatus

    with Gateway() as gateway:
        asked = {"worker_cores": cores, "worker_memory": memory_gb}
        name = gateway.submit(**{k: v for k, v in asked.items() if v is not None})
        _gateway_cluster = name
        try:
            deadline = time.monotonic() + WORKERS_TIMEOUT_S
            report = gateway.get_cluster(name, wait=True)
            while report.status is not ClusterStatus.RUNNING:
                if report.status in (ClusterStatus.FAILED, ClusterStatus.STOPPED):
                    raise ConfigError(f"The Dask cluster {name} failed to start: ask for help.")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"The Dask cluster {name} did not start in time.")
                time.sleep(0.1)
                report = gateway.get_cluster(name, wait=True)
            gateway.scale_cluster(name, workers)
            where = Path.home() / f".dask-gateway-{name}" / "scheduler"
            client = Client(where.read_text().strip(), security=report.security)
            client.wait_for_workers(workers, timeout=WORKERS_TIMEOUT_S)
            return client
        except BaseException:
            _stop_gateway_cluster()
            raise


def _stop_gateway_cluster() -> None:
    global _gateway_cluster
    if _gateway_cluster is not None:
        from dask_gateway import Gateway

        with Gateway() as gateway:
            gateway.stop_cluster(_gateway_cluster)
        _gateway_cluster = None


# A kernel that ends with its cluster running stops it (the gateway's idle timeout would too).
atexit.register(_stop_gateway_cluster)


def _local_cluster(workers: int):
    import dask
    from dask.distributed import Client, LocalCluster
    from distributed.security import Security

    security = Security.temporary()
    # Their HTTP servers (which TLS does not cover) serve nothing: no logs, task names, call
    # stacks or metrics for another process of the machine to read.
    dask.config.set({"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []})
    return Client(
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            host="127.0.0.1",
            protocol="tls://",
            security=security,
            dashboard_address=None,
            local_directory=str(Path.home() / ".dask-tmp"),
        ),
        security=security,
    )


def close_cluster() -> None:
    """Stop the kernel's cluster (a gateway's is shut down, freeing its workers)."""
    global _client
    with _cluster_lock:
        if _client is not None:
            _client.close()
            if _gateway_cluster is None and _client.cluster is not None:
                _client.cluster.close()
        _stop_gateway_cluster()
        _client = None


def dask(table: str, columns: list[str] | None = None):
    """An extract as a Dask DataFrame computed on the kernel's local cluster: a partition per
    file of the extract, row groups split so that each worker gets some of a single file."""
    import dask.dataframe as dd

    files = Workspace.here().files(table)
    cluster()
    # The files hold their partition column: folder names (year=2019) are not read as columns.
    options = {"columns": columns, "dataset": {"partitioning": None}}
    frame = dd.read_parquet(files, **options)
    if frame.npartitions < DASK_WORKERS:
        frame = dd.read_parquet(files, split_row_groups=True, **options)
    return frame
