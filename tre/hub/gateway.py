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
  Options (cores and memory per worker, workers) are capped by what the project's approval
  grants (``compute`` in its specification, narrowed by custodians; unset: the settings);
  idle clusters stop.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from dask_gateway_server.auth import JupyterHubAuthenticator, User, unauthorized
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import DBBackendBase
from dask_gateway_server.options import Float, Integer, Options
from traitlets import Unicode

from tre import privileged
from tre.config import Settings
from tre.projects.spec import Compute

SERVER_SCOPE = "access:servers!server="
#: The most clusters one researcher may have running in one project at once.
CLUSTERS_EACH = 2
#: One lock per gateway user (researcher/project) around counting and making clusters.
_STARTING: dict[str, asyncio.Lock] = {}


@functools.cache
def _settings() -> Settings:
    """The gateway process's settings, read once (each request is checked against them)."""
    return Settings.from_environ()


@functools.cache
def _database():
    """The metadata database, opened once for the gateway process's lifetime."""
    from tre.db import Database

    settings = _settings()
    return Database.of_settings(settings)


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
    from tre.hub import refusal

    return refusal(_database(), username, project)


def _granted(project: str) -> Compute:
    """The Dask clusters the project's approval grants (the settings where it says nothing)."""
    from tre import projects

    found = projects.get(_database(), project)
    return found.approved().compute.granted(_settings(), found.spec_object().compute)


async def options_for(user: User) -> Options:
    """The options of a cluster of ``user`` (``<researcher>/<project>``), each capped by what
    the project's approval grants."""
    granted = await asyncio.to_thread(_granted, user.name.partition("/")[2])

    def handler(options: Any) -> dict[str, Any]:
        return {
            "worker_cores": options.worker_cores,
            "worker_threads": options.worker_cores,
            "worker_memory": int(options.worker_memory * 2**30),
            "cluster_max_workers": granted.workers,
        }

    return Options(
        Integer(
            "worker_cores", default=1, min=1, max=granted.worker_cores, label="Cores per worker"
        ),
        Float(
            "worker_memory",
            default=min(2.0, granted.worker_memory_gb),
            min=0.25,
            max=granted.worker_memory_gb,
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

    async def start_cluster(self, user, cluster_options):
        """A new cluster, unless the researcher has :data:`CLUSTERS_EACH` running already
        (counted and made under one lock per researcher and project: requests sent at once
        are counted one after the other, found by the review)."""
        async with _STARTING.setdefault(user.name, asyncio.Lock()):
            if len(await self.list_clusters(username=user.name)) >= CLUSTERS_EACH:
                raise PublicException(
                    f"You have {CLUSTERS_EACH} Dask clusters running in this project already: "
                    "shut one down (tre.workspace.close_cluster()) first."
                )
            return await super().start_cluster(user, cluster_options)

    async def do_start_cluster(self, cluster):
        process = self._process(cluster, "scheduler")
        yield await self._call(cluster, "start_dask", process=process)
        # (its pid, and the only addresses its heartbeats may report)

    async def do_check_clusters(self, clusters):
        return [await self._running(c, c.state) for c in clusters]

    async def do_stop_cluster(self, cluster):
        if cluster.state.get("pid"):
            await self._call(cluster, "stop_dask", **self._which(cluster.state))

    async def do_start_worker(self, worker):
        cluster = worker.cluster
        process = self._process(cluster, "worker", worker.name, cluster.scheduler_address)
        started = await self._call(cluster, "start_dask", process=process)
        yield {"pid": started["pid"], "started": started["started"]}

    async def do_check_workers(self, workers):
        return [await self._running(w.cluster, w.state) for w in workers]

    async def do_stop_worker(self, worker):
        if worker.state.get("pid"):
            await self._call(worker.cluster, "stop_dask", **self._which(worker.state))

    @staticmethod
    def _which(state) -> dict[str, int]:
        """A Dask process as the helper knows it: its pid and when it started (a pid reused
        since is another process)."""
        return {"pid": int(state["pid"]), "started": int(state.get("started") or 0)}

    async def _running(self, cluster, state) -> bool:
        if not state.get("pid"):
            return False
        return await self._call(cluster, "dask_running", **self._which(state))

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """A scheduler's heartbeat, believed only if the addresses it reports are those the
        helper chose for it, in its own enclave (the scheduler runs the researcher's code: it
        could name any address for the gateway's proxy to connect to)."""
        cluster = self.db.get_cluster(cluster_name)
        if cluster is not None:
            state = cluster.state or {}
            expected = {
                "scheduler_address": state.get("scheduler"),
                "api_address": state.get("api"),
            }
            wrong = [k for k, v in expected.items() if (msg.get(k) or "") != (v or "")]
            if wrong or not state.get("scheduler"):
                self.log.warning(
                    "Cluster %s reported %s, not %s: stopped",
                    cluster_name,
                    {k: msg.get(k) for k in expected},
                    expected,
                )
                await self.stop_cluster(cluster_name, failed=True)
                return
        # No dashboard is routed through the gateway's proxy, whatever the scheduler says (its
        # HTTP server serves nothing; a route would let any enclave reach this one's address).
        await super().on_cluster_heartbeat(cluster_name, {**msg, "dashboard_address": ""})


def configure(c: Any, settings: Settings, port: int, tls_port: int) -> None:
    """The gateway's configuration (``c``, dask-gateway-server's), for ``settings``' home:
    its API at ``port`` (which enclaves reach), its proxy's TLS routing at ``tls_port`` (which
    they do not: a kernel reaches its own scheduler directly, in its enclave, and no enclave
    reaches another's through the proxy)."""
    c.DaskGateway.address = "127.0.0.1:0"  # its private API: the proxy in front of it
    c.Proxy.address = f"127.0.0.1:{port}"
    c.Proxy.tcp_address = f"127.0.0.1:{tls_port}"
    c.DaskGateway.authenticator_class = "tre.hub.gateway.ProjectAuthenticator"
    c.ProjectAuthenticator.tre_home = str(settings.home)
    c.DaskGateway.backend_class = "tre.hub.gateway.WorkspaceBackend"
    c.WorkspaceBackend.tre_home = str(settings.home)
    c.WorkspaceBackend.gateway_port = str(port)
    c.WorkspaceBackend.db_url = "sqlite://"  # in memory: clusters stop with the gateway
    c.WorkspaceBackend.stop_clusters_on_shutdown = True
    c.WorkspaceBackend.cluster_options = options_for
    c.ClusterConfig.idle_timeout = settings.dask_idle_minutes * 60
