"""The output worker: where the output engine runs.

The TRE's services never compute an output themselves: they hand the job (:class:`engine.Job`:
the extracts folder, the specification, the rules, the earlier releases) to the privileged
helper, which runs the engine in a process of the project's own OS account (it reads that
project's extracts and nothing else of the TRE), with no new privileges and within the limits
of ``TRE_OUTPUT_CPU_SECONDS`` and ``TRE_OUTPUT_MEMORY_MB``. Past a limit the job is stopped
and the researcher told what to change.
"""

from __future__ import annotations

from typing import Any

from tre import privileged
from tre.config import Settings
from tre.home import Home
from tre.outputs import engine


def limits(settings: Settings) -> dict[str, float]:
    return {
        "cpu_seconds": settings.output_cpu_seconds,
        "memory_bytes": settings.output_memory_mb << 20,
        "wall_seconds": 2 * settings.output_cpu_seconds + 10,
    }


def run(home: Home, project_id: str, job: engine.Job, settings: Settings | None = None) -> Any:
    """Run ``job`` over the extracts of ``project_id`` in its worker; what the engine gave."""
    settings = settings or Settings.from_environ()
    memory = settings.output_memory_mb
    job = engine.Job.from_dict(
        {
            **job.as_dict(),
            "memory_limit": f"{max(memory // 2, 64)}MB",
            "max_cells": settings.output_max_cells,
            "max_categories": settings.output_max_categories,
        }
    )
    return privileged.call(
        home.root, "run_output_job", project=project_id, job=job.as_dict(), limits=limits(settings)
    )
