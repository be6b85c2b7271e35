"""JupyterHub with its proxy, behind the real Keycloak, over the portal's TRE home: logins
through Keycloak's form, one workspace per project for its members only, each under an OS
account of its own that reaches its project's extracts and nothing else of the TRE."""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import time
from contextlib import closing
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa

from tests.conftest import HUB_OTHER as OTHER
from tests.conftest import REPO, example_application, provision_project
from tre import airlock, audit, projects
from tre.hub import workspace_account
from tre.hub.kernels import (
    Kernel,
    KernelError,
    start_workspace,
    stop_workspace,
    workspace_ready,
)
from tre.identity.groups import group_name
from tre.identity.tokens import hub_login
from tre.outputs import privacy
from tre.people import local_person
from tre.projects import extracts

pytestmark = [pytest.mark.hub, pytest.mark.keycloak]


def test_only_a_member_starts_a_provisioned_projects_workspace(hub, portal):
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        bob = hub_login(hub.hub_url, "bob", "tre-demo")
        try:
            _refusals(alice, bob, portal)
        finally:
            bob.close()


def _refusals(alice, bob, portal) -> None:
    # Keycloak's groups, mirrored (shown, not what decides).
    groups = alice.get("/hub/api/user").json()["groups"]
    assert group_name(portal.project) in groups and group_name(OTHER) not in groups
    default = start_workspace(alice, "alice", "")
    assert default.status_code == 403
    assert portal.project in default.json()["message"]  # says which workspace to start
    foreign = start_workspace(alice, "alice", OTHER)
    assert foreign.status_code == 403 and "not a member" in foreign.json()["message"]
    pending = start_workspace(bob, "bob", portal.pending)
    assert pending.status_code == 403 and "is submitted" in pending.json()["message"]
    assert start_workspace(alice, "bob", OTHER).status_code in (403, 404)  # nobody starts another's
    # The hub records every named server asked for; the sweeper removes the refused ones (each
    # user's in a sweep of its own: both are waited for).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        _server_records(alice, "alice") & {OTHER} or _server_records(bob, "bob") & {portal.pending}
    ):
        time.sleep(0.5)
    assert OTHER not in _server_records(alice, "alice"), "a refused server's record was left"
    assert portal.pending not in _server_records(bob, "bob")


def _server_records(session, user: str) -> set[str]:
    listed = session.get(f"/hub/api/users/{user}", params={"include_stopped_servers": "1"})
    listed.raise_for_status()
    return set(listed.json()["servers"])


def test_a_workspace_runs_as_its_own_account_and_reads_only_its_project(hub, portal):
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        _workspace(alice, portal)


def _running(alice, project: str) -> dict:
    """Start alice's workspace of ``project``; return its server once ready."""
    started = start_workspace(alice, "alice", project)
    assert started.status_code in (201, 202), started.text
    return workspace_ready(alice, "alice", project, poll=1)


def _account_pids(uid: int) -> list[str]:
    return [
        p
        for p in os.listdir("/proc")
        if p.isdigit() and _status(p).get("Uid", "").split()[:1] == [str(uid)]
    ]


def _workspace(alice, portal) -> None:
    server = _running(alice, portal.project)
    lab = alice.get(f"{server['url']}lab")  # through the proxy and the hub's OAuth, as a browser
    assert lab.status_code == 200 and str(lab.url).endswith(f"{server['url']}lab"), lab.url
    assert alice.get(f"{server['url']}api/status").status_code == 200
    assert "@jupyterlab/filebrowser-extension:download" in lab.text  # disabled in the page

    account = pwd.getpwnam(workspace_account("alice", portal.project))
    home = portal.home
    work = extracts.folder(home, portal.project) / "work"
    with Kernel(alice, server["url"]) as kernel:
        # Who the kernel runs as, and with which groups.
        kernel.run(KERNEL_HELPERS)
        uid, groups = kernel.value("[os.getuid(), sorted(os.getgroups())]")
        assert uid == account.pw_uid != 0
        project_group = grp.getgrnam(extracts.os_group(portal.project)).gr_gid
        assert set(groups) == {account.pw_gid, project_group}
        # What its account may open.
        readable = {
            "its extracts": extracts.folder(home, portal.project) / "extracts" / extracts.MANIFEST,
        }
        refused = {
            "another project's extracts": extracts.folder(home, OTHER)
            / "extracts"
            / extracts.MANIFEST,
            "the keys": home.keys / "link.key",
            "the metadata database": home.root / "db" / "tre.db",
            "the hub's state": home.root / "hub" / "jupyterhub.sqlite",
            "the curated store": next(home.curated.rglob("*.parquet")),
            "the landing store": next(home.landing.rglob("*.csv")),
        }
        for what, path in {**readable, **refused}.items():
            assert path.exists(), what
            opened = kernel.value(f"opens({str(path)!r})")
            assert opened == (what in readable), (what, opened)
        # Her own folder, and nowhere else of the project's: not beside her co-members' folders.
        assert kernel.value(f"bool(open({str(work / 'alice' / 'was-here')!r}, 'w').write('x'))")
        assert not kernel.value(f"writes({str(work / 'alice-was-here')!r})")
        kernel.run("open('results.csv', 'w').write('n,42\\n')")
        # Its DuckDB reads the extracts and nothing else, whatever SQL it is given.
        kernel.run("from tre.workspace import connect; con = connect()")
        assert kernel.value("con.execute('SELECT count(*) FROM pupils').fetchone()[0]") > 0
        other = next((extracts.folder(home, OTHER) / "extracts").rglob("*.parquet"))
        for sql in (
            f"SELECT count(*) FROM read_parquet('{other}')",
            f"SELECT count(*) FROM read_parquet('{home.curated}/**/*.parquet')",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SET enable_external_access = true",
            "SET lock_configuration = false",
        ):
            with pytest.raises(KernelError) as refusal:
                kernel.run(f"con.execute({sql!r}).fetchall()")
            assert refusal.value.name in ("PermissionException", "InvalidInputException"), sql

    contents = alice.get(f"{server['url']}api/contents/results.csv")
    assert contents.status_code == 200  # JupyterLab opens it…
    assert alice.get(f"{server['url']}files/results.csv").status_code == 403  # …no download
    export = alice.get(f"{server['url']}nbconvert/html/results.csv?download=true")
    assert export.status_code == 404
    assert stop_workspace(alice, "alice", portal.project).status_code in (202, 204)


#: Run first in a kernel: ``opens(path)`` says whether the kernel's account may read a file.
KERNEL_HELPERS = """
import os

def opens(path):
    try:
        open(path, "rb").close()
        return True
    except OSError:  # refused, or not even there in the sandbox (a home under /tmp)
        return False

def writes(path):
    try:
        open(path, "wb").close()
        return True
    except OSError:
        return False
"""


def test_the_notebook_templates_run_in_a_workspace_and_request_an_export(hub, portal):
    """Each template, top to bottom with nbclient, inside alice's spawned workspace: the
    client calls the portal as alice with the token the hub keeps for her."""
    templates = sorted((REPO / "notebooks_templates").glob("*.ipynb"))
    assert len(templates) == 4
    spent_before = privacy.remaining(portal.db, portal.project)[1]
    requests_before = {r.id for r in airlock.of_project(portal.db, portal.project)}
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        server = _running(alice, portal.project)
        with Kernel(alice, server["url"], timeout=600) as kernel:
            kernel.run("from pathlib import Path")
            copied = kernel.value("sorted(p.name for p in Path.home().glob('*.ipynb'))")
            assert copied == [t.name for t in templates]
            for template in templates:
                kernel.run(
                    "import nbclient, nbformat\n"
                    f"nb = nbformat.read({template.name!r}, as_version=4)\n"
                    "nbclient.NotebookClient(nb, timeout=300, kernel_name='python3').execute()\n"
                    f"nbformat.write(nb, 'ran-' + {template.name!r})"
                )
            # No Keycloak token (a JWT) in the kernel's environment.
            kernel.run("import os")
            assert kernel.value("[k for k, v in os.environ.items() if v.startswith('eyJ')]") == []
        stop_workspace(alice, "alice", portal.project)
    made = [r for r in airlock.of_project(portal.db, portal.project) if r.id not in requests_before]
    assert len(made) == 1 and made[0].author == "alice" and made[0].state == "in_review"
    view = airlock.view(portal.db, made[0].id, local_person("alice"))
    assert [o["output"]["name"] for o in view["outputs"]] == [
        "Attainment 8 by FSM eligibility and sex"
    ]
    spent = spent_before - privacy.remaining(portal.db, portal.project)[1]
    assert spent == pytest.approx(0.3)  # the count and the mean ran; the histogram was planned
    work = extracts.folder(portal.home, portal.project) / "work" / "alice"
    ran = nbformat.read(work / "ran-01-getting-started.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in ran.cells for o in c.get("outputs", []))
    assert "Refused:" in printed and "pupils" in printed
    # Nor in anything the notebooks wrote.
    assert not [f for f in work.rglob("*") if f.is_file() and b"eyJ" in f.read_bytes()]


def test_suspending_a_project_stops_its_running_workspaces(hub, portal):
    """Through the access hooks every command and the portal install: the hub's API, with the
    TRE's own service token."""
    ada = local_person("ada")
    projects.install_access_hooks(lambda: hub)
    try:
        with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
            _running(alice, portal.project)
            account = pwd.getpwnam(workspace_account("alice", portal.project))
            assert _account_pids(account.pw_uid)
            projects.set_state(portal.db, portal.project, "suspend", ada, "audit of access")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _account_pids(account.pw_uid):
                time.sleep(0.5)
            assert not _account_pids(account.pw_uid), "the workspace still runs"
            servers = alice.get("/hub/api/users/alice").json()["servers"]
            assert portal.project not in servers
            refused = start_workspace(alice, "alice", portal.project)
            assert refused.status_code == 403 and "is suspended" in refused.json()["message"]
    finally:
        projects.set_state(portal.db, portal.project, "resume", ada)
        projects.ACCESS_HOOKS.clear()


def _status(pid: str) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_the_sweeper_stops_what_the_hub_would_not_start_and_expires_due_projects(hub, portal):
    """Without any command or portal page: a state changed behind the TRE's back (here, in the
    database directly, as if the hub had been down when the project was suspended), then an
    end date that passes."""
    today = dt.date.today()
    project = example_application("hub-sweep", days=30)
    provision_project(portal.home, portal.db, project, local_person("alice"))

    def set_column(**values) -> None:
        with portal.db.write() as session:
            session.execute(
                sa.update(projects.Project)
                .where(projects.Project.id == project.id)
                .values(**values)
            )

    def stopped_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if project.id not in alice.get("/hub/api/users/alice").json()["servers"]:
                return not _account_pids(account.pw_uid)
            time.sleep(0.5)
        return False

    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        _running(alice, project.id)
        account = pwd.getpwnam(workspace_account("alice", project.id))
        set_column(state="suspended")
        assert stopped_within(30), "the sweeper left a suspended project's workspace running"

        set_column(state="provisioned")
        _running(alice, project.id)
        set_column(end_date=(today - dt.timedelta(days=1)).isoformat())
        assert stopped_within(30), "the sweeper left an expired project's workspace running"
    assert projects.get(portal.db, project.id).state == "expired"
    with portal.db.read() as session:
        actions = [
            e["action"] for e in audit.events(session, object_type="project", object_id=project.id)
        ]
    assert actions[-1] == "project.expired"
