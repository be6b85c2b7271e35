"""Servers the local profile runs as detached processes on 127.0.0.1 (Keycloak, the portal, the
hub).

A :class:`LocalServer` is known by its pid file in the TRE home: ``start`` launches it in a
session of its own (so it outlives the command that started it and is nobody's zombie), with
its output appended to a log file, then waits until it answers; ``stop`` ends its process
group. A pid file whose process is gone, or is some other program, counts as not running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from tre.exceptions import ServiceUnavailable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Status:
    running: bool
    ready: bool
    pid: int | None
    url: str


class LocalServer:
    """What every local server shares; subclasses say how to run and probe theirs."""

    #: How people call it, in messages.
    name = "server"
    #: The environment variable that sets its port, named when the port is taken.
    port_variable = ""
    #: Bytes that must appear in ``/proc/<pid>/cmdline`` for the pid file to be believed.
    markers: tuple[bytes, ...] = ()
    #: How long ``start`` waits for the server to answer, in seconds.
    start_timeout: float = 60
    #: The OS account it runs as when started by root (None: root's own, the privileged
    #: helper only).
    account: str | None = "tre"

    port: int
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.file_stem}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.file_stem}.log"

    @property
    def file_stem(self) -> str:
        return self.name.lower()

    # -- what subclasses provide ----------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def working_dir(self) -> Path:
        return self.state_dir

    def prepare(self) -> None:
        """Anything to do before the first start (unpacking, configuration)."""

    def answers(self) -> bool:
        raise NotImplementedError

    # -- running ----------------------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            fd = os.open(self.pid_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # none, or a link (never followed)
            return None
        try:
            pid = int(os.read(fd, 32).decode().strip())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        finally:
            os.close(fd)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            owner = Path(f"/proc/{pid}").stat().st_uid
        except OSError:
            return None
        if self.account is not None and os.geteuid() == 0:
            # The pid file is in the account's own folder: root believes it only for a
            # process of that account.
            from tre.privileged import accounts

            if not accounts.exists(self.account) or owner != accounts.uid(self.account):
                return None
        return pid if any(m in cmdline for m in self.markers) else None

    def status(self) -> Status:
        pid = self.pid()
        return Status(
            running=pid is not None, ready=pid is not None and self.answers(), pid=pid, url=self.url
        )

    def start(self, timeout: float | None = None) -> Status:
        """Start the server in the background (or find it running) and wait until it answers."""
        timeout = self.start_timeout if timeout is None else timeout
        current = self.status()
        if current.ready:
            return current
        if current.running:
            return self.wait_ready(current.pid, timeout)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise ServiceUnavailable(
                    f"Port {self.port} on 127.0.0.1 is already in use by another program. "
                    f"Stop it, or set {self.port_variable} to a free port."
                )
        if os.geteuid() == 0 and self.account is not None:
            # As its account: root never writes in a folder a service account owns.
            from tre.privileged import accounts
            from tre.privileged.processes import Limits, call_as

            limits = Limits(cpu_seconds=3600, memory_bytes=8 << 30, wall_seconds=3600)
            call_as(accounts.Account.named(self.account), limits, self._prepare)
        else:
            self._prepare()
        # A short-lived shell starts the server in the background and prints its pid.
        detach = '"$@" </dev/null >>"$TRE_SERVER_LOG" 2>&1 & echo $!'
        environment = {**self.environment(), "TRE_SERVER_LOG": str(self.log_file)}
        if os.geteuid() == 0 and self.account is not None:
            # As its account: root's cache folder (not the account's own), and its state
            # folder as its home (root's is closed to it).
            from tre.config import Settings

            cache = Settings.from_environ(environment).cache_dir
            environment.setdefault("TRE_CACHE_DIR", str(cache))
            environment.update(HOME=str(self.state_dir), USER=self.account, LOGNAME=self.account)
        launcher = subprocess.run(
            ["sh", "-c", detach, "server", *self.command()],
            cwd=self.working_dir(),
            env=environment,
            capture_output=True,
            text=True,
            start_new_session=True,
            check=True,
            **self._as_account(),
        )
        pid = int(launcher.stdout.strip())
        self._write_pid(pid)
        return self.wait_ready(pid, timeout)

    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.prepare()

    def _write_pid(self, pid: int) -> None:
        """The pid file, never through a link (root writes it in the account's folder)."""
        self.pid_file.unlink(missing_ok=True)
        fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"{pid}\n")

    def _as_account(self) -> dict:
        """What makes the server run as its account when root starts it."""
        if os.geteuid() != 0 or self.account is None:
            return {}
        from tre.privileged import accounts

        account = accounts.Account.named(self.account)
        return {
            "user": account.uid,
            "group": account.gid,
            "extra_groups": list(account.groups[1:]),
            "umask": 0o027,
        }

    def wait_ready(self, pid: int | None, timeout: float) -> Status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return Status(True, True, pid, self.url)
            if pid is not None and not Path(f"/proc/{pid}").exists():
                self.pid_file.unlink(missing_ok=True)
                raise ServiceUnavailable(
                    f"{self.name} stopped during start-up. Its log is {self.log_file}:\n"
                    + self.log_tail()
                )
            time.sleep(0.5)
        raise ServiceUnavailable(
            f"{self.name} did not become ready within {timeout:.0f} s. "
            f"Its log is {self.log_file}:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 15) -> str:
        """The end of the log, read without following a link (root reads it in the server's
        account's own folder), at most its last 8 KiB."""
        try:
            fd = os.open(self.log_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return "(no log)"
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return "(no log)"
            os.lseek(fd, max(0, info.st_size - 8192), os.SEEK_SET)
            text = os.read(fd, 8192).decode(errors="replace")
        finally:
            os.close(fd)
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> bool:
        """Stop the server if it runs. Return whether one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            group = pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


class HomeServer(LocalServer):
    """A server of one TRE home (the portal, the hub), run with the settings of the command
    that started it; its pid file and log in ``<home>/<folder>``."""

    #: The folder of the home holding its state, and the setting giving its URL.
    folder = ""
    url_setting = ""
    default_port = 8000

    def __init__(self, home: Path, url: str, environ: Mapping[str, str]) -> None:
        self.state_dir = Path(home) / self.folder
        self.port = urlsplit(url).port or self.default_port
        self.environ = {**environ, "TRE_HOME": str(home)}

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None):
        url = getattr(settings, cls.url_setting)
        return cls(settings.home, url, os.environ if environ is None else environ)

    def environment(self) -> dict[str, str]:
        return dict(self.environ)
