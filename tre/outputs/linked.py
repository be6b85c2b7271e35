"""Linked tables: a new table and the project's earlier releases over the same people.

An attacker holds every release of the project. Two tables over the same population and the
same additive statistic (count, or sum, of which a mean is a view once the counts are known)
are two views of one set of numbers: a cell one hides
may be the difference of cells the other publishes (the same table with and without margins;
a table by ethnicity after one by ethnicity and admission). Before a table is released, the
TRE solves the attacker's linear program over both: the unknowns are the finest cells (every
combination of the variables of either table, from the data), every published cell of either
is a known sum of them, and no suppressed cell, of the new table or of an earlier one, may be
narrowed below its protection level. Where one would be, more cells of the new table are
hidden (the earlier release cannot change). Tables over other people (other filters) are
:mod:`~tre.outputs.differencing`'s concern.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import linprog

from tre.outputs import rules as R
from tre.outputs import suppression, tables
from tre.outputs.specs import OutputSpec
from tre.sql import Connection

Key = tables.Key
Flat = tuple[str, ...]
TRIES = 12


@dataclasses.dataclass(frozen=True)
class Release:
    label: str
    spec: OutputSpec
    cells: Sequence[Mapping]  # as released: row, col, value (None when suppressed)


def releases_of(label: str, spec: OutputSpec, cells: Sequence[Mapping]) -> list[Release]:
    """What an output published, as tables an attacker can combine: a table as it is; a
    summary as the count table and the sum table it gives (a sum is also a mean times its
    count)."""
    if spec.kind == "table":
        return [Release(label, spec, cells)]
    if spec.kind != "summary":
        return []
    by_row: dict[tuple[str, ...], dict[str, float | None]] = {}
    for cell in cells:
        row = tuple(cell["row"]) if spec.rows else ()
        by_row.setdefault(row, {})[cell["col"][0]] = cell.get("value")
    shape = dataclasses.replace(spec, kind="table", cols=(), margins=False)
    out = []
    if "count" in spec.statistics:
        counted = [{"row": list(r), "col": [], "value": v.get("count")} for r, v in by_row.items()]
        out.append(
            Release(label, dataclasses.replace(shape, statistic="count", value=None), counted)
        )
    if "sum" in spec.statistics or {"mean", "count"} <= set(spec.statistics):
        summed = [{"row": list(r), "col": [], "value": _sum(v)} for r, v in by_row.items()]
        out.append(Release(label, dataclasses.replace(shape, statistic="sum"), summed))
    return out


def _sum(statistics: Mapping[str, float | None]) -> float | None:
    if statistics.get("sum") is not None:
        return statistics["sum"]
    mean, count = statistics.get("mean"), statistics.get("count")
    return None if mean is None or count is None else mean * count


def linked(
    new: OutputSpec,
    earlier: Sequence[Release],
    same_people: Callable[[OutputSpec], bool] | None = None,
) -> list[Release]:
    """The earlier releases an attacker can combine with ``new`` cell by cell: tables of
    counts, or of sums and means of the same value, over the same people (``same_people``, by
    default the same population as written; :func:`tre.outputs.differencing.same_rows` also
    asks the data)."""
    if new.kind != "table" or new.statistic not in tables.ADDS_UP_AS:
        return []
    if same_people is None:
        same_people = lambda old: old.population() == new.population()  # noqa: E731
    return [
        e
        for e in earlier
        if e.spec.kind == "table"
        and tables.ADDS_UP_AS.get(e.spec.statistic) == tables.ADDS_UP_AS[new.statistic]
        and e.spec.value == new.value
        and same_people(e.spec)
    ]


def unchecked(releases: Sequence[Release], rules: R.RuleSet) -> str:
    """Why the new table's cells cannot be protected together with ``releases`` (``""`` if
    they can): with rounding on, released cells are not exact sums, so :func:`hide` does not
    build its program. The output then goes to review with this reason: it never passes
    silently (issue #21)."""
    if releases and rules.rounding_base > 1:
        labels = ", ".join(sorted({r.label for r in releases}))
        return (
            f"it adds up with the earlier release {labels}; with rounding on, the TRE does not "
            "work out what the two reveal together: a checker must"
        )
    return ""


def hide(
    con: Connection,
    relation: str,
    where: str,
    unit: str,
    new: OutputSpec,
    checked: Mapping[Key, float | None],
    needed: Mapping[Key, float],
    releases: Sequence[Release],
    rules: R.RuleSet,
    max_cells: int = 5000,
) -> dict[Key, str]:
    """The cells of the new table to hide too (with the release that makes them needed), given
    its cells as checked alone (``checked``: value, None when hidden; for a mean table, the
    sum behind each mean) and how wide each of its suppressed cells' range must stay
    (``needed``). Beyond ``max_cells`` finest cells the joint program is not built, and the
    whole new table is hidden: it fails closed, never open."""
    if not releases or rules.rounding_base > 1:  # rounded releases are not exact sums
        return {}
    variables = list(dict.fromkeys([*new.rows, *new.cols]))
    for release in releases:
        variables += [v for v in (*release.spec.rows, *release.spec.cols) if v not in variables]
    finest = tables.compute(
        con,
        relation,
        variables,
        (),
        statistic=tables.ADDS_UP_AS[new.statistic],
        value=new.value,
        unit=unit,
        where=where,
    ).interior()
    label = ", ".join(sorted({r.label for r in releases}))
    if not finest:
        return {}
    if len(finest) > max_cells:
        return {key: label for key, value in checked.items() if value}
    system = _System([c.row for c in finest], not any(c.stats.negatives for c in finest))
    top = {c.row: (max((abs(t) for t in c.stats.top), default=0.0)) for c in finest}
    truth = {c.row: c.value or 0.0 for c in finest}

    def flat(labels: Sequence[str], names: Sequence[str]) -> Flat:
        by_name = dict(zip(names, labels, strict=True))
        return tuple(by_name.get(v, tables.ALL) for v in variables)

    new_names = [*new.rows, *new.cols]
    fixed: list[tuple[Flat, float]] = []
    targets: dict[Flat, float] = {}
    for release in releases:
        names = [*release.spec.rows, *release.spec.cols]
        for cell in release.cells:
            at = flat([*cell["row"], *cell["col"]], names)
            if cell.get("value") is not None and release.spec.statistic == "mean":
                # With the number of values behind it, a published mean is its sum.
                fixed.append((at, sum(truth[c] for c in system.covered(at))))
            elif cell.get("value") is not None:
                fixed.append((at, float(cell["value"])))
            else:
                largest = max((top[c] for c in system.covered(at)), default=0.0)
                need = rules.protection_of(new.statistic, largest)
                targets[at] = max(targets.get(at, 0.0), need)
    hideable = {
        flat([*key[0], *key[1]], new_names): (key, value)
        for key, value in checked.items()
        if value is not None
    }
    for key, need in needed.items():
        targets[flat([*key[0], *key[1]], new_names)] = need
    hidden: set[Flat] = set()

    def published() -> list[tuple[Flat, float]]:
        return fixed + [(at, value) for at, (_, value) in hideable.items() if at not in hidden]

    for _ in range(len(hideable) + 1):
        known = published()
        weak = [
            at
            for at, need in targets.items()
            if not suppression.wide_enough(system.width(known, at), need)
        ]
        if not weak:
            break
        target = weak[0]
        support = set(system.covered(target))
        candidates = sorted(
            (
                at
                for at, (_, value) in hideable.items()
                if at not in hidden and value != 0 and support & set(system.covered(at))
            ),
            key=lambda at: (abs(hideable[at][1]), at),
        )[:TRIES]
        best, best_width = None, system.width(known, target)
        for candidate in candidates:
            trial = [(at, v) for at, v in known if at != candidate]
            width = system.width(trial, target)
            if suppression.wide_enough(width, targets[target]):
                best = candidate
                break
            if width > best_width + 1e-9:
                best, best_width = candidate, width
        if best is None and candidates:
            # No one cell widens it (several publish it, e.g. a row and a column total): hide
            # the smallest and look again.
            best = candidates[0]
        if best is None:  # nothing left to hide it behind: hide the whole new table
            hidden = {at for at, (_, value) in hideable.items() if value != 0}
            break
        hidden.add(best)
    return {hideable[at][0]: label for at in hidden}


class _System:
    """The attacker's unknowns (the finest cells) and the cells each aggregate covers."""

    def __init__(self, finest: Sequence[Flat], nonnegative: bool):
        self.finest = list(finest)
        self.bounds = [(0.0 if nonnegative else None, None)] * len(self.finest)
        self._rows: dict[Flat, np.ndarray] = {}

    def covered(self, aggregate: Flat) -> list[Flat]:
        return [c for c, inside in zip(self.finest, self._row(aggregate), strict=True) if inside]

    def _row(self, aggregate: Flat) -> np.ndarray:
        if aggregate not in self._rows:
            self._rows[aggregate] = np.array(
                [
                    all(a in (tables.ALL, x) for a, x in zip(aggregate, c, strict=True))
                    for c in self.finest
                ],
                dtype=float,
            )
        return self._rows[aggregate]

    def width(self, known: Sequence[tuple[Flat, float]], target: Flat) -> float:
        """max - min of the target's sum over every table consistent with ``known``."""
        a_eq = np.array([self._row(at) for at, _ in known]) if known else None
        b_eq = np.array([v for _, v in known]) if known else None
        objective = self._row(target)
        low = linprog(objective, A_eq=a_eq, b_eq=b_eq, bounds=self.bounds, method="highs")
        high = linprog(-objective, A_eq=a_eq, b_eq=b_eq, bounds=self.bounds, method="highs")
        if high.status == 3:
            return np.inf
        if low.status != 0 or high.status != 0:
            return 0.0  # inconsistent (should not happen): treat as disclosed
        return -high.fun - low.fun
