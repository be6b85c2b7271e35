"""Boundary: the folders researchers write, which root (the privileged helper) works in.

The attacker is a member of the project, or a co-member, with a shell in their workspace: they
own their folder and everything in it, so any name there may be a symlink by the time root
looks. Root never follows one: it walks from the TRE home one name at a time without following
links, creates and chowns what it opened, and does anything inside a member's folder as that
member's account. Canary files show nothing outside is created, changed or read.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from tests.security.canaries import Canaries
from tests.security.conftest import PROJECT, as_account
from tre import outputs, privileged
from tre.exceptions import InvalidInput, NotFound, PermissionDenied
from tre.people import local_person
from tre.privileged import operations

ALICE, BOB = local_person("alice"), local_person("bob")


def _prepare(two_projects, username: str) -> Path:
    made = privileged.call(
        two_projects.home.root, "prepare_workspace", username=username, project=PROJECT
    )
    return Path(made["folder"])


def _state(path: Path) -> tuple:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), info.st_mtime_ns


def test_a_dangling_symlink_in_place_of_a_template_creates_nothing_outside(two_projects, tmp_path):
    folder = _prepare(two_projects, "alice")
    template = folder / "01-getting-started.ipynb"
    target = tmp_path / "planted.pth"  # where root would create a file of alice's choosing
    template.unlink()
    template.symlink_to(target)
    os.lchown(template, *(lambda s: (s.st_uid, s.st_gid))(folder.stat()))
    # Seen failing on the hub's code before this change (its _copy_templates run alone): root
    # copied the template through the link, then chowned the new file to alice.
    _prepare(two_projects, "alice")
    assert not target.exists()
    assert template.is_symlink()  # left as she made it


def test_a_member_folder_swapped_for_a_symlink_into_landing_is_refused(two_projects):
    home = two_projects.home
    landing = home.landing
    before = _state(landing)
    folder = _prepare(two_projects, "bob")
    moved = folder.with_name("bob-moved")
    folder.rename(moved)
    folder.symlink_to(landing)
    try:
        with pytest.raises(OSError):
            _prepare(two_projects, "bob")
        assert _state(landing) == before  # not chowned to bob, not chmodded
    finally:
        folder.unlink()
        moved.rename(folder)


def test_a_co_member_cannot_rename_or_remove_another_members_folder(two_projects):
    _prepare(two_projects, "alice")
    _prepare(two_projects, "bob")
    work = two_projects.home.projects / PROJECT / "work"

    def rename(source: str, target: str) -> str:
        try:
            os.rename(source, target)
            return "renamed"
        except OSError as e:
            return type(e).__name__

    bob = privileged.workspace_account("bob", PROJECT)
    assert as_account(bob, rename, str(work / "alice"), str(work / "mine")) == "PermissionError"
    assert as_account(bob, rename, str(work / "alice"), str(work / "bob" / "x")) in (
        "PermissionError",
        "OSError",
    )
    assert (work / "alice").is_dir() and not (work / "mine").exists()


def test_a_member_folder_of_another_account_is_refused(two_projects):
    """A folder in work/ that belongs to someone else is never handed to a new account."""
    folder = _prepare(two_projects, "alice")
    stranger = two_projects.home.projects / PROJECT / "work" / "carol"
    stranger.mkdir()
    os.chown(stranger, folder.stat().st_uid, folder.stat().st_gid)  # alice's
    try:
        with pytest.raises(PermissionDenied, match="belongs to another account"):
            privileged.call(
                two_projects.home.root, "prepare_workspace", username="carol", project=PROJECT
            )
    finally:
        stranger.rmdir()


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../bob/notes.txt", "notes/../../bob/notes.txt", "", "a/" * 12 + "x"],
)
def test_add_file_refuses_paths_out_of_the_workspace(two_projects, path):
    _prepare(two_projects, "alice")
    with pytest.raises(InvalidInput):
        outputs.add_file(two_projects.home, two_projects.db, PROJECT, path, ALICE)


def test_add_file_never_follows_a_symlink_out_of_the_workspace(two_projects, tmp_path):
    home = two_projects.home
    folder = _prepare(two_projects, "alice")
    with Canaries() as canaries:
        outside = canaries.file(tmp_path / "outside.csv", b"secret,1\n")
        key = canaries.watch_file(home.keys / "link.key")
        canaries.events()
        links = {"to-outside.csv": outside, "to-key.csv": key, "sub": tmp_path}
        for name, target in links.items():
            (folder / name).symlink_to(target)
        for path in ("to-outside.csv", "to-key.csv", "sub/outside.csv"):
            with pytest.raises(InvalidInput, match="goes through a link"):
                outputs.add_file(home, two_projects.db, PROJECT, path, ALICE)
        assert canaries.events() == []
    for name in links:
        (folder / name).unlink()


def test_add_file_reads_a_file_as_the_member_not_as_root(two_projects):
    """A file of the folder that alice's account may not read (made by root, 0600) is not
    read for her: the helper reads as her workspace account."""
    folder = _prepare(two_projects, "alice")
    secret = folder / "root-only.csv"
    secret.write_text("x,1\n")
    os.chmod(secret, 0o600)
    try:
        with pytest.raises(InvalidInput):
            outputs.add_file(two_projects.home, two_projects.db, PROJECT, "root-only.csv", ALICE)
    finally:
        secret.unlink()


def test_import_acro_refuses_paths_and_file_names_out_of_the_workspace(two_projects, tmp_path):
    home = two_projects.home
    folder = _prepare(two_projects, "alice")
    with pytest.raises(InvalidInput):
        outputs.import_acro(home, two_projects.db, PROJECT, str(tmp_path), ALICE)
    with pytest.raises(InvalidInput):
        outputs.import_acro(home, two_projects.db, PROJECT, "../bob", ALICE)
    # A results.json naming files outside the session: only their plain names are read, from
    # the session's folder.
    session = folder / "acro-session"
    session.mkdir()
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("x,3\n")
    (session / "results.json").write_text(
        '{"results": {"output_0": {"status": "review", "type": "table", "files": '
        f'[{{"name": "{outside}"}}, {{"name": "../../bob/x.csv"}}]}}}}}}'
    )
    account = privileged.workspace_account("alice", PROJECT)
    for path in (session, session / "results.json"):
        os.chown(path, *(lambda a: (a.uid, a.gid))(privileged.accounts.Account.named(account)))
    with pytest.raises(NotFound, match=r"no file 'acro-session/elsewhere\.csv'"):
        outputs.import_acro(home, two_projects.db, PROJECT, "acro-session", ALICE)


def test_the_helper_refuses_names_that_are_not_names(two_projects):
    ctx = operations.Context(two_projects.home.root)
    for username in ("../root", "alice/../bob", "ALICE", "", "a" * 70):
        with pytest.raises(InvalidInput, match="not a username"):
            operations.prepare_workspace(ctx, username, PROJECT)
    for project in ("../sec-other", "sec-project/work", "x"):
        with pytest.raises(InvalidInput, match="not a project id"):
            operations.prepare_workspace(ctx, "alice", project)
    with pytest.raises(InvalidInput, match="not a folder of extracts"):
        operations.grant_extracts(ctx, PROJECT, "../../keys")


def test_read_files_come_back_whole(two_projects):
    folder = _prepare(two_projects, "alice")
    (folder / "results").mkdir(exist_ok=True)
    data = bytes(range(256)) * 10
    (folder / "results" / "t.bin").write_bytes(data)
    ((name, content),) = privileged.call(
        two_projects.home.root,
        "read_workspace_files",
        username="alice",
        project=PROJECT,
        paths=["results/t.bin"],
    )
    assert name == "t.bin" and base64.b64decode(content) == data
