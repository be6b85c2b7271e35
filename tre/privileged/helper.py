"""The privileged helper: the one process of the TRE that keeps root, and what asks it.

``tre up`` (as root) starts it first; the portal, the hub and provisioning, which run as the
unprivileged service accounts, ask it for the operations of :mod:`tre.privileged.operations`
over a Unix socket in ``<home>/run`` that only root and the group ``tre`` can open. It checks
who is asking from the kernel (``SO_PEERCRED``), not from the request: the services account
may ask for some operations, the provisioning account for others, nobody else for any.

Each request is handled in a child forked from a parent that holds no secret (it never reads a
key, and is started with an environment of a few ``TRE_*`` paths), so the output worker, forked
in turn and dropped to the project's account, inherits nothing worth reading. The helper adopts
what it starts (``PR_SET_CHILD_SUBREAPER``) and reaps it.

:func:`call` is how the TRE asks: in the same process when it is root already (``tre init``,
the tests) or when the home runs without separation (a developer's home made without root);
else through the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tre.exceptions import InvalidInput, PermissionDenied, ServiceUnavailable, TREError, by_name
from tre.privileged import accounts, operations
from tre.privileged.processes import failure
from tre.services import LocalServer

log = logging.getLogger(__name__)

SOCKET = "privileged.sock"
_HEADER = struct.Struct(">I")
MAX_REQUEST = 64 << 20
_PR_SET_CHILD_SUBREAPER = 36
#: The settings the helper is started with (paths only: it needs no secret).
ENVIRONMENT = ("TRE_HOME", "TRE_WORKSPACE_ENV", "TRE_LOG_LEVEL")


def run_dir(home: Path) -> Path:
    return Path(home) / "run"


def socket_path(home: Path) -> Path:
    return run_dir(home) / SOCKET


def separated(home: Path) -> bool:
    """Whether the home runs with its service accounts (made by ``tre init`` as root: its own
    folder is root's, in the services' group)."""
    try:
        info = Path(home).stat()
    except FileNotFoundError:
        return False
    return (
        accounts.service_accounts_exist()
        and info.st_uid == 0
        and info.st_gid == accounts.gid(accounts.SERVICE_GROUP)
    )


def context(home: Path, environ: Mapping[str, str] | None = None) -> operations.Context:
    from tre.config import Settings

    settings = Settings.from_environ({**(environ or os.environ), "TRE_HOME": str(home)})
    templates = Path(__file__).resolve().parents[2] / "notebooks_templates"
    return operations.Context(
        Path(home),
        Path(settings.workspace_env),
        templates if templates.is_dir() else None,
        enclave_network=settings.enclave_network,
        file_max_bytes=settings.workspace_file_max_mb << 20,
        notebook_output_bytes=settings.notebook_output_kb << 10,
    )


def call(home: Path, name: str, **args: Any) -> Any:
    """Have operation ``name`` done with ``args``: here when this process may (root, or a home
    without separation), else by the privileged helper."""
    if name not in operations.OPERATIONS:
        raise InvalidInput(f"There is no privileged operation {name!r}.")
    if accounts.running_as_root() or not (separated(home) or _a_service_account()):
        return operations.OPERATIONS[name].function(context(home), **args)
    return _ask(socket_path(home), name, args)


def _a_service_account() -> bool:
    """Whether this process is one of the TRE's service accounts (which never do an operation
    themselves, whatever the home looks like)."""
    names = (accounts.SERVICE, accounts.INGEST, accounts.PROVISION)
    return any(accounts.exists(n) and accounts.uid(n) == os.geteuid() for n in names)


def _ask(path: Path, name: str, args: Mapping[str, Any]) -> Any:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            _send(s, {"operation": name, "args": dict(args)})
            answer = _receive(s)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ServiceUnavailable(
            "The TRE's privileged helper is not running: start the TRE with `sudo tre up` (or "
            "`sudo tre privileged up`)."
        ) from None
    except OSError as e:
        raise ServiceUnavailable(f"The TRE's privileged helper did not answer ({e}).") from None
    if "error" in answer:
        raise by_name(answer["error"])(answer["message"])
    return answer["result"]


def _send(s: socket.socket, message: Any) -> None:
    data = json.dumps(message).encode()
    s.sendall(_HEADER.pack(len(data)) + data)


def _receive(s: socket.socket) -> Any:
    header = _exactly(s, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > MAX_REQUEST:
        raise InvalidInput("The message is too large.")
    return json.loads(_exactly(s, size))


def _exactly(s: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = s.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- the helper process ---------------------------------------------------------------------


def _caller(connection: socket.socket) -> str | None:
    """Who is on the other end, from the kernel: "root", "services", "provisioning" or None."""
    data = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", data)
    if uid == 0:
        return "root"
    if accounts.exists(accounts.SERVICE) and uid == accounts.uid(accounts.SERVICE):
        return operations.SERVICES
    if accounts.exists(accounts.PROVISION) and uid == accounts.uid(accounts.PROVISION):
        return operations.PROVISIONING
    return None


def _handle(connection: socket.socket, ctx: operations.Context) -> None:
    caller = _caller(connection)
    try:
        request = _receive(connection)
        name, args = request.get("operation"), request.get("args")
        found = operations.OPERATIONS.get(name) if isinstance(name, str) else None
        if found is None or not isinstance(args, dict):
            raise InvalidInput(f"There is no privileged operation {str(name)[:40]!r}.")
        if caller is None or (caller != "root" and caller not in found.callers):
            log.warning("refused %r to %s", name, caller or "an unknown account")
            raise PermissionDenied(f"The {name} operation is not for this account.")
        log.info("%s for %s", name, caller)
        answer: dict[str, Any] = {"result": found.function(ctx, **args)}
    except TREError as e:
        answer = {"error": type(e).__name__, "message": e.message}
    except TypeError:
        answer = {"error": "InvalidInput", "message": "The operation's arguments do not fit."}
    except Exception as e:  # the caller hears that it failed; the log says where
        log.error("a privileged operation failed: %s", failure(e))
        answer = {"error": "ServiceUnavailable", "message": f"It failed ({type(e).__name__})."}
    with contextlib.suppress(OSError):
        _send(connection, answer)


def serve(home: Path, environ: Mapping[str, str]) -> None:
    """Serve the operations for the TRE home ``home`` until SIGTERM or SIGINT (as root)."""
    if not accounts.running_as_root():
        raise PermissionDenied("The privileged helper runs as root (it starts workspaces).")
    ctx = context(home, environ)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    import tre.outputs.engine  # noqa: F401 - loaded once, so each output worker forks ready

    path = socket_path(home)
    run = run_dir(home)
    run.mkdir(mode=0o750, exist_ok=True)
    os.chown(run, 0, accounts.gid(accounts.SERVICE_GROUP))
    os.chmod(run, 0o750)  # noqa: S103 - the services' group reaches the socket
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chown(path, 0, accounts.gid(accounts.SERVICE_GROUP))
    os.chmod(path, 0o660)
    listener.listen(64)
    stopping: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _f: stopping.append(n))
    log.info("privileged helper ready on %s", path)
    try:
        while not stopping:
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([listener], [], [], 0.5)
                if ready:
                    connection, _ = listener.accept()
                    pid = os.fork()
                    if pid == 0:
                        listener.close()
                        for signum in (signal.SIGTERM, signal.SIGINT):
                            signal.signal(signum, signal.SIG_DFL)
                        code = 0
                        try:
                            _handle(connection, ctx)
                        except BaseException:
                            code = 1
                        finally:
                            connection.close()
                        os._exit(code)
                    connection.close()
            _reap()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Helper(LocalServer):
    """The privileged helper as ``tre up`` runs it: pid file and log in ``<home>/run``."""

    name = "Privileged helper"
    markers = (b"tre.privileged.helper",)
    start_timeout = 60
    account = None  # root: the one process of the TRE that is

    def __init__(self, home: Path, environ: Mapping[str, str]) -> None:
        self.home = Path(home)
        self.state_dir = run_dir(home)
        self.port = 0
        self.environ = {k: environ[k] for k in ENVIRONMENT if k in environ}
        # sbin: useradd, groupadd, usermod.
        self.environ.update(
            TRE_HOME=str(home), PATH="/usr/sbin:/usr/bin:/sbin:/bin", LANG="C.UTF-8"
        )

    @property
    def url(self) -> str:
        return f"unix:{socket_path(self.home)}"

    @property
    def file_stem(self) -> str:
        return "privileged"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tre.privileged.helper"]

    def environment(self) -> dict[str, str]:
        return dict(self.environ)

    def prepare(self) -> None:
        self.state_dir.mkdir(mode=0o750, exist_ok=True)

    def answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(socket_path(self.home)))
                return True
            except OSError:
                return False

    def start(self, timeout: float | None = None):
        if not accounts.running_as_root():
            raise PermissionDenied("The privileged helper is started by root (`sudo tre up`).")
        return super().start(timeout)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("TRE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    serve(Path(os.environ["TRE_HOME"]), os.environ)


if __name__ == "__main__":
    main()
