"""The portal as a local background server: ``tre portal up`` / ``down`` / ``status``.

It runs ``python -m tre portal serve`` (on 127.0.0.1, see :mod:`tre.portal.workers`) with the
settings of the command that started it, its pid file and log in ``<home>/portal/``.
"""

from __future__ import annotations

import sys

import httpx

from tre.services import HomeServer

START_TIMEOUT_S = 60


class PortalServer(HomeServer):
    name = "Portal"
    port_variable = "TRE_PORTAL_URL"
    markers = (b"tre\x00portal\x00serve",)
    start_timeout = START_TIMEOUT_S
    folder = "portal"
    url_setting = "portal_url"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tre", "portal", "serve", "--port", str(self.port)]

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
