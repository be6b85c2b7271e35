"""The portal served by uvicorn behind the real Keycloak: every API endpoint and every page as
every role (and anonymous), logins through Keycloak's own login form, CSRF, security headers,
and the Keycloak group of a project following its lifecycle."""

from __future__ import annotations

import dataclasses
import re

import httpx
import pytest

from tests.conftest import passable
from tre import projects
from tre.identity import groups
from tre.people import local_person
from tre.projects import extracts

pytestmark = pytest.mark.keycloak

ROLES = ("alice", "bob", "dora", "hugh", "olga", "oscar", "ada")
EVERYONE = dict.fromkeys(ROLES, 200)
#: Who sees the provisioned project: its members, the custodians of its data, administrators.
VIEWERS = {
    **dict.fromkeys(ROLES, 403),
    **dict.fromkeys(("alice", "bob", "dora", "hugh", "ada"), 200),
}


def only(status: int, *allowed: str) -> dict[str, int]:
    return {role: status if role in allowed else 403 for role in ROLES}


def api_matrix(p) -> list[tuple[str, str, dict | None, dict[str, int]]]:
    """(method, path, JSON body, expected status per role). A body that is wrong *after* the
    permission check (too short a reason, an impossible move) keeps the allowed calls from
    changing anything, so the matrix shows who gets past the permission functions."""
    table = {"name": "m", "kind": "table", "dataset": "pupils", "rows": ["sex"]}
    dp = {"name": "n", "kind": "dp", "dataset": "pupils", "query": "count", "epsilon": 0.1}
    application = {
        "id": "matrix-application",
        "title": "An application from the matrix test",
        "lay_summary": "What the matrix test would study, in plain words for the public.",
        "purpose": "Check that only the lead of a project can submit its application.",
        "legal_basis": "UK GDPR Article 6(1)(e) public task; Article 9(2)(j) research.",
        "lead": "alice",
        "members": ["alice"],
        "start": "2026-01-01",
        "end": "2027-12-31",
        "privacy_budget": 1.0,
        "datasets": {"pupils": ["sex"]},
    }
    rq, rl = f"/requests/{p.in_review}", f"/requests/{p.released}"
    return [
        ("GET", "/me", None, EVERYONE),
        ("GET", "/catalog", None, EVERYONE),
        ("GET", "/catalog/pupils", None, EVERYONE),
        ("GET", "/catalog.jsonld", None, EVERYONE),
        ("GET", "/projects", None, EVERYONE),
        ("POST", "/projects", application, only(201, "alice")),
        ("GET", f"/projects/{p.project}", None, VIEWERS),
        ("GET", f"/projects/{p.project}/risk", None, only(200, "dora", "hugh", "ada")),
        ("POST", f"/projects/{p.project}/decision", {"approve": True}, only(409, "dora", "hugh")),
        ("GET", f"/projects/{p.project}/outputs", None, VIEWERS),
        # Outputs and DP queries are computed in the project's workspace only (its enclave):
        # from here, no one (tests/security/test_disclosure.py).
        ("POST", f"/projects/{p.project}/outputs", table, dict.fromkeys(ROLES, 403)),
        ("GET", f"/projects/{p.project}/budget", None, VIEWERS),
        ("POST", f"/projects/{p.project}/dp/plan", dp, only(200, "alice", "bob")),
        # A workspace's refusal to show a file, recorded for its researcher (a member).
        (
            "POST",
            f"/projects/{p.project}/workspace/refusals",
            {"file": "matrix.csv", "bytes": 10, "why": "the matrix test"},
            only(201, "alice", "bob"),
        ),
        ("POST", f"/projects/{p.project}/dp", dp, dict.fromkeys(ROLES, 403)),
        ("POST", f"/projects/{p.pending}/provision", {}, only(409, "ada")),
        ("GET", f"/outputs/{p.output}", None, EVERYONE),
        ("POST", "/requests", {"project": p.project, "title": "x"}, only(422, "alice", "bob")),
        ("GET", f"/requests?project={p.project}", None, VIEWERS),
        ("GET", rq, None, only(200, "alice", "bob", "olga", "oscar", "ada")),
        ("POST", f"{rq}/outputs", {"output_id": p.output, "description": "x"}, only(422, "alice")),
        ("POST", f"{rq}/submit", None, only(409, "alice")),
        ("POST", f"{rl}/withdraw", None, only(409, "alice")),
        ("POST", f"{rq}/outputs/1/reviews", {"vote": "reject"}, only(422, "olga", "oscar")),
        ("POST", f"{rl}/revoke", {"reason": "x"}, only(422, "olga", "oscar", "ada")),
        ("GET", f"{rl}/outputs/1/download", None, only(200, "alice", "bob")),
        ("GET", "/review/queue", None, only(200, "olga", "oscar")),
        ("GET", "/custodian/usage", None, only(200, "dora", "hugh")),
        ("GET", "/audit/verify", None, only(200, "ada")),
        ("GET", "/users", None, only(200, "ada")),
    ]


def template(path: str) -> str:
    path = path.split("?")[0]
    path = re.sub(r"/(portal-project|pending-project)", "/{project_id}", path)
    path = re.sub(r"/requests/\d+", "/requests/{request_id}", path)
    path = re.sub(r"/outputs/\d+/", "/outputs/{slot}/", path)
    path = re.sub(r"/outputs/\d+$", "/outputs/{output_id}", path)
    path = re.sub(r"/catalog/pupils", "/catalog/{dataset}", path)
    path = re.sub(r"\{project_id\}/(provision)", "{project_id}/{action}", path)
    return path


def test_the_matrix_covers_every_endpoint_of_the_api(portal):
    spec = httpx.get(f"{portal.url}/api/v1/openapi.json").json()
    published = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    covered = {(m, "/api/v1" + template(path)) for m, path, _, _ in api_matrix(portal)}
    assert published == covered


def test_every_endpoint_answers_every_role_as_the_permissions_say(portal):
    wrong = []
    for role in ROLES:
        with portal.api(role) as client:
            for method, path, body, expected in api_matrix(portal):
                answer = client.request(method, path, json=body)
                if answer.status_code != expected[role]:
                    wrong.append((role, method, path, answer.status_code, answer.text[:200]))
                elif answer.status_code == 403:
                    assert answer.json()["detail"], "a refusal says why"
    with portal.api() as anonymous:
        for method, path, body, _ in api_matrix(portal):
            answer = anonymous.request(method, path, json=body)
            if answer.status_code != 401:
                wrong.append(("anonymous", method, path, answer.status_code, answer.text[:200]))
    assert wrong == []


def test_a_forged_or_foreign_token_is_refused(portal):
    token = portal.token("ada")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    for bad in (forged, "not-a-token", token + "x"):
        answer = httpx.get(
            f"{portal.url}/api/v1/me", headers={"Authorization": f"Bearer {bad}"}, timeout=30
        )
        assert answer.status_code == 401, bad


def test_the_api_never_reads_the_session_cookie(portal):
    client = portal.login("ada")
    answer = client.get("/api/v1/audit/verify")
    client.close()
    assert answer.status_code == 401


def test_the_release_downloads_with_the_checked_cells_only(portal):
    with portal.api("bob") as client:
        answer = client.get(f"/requests/{portal.released}/outputs/1/download")
    assert answer.status_code == 200
    lines = answer.text.splitlines()
    assert lines[0] == "row,column,value,note"
    for line in lines[1:]:
        value, note = line.split(",")[2:4]
        assert note == "suppressed" or float(value) >= 10


def test_a_projects_request_list_shows_only_requests_the_caller_may_open(portal):
    listed = {}
    for user in ("alice", "dora"):
        with portal.api(user) as client:
            answer = client.get("/requests", params={"project": portal.project})
            assert answer.status_code == 200, user
            listed[user] = {r["id"] for r in answer.json()}
            for request_id in listed[user]:
                assert client.get(f"/requests/{request_id}").status_code == 200, user
    assert {portal.in_review, portal.released} <= listed["alice"]
    assert listed["dora"] == set()  # a custodian sees the project, not its export requests


# -- pages -------------------------------------------------------------------------------------


def page_matrix(p) -> list[tuple[str, dict[str, int]]]:
    rq, rl = f"/requests/{p.in_review}", f"/requests/{p.released}"
    return [
        ("/", EVERYONE),
        ("/catalog", EVERYONE),
        ("/catalog/pupils", EVERYONE),
        ("/catalog.jsonld", EVERYONE),
        ("/projects", EVERYONE),
        ("/projects/apply", only(200, "alice", "bob")),
        (f"/projects/{p.project}", VIEWERS),
        (f"/projects/{p.pending}", only(200, "bob", "dora", "hugh", "ada")),
        (f"/outputs/{p.output}", EVERYONE),
        (rq, only(200, "alice", "bob", "olga", "oscar", "ada")),
        (f"{rl}/outputs/1/download", only(200, "alice", "bob")),
        ("/review", only(200, "olga", "oscar")),
        ("/decisions", only(200, "dora", "hugh")),
        ("/usage", only(200, "dora", "hugh")),
        ("/admin", only(200, "ada")),
    ]


def post_pages(p) -> list[str]:
    rq = f"/requests/{p.in_review}"
    return [
        "/logout",
        "/projects/apply",
        f"/projects/{p.pending}/decision",
        f"/projects/{p.pending}/action/provision",
        "/requests",
        f"{rq}/outputs",
        f"{rq}/submit",
        f"{rq}/outputs/1/reviews",
    ]


@pytest.fixture(scope="module")
def sessions(portal):
    clients = {role: portal.login(role) for role in ROLES}
    yield clients
    for client in clients.values():
        client.close()


def test_every_page_answers_every_role_as_the_permissions_say(portal, sessions):
    wrong = []
    for role, client in sessions.items():
        for path, expected in page_matrix(portal):
            answer = client.get(path, follow_redirects=False)
            if answer.status_code != expected[role]:
                wrong.append((role, path, answer.status_code))
            elif answer.status_code == 403:
                assert "That is not possible" in answer.text, answer.text
    with httpx.Client(base_url=portal.url, timeout=30) as anonymous:
        for path, _ in page_matrix(portal):
            answer = anonymous.get(path)
            if path == "/":
                assert answer.status_code == 200 and "Log in" in answer.text
            elif answer.status_code != 303 or not answer.headers["location"].startswith(
                "/login?next="
            ):
                wrong.append(("anonymous", path, answer.status_code))
    assert wrong == []


def test_forms_without_the_session_csrf_token_change_nothing(portal, sessions):
    before = projects.get(portal.db, portal.pending).state
    for role, client in sessions.items():
        for path in post_pages(portal):
            for token in ("", "forged-token"):
                answer = client.post(path, data={"csrf": token}, follow_redirects=False)
                assert answer.status_code in (403, 422), (role, path, answer.status_code)
                if answer.status_code == 403:
                    assert "did not come from this portal" in answer.text
    assert projects.get(portal.db, portal.pending).state == before
    with httpx.Client(base_url=portal.url, timeout=30) as anonymous:
        for path in post_pages(portal):
            answer = anonymous.post(path, data={"csrf": "x", "output_id": "1"})
            assert answer.status_code == 303 and "/login" in answer.headers["location"], path


def test_a_refused_form_says_why(portal, sessions):
    client = sessions["alice"]
    answer = client.post(f"/projects/{portal.pending}/action/provision", data={"csrf": client.csrf})
    assert answer.status_code == 403
    assert "tre-admin" in answer.text or "not a member" in answer.text


def test_pages_carry_security_headers_and_secure_cookies(portal, sessions):
    answer = sessions["alice"].get("/")
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"
    login = httpx.get(f"{portal.url}/login", follow_redirects=False, timeout=30)
    assert "httponly" in login.headers["set-cookie"].lower()
    assert "samesite=lax" in login.headers["set-cookie"].lower()
    assert login.headers["location"].startswith(portal.keycloak.issuer)
    assert "code_challenge_method=S256" in login.headers["location"]


def test_a_login_with_a_tampered_state_is_refused(portal):
    with httpx.Client(base_url=portal.url, timeout=30) as client:
        client.get("/login", follow_redirects=False)
        answer = client.get("/auth/callback?code=abc&state=not-the-state")
    assert answer.status_code == 401
    assert "does not match this browser" in answer.text


def test_logging_out_ends_the_session(portal):
    client = portal.login("bob")
    assert client.get("/projects", follow_redirects=False).status_code == 200
    client.post("/logout", data={"csrf": client.csrf}, follow_redirects=False)
    answer = client.get("/projects", follow_redirects=False)
    client.close()
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_a_login_redirect_never_leaves_the_portal(portal):
    answer = httpx.get(
        f"{portal.url}/login?next=https://evil.example.org/", follow_redirects=False, timeout=30
    )
    from itsdangerous import URLSafeTimedSerializer

    from tre import keys
    from tre.portal.auth import LOGIN_COOKIE

    signer = URLSafeTimedSerializer(
        keys.purpose_key(portal.home.keys, "portal cookies").hex(), salt="tre-login"
    )
    assert signer.loads(answer.cookies[LOGIN_COOKIE])["next"] == "/"


# -- Keycloak groups ---------------------------------------------------------------------------


def test_the_project_group_follows_the_project(portal):
    settings = portal.keycloak.settings.__class__.from_environ(portal.environ)
    project_groups = groups.ProjectGroups(settings)
    assert project_groups.members(portal.project) == ["alice", "bob"]
    with portal.api("alice") as client:
        token_groups = client.get("/me").json()
    assert token_groups["username"] == "alice"
    ada = local_person("ada")
    projects.install_access_hooks(lambda: settings)
    try:
        projects.set_state(portal.db, portal.project, "suspend", ada, "audit of the project")
        assert project_groups.members(portal.project) == []
        projects.set_state(portal.db, portal.project, "resume", ada, "audit finished")
        assert project_groups.members(portal.project) == ["alice", "bob"]
    finally:
        projects.ACCESS_HOOKS.clear()
    assert projects.get(portal.db, portal.project).state == "provisioned"


def test_provisioning_and_closing_through_the_api_create_and_delete_the_group(portal):
    settings = portal.keycloak.settings.__class__.from_environ(portal.environ)
    project_groups = groups.ProjectGroups(settings)
    application = dataclasses.replace(
        projects.get(portal.db, portal.pending).spec_object(), id="closing-project"
    )
    projects.submit(portal.db, application, local_person("bob"))
    projects.decide(portal.db, application.id, "dfe", local_person("dora"), approve=True)
    projects.decide(portal.db, application.id, "nhs", local_person("hugh"), approve=True)
    with portal.api("ada") as client:
        assert client.post(f"/projects/{application.id}/provision", json={}).status_code == 200
        assert project_groups.members(application.id) == ["bob"]
        closed = client.post(f"/projects/{application.id}/close", json={"reason": "finished"})
        assert closed.status_code == 200, closed.text
    assert project_groups._group_id(application.id, create=False) is None
    assert not extracts.folder(portal.home, application.id).joinpath("extracts").exists()


def test_portal_up_status_and_down_from_the_command_line(keycloak, tmp_path, capsys):
    """`tre portal up` serves the portal in the background, with the demo accounts printed;
    `down` stops it and `status` then says so (exit 69)."""
    from tests.conftest import free_port
    from tre.cli import main
    from tre.identity import KeycloakServer

    url = f"http://127.0.0.1:{free_port()}"
    environ = {
        **keycloak.environ,
        "TRE_HOME": str(passable(tmp_path) / "home"),  # a home of its own: its secret is given
        "TRE_PORTAL_URL": url,
        "TRE_PORTAL_CLIENT_SECRET": KeycloakServer.from_settings(keycloak.settings).secret(
            "portal_secret"
        ),
    }
    assert main(["portal", "status"], environ) == 66  # no home yet: says to create one
    assert main(["init"], environ) == 0
    assert main(["portal", "status"], environ) == 69
    try:
        assert main(["portal", "up"], environ) == 0
        printed = capsys.readouterr().out
        assert f"Portal ready at {url}" in printed
        assert all(user in printed for user in ("alice", "dora", "olga", "ada"))
        token = keycloak.token("olga")
        me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["username"] == "olga"
        assert main(["portal", "status"], environ) == 0
        assert main(["portal", "up"], environ) == 0  # already up: the same server
        assert main(["portal", "status"], environ) == 0
    finally:
        assert main(["portal", "down"], environ) == 0
    assert "Portal stopped." in capsys.readouterr().out
    assert main(["portal", "status"], environ) == 69
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/v1/openapi.json")


def test_connections_are_dealt_evenly_and_a_dead_worker_is_replaced(portal):
    """With two worker processes (the default) the portal's first process hands each new
    connection to the next worker: six keep-alive clients sit three and three, where workers
    accepting for themselves often split them unevenly. A worker that dies is replaced and the
    portal goes on answering."""
    import os
    import signal
    import time
    from urllib.parse import urlsplit

    import psutil

    from tre.portal.server import PortalServer

    port = urlsplit(portal.url).port
    dealer = psutil.Process(PortalServer(portal.home.root, portal.url, portal.environ).pid())
    me = psutil.Process()

    def workers() -> list[psutil.Process]:
        """The live worker processes (not the resource tracker multiprocessing starts too)."""
        found = []
        for child in dealer.children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.Error:  # gone, or a zombie not reaped yet
                pass
        return found

    def my_ports() -> set[int]:
        return {
            c.laddr.port
            for c in me.net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        }

    before = my_ports()
    clients = [httpx.Client(base_url=portal.url) for _ in range(6)]
    try:
        for client in clients:
            assert client.get("/api/v1/openapi.json").status_code == 200
        mine = my_ports() - before
        assert len(mine) == 6
        held = {
            w.pid: sum(1 for c in w.net_connections("tcp") if c.raddr and c.raddr.port in mine)
            for w in workers()
        }
        assert sorted(held.values()) == [3, 3], held

        killed = workers()[0].pid
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = [w.pid for w in workers()]
            if len(alive) == 2 and killed not in alive:
                break
            time.sleep(0.2)
        assert len(alive) == 2 and killed not in alive, alive
        for _ in range(4):  # new connections, dealt to both workers, the new one included
            assert httpx.get(f"{portal.url}/api/v1/openapi.json").status_code == 200
    finally:
        for client in clients:
            client.close()


# -- sessions follow Keycloak --------------------------------------------------------------------


def _outdate_sessions(portal, username: str) -> None:
    """Make the portal sessions of ``username`` as old as the portal trusts a session's roles
    (``portal_role_check_seconds``), rather than waiting that long."""
    import sqlalchemy as sa

    from tre.portal.auth import PortalSession

    with portal.db.write() as session:
        session.execute(
            sa.update(PortalSession)
            .where(PortalSession.username == username)
            .values(checked_at="2000-01-01T00:00:00+00:00")
        )


def test_a_role_removed_in_keycloak_leaves_the_portal(portal):
    from tre.config import Settings

    admin = groups.admin_client(Settings.from_environ(portal.environ))
    otto = admin.get_user_id("otto")
    role = admin.get_realm_role("output-checker")
    client = portal.login("otto")
    try:
        assert client.get("/review", follow_redirects=False).status_code == 200
        admin.delete_realm_roles_of_user(otto, [role])
        _outdate_sessions(portal, "otto")
        answer = client.get("/review", follow_redirects=False)
        assert answer.status_code == 403 and "output-checker" in answer.text
        admin.assign_realm_roles(otto, [role])
        _outdate_sessions(portal, "otto")
        assert client.get("/review", follow_redirects=False).status_code == 200
    finally:
        admin.assign_realm_roles(otto, [role])
        client.close()


def test_a_login_ended_in_keycloak_ends_the_portal_session(portal):
    import hashlib

    from tre.config import Settings
    from tre.portal.auth import SESSION_COOKIE, PortalSession

    admin = groups.admin_client(Settings.from_environ(portal.environ))
    client = portal.login("otto")
    try:
        assert client.get("/review", follow_redirects=False).status_code == 200
        admin.user_logout(admin.get_user_id("otto"))
        # Until the portal asks Keycloak again, the session stands.
        assert client.get("/review", follow_redirects=False).status_code == 200
        _outdate_sessions(portal, "otto")
        answer = client.get("/review", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
        token = hashlib.sha256(client.cookies[SESSION_COOKIE].encode()).hexdigest()
        with portal.db.read() as session:
            assert session.get(PortalSession, token) is None
    finally:
        client.close()


def test_custodians_grant_smaller_dask_clusters_in_the_page_and_the_api(portal, sessions):
    application = dataclasses.replace(
        projects.get(portal.db, portal.pending).spec_object(), id="compute-project"
    )
    projects.submit(portal.db, application, local_person("bob"))
    page = f"/projects/{application.id}"
    dora = sessions["dora"]
    form = {"csrf": dora.csrf, "custodian": "dfe", "decision": "approve"}
    form |= {f"columns.{d}": list(application.datasets[d]) for d in application.datasets_of("dfe")}
    bad = dora.post(f"{page}/decision", data={**form, "compute.workers": "lots"})
    assert bad.status_code == 422 and "whole numbers" in bad.text
    wider = dora.post(f"{page}/decision", data={**form, "compute.workers": "9"})
    assert wider.status_code == 422 and "only lower the Dask clusters" in wider.text
    assert projects.decisions(portal.db, application.id) == []  # nothing half-decided
    done = dora.post(f"{page}/decision", data={**form, "compute.workers": "3"})
    assert done.status_code in (200, 303), done.text
    with portal.api("hugh") as hugh:
        answer = hugh.post(f"{page}/decision", json={"approve": True, "dask_worker_memory_gb": 1.5})
        assert answer.status_code == 200, answer.text
    granted = projects.get(portal.db, application.id).approved().compute
    assert (granted.workers, granted.worker_memory_gb) == (3, 1.5)
    assert granted.worker_cores == application.compute.worker_cores
    shown = sessions["bob"].get(page).text
    assert "each of at most 3 workers, 1 core and 1.5 GiB each" in shown
    assert "Dask clusters of at most 1.5 GiB each" in shown  # hugh's condition
