"""The smoke test of a running local TRE (``tre up --smoke``): one short journey through every
part, with the demo accounts, as the people who use it would make it.

1. alice logs in to the hub through Keycloak and starts her workspace of ``asthma-ks4``;
   starting ``fsm-ae`` (bob's project) is refused;
2. every process of the TRE runs as its own account: as root only the privileged helper (and
   bubblewrap waiting on the workspace's sandbox);
3. in that workspace's kernel, ``tre.workspace`` reads the extracts, builds a safe table and
   requests its export (as alice, through the portal's API);
4. olga and oscar, output checkers, each approve it through the API; it is released;
5. alice downloads the released file; her workspace is stopped.

Each step says what it did; the first that fails raises with what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing

import httpx

from tre.config import Settings
from tre.exceptions import TREError
from tre.hub.kernels import Kernel, start_workspace, stop_workspace, workspace_ready
from tre.identity.tokens import device_login, hub_login
from tre.privileged.processes import census, unexpected_root

PROJECT = "asthma-ks4"
OTHER_PROJECT = "fsm-ae"
RESEARCHER = "alice"
CHECKERS = ("olga", "oscar")
READY_TIMEOUT_S = 90

IN_THE_KERNEL = """
from tre.workspace import connect, request_export, safe
pupils = connect().execute("SELECT count(DISTINCT pseudo_id) FROM pupils").fetchone()[0]
table = safe.table(
    "ks4", rows=["fsm_eligible"], statistic="mean", value="attainment8",
    join=[{"dataset": "pupils", "on": ["academic_year"], "columns": ["fsm_eligible"]}],
    name="smoke test: Attainment 8 by FSM eligibility",
)
request = request_export([table], "Smoke test of the local TRE")
"""


class SmokeFailed(TREError):
    exit_code = 1


def run(settings: Settings, say: Callable[[str], None] = print) -> None:
    started = time.monotonic()

    def step(text: str) -> None:
        say(f"smoke [{time.monotonic() - started:5.1f} s] {text}")

    password = settings.demo_password
    with closing(hub_login(settings.hub_url, RESEARCHER, password)) as hub:
        step(f"{RESEARCHER} logged in to the hub through Keycloak")
        refused = start_workspace(hub, RESEARCHER, OTHER_PROJECT)
        if refused.status_code != 403:
            raise SmokeFailed(f"Starting {OTHER_PROJECT} as {RESEARCHER} was not refused.")
        step(f"starting {OTHER_PROJECT} (not hers) was refused: {refused.json()['message']}")
        server = _running(hub, PROJECT)
        step(f"her workspace of {PROJECT} is ready at {server['url']}")
        step(_accounts(settings))
        try:
            with Kernel(hub, server["url"]) as kernel:
                kernel.run(IN_THE_KERNEL)
                pupils = kernel.value("pupils")
                status, request_id = kernel.value("[table.status, request.id]")
            step(
                f"in its kernel: {pupils:,} pupils in the extracts; a safe table ({status}) "
                f"asked for in export request #{request_id}"
            )
        finally:
            stop_workspace(hub, RESEARCHER, PROJECT)
    api = f"{settings.portal_url}/api/v1"
    for checker in CHECKERS:
        _call(
            settings,
            checker,
            "POST",
            f"{api}/requests/{request_id}/outputs/1/reviews",
            {"vote": "approve", "comment": "smoke test"},
        )
        step(f"{checker} approved it")
    state = _call(settings, RESEARCHER, "GET", f"{api}/requests/{request_id}").json()["state"]
    if state != "released":
        raise SmokeFailed(f"Export request #{request_id} is {state} after two approvals.")
    released = _call(settings, RESEARCHER, "GET", f"{api}/requests/{request_id}/outputs/1/download")
    step(f"{RESEARCHER} downloaded the released output ({len(released.content):,} bytes)")
    step("passed")


def _accounts(settings: Settings) -> str:
    """Which accounts the TRE's processes run as; fails if any but the allowed run as root."""
    import pwd

    running = census(settings.home)
    wrong = unexpected_root(settings.home)
    if wrong:
        raise SmokeFailed(
            "These processes of the TRE run as root: "
            + "; ".join(f"{p.pid} {p.command[:80]}" for p in wrong)
        )
    names = sorted({pwd.getpwuid(p.uid).pw_name for p in running if p.uid != 0})
    allowed = sum(p.uid == 0 for p in running)
    return (
        f"{len(running)} processes of the TRE: {allowed} as root (the privileged helper, "
        f"bubblewrap), the others as {', '.join(names)}"
    )


def _running(hub: httpx.Client, project: str) -> dict:
    answer = start_workspace(hub, RESEARCHER, project)
    if answer.status_code not in (201, 202, 400):  # 400: already running
        raise SmokeFailed(f"The workspace of {project} did not start: {answer.text[:300]}")
    try:
        return workspace_ready(hub, RESEARCHER, project, READY_TIMEOUT_S)
    except TimeoutError as e:
        raise SmokeFailed(str(e)) from None


def _call(settings: Settings, user: str, method: str, url: str, body=None) -> httpx.Response:
    token = device_login(settings.keycloak_issuer, user, settings.demo_password)
    answer = httpx.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    if answer.status_code >= 400:
        raise SmokeFailed(f"{method} {url} as {user}: {answer.status_code} {answer.text[:300]}")
    return answer
