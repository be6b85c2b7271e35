"""A project specification: what a researcher asks for, as YAML, checked field by field.

```yaml
id: asthma-ks4                 # lower-case letters, digits and hyphens
title: ...
lay_summary: ...               # for the public register of projects
purpose: ...
legal_basis: ...
lead: alice                    # Keycloak usernames
members: [alice, bob]
start: 2026-01-01
end: 2027-12-31
privacy_budget: 2.0            # epsilon, for differentially private queries
datasets:                      # datasets and the released columns wanted from each
  pupils: [sex, ethnicity, fsm_eligible, academic_year]
cohort:                        # who is in: persons with a row matching every condition
  - dataset: pupils
    where:
      - {column: nc_year, op: eq, value: 11}
output_rules:                  # optional, only stricter than the defaults
  threshold: 20
compute:                       # optional: each of a researcher's Dask clusters at most has
  workers: 4                   # (unset: the TRE's defaults, TRE_DASK_*)
  worker_cores: 1
  worker_memory_gb: 4
```

A cohort is never SQL: each condition names a released column, an operator from
:data:`OPERATORS` and a value of the column's type, and is turned into SQL by the TRE.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tre import catalog, texts
from tre.catalog import Transform, Type
from tre.conditions import OPERATORS, Condition
from tre.exceptions import InvalidInput
from tre.outputs.rules import STRICTER_WHEN_LARGER, RuleSet
from tre.privileged import accounts

#: Project ids and usernames: one grammar, the OS accounts' (tre.privileged.accounts), since
#: both become account names.
ID_PATTERN = accounts.PROJECT_ID
#: Ids the portal's pages take for themselves (/projects/apply is the application form).
RESERVED_IDS = frozenset({"apply"})
USERNAME = accounts.USERNAME
MAX_EPSILON = 10.0
MAX_YEARS = 5
#: The most a project may ask for in ``compute`` (its Dask clusters' size).
MAX_COMPUTE: dict[str, float] = {"workers": 64, "worker_cores": 32, "worker_memory_gb": 256}


#: Output rules a project may tighten, their defaults, and which way is stricter.
OUTPUT_RULES: dict[str, tuple[float, str]] = {
    name: (getattr(RuleSet(), name), "higher" if larger else "lower")
    for name, larger in STRICTER_WHEN_LARGER.items()
}


@dataclasses.dataclass(frozen=True)
class CohortClause:
    dataset: str
    where: tuple[Condition, ...]

    def describe(self) -> str:
        return f"{self.dataset}: " + " and ".join(c.describe() for c in self.where)


@dataclasses.dataclass(frozen=True)
class Compute:
    """The largest Dask cluster each of a project's researchers may start: workers, and cores
    and memory (GiB) per worker. ``None``: the TRE's default (its ``dask_*`` settings)."""

    workers: int | None = None
    worker_cores: int | None = None
    worker_memory_gb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def narrowed(self, other: Compute) -> Compute:
        """The smaller of each of both's limits (an unset limit yields to a set one)."""

        def least(a, b):
            return b if a is None else a if b is None else min(a, b)

        names = [f.name for f in dataclasses.fields(self)]
        return Compute(**{n: least(getattr(self, n), getattr(other, n)) for n in names})

    def granted(self, settings: Any, asked: Compute | None = None) -> Compute:
        """Every limit set: those unset from the TRE's settings. With ``asked`` (the
        application's), a limit the application left unset is at most the TRE's default,
        whatever a custodian wrote (a condition only narrows)."""
        defaults = Compute(
            settings.dask_max_workers,
            settings.dask_worker_cores,
            float(settings.dask_worker_memory_gb),
        )
        out = {}
        for name in ("workers", "worker_cores", "worker_memory_gb"):
            default, value = getattr(defaults, name), getattr(self, name)
            unasked = asked is not None and getattr(asked, name) is None
            out[name] = min(value, default) if value and unasked else value or default
        return Compute(**out)

    def describe(self) -> str:
        """In words: "3 workers, 1 core and 1.5 GiB each" (only what is set)."""

        def count(n: float, word: str) -> str:
            return f"{n:g} {word}{'' if n == 1 else 's'}"

        each = [count(self.worker_cores, "core")] if self.worker_cores else []
        each += [f"{self.worker_memory_gb:g} GiB"] if self.worker_memory_gb else []
        parts = [count(self.workers, "worker")] if self.workers else []
        return ", ".join(parts + ([" and ".join(each) + " each"] if each else []))


@dataclasses.dataclass(frozen=True)
class ProjectSpec:
    id: str
    title: str
    lay_summary: str
    purpose: str
    legal_basis: str
    lead: str
    members: tuple[str, ...]
    start: dt.date
    end: dt.date
    privacy_budget: float
    datasets: Mapping[str, tuple[str, ...]]
    cohort: tuple[CohortClause, ...] = ()
    output_rules: Mapping[str, float] = dataclasses.field(default_factory=dict)
    compute: Compute = dataclasses.field(default_factory=Compute)

    @property
    def custodians(self) -> tuple[str, ...]:
        """Every custodian whose datasets are requested, each of whom must approve."""
        return tuple(sorted({catalog.dataset(d).custodian for d in self.datasets}))

    def datasets_of(self, custodian: str) -> tuple[str, ...]:
        return tuple(d for d in self.datasets if catalog.dataset(d).custodian == custodian)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "lay_summary": self.lay_summary,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "lead": self.lead,
            "members": list(self.members),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "privacy_budget": self.privacy_budget,
            "datasets": {d: list(cols) for d, cols in self.datasets.items()},
            "cohort": [
                {
                    "dataset": c.dataset,
                    "where": [{"column": w.column, "op": w.op, "value": w.value} for w in c.where],
                }
                for c in self.cohort
            ],
            "output_rules": dict(self.output_rules),
            "compute": self.compute.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "the specification") -> ProjectSpec:
        return _Reader(data, source).spec()


def load(path: Path) -> ProjectSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"There is no project specification {path}.") from None
    except yaml.YAMLError as e:
        raise InvalidInput(f"{path} is not valid YAML: {e}") from None
    return ProjectSpec.from_dict(data, str(path))


class _Reader:
    """Reads a specification, collecting every problem before reporting them together."""

    def __init__(self, data: Any, source: str):
        self.data = data if isinstance(data, Mapping) else {}
        self.source = source
        self.errors: list[str] = []
        if not isinstance(data, Mapping):
            self.errors.append("the file must hold a mapping of fields (id, title, …)")

    def error(self, field: str, message: str) -> None:
        self.errors.append(f"{field}: {message}")

    def text(self, field: str, min_length: int = 1, max_length: int = texts.TEXT) -> str:
        value = self.data.get(field)
        if not isinstance(value, str) or len(value.strip()) < min_length:
            self.error(field, f"a text of at least {min_length} characters is required")
            return ""
        if len(value.strip()) > max_length:
            self.error(field, f"a text of at most {max_length:,} characters is required")
            return ""
        return " ".join(value.split())

    def date(self, field: str) -> dt.date:
        value = self.data.get(field)
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            self.error(field, "a date YYYY-MM-DD is required")
            return dt.date.min

    def username(self, field: str, value: Any) -> str | None:
        if isinstance(value, str) and USERNAME.fullmatch(value):
            return value
        self.error(field, f"{value!r} is not a username (lower-case letters, digits, . _ -)")
        return None

    def spec(self) -> ProjectSpec:
        d = self.data
        project_id = str(d.get("id", ""))
        if not ID_PATTERN.fullmatch(project_id):
            self.error(
                "id",
                f"{project_id!r} is not a project id: 3 to 30 lower-case letters, digits and "
                "hyphens, starting with a letter",
            )
        elif project_id in RESERVED_IDS:
            self.error("id", f"{project_id!r} names a page of the portal: choose another id")
        lead = self.username("lead", d.get("lead"))
        raw_members = d.get("members", [])
        if not isinstance(raw_members, list):
            self.error("members", "a list of usernames is required")
            raw_members = []
        members = [m for m in (self.username("members", m) for m in raw_members) if m]
        if lead and lead not in members:
            members.insert(0, lead)
        start, end = self.date("start"), self.date("end")
        if start != dt.date.min and end != dt.date.min:
            if end <= start:
                self.error("end", f"must come after start ({start})")
            elif (end - start).days > 366 * MAX_YEARS:
                self.error("end", f"a project lasts at most {MAX_YEARS} years; ask again then")
        budget = d.get("privacy_budget")
        if (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not (0 < budget <= MAX_EPSILON)
        ):
            self.error("privacy_budget", f"a number ε with 0 < ε ≤ {MAX_EPSILON} is required")
            budget = 0.0
        spec = ProjectSpec(
            id=project_id,
            title=self.text("title", 5, texts.TITLE),
            lay_summary=self.text("lay_summary", 40),
            purpose=self.text("purpose", 20),
            legal_basis=self.text("legal_basis", 5),
            lead=lead or "",
            members=tuple(members),
            start=start,
            end=end,
            privacy_budget=float(budget),
            datasets=self.datasets(),
            output_rules=self.output_rules(),
            compute=self.compute(self.data.get("compute"), "compute"),
        )
        spec = dataclasses.replace(spec, cohort=self.cohort(spec.datasets))
        if self.errors:
            raise InvalidInput(
                f"{self.source} is not a valid project specification:\n  - "
                + "\n  - ".join(self.errors)
            )
        return spec

    def datasets(self) -> dict[str, tuple[str, ...]]:
        raw = self.data.get("datasets")
        if not isinstance(raw, Mapping) or not raw:
            self.error("datasets", "a mapping of dataset names to lists of columns is required")
            return {}
        out = {}
        for name, columns in raw.items():
            if name not in catalog.DATASETS:
                self.error(
                    f"datasets.{name}", f"no such dataset; known: {', '.join(catalog.DATASETS)}"
                )
                continue
            released = [c.released_name for c in catalog.dataset(name).released_columns]
            if not isinstance(columns, list) or not columns:
                self.error(f"datasets.{name}", "a list of columns is required")
                continue
            unknown = [c for c in columns if c not in released]
            if unknown:
                self.error(
                    f"datasets.{name}",
                    f"{', '.join(map(str, unknown))} not released columns of {name}; "
                    f"choose from {', '.join(released)}",
                )
            out[name] = tuple(dict.fromkeys(c for c in columns if c in released))
        return out

    def cohort(self, datasets: Mapping[str, tuple[str, ...]]) -> tuple[CohortClause, ...]:
        raw = self.data.get("cohort", [])
        if not isinstance(raw, list):
            self.error("cohort", "a list of {dataset, where} clauses is required")
            return ()
        clauses = []
        for i, clause in enumerate(raw):
            field = f"cohort[{i}]"
            if not isinstance(clause, Mapping) or clause.get("dataset") not in datasets:
                self.error(field, "each clause names one of the requested datasets")
                continue
            dataset = catalog.dataset(clause["dataset"])
            where = clause.get("where")
            if not isinstance(where, list) or not where:
                self.error(f"{field}.where", "a list of conditions is required")
                continue
            conditions = []
            for j, raw_condition in enumerate(where):
                condition = self.condition(f"{field}.where[{j}]", dataset, raw_condition)
                if condition is not None:
                    conditions.append(condition)
            clauses.append(CohortClause(dataset.name, tuple(conditions)))
        return tuple(clauses)

    def condition(self, field: str, dataset: catalog.Dataset, raw: Any) -> Condition | None:
        if not isinstance(raw, Mapping):
            self.error(field, "a condition is {column, op, value}")
            return None
        columns = {c.released_name: c for c in dataset.released_columns}
        column = columns.get(raw.get("column"))
        op = raw.get("op")
        if column is None:
            self.error(
                field, f"column {raw.get('column')!r} is not a released column of {dataset.name}"
            )
            return None
        if op not in OPERATORS:
            self.error(field, f"op {op!r} is not one of {', '.join(OPERATORS)}")
            return None
        value = raw.get("value")
        if op in ("is_null", "not_null"):
            return Condition(column.released_name, op)
        values = value if op in ("in", "not_in", "between") else [value]
        if not isinstance(values, list) or not values or (op == "between" and len(values) != 2):
            self.error(field, f"op {op} needs " + ("[low, high]" if op == "between" else "a list"))
            return None
        for v in values:
            problem = _type_problem(column, v)
            if problem:
                self.error(field, f"value {v!r} for {column.released_name}: {problem}")
                return None
        return Condition(column.released_name, op, value)

    def compute(self, raw: Any, field: str) -> Compute:
        """A ``compute`` mapping (workers, worker_cores, worker_memory_gb), each optional."""
        if raw is None:
            return Compute()
        if not isinstance(raw, Mapping):
            self.error(field, f"a mapping of {', '.join(MAX_COMPUTE)} is required")
            return Compute()
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in MAX_COMPUTE:
                self.error(f"{field}.{name}", f"unknown; known: {', '.join(MAX_COMPUTE)}")
                continue
            if value is None:
                continue
            whole = name != "worker_memory_gb"
            least = 1 if whole else 0.25
            if (
                isinstance(value, bool)
                or not isinstance(value, int if whole else int | float)
                or not (least <= value <= MAX_COMPUTE[name])
            ):
                kind = "a whole number" if whole else "a number"
                self.error(
                    f"{field}.{name}", f"{kind} from {least:g} to {MAX_COMPUTE[name]:g} is required"
                )
                continue
            values[name] = value if whole else float(value)
        return Compute(**values)

    def output_rules(self) -> dict[str, float]:
        raw = self.data.get("output_rules") or {}
        if not isinstance(raw, Mapping):
            self.error("output_rules", "a mapping of rule names to values is required")
            return {}
        rules = {}
        for name, value in raw.items():
            if name not in OUTPUT_RULES:
                self.error(
                    f"output_rules.{name}", f"unknown rule; known: {', '.join(OUTPUT_RULES)}"
                )
                continue
            default, stricter = OUTPUT_RULES[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                self.error(f"output_rules.{name}", "a finite number is required")
                continue
            if (stricter == "higher" and value < default) or (
                stricter == "lower" and value > default
            ):
                self.error(
                    f"output_rules.{name}",
                    f"a project may only make rules stricter: {value} is less strict than the "
                    f"default {default}",
                )
                continue
            rules[name] = value
        return rules


def _type_problem(column: catalog.Column, value: Any) -> str:
    kind = column.released_type
    if kind is Type.INTEGER and (isinstance(value, bool) or not isinstance(value, int)):
        return "an integer is required"
    if kind is Type.DECIMAL and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "a number is required"
    if kind is Type.BOOLEAN and not isinstance(value, bool):
        return "true or false is required"
    if kind is Type.DATE:
        try:
            dt.date.fromisoformat(str(value))
        except ValueError:
            return "a date YYYY-MM-DD is required"
    if kind is Type.STRING:
        if not isinstance(value, str):
            return "a text value is required"
        if column.transform is Transform.YEAR_MONTH and not re.fullmatch(r"\d{4}-\d{2}", value):
            return "a year and month YYYY-MM is required"
        codes = [k for k in column.constraints if hasattr(k, "codes")]
        if codes and column.transform is Transform.KEEP and value not in codes[0].codes:
            return f"one of {', '.join(codes[0].codes)} is required"
    return ""
