"""What the portal answers a workspace: from an enclave's address (``TRE_ENCLAVE_NETWORK``),
only the calls ``tre.workspace`` makes, each about that enclave's own project, by that
enclave's own researcher.

A kernel holds its researcher's Keycloak token (``tre.workspace`` needs it to submit outputs);
without this, it could carry rows out in the free text of any call (a request's title, an
application) and read them back from home, or fetch the researcher's other projects' outputs
into this workspace (found by the fourth attack review). The portal sees the enclave's own
address: the enclave's rules translate only where its packets go, not where they come from.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json

from fastapi import Request
from starlette.responses import JSONResponse

from tre import airlock
from tre.exceptions import PermissionDenied
from tre.privileged import enclaves

#: (method, route) of the calls tre.workspace makes (tre/workspace/api.py's callers).
CALLS = frozenset(
    {
        ("POST", "/api/v1/projects/{project_id}/outputs"),
        ("POST", "/api/v1/projects/{project_id}/dp"),
        ("POST", "/api/v1/projects/{project_id}/dp/plan"),
        ("POST", "/api/v1/projects/{project_id}/workspace/refusals"),
        ("POST", "/api/v1/requests"),
        ("POST", "/api/v1/requests/{request_id}/outputs"),
        ("POST", "/api/v1/requests/{request_id}/submit"),
    }
)
REFUSED = (
    "From a workspace, the portal answers only the calls tre.workspace makes for that "
    "workspace's own project: outputs, DP queries and export requests."
)


def in_an_enclave(request: Request) -> bool:
    """Whether ``request`` comes from an address of the enclaves' network."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address in ipaddress.ip_network(request.app.state.settings.enclave_network)


async def scope(request: Request) -> None:
    """The API's dependency: a call from an enclave must be one of :data:`CALLS`, by the
    enclave's researcher, about the enclave's project (else :class:`PermissionDenied`)."""
    if not in_an_enclave(request):
        return
    route = getattr(request.scope.get("route"), "path", "")
    if (request.method, route) not in CALLS:
        raise PermissionDenied(REFUSED)
    state = request.app.state
    person = state.auth.bearer(request)
    project = await _project_of(request)
    settings = state.settings
    found = await asyncio.to_thread(
        enclaves.find, settings.home, project, person.username, settings.enclave_network
    )
    if found is None or found.address != request.client.host:
        raise PermissionDenied(REFUSED)


async def _project_of(request: Request) -> str:
    """The project the call is about: in its path, its export request's, or its body's."""
    params = request.path_params
    if "project_id" in params:
        return str(params["project_id"])
    if "request_id" in params:
        try:
            number = int(params["request_id"])
        except ValueError:
            raise PermissionDenied(REFUSED) from None
        found = await asyncio.to_thread(airlock.get, request.app.state.db, number)
        return found.project_id
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise PermissionDenied(REFUSED) from None
    return str(body.get("project", "")) if isinstance(body, dict) else ""


def check_inside(request: Request) -> None:
    """Outputs are computed in the project's workspace only (the caller's own enclave of the
    project, which :func:`scope` checked): from anywhere else, even their status and reasons
    would answer questions about the data without a checker (found by the review of issue
    #21's changes: a range filter narrowed down, query by query, to one person's score)."""
    if not in_an_enclave(request):
        raise PermissionDenied(
            "Outputs and DP queries are computed in the project's workspace (tre.workspace), "
            "not from outside it."
        )


class PagesRefused:
    """A plain ASGI middleware: no page of the portal (only its API, as :func:`scope` allows)
    answers an enclave's address."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/api/v1/"):
            request = Request(scope)
            if in_an_enclave(request):
                await JSONResponse({"detail": REFUSED}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
