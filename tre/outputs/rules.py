"""The statistical disclosure control rules: small, pure, named.

Each rule looks at one cell's statistics (:class:`CellStats`, computed from the data by
:mod:`tre.outputs.tables`) and answers with zero or more :class:`Finding`s: ``fail`` (the cell
must not be released as it is) or ``review`` (an output checker must look). Reasons are written
for the researcher. Parameters have named defaults; datasets and projects may tighten them and
:meth:`RuleSet.strictest` keeps the strictest of each.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

#: Defaults, after the SACRO/ACRO and ONS guidance.
THRESHOLD = 10  # minimum units (persons) per cell
DOMINANCE_N = 2  # N-K rule: the N largest contributors ...
DOMINANCE_K = 90  # ... may not hold more than K % of the cell total
P_PERCENT = 10  # p % rule
MIN_DOF = 10  # minimum residual degrees of freedom of a model
ROUNDING_BASE = 5
OPENSAFELY_REDACT_AT_OR_BELOW = 7

PASS, REVIEW, FAIL = "pass", "review", "fail"
MAGNITUDE = ("sum", "mean")
STATISTICS = ("median", "quantile", "min", "max", "std")


#: For each parameter a project or dataset may set, whether a larger value is stricter.
STRICTER_WHEN_LARGER = {
    "threshold": True,
    "dominance_n": True,
    "dominance_k": False,
    "p_percent": True,
    "min_dof": True,
    "rounding_base": True,
}


@dataclasses.dataclass(frozen=True)
class RuleSet:
    """Which rules apply and with which parameters. "default" is the TRE's; "opensafely"
    redacts counts of 7 or fewer and rounds the rest to the nearest 5."""

    name: str = "default"
    threshold: int = THRESHOLD
    dominance_n: int = DOMINANCE_N
    dominance_k: float = DOMINANCE_K
    p_percent: float = P_PERCENT
    min_dof: int = MIN_DOF
    rounding_base: int = 1  # 1 = no rounding
    check_missing: bool = False
    zeros_for_review: bool = True

    @classmethod
    def named(cls, name: str) -> RuleSet:
        if name == "default":
            return cls()
        if name == "opensafely":
            return cls(
                name="opensafely",
                threshold=OPENSAFELY_REDACT_AT_OR_BELOW + 1,
                rounding_base=ROUNDING_BASE,
            )
        raise ValueError(f"unknown rule set {name!r}: choose default or opensafely")

    def strictest(self, *overrides: Mapping[str, float] | None) -> RuleSet:
        """This rule set with each parameter tightened by any of ``overrides``."""
        values = dataclasses.asdict(self)
        for override in overrides:
            for key, value in (override or {}).items():
                if key not in STRICTER_WHEN_LARGER:
                    continue
                larger = STRICTER_WHEN_LARGER[key]
                values[key] = max(values[key], value) if larger else min(values[key], value)
        return dataclasses.replace(self, **{k: v for k, v in values.items() if k != "name"})

    @property
    def protection(self) -> float:
        """How wide the range of a suppressed cell must be, whatever is published around it."""
        return self.threshold

    def protection_of(self, statistic: str, largest: float) -> float:
        """:attr:`protection`, and for a sum also p % of the cell's ``largest`` contribution,
        so that nobody narrows a dominant contributor's value down to within p %."""
        if statistic in MAGNITUDE:
            return max(self.protection, abs(largest) * self.p_percent / 100)
        return self.protection


@dataclasses.dataclass(frozen=True)
class CellStats:
    """What the rules need to know about one cell, computed from the data."""

    units: int  # distinct units (persons) contributing
    total: float | None = None  # sum of the values (magnitude tables)
    top: tuple[float, ...] = ()  # the largest per-unit contributions, largest first
    negatives: bool = False  # some contribution is negative
    missing: int = 0  # records with a missing value
    values: int = 0  # records with a value (what a median or quantile is taken over)
    share: float | None = None  # for class disclosure: the cell's share of its row (0..1)
    #: the people with a value (what a statistic of a value describes); None: the units
    contributors: int | None = None


@dataclasses.dataclass(frozen=True)
class Finding:
    rule: str
    status: str  # fail | review
    reason: str


def threshold(cell: CellStats, rules: RuleSet, statistic: str = "count") -> list[Finding]:
    """A cell with fewer than ``threshold`` units, but at least one, fails: it could describe a
    handful of people. A statistic of a value describes the people with a value: a standard
    deviation of a cell of 60 with two incomes is the gap between those two. Empty cells are
    left to :func:`zeros`."""
    people = cell.units
    if statistic != "count" and cell.contributors:
        people = min(cell.units, cell.contributors)
    if 0 < people < rules.threshold:
        return [
            Finding(
                "threshold",
                FAIL,
                f"fewer than {rules.threshold} people contribute to this cell",
            )
        ]
    return []


def zeros(cell: CellStats, rules: RuleSet) -> list[Finding]:
    """An empty cell can reveal that nobody in a group has a characteristic (class
    disclosure): flagged for review."""
    if cell.units == 0 and rules.zeros_for_review:
        return [
            Finding(
                "zeros",
                REVIEW,
                "nobody is in this cell: check it does not reveal something about a whole group",
            )
        ]
    return []


def full_cells(cell: CellStats, rules: RuleSet) -> list[Finding]:
    """A cell holding everyone of its row (100 %) reveals the characteristic of the whole group
    (class disclosure): flagged for review."""
    if cell.share is not None and cell.units > 0 and cell.share >= 1.0 and rules.zeros_for_review:
        return [
            Finding(
                "full_cell",
                REVIEW,
                "everyone in this row is in this cell: check it does not reveal something "
                "about the whole group",
            )
        ]
    return []


def dominance(cell: CellStats, rules: RuleSet) -> list[Finding]:
    """N-K rule: the ``dominance_n`` largest contributors may hold at most ``dominance_k`` % of
    a magnitude cell. With negative contributions the rule cannot be trusted, so the cell goes
    to review instead."""
    if cell.total is None or not cell.top or cell.units == 0:
        return []
    if cell.negatives:
        return [
            Finding(
                "dominance",
                REVIEW,
                "some values are negative, so dominance cannot be checked automatically",
            )
        ]
    if cell.total <= 0:
        return []
    largest = sum(cell.top[: rules.dominance_n])
    if largest > cell.total * rules.dominance_k / 100 + 1e-9:
        return [
            Finding(
                "dominance",
                FAIL,
                f"the {rules.dominance_n} largest contributors make up more than "
                f"{rules.dominance_k:g} % of this cell's total",
            )
        ]
    return []


def p_percent(cell: CellStats, rules: RuleSet) -> list[Finding]:
    """p % rule: the second largest contributor could estimate the largest one's value from the
    total to within p %; the cell fails if the rest (total minus the two largest) is less than
    p % of the largest. A cell whose total is 0 has nothing to disclose."""
    if cell.total is None or len(cell.top) < 1 or cell.units == 0 or cell.negatives:
        return []
    if cell.total == 0 or cell.top[0] <= 0:
        return []
    second = cell.top[1] if len(cell.top) > 1 else 0.0
    rest = cell.total - cell.top[0] - second
    if rest < cell.top[0] * rules.p_percent / 100 - 1e-9:
        return [
            Finding(
                "p_percent",
                FAIL,
                f"the second largest contributor could work out the largest one's value to "
                f"within {rules.p_percent:g} %",
            )
        ]
    return []


def missing(cell: CellStats, rules: RuleSet) -> list[Finding]:
    """With the missing-value check on, a cell computed from records with missing values is
    flagged for review (the missing ones may form a small group)."""
    if rules.check_missing and cell.missing:
        return [Finding("missing", REVIEW, "some records of this cell have a missing value")]
    return []


def extremes(
    statistic: str, cell: CellStats, rules: RuleSet, quantile: float | None = None
) -> list[Finding]:
    """A minimum or maximum is one person's value: it is released only after review. So is a
    median or quantile whose position among the cell's values falls among its ``threshold``
    lowest or highest (``quantile: 1e-12`` is the minimum by another name): the values it is
    drawn from (``quantile_cont`` interpolates between the two around its position) are then
    among the few at either end."""
    if statistic in ("min", "max"):
        return [
            Finding(
                "extreme_value",
                REVIEW,
                f"a {'minimum' if statistic == 'min' else 'maximum'} is a single person's value",
            )
        ]
    if statistic in ("median", "quantile") and cell.values > cell.units:
        # Over records, several of one person's may be the values it is drawn from, whatever
        # its position (found by the review: one person's 40 episodes were the median).
        return [
            Finding(
                "extreme_value",
                REVIEW,
                "people have several records in this cell: the quantile may be one person's value",
            )
        ]
    if statistic in ("median", "quantile") and cell.values:
        q = 0.5 if statistic == "median" else float(quantile if quantile is not None else 0.5)
        position = q * (cell.values - 1)
        end = (
            "lowest"
            if math.floor(position) < rules.threshold
            else "highest"
            if math.ceil(position) > cell.values - 1 - rules.threshold
            else ""
        )
        if end:
            name = "median" if statistic == "median" else f"{q:g} quantile"
            return [
                Finding(
                    "extreme_value",
                    REVIEW,
                    f"the {name} falls among the {rules.threshold} {end} values of its cell: "
                    "it is close to a single person's value",
                )
            ]
    return []


def degrees_of_freedom(dof: float, rules: RuleSet) -> list[Finding]:
    """A model with fewer than ``min_dof`` residual degrees of freedom fails: its fit is close to
    the individual records."""
    if dof < rules.min_dof:
        return [
            Finding(
                "degrees_of_freedom",
                FAIL,
                f"the model has {dof:g} residual degrees of freedom, fewer than {rules.min_dof}",
            )
        ]
    return []


def cell_findings(
    cell: CellStats, statistic: str, rules: RuleSet, quantile: float | None = None
) -> list[Finding]:
    findings = threshold(cell, rules, statistic) + zeros(cell, rules) + full_cells(cell, rules)
    findings += missing(cell, rules)
    if statistic in MAGNITUDE:
        findings += dominance(cell, rules) + p_percent(cell, rules)
    findings += extremes(statistic, cell, rules, quantile) if cell.units else []
    return findings


def status(findings: Iterable[Finding]) -> str:
    statuses = {f.status for f in findings}
    return FAIL if FAIL in statuses else REVIEW if REVIEW in statuses else PASS


def round_to(value: float, base: int) -> float:
    """Round to the nearest multiple of ``base`` (halves up)."""
    if base <= 1 or value is None or (isinstance(value, float) and math.isnan(value)):
        return value
    return base * math.floor(value / base + 0.5)
