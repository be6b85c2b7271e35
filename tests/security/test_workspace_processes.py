"""Boundary: the processes of a workspace (its server, kernels, terminals) and everything else.

Each runs under its researcher's account for that project, in the sandbox the privileged helper
starts it in (:func:`tre.privileged.processes.sandboxed_command`): its own /tmp and /dev/shm,
the system read-only and nosuid, its folder the only place it writes, no new privileges, the
project's group its only other group. The commands here run in that same sandbox, as the
helper would start them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.security.conftest import OTHER, PROJECT
from tre import privileged
from tre.privileged import accounts, operations
from tre.privileged.processes import sandboxed_command


def _workspace(two_projects, username: str, project: str) -> tuple[accounts.Account, Path]:
    made = privileged.call(
        two_projects.home.root, "prepare_workspace", username=username, project=project
    )
    return accounts.Account.named(made["account"]), Path(made["folder"])


def _in_sandbox(two_projects, username: str, project: str, script: str, **popen):
    account, folder = _workspace(two_projects, username, project)
    command = sandboxed_command(
        account,
        ["/bin/sh", "-c", script],
        writable=[folder],
        readable=[two_projects.extracts(project)],
    )
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(folder)}
    if popen.pop("background", False):
        return subprocess.Popen(command, env=environment, cwd=folder, **popen)
    done = subprocess.run(
        command, env=environment, cwd=folder, capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def test_a_file_in_one_workspaces_tmp_is_invisible_to_another(two_projects):
    writer = _in_sandbox(
        two_projects,
        "alice",
        PROJECT,
        "echo secret > /tmp/left-here; echo secret > /dev/shm/left-here; sleep 20",
        background=True,
    )
    try:
        time.sleep(1)
        seen = _in_sandbox(
            two_projects, "bob", OTHER, "ls -a /tmp /dev/shm; cat /tmp/left-here /dev/shm/left-here"
        )
        assert "left-here: No such file" in seen
        assert "secret" not in seen
        assert not (Path(tempfile.gettempdir()) / "left-here").exists()  # nor the machine's
    finally:
        writer.kill()
        writer.wait()


def test_a_setuid_or_setgid_file_in_the_work_folder_grants_nothing(two_projects):
    """Even a file that is setuid root and setgid root (as if root had been tricked into
    writing it there) runs with the researcher's own ids: the folder is mounted nosuid and the
    sandbox has no new privileges."""
    account, folder = _workspace(two_projects, "alice", PROJECT)
    planted = folder / "id"
    shutil.copy2("/usr/bin/id", planted)
    os.chown(planted, 0, 0)
    os.chmod(planted, 0o6755)  # noqa: S103 - the attack itself
    try:
        seen = _in_sandbox(two_projects, "alice", PROJECT, f"{planted} -u; {planted} -g")
        assert seen.split() == [str(account.uid), str(account.gid)], seen
        mounts = _in_sandbox(two_projects, "alice", PROJECT, "cat /proc/self/mountinfo")
        line = next(m for m in mounts.splitlines() if f" {folder} " in m)
        assert "nosuid" in line and "nodev" in line, line
        status = _in_sandbox(two_projects, "alice", PROJECT, "grep NoNewPrivs /proc/self/status")
        assert status.split() == ["NoNewPrivs:", "1"]
    finally:
        planted.unlink()


def test_a_workspace_has_its_project_group_only_and_writes_its_folder_only(two_projects):
    account, folder = _workspace(two_projects, "alice", PROJECT)
    script = (
        "id -G; umask; touch ~/mine && echo wrote-own; "
        f"touch {two_projects.home.root}/x 2>/dev/null || echo no-home; "
        f"touch {two_projects.extracts(PROJECT)}/x 2>/dev/null || echo no-extracts; "
        "touch /etc/x 2>/dev/null || echo no-system; "
        f"cat {two_projects.extracts(PROJECT)}/manifest.json >/dev/null && echo reads-extracts; "
        f"cat {two_projects.extracts(OTHER)}/manifest.json 2>/dev/null || echo not-other; "
        "ps -e -o user= | sort -u"
    )
    seen = _in_sandbox(two_projects, "alice", PROJECT, script).split()
    groups = {account.gid, accounts.gid(privileged.project_group(PROJECT))}
    assert {int(g) for g in seen[: len(groups)]} == groups
    assert seen[len(groups)] == "0077"
    for said in (
        "wrote-own",
        "no-home",
        "no-extracts",
        "no-system",
        "reads-extracts",
        "not-other",
    ):
        assert said in seen, (said, seen)
    # Its own PID namespace: it sees its own processes only.
    assert seen[-1] == account.name
    (folder / "mine").unlink()


def test_a_removed_member_loses_the_extracts_and_their_processes(two_projects):
    alice, _ = _workspace(two_projects, "alice", PROJECT)
    _workspace(two_projects, "bob", PROJECT)
    sleeper = _in_sandbox(two_projects, "alice", PROJECT, "sleep 60", background=True)
    try:
        time.sleep(0.5)
        assert operations._processes_of(alice.uid)
        ctx = operations.Context(two_projects.home.root)
        revoked = operations.revoke_access(ctx, PROJECT, keep=["bob"])
        assert revoked == [alice.name]
        assert sleeper.wait(timeout=10) != 0
        assert not operations._processes_of(alice.uid)
        manifest = two_projects.extracts(PROJECT) / "manifest.json"
        command = f"cat {manifest} >/dev/null && echo read || echo refused"
        # Her old account, started again by hand, no longer reads the extracts; bob still does.
        account = accounts.Account.named(alice.name)
        sandboxed = sandboxed_command(
            account, ["/bin/sh", "-c", command], writable=[], readable=[manifest.parent]
        )
        done = subprocess.run(sandboxed, capture_output=True, text=True, timeout=60, check=False)
        assert done.stdout.split() == ["refused"], done.stdout + done.stderr
        assert "read" in _in_sandbox(two_projects, "bob", PROJECT, command).split()
    finally:
        sleeper.kill()
        sleeper.wait()
    # Starting her workspace again (she is a member once more) gives the group back.
    _workspace(two_projects, "alice", PROJECT)
    group = accounts.gid(privileged.project_group(PROJECT))
    assert group in accounts.Account.named(alice.name).groups


def test_account_names_never_collide():
    pairs = [("alice", "x-abc"), ("alice-x", "abc"), ("ab.c", "def"), ("ab", "c-def")]
    names = {privileged.workspace_account(u, p) for u, p in pairs}
    assert len(names) == len(pairs)
    long_user = "a" * 40
    assert privileged.workspace_account(long_user, "abc") != privileged.workspace_account(
        long_user + "b", "abc"
    )
    # Project ids sharing their first 26 characters had one group (truncated names) before.
    first, second = "p" * 26 + "-one", "p" * 26 + "-two"
    assert privileged.project_group(first) != privileged.project_group(second)
    assert all(len(n) <= 32 for n in [*names, privileged.project_group(first)])
