"""schemathesis fuzzes every operation of ``/api/v1`` from its published OpenAPI document,
as anonymous, a researcher, an output checker and an administrator: no answer may be a server
error. The fuzzing runs against a portal of its own (random calls change things)."""

from __future__ import annotations

import time

import hypothesis
import pytest
import schemathesis

from tests.conftest import free_port, start_portal, stop_portal

pytestmark = pytest.mark.keycloak

CALLERS = (None, "alice", "olga", "ada")


@pytest.fixture(scope="module")
def fuzzed(keycloak, synthetic, tmp_path_factory):
    portal, served = start_portal(
        keycloak,
        synthetic,
        tmp_path_factory.mktemp("fuzzed-portal"),
        f"http://127.0.0.1:{free_port()}",
        sync=False,
    )
    tokens: dict[str, tuple[float, str]] = {}

    def token(username: str) -> str:
        at, value = tokens.get(username, (0.0, ""))
        if time.monotonic() - at > 60:  # well within the tokens' lifetime
            value = portal.token(username)
            tokens[username] = (time.monotonic(), value)
        return value

    portal.fresh_token = token
    yield portal
    stop_portal(portal, served)


def operations(url: str):
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_no_call_is_answered_with_a_server_error(fuzzed):
    # schemathesis's pytest plugin does not load under pytest 9: drive hypothesis directly.
    failures = []
    for operation in operations(fuzzed.url):

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            for caller in CALLERS:
                headers = (
                    {"Authorization": f"Bearer {fuzzed.fresh_token(caller)}"} if caller else {}
                )
                response = case.call(base_url=fuzzed.url, headers=headers)
                assert response.status_code < 500, (
                    f"{caller or 'anonymous'}: {case.method} {case.formatted_path} -> "
                    f"{response.status_code} {response.text[:300]}"
                )

        try:
            fuzz()
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert failures == [], "\n".join(failures)
