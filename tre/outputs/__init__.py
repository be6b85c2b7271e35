"""Outputs: what a project wants to take out, checked from the data, stored with the result.

:func:`check` computes an output from its specification over the project's extracts (the
table *and* the per-cell statistics the rules need), runs the rules, suppresses, compares with
earlier releases (differencing), and stores the result; a researcher cannot forge what a
checker will see. :func:`run_dp` spends privacy budget. :func:`add_file` accepts a plain file,
checked on its face and always sent to review. :func:`mark_released` is called by the airlock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, defer, mapped_column

from tre import audit, catalog, permissions
from tre.db import Base, Database, check_daily_cap
from tre.exceptions import InvalidInput, NotFound, PermissionDenied
from tre.home import Home
from tre.outputs import engine, labels, privacy, results, specs, worker
from tre.outputs import rules as R
from tre.people import Person

audit.declare_actions(
    {
        "output.checked": "An output was computed from the extracts and checked.",
        "output.file_added": "A plain file was added as an output (checked on its face).",
        "output.dp_released": "A differentially private query ran and its result was stored.",
        "output.released": "An output was released through the airlock.",
        "output.revoked": "A released output was revoked.",
    }
)


class Output(Base):
    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(16))
    spec: Mapped[dict] = mapped_column(sa.JSON)
    result: Mapped[dict] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16))
    file_path: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[str] = mapped_column(sa.String(32))
    released_at: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    #: The sketches of its cells' populations, for differencing (never shown to anyone:
    #: :mod:`tre.outputs.populations`); loaded only where the checks need them.
    populations: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True, deferred=True)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def rule_set_for(project, datasets: list[str], name: str = "default") -> R.RuleSet:
    """The rules of an output: the named set, tightened by the datasets' and the project's."""
    spec = project.approved() if project.approved_spec else project.spec_object()
    overrides = [catalog.dataset(d).output_rules for d in datasets if d in catalog.DATASETS]
    return R.RuleSet.named(name).strictest(*overrides, spec.output_rules)


def _active_project(db: Database, project_id: str, by: Person):
    from tre import projects
    from tre.projects.lifecycle import State

    project = projects.get(db, project_id)
    if by.username not in project.members():
        raise PermissionDenied(
            f"{by.username} is not a member of project {project_id}: only its researchers "
            "make outputs from its data."
        )
    if project.status is not State.PROVISIONED:
        raise PermissionDenied(
            f"Project {project_id} is {project.state}: outputs are made only while it is active."
        )
    return project


def released(db: Database, project_id: str, with_results: bool = True) -> list[Output]:
    """The project's released outputs, oldest first (without their results when not needed:
    a result holds the whole table)."""
    with db.read() as session:
        return list(
            session.execute(_released_statement(with_results), {"project": project_id}).scalars()
        )


@functools.cache
def _released_statement(with_results: bool):
    query = (
        sa.select(Output)
        .where(Output.project_id == sa.bindparam("project"), Output.released_at.is_not(None))
        .order_by(Output.id)
    )
    return query if with_results else query.options(defer(Output.result))


def _published(db: Database, project_id: str) -> list[list[Any]]:
    """The project's released tables, summaries and models, as the engine takes them: [label,
    specification, cells, populations] each."""
    query = (
        sa.select(Output.id, Output.name, Output.spec, Output.result, Output.populations)
        .where(
            Output.project_id == project_id,
            Output.released_at.is_not(None),
            Output.kind.in_(("table", "summary", "model")),
        )
        .order_by(Output.id)
    )
    with db.rows() as rows:
        return [
            [f"#{id_} '{name}'", spec, result.get("cells", []), pops]
            for id_, name, spec, result, pops in rows.execute(query)
        ]


def population_key(home: Home, project_id: str) -> str:
    """The project's key for hashing its units in population sketches (hex): derived from
    the services' key, so that a sketch read from the database names no pseudo_id."""
    from tre import keys

    return keys.purpose_key(home.keys, f"output populations {project_id}").hex()


def compute(
    home: Home,
    db: Database,
    project,
    spec: specs.OutputSpec,
    rule_set_name: str = "default",
    alongside: Sequence[Sequence[Any]] = (),
    keep_populations: bool = False,
) -> results.Result:
    """Compute and check ``spec`` over the project's extracts (nothing is stored), against the
    project's releases and the outputs ``alongside`` (label, specification, cells,
    populations: submitted with it, to be released together). The computation runs in the
    output worker (:mod:`tre.outputs.worker`), under the project's OS account. With
    ``keep_populations`` the result carries its population sketches, to be stored."""
    from tre.projects import extracts as project_extracts

    if spec.kind == "dp":
        raise InvalidInput("DP queries spend budget: run them with `tre outputs dp`.")
    job = engine.Job(
        engine.CHECK,
        str(project_extracts.folder(home, project.id) / "extracts"),
        dict(spec.raw),
        dataclasses.asdict(rule_set_for(project, spec.datasets, rule_set_name)),
        _published(db, project.id),
        [list(a) for a in alongside],
        population_key=population_key(home, project.id),
        keep_populations=keep_populations,
    )
    return engine.from_wire(worker.run(home, project.id, job))


WITHHELD = "withheld until output checkers have reviewed it"
#: What a project's member is told outside the workspace, before release.
IN_THE_WORKSPACE = (
    "shown in the project's workspace until output checkers release it: outside it, an "
    "output is its specification, its status and the reasons"
)


def shown_result(output: Output, viewer: Person, project, inside: bool = False) -> dict[str, Any]:
    """The output's result as ``viewer`` may see it. Output checkers (outside the project) see
    it whole; everyone who may see it sees it once it is released, but for the labels of
    suppressed cells that are not published categories (:func:`labels.for_release`, as the
    released files have them). Before that, in the
    project's workspace (``inside``: the caller's own enclave of the project), values not
    passed by the automatic check are withheld, and everything read from a file; outside it
    (the portal's pages, the API from anywhere else), nothing computed from the data: neither
    values nor labels, only the status and reasons (:func:`outline`; issue #21: the labels of
    failing cells were the records of two pupils)."""
    released = output.released_at is not None
    if permissions.sees_unreviewed_values(viewer, project, False):
        return output.result  # an output checker outside the project: everything
    if released:
        return labels.for_release(output.result, output.spec)
    if not inside:
        return outline(output.result)
    if output.kind == "file":
        return {**output.result, "cells": [], "withheld": WITHHELD}
    cells = []
    for cell in output.result.get("cells", []):
        if cell.get("value") is not None and cell["status"] != R.PASS:
            cell = {**cell, "value": None, "withheld": WITHHELD}
        cells.append(cell)
    return {**output.result, "cells": cells}


def outline(result: dict[str, Any]) -> dict[str, Any]:
    """A result without anything computed from the data: its kind, what it is of, its
    status, how many cells passed, went to review or failed, and the distinct reasons."""
    cells = result.get("cells", [])
    reasons = list(dict.fromkeys(r for c in cells for r in c.get("reasons", [])))
    summary = dict(result.get("summary", {}))
    return {
        "kind": result.get("kind"),
        "description": result.get("description", {}),
        "summary": {**summary, "reasons": [*summary.get("reasons", []), *reasons]},
        "cells": [],
        "withheld": IN_THE_WORKSPACE,
        "outline": True,
    }


#: The most outputs one researcher may make in a project in a day: each holds text shown
#: outside the workspace (its name and specification), so their number is bounded too.
MAX_OUTPUTS_A_DAY = 500


def _store(
    db: Database,
    project_id: str,
    spec: dict,
    result: dict,
    kind: str,
    by: Person,
    action: str,
    file_path: str | None = None,
    populations: dict | None = None,
) -> Output:
    with db.write() as session:
        check_daily_cap(
            session,
            Output.created_at,
            MAX_OUTPUTS_A_DAY,
            f"outputs of {project_id}",
            Output.project_id == project_id,
            Output.created_by == by.username,
        )
        output = Output(
            project_id=project_id,
            name=str(spec.get("name", ""))[:200],
            kind=kind,
            spec=spec,
            result=result,
            status=result["summary"]["status"],
            file_path=file_path,
            created_by=by.username,
            created_at=now(),
            populations=populations,
        )
        session.add(output)
        session.flush()
        audit.record(
            session,
            audit.Event(
                by.username,
                by.main_role,
                action,
                "output",
                str(output.id),
                {"project": project_id, "kind": kind, "status": output.status},
            ),
        )
        return output


def check(
    home: Home,
    db: Database,
    project_id: str,
    spec: specs.OutputSpec,
    by: Person,
    rule_set_name: str = "default",
) -> tuple[Output, results.Result]:
    project = _active_project(db, project_id, by)
    result = compute(home, db, project, spec, rule_set_name)
    output = _store(
        db,
        project_id,
        dict(spec.raw),
        result.as_dict(),
        spec.kind,
        by,
        "output.checked",
        populations=result.populations,
    )
    return output, result


def preview_dp(db: Database, project_id: str, spec: specs.OutputSpec, by: Person):
    _active_project(db, project_id, by)
    return privacy.plan(spec, spec.categories)


def run_dp(
    home: Home, db: Database, project_id: str, spec: specs.OutputSpec, by: Person
) -> tuple[Output, dict]:
    """Reserve the cost, run the query over one record per person, store the noisy result."""
    from tre.projects import extracts as project_extracts

    project = _active_project(db, project_id, by)
    rule_set = rule_set_for(project, spec.datasets)
    planned = privacy.plan(spec, spec.categories)
    folder = project_extracts.folder(home, project.id) / "extracts"
    data = worker.run(home, project.id, engine.Job(engine.DP_DATA, str(folder), dict(spec.raw)))
    reservation = privacy.reserve(db, project_id, planned.epsilon, spec.name, by)
    noisy = planned.run(data)  # from here on the ε is spent, whatever happens
    privacy.mark_spent(db, reservation, by)
    cells = privacy.release(spec, noisy, spec.categories, rule_set)
    statuses = {c["status"] for c in cells}
    result = {
        "kind": "dp",
        "name": spec.name,
        "query": spec.query,
        "value": spec.value,
        "epsilon": planned.epsilon,
        "accuracy": planned.accuracy,
        "rule_set": {"threshold": rule_set.threshold, "rounding_base": rule_set.rounding_base},
        "summary": {
            "status": R.FAIL if R.FAIL in statuses and len(statuses) == 1 else R.PASS,
            "cells": len(cells),
        },
        "cells": cells,
    }
    output = _store(db, project_id, dict(spec.raw), result, "dp", by, "output.dp_released")
    return output, result


def add_file(
    home: Home, db: Database, project_id: str, path: str, by: Person, description: str = ""
) -> Output:
    """Accept the file at ``path`` in ``by``'s workspace folder of the project (read as their
    workspace account: no ``..``, absolute path or symlink leads out of it): a copy is kept
    (what the checkers review is what is released, whatever happens to the original
    afterwards) and checked on its face."""
    return add_files(home, db, project_id, [(path, description)], by)[0]


def add_files(
    home: Home, db: Database, project_id: str, wanted: Sequence[tuple[str, str]], by: Person
) -> list[Output]:
    """:func:`add_file` for each (path, description) of ``wanted``, the files read at once."""
    import base64

    from tre import privileged
    from tre.outputs import files

    project = _active_project(db, project_id, by)
    read = privileged.call(
        home.root,
        "read_workspace_files",
        username=by.username,
        project=project_id,
        paths=[path for path, _ in wanted],
    )
    stored = []
    for (name, content), (_, description) in zip(read, wanted, strict=True):
        kept = files.keep(name, base64.b64decode(content), home.outputs / project_id)
        result = files.check_file(kept, rule_set_for(project, []))
        result["name"] = name
        spec = {"name": name, "kind": "file", "description": description}
        stored.append(
            _store(db, project_id, spec, result, "file", by, "output.file_added", str(kept))
        )
    return stored


def import_acro(
    home: Home, db: Database, project_id: str, folder: str, by: Person
) -> list[tuple[Output, dict[str, Any]]]:
    """The files of the ACRO session in ``folder`` of ``by``'s workspace folder, added as
    outputs for review with ACRO's own verdict in their description: (output, ACRO's item)."""
    import base64

    from tre import privileged
    from tre.outputs import files

    _active_project(db, project_id, by)
    ((_, results),) = privileged.call(
        home.root,
        "read_workspace_files",
        username=by.username,
        project=project_id,
        paths=[f"{folder.rstrip('/')}/results.json"],
    )
    items = files.read_acro_session(folder, base64.b64decode(results))
    wanted = [
        (
            path,
            f"ACRO {item['type']} {item['uid']} ({item['status']}): {item['summary']}"
            + (f"; comments: {' '.join(map(str, item['comments']))}" if item["comments"] else ""),
        )
        for item in items
        for path in item["files"]
    ]
    added = add_files(home, db, project_id, wanted, by) if wanted else []
    owners = [item for item in items for _ in item["files"]]
    return list(zip(added, owners, strict=True))


def get(db: Database, output_id: int) -> Output:
    with db.read() as session:
        output = session.get(Output, output_id)
        if output is None:
            raise NotFound(f"There is no output #{output_id}.")
        return output


def of_project(db: Database, project_id: str, viewer: Person | None = None) -> list[Output]:
    from tre import projects

    if viewer is not None:
        permissions.check_can_view_project(viewer, projects.get(db, project_id))
    with db.read() as session:
        return list(
            session.execute(
                sa.select(Output).where(Output.project_id == project_id).order_by(Output.id)
            ).scalars()
        )


def mark_released(session, output: Output, event: audit.Event) -> None:
    output.released_at = now()
    audit.record(
        session,
        event.but(
            action="output.released",
            object_type="output",
            object_id=str(output.id),
            details={"project": output.project_id},
        ),
    )


def as_json(output: Output) -> str:
    return json.dumps(
        {"id": output.id, "project": output.project_id, "name": output.name, **output.result},
        indent=2,
        default=str,
    )
