"""Boundary: the hub's dask-gateway, Dask's multi-tenant engine.

Attacks from real kernels: a cluster's options above what the TRE allows; another researcher's
cluster joined through the gateway, or its scheduler reached with another cluster's
credentials; a token of the researcher's other project, or no workspace's token at all,
presented from this workspace; a suspended project's workspace asking for a cluster. And the
cluster itself: its scheduler and workers run as the workspace's account, in its enclave.
"""

from __future__ import annotations

import contextlib
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import HUB_OTHER
from tests.security.conftest import PROBE, running_workspace
from tre import projects
from tre.hub.kernels import Kernel, KernelError, stop_workspace
from tre.identity.tokens import hub_login
from tre.people import local_person
from tre.privileged import enclaves

pytestmark = [pytest.mark.hub, pytest.mark.keycloak]

#: Run in a kernel with a gateway cluster ``c``: its own scheduler's token (code runs there),
#: then a heartbeat naming another address, as a scheduler under the researcher's control could.
FORGE = """
import os, httpx, time
from dask_gateway import Gateway
from tre.workspace import cluster, sandbox
c = cluster(workers=1)
name = sandbox._gateway_cluster
token = c.run_on_scheduler(lambda: os.environ["DASK_GATEWAY_API_TOKEN"])
forged = {
    "count": 1, "active_workers": [], "closing_workers": [], "closed_workers": [],
    "scheduler_address": "tls://127.0.0.1:5432", "dashboard_address": "http://127.0.0.1:8081",
    "api_address": "http://127.0.0.1:5432",
}
answer = httpx.post(
    os.environ["DASK_GATEWAY__ADDRESS"] + f"/api/v1/clusters/{name}/heartbeat",
    headers={"Authorization": f"token {token}"}, json=forged,
)
for _ in range(100):
    if name not in [x.name for x in Gateway().list_clusters()]:
        break
    time.sleep(0.2)
stopped = name not in [x.name for x in Gateway().list_clusters()]
"""


#: Six clusters asked for at once, from six threads.
AT_ONCE = """
from concurrent.futures import ThreadPoolExecutor
def one(_):
    try:
        return Gateway().submit()
    except Exception:
        return None
with ThreadPoolExecutor(6) as pool:
    names = [n for n in pool.map(one, range(6)) if n]
"""


def _mint(client, user: str, scopes: list[str]) -> str:
    """A token the researcher makes for themselves on the hub (as JupyterHub lets them)."""
    xsrf = next((c.value for c in client.cookies.jar if c.name == "_xsrf"), "")
    made = client.post(
        f"/hub/api/users/{user}/tokens",
        json={"scopes": scopes, "note": "test", "expires_in": 600},
        headers={"X-XSRFToken": xsrf},
    )
    assert made.status_code == 201, made.text
    return made.json()["token"]


def test_a_gateway_cluster_runs_as_the_workspace_in_its_enclave(hub, portal):
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = running_workspace(alice, "alice", portal.project)
        mine = enclaves.find(portal.home.root, portal.project, "alice")
        with Kernel(alice, server["url"]) as kernel:
            kernel.run("import os; from tre.workspace import cluster, close_cluster")
            # Dask configuration of the researcher's folder: read by the kernel, by no
            # scheduler or worker (found by the review: it ran before the gateway's preload).
            kernel.run(
                "os.makedirs(os.path.expanduser('~/.config/dask'), exist_ok=True); "
                "open(os.path.expanduser('~/.config/dask/carried.yaml'), 'w')"
                ".write('tre-marker: carried')"
            )
            kernel.run("c = cluster(workers=2)")
            kernel.run("import dask, shutil")
            assert kernel.value("dask.config.get('tre-marker', None)") == "carried"
            assert kernel.value("c.run_on_scheduler(dask.config.get, 'tre-marker', None)") is None
            assert set(
                kernel.value("list(c.run(dask.config.get, 'tre-marker', None).values())")
            ) == {None}
            kernel.run("shutil.rmtree(os.path.expanduser('~/.config/dask'))")
            assert kernel.value("c.scheduler.address").startswith(f"tls://{mine.address}:")
            assert kernel.value("c.submit(sum, [1, 2]).result()") == 3
            mine = kernel.value("[os.getuid(), os.readlink('/proc/self/ns/net')]")
            workers = kernel.value(
                "list(c.run(lambda: [os.getuid(), os.readlink('/proc/self/ns/net')]).values())"
            )
            assert len(workers) == 2 and all(w == mine for w in workers)
            # More than the project's approval grants is refused before anything starts: it
            # asked for workers of 3 GiB, the DfE granted 2.5 (the TRE's default is 4).
            kernel.run("from dask_gateway import Gateway")
            for options in ("worker_cores=2", "worker_memory=3", "worker_memory=5"):
                with pytest.raises(KernelError):
                    kernel.run(f"Gateway().submit({options})")
            # Two clusters at once each, no more.
            kernel.run("second = Gateway().submit()")
            with pytest.raises(KernelError) as refused:
                kernel.run("Gateway().submit()")
            assert "2 Dask clusters running" in refused.value.value
            kernel.run("Gateway().stop_cluster(second)")
            kernel.run("Gateway().stop_cluster(Gateway().submit(worker_memory=2.5))")
            # Past the workers the approval grants (3), a cluster is held at that most.
            kernel.run("from tre.workspace import sandbox")
            kernel.run("Gateway().scale_cluster(sandbox._gateway_cluster, 1000)")
            kernel.run("c.wait_for_workers(3, timeout=60)")
            kernel.run("import time; time.sleep(3)")
            assert kernel.value("len(c.scheduler_info()['workers'])") == 3
            kernel.run("close_cluster()")
            # Six asked for at once are counted one after the other: two at most (found by the
            # review: each was counted before any was made).
            kernel.run(AT_ONCE)
            assert 1 <= kernel.value("len(names)") <= 2
            assert len(kernel.value("[x.name for x in Gateway().list_clusters()]")) <= 2
            kernel.run("[Gateway().stop_cluster(n) for n in names]")
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)


def test_a_cluster_admits_its_own_researcher_and_project_alone(hub, portal):
    with (
        closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice,
        closing(hub_login(hub.hub_url, "bob", "tre-demo")) as bob,
    ):
        a_server = running_workspace(alice, "alice", portal.project)
        b_server = running_workspace(bob, "bob", portal.project)
        other_token = _mint(bob, "bob", [f"access:servers!server=bob/{HUB_OTHER}"])
        plain_token = _mint(bob, "bob", ["read:users:name!user"])
        with Kernel(alice, a_server["url"]) as a, Kernel(bob, b_server["url"]) as b:
            a.run("from tre.workspace import cluster, close_cluster; c = cluster(workers=1)")
            a.run("from tre.workspace import sandbox")
            name = a.value("sandbox._gateway_cluster")
            b.run("from dask_gateway import Gateway, JupyterHubAuth")
            assert name not in b.value("[x.name for x in Gateway().list_clusters()]")
            with pytest.raises(KernelError):  # a co-member: not his cluster
                b.run(f"Gateway().connect({name!r})")
            # Her scheduler is in her enclave, which his kernel does not reach; nor does it
            # reach the gateway's proxy's TLS routing (found by the review: with a cluster's
            # credentials, it led into any enclave).
            b.run("from distributed import Client")
            address = a.value("c.scheduler.address")
            with pytest.raises(KernelError):
                b.run(f"Client({address!r}, timeout=10)")
            b.run(PROBE)
            gateway = enclaves.find(portal.home.root, portal.project, "bob").gateway
            tls_port = _gateway_port("TRE_DASK_GATEWAY_TLS_PORT")
            assert b.value(f"reach({gateway!r}, {tls_port})") != "connected"
            # A token of his for his other project, or one of no workspace, from here.
            for token in (other_token, plain_token):
                with pytest.raises(KernelError):
                    b.run(f"Gateway(auth=JupyterHubAuth(api_token={token!r})).list_clusters()")
            a.run("close_cluster()")
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)
        assert stop_workspace(bob, "bob", portal.project).status_code in (202, 204)


def test_a_heartbeat_naming_another_address_stops_the_cluster(hub, portal):
    """Found by the review: the scheduler runs the researcher's code and holds its cluster's
    token, so it can send any heartbeat; one naming addresses other than those the helper
    gave it (another enclave, the machine's loopback, a dashboard) stops the cluster."""
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = running_workspace(alice, "alice", portal.project)
        with Kernel(alice, server["url"]) as kernel:
            kernel.run(FORGE)
            assert kernel.value("answer.status_code") in (200, 204)
            assert kernel.value("stopped")
            kernel.run("sandbox.close_cluster()")
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)


def _gateway_port(variable: str = "TRE_DASK_GATEWAY_PORT") -> int:
    """A port of the hub's gateway (from its process's environment, as root reads it)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and b"dask-gateway-server" in (entry / "cmdline").read_bytes():
                environ = (entry / "environ").read_bytes().split(b"\0")
                found = [v for v in environ if v.startswith(f"{variable}=".encode())]
                if found:
                    return int(found[0].split(b"=", 1)[1])
    pytest.fail("the hub's gateway is not running")


def test_a_suspended_projects_workspace_gets_no_cluster(hub, portal):
    """Asked from inside bob's enclave of the project (as his kernel would), with a token of
    that workspace: answered while the project is provisioned, refused by the gateway itself
    once it is suspended (whether or not the suspension's hooks have removed the enclave yet:
    it is made again here if they have), answered again once resumed."""
    admin = local_person("ada")
    home, port = portal.home.root, _gateway_port()
    with closing(hub_login(hub.hub_url, "bob", "tre-demo")) as bob:
        running_workspace(bob, "bob", HUB_OTHER)
        token = _mint(bob, "bob", [f"access:servers!server=bob/{HUB_OTHER}"])
        enclave = enclaves.find(home, HUB_OTHER, "bob")
        url = f"http://{enclave.gateway}:{port}/api/v1/clusters/"

        def status() -> str:
            curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10"]
            curl += ["-H", f"Authorization: jupyterhub {token}", url]
            done = subprocess.run(enclave.inside(curl), capture_output=True, text=True)
            return done.stdout or done.stderr

        assert status() == "200"
        projects.set_state(portal.db, HUB_OTHER, "suspend", admin, "test")
        try:
            assert enclaves.ensure(home, HUB_OTHER, "bob", [port]) == enclave
            assert status() in ("401", "403")
        finally:
            projects.set_state(portal.db, HUB_OTHER, "resume", admin, "test")
        assert status() == "200"
        stop_workspace(bob, "bob", HUB_OTHER)
