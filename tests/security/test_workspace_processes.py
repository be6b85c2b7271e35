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

import pytest

from tests.security.conftest import OTHER, PROJECT, another_project
from tre import privileged
from tre.exceptions import PermissionDenied
from tre.people import local_person
from tre.privileged import accounts, enclaves, operations, processes
from tre.privileged.processes import sandboxed_command
from tre.projects import extracts


def _workspace(two_projects, username: str, project: str) -> tuple[accounts.Account, Path]:
    made = privileged.call(
        two_projects.home.root, "prepare_workspace", username=username, project=project
    )
    return accounts.Account.named(made["account"]), Path(made["folder"])


def _in_sandbox(two_projects, username: str, project: str, script: str, **popen):
    """``script`` in the sandbox a workspace runs in (:func:`processes.sandboxed`)."""
    account, folder = _workspace(two_projects, username, project)
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(folder)}
    background = popen.pop("background", False)
    started = processes.sandboxed(
        account,
        ["/bin/sh", "-c", script],
        writable=[folder],
        readable=[two_projects.extracts(project)],
        environment=environment,
        cwd=folder,
        stdout=subprocess.PIPE if not background else None,
        stderr=subprocess.STDOUT if not background else None,
        text=True,
    )
    if background:
        return started
    out, _ = started.communicate(timeout=60)
    return out


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
    home = two_projects.home.root
    for member in ("alice", "bob"):  # as their workspaces' first starts make them
        enclaves.ensure(home, PROJECT, member, [40001, 40002])
    try:
        time.sleep(0.5)
        assert operations._processes_of(alice.uid)
        ctx = operations.Context(home)
        revoked = operations.revoke_access(ctx, PROJECT, keep=["bob"])
        assert revoked == [alice.name]
        assert enclaves.of_home(home) == [(PROJECT, "bob")]  # hers is gone, his kept
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
        enclaves.remove(home, PROJECT)
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


# -- found by the attack review of this change ---------------------------------------------------


def test_a_chain_of_processes_that_keeps_forking_is_killed_whole(two_projects):
    """Each process forks its successor and exits, so a scan of /proc always finds old ids:
    killing by id let the chain live on, reading the extracts, after the member was removed
    (seen in the review). The helper kills through the account itself (kill -1), which the
    kernel sends to all its processes at once."""
    alice, _ = _workspace(two_projects, "alice", PROJECT)
    _workspace(two_projects, "bob", PROJECT)
    chain = (
        "import os, time\n"
        "while True:\n"
        "    if os.fork():\n"
        "        os._exit(0)\n"
        "    time.sleep(0.005)\n"
    )
    started = _in_sandbox(two_projects, "alice", PROJECT, f"python3 -c '{chain}'", background=True)
    try:
        time.sleep(1)
        assert operations._processes_of(alice.uid), "the chain did not start"
        operations.revoke_access(operations.Context(two_projects.home.root), PROJECT, ["bob"])
        for _ in range(10):  # a second later, still nothing of hers runs
            assert operations._living(alice.uid) == []
            time.sleep(0.1)
    finally:
        started.kill()
        started.wait()
    _workspace(two_projects, "alice", PROJECT)  # a member again, for the other tests


def test_a_workspace_cannot_make_a_user_namespace_and_has_a_process_limit(two_projects):
    """User namespaces open much of the kernel to an unprivileged process: the sandbox's
    seccomp program refuses them. And a fork bomb stops at the account's process limit."""
    seen = _in_sandbox(
        two_projects,
        "alice",
        PROJECT,
        "unshare -U true; echo unshare=$?; "
        "python3 -c 'import os; os.unshare(os.CLONE_NEWUSER)' 2>&1 | tail -1; "
        "prlimit --nproc --output=SOFT --noheadings",
    )
    assert "unshare=1" in seen and "Operation not permitted" in seen, seen
    assert seen.split()[-1] == str(processes.SANDBOX_PROCESSES)


def test_a_folder_thousands_deep_does_not_stop_a_projects_closure(two_projects):
    """Python's recursive removal stopped at about a thousand levels, so closure aborted before
    the project's key was destroyed (seen in the review). find and rm walk without recursion."""
    project = another_project(two_projects, "sec-closing")
    _, folder = _workspace(two_projects, "alice", project)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    enclave = enclaves.ensure(two_projects.home.root, project, "alice", [40001, 40002])
    certificate = extracts.close(
        two_projects.home, two_projects.db, project, local_person("ada"), "study finished"
    )
    assert "working_folders_left" not in certificate
    assert not (two_projects.home.projects / project).exists()
    assert not accounts.exists(privileged.workspace_account("alice", project))
    # Its network enclave went with it.
    assert (project, "alice") not in enclaves.of_home(two_projects.home.root)
    assert not Path(f"/run/netns/{enclave.namespace}").exists()


def test_a_process_whose_first_thread_exited_is_still_killed(two_projects):
    """Found by the second review: a process whose first thread exits while another runs shows
    as a zombie in /proc/<pid>/stat, and was taken for dead; started from a researcher's own
    startup files, it outlived the member's removal. Each thread is looked at now."""
    alice, _ = _workspace(two_projects, "alice", PROJECT)
    _workspace(two_projects, "bob", PROJECT)
    lingering = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=lambda: time.sleep(600)).start()\n"
        "ctypes.CDLL(None).syscall(60, 0)\n"  # SYS_exit: the first thread alone
    )
    started = _in_sandbox(
        two_projects, "alice", PROJECT, f"python3 -c '{lingering}' & sleep 600", background=True
    )
    try:
        time.sleep(1.5)
        assert operations._living(alice.uid), "nothing of hers runs"
        operations.revoke_access(operations.Context(two_projects.home.root), PROJECT, ["bob"])
        assert operations._living(alice.uid) == []
    finally:
        started.kill()
        started.wait()
    _workspace(two_projects, "alice", PROJECT)


def test_provisioning_refuses_extracts_that_link_a_file_from_elsewhere(two_projects, tmp_path):
    """A hard link made by a compromised provisioning account would otherwise have root give
    the linked file (owned by someone else) to the project's group."""
    base = two_projects.home.projects / PROJECT
    made = base / ".extracts-424242"
    made.mkdir(mode=0o700)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the project's\n")
    os.link(outside, made / "linked.parquet")
    before = outside.stat()
    try:
        with pytest.raises(PermissionDenied, match="linked from elsewhere"):
            operations.grant_extracts(
                operations.Context(two_projects.home.root), PROJECT, made.name
            )
        after = outside.stat()
        assert (after.st_uid, after.st_gid, after.st_mode) == (
            before.st_uid,
            before.st_gid,
            before.st_mode,
        )
    finally:
        shutil.rmtree(made)
