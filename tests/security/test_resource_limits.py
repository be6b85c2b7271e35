"""Boundary: what one researcher's outputs may cost the TRE and everyone else.

A table of thousands of tiny cells is no summary, and checking it (secondary suppression over
every margin, linked with earlier releases) grows far faster than the table. Limits are
checked before anything is computed, and fail closed: an output over them is refused with what
to change, or withheld; it is never released because a check could not finish. (The worker's
time and memory limits, the last stop, are tested in test_output_worker.py.)
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.security.conftest import OTHER, PROJECT, another_project
from tre import outputs
from tre.exceptions import InvalidInput, ServiceUnavailable
from tre.outputs import rules as R
from tre.outputs import specs
from tre.people import local_person
from tre.privileged import operations

ALICE = local_person("alice")


def _check(two_projects, **fields):
    spec = specs.parse({"kind": "table", "dataset": "pupils", **fields})
    return outputs.check(two_projects.home, two_projects.db, PROJECT, spec, ALICE)


def test_a_table_of_too_many_cells_is_refused_before_it_is_computed(two_projects, monkeypatch):
    monkeypatch.setenv("TRE_OUTPUT_MAX_CELLS", "100")
    before = len(outputs.of_project(two_projects.db, PROJECT))
    with pytest.raises(InvalidInput, match=r"would have 330 cells \(la_code \(33\) × idaci"):
        _check(two_projects, name="huge", rows=["la_code"], cols=["idaci_decile"], margins=True)
    assert len(outputs.of_project(two_projects.db, PROJECT)) == before  # nothing stored
    _, small = _check(two_projects, name="small", rows=["sex"], cols=["idaci_decile"])
    assert small.cells


def test_a_model_of_too_many_coefficients_is_refused(two_projects):
    spec = specs.parse(
        {
            "name": "every interaction",
            "kind": "model",
            "dataset": "pupils",
            "formula": "idaci_decile ~ C(la_code) * C(nc_year)",
        }
    )
    with pytest.raises(InvalidInput, match="would have 396 coefficients"):
        outputs.check(two_projects.home, two_projects.db, PROJECT, spec, ALICE)


def test_a_linked_table_too_large_to_protect_together_is_withheld_not_released(
    two_projects, monkeypatch
):
    """Before this change, beyond the linked tables' limit (then 4,000 cells) ``linked.hide``
    returned nothing to hide: the new table was checked alone, its cells released as if no
    earlier release existed (it failed open)."""
    own = [{"column": "nc_year", "op": "gte", "value": 1}]  # a population of this test's own
    first, _ = _check(two_projects, name="by la", rows=["la_code"], filters=own)
    with two_projects.db.write() as session:
        outputs.mark_released(
            session,
            session.get(outputs.Output, first.id),
            outputs.audit.Event("olga", "output-checker", "output.released", "output", "1"),
        )
    monkeypatch.setenv("TRE_OUTPUT_MAX_CELLS", "40")  # each table fits; the two together do not
    second, result = _check(
        two_projects, name="by sex", rows=["sex"], cols=["fsm_eligible"], filters=own
    )
    assert second.result["linked_with"] == [f"#{first.id} 'by la'"]
    shown = [c for c in result.cells if c.value]
    assert shown == [], "cells were released though they could not be protected"
    assert all(c.status == R.FAIL or c.suppression for c in result.cells if c.value is None)


def test_one_project_cannot_take_every_output_worker(two_projects, monkeypatch):
    """Found by the attack review: nothing limited one researcher's outputs at once, so one
    project could hold every computation the portal would wait on. Each project now has two
    at a time; a third is refused until one ends, and other projects go on."""

    def slow(_job):
        time.sleep(3)

    monkeypatch.setattr(operations, "_engine_job", slow)
    ctx = operations.Context(two_projects.home.root)
    limits = {"cpu_seconds": 30, "memory_bytes": 1 << 30, "wall_seconds": 60}

    def job(project: str) -> dict:
        return {"extracts": str(two_projects.extracts(project)), "spec": {}}

    running = [
        threading.Thread(
            target=operations.run_output_job, args=(ctx, PROJECT, job(PROJECT), limits)
        )
        for _ in range(operations.OUTPUT_JOBS_PER_PROJECT)
    ]
    for thread in running:
        thread.start()
    time.sleep(1)
    try:
        with pytest.raises(ServiceUnavailable, match="already has 2 outputs being checked"):
            operations.run_output_job(ctx, PROJECT, job(PROJECT), limits)
        assert operations.run_output_job(ctx, OTHER, job(OTHER), limits) is None
    finally:
        for thread in running:
            thread.join()
    assert operations.run_output_job(ctx, PROJECT, job(PROJECT), limits) is None  # free again


def test_a_closure_the_helper_cannot_finish_still_destroys_the_key(two_projects, monkeypatch):
    """Found by the second review: when the helper could not remove the working folders,
    closure stopped before the project's key was destroyed. The key and the extracts go first;
    the certificate says what was left."""
    from tre import keys, privileged
    from tre.exceptions import ServiceUnavailable as Unavailable
    from tre.projects import extracts

    project = another_project(two_projects, "sec-stuck")
    real = privileged.call

    def helper_down(home, name, **args):
        if name == "remove_project":
            raise Unavailable("The TRE's privileged helper is not running.")
        return real(home, name, **args)

    monkeypatch.setattr(privileged, "call", helper_down)
    certificate = extracts.close(
        two_projects.home, two_projects.db, project, local_person("ada"), "helper was down"
    )
    assert certificate["project_key_destroyed"] is True
    assert not keys.project_salt_path(two_projects.home.keys, project).exists()
    assert not (two_projects.home.projects / project / "extracts").exists()
    assert "not running" in certificate["working_folders_left"]
