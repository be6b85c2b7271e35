"""Canary files that tell whether anything opened them, through the kernel's inotify.

An attack test plants canaries where an attacker would aim (a copy of a key's name in the keys
folder, a file in the curated store, a folder that should stay empty), runs the attack, then
asks the kernel whether any process opened a canary or created a file in a watched folder.
That checks the guarantee (nothing was read, nothing was written) rather than an error text.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from pathlib import Path

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class Canaries:
    """Files that must never be opened and folders where nothing may appear."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watches: dict[int, tuple[Path, str]] = {}
        self.seen: list[str] = []

    def _watch(self, path: Path, mask: int, what: str) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.watches[wd] = (path, what)

    def file(self, path: Path, content: bytes = b"canary\n") -> Path:
        """A canary file at ``path``: opening or reading it is seen."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self._watch(path, IN_OPEN | IN_ACCESS, "opened")
        return path

    def watch_file(self, path: Path) -> Path:
        """An existing file (a real key): opening it is seen."""
        self._watch(path, IN_OPEN | IN_ACCESS, "opened")
        return path

    def folder(self, path: Path) -> Path:
        """A folder in which nothing may be created."""
        path.mkdir(parents=True, exist_ok=True)
        self._watch(path, IN_CREATE | IN_MOVED_TO, "written into")
        return path

    def events(self) -> list[str]:
        """What happened to the canaries since the last call, as sentences."""
        found = []
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                path, what = self.watches.get(wd, (Path("?"), "touched"))
                target = path / os.fsdecode(name) if name else path
                found.append(f"{target} was {what}")
        self.seen += found
        return found

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Canaries:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
