"""Running something as another OS account: a function in a forked child, or a server in a
sandbox of its own.

:func:`call_as` forks, and in the child drops to the account (its own groups only), sets
``no_new_privs``, umask 077 and the resource limits, empties the environment and closes every
file descriptor but the one it answers on, then runs the function and sends back its JSON-ready
result. The parent waits no longer than the wall-clock limit. The child inherits the parent's
memory: it forks from the privileged helper, which holds no secret (it never reads a key).

:func:`sandboxed_command` wraps a server's command in bubblewrap: a private ``/tmp`` and
``/dev/shm``, the root file system read-only and ``nosuid``/``nodev``, one folder writable, its
own PID namespace; then ``setpriv`` drops to the account with ``no_new_privs``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import json
import os
import platform
import resource
import select
import signal
import struct
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tre.exceptions import InvalidInput, LimitExceeded, ServiceUnavailable, TREError, by_name
from tre.privileged.accounts import Account

_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
PRLIMIT = "/usr/bin/prlimit"
#: What a child's empty environment keeps.
BASE_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a child may use before it is stopped."""

    cpu_seconds: int
    memory_bytes: int
    wall_seconds: float
    file_bytes: int = 1 << 30
    #: The most processes (and threads) its account may have at once; 0: not limited here
    #: (the services' own accounts run many already).
    processes: int = 0
    #: Lower priority than the services (pages stay quick while outputs compute).
    nice: int = 0

    def apply(self) -> None:
        """Set them on this process (in the child, before it runs anything)."""
        if self.nice:
            os.nice(self.nice)
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.processes:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))


def no_new_privileges() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def become(account: Account, groups: Sequence[int] | None = None) -> None:
    """Drop this process to ``account`` for good (as root): its groups (or ``groups``), its
    gid and uid, no new privileges, umask 077."""
    if os.geteuid() == 0:
        os.setgroups(list(account.groups if groups is None else groups))
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
    no_new_privileges()
    os.umask(0o077)


def call_as(
    account: Account | None,
    limits: Limits,
    function: Callable[..., Any],
    *args: Any,
    environment: dict[str, str] | None = None,
) -> Any:
    """``function(*args)`` in a forked child as ``account`` (None: the caller's own account,
    when the TRE runs without root), within ``limits``; its result, which must be JSON. A
    :class:`~tre.exceptions.TREError` raised in the child is raised again here with its
    message; anything else becomes ServiceUnavailable without the child's details (they may
    quote the data), which go to the child's standard error."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 0
        try:
            os.close(reader)
            _child_setup(writer, account, limits, environment)
            answer: dict[str, Any] = {"result": function(*args)}
        except TREError as e:
            answer = {"error": type(e).__name__, "message": e.message, "code": e.exit_code}
        except MemoryError:
            answer = {"limit": "memory"}
        except BaseException as e:
            answer = {"error": "failed", "message": type(e).__name__}
            with contextlib.suppress(Exception):
                # Its kind and where, never its text: that may quote the data, or be written
                # by whoever sent the request.
                os.write(2, f"a computation failed: {failure(e)}\n".encode())
            status = 1
        try:
            data = json.dumps(answer).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(writer, view) :]
        except BaseException:
            status = 2
        os._exit(status)
    os.close(writer)
    return _collect(pid, reader, limits)


def failure(error: BaseException) -> str:
    """An exception as the TRE's logs may show it: its kind and the line it came from."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}"


def _child_setup(
    writer: int, account: Account | None, limits: Limits, environment: dict[str, str] | None
) -> None:
    os.closerange(3, writer)
    os.closerange(writer + 1, _max_fd())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(environment or BASE_ENVIRONMENT)
    if account is not None:
        become(account)
    else:
        no_new_privileges()
        os.umask(0o077)
    limits.apply()


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if 0 < soft < 1 << 20 else 1 << 16


def _collect(pid: int, reader: int, limits: Limits) -> Any:
    chunks, deadline, timed_out = [], time.monotonic() + limits.wall_seconds, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([reader], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(reader, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(reader)
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        raise LimitExceeded("time")
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL):
        raise LimitExceeded("cpu")
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        # Killed, or out of memory before it could answer.
        raise LimitExceeded("memory") from None
    if "limit" in answer:
        raise LimitExceeded(answer["limit"])
    if "error" in answer:
        if answer["error"] == "InvalidInput":
            raise InvalidInput(answer["message"])
        if answer["error"] == "failed":
            raise ServiceUnavailable(
                f"The computation failed ({answer['message']}). If it happens again, ask a TRE "
                "administrator: the details are in the TRE's log."
            )
        raise by_name(answer["error"])(answer["message"])
    return answer["result"]


#: The most processes a sandboxed account may have at once (a fork bomb stops there).
SANDBOX_PROCESSES = 512
_CLONE_NEWUSER = 0x10000000
_AUDIT_ARCH_X86_64 = 0xC000003E
_SECCOMP_ALLOW, _SECCOMP_KILL, _SECCOMP_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def no_user_namespaces() -> bytes | None:
    """A seccomp program (classic BPF, as bubblewrap's ``--seccomp`` takes it) that refuses to
    make user namespaces: ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` fail with EPERM,
    ``clone3`` (whose flags a filter cannot read) with ENOSYS (the C library then uses
    ``clone``), other architectures' and x32 system calls kill the process. None where the
    machine is not x86-64 (the program is written for its system call numbers)."""
    if platform.machine() != "x86_64":
        return None
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    unshare, clone, clone3 = 272, 56, 435
    return b"".join(
        [
            _bpf(load, 0, 0, 4),  # 0: the architecture
            _bpf(jeq, 1, 0, _AUDIT_ARCH_X86_64),  # 1
            _bpf(ret, 0, 0, _SECCOMP_KILL),  # 2
            _bpf(load, 0, 0, 0),  # 3: the system call
            _bpf(jge, 0, 1, 0x40000000),  # 4: x32
            _bpf(ret, 0, 0, _SECCOMP_KILL),  # 5
            _bpf(jeq, 4, 0, unshare),  # 6 → 11
            _bpf(jeq, 3, 0, clone),  # 7 → 11
            _bpf(jeq, 1, 0, clone3),  # 8 → 10
            _bpf(ret, 0, 0, _SECCOMP_ALLOW),  # 9
            _bpf(ret, 0, 0, _SECCOMP_ERRNO | errno.ENOSYS),  # 10
            _bpf(load, 0, 0, 16),  # 11: its first argument (flags)
            _bpf(jset, 0, 1, _CLONE_NEWUSER),  # 12
            _bpf(ret, 0, 0, _SECCOMP_ERRNO | errno.EPERM),  # 13
            _bpf(ret, 0, 0, _SECCOMP_ALLOW),  # 14
        ]
    )


def sandboxed(
    account: Account,
    command: Sequence[str],
    *,
    writable: Sequence[Path],
    readable: Sequence[Path] = (),
    environment: dict[str, str],
    cwd: Path | None = None,
    network: Callable[[list[str]], list[str]] | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start ``command`` in :func:`sandboxed_command`'s sandbox, with the seccomp program of
    :func:`no_user_namespaces` (as root); with ``network`` (e.g. an enclave's
    :meth:`~tre.privileged.enclaves.Enclave.inside`), in the network namespace it enters."""
    program = no_user_namespaces()
    fd = None
    if program is not None:
        fd = os.memfd_create("tre-seccomp", 0)
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    try:
        args = sandboxed_command(account, command, writable=writable, readable=readable, seccomp=fd)
        if network is not None:
            args = network(args)
        return subprocess.Popen(
            args,
            env=environment,
            cwd=cwd,
            pass_fds=() if fd is None else (fd,),
            start_new_session=True,
            **popen,
        )
    finally:
        if fd is not None:
            os.close(fd)


def sandboxed_command(
    account: Account,
    command: Sequence[str],
    *,
    writable: Sequence[Path],
    readable: Sequence[Path] = (),
    groups: Sequence[int] | None = None,
    seccomp: int | None = None,
) -> list[str]:
    """``command`` run by bubblewrap (as root) in a sandbox, then by setpriv as ``account``:
    its own mount and PID namespaces; the root file system read-only, ``nosuid`` and
    ``nodev``; a private ``/tmp``, ``/dev/shm`` and ``/run`` (no service's Unix socket);
    ``writable`` folders bound writable (still nosuid, nodev); no new privileges; only
    ``account``'s own groups (or ``groups``); at most :data:`SANDBOX_PROCESSES` processes;
    with ``seccomp`` (a descriptor of :func:`no_user_namespaces`), no user namespace."""
    args = [BWRAP, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    tmp = Path("/tmp")  # noqa: S108 - the sandbox's own, a tmpfs of its own
    shm = "/dev/shm"  # noqa: S108 - as /tmp
    args += ["--perms", "1777", "--tmpfs", str(tmp), "--perms", "1777", "--tmpfs", shm]
    # The machine's /run holds its services' Unix sockets (a database's, the system bus):
    # a network namespace does not separate those, an empty /run of its own does.
    args += ["--perms", "0755", "--tmpfs", "/run"]
    made: list[Path] = []
    for folder in [*readable, *writable]:
        # Folders under /tmp (a test's home) would be hidden by the private /tmp: make their
        # parents again inside it, passable but not listable, then bind the folder.
        for parent in reversed(folder.parents):
            if parent != tmp and tmp in parent.parents and parent not in made:
                args += ["--perms", "0711", "--dir", str(parent)]
                made.append(parent)
    for folder in readable:
        args += ["--ro-bind", str(folder), str(folder)]
    for folder in writable:
        args += ["--bind", str(folder), str(folder)]
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"]
    args += ["--seccomp", str(seccomp)] if seccomp is not None else []
    args += ["--"]
    wanted = account.groups if groups is None else groups
    args += [SETPRIV, f"--reuid={account.uid}", f"--regid={account.gid}"]
    args += [f"--groups={','.join(str(g) for g in wanted)}"]  # its own, and its project's
    args += ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    # What it creates is its own alone, whoever started it with whatever umask; no more
    # processes than a workspace needs.
    limit = f"--nproc={SANDBOX_PROCESSES}:{SANDBOX_PROCESSES}"
    return [*args, "/bin/sh", "-c", 'umask 077 && exec "$0" "$@"', PRLIMIT, limit, "--", *command]


# -- which processes run as whom --------------------------------------------------------------

#: The only processes of the TRE allowed to run as root: the privileged helper (and the
#: children it forks to answer a request, before they drop to their account), and bubblewrap
#: waiting on a workspace's sandbox (it runs nothing of the researcher's as root).
ROOT_ALLOWED = ("python -m tre.privileged.helper", BWRAP)


@dataclasses.dataclass(frozen=True)
class Running:
    pid: int
    uid: int
    command: str


def census(home: Path) -> list[Running]:
    """Every process of the TRE home ``home`` (as root: it reads other processes'
    environments): those whose environment or command names the home, but this process and
    those that started it (the operator's own command)."""
    marker = str(home)
    mine = _ancestry(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            uid = entry.stat().st_uid
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environment = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in command or f"={marker}" in environment or f"={marker}/" in environment:
            found.append(Running(int(entry.name), uid, command.strip()))
    return found


def _ancestry(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat_line.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def allowed_as_root(command: str) -> bool:
    """Whether a process of this command may run as root (:data:`ROOT_ALLOWED`)."""
    words = command.split()
    return bool(words) and (words[0] == BWRAP or "tre.privileged.helper" in words[:3])


def unexpected_root(home: Path) -> list[Running]:
    """The TRE's processes running as root that are not in :data:`ROOT_ALLOWED`."""
    return [p for p in census(home) if p.uid == 0 and not allowed_as_root(p.command)]
