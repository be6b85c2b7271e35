"""Checked outputs: every cell with its status, reasons, suppression and released value.

:func:`check_table` runs the rules on every cell of a computed table, suppresses the failing
cells, protects them with secondary suppression when the table has margins (a mean table
through the sums behind its means), applies rounding if the rule set asks for it, and says what
may be released. The result's JSON is the same for ``tre outputs check``, ``check-table`` and
the portal: a ``cells`` list, each with its row and column labels (lists, for multi-level
labels; margins are ``All``), the released ``value`` (null when suppressed), ``status``,
``reasons`` and ``suppression`` (``primary``, ``secondary`` or null), and a ``summary``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tre.outputs import rules as R
from tre.outputs import suppression
from tre.outputs.tables import ADDS_UP_AS, Table


@dataclasses.dataclass(frozen=True)
class CheckedCell:
    row: tuple[str, ...]
    col: tuple[str, ...]
    value: float | None
    status: str
    reasons: tuple[str, ...]
    suppression: str | None
    rules: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": list(self.row),
            "col": list(self.col),
            "value": self.value,
            "status": self.status,
            "reasons": list(self.reasons),
            "suppression": self.suppression,
        }


@dataclasses.dataclass(frozen=True)
class Result:
    kind: str
    description: dict[str, Any]
    cells: tuple[CheckedCell, ...]
    rule_set: R.RuleSet
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The sketches of the populations of its cells (:mod:`tre.outputs.populations`): stored
    #: with the output, never part of what anyone is shown (:meth:`as_dict`).
    populations: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.cells} | {self.extra.get("status", R.PASS)}
        if self.kind == "file":
            return R.REVIEW
        return R.FAIL if R.FAIL in statuses else R.REVIEW if R.REVIEW in statuses else R.PASS

    def summary(self) -> dict[str, Any]:
        count = {s: sum(c.status == s for c in self.cells) for s in (R.PASS, R.REVIEW, R.FAIL)}
        return {
            "status": self.status,
            "cells": len(self.cells),
            **count,
            "suppressed_primary": sum(c.suppression == "primary" for c in self.cells),
            "suppressed_secondary": sum(c.suppression == "secondary" for c in self.cells),
            "releasable": self.status != R.FAIL or any(c.suppression for c in self.cells),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self.description,
            "rule_set": dataclasses.asdict(self.rule_set),
            "summary": self.summary(),
            "cells": [c.as_dict() for c in self.cells],
            **self.extra,
        }


def protection(table: Table, primary: set, rule_set: R.RuleSet) -> dict:
    """How wide each suppressed cell's feasible range must stay: ``threshold`` people for a
    count; for a sum, also p % of the cell's largest contribution, so that nobody can narrow
    a dominant contributor's value down to within p % (the p % rule's own margin)."""
    return {
        cell.key: rule_set.protection_of(
            table.statistic, max((abs(v) for v in cell.stats.top), default=0.0)
        )
        for cell in table.cells
        if cell.key in primary
    }


def check_table(
    table: Table,
    rule_set: R.RuleSet,
    more: dict | None = None,
    extra: dict[str, Any] | None = None,
    hide_also: dict | None = None,
) -> Result:
    """Check every cell; ``more`` adds findings by cell key (e.g. from differencing);
    ``hide_also`` names more cells to hide, with the earlier releases that require it (from
    :func:`tre.outputs.linked.hide`)."""
    findings = {
        cell.key: R.cell_findings(cell.stats, table.statistic, rule_set, table.quantile)
        + list((more or {}).get(cell.key, []))
        for cell in table.cells
    }
    primary = {key for key, f in findings.items() if R.status(f) == R.FAIL}
    secondary: set = set()
    if table.statistic in ADDS_UP_AS and table.margins and primary:
        nonnegative = not any(c.stats.negatives for c in table.cells)
        structure = suppression.Structure.of(table.additive_cells(), nonnegative=nonnegative)
        secondary = suppression.protect(structure, primary, protection(table, primary, rule_set))
    linked = {k: v for k, v in (hide_also or {}).items() if k not in primary}
    secondary |= set(linked)
    cells = []
    for cell in table.cells:
        found = findings[cell.key]
        if cell.key in primary:
            state, value = "primary", None
        elif cell.key in secondary:
            state, value = "secondary", None
        else:
            state, value = None, cell.value
            if value is not None and table.statistic in ("count", "sum"):
                value = R.round_to(value, rule_set.rounding_base)
        reasons = [f.reason for f in found]
        if cell.key in linked:
            reasons.append(
                f"hidden too, so that no suppressed cell of this table or of the earlier "
                f"release {linked[cell.key]} can be worked out from the two"
            )
        elif state == "secondary":
            reasons.append(
                "hidden too, so that a suppressed cell cannot be worked out from the totals"
            )
        cell_status = R.status(found)
        if state == "secondary":
            cell_status = R.PASS if cell_status == R.PASS else cell_status
        cells.append(
            CheckedCell(
                cell.row,
                cell.col,
                value,
                cell_status,
                tuple(reasons),
                state,
                tuple(f.rule for f in found),
            )
        )
    description = {
        "rows": list(table.rows),
        "cols": list(table.cols),
        "statistic": table.statistic,
        "value": table.value,
        "margins": table.margins,
    }
    if table.quantile is not None:
        description["quantile"] = table.quantile
    if rule_set.rounding_base > 1 and table.statistic in ("count", "sum"):
        description["rounded_to"] = rule_set.rounding_base
    return Result("table", description, tuple(cells), rule_set, extra or {})
