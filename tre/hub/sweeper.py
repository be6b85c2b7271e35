"""The hub's sweeper: a service the hub starts with itself (``python -m tre.hub.sweeper``) and
restarts if it stops. Every ``TRE_HUB_SWEEP_SECONDS`` it runs :func:`tre.hub.sweep`: projects
past their end date are expired even when nobody runs a command or opens the portal, and no
workspace keeps running for a project that is not provisioned or a researcher who left it."""

from __future__ import annotations

import logging
import time

import httpx

from tre import projects
from tre.config import Settings
from tre.exceptions import TREError
from tre.hub import sweep

log = logging.getLogger("tre.hub.sweeper")


def main() -> None:
    settings = Settings.from_environ()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    projects.install_access_hooks(lambda: settings)
    refused: set[tuple[str, str]] = set()  # stopped servers to remove at the next sweep
    while True:
        try:
            for user, project in sweep(settings, refused):
                log.warning("stopped the workspace of %s in %s: no longer allowed", user, project)
        except (TREError, httpx.HTTPError) as e:
            log.warning("sweep failed, trying again at the next one: %s", e)
        time.sleep(settings.hub_sweep_seconds)


if __name__ == "__main__":
    main()
