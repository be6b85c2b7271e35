"""Boundary: a project's network enclave, and what its workspaces' servers hand to the browser.

Attacks, each from a real kernel of a real workspace (alice's, of the portal's project A):
reach another project's workspace server or Dask scheduler, the TRE's PostgreSQL and
Keycloak, the internet; join a co-member's Dask cluster; take data out through the contents
API (a CSV the kernel wrote, Parquet renamed ``.ipynb``); undo the server's configuration from
the researcher's own folder; read the server's memory. The "internet" is a listener in a
network namespace this test makes, reached through forwarding turned on for the test (nothing
here leaves the machine).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.conftest import HUB_OTHER
from tests.security.conftest import PROBE, running_workspace
from tre import audit
from tre.hub.kernels import Kernel, KernelError, stop_workspace
from tre.identity.tokens import hub_login
from tre.privileged import enclaves

pytestmark = [pytest.mark.hub, pytest.mark.keycloak]


@contextlib.contextmanager
def _unix_listener():
    """A service of the machine's listening on a Unix socket under /run, open to every
    account (as a database's or a message bus's may be)."""
    import socket

    folder = Path("/run/tre-test-unix")
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / "service.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        path.unlink(missing_ok=True)
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen()
        yield path
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        folder.rmdir()


def _listening(enclave: enclaves.Enclave) -> list[int]:
    """The TCP ports listening on the enclave's address (its workspace servers)."""
    out = subprocess.run(
        enclave.inside(["ss", "-Hltn"]), capture_output=True, text=True, check=True
    ).stdout
    return [
        int(line.split()[3].rsplit(":", 1)[1])
        for line in out.splitlines()
        if enclave.address in line
    ]


@contextlib.contextmanager
def _internet():
    """A listener standing for the internet: in a namespace of the test's own, joined to the
    machine by a veth pair, with forwarding on (as a router's would be) while it lasts."""
    ns, link = "tre-test-inet", "tre-test-inet0"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    before = forwarding.read_text().strip()
    listener = None
    try:
        for command in (
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns],
            ["ip", "addr", "add", "10.251.0.1/30", "dev", link],
            ["ip", "link", "set", link, "up"],
            ["ip", "-n", ns, "addr", "add", "10.251.0.2/30", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", "10.251.0.1"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        forwarding.write_text("1")
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.251.0.2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):  # the machine reaches it: the route is there to be refused
            curl = ["curl", "-s", "-m", "1", "http://10.251.0.2:8080/"]
            if subprocess.run(curl, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the test's internet did not answer the machine")
        yield ("10.251.0.2", 8080)
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        forwarding.write_text(before)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.mark.postgres
def test_a_kernel_reaches_its_hub_and_portal_and_nothing_else(hub, portal, keycloak, postgres_url):
    home = portal.home.root
    with (
        closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice,
        closing(hub_login(hub.hub_url, "bob", "tre-demo")) as bob,
        _internet() as internet,
        _unix_listener() as unix,
    ):
        server = running_workspace(alice, "alice", portal.project)
        other = running_workspace(bob, "bob", HUB_OTHER)
        mine = enclaves.find(home, portal.project, "alice")
        theirs = enclaves.find(home, HUB_OTHER, "bob")
        assert mine and theirs and mine.address != theirs.address
        assert server["url"] and _listening(theirs), "B's server listens in B's enclave"
        dropped = enclaves.dropped(mine)
        with Kernel(bob, other["url"]) as b:
            # B's Dask cluster (through tre.workspace), and a plain listener of B's on every
            # address of its enclave, standing for an unauthenticated scheduler.
            b.run("from tre.workspace import cluster, close_cluster; c = cluster(workers=1)")
            b_dask = int(b.value("c.scheduler_info()['address']").rsplit(":", 1)[1])
            b.run(
                "import socket; l = socket.socket(); l.bind(('0.0.0.0', 0)); l.listen(); "
                "b_port = l.getsockname()[1]"
            )
            b_plain = b.value("b_port")
            with Kernel(alice, server["url"]) as a:
                a.run(PROBE)
                pg = urlsplit(postgres_url)
                keycloak_port = keycloak.settings.keycloak_port
                targets = {
                    "B's workspace server": [(theirs.address, p) for p in _listening(theirs)],
                    "B's Dask scheduler": [(theirs.address, b_dask), ("127.0.0.1", b_dask)],
                    "B's own listener": [(theirs.address, b_plain)],
                    "PostgreSQL": [("127.0.0.1", pg.port), (mine.gateway, pg.port)],
                    "Keycloak's admin API": [
                        ("127.0.0.1", keycloak_port),
                        (mine.gateway, keycloak_port),
                    ],
                    "the internet": [internet],
                }
                for what, addresses in targets.items():
                    for host, port in addresses:
                        assert a.value(f"reach({host!r}, {port})") != "connected", (what, host)
                # Nor a service of the machine's on a Unix socket (the sandbox's /run is its own).
                assert a.value(f"reach_unix({str(unix)!r})") != "connected"
                # The metadata database is not reachable as a file either.
                db_file = home / "db" / "tre.db"
                assert a.value(f"reach({mine.gateway!r}, 5432)") != "connected"
                with pytest.raises(KernelError):
                    a.run(f"open({str(db_file)!r}, 'rb')")
                # A's hub and workspace API are reachable, through the enclave's gateway.
                a.run("import httpx; hub = os.environ['JUPYTERHUB_API_URL']")
                assert mine.gateway in a.value("hub")
                status = a.value(
                    "httpx.get(hub + '/user', headers={'Authorization': "
                    "'token ' + os.environ['JUPYTERHUB_API_TOKEN']}).status_code"
                )
                assert status == 200
                a.run("from tre.workspace import api")
                plan = {
                    "name": "n",
                    "kind": "dp",
                    "dataset": "pupils",
                    "query": "count",
                    "epsilon": 0.1,
                }
                plan_call = f"api.call('POST', '/projects/{portal.project}/dp/plan', {plan!r})"
                assert a.value(f"sorted({plan_call})")  # as tre.workspace calls it
            b.run("close_cluster(); l.close()")
        assert enclaves.dropped(mine) > dropped, "the refused attempts are counted"
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)
        assert stop_workspace(bob, "bob", HUB_OTHER).status_code in (202, 204)


def test_a_dask_cluster_admits_its_own_kernel_alone(hub, portal):
    with (
        closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice,
        closing(hub_login(hub.hub_url, "bob", "tre-demo")) as bob,
    ):
        a_server = running_workspace(alice, "alice", portal.project)
        b_server = running_workspace(
            bob, "bob", portal.project
        )  # a co-member: an enclave of his own
        mine = enclaves.find(portal.home.root, portal.project, "alice")
        assert mine != enclaves.find(portal.home.root, portal.project, "bob")
        with Kernel(alice, a_server["url"]) as a, Kernel(bob, b_server["url"]) as b:
            # Her cluster on the hub's gateway: its scheduler listens in her enclave.
            a.run("from tre.workspace import cluster, close_cluster; c = cluster(workers=1)")
            address = a.value("c.scheduler_info()['address']")
            assert address.startswith(f"tls://{mine.address}:")
            port = int(address.rsplit(":", 1)[1])
            assert a.value("c.submit(sum, [1, 2]).result()") == 3
            # Without the cluster's own credentials, not even from its own enclave.
            a.run("from distributed import Client; from distributed.security import Security")
            for attempt in (
                f"Client({address!r}, timeout=5)",
                f"Client({address.replace('tls', 'tcp')!r}, timeout=5)",
                f"Client({address!r}, security=Security.temporary(), timeout=5)",
            ):
                with pytest.raises(KernelError):
                    a.run(attempt)
            # Its scheduler's and workers' HTTP servers serve nothing (no logs, task names,
            # call stacks or metrics).
            a.run(PROBE + "import httpx")
            ports = a.value(
                "[c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.http_server.port)]"
                " + list(c.run(lambda dask_worker: dask_worker.http_server.port).values())"
            )
            for http in ports:
                for route in ("health", "metrics", "info/main/workers.html"):
                    url = f"http://{mine.address}:{http}/{route}"
                    assert a.value(f"httpx.get({url!r}).status_code") == 404, url
            # A co-member's kernel does not reach it at all.
            b.run(PROBE)
            for host in (mine.address, "127.0.0.1"):
                assert b.value(f"reach({host!r}, {port})") != "connected"
            a.run("close_cluster()")
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)
        assert stop_workspace(bob, "bob", portal.project).status_code in (202, 204)


#: Files the kernel writes in the researcher's folder: what the browser may then be handed.
WRITE_FILES = """
import json, os, duckdb
with open("big.csv", "w") as f:
    f.write("pupil,attainment8,sex\\n")
    line = "0123456789abcdef0123456789abcdef,55.5,F\\n"
    f.write(line * ((50 << 20) // len(line)))
open("few.csv", "w").write("".join(f"p{i},{i}\\n" for i in range(30)))
from tre.workspace import connect
import pyarrow as pa, pyarrow.parquet as pq
rows = connect().execute("SELECT * FROM pupils LIMIT 100").fetchdf()
pq.write_table(pa.Table.from_pandas(rows), "pupils.parquet")
os.rename("pupils.parquet", "analysis.ipynb")
cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "print(1)",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\\n"}]}
notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
json.dump(notebook, open("normal.ipynb", "w"))
loud = dict(cell, outputs=[{"output_type": "stream", "name": "stdout", "text": "x" * (1 << 20)}])
json.dump(dict(notebook, cells=[loud]), open("loud.ipynb", "w"))
open("code.py", "w").write("import os\\nprint(os.getcwd())\\n")
"""


#: Files JupyterLab's own APIs read from the researcher's folder, each carrying a CSV.
LAB_FILES = """
import json, os
csv = "".join(f"p{i},{i},{'x' * 40}\\n" for i in range(10000))
lab = os.path.expanduser("~/.jupyter/lab")
os.makedirs(f"{lab}/workspaces", exist_ok=True)
os.makedirs(f"{lab}/user-settings/@jupyterlab/apputils-extension", exist_ok=True)
os.makedirs(os.path.expanduser("~/.jupyter/nbconfig"), exist_ok=True)
json.dump({"data": {"csv": csv}, "metadata": {"id": "carried"}},
          open(f"{lab}/workspaces/carried.jupyterlab-workspace", "w"))
open(f"{lab}/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings", "w").write(
    "// " + csv.replace("\\n", " ") + "\\n{}")
json.dump({"csv": csv}, open(os.path.expanduser("~/.jupyter/nbconfig/carried.json"), "w"))
os.makedirs(os.path.expanduser("~/.jupyter/labconfig"), exist_ok=True)
json.dump({"csv": csv}, open(os.path.expanduser("~/.jupyter/labconfig/page_config.json"), "w"))
os.makedirs("names", exist_ok=True)
for i in range(200):
    open(f"names/p{i},{i},2019,F", "w").close()
"""


#: What the test above wrote in alice's folder, removed (the hub's tests share her folder).
FORGET_FILES = """
import os, shutil
for name in ("big.csv", "few.csv", "analysis.ipynb", "normal.ipynb", "loud.ipynb", "code.py"):
    os.remove(name)
shutil.rmtree("names")
shutil.rmtree(".jupyter")
"""


def _refusals(portal, since: int) -> list[dict]:
    with portal.db.read() as session:
        found = audit.events(session, object_type="project", object_id=portal.project, after=since)
        return [
            {"actor": e["actor"], **e["details"]}
            for e in found
            if e["action"] == "workspace.file_refused"
        ]


def _last_seq(portal) -> int:
    with portal.db.read() as session:
        return session.execute(sa.select(sa.func.max(audit.AuditEventRow.seq))).scalar() or 0


def test_the_contents_api_hands_over_notebooks_and_code_never_data(hub, portal):
    since = _last_seq(portal)
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = running_workspace(alice, "alice", portal.project)
        api = f"{server['url']}api/contents/"
        with Kernel(alice, server["url"]) as kernel:
            kernel.run(WRITE_FILES)
        for name, query in (
            ("big.csv", "content=1"),
            ("big.csv", "content=1&format=base64&type=file"),
            ("few.csv", "content=1"),
            ("analysis.ipynb", "content=1"),
            ("analysis.ipynb", "content=1&type=notebook"),
            ("analysis.ipynb", "content=1&type=file&format=base64"),
        ):
            answer = alice.get(f"{api}{name}?{query}")
            assert answer.status_code == 403, (name, query, answer.status_code)
            assert "airlock" in answer.text
        normal = alice.get(f"{api}normal.ipynb?content=1&type=notebook")
        assert normal.status_code == 200
        assert normal.json()["content"]["cells"][0]["outputs"][0]["text"] == "1\n"
        loud = alice.get(f"{api}loud.ipynb?content=1&type=notebook").json()
        shown = json.dumps(loud["content"]["cells"][0]["outputs"])
        assert "Output cut by the TRE" in shown and len(shown) < 64 << 10
        assert alice.get(f"{api}code.py?content=1").json()["content"].startswith("import os")
        listing = alice.get(f"{api}?content=1").json()
        assert {"big.csv", "analysis.ipynb"} <= {f["name"] for f in listing["content"]}
        assert alice.get(f"{server['url']}files/code.py").status_code == 403
        # Opened as text, a notebook is what it is opened as a notebook: outputs cut.
        as_text = alice.get(f"{api}loud.ipynb?content=1&type=file&format=text")
        assert as_text.status_code == 200 and len(as_text.json()["content"]) < 64 << 10
        # JupyterLab's settings and workspaces (files of the researcher's folder too) carry
        # no file out, and terminals are off.
        listing = alice.get(f"{server['url']}lab/api/settings")  # what JupyterLab loads
        assert listing.status_code == 200, len(listing.content)
        with Kernel(alice, server["url"]) as kernel:
            kernel.run(LAB_FILES)
        page = alice.get(f"{server['url']}lab")  # the page JupyterLab opens: not carrying it
        assert page.status_code in (200, 403) and "xxxxxxxxxx" not in page.text
        assert alice.get(f"{api}names?content=1").status_code == 403  # names that are rows
        for route in (
            "lab/api/settings",
            "lab/api/workspaces",
            "lab/api/settings/@jupyterlab/apputils-extension:themes",
        ):
            assert alice.get(f"{server['url']}{route}").status_code == 403, route
        # Configuration sections are not read from the researcher's folder at all.
        section = alice.get(f"{server['url']}api/config/carried")
        assert section.status_code == 200 and "xxxxxxxxxx" not in section.text
        assert alice.get(f"{server['url']}api/terminals").status_code == 404
        with Kernel(alice, server["url"]) as kernel:  # her folder as the other tests expect it
            kernel.run(FORGET_FILES)
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)
    refused = _refusals(portal, since)
    assert {r["file"] for r in refused} == {"big.csv", "few.csv", "analysis.ipynb", "names"}
    assert all(r["actor"] == "alice" and r["bytes"] > 0 for r in refused)
    assert not any("0123456789abcdef" in json.dumps(r) for r in refused), "never the content"


#: Run in alice's kernel of project A: the portal's API with her own token, as a kernel could
#: call it to carry rows out in free text, or to fetch another project's results.
PORTAL_CALLS = """
import httpx, os
from tre.workspace import api
portal = os.environ["TRE_PORTAL_URL"]
headers = {{"Authorization": "Bearer " + api.access_token()}}
rows = "p1,55,F\\n" * 20000
def status(method, path, body=None):
    return httpx.request(method, portal + path, json=body, headers=headers, timeout=30).status_code
answers = {{
    "me": status("GET", "/api/v1/me"),
    "application": status("POST", "/api/v1/projects", {{"id": "carried", "lay_summary": rows}}),
    "other project's request": status(
        "POST", "/api/v1/requests", {{"project": {other!r}, "title": "x" * 10}}
    ),
    "other project's outputs": status("GET", "/api/v1/projects/{other}/outputs"),
    "an output": status("GET", "/api/v1/outputs/{output}"),
    "a page": status("GET", "/"),
    "own project's request, rows as title": status(
        "POST", "/api/v1/requests", {{"project": {own!r}, "title": rows}}
    ),
}}
"""


def test_a_kernel_calls_the_portal_for_its_own_project_only(hub, portal):
    """Found by the fourth review: the kernel holds the researcher's token for the portal,
    whose free text (a request's title, an application) carried rows out unchecked."""
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = running_workspace(alice, "alice", portal.project)
        with Kernel(alice, server["url"]) as kernel:
            kernel.run(
                PORTAL_CALLS.format(own=portal.project, other=portal.pending, output=portal.output)
            )
            answers = kernel.value("answers")
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)
    rows_as_title = answers.pop("own project's request, rows as title")
    assert answers == dict.fromkeys(answers, 403), answers
    assert rows_as_title == 422  # its own project's call, but no title is that long
    with portal.api("alice") as outside:  # from home: the same limit, whatever the address
        made = outside.post("/requests", json={"project": portal.project, "title": "x" * 201})
        assert made.status_code == 422 and "at most 200" in made.text


#: Found by the fourth review: rows printed as pandas prints them, a kernel specification of
#: the researcher's own (whose folder the ``kernelspecs/`` route serves file by file), and a
#: JupyterLab workspace small enough to pass the size cap.
PRINTED_FILES = """
import json, os
from tre.workspace import connect
rows = connect().execute("SELECT * FROM pupils LIMIT 40").fetchdf()
open("rows.txt", "w").write(rows.to_string())
cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "rows",
        "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                     "data": {"text/html": rows.to_html(), "text/plain": "a table"}}]}
json.dump({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
          open("shown.ipynb", "w"))
for folder in ("~/.ipython/kernels/leak", "~/.local/share/jupyter/kernels/leak2"):
    folder = os.path.expanduser(folder)
    os.makedirs(folder, exist_ok=True)
    json.dump({"argv": ["python3", "-c", "0"], "display_name": "leak", "language": "python"},
              open(f"{folder}/kernel.json", "w"))
    rows.to_csv(f"{folder}/rows.csv")
lab = os.path.expanduser("~/.jupyter/lab/workspaces")
os.makedirs(lab, exist_ok=True)
json.dump({"data": {"rows": rows.to_string()}, "metadata": {"id": "small"}},
          open(f"{lab}/small.jupyterlab-workspace", "w"))
"""


def test_rows_printed_or_hidden_in_a_kernel_specification_are_not_handed_over(hub, portal):
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = running_workspace(alice, "alice", portal.project)
        url = server["url"]
        with Kernel(alice, url) as kernel:
            kernel.run(PRINTED_FILES)
        try:
            assert alice.get(f"{url}api/contents/rows.txt?content=1").status_code == 403
            shown = alice.get(f"{url}api/contents/shown.ipynb?content=1&type=notebook")
            outputs = json.dumps(shown.json()["content"]["cells"][0]["outputs"])
            assert "Output cut by the TRE" in outputs and "<tr" not in outputs
            for name in ("leak", "leak2"):
                assert alice.get(f"{url}kernelspecs/{name}/rows.csv").status_code == 404, name
                assert alice.get(f"{url}kernelspecs/{name}/kernel.json").status_code == 404
            assert set(alice.get(f"{url}api/kernelspecs").json()["kernelspecs"]) == {"python3"}
            assert alice.get(f"{url}kernelspecs/python3/logo-64x64.png").status_code == 200
            small = alice.get(f"{url}lab/api/workspaces")  # lists every one, whole
            assert small.status_code == 403 and "columns aligned" in small.text
        finally:
            with Kernel(alice, url) as kernel:
                kernel.run(
                    "import os, shutil; os.remove('rows.txt'); os.remove('shown.ipynb'); "
                    "[shutil.rmtree(os.path.expanduser(f)) for f in "
                    "('~/.ipython', '~/.local', '~/.jupyter')]"
                )
            assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)


#: Written into the researcher's folder: configuration that would undo the server's.
UNDO_CONFIG = """
import os, textwrap
undo = textwrap.dedent('''
    c.ServerApp.contents_manager_class = (
        "jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager"
    )
    c.ContentsManager.files_handler_class = "jupyter_server.files.handlers.FilesHandler"
    c.ContentsManager.files_handler_params = {}
''')
os.makedirs(".jupyter", exist_ok=True)
for path in (".jupyter/jupyter_server_config.py", "jupyter_server_config.py"):
    open(path, "w").write(undo)
site = os.path.expanduser("~/.local/lib/python3.11/site-packages")
os.makedirs(site, exist_ok=True)
open(os.path.join(site, "undo.pth"), "w").write("import os; os.environ['TRE_UNDONE'] = '1'\\n")
open("data.csv", "w").write("".join(f"p{i},{i}\\n" for i in range(30)))
"""


def test_the_researchers_folder_cannot_undo_the_servers_configuration(hub, portal):
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = running_workspace(alice, "alice", portal.project)
        with Kernel(alice, server["url"]) as kernel:
            kernel.run(UNDO_CONFIG)
        assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)
        time.sleep(1)
        server = running_workspace(alice, "alice", portal.project)
        try:
            assert alice.get(f"{server['url']}api/contents/data.csv?content=1").status_code == 403
            assert alice.get(f"{server['url']}files/data.csv").status_code == 403
            with Kernel(alice, server["url"]) as kernel:
                kernel.run("import os")
                # The server's memory and environment: not readable by its own kernels.
                for what in ("mem", "environ"):
                    with pytest.raises(KernelError) as refused:
                        kernel.run(f"open(f'/proc/{{os.getppid()}}/{what}', 'rb').read(1)")
                    assert refused.value.name == "PermissionError", what
                kernel.run(
                    "import shutil; shutil.rmtree('.jupyter'); shutil.rmtree('.local'); "
                    "os.remove('jupyter_server_config.py')"
                )
        finally:
            assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)


def test_an_enclave_is_made_once_and_removed_whole(tmp_path):
    home, ports = tmp_path / "home", [40001, 40002]
    made = enclaves.ensure(home, "p-one", "alice", ports)
    try:
        again = enclaves.ensure(home, "p-one", "alice", [40003, 40002])
        other = enclaves.ensure(home, "p-one", "bob", ports)
        assert again == made and other.subnet != made.subnet
        assert enclaves.of_home(home) == [("p-one", "alice"), ("p-one", "bob")]
        assert (
            "40003"
            in subprocess.run(
                ["nft", "list", "table", "inet", made.table], capture_output=True, text=True
            ).stdout
        )
    finally:
        assert enclaves.remove(home, "p-one", ["bob"]) == 1
        assert enclaves.of_home(home) == [("p-one", "alice")]
        assert enclaves.remove(home, "p-one") == 1
    for e in (made, other):
        assert not Path(f"/run/netns/{e.namespace}").exists()
        assert subprocess.run(["ip", "link", "show", e.link], capture_output=True).returncode != 0
        listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert e.table not in listed
    assert enclaves.of_home(home) == []
