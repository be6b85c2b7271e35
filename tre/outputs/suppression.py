"""Suppression that holds: primary, then secondary, proven by the attacker's linear program.

After the cells failing a rule are suppressed (primary suppression), an attacker who knows the
published cells, that every margin is the sum of the cells it covers, and that values are not
negative, may still narrow down a suppressed cell. :func:`audit` solves that attacker's linear
program (scipy ``linprog``, HiGHS) for the smallest and largest value each suppressed cell can
take. :func:`protect` adds complementary (secondary) suppressions, smallest cells first, until
every primary cell's feasible range is at least the protection level. Empty cells are never
used as complements: an empty cell may be a structural zero (a combination that cannot occur),
which an attacker knows to be zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.optimize import linprog

from tre.outputs.tables import ALL, Cell, Key


@dataclasses.dataclass(frozen=True)
class Structure:
    """The cells of a table and the additivity constraints between them.

    Each constraint is a total and its parts: for every margin cell and every variable it is
    a margin of (``All``), the cells that differ from it only in that variable. A grand total
    is thus both the sum of the row totals and the sum of the column totals, and each row
    total the sum of its row: every line of the table is explicit.
    """

    cells: dict[Key, float]
    constraints: list[tuple[Key, list[Key]]]
    nonnegative: bool

    @classmethod
    def of(cls, cells: Iterable[Cell], nonnegative: bool = True) -> Structure:
        values = {c.key: c.value or 0.0 for c in cells}
        depth = len(next(iter(values))[0]) if values else 0

        def labels(key: Key) -> tuple[str, ...]:
            return key[0] + key[1]

        def key_of(flat: tuple[str, ...]) -> Key:
            return flat[:depth], flat[depth:]

        by_labels = {labels(k): k for k in values}
        interior = [flat for flat in by_labels if ALL not in flat]
        constraints: dict[tuple[Key, frozenset[Key]], list[Key]] = {}

        def add(total: Key, parts: list[Key]) -> None:
            if parts:
                constraints.setdefault((total, frozenset(parts)), parts)

        # The cells along each variable d (not totals in d), by their labels but d's.
        lines: dict[tuple[int, tuple[str, ...]], list[Key]] = {}
        for flat, key in by_labels.items():
            for d, label in enumerate(flat):
                if label != ALL:
                    lines.setdefault((d, flat[:d] + flat[d + 1 :]), []).append(key)

        for key in values:
            flat = labels(key)
            if ALL not in flat:
                continue
            # The lines through this total, where the table publishes them ...
            for d, label in enumerate(flat):
                if label == ALL:
                    add(key, lines.get((d, flat[:d] + flat[d + 1 :]), []))
            # ... and always the sum of the cells it covers.
            covered = [
                c for c in interior if all(f in (ALL, x) for f, x in zip(flat, c, strict=True))
            ]
            add(key, [by_labels[c] for c in covered])
        return cls(
            values, [(total, parts) for (total, _), parts in constraints.items()], nonnegative
        )

    @property
    def margins(self) -> list[tuple[Key, list[Key]]]:
        return self.constraints

    def constraints_of(self, key: Key) -> list[list[Key]]:
        """The additivity constraints (as lists of cells, total first) a cell takes part in."""
        return [
            [total, *parts] for total, parts in self.constraints if key == total or key in parts
        ]


def audit(
    structure: Structure, suppressed: set[Key], targets: Iterable[Key] | None = None
) -> dict[Key, tuple[float, float]]:
    """The range [min, max] each target (default: each suppressed cell) can take, given every
    published cell and the additivity of the margins."""
    keys = list(structure.cells)
    index = {k: i for i, k in enumerate(keys)}
    a_eq = _equations(structure, keys) if structure.constraints else None
    b_eq = np.zeros(len(a_eq)) if a_eq is not None else None
    lower = 0.0 if structure.nonnegative else None
    bounds = [
        (lower, None) if k in suppressed else (structure.cells[k], structure.cells[k]) for k in keys
    ]
    ranges = {}
    for target in targets if targets is not None else suppressed:
        if target not in suppressed:
            ranges[target] = (structure.cells[target], structure.cells[target])
            continue
        objective = np.zeros(len(keys))
        objective[index[target]] = 1.0
        low = linprog(objective, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        high = linprog(-objective, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        low_value = low.fun if low.status == 0 else -np.inf
        high_value = -high.fun if high.status == 0 else np.inf
        ranges[target] = (low_value, high_value)
    return ranges


def _equations(structure: Structure, keys: list[Key]) -> np.ndarray:
    index = {k: i for i, k in enumerate(keys)}
    rows = []
    for total, parts in structure.constraints:
        row = np.zeros(len(keys))
        row[index[total]] = 1.0
        for k in parts:
            row[index[k]] -= 1.0
        rows.append(row)
    return np.array(rows)


def width(structure: Structure, suppressed: set[Key], target: Key) -> float:
    """max - min of ``target`` over the attacker's feasible region, in one linear program:
    two copies of the table, maximising the target's value in one minus the other."""
    keys = list(structure.cells)
    n = len(keys)
    equations = _equations(structure, keys)
    a_eq = np.block([[equations, np.zeros_like(equations)], [np.zeros_like(equations), equations]])
    lower = 0.0 if structure.nonnegative else None
    bounds = [
        (lower, None) if k in suppressed else (structure.cells[k], structure.cells[k]) for k in keys
    ] * 2
    objective = np.zeros(2 * n)
    t = keys.index(target)
    objective[t], objective[n + t] = -1.0, 1.0  # minimise (copy 2 - copy 1) = -(width)
    result = linprog(objective, A_eq=a_eq, b_eq=np.zeros(len(a_eq)), bounds=bounds, method="highs")
    if result.status == 3:  # unbounded: nothing limits the cell
        return np.inf
    return -result.fun if result.status == 0 else 0.0


def wide_enough(width: float, protection: float) -> bool:
    """Whether a feasible range of ``width`` gives ``protection`` (up to the solver's rounding,
    relative for large values)."""
    return width >= protection * (1 - 1e-9) - 1e-9


def protect(
    structure: Structure, primary: set[Key], protection: float | Mapping[Key, float]
) -> set[Key]:
    """Primary plus the secondary suppressions that leave every primary cell's range at least
    ``protection`` wide (one width for all, or a width per primary cell). Returns the secondary
    cells.

    First, cheaply, no additivity constraint may hold a single suppressed cell (it would be its
    margin minus the others): the smallest non-empty other cell of that constraint is hidden
    too. Then the linear program is solved; a primary cell still too narrow gets the
    complement that widens it most (trying the smallest cells first), until all hold.
    """
    suppressed = set(primary)
    if not primary or not structure.constraints:
        return set()
    needed = protection if isinstance(protection, Mapping) else dict.fromkeys(primary, protection)
    _no_lonely_suppressions(structure, suppressed)
    for _ in range(len(structure.cells)):
        weak = sorted(
            k for k in primary if not wide_enough(width(structure, suppressed, k), needed[k])
        )
        if not weak:
            return suppressed - primary
        chosen = _best_complement(structure, suppressed, weak[0], needed[weak[0]])
        if chosen is None:  # nothing left to hide it behind: hide the whole table
            return _everything(structure) - primary
        suppressed |= chosen
    return _everything(structure) - primary


def _everything(structure: Structure) -> set[Key]:
    """Every non-empty cell (an empty one hides nothing and may be a structural zero)."""
    return {k for k, v in structure.cells.items() if v != 0}


def _usable(structure: Structure, suppressed: set[Key], key: Key) -> bool:
    # Never an empty cell: it may be a structural zero, which an attacker knows to be zero.
    return key not in suppressed and structure.cells[key] != 0


def _no_lonely_suppressions(structure: Structure, suppressed: set[Key]) -> None:
    """Until no constraint holds exactly one suppressed cell, hide a partner for it: one whose
    other constraints already hold suppressions if possible (so it makes no new lonely
    constraint), else the smallest."""
    members = [[total, *parts] for total, parts in structure.constraints]
    memberships: dict[Key, list[int]] = {}
    for i, cells in enumerate(members):
        for k in cells:
            memberships.setdefault(k, []).append(i)

    def new_lonely(candidate: Key) -> int:
        return sum(
            not any(k in suppressed for k in members[m]) for m in memberships.get(candidate, [])
        )

    changed = True
    while changed:
        changed = False
        for i, (total, parts) in enumerate(structure.constraints):
            if sum(k in suppressed for k in members[i]) != 1:
                continue
            candidates = [k for k in parts if _usable(structure, suppressed, k)]
            if not candidates and _usable(structure, suppressed, total):
                candidates = [total]
            if candidates:
                suppressed.add(
                    min(candidates, key=lambda k: (new_lonely(k), abs(structure.cells[k]), k))
                )
                changed = True


def _best_complement(
    structure: Structure, suppressed: set[Key], weak: Key, protection: float, tries: int = 12
) -> set[Key] | None:
    """The cells to hide next to protect ``weak``: a candidate from the weak cell's lines,
    together with the partners it needs so that no constraint holds a lonely suppression. The
    first candidate that protects ``weak`` wins; else the one that widens it most."""
    # Candidates: the cells of the weak cell's own lines first (its row, its column: the
    # smallest constraints holding it), smallest values first; the grand total's last.
    candidates: list[Key] = []
    for constraint in sorted(structure.constraints_of(weak), key=len):
        interior = sorted(
            (k for k in constraint[1:] if _usable(structure, suppressed, k)),
            key=lambda k: (abs(structure.cells[k]), k),
        )
        for k in [*interior, constraint[0]]:
            if _usable(structure, suppressed, k) and k not in candidates:
                candidates.append(k)
    best, best_width = None, -1.0
    for candidate in candidates[:tries]:
        trial = suppressed | {candidate}
        _no_lonely_suppressions(structure, trial)
        trial_width = width(structure, trial, weak)
        if wide_enough(trial_width, protection):
            return trial - suppressed
        if trial_width > best_width + 1e-9:
            best, best_width = trial - suppressed, trial_width
    return best
