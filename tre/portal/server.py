"""The portal as a local background server: ``tre portal up`` / ``down`` / ``status``.

It runs ``python -m tre portal serve`` (uvicorn on 127.0.0.1, one process) with the settings
of the command that started it, its pid file and log in ``<home>/portal/``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tre.services import LocalServer

START_TIMEOUT_S = 60


class PortalServer(LocalServer):
    name = "Portal"
    port_variable = "TRE_PORTAL_URL"
    markers = (b"tre\x00portal\x00serve",)
    start_timeout = START_TIMEOUT_S

    def __init__(self, home: Path, portal_url: str, environ: Mapping[str, str]) -> None:
        self.state_dir = Path(home) / "portal"
        self.port = urlsplit(portal_url).port or 8000
        self.environ = {**environ, "TRE_HOME": str(home)}

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None) -> PortalServer:
        return cls(settings.home, settings.portal_url, os.environ if environ is None else environ)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tre", "portal", "serve", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return dict(self.environ)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
