"""What the attack tests share: a TRE home with two provisioned projects, made as root (the
tests run as root, as `sudo tre up` does), and a way to run code as any OS account."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.conftest import ALICE, example_application, ingested_home, provision_project
from tre.cli import main
from tre.db import Database
from tre.home import Home
from tre.people import local_person
from tre.privileged import accounts
from tre.privileged.processes import Limits, call_as

#: alice's project (alice and bob are members) and another, of bob's only.
PROJECT, OTHER = "sec-project", "sec-other"


@dataclasses.dataclass
class TwoProjects:
    environ: dict[str, str]
    home: Home
    db: Database

    def extracts(self, project: str) -> Path:
        return self.home.projects / project / "extracts"


@pytest.fixture(scope="module", params=["sqlite"])
def two_projects(tmp_path_factory, synthetic, request):
    """Two provisioned projects: ``sec-project`` (alice, bob) and ``sec-other`` (bob)."""
    with ingested_home(request, tmp_path_factory, synthetic, "security") as (environ, home, db):
        provision_project(home, db, example_application(PROJECT, privacy_budget=10.0), ALICE)
        other = dataclasses.replace(
            example_application(OTHER), lead="bob", members=("bob",), title="Another"
        )
        provision_project(home, db, other, local_person("bob"))
        # Made as root by this process: each part handed to its account, as `tre init` does.
        assert main(["init"], environ) == 0
        yield TwoProjects(environ, home, db)


def another_project(two_projects: TwoProjects, project: str) -> str:
    """A further provisioned project of alice's in the same home, for a test that closes it."""
    application = dataclasses.replace(example_application(project), title=project)
    provision_project(two_projects.home, two_projects.db, application, ALICE)
    return project


def as_account(name: str, function, *args, seconds: int = 30):
    """``function(*args)`` run as the OS account ``name`` (a forked child, as the helper runs
    output workers), within modest limits; its result."""
    return call_as(
        accounts.Account.named(name), Limits(seconds, 2 << 30, seconds * 2), function, *args
    )


def can_open(path: str) -> str:
    """What opening ``path`` for reading gives: "read", or the error's name."""
    try:
        with open(path, "rb") as f:
            f.read(1)
        return "read"
    except OSError as e:
        return type(e).__name__


# -- from a real kernel of a real workspace (the hub's tests) ---------------------------------

#: Run first in a kernel: ``reach(host, port)`` and ``reach_unix(path)`` say what a connection
#: to it did.
PROBE = """
import os, socket

def reach(host, port, seconds=2):
    s = socket.socket()
    s.settimeout(seconds)
    try:
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()

def reach_unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(path)
        return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
"""


def running_workspace(client, user: str, project: str) -> dict:
    """Start ``user``'s workspace of ``project`` through the hub; its server once ready."""
    from tre.hub.kernels import start_workspace, workspace_ready

    started = start_workspace(client, user, project)
    assert started.status_code in (201, 202), started.text
    return workspace_ready(client, user, project, poll=0.5)
