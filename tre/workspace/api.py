"""The TRE's API, called from a workspace as its researcher.

The researcher's Keycloak access token is asked of the hub at each call (``GET
$JUPYTERHUB_API_URL/users/<researcher>`` with the workspace's own hub token, whose only extra
scope is reading its researcher's auth state); the hub renews it before it expires. Nothing is
written to disk and nothing is kept between calls.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from tre.exceptions import (
    ConfigError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    TREError,
)
from tre.workspace.sandbox import Workspace

TIMEOUT_S = 120  # checking a large output reads the whole extract

_ERRORS: dict[int, type[TREError]] = {
    403: PermissionDenied,
    404: NotFound,
}


def access_token() -> str:
    """The researcher's current Keycloak access token, from the hub."""
    hub, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    user = os.environ.get("JUPYTERHUB_USER")
    if not hub or not token or not user:
        raise ConfigError(
            "This kernel was not started by the hub (JUPYTERHUB_API_URL is not set): the TRE's "
            "API is called from a workspace, as its researcher."
        )
    try:
        answer = httpx.get(
            f"{hub.rstrip('/')}/users/{user}",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
    except httpx.HTTPError as e:
        raise ServiceUnavailable(f"The hub did not answer ({e}); try again in a moment.") from None
    if answer.status_code != 200:
        raise ServiceUnavailable(
            f"The hub refused to say who you are ({answer.status_code}): restart the workspace "
            "from the hub's home page."
        )
    state = answer.json().get("auth_state") or {}
    if not state.get("access_token"):
        raise PermissionDenied(
            "The hub holds no Keycloak token for you: log out of the hub, log in again, and "
            "restart the workspace."
        )
    return state["access_token"]


def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``method`` ``/api/v1{path}`` of the portal, as the researcher; the JSON answer. A refusal
    is raised as the TRE error it stands for, with the portal's message."""
    workspace = Workspace.here()
    if not workspace.portal_url:
        raise ConfigError("TRE_PORTAL_URL is not set: the hub says where the portal is.")
    headers = {"Authorization": f"Bearer {access_token()}"}
    try:
        answer = httpx.request(
            method,
            f"{workspace.portal_url}/api/v1{path}",
            json=body,
            headers=headers,
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as e:
        raise ServiceUnavailable(
            f"The portal did not answer ({e}); try again, or ask a TRE administrator."
        ) from None
    if answer.status_code >= 400:
        try:
            message = answer.json().get("detail") or answer.text
        except ValueError:
            message = answer.text
        if answer.status_code >= 500:
            raise ServiceUnavailable(f"The portal failed ({answer.status_code}): {message}")
        raise _ERRORS.get(answer.status_code, InvalidInput)(str(message))
    return answer.json()
