"""The portal's worker processes, and the dealer that gives each new connection to the next
worker in turn.

uvicorn's own workers share one listening socket and each accepts what it can. Browsers and
proxies keep a connection open for many requests, so where the connections land decides each
worker's load: with 20 keep-alive clients on two workers we saw splits of 15 to 5, whose busy
worker kept its clients waiting three times as long as the other. Here the first process
listens, accepts every connection and passes it (``SCM_RIGHTS`` over a Unix socket pair) to
the workers in turn, so each holds its share. A worker is a uvicorn server that serves the
connections it is given instead of accepting its own; one that dies is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Mapping

import uvicorn

from tre.exceptions import ServiceUnavailable

log = logging.getLogger(__name__)

READY = b"ready"
START_TIMEOUT_S = 60
_POLL_S = 0.5  # how often the dealer looks for a stop signal or a dead worker


class _DealtServer(uvicorn.Server):
    """A uvicorn server for the connections it receives on ``channel``."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=[])  # the app and its lifespan, with no socket to accept
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            # What uvicorn gives each connection accepted on a socket of its own.
            return config.http_protocol_class(
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        taking: set[asyncio.Task] = set()

        def receive() -> None:
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(self.channel, 16, 1)
                except BlockingIOError:
                    return
                except OSError:
                    fds = []
                if not fds:  # the dealer has gone: finish the requests in flight, then stop
                    loop.remove_reader(self.channel.fileno())
                    self.should_exit = True
                    return
                task = loop.create_task(_serve(loop, protocol, socket.socket(fileno=fds[0])))
                taking.add(task)
                task.add_done_callback(taking.discard)

        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), receive)
        self.channel.send(READY)


async def _serve(loop, protocol, connection: socket.socket) -> None:
    try:
        await loop.connect_accepted_socket(protocol, connection)
    except OSError:  # the client left before the worker took the connection up
        connection.close()


def _work(channel: socket.socket, environ: Mapping[str, str], app: str) -> None:
    """A worker process: the app (a factory's import path), served on dealt connections."""
    os.environ.update(environ)
    # No proxy is in front of the portal: the peer's own address is the client's (trusting
    # X-Forwarded-For from loopback let a caller pass for a workspace's enclave: found by the
    # review of issue #21's changes).
    config = uvicorn.Config(app, factory=True, log_level="warning", proxy_headers=False)
    _DealtServer(config, channel).run()


class _Worker:
    def __init__(self, context, environ: Mapping[str, str], app: str) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = context.Process(
            target=_work, args=(theirs, dict(environ), app), name="tre-portal-worker"
        )
        self.process.start()
        theirs.close()

    def wait_ready(self) -> None:
        self.channel.settimeout(START_TIMEOUT_S)
        try:
            ready = self.channel.recv(16)
        except TimeoutError:
            ready = b""
        if ready != READY:
            self.stop()
            raise ServiceUnavailable(
                "A portal worker did not start: its error is in the log above (or in "
                "<home>/portal/portal.log when started by `tre portal up`)."
            )

    def alive(self) -> bool:
        return self.process.is_alive()

    def give(self, connection: socket.socket) -> bool:
        try:
            socket.send_fds(self.channel, [b"c"], [connection.fileno()])
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.channel.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def serve(app: str, port: int, workers: int, environ: Mapping[str, str]) -> None:
    """Listen on 127.0.0.1:``port`` and deal the connections to ``workers`` processes serving
    ``app`` until SIGTERM or SIGINT."""
    context = multiprocessing.get_context("spawn")  # no inherited connections or threads
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    listener = socket.create_server(("127.0.0.1", port), backlog=2048)
    listener.settimeout(_POLL_S)
    pool: list[_Worker] = []
    try:
        pool.extend(_Worker(context, environ, app) for _ in range(workers))
        for worker in pool:
            worker.wait_ready()
        turn = 0
        while not stopping:
            for i, worker in enumerate(pool):
                if not worker.alive() and not stopping:
                    log.warning(
                        "Portal worker %d stopped (exit code %s); starting another.",
                        worker.process.pid,
                        worker.process.exitcode,
                    )
                    worker.stop()
                    pool[i] = _Worker(context, environ, app)
                    pool[i].wait_ready()
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                for _ in range(len(pool)):
                    worker = pool[turn % len(pool)]
                    turn += 1
                    if worker.give(connection):
                        break
    finally:
        listener.close()
        for worker in pool:
            with contextlib.suppress(OSError):
                worker.channel.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 30
        for worker in pool:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            worker.stop()
