"""Dask through dask-gateway: one multi-tenant engine where each researcher's clusters of a
project run as their workspace's account, in their workspace's network enclave.

The gateway (``dask-gateway-server``, its configuration ``infra/jupyterhub/dask_gateway_config.py``
calling :func:`configure`) is a service the hub runs, as the hub's own unprivileged account, on
``127.0.0.1:<port>``: its HTTP API and, on the same port, the TLS connections of clients to
their schedulers (routed by SNI). A workspace's enclave lets out to that port too (the helper
adds it to the enclave's rules).

- :class:`ProjectAuthenticator`: a request carries the kernel's hub token. The hub says whose it
  is and for which server (its scopes hold exactly one ``access:servers!server=<user>/<project>``);
  the request must come from that researcher's enclave of that project (the address the proxy
  saw), and the project must be provisioned with them a member. The gateway's user is then
  ``<user>/<project>``: a cluster belongs to one researcher in one project.
- :class:`WorkspaceBackend`: scheduler and workers are started by the privileged helper
  (``start_dask``) as the workspace's account, in its sandbox and enclave, with the cluster's
  own TLS certificate and key (made by the gateway, written by the helper as that account).
  What a scheduler reports of its addresses is believed only when they are its enclave's.
  Options (cores and memory per worker, workers) are capped by the settings; idle clusters stop.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dask_gateway_server.auth import JupyterHubAuthenticator, User, unauthorized
from dask_gateway_server.backends.db_base import DBBackendBase
from dask_gateway_server.options import Float, Integer, Options
from traitlets import Unicode

from tre import privileged
from tre.config import Settings

SERVER_SCOPE = "access:servers!server="


def _settings() -> Settings:
    return Settings.from_environ()


class ProjectAuthenticator(JupyterHubAuthenticator):
    tre_home = Unicode(help="The TRE home whose projects' workspaces use the gateway.").tag(
        config=True
    )

    async def authenticate_and_handle(self, request, handler):
        # Every request is authenticated again (no cookie): where it comes from matters too.
        user = await self.authenticate(request)
        request["user"] = user
        return await handler(request)

    async def authenticate(self, request):
        token = self.get_token(request)
        if token is None:
            raise unauthorized("jupyterhub")
        answer = await self.session.get(
            f"{self.jupyterhub_api_url}/user", headers={"Authorization": f"token {token}"}
        )
        if answer.status >= 400:
            raise unauthorized("jupyterhub")
        data = await answer.json()
        username = data.get("name", "")
        servers = [
            s[len(SERVER_SCOPE) :] for s in data.get("scopes", []) if s.startswith(SERVER_SCOPE)
        ]
        if data.get("kind") != "user" or len(servers) != 1:
            self.log.warning("Refused a token that is not one workspace's (%s)", username)
            raise unauthorized("jupyterhub")
        owner, _, project = servers[0].partition("/")
        if owner != username or not project:
            raise unauthorized("jupyterhub")
        seen = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        allowed = await asyncio.to_thread(_enclave_address, self.tre_home, project, username)
        if not seen or seen != allowed:
            self.log.warning(
                "Refused %s's token for %s from %s (not that workspace's enclave)",
                username,
                project,
                seen or "an unknown address",
            )
            raise unauthorized("jupyterhub")
        why = await asyncio.to_thread(_refusal, project, username)
        if why:
            self.log.warning("Refused %s in %s: %s", username, project, why)
            raise unauthorized("jupyterhub")
        return User(f"{username}/{project}", groups=[project])


def _enclave_address(home: str, project: str, username: str) -> str | None:
    from tre.privileged import enclaves

    found = enclaves.find(home, project, username, _settings().enclave_network)
    return found.address if found else None


def _refusal(project: str, username: str) -> str | None:
    from tre.db import Database
    from tre.hub import refusal

    db = Database(_settings().metadata_url)
    try:
        return refusal(db, username, project)
    finally:
        db.dispose()


def _options() -> Options:
    settings = _settings()

    def handler(options: Any) -> dict[str, Any]:
        return {
            "worker_cores": options.worker_cores,
            "worker_threads": options.worker_cores,
            "worker_memory": int(options.worker_memory * 2**30),
            "cluster_max_workers": settings.dask_max_workers,
        }

    return Options(
        Integer(
            "worker_cores",
            default=1,
            min=1,
            max=settings.dask_worker_cores,
            label="Cores per worker",
        ),
        Float(
            "worker_memory",
            default=min(2, settings.dask_worker_memory_gb),
            min=0.25,
            max=settings.dask_worker_memory_gb,
            label="Memory per worker (GiB)",
        ),
        handler=handler,
    )


class WorkspaceBackend(DBBackendBase):
    """Schedulers and workers as the workspace's account, in its enclave (by the helper)."""

    tre_home = Unicode(help="The TRE home whose projects' workspaces use the gateway.").tag(
        config=True
    )
    gateway_port = Unicode(help="The port of the gateway's proxy (its API and TLS).").tag(
        config=True
    )

    def _owner(self, cluster) -> tuple[str, str]:
        username, _, project = cluster.username.partition("/")
        return username, project

    async def _call(self, cluster, operation: str, **args):
        username, project = self._owner(cluster)
        return await asyncio.to_thread(
            privileged.call,
            Path(self.tre_home),
            operation,
            username=username,
            project=project,
            **args,
        )

    def _process(self, cluster, role: str, worker: str = "", scheduler: str = "") -> dict:
        return {
            "role": role,
            "cluster": cluster.name,
            "worker": worker,
            "scheduler": scheduler,
            "token": cluster.token,
            "tls_cert": cluster.tls_cert.decode(),
            "tls_key": cluster.tls_key.decode(),
            "gateway_port": int(self.gateway_port),
            "threads": int(cluster.config.worker_threads),
            "memory": int(cluster.config.worker_memory),
            "heartbeat": float(self.cluster_heartbeat_period),
            "idle": float(cluster.config.idle_timeout),
        }

    async def do_start_cluster(self, cluster):
        started = await self._call(
            cluster, "start_dask", process=self._process(cluster, "scheduler")
        )
        yield {"pid": started["pid"]}

    async def do_check_clusters(self, clusters):
        return [await self._running(c, c.state) for c in clusters]

    async def do_stop_cluster(self, cluster):
        if cluster.state.get("pid"):
            await self._call(cluster, "stop_dask", pid=cluster.state["pid"])

    async def do_start_worker(self, worker):
        cluster = worker.cluster
        process = self._process(cluster, "worker", worker.name, cluster.scheduler_address)
        started = await self._call(cluster, "start_dask", process=process)
        yield {"pid": started["pid"]}

    async def do_check_workers(self, workers):
        return [await self._running(w.cluster, w.state) for w in workers]

    async def do_stop_worker(self, worker):
        if worker.state.get("pid"):
            await self._call(worker.cluster, "stop_dask", pid=worker.state["pid"])

    async def _running(self, cluster, state) -> bool:
        if not state.get("pid"):
            return False
        return await self._call(cluster, "dask_running", pid=state["pid"])

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """A scheduler's heartbeat, believed only if every address it reports is its own
        enclave's (the scheduler runs the researcher's code: it could name any address for
        the gateway's proxy to connect to)."""
        cluster = self.db.get_cluster(cluster_name)
        if cluster is not None:
            username, project = self._owner(cluster)
            own = await asyncio.to_thread(_enclave_address, self.tre_home, project, username)
            for key in ("api_address", "scheduler_address", "dashboard_address"):
                if msg.get(key) and not _at(msg[key], own):
                    self.log.warning(
                        "Cluster %s reported %s %s: stopped", cluster_name, key, msg[key]
                    )
                    await self.stop_cluster(cluster_name, failed=True)
                    return
        await super().on_cluster_heartbeat(cluster_name, msg)


def _at(address: str, host: str | None) -> bool:
    """Whether ``address`` (``tls://h:p``, ``h:p`` or ``http://h:p``) is on ``host``, at an
    unprivileged port."""
    if host is None:
        return False
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        return (
            parts.hostname is not None
            and ipaddress.ip_address(parts.hostname) == ipaddress.ip_address(host)
            and parts.port is not None
            and parts.port >= 1024
        )
    except ValueError:
        return False


def configure(c: Any, settings: Settings, port: int) -> None:
    """The gateway's configuration (``c``, dask-gateway-server's), for ``settings``' home."""
    c.DaskGateway.address = "127.0.0.1:0"  # its private API: the proxy in front of it
    c.Proxy.address = f"127.0.0.1:{port}"
    c.Proxy.tcp_address = f"127.0.0.1:{port}"
    c.DaskGateway.authenticator_class = "tre.hub.gateway.ProjectAuthenticator"
    c.ProjectAuthenticator.tre_home = str(settings.home)
    c.DaskGateway.backend_class = "tre.hub.gateway.WorkspaceBackend"
    c.WorkspaceBackend.tre_home = str(settings.home)
    c.WorkspaceBackend.gateway_port = str(port)
    c.WorkspaceBackend.db_url = "sqlite://"  # in memory: clusters stop with the gateway
    c.WorkspaceBackend.stop_clusters_on_shutdown = True
    c.WorkspaceBackend.cluster_options = _options()
    c.ClusterConfig.idle_timeout = settings.dask_idle_minutes * 60
    c.ClusterConfig.cluster_max_workers = settings.dask_max_workers
