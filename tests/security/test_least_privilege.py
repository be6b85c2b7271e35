"""Boundary: root, and the accounts the TRE's parts run as.

Only the privileged helper holds root; the portal, the hub, Keycloak run as ``tre``; ingest as
``tre-ingest``; provisioning as ``tre-provision``; outputs and workspaces as accounts of their
project. Each key is readable by the one account that uses it. The helper answers only the
accounts it serves, each only with its own operations, whatever the request says.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.security.conftest import PROJECT, as_account, can_open
from tre import privileged
from tre.cli import account_for, main
from tre.exceptions import ServiceUnavailable
from tre.hub.kernels import start_workspace, stop_workspace, workspace_ready
from tre.identity.tokens import hub_login
from tre.privileged import accounts, helper
from tre.privileged.processes import Limits, call_as, census, unexpected_root


def test_each_key_is_read_by_its_own_account_only(two_projects):
    keys = two_projects.home.keys
    project_key = next((keys / "projects").iterdir())
    owners = {
        keys / "link.key": accounts.INGEST,
        keys / "master.key": accounts.PROVISION,
        project_key: accounts.PROVISION,
        keys / "service.key": accounts.SERVICE,
    }
    everyone = [
        accounts.SERVICE,
        accounts.INGEST,
        accounts.PROVISION,
        privileged.project_group(PROJECT),
        privileged.workspace_account("alice", PROJECT),
    ]
    privileged.call(two_projects.home.root, "prepare_workspace", username="alice", project=PROJECT)
    for key, owner in owners.items():
        readers = {a for a in everyone if as_account(a, can_open, str(key)) == "read"}
        assert readers == {owner}, (key.name, readers)
    # Every service MACs the audit events it writes; only root (the helper) signs checkpoints.
    shared = {a for a in everyone if as_account(a, can_open, str(keys / "audit.key")) == "read"}
    assert shared == {accounts.SERVICE, accounts.INGEST, accounts.PROVISION}
    signing = str(keys / "audit-signing.key")
    assert not {a for a in everyone if as_account(a, can_open, signing) == "read"}


def test_the_landing_store_is_ingests_alone(two_projects):
    landed = next(p for p in two_projects.home.landing.rglob("*") if p.is_file())
    readers = {
        a
        for a in (accounts.SERVICE, accounts.INGEST, accounts.PROVISION)
        if as_account(a, can_open, str(landed)) == "read"
    }
    assert readers == {accounts.INGEST}


def _ask(path, account: str, operation: str, args: dict) -> dict:
    """Send one request to the helper's socket from a process of ``account``."""

    def send() -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
            except OSError as e:
                return {"refused": type(e).__name__}
            data = json.dumps({"operation": operation, "args": args}).encode()
            s.sendall(struct.pack(">I", len(data)) + data)
            size = struct.unpack(">I", s.recv(4))[0]
            answer = b""
            while len(answer) < size:
                answer += s.recv(size - len(answer))
            return json.loads(answer)

    return as_account(account, send)


@pytest.mark.keycloak
def test_the_helper_serves_only_its_accounts_each_with_its_own_operations(portal):
    path = helper.socket_path(portal.home.root)
    workspace = privileged.workspace_account("alice", portal.project)
    privileged.call(portal.home.root, "prepare_workspace", username="alice", project=portal.project)
    worker = privileged.project_group(portal.project)
    # Neither a workspace nor an output worker reaches the socket at all; ingest reaches it
    # (it is of the services' group) and is turned away.
    for account in (workspace, worker):
        answer = _ask(path, account, "stop_workspace", {"username": "bob", "project": "x-y-z"})
        assert answer == {"refused": "PermissionError"}, (account, answer)
    answer = _ask(path, accounts.INGEST, "stop_workspace", {"username": "bob", "project": "xyz"})
    assert answer["error"] == "PermissionDenied"
    # The services may not do provisioning's part, nor provisioning the services'.
    answer = _ask(path, accounts.SERVICE, "grant_extracts", {"project": "abc", "folder": "x"})
    assert answer["error"] == "PermissionDenied"
    answer = _ask(
        path, accounts.PROVISION, "read_workspace_files", {"username": "alice", "project": "a"}
    )
    assert answer["error"] == "PermissionDenied"
    # What the services may ask is checked like anything a person sends.
    answer = _ask(
        path,
        accounts.SERVICE,
        "read_workspace_files",
        {"username": "alice", "project": portal.project, "paths": ["/etc/shadow"]},
    )
    assert answer["error"] == "InvalidInput"
    answer = _ask(path, accounts.SERVICE, "no_such_thing", {})
    assert answer["error"] == "InvalidInput"


@pytest.mark.hub
@pytest.mark.keycloak
def test_only_the_privileged_helper_runs_as_root(hub, portal):
    """With the portal, the hub, Keycloak and a researcher's workspace running: every process
    of the TRE runs as its service or project account, but the helper and bubblewrap waiting
    on the workspace's sandbox."""
    with closing(hub_login(hub.hub_url, "alice", "tre-demo")) as alice:
        started = start_workspace(alice, "alice", portal.project)
        assert started.status_code in (201, 202), started.text
        workspace_ready(alice, "alice", portal.project, poll=1)
        try:
            time.sleep(1)
            running = census(portal.home.root)
            owners = {accounts_name(p.uid) for p in running}
            assert unexpected_root(portal.home.root) == []
            assert {"tre", privileged.workspace_account("alice", portal.project)} <= owners
            commands = " ".join(p.command for p in running if accounts_name(p.uid) == "tre")
            for part in ("tre portal serve", "jupyterhub", "configurable-http-proxy"):
                assert part in commands, part
            as_root = [p.command.split()[0] for p in running if p.uid == 0]
            assert as_root and set(as_root) <= {"/usr/bin/bwrap", *_helper_python(running)}
        finally:
            stop_workspace(alice, "alice", portal.project)


def accounts_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _helper_python(running) -> set[str]:
    return {p.command.split()[0] for p in running if "tre.privileged.helper" in p.command}


# -- found by the attack review of this change ---------------------------------------------------


def test_the_services_account_cannot_put_a_link_in_the_homes_own_folder(two_projects):
    """The home's own folder is root's (0751): the names root works with there (the stores, the
    database's folder, the servers' folders) cannot be swapped for links by a service."""

    def plant(home: str) -> list[str]:
        found = []
        for name in ("tre.db", "db", "run", "planted"):
            try:
                os.symlink("/etc/shadow", f"{home}/{name}")
                found.append(name)
            except OSError as e:
                found.append(type(e).__name__)
        return found

    for account in (accounts.SERVICE, accounts.INGEST, accounts.PROVISION):
        planted = as_account(account, plant, str(two_projects.home.root))
        assert set(planted) <= {"PermissionError", "FileExistsError"}, (account, planted)


def test_init_never_follows_a_link_planted_in_the_database_folder(environ, tmp_path):
    """A compromised services' account owns the database's folder: a link there in place of
    the database (to a key, to /etc/shadow) must not make root change or open its target.
    Found working before: root chmodded and chowned the target to tre (the master key)."""
    assert main(["init"], environ) == 0
    home = Path(environ["TRE_HOME"])
    target = tmp_path / "target"
    target.write_bytes(b"root's own\n")
    os.chmod(target, 0o600)
    before = target.stat()
    database = home / "db" / "tre.db"
    database.rename(home / "db" / "moved.db")
    database.symlink_to(target)
    assert main(["init"], environ) != 0
    after = target.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )
    assert target.read_bytes() == b"root's own\n"


def test_a_pid_file_link_is_never_written_through(tmp_path):
    """Root writes a server's pid file in the server's own folder, which its account owns."""
    from tre.portal.server import PortalServer

    server = PortalServer(tmp_path, "http://127.0.0.1:1", {})
    server.state_dir.mkdir()
    target = tmp_path / "target"
    target.write_text("root's own\n")
    server.pid_file.symlink_to(target)  # as a compromised account would
    assert server.pid() is None  # not read through either
    server._write_pid(12345)
    assert target.read_text() == "root's own\n"
    assert server.pid_file.read_text() == "12345\n" and not server.pid_file.is_symlink()


def test_an_errors_text_never_reaches_the_helpers_log(capfd):
    """A worker's failure is logged by its kind and line only: its text may quote the data or
    be written by whoever sent the request (a line of shell, in a root-owned log)."""

    def fail(_):
        raise ValueError("pupil 12 is in hospital\necho owned > /etc/profile.d/x.sh #")

    with pytest.raises(ServiceUnavailable, match=r"failed \(ValueError\)"):
        call_as(None, Limits(10, 1 << 30, 20), fail, None)
    logged = capfd.readouterr().err
    assert "ValueError at test_least_privilege.py:" in logged
    assert "hospital" not in logged and "echo" not in logged


def test_an_option_value_cannot_keep_a_command_as_root():
    """`tre ingest --as --help DELIVERY` is ingest, whatever a value looks like."""
    assert account_for(["ingest", "--as", "--help", "x"]) == accounts.INGEST
    assert account_for(["project", "provision", "--as", "--version", "p"]) == accounts.PROVISION
    assert account_for(["outputs", "list", "--project", "init"]) == accounts.SERVICE
    assert account_for(["--help"]) == "root"


def test_root_believes_a_pid_file_only_for_a_process_of_the_servers_account(tmp_path):
    """Found by the second review: a server's pid file is in its account's folder, so that
    account could name any process whose command line holds the server's marker (root's own
    among them) for `tre down`, as root, to kill."""
    from tre.portal.server import PortalServer

    server = PortalServer(tmp_path, "http://127.0.0.1:1", {})
    server.state_dir.mkdir()
    decoy = subprocess.Popen(["sh", "-c", "sleep 30", "tre", "portal", "serve"])
    try:
        server.pid_file.write_text(f"{decoy.pid}\n")
        assert server.pid() is None  # a root process: not the portal's
        assert server.stop() is False
        assert decoy.poll() is None, "root killed the process the pid file named"
    finally:
        decoy.kill()
        decoy.wait()


def test_a_log_link_is_never_read_through(tmp_path):
    from tre.portal.server import PortalServer

    server = PortalServer(tmp_path, "http://127.0.0.1:1", {})
    server.state_dir.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("root's own\n")
    server.log_file.symlink_to(secret)
    assert "root's own" not in server.log_tail()
