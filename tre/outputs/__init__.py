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
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, defer, mapped_column

from tre import audit, catalog, permissions
from tre.db import Base, Database
from tre.exceptions import InvalidInput, NotFound, PermissionDenied
from tre.home import Home
from tre.outputs import differencing, linked, models, privacy, results, specs, tables
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


def _published(db: Database, project_id: str) -> list[tuple[str, Output, specs.OutputSpec]]:
    """The project's released tables and summaries (label, output, specification), read once
    for both differencing and linked tables."""
    return [
        (f"#{o.id} '{o.name}'", o, specs.parse(o.spec))
        for o in released(db, project_id)
        if o.kind in ("table", "summary")
    ]


def _as_tables(published: list[tuple[str, Output, specs.OutputSpec]]) -> list[linked.Release]:
    """What they published, as tables (:func:`linked.releases_of`)."""
    return [
        release
        for label, o, spec in published
        for release in linked.releases_of(label, spec, o.result.get("cells", []))
    ]


def compute(
    home: Home,
    db: Database,
    project,
    spec: specs.OutputSpec,
    rule_set_name: str = "default",
    alongside: Sequence[linked.Release] = (),
) -> results.Result:
    """Compute and check ``spec`` over the project's extracts (nothing is stored), against the
    project's releases and the tables ``alongside`` (submitted with it, to be released
    together)."""
    from tre.projects import extracts as project_extracts

    folder = project_extracts.folder(home, project.id) / "extracts"
    extract = specs.Extracts.of(folder)
    relation, columns = specs.relation(spec, extract)
    rule_set = rule_set_for(project, spec.datasets, rule_set_name)
    where = specs.where(spec.filters, columns)
    description = {"name": spec.name, "population": spec.population()}
    con = duckdb.connect()
    try:
        if spec.kind == "table":
            table = tables.compute(
                con,
                relation,
                spec.rows,
                spec.cols,
                statistic=spec.statistic,
                value=spec.value,
                quantile=spec.quantile,
                unit=specs.UNIT,
                where=where,
                margins=spec.margins,
            )
            if table.statistic in ("count", "sum"):
                table = tables.with_empty_cells(table)
            published = _published(db, project.id)
            # One per output (a summary gives two tables over the same people).
            together = {t.label: t.spec for t in alongside}
            earlier = [(label, s) for label, o, s in published if o.kind == "table"]
            earlier += together.items()
            more = differencing.findings(con, relation, columns, spec, earlier, rule_set)
            result = results.check_table(table, rule_set, more)
            releases = [*_as_tables(published), *alongside]
            hide_also = _linked(
                con, relation, columns, where, spec, table, result, releases, rule_set
            )
            if hide_also:
                result = results.check_table(table, rule_set, more, hide_also=hide_also)
            return _describe(result, description)
        if spec.kind == "summary":
            releases = [*_as_tables(_published(db, project.id)), *alongside]
            return _summary(con, relation, columns, where, spec, rule_set, description, releases)
        if spec.kind == "model":
            return models.fit(
                con,
                relation,
                where,
                spec.formula,
                spec.family,
                rule_set,
                description,
                columns,
                specs.UNIT,
            )
        raise InvalidInput("DP queries spend budget: run them with `tre outputs dp`.")
    finally:
        con.close()


def _describe(result: results.Result, description: dict[str, Any]) -> results.Result:
    return results.Result(
        result.kind,
        {**description, **result.description},
        result.cells,
        result.rule_set,
        result.extra,
    )


def _linked(con, relation, columns, where, spec, table, result, releases, rule_set) -> dict:
    """The cells of ``table`` (checked alone as ``result``) to hide too because of the
    releases it is linked with (:mod:`tre.outputs.linked`): over the same rows, however
    their filters are written."""
    releases = linked.linked(
        spec, releases, lambda old: differencing.same_rows(con, relation, columns, spec, old)
    )
    if not releases:
        return {}
    hidden = {(c.row, c.col) for c in result.cells if c.value is None}
    primary = {(c.row, c.col) for c in result.cells if c.suppression == "primary"}
    return linked.hide(
        con,
        relation,
        where,
        specs.UNIT,
        spec,
        {c.key: None if c.key in hidden else c.value for c in table.additive_cells()},
        results.protection(table, primary, rule_set),
        releases,
        rule_set,
    )


def _summary(
    con, relation, columns, where, spec, rule_set, description, releases=()
) -> results.Result:
    computed: dict[str, tuple[tables.Table, results.Result]] = {}

    def table_of(statistic: str) -> tuple[tables.Table, results.Result]:
        """The summary's statistic as a table by its rows, checked alone (computed once)."""
        if statistic not in computed:
            table = tables.compute(
                con,
                relation,
                spec.rows or (),
                (),
                statistic=statistic,
                value=None if statistic == "count" else spec.value,
                unit=specs.UNIT,
                where=where,
            )
            computed[statistic] = table, results.check_table(table, rule_set)
        return computed[statistic]

    cells: list[results.CheckedCell] = []
    for statistic in spec.statistics:
        _, checked = table_of(statistic)
        cells += [
            results.CheckedCell(
                c.row or ("All",),
                (statistic,),
                c.value,
                c.status,
                c.reasons,
                c.suppression,
                c.rules,
            )
            for c in checked.cells
        ]
    cells = _summary_linked(
        con, relation, columns, where, spec, rule_set, cells, releases, table_of
    )
    return results.Result(
        "summary",
        {
            **description,
            "rows": list(spec.rows),
            "value": spec.value,
            "statistics": list(spec.statistics),
        },
        tuple(cells),
        rule_set,
    )


def _summary_linked(con, relation, columns, where, spec, rule_set, cells, releases, table_of):
    """A summary's rows that would give away, with earlier releases, a count or sum they hide
    are hidden whole (its counts and sums are tables: :func:`linked.releases_of`;
    ``table_of`` gives each statistic's table, checked alone)."""
    if not releases:
        return cells
    label = "this summary"
    views = linked.releases_of(label, spec, [c.as_dict() for c in cells])
    rows: dict[tuple[str, ...], str] = {}
    for view in views:
        table, alone = table_of(view.spec.statistic)
        published = {tuple(c["row"]): c["value"] for c in view.cells}
        shown = [dataclasses.replace(c, value=published.get(c.row)) for c in alone.cells]
        result = dataclasses.replace(alone, cells=tuple(shown))
        for key, earlier in _linked(
            con, relation, columns, where, view.spec, table, result, releases, rule_set
        ).items():
            rows[key[0] or ("All",)] = earlier
    out = []
    for cell in cells:
        if cell.row in rows and cell.value is not None:
            reason = (
                f"hidden too, so that no suppressed figure of this summary or of the earlier "
                f"release {rows[cell.row]} can be worked out from the two"
            )
            cell = dataclasses.replace(
                cell, value=None, suppression="secondary", reasons=(*cell.reasons, reason)
            )
        out.append(cell)
    return out


WITHHELD = "withheld until output checkers have reviewed it"


def shown_result(output: Output, viewer: Person, project) -> dict[str, Any]:
    """The output's result as ``viewer`` may see it: values not passed by the automatic check
    are withheld until release, and so is everything read from a file (its labels too), except
    from output checkers."""
    released = output.released_at is not None
    if permissions.sees_unreviewed_values(viewer, project, released):
        return output.result
    if output.kind == "file":
        return {**output.result, "cells": [], "withheld": WITHHELD}
    cells = []
    for cell in output.result.get("cells", []):
        if cell.get("value") is not None and cell["status"] != R.PASS:
            cell = {**cell, "value": None, "withheld": WITHHELD}
        cells.append(cell)
    return {**output.result, "cells": cells}


def _store(
    db: Database,
    project_id: str,
    spec: dict,
    result: dict,
    kind: str,
    by: Person,
    action: str,
    file_path: str | None = None,
) -> Output:
    with db.write() as session:
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
        db, project_id, dict(spec.raw), result.as_dict(), spec.kind, by, "output.checked"
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
    relation, columns = specs.relation(spec, specs.Extracts.of(folder))
    where = specs.where(spec.filters, columns)
    con = duckdb.connect()
    try:
        if spec.query == "histogram":
            data = [
                str(v)
                for (v,) in con.execute(
                    f'SELECT mode("{spec.value}") FROM {relation} WHERE {where} '
                    f"GROUP BY {specs.UNIT}"
                ).fetchall()
            ]
        elif spec.query == "count":
            data = [1.0] * con.execute(
                f"SELECT count(DISTINCT {specs.UNIT}) FROM {relation} WHERE {where}"
            ).fetchone()[0]
        else:
            aggregate = "sum" if spec.query in ("sum", "mean") else "avg"
            data = [
                float(v)
                for (v,) in con.execute(
                    f'SELECT {aggregate}("{spec.value}") FROM {relation} WHERE {where} '
                    f'AND "{spec.value}" IS NOT NULL GROUP BY {specs.UNIT}'
                ).fetchall()
            ]
    finally:
        con.close()
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
    home: Home, db: Database, project_id: str, path: Path, by: Person, description: str = ""
) -> Output:
    """Accept a file: a copy is kept in the project's folder (what the checkers review is what
    is released, whatever happens to the original afterwards) and checked on its face."""
    from tre.outputs import files
    from tre.projects import extracts as project_extracts

    project = _active_project(db, project_id, by)
    kept = files.keep(path, project_extracts.folder(home, project_id) / "outputs")
    result = files.check_file(kept, rule_set_for(project, []))
    result["name"] = path.name
    spec = {"name": path.name, "kind": "file", "description": description}
    return _store(db, project_id, spec, result, "file", by, "output.file_added", str(kept))


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
