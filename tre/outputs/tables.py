"""Tables and the per-cell statistics the rules need, computed from the data in one query.

A table is a statistic (count of units, sum, mean, median, quantile, min, max, std) of a value
by row and column variables, over the records that pass the filters. For every cell, and for
every margin, the same query gives the number of distinct units (persons) in the cell, the
total and the largest per-unit contributions (for dominance), whether any contribution is
negative, and how many records lack the value. Margins are labelled ``All``, as pandas does.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from tre.exceptions import InvalidInput
from tre.outputs.rules import CellStats
from tre.sql import Connection, identifier

ALL = "All"
MISSING = "(missing)"
STATISTICS = ("count", "sum", "mean", "median", "quantile", "min", "max", "std")
TOP = 3
#: A cell's key: its row labels and its column labels.
Key = tuple[tuple[str, ...], tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class Cell:
    row: tuple[str, ...]
    col: tuple[str, ...]
    stats: CellStats
    value: float | None

    @property
    def margin(self) -> bool:
        return ALL in self.row or ALL in self.col

    @property
    def key(self) -> Key:
        return self.row, self.col


#: What each additive statistic's cells add up as: counts, or the sums of a value. A mean is
#: the sum behind it over the number of values, which a count table of the same people gives
#: an attacker: with it, a mean table is its sum table.
ADDS_UP_AS = {"count": "count", "sum": "sum", "mean": "sum"}


@dataclasses.dataclass(frozen=True)
class Table:
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    statistic: str
    value: str | None
    cells: tuple[Cell, ...]
    margins: bool
    quantile: float | None = None

    def additive_cells(self) -> tuple[Cell, ...]:
        """The cells as figures whose margins are sums of the cells they cover (see
        :data:`ADDS_UP_AS`): a count or sum table's own; a mean table's sums behind its means."""
        if self.statistic == "mean":
            return tuple(dataclasses.replace(c, value=c.stats.total) for c in self.cells)
        return self.cells

    def interior(self) -> list[Cell]:
        return [c for c in self.cells if not c.margin]


def _one_record_each(con: Connection, source: str, unit: str, where: str) -> bool:
    """Whether every record that passes ``where`` has a ``unit`` of its own (none missing)."""
    u = identifier(unit)
    (one,) = con.execute(
        f"SELECT count(*) = count({u}) AND count({u}) = count(DISTINCT {u}) "
        f"FROM {source} WHERE ({where})"
    ).fetchone()
    return bool(one)


def _label(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _statistic_sql(statistic: str, quantile: str) -> str:
    v = "_tre_v"  # the value column, as the query's base names it
    return {
        "count": "NULL",
        "sum": f"sum({v})",
        "mean": f"avg({v})",
        "median": f"median({v})",
        "quantile": f"quantile_cont({v}, {quantile})",
        "min": f"min({v})",
        "max": f"max({v})",
        "std": f"stddev_samp({v})",
    }[statistic]


def compute(
    con: Connection,
    source: str,
    rows: Sequence[str],
    cols: Sequence[str] = (),
    *,
    statistic: str = "count",
    value: str | None = None,
    quantile: float | None = None,
    unit: str | None = None,
    where: str = "true",
    margins: bool = False,
) -> Table:
    """Compute a table from ``source`` (a table name or a ``read_parquet(...)`` expression),
    the records that pass ``where`` (SQL whose values are bound on ``con``)."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}")
    if statistic != "count" and not value:
        raise ValueError(f"a {statistic} table needs a value column")
    if unit and _one_record_each(con, source, unit, where):
        # Each record is a person of its own here (one row a pupil, say): counting records
        # counts people, and a record is its person's whole contribution. The same table,
        # without counting distinct people in every grouping set.
        unit = None
    keys = [*rows, *cols]
    quoted = [identifier(k) for k in keys]
    magnitude = statistic in ("sum", "mean")
    measure = identifier(value) if value else "NULL"
    # Grouping sets: the cells; each row across columns; each column across rows; everything.
    sets = {tuple(keys), tuple(rows), tuple(cols), ()}
    grouping_sets = ", ".join("(" + ", ".join(identifier(k) for k in s) + ")" for s in sets)
    flags = "".join(f"grouping({q}) AS _tre_g{i}, " for i, q in enumerate(quoted))
    key_list = "".join(f"{q}, " for q in quoted)
    statistic_sql = _statistic_sql(statistic, con.bind(quantile) if quantile is not None else "")

    def build(top: str, only: str = "true") -> str:
        if unit and magnitude:
            # Dominance looks at each person's whole contribution to a cell: sum per person.
            unit_sets = ", ".join(
                "(" + ", ".join([*(identifier(k) for k in s), "_tre_unit"]) + ")" for s in sets
            )
            group_keys = ", ".join([*quoted, *(f"_tre_g{i}" for i in range(len(keys)))])
            join_on = (
                " AND ".join(
                    [f"s.{q} IS NOT DISTINCT FROM p.{q}" for q in quoted]
                    + [f"s._tre_g{i} = p._tre_g{i}" for i in range(len(keys))]
                )
                or "true"
            )
            return f"""
                WITH _tre_base AS (
                    SELECT {key_list} {identifier(unit)} AS _tre_unit, {measure} AS _tre_v
                    FROM {source} WHERE ({where}) AND ({only})),
                _tre_per_unit AS (
                    SELECT {key_list} {flags} _tre_unit,
                           sum(_tre_v) AS _tre_contribution, count(*) AS _tre_records,
                           count(_tre_v) AS _tre_present,
                           count(_tre_v) FILTER (WHERE NOT isnan(CAST(_tre_v AS DOUBLE)))
                               AS _tre_numbers
                    FROM _tre_base GROUP BY GROUPING SETS ({unit_sets})),
                _tre_per_cell AS (
                    SELECT {group_keys + "," if keys else ""}
                           count(*) AS _tre_units, sum(_tre_contribution) AS _tre_total,
                           {top.format("_tre_contribution")} AS _tre_top,
                           min(_tre_contribution) < 0 AS _tre_negatives,
                           sum(_tre_records - _tre_present) AS _tre_missing,
                           sum(_tre_present) AS _tre_values,
                           count(*) FILTER (WHERE _tre_numbers > 0) AS _tre_contributors
                    FROM _tre_per_unit GROUP BY {group_keys or "()"}),
                _tre_statistics AS (
                    SELECT {key_list} {flags} {statistic_sql} AS _tre_statistic
                    FROM _tre_base GROUP BY GROUPING SETS ({grouping_sets}))
                SELECT p.*, s._tre_statistic
                FROM _tre_per_cell p JOIN _tre_statistics s ON {join_on}"""
        units = "count(DISTINCT _tre_unit)" if unit else "count(*)"
        # The people with a value (a NaN is none: the sketches leave it out too).
        number = "_tre_v IS NOT NULL AND NOT isnan(CAST(_tre_v AS DOUBLE))"
        contributors = (
            f"count(DISTINCT _tre_unit) FILTER (WHERE {number})"
            if unit
            else f"count(*) FILTER (WHERE {number})"
        )
        unit_column = identifier(unit) + " AS _tre_unit," if unit else ""
        return f"""
            WITH _tre_base AS (
                SELECT {key_list} {unit_column} {measure} AS _tre_v
                FROM {source} WHERE ({where}) AND ({only}))
            SELECT {key_list} {flags} {units} AS _tre_units, sum(_tre_v) AS _tre_total,
                   {top.format("_tre_v") if magnitude else "NULL"} AS _tre_top,
                   {"min(_tre_v) < 0" if magnitude else "false"} AS _tre_negatives,
                   count(*) - count(_tre_v) AS _tre_missing, count(_tre_v) AS _tre_values,
                   {contributors} AS _tre_contributors, {statistic_sql} AS _tre_statistic
            FROM _tre_base GROUP BY GROUPING SETS ({grouping_sets})"""

    def labelled(row: dict) -> tuple[list[str], tuple[str, ...]]:
        labels = [ALL if row[f"_tre_g{i}"] else _label(row[k]) for i, k in enumerate(keys)]
        for i, k in enumerate(keys):
            if not row[f"_tre_g{i}"] and row[k] is not None and labels[i] in (ALL, MISSING):
                # Its cell would take a margin's or a missing value's place, and their checks.
                raise InvalidInput(
                    f"{k} has a category named {labels[i]!r}, which the TRE uses for a margin "
                    "or a missing value: it cannot be a row or column. Ask its custodian to "
                    "recode that category."
                )
        return labels, tuple(k for i, k in enumerate(keys) if not row[f"_tre_g{i}"])

    # The largest contribution of every cell first (cheap); the three largest, exactly, only
    # for cells where the largest is more than a thirtieth of the total. Elsewhere the largest
    # stands in for the second and third: an upper bound, so dominance is judged
    # conservatively, and far from any threshold since the cell is not dominated.
    result = con.execute(build("[max({})]"))
    names = [d[0] for d in result.description]
    records = [dict(zip(names, r, strict=True)) for r in result.fetchall()]
    exact: dict[tuple[str, ...], list[float]] = {}
    if magnitude:
        needed = [
            r
            for r in records
            if r["_tre_top"]
            and r["_tre_top"][0] is not None
            and r["_tre_total"] is not None
            and r["_tre_top"][0] * 30 >= abs(r["_tre_total"])
        ]
        if needed:
            only = "true"
            if len(needed) <= 50:
                clauses = []
                for r in needed:
                    fixed = [
                        f"{q} IS NOT DISTINCT FROM {con.bind(r[k])}"
                        for i, (k, q) in enumerate(zip(keys, quoted, strict=True))
                        if not r[f"_tre_g{i}"]
                    ]
                    clauses.append("(" + (" AND ".join(fixed) or "true") + ")")
                only = " OR ".join(clauses)
            wanted = {tuple(labelled(r)[0]) for r in needed}
            for r in con.execute(build(f"max({{}}, {TOP})", only)).fetchall():
                row = dict(zip(names, r, strict=True))
                labels = tuple(labelled(row)[0])
                if labels in wanted:  # other cells of this query saw only part of the data
                    exact[labels] = row["_tre_top"]
    cells = []
    for row in records:
        labels, in_set = labelled(row)
        if not margins and in_set != tuple(keys):
            continue
        total = row["_tre_total"] if statistic != "count" else None
        top: tuple[float, ...] = ()
        if magnitude and row["_tre_top"] and row["_tre_top"][0] is not None:
            found = exact.get(tuple(labels))
            if found:
                top = tuple(float(t) for t in found if t is not None)
            else:
                top = (float(row["_tre_top"][0]),) * TOP
        stats = CellStats(
            units=int(row["_tre_units"]),
            total=float(total) if total is not None else None,
            top=top,
            negatives=bool(row["_tre_negatives"]) if magnitude else False,
            missing=int(row["_tre_missing"] or 0) if value else 0,
            values=int(row["_tre_values"] or 0) if value else 0,
            contributors=int(row["_tre_contributors"] or 0) if value else None,
        )
        cell_value = float(row["_tre_units"]) if statistic == "count" else row["_tre_statistic"]
        cells.append(
            Cell(
                tuple(labels[: len(rows)]),
                tuple(labels[len(rows) :]),
                stats,
                None if cell_value is None else float(cell_value),
            )
        )
    cells = _with_shares(cells, rows, cols)
    cells.sort(key=lambda c: (c.margin, [(x == ALL, x) for x in c.row + c.col]))
    return Table(tuple(rows), tuple(cols), statistic, value, tuple(cells), margins, quantile)


def _with_shares(cells: list[Cell], rows: Sequence[str], cols: Sequence[str]) -> list[Cell]:
    """Each interior cell's share of its row's units (of all units, in a one-way table). A
    table of no variables, one overall figure, has no share: it describes everyone."""
    if not cells or not (rows or cols):
        return cells
    interior = [c for c in cells if not c.margin]
    totals: dict[tuple[str, ...], int] = {}
    for cell in interior:
        group = cell.row if cols else ()
        totals[group] = totals.get(group, 0) + cell.stats.units
    out = []
    for cell in cells:
        if cell.margin:
            out.append(cell)
            continue
        group = cell.row if cols else ()
        share = cell.stats.units / totals[group] if totals[group] else None
        out.append(dataclasses.replace(cell, stats=dataclasses.replace(cell.stats, share=share)))
    return out


def full_grid(table: Table) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every combination of the row and column labels seen (empty cells included)."""
    interior = table.interior()
    row_labels = sorted({c.row for c in interior})
    col_labels = sorted({c.col for c in interior})
    return list(itertools.product(row_labels, col_labels))


def with_empty_cells(table: Table) -> Table:
    """Add the empty cells of the grid (count tables), so zeros are seen and checked."""
    present = {c.key for c in table.cells}
    empty = [
        Cell(
            r,
            c,
            CellStats(units=0, total=0.0 if table.statistic != "count" else None, share=0.0),
            0.0 if table.statistic in ("count", "sum") else None,
        )
        for r, c in full_grid(table)
        if (r, c) not in present
    ]
    if not empty:
        return table
    cells = sorted(
        [*table.cells, *empty],
        key=lambda c: (c.margin, [(x == ALL, x) for x in c.row + c.col]),
    )
    return dataclasses.replace(table, cells=tuple(cells))
