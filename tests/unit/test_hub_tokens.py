"""When the hub renews a researcher's Keycloak tokens (tre.hub.fresh_tokens).

Keycloak is replaced here by a stand-in that records the refresh grant asked of it: the decision
(keep, renew, log in again) is what is tested. The real exchange, through a real hub, a real
Keycloak and a real workspace kernel, is in tests/integration/test_hub.py."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from tre.hub import FRESH_S, fresh_tokens


def _jwt(expires_in: float) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'exp': time.time() + expires_in})}.signature"


class Keycloak:
    """Stands in for the authenticator's calls to Keycloak's token endpoint."""

    log = logging.getLogger("test")

    def __init__(self, refuse: bool = False):
        self.refuse, self.grants = refuse, []

    def build_refresh_token_request_params(self, token):
        return {"grant_type": "refresh_token", "refresh_token": token}

    async def get_token_info(self, handler, params):
        self.grants.append(params)
        if self.refuse:
            raise RuntimeError("invalid_grant: Session not active")
        return {"access_token": _jwt(300)}

    async def _token_to_auth_model(self, token_info):
        return {"name": "alice", "auth_state": {**token_info}}


class User:
    name = "alice"


def _refresh(keycloak, state):
    # In a thread of its own: an earlier test (the browser's) may leave a loop running here.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, fresh_tokens(keycloak, User(), state)).result()


def test_a_token_with_time_left_is_kept_for_the_stock_refresh():
    """None: the hub then reads Keycloak's userinfo with it (groups included), no new token."""
    keycloak = Keycloak()
    state = {"access_token": _jwt(FRESH_S + 60), "refresh_token": "r1"}
    assert _refresh(keycloak, state) is None
    assert keycloak.grants == []


def test_a_token_about_to_expire_is_renewed_keeping_the_refresh_token():
    keycloak = Keycloak()
    state = {"access_token": _jwt(FRESH_S - 30), "refresh_token": "r1"}
    model = _refresh(keycloak, state)
    assert keycloak.grants == [{"grant_type": "refresh_token", "refresh_token": "r1"}]
    assert model["auth_state"]["refresh_token"] == "r1"
    claims = model["auth_state"]["access_token"].split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"]
    assert exp - time.time() > FRESH_S


def test_an_expired_or_unreadable_token_is_renewed():
    for token in (_jwt(-10), "not a jwt", ""):
        keycloak = Keycloak()
        assert _refresh(keycloak, {"access_token": token, "refresh_token": "r1"})
        assert len(keycloak.grants) == 1, token


def test_a_refused_renewal_means_logging_in_again():
    state = {"access_token": _jwt(5), "refresh_token": "r1"}
    assert _refresh(Keycloak(refuse=True), state) is False


def test_without_tokens_the_hub_decides_as_usual():
    assert _refresh(Keycloak(), None) is None
    assert _refresh(Keycloak(), {"access_token": _jwt(5)}) is None
