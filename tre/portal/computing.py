"""Computations the portal asks for (outputs checked, DP queries, submissions, provisioning)
wait on their own threads, never on the few that serve pages: a researcher's large table, or
five of them, must not make every other page wait. The work itself runs in the output worker
or the provisioning account's process (the privileged helper's), at a lower priority than
the portal."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
#: How many computations may wait at once per portal process (each waits on a worker).
CONCURRENT = 16
_limiter: anyio.CapacityLimiter | None = None


async def computing(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on a thread of the computations' own."""
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(CONCURRENT)
    return await anyio.to_thread.run_sync(
        functools.partial(function, *args, **kwargs), limiter=_limiter
    )


async def quickly(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on the pages' threads (a short step of a long request)."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))
