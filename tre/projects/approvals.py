"""Custodians' conditions, and the project they add up to.

A custodian approving may only *narrow* what was asked of their own datasets: keep fewer
columns, add cohort conditions on their datasets, end sooner, allow a smaller privacy budget,
smaller Dask clusters.
The approved project is the application narrowed by every custodian's conditions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from tre import catalog
from tre.exceptions import InvalidInput
from tre.projects.spec import CohortClause, Compute, Condition, ProjectSpec, _Reader


@dataclasses.dataclass(frozen=True)
class Conditions:
    columns: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    cohort: tuple[CohortClause, ...] = ()
    end: dt.date | None = None
    privacy_budget: float | None = None
    compute: Compute = dataclasses.field(default_factory=Compute)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": {d: list(c) for d, c in self.columns.items()},
            "cohort": [
                {
                    "dataset": c.dataset,
                    "where": [{"column": w.column, "op": w.op, "value": w.value} for w in c.where],
                }
                for c in self.cohort
            ],
            "end": self.end.isoformat() if self.end else None,
            "privacy_budget": self.privacy_budget,
            "compute": self.compute.as_dict(),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conditions:
        cohort = []
        for clause in data.get("cohort", []):
            cohort.append(
                CohortClause(clause["dataset"], tuple(Condition(**w) for w in clause["where"]))
            )
        return cls(
            columns={d: tuple(c) for d, c in data.get("columns", {}).items()},
            cohort=tuple(cohort),
            end=dt.date.fromisoformat(data["end"]) if data.get("end") else None,
            privacy_budget=data.get("privacy_budget"),
            compute=Compute(**data.get("compute", {})),
            note=data.get("note", ""),
        )

    def describe(self) -> list[str]:
        out = [f"columns of {d}: {', '.join(c)}" for d, c in self.columns.items()]
        out += [f"cohort: {c.describe()}" for c in self.cohort]
        if self.end:
            out.append(f"end by {self.end}")
        if self.privacy_budget is not None:
            out.append(f"privacy budget ε = {self.privacy_budget}")
        if self.compute != Compute():
            out.append(f"Dask clusters of at most {self.compute.describe()}")
        if self.note:
            out.append(f"note: {self.note}")
        return out


def parse_cohort_condition(spec: ProjectSpec, text: str) -> CohortClause:
    """Parse ``dataset:column op value`` (value as YAML: 11, [2019, 2021], true, 'M')."""
    import yaml

    try:
        dataset, rest = text.split(":", 1)
        column, op, value = [*rest.strip().split(None, 2), ""][:3]
        parsed = yaml.safe_load(value) if value else None
    except (ValueError, yaml.YAMLError):
        raise InvalidInput(
            f"{text!r} is not a condition: write DATASET:COLUMN OP VALUE, e.g. "
            "'pupils:academic_year gte 2019'."
        ) from None
    reader = _Reader({}, "the condition")
    reader.errors.clear()
    condition = reader.condition(
        "condition", catalog.dataset(dataset), {"column": column, "op": op, "value": parsed}
    )
    if condition is None or reader.errors:
        raise InvalidInput("; ".join(reader.errors))
    if dataset not in spec.datasets:
        raise InvalidInput(f"The project requests no dataset {dataset}.")
    return CohortClause(dataset, (condition,))


def check_narrows(spec: ProjectSpec, custodian: str, conditions: Conditions) -> None:
    own = set(spec.datasets_of(custodian))
    for dataset, columns in conditions.columns.items():
        if dataset not in own:
            raise InvalidInput(
                f"{custodian} can only set the columns of its own datasets "
                f"({', '.join(sorted(own))}), not of {dataset}."
            )
        extra = set(columns) - set(spec.datasets[dataset])
        if extra:
            raise InvalidInput(
                f"Approval may only narrow the columns: {', '.join(sorted(extra))} of {dataset} "
                "were not requested."
            )
        if not columns:
            raise InvalidInput(f"Keep at least one column of {dataset}, or reject the project.")
    for clause in conditions.cohort:
        if clause.dataset not in own:
            raise InvalidInput(f"{custodian} can only add cohort conditions on its own datasets.")
    if conditions.end is not None and conditions.end > spec.end:
        raise InvalidInput(f"Approval may only bring the end forward from {spec.end}.")
    if conditions.end is not None and conditions.end <= dt.date.today():
        raise InvalidInput("The end date of an approval must be in the future.")
    if conditions.privacy_budget is not None and not (
        0 < conditions.privacy_budget <= spec.privacy_budget
    ):
        raise InvalidInput(
            f"Approval may only lower the privacy budget, from ε = {spec.privacy_budget}."
        )
    reader = _Reader({}, "the approval")
    reader.errors.clear()
    reader.compute(conditions.compute.as_dict(), "compute")
    if reader.errors:
        raise InvalidInput("; ".join(reader.errors))
    for name, value in conditions.compute.as_dict().items():
        asked = getattr(spec.compute, name)
        if asked is not None and value > asked:
            raise InvalidInput(
                f"Approval may only lower the Dask clusters' {name.replace('_', ' ')}, from "
                f"{asked:g}."
            )


def effective(spec: ProjectSpec, all_conditions: list[Conditions]) -> ProjectSpec:
    datasets = dict(spec.datasets)
    cohort = list(spec.cohort)
    end, budget, compute = spec.end, spec.privacy_budget, spec.compute
    for conditions in all_conditions:
        compute = compute.narrowed(conditions.compute)
        for dataset, columns in conditions.columns.items():
            datasets[dataset] = tuple(c for c in datasets[dataset] if c in columns)
        cohort += conditions.cohort
        if conditions.end is not None:
            end = min(end, conditions.end)
        if conditions.privacy_budget is not None:
            budget = min(budget, conditions.privacy_budget)
    return dataclasses.replace(
        spec,
        datasets=datasets,
        cohort=tuple(cohort),
        end=end,
        privacy_budget=budget,
        compute=compute,
    )
