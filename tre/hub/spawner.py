"""The spawner of project workspaces: the hub (which runs as the unprivileged ``tre`` account)
asks the privileged helper to start, watch and stop each workspace server
(:mod:`tre.privileged.operations`: ``start_workspace``, ``workspace_running``,
``stop_workspace``), as JupyterHub's sudospawner does for its own mediator.

The helper runs the server under the researcher's account for that project, in the
project's network enclave (:mod:`tre.privileged.enclaves`: the server listens on the enclave's
address, where the hub's proxy reaches it, and reaches only the hub and the portal), in a
sandbox of its own (private ``/tmp`` and ``/dev/shm``, read-only system, its folder the only
place it writes, no new privileges, only the project's group), with the environment the hub
gives it (its API token and URLs) and what the TRE adds: ``TRE_PROJECT``, ``TRE_EXTRACTS``
(the project's extracts folder) and ``TRE_PORTAL_URL`` (the TRE's API). No path or command
comes from the hub: the helper builds them from its own settings.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from traitlets import Integer, Unicode

from tre import privileged

POLL_S = 0.05


class WorkspaceSpawner(Spawner):
    """One project's workspace for one researcher: the server name is the project id."""

    tre_home = Unicode(help="The TRE home whose projects the workspaces belong to.").tag(
        config=True
    )
    portal_url = Unicode(help="The TRE's portal, whose API the workspace client calls.").tag(
        config=True
    )
    gateway_url = Unicode(help="The hub's dask-gateway, where the workspace's Dask runs.").tag(
        config=True
    )
    pid = Integer(0, help="The process of the workspace's sandbox, once started.")

    def _call(self, operation: str, **args):
        return privileged.call(
            Path(self.tre_home), operation, username=self.user.name, project=self.name, **args
        )

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env["TRE_PORTAL_URL"] = self.portal_url
        if self.gateway_url:
            env["TRE_DASK_GATEWAY_URL"] = self.gateway_url
        return env

    async def start(self):
        self.port = random_port()
        # The hub's own environment is not passed on: only what get_env() made for this server.
        env = {k: v for k, v in self.get_env().items() if isinstance(v, str)}
        started = await asyncio.to_thread(self._call, "start_workspace", environment=env)
        self.pid = started["pid"]
        await self._listening(started["address"])
        return (started["address"], self.port)

    async def _listening(self, address: str) -> None:
        """Wait until the server accepts connections (or its sandbox ends), polling every
        :data:`POLL_S`: the hub's own check backs off exponentially (0.2, 0.4, 0.8, 1.6 s…),
        which would add up to a second and a half to a start of two."""
        deadline = time.monotonic() + self.start_timeout
        checked = time.monotonic()
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(address, self.port)
            except OSError:
                if time.monotonic() - checked > 1:
                    checked = time.monotonic()
                    if await self.poll() is not None:
                        return  # ended: the hub reports the failed start
                await asyncio.sleep(POLL_S)
                continue
            writer.close()
            return

    async def poll(self):
        if not self.pid:
            return 0
        running = await asyncio.to_thread(self._call, "workspace_running", pid=self.pid)
        return None if running else 0

    async def stop(self, now=False):
        # Every process of the account, which serves this workspace only: the server and
        # whatever it started (kernels, terminals).
        await asyncio.to_thread(self._call, "stop_workspace")
        self.pid = 0

    def get_state(self):
        state = super().get_state()
        if self.pid:
            state["pid"] = self.pid
        return state

    def load_state(self, state):
        super().load_state(state)
        self.pid = state.get("pid", 0)

    def clear_state(self):
        super().clear_state()
        self.pid = 0
