"""Boundary: the output worker, the process where a researcher's specification is computed.

Even if a specification got past the grammar and the sandboxed connection (the first two
layers, tests in test_output_engine.py), what runs is a process of the project's own OS
account: here the worker's account runs code of the attacker's choosing, and still reads
nothing but its own project's extracts. A computation past its limits is stopped and the
researcher told what to change; nothing is left running.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.security.conftest import OTHER, PROJECT, as_account, can_open
from tre import outputs, privileged
from tre.exceptions import InvalidInput, LimitExceeded
from tre.outputs import specs
from tre.people import local_person
from tre.privileged import accounts, operations
from tre.privileged.processes import Limits, call_as

ALICE = local_person("alice")


def test_code_run_as_the_output_worker_reads_its_extracts_and_nothing_else(two_projects):
    home = two_projects.home
    worker = privileged.project_group(PROJECT)
    assert accounts.exists(worker)
    targets = {
        "its extracts": two_projects.extracts(PROJECT) / "manifest.json",
        "another project": two_projects.extracts(OTHER) / "manifest.json",
        "the link key": home.keys / "link.key",
        "the master key": home.keys / "master.key",
        "the services' key": home.keys / "service.key",
        "a project key": next((home.keys / "projects").iterdir()),
        "the metadata database": home.root / "db" / "tre.db",
        "the landing store": next(p for p in home.landing.rglob("*") if p.is_file()),
        "the curated store": next(p for p in home.curated.rglob("*.parquet")),
    }
    found = {what: as_account(worker, can_open, str(path)) for what, path in targets.items()}
    assert found.pop("its extracts") == "read"
    assert set(found.values()) == {"PermissionError"}, found


def test_a_worker_runs_with_no_new_privileges_and_only_its_project_group(two_projects):
    def who() -> dict:
        with open("/proc/self/status") as f:
            status = dict(line.split(":\t", 1) for line in f.read().splitlines())
        return {
            "uid": os.getuid(),
            "groups": sorted(os.getgroups()),
            "no_new_privs": status["NoNewPrivs"].strip(),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "environment": sorted(os.environ),
        }

    seen = as_account(privileged.project_group(PROJECT), who)
    worker = accounts.Account.named(privileged.project_group(PROJECT))
    assert seen["uid"] == worker.uid != 0
    assert seen["groups"] == [worker.gid]
    assert seen["no_new_privs"] == "1"
    # Nothing inherited from the parent: standard streams, the answer's pipe, the listing.
    assert len(seen["fds"]) <= 5, seen["fds"]
    assert "TRE_DATABASE_URL" not in seen["environment"]


def _spin(_job):
    while True:
        pass


def _swell(_job):
    hoard = []
    while True:
        hoard.append(bytearray(64 << 20))


@pytest.mark.parametrize(("behaviour", "limit"), [(_spin, "computing"), (_swell, "memory")])
def test_an_output_past_its_limits_is_stopped_and_the_researcher_told_what_to_change(
    two_projects, monkeypatch, behaviour, limit
):
    # The forked worker runs what the parent holds as the engine: here, a runaway one.
    monkeypatch.setattr(operations, "_engine_job", behaviour)
    job = {"extracts": str(two_projects.extracts(PROJECT)), "spec": {}}
    limits = {"cpu_seconds": 1, "memory_bytes": 512 << 20, "wall_seconds": 5}
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=f"needed more than .* of {limit}.*fewer cells"):
        operations.run_output_job(operations.Context(two_projects.home.root), PROJECT, job, limits)
    assert time.monotonic() - started < 8
    worker = accounts.uid(privileged.project_group(PROJECT))
    assert not operations._processes_of(worker), "the stopped worker is still running"


def test_a_worker_that_never_answers_is_killed_at_the_wall_clock_limit():
    def sleep(_):
        time.sleep(60)

    started = time.monotonic()
    with pytest.raises(LimitExceeded) as stopped:
        call_as(None, Limits(30, 1 << 30, 1), sleep, None)
    assert stopped.value.limit == "time" and time.monotonic() - started < 5


def test_an_output_job_reads_its_own_project_only(two_projects):
    """The services ask for a project's job: its extracts folder is the project's own, whatever
    the job says."""
    ctx = operations.Context(two_projects.home.root)
    job = {"extracts": str(two_projects.extracts(OTHER)), "spec": {"name": "t"}}
    limits = {"cpu_seconds": 10, "memory_bytes": 1 << 30, "wall_seconds": 20}
    with pytest.raises(InvalidInput, match="its own project's extracts only"):
        operations.run_output_job(ctx, PROJECT, job, limits)
    for project in ("../sec-other", "sec-project/../sec-other", "", "x" * 40):
        with pytest.raises(InvalidInput, match="not a project id"):
            operations.run_output_job(ctx, project, job, limits)


def test_a_real_output_is_computed_by_the_project_account(two_projects):
    """What alice asks through the API goes through the worker, and the answer still comes."""
    spec = specs.parse({"name": "by sex", "kind": "table", "dataset": "pupils", "rows": ["sex"]})
    _, result = outputs.check(two_projects.home, two_projects.db, PROJECT, spec, ALICE)
    assert sum(c.value for c in result.cells if c.value) > 0
