"""A researcher's side of the hub, as their browser does it: start a workspace, wait for it,
stop it (the hub's API), and run code in its kernel through the hub's proxy (the Jupyter
server's REST API starts the kernel, its websocket carries the Jupyter messages).

For the tests, the workspace benchmark and ``tre up --smoke``: what they prove is proved from
inside a real spawned kernel, under the workspace's account, with the workspace's environment.
The ``client`` of each is an HTTP client logged in to the hub
(:func:`tre.identity.tokens.hub_login`).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import Any

import httpx

from tre.exceptions import ServiceUnavailable

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def start_workspace(client: httpx.Client, user: str, project: str) -> httpx.Response:
    """Ask the hub to start ``user``'s workspace of ``project``; the hub's answer."""
    return client.post(
        f"/hub/api/users/{user}/servers/{project}", headers={"X-XSRFToken": client.xsrf}, json={}
    )


def workspace_ready(
    client: httpx.Client, user: str, project: str, timeout: float = 90, poll: float = 0.5
) -> dict:
    """Wait until the hub reports ``user``'s workspace of ``project`` ready; its server model."""
    deadline = time.monotonic() + timeout
    server: dict = {}
    while time.monotonic() < deadline:
        server = client.get(f"/hub/api/users/{user}").json()["servers"].get(project, {})
        if server.get("ready"):
            return server
        time.sleep(poll)
    raise TimeoutError(
        f"{user}'s workspace of {project} was not ready within {timeout} s: {server}"
    )


def stop_workspace(
    client: httpx.Client, user: str, project: str, remove: bool = False
) -> httpx.Response:
    """Ask the hub to stop (and with ``remove``, forget) ``user``'s workspace of ``project``."""
    return client.request(
        "DELETE",
        f"/hub/api/users/{user}/servers/{project}",
        headers={"X-XSRFToken": client.xsrf},
        json={"remove": remove},
    )


class KernelError(Exception):
    """Code run in the kernel raised: the error's name, value and traceback (as text)."""

    def __init__(self, name: str, value: str, traceback: str):
        super().__init__(f"{name}: {value}\n{traceback}")
        self.name, self.value, self.traceback = name, value, traceback


class Kernel:
    """A Python kernel of the workspace at ``server_url`` (``/user/<name>/<project>/``), for
    ``client``: an HTTP client logged in to the hub (:func:`tre.identity.tokens.hub_login`)."""

    def __init__(self, client: httpx.Client, server_url: str, timeout: float = 120):
        from websockets.sync.client import connect

        self.client, self.base, self.timeout = client, server_url, timeout
        opened = client.get(f"{server_url}lab")  # the server's own OAuth sets its cookies
        if opened.status_code != 200:
            raise ServiceUnavailable(
                f"The workspace {server_url} did not open: {opened.status_code}"
            )
        self.xsrf = next(
            (
                c.value
                for c in client.cookies.jar
                if c.name == "_xsrf" and server_url in c.path + "/"
            ),
            "",
        )
        made = client.post(
            f"{server_url}api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": self.xsrf}
        )
        if made.status_code != 201:
            raise ServiceUnavailable(f"No kernel started in {server_url}: {made.text[:300]}")
        self.id = made.json()["id"]
        self.session = uuid.uuid4().hex
        ws = str(client.base_url).replace("http", "ws", 1).rstrip("/")
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
        self._opened = contextlib.ExitStack()
        self._ws = self._opened.enter_context(
            connect(
                f"{ws}{server_url}api/kernels/{self.id}/channels?session_id={self.session}",
                additional_headers={"Cookie": cookies},
                max_size=None,
                open_timeout=timeout,
                # No keepalive pings of ours (their payloads come from Python's global random
                # generator): the Jupyter server pings the connection itself.
                ping_interval=None,
            )
        )

    def run(self, code: str) -> str:
        """Run ``code``; what it printed and displayed (as text). Raises :class:`KernelError`
        if it raised."""
        msg_id = uuid.uuid4().hex
        self._ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "tre",
                        "session": self.session,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        error: KernelError | None = None
        replied = idle = False
        deadline = time.monotonic() + self.timeout
        while not (replied and idle):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"The kernel did not finish within {self.timeout} s:\n{code}")
            message = json.loads(self._ws.recv(timeout=left))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                error = KernelError(
                    content["ename"],
                    ANSI.sub("", content["evalue"]),
                    ANSI.sub("", "\n".join(content["traceback"])),
                )
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                replied = True
        if error is not None:
            raise error
        return "".join(out)

    def value(self, expression: str) -> Any:
        """The value of a Python expression whose result is JSON, computed in the kernel."""
        printed = self.run(f"import json as _json; print(_json.dumps({expression}))")
        return json.loads(printed.strip().splitlines()[-1])

    def close(self) -> None:
        self._opened.close()
        self.client.delete(f"{self.base}api/kernels/{self.id}", headers={"X-XSRFToken": self.xsrf})

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
