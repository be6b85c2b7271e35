"""The sweeper's memory of refused servers. The hub's REST API is faked here (an httpx mock
transport answering as JupyterHub does), to make the timing exact: the real hub and sweeper
are tested in tests/integration/test_hub.py and the browser journey."""

from __future__ import annotations

import httpx
import pytest

from tre import hub
from tre.config import Settings


class FakeHub:
    """Users' named servers, as ``GET /hub/api/users?include_stopped_servers=1`` lists them."""

    def __init__(self, servers: dict[tuple[str, str], dict]):
        self.servers = servers
        self.deleted: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            users = sorted({u for u, _ in self.servers})
            listed = [
                {"name": u, "servers": {n: s for (o, n), s in self.servers.items() if o == u}}
                for u in users
            ]
            offset = int(request.url.params.get("offset", 0))
            return httpx.Response(200, json=listed[offset:])
        user, name = request.url.path.split("/")[-3], request.url.path.split("/")[-1]
        self.servers.pop((user, name))
        self.deleted.append((user, name))
        return httpx.Response(204)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    fake = FakeHub(
        {
            ("alice", "mine"): {"stopped": False, "pending": None},
            ("alice", "refused"): {"stopped": True, "pending": None},
            ("bob", "foreign"): {"stopped": False, "pending": None},
            ("bob", "starting"): {"stopped": False, "pending": "spawn"},
        }
    )
    real = httpx.Client
    monkeypatch.setattr(
        httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(fake), **kw)
    )
    monkeypatch.setattr(hub, "api_token", lambda home: "token")
    return fake


def test_a_refused_record_goes_at_the_second_sweep_and_a_pending_one_is_left(fake_hub, tmp_path):
    settings = Settings.from_environ({"TRE_HOME": str(tmp_path)})
    allowed = {("alice", "mine")}

    def unwanted(user, name):
        return (user, name) not in allowed

    remembered: set = set()
    stopped = hub._stop_where(settings, unwanted, remembered)
    # The running foreign workspace is stopped at once; the refused record stays one sweep.
    assert stopped == [("bob", "foreign")]
    assert fake_hub.deleted == [("bob", "foreign")]
    assert remembered == {("alice", "refused")}
    hub._stop_where(settings, unwanted, remembered)
    assert fake_hub.deleted == [("bob", "foreign"), ("alice", "refused")]
    # One the hub is starting (or refusing) is the hub's to finish.
    assert ("bob", "starting") in fake_hub.servers and remembered == set()
    # Without the sweeper's memory (a project suspended), everything picked goes at once.
    fake_hub.servers[("alice", "refused")] = {"stopped": True, "pending": None}
    hub._stop_where(settings, unwanted)
    assert ("alice", "refused") not in fake_hub.servers
