"""The output worker: where the output engine runs."""

from __future__ import annotations

from typing import Any

from tre.home import Home
from tre.outputs import engine


def run(home: Home, project_id: str, job: engine.Job) -> Any:
    """Run ``job`` over the extracts of ``project_id``; what the engine returned."""
    return engine.run(engine.Job.from_dict(job.as_dict()))
