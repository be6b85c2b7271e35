"""The spawner of project workspaces: JupyterHub's local-process spawner, run as the workspace's
own OS account (:func:`tre.hub.ensure_account`) from the workspace virtualenv.

A workspace's environment tells :mod:`tre.workspace` where it is: ``TRE_PROJECT``,
``TRE_EXTRACTS`` (the project's extracts folder) and ``TRE_PORTAL_URL`` (the TRE's API)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import time
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Unicode

from tre.home import Home
from tre.projects import extracts

POLL_S = 0.05


class WorkspaceSpawner(LocalProcessSpawner):
    """One project's workspace for one researcher: the server name is the project id."""

    tre_home = Unicode(help="The TRE home whose projects the workspaces belong to.").tag(
        config=True
    )
    workspace_env = Unicode(help="The virtualenv workspaces run from.").tag(config=True)
    portal_url = Unicode(help="The TRE's portal, whose API the workspace client calls.").tag(
        config=True
    )
    templates = Unicode(help="Notebooks copied into each new workspace.").tag(config=True)

    async def start(self):
        from tre.hub import ensure_account

        self.account, self.folder = ensure_account(
            Home(Path(self.tre_home)), self.user.name, self.name
        )
        self._copy_templates()
        started = await super().start()
        await self._listening()
        return started

    async def _listening(self) -> None:
        """Wait until the server accepts connections (or its process ends), polling every
        :data:`POLL_S`: the hub's own check backs off exponentially (0.2, 0.4, 0.8, 1.6 s…),
        which would add up to a second and a half to a start of two."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                _, writer = await asyncio.open_connection(self.ip or "127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(POLL_S)
                continue
            writer.close()
            return

    def _copy_templates(self) -> None:
        """The notebook templates, into a workspace that does not have them yet (a researcher's
        edited copy is never overwritten; a deleted one comes back at the next start)."""
        if not self.templates:
            return
        for template in sorted(Path(self.templates).glob("*.ipynb")):
            target = self.folder / template.name
            if not target.exists():
                shutil.copyfile(template, target)
                os.chown(target, self.account.pw_uid, self.account.pw_gid)
                target.chmod(0o600)

    async def stop(self, now=False):
        await super().stop(now=now)
        # And whatever the server started (terminals, kernels, language servers): every process
        # of the account, which serves this workspace only.
        from tre.hub import workspace_account

        try:
            uid = pwd.getpwnam(workspace_account(self.user.name, self.name)).pw_uid
        except KeyError:
            return
        for pid in _processes_of(uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def make_preexec_fn(self, name):
        return set_user_setuid(self.account.pw_name)

    def user_env(self, env):
        env["USER"] = env["LOGNAME"] = self.account.pw_name
        env["HOME"] = str(self.folder)
        env["SHELL"] = "/bin/sh"
        env["PATH"] = f"{self.workspace_env}/bin:/usr/bin:/bin"
        env["TRE_PROJECT"] = self.name
        env["TRE_EXTRACTS"] = str(
            extracts.folder(Home(Path(self.tre_home)), self.name) / "extracts"
        )
        env["TRE_PORTAL_URL"] = self.portal_url
        return env


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
    return found
