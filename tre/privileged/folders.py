"""Folders as root touches them: by file descriptor, never by a path someone else can change.

Root walks from the TRE home (its own path, never one from a request) one name at a time with
``O_NOFOLLOW``, so a symlink planted anywhere on the way is refused rather than followed, and
changes what it opened (``fchown``, ``fchmod``) rather than a path that may since point
elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from tre.exceptions import InvalidInput

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(name: str) -> str:
    """One plain name in a folder: not empty, no ``/``, not ``.`` or ``..``, no NUL."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise InvalidInput(f"{name[:60]!r} is not a plain file or folder name.")
    return name


def relative_parts(path: str, *, most: int = 8) -> list[str]:
    """The names of a relative path inside a folder: refuses absolute paths, ``..``, and
    paths deeper than ``most``."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\0" in path:
        raise InvalidInput(
            f"{str(path)[:80]!r} is not a path inside the workspace: give it relative to your "
            "workspace folder, e.g. results/table1.csv."
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"{path[:80]!r} climbs out of the folder with '..'.")
    if not parts or len(parts) > most:
        raise InvalidInput(f"{path[:80]!r} is empty or nested deeper than {most} folders.")
    return [check_name(p) for p in parts]


@contextlib.contextmanager
def opened(path: Path) -> Iterator[int]:
    """A directory the TRE itself names (the home), opened; closed after."""
    fd = os.open(path, _DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def walk(root: int, names: list[str]) -> Iterator[int]:
    """The directory ``root/names…``, each step opened with ``O_NOFOLLOW``: a symlink or a
    file on the way is refused (OSError)."""
    fds: list[int] = []
    try:
        current = root
        for name in names:
            current = os.open(check_name(name), _DIRECTORY, dir_fd=current)
            fds.append(current)
        yield current
    finally:
        for fd in reversed(fds):
            os.close(fd)


def subfolder(parent: int, name: str, *, uid: int, gid: int, mode: int) -> int:
    """The folder ``name`` in ``parent`` (made if missing), owned ``uid:gid`` with ``mode``;
    an open descriptor of it (the caller closes it). Anything but a real folder there is
    refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(check_name(name), mode=0o700, dir_fd=parent)
    fd = os.open(name, _DIRECTORY, dir_fd=parent)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def owner_of(fd: int) -> int:
    return os.fstat(fd).st_uid


def tree(root: int) -> Iterator[tuple[int, os.stat_result]]:
    """Every entry under the directory ``root`` (itself first), opened without following a
    symlink; symlinks and anything but files and folders raise InvalidInput. Each descriptor
    is closed once the caller has moved on."""
    yield root, os.fstat(root)
    for name in sorted(os.listdir(root)):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=root)
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                yield from tree(fd)
            elif stat.S_ISREG(info.st_mode):
                yield fd, info
            else:
                raise InvalidInput(f"{name!r} is neither a file nor a folder.")
        finally:
            os.close(fd)
