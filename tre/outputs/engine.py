"""The output engine: what runs over a project's extracts, and nothing else.

A :class:`Job` holds all the engine needs: the extracts folder, the specification, the rule
set, and what the project published before (to compare against). The engine reads no database,
no key and no other store: :mod:`tre.outputs.worker` runs it in a process of its own, under
the project's OS account, with time and memory limits, and hands back what it found as data
(:func:`run` returns JSON-ready values).

The SQL runs on a :func:`tre.sql.sandboxed_duckdb` connection that reads the extracts folder
only, one statement per call, every name through :func:`tre.sql.identifier` and every value
bound as a parameter.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tre import sql
from tre.catalog import Type
from tre.exceptions import InvalidInput
from tre.outputs import differencing, linked, models, populations, results, specs, tables
from tre.outputs import rules as R

Key = tables.Key
#: What a job asks of the engine.
CHECK, DP_DATA = "check", "dp-data"
#: The most a job's DuckDB may write to its temporary folder when it runs out of memory.
SPILL_LIMIT = "2GB"


@dataclasses.dataclass(frozen=True)
class Job:
    """One computation over a project's extracts, as data (it crosses a process boundary)."""

    action: str
    extracts: str
    spec: dict[str, Any]
    rule_set: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The project's released tables, summaries and models: [label, specification, cells,
    #: populations (or None: computed again)] each.
    published: list[list[Any]] = dataclasses.field(default_factory=list)
    #: Outputs submitted before this one in the same request, alike.
    alongside: list[list[Any]] = dataclasses.field(default_factory=list)
    #: The project's key for the hashes of its units in population sketches (hex).
    population_key: str = ""
    #: Whether to hand back the sketches of the output's populations, to be stored (when it
    #: may be released); else they are computed only where differencing needs them.
    keep_populations: bool = False
    #: DuckDB's threads and memory (the worker's limits leave room for Python around it).
    threads: int = 1
    memory_limit: str = "1GB"
    #: The most cells a table may have (TRE_OUTPUT_MAX_CELLS).
    max_cells: int = 5000
    #: The most categories a row or column variable may have (TRE_OUTPUT_MAX_CATEGORIES).
    max_categories: int = 50

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def run(job: Job) -> Any:
    """Do ``job``; JSON-ready values. Bad specifications raise InvalidInput."""
    spec = specs.parse(job.spec)
    folder = Path(job.extracts)
    extracts = specs.Extracts.of(folder)
    with (
        tempfile.TemporaryDirectory(prefix="tre-output-") as temp,
        sql.Connection(
            sql.sandboxed_duckdb(
                folder,
                Path(temp),
                threads=job.threads,
                memory_limit=job.memory_limit,
                spill_limit=SPILL_LIMIT,
            )
        ) as con,
    ):
        if job.action == DP_DATA:
            return _dp_data(con, spec, extracts)
        if job.action == CHECK:
            rule_set = R.RuleSet(**job.rule_set)
            published = [(label, specs.parse(s), *rest) for label, s, *rest in job.published]
            alongside = [(label, specs.parse(s), *rest) for label, s, *rest in job.alongside]
            return to_wire(
                compute(
                    con,
                    spec,
                    extracts,
                    rule_set,
                    published,
                    alongside,
                    job.max_cells,
                    job.max_categories,
                    bytes.fromhex(job.population_key),
                    job.keep_populations,
                )
            )
    raise InvalidInput(f"The output engine does not know how to {job.action!r}.")


def to_wire(result: results.Result) -> dict[str, Any]:
    """A result as JSON-ready data, every field kept (:func:`from_wire` reads it back)."""
    return {
        "kind": result.kind,
        "description": result.description,
        "cells": [{**c.as_dict(), "rules": list(c.rules)} for c in result.cells],
        "rule_set": dataclasses.asdict(result.rule_set),
        "extra": result.extra,
        "populations": result.populations,
    }


def from_wire(data: dict[str, Any]) -> results.Result:
    return results.Result(
        data["kind"],
        data["description"],
        tuple(
            results.CheckedCell(
                tuple(c["row"]),
                tuple(c["col"]),
                c["value"],
                c["status"],
                tuple(c["reasons"]),
                c["suppression"],
                tuple(c.get("rules", ())),
            )
            for c in data["cells"]
        ),
        R.RuleSet(**data["rule_set"]),
        data["extra"],
        data.get("populations"),
    )


def compute(
    con: sql.Connection,
    spec: specs.OutputSpec,
    extracts: specs.Extracts,
    rule_set: R.RuleSet,
    published: Sequence[Sequence[Any]] = (),
    alongside: Sequence[Sequence[Any]] = (),
    max_cells: int = 5000,
    max_categories: int = 50,
    population_key: bytes = b"",
    keep_populations: bool = True,
) -> results.Result:
    """Compute and check ``spec``, against the project's ``published`` outputs and those
    ``alongside`` (submitted with it, to be released together): (label, specification, cells,
    populations or None) each. A table or summary of more than ``max_cells`` cells is refused
    before anything else is computed."""
    relation, columns = specs.relation(spec, extracts, con)
    where = specs.where(spec.filters, columns, con)
    if spec.kind in ("table", "summary"):
        _check_size(con, relation, where, spec, max_cells, max_categories)
    if spec.kind == "model":
        models.check_size(con, relation, where, spec.formula, columns)
    description = {"name": spec.name, "population": spec.population()}
    releases = [
        release
        for label, s, cells, *_ in (*published, *alongside)
        if s.kind in ("table", "summary")
        for release in linked.releases_of(label, s, cells)
    ]
    threshold = rule_set.threshold
    earlier_outputs = (*published, *alongside)
    thresholds = [
        populations.Populations.threshold_of(o[3] if len(o) > 3 else None) for o in earlier_outputs
    ]
    width = populations.width_for(max([populations.WIDTH_THRESHOLD, threshold, *thresholds]))
    earlier, uncompared = _released_populations(
        con, extracts, earlier_outputs, width, population_key
    )
    sizes = sorted(s.n for release in earlier for s in release.cells.values())
    most = max([threshold, *(r.threshold for r in earlier)])

    def sketches(only=None) -> populations.Populations:
        return _populations(
            con, relation, where, spec, columns, width, population_key, threshold, only
        )

    def differencing(units: Mapping[Key, int] | None = None) -> dict:
        """Findings by cell key against the earlier releases. With each cell's ``units`` known
        (a count table's), only the cells close in size to a released one are compared, and
        only their grouping sets sketched; the totals a table does not show are compared too
        (its cells add up to them)."""
        found = _uncompared(uncompared)
        if not sizes:
            return found
        if units is None:
            mine = sketches()
        else:
            close = [k for k, n in units.items() if _close(n, sizes, most)]
            if not close:
                return found
            sketched = sketches(close)
            empty = populations.Sketch.empty(width)  # a cell of no one: no row to sketch
            near = {k: sketched.cells.get(k, empty) for k in close}
            if any(near[k].n != units[k] for k in close):  # labels DuckDB writes otherwise
                whole = sketches()
                near = {k: whole.cells.get(k, empty) for k in close}
            mine = populations.Populations(width, near, threshold)
        for key, more in populations.findings(mine, earlier, threshold).items():
            found.setdefault(key, []).extend(more)
        return found

    result = _compute(
        con,
        spec,
        relation,
        columns,
        where,
        rule_set,
        description,
        releases,
        differencing,
        max_cells,
    )
    if keep_populations:
        result = dataclasses.replace(result, populations=sketches().to_wire())
    return result


#: The key of findings for the whole output (no cell's key: those have two parts).
EVERY_CELL = ("the whole output",)


def _uncompared(labels: Sequence[str]) -> dict:
    if not labels:
        return {}
    why = (
        f"it could not be compared with the earlier release{'s' if len(labels) > 1 else ''} "
        f"{', '.join(labels)} (no longer computed over these extracts): a checker must judge "
        "whether the two together reveal a few people"
    )
    return {EVERY_CELL: [R.Finding("differencing", R.REVIEW, why)]}


def _close(n: int, sizes: Sequence[int], threshold: int) -> bool:
    """Whether a released population's size is within ``threshold - 1`` of ``n``."""
    i = bisect.bisect_left(sizes, n - threshold + 1)
    return i < len(sizes) and sizes[i] <= n + threshold - 1


def _valued(where: str, value: str | None, columns) -> str:
    """``where``, and a value there to count (not missing; for a decimal, not NaN)."""
    if not value:
        return where
    v = sql.identifier(value)
    present = f"{v} IS NOT NULL"
    if columns.get(value) is Type.DECIMAL:
        present += f" AND NOT isnan(CAST({v} AS DOUBLE))"
    return f"({where}) AND {present}"


def _populations(
    con: sql.Connection,
    relation: str,
    where: str,
    spec: specs.OutputSpec,
    columns,
    width: int,
    key: bytes,
    threshold: int = 0,
    only: Sequence[Key] | None = None,
) -> populations.Populations:
    """The sketches of the populations of ``spec``'s cells:

    - a table's cells and every total they add up to (with ``only``, those cells' grouping
      sets), over the people with a value when the statistic is of a value;
    - a summary's rows: everyone in each (its count), and those with a value (the rest);
    - a model: the rows it is fitted on (complete cases; a decimal's NaN is missing, as the
      fit drops it), and each group of categories the fit has a coefficient for.
    """
    compute = functools.partial(populations.compute, con, relation)
    if spec.kind == "model":
        formula = models.parse_formula(spec.formula)
        complete = where
        for column in formula.columns:
            complete = _valued(complete, column, columns)
        cells = {}
        whole = compute(complete, (), (), specs.UNIT, key, width)
        cells[populations.MODEL] = whole.get(((), ()), populations.Sketch.empty(width))
        for grouping in models.groupings(formula, columns, spec.family):
            for k, sketch in compute(complete, grouping, (), specs.UNIT, key, width).items():
                cells[((f"model: {' × '.join(grouping)}", *k[0]), ("model",))] = sketch
        return populations.Populations(width, cells, threshold)
    if spec.kind == "summary":
        cells = {}
        valued = _valued(where, spec.value, columns)
        for kind, condition in ((populations.COUNT, where), (populations.VALUE, valued)):
            # Each row, and every total the rows add up to (their counts and means give it).
            found = compute(condition, spec.rows, (), specs.UNIT, key, width, True)
            for k, sketch in found.items():
                cells[(k[0] or ("All",), (kind,))] = sketch
        return populations.Populations(width, cells, threshold)
    condition = where if spec.statistic == "count" else _valued(where, spec.value, columns)
    found = compute(condition, spec.rows, spec.cols, specs.UNIT, key, width, True, only)
    return populations.Populations(width, found, threshold)


def _released_populations(
    con: sql.Connection,
    extracts: specs.Extracts,
    earlier: Sequence[Sequence[Any]],
    width: int,
    key: bytes,
) -> tuple[list[populations.Released], list[str]]:
    """The shown cells of each earlier output with their populations: as stored, else (an
    output released before populations were kept, or for a larger threshold) computed again
    from its specification; and the labels of those that cannot be computed any more."""
    out, uncompared = [], []
    for label, spec, cells, *rest in earlier:
        if spec.kind not in ("table", "summary", "model"):
            continue
        stored_wire = rest[0] if rest else None
        stored = populations.Populations.from_wire(stored_wire, width)
        if stored is None:
            try:
                relation, columns = specs.relation(spec, extracts, con)
                where = specs.where(spec.filters, columns, con)
                stored = _populations(con, relation, where, spec, columns, width, key)
            except (InvalidInput, KeyError):  # a column the extracts no longer have
                uncompared.append(label)
                continue
        threshold = populations.Populations.threshold_of(stored_wire)
        out.append(populations.Released(label, populations.shown_cells(stored, cells), threshold))
    return out, uncompared


def _compute(
    con, spec, relation, columns, where, rule_set, description, releases, differencing, max_cells
) -> results.Result:
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
        # The cells' sizes filter what is compared when every total is a cell (margins): a
        # count's people, a value's people with a value.
        sizes = {
            c.key: c.stats.units if table.statistic == "count" else c.stats.contributors
            for c in table.cells
        }
        known = spec.margins and all(n is not None for n in sizes.values())
        found = differencing(sizes if known else None)
        more = _onto_cells(found, table)
        result = results.check_table(table, rule_set, more)
        with_them = _linked_releases(con, relation, columns, spec, releases)
        if with_them:
            # What the checkers are told: the table was protected together with these.
            description["linked_with"] = sorted({r.label for r in with_them})
        hide_also = _linked(
            con, relation, columns, where, spec, table, result, with_them, rule_set, max_cells
        )
        if hide_also:
            result = results.check_table(table, rule_set, more, hide_also=hide_also)
        reviewed = _to_review(result.cells, linked.unchecked(with_them, rule_set))
        return _describe(dataclasses.replace(result, cells=reviewed), description)
    if spec.kind == "summary":
        return _summary(
            con, relation, columns, where, spec, rule_set, description, releases, differencing()
        )
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
            _whole(differencing()),
        )
    raise InvalidInput("DP queries spend budget: run them with `tre outputs dp`.")


def _dp_data(con: sql.Connection, spec: specs.OutputSpec, extracts: specs.Extracts) -> list:
    """The input of a DP query: one record per person (a value, or 1.0 for a count)."""
    relation, columns = specs.relation(spec, extracts, con)
    where = specs.where(spec.filters, columns, con)
    unit = sql.identifier(specs.UNIT)
    if spec.query == "count":
        (persons,) = con.execute(
            f"SELECT count(DISTINCT {unit}) FROM {relation} WHERE {where}"
        ).fetchone()
        return [1.0] * persons
    value = sql.identifier(spec.value)
    if spec.query == "histogram":
        return [
            str(v)
            for (v,) in con.execute(
                f"SELECT mode({value}) FROM {relation} WHERE {where} GROUP BY {unit}"
            ).fetchall()
        ]
    aggregate = "sum" if spec.query in ("sum", "mean") else "avg"
    return [
        float(v)
        for (v,) in con.execute(
            f"SELECT {aggregate}({value}) FROM {relation} WHERE {where} "
            f"AND {value} IS NOT NULL GROUP BY {unit}"
        ).fetchall()
    ]


def _describe(result: results.Result, description: dict[str, Any]) -> results.Result:
    return results.Result(
        result.kind,
        {**description, **result.description},
        result.cells,
        result.rule_set,
        result.extra,
    )


def _linked_releases(con, relation, columns, spec, releases) -> list[linked.Release]:
    """The releases ``spec`` is linked with (:mod:`tre.outputs.linked`): over the same rows,
    however their filters are written."""
    return linked.linked(
        spec, releases, lambda old: differencing.same_rows(con, relation, columns, spec, old)
    )


def _check_size(
    con, relation: str, where: str, spec: specs.OutputSpec, max_cells: int, max_categories: int
) -> None:
    """Refuse a table whose grid (every level of every row and column variable, crossed)
    holds more than ``max_cells`` cells, before computing it: it is no summary, and checking
    it (secondary suppression) would not finish."""
    variables = [*spec.rows, *spec.cols]
    if not variables:
        return
    counts = ", ".join(
        f"count(DISTINCT {sql.identifier(v)}) + max(CASE WHEN {sql.identifier(v)} IS NULL "
        "THEN 1 ELSE 0 END)"
        for v in variables
    )
    levels = con.execute(f"SELECT {counts} FROM {relation} WHERE {where}").fetchone()
    many = [(v, n) for v, n in zip(variables, levels, strict=True) if int(n or 0) > max_categories]
    if many:
        detail = ", ".join(f"{v} ({int(n):,})" for v, n in many)
        raise InvalidInput(
            f"Output {spec.name!r} groups by variables of more than {max_categories} categories "
            f"(TRE_OUTPUT_MAX_CATEGORIES): {detail}. A category per value singles people out: "
            "band the variable (a range filter per band, or a coarser column) instead."
        )
    cells = math.prod(int(n or 0) for n in levels)
    if cells > max_cells:
        detail = " × ".join(f"{v} ({n})" for v, n in zip(variables, levels, strict=True))
        raise InvalidInput(
            f"Output {spec.name!r} would have {cells:,} cells ({detail}), more than the "
            f"{max_cells:,} the TRE checks in one output (TRE_OUTPUT_MAX_CELLS). Use fewer "
            "variables, or variables with fewer levels (bands rather than values), or filter "
            "the records first."
        )


def _linked(
    con, relation, columns, where, spec, table, result, releases, rule_set, max_cells=5000
) -> dict:
    """The cells of ``table`` (checked alone as ``result``) to hide too because of the
    ``releases`` it is linked with (:func:`_linked_releases`)."""
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
        max_cells,
    )


def _summary(
    con, relation, columns, where, spec, rule_set, description, releases=(), differ=None
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
    whole = _whole(differ or {})
    failing = [f for f in whole if f.status == R.FAIL]
    cells = [_failed_by(c, failing) for c in cells]
    cells = list(_to_review(cells, "; ".join(f.reason for f in whole if f.status != R.FAIL)))
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


def _whole(found: dict) -> list[R.Finding]:
    """What differencing ``found``, for the whole output: a figure of it (a cell, a total its
    cells add up to, a row, a group) a few people from a released one fails all of it.
    Failing only that figure would say where those people are (the pattern of what is hidden),
    and a figure hidden today could be worked out from the next release."""
    out: list[R.Finding] = []
    for more in found.values():
        for finding in more:
            if finding not in out:
                out.append(finding)
    return out


def _onto_cells(found: dict, table: tables.Table) -> dict:
    """Every finding of differencing (:func:`_whole`), on every cell of ``table``."""
    whole = _whole(found)
    return {c.key: list(whole) for c in table.cells} if whole else {}


def _failed_by(cell: results.CheckedCell, found: list[R.Finding]) -> results.CheckedCell:
    """``cell``, hidden for what differencing ``found`` (a summary's row: no secondary
    suppression, its cells add up to nothing)."""
    if not found:
        return cell
    return dataclasses.replace(
        cell,
        value=None,
        status=R.FAIL,
        reasons=(*cell.reasons, *(f.reason for f in found)),
        suppression=cell.suppression or "primary",
        rules=(*cell.rules, *(f.rule for f in found)),
    )


def _to_review(cells: Sequence[results.CheckedCell], why: str) -> tuple[results.CheckedCell, ...]:
    """``cells``, each shown one sent to review for ``why`` (nothing, when ``why`` is empty)."""
    if not why:
        return tuple(cells)
    return tuple(
        dataclasses.replace(
            c,
            status=R.REVIEW if c.status == R.PASS else c.status,
            reasons=(*c.reasons, why),
            rules=(*c.rules, "linked_tables"),
        )
        if c.value is not None
        else c
        for c in cells
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
    unchecked = ""
    for view in views:
        table, alone = table_of(view.spec.statistic)
        published = {tuple(c["row"]): c["value"] for c in view.cells}
        shown = [dataclasses.replace(c, value=published.get(c.row)) for c in alone.cells]
        result = dataclasses.replace(alone, cells=tuple(shown))
        with_them = _linked_releases(con, relation, columns, view.spec, releases)
        unchecked = unchecked or linked.unchecked(with_them, rule_set)
        for key, earlier in _linked(
            con, relation, columns, where, view.spec, table, result, with_them, rule_set
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
    return list(_to_review(out, unchecked))
