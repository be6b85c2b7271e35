"""Output specifications: what a researcher wants to take out, as data over the extracts.

```yaml
name: attainment by fsm                 # how the researcher calls it
kind: table                             # table | summary | model | dp
dataset: ks4                            # an extract of the project
join:                                   # optional: other extracts, joined on pseudo_id (+ on)
  - {dataset: pupils, on: [academic_year], columns: [fsm_eligible, sex]}
flags:                                  # optional: per-person yes/no from another extract
  - {name: asthma_admission, dataset: hes_apc,
     where: [{column: primary_diagnosis, op: in, value: [J450, J459, J46X]}]}
filters: [{column: academic_year, op: gte, value: 2019}]
rows: [fsm_eligible]
cols: [sex]
statistic: mean                         # count | sum | mean | median | quantile | min | max | std
value: attainment8
margins: true
```

A ``model`` has a ``formula`` (statsmodels/patsy) and a ``family`` (ols, logit, probit); a
``summary`` has ``statistics`` (a list) of ``value`` by ``rows``; a ``dp`` query has ``query``
(count, sum, mean, histogram, quantiles), ``value``, ``bounds``, ``epsilon`` (and
``categories`` or ``alphas``). Nothing here is SQL: every name is checked against the
extracts' manifest, must match the one grammar of names (:data:`tre.sql.IDENTIFIER`) and is
quoted by its one function; every condition's value is bound as a parameter.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tre import texts
from tre.catalog import Type
from tre.conditions import OPERATORS, Condition
from tre.exceptions import InvalidInput
from tre.outputs.models import parse_formula
from tre.outputs.tables import STATISTICS
from tre.sql import IDENTIFIER_HELP, Connection, file_list, identifier, is_identifier

KINDS = ("table", "summary", "model", "dp")
FAMILIES = ("ols", "logit", "probit")
DP_QUERIES = ("count", "sum", "mean", "histogram", "quantiles")
UNIT = "pseudo_id"
SUMMARY_STATISTICS = ("count", "mean", "std", "median")  # a summary's, unless it lists its own
#: The smallest privacy cost a DP query may spend (smaller ones overflow OpenDP's noise scale).
MIN_EPSILON = 1e-6


@dataclasses.dataclass(frozen=True)
class Join:
    dataset: str
    on: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str
    dataset: str
    where: tuple[Condition, ...]


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str
    dataset: str
    join: tuple[Join, ...] = ()
    flags: tuple[Flag, ...] = ()
    filters: tuple[Condition, ...] = ()
    rows: tuple[str, ...] = ()
    cols: tuple[str, ...] = ()
    statistic: str = "count"
    value: str | None = None
    quantile: float | None = None
    margins: bool = False
    statistics: tuple[str, ...] = ()
    formula: str | None = None
    family: str = "ols"
    query: str | None = None
    bounds: tuple[float, float] | None = None
    epsilon: float | None = None
    categories: tuple[Any, ...] = ()
    alphas: tuple[float, ...] = ()
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def datasets(self) -> list[str]:
        """Every extract the output reads: its dataset, the joined ones and the flags'."""
        return [self.dataset, *(j.dataset for j in self.join), *(f.dataset for f in self.flags)]

    def population(self) -> dict[str, Any]:
        """Everything but the statistic and layout: two outputs with the same population and
        keys count the same people."""
        return {
            "dataset": self.dataset,
            "join": [dataclasses.asdict(j) for j in self.join],
            "flags": [
                {
                    "name": f.name,
                    "dataset": f.dataset,
                    "where": [dataclasses.asdict(c) for c in f.where],
                }
                for f in self.flags
            ],
            "filters": [dataclasses.asdict(c) for c in self.filters],
        }


def load(path: Path) -> OutputSpec:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidInput(f"There is no output specification {path}.") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidInput(f"{path} is not valid {path.suffix.lstrip('.').upper()}: {e}") from None
    return parse(data, str(path))


def _listed(value: Any, field: str, errors: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{field}: a list is required")
        return []
    return value


#: The most values a list in a specification holds (a condition's values, DP categories), and
#: the longest text value.
MAX_LISTED = 1000
MAX_VALUE_CHARS = 200
MAX_FORMULA_CHARS = 1000
#: The fields each kind of output reads (others are refused: a specification is shown from
#: home as given, so nothing in it goes unread; found by the review of issue #21's changes).
COMMON = frozenset({"name", "kind", "dataset", "join", "flags", "filters"})
KIND_FIELDS = {
    "table": COMMON | {"rows", "cols", "statistic", "value", "quantile", "margins"},
    "summary": COMMON | {"rows", "value", "statistics"},
    "model": COMMON | {"formula", "family"},
    "dp": COMMON | {"query", "value", "bounds", "epsilon", "categories", "alphas"},
}
#: The fields of an output specification, of every kind. Anything else is refused: a
#: specification is stored and shown as given (from home too), and is no place to carry rows
#: out of a workspace.
FIELDS = frozenset().union(*KIND_FIELDS.values())
#: The largest specification, as JSON.
MAX_SPEC_BYTES = 16 << 10


def parse(data: Any, source: str = "the output specification") -> OutputSpec:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{source} must be a mapping of fields (name, kind, dataset, …).")
    errors: list[str] = []
    unknown = sorted(str(k)[:40] for k in data if k not in FIELDS)
    kind_fields = KIND_FIELDS.get(str(data.get("kind", "table")), FIELDS)
    unread = sorted(str(k) for k in data if k in FIELDS and k not in kind_fields)
    if unread:
        errors.append(f"{', '.join(unread)}: not fields of a {data.get('kind', 'table')}")
    try:
        size = len(json.dumps(data, default=str))
    except (TypeError, ValueError):
        size = MAX_SPEC_BYTES + 1
    if size > MAX_SPEC_BYTES:
        errors.append(f"the specification is {size:,} bytes long; at most {MAX_SPEC_BYTES:,}")
    if "margins" in data and not isinstance(data["margins"], bool):
        errors.append("margins: true or false")
    if unknown:
        errors.append(
            f"{', '.join(unknown)}: not fields of an output; known: {', '.join(sorted(FIELDS))}"
        )
    for field in ("filters", "flags", "categories"):
        if _too_long(data.get(field)):
            errors.append(
                f"{field}: at most {MAX_LISTED:,} values in a list, each of at most "
                f"{MAX_VALUE_CHARS} characters"
            )
    if len(str(data.get("formula") or "")) > MAX_FORMULA_CHARS:
        errors.append(f"formula: at most {MAX_FORMULA_CHARS:,} characters")

    def named(field: str, value: Any) -> bool:
        """Whether ``value`` is a name the TRE accepts (else say why, once)."""
        if is_identifier(value):
            return True
        message = f"{field}: {str(value)[:60]!r} is not a valid name ({IDENTIFIER_HELP})"
        if message not in errors:
            errors.append(message)
        return False

    def names(field: str, raw: Any = None) -> tuple[str, ...]:
        value = data.get(field, []) if raw is None else raw
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            errors.append(f"{field}: a list of column names is required")
            return ()
        for v in value:
            named(field, v)
        return tuple(value)

    def conditions(raw: Any, field: str) -> tuple[Condition, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            errors.append(f"{field}: a list of {{column, op, value}} is required")
            return ()
        out = []
        for i, c in enumerate(raw):
            if not isinstance(c, Mapping) or c.get("op") not in OPERATORS or not c.get("column"):
                errors.append(
                    f"{field}[{i}]: a condition is {{column, op, value}} with op one "
                    f"of {', '.join(OPERATORS)}"
                )
                continue
            if named(f"{field}[{i}].column", c["column"]):
                out.append(Condition(c["column"], c["op"], c.get("value")))
        return tuple(out)

    kind = data.get("kind", "table")
    if kind not in KINDS:
        errors.append(f"kind: one of {', '.join(KINDS)} is required")
    name = str(data.get("name") or "").strip()
    if not name:
        errors.append("name: a name for the output is required")
    elif len(name) > texts.TITLE:
        errors.append(f"name: at most {texts.TITLE} characters")
    dataset = data.get("dataset")
    if not isinstance(dataset, str):
        errors.append("dataset: the extract the output is computed from is required")
    else:
        named("dataset", dataset)
    joins = []
    for i, j in enumerate(_listed(data.get("join"), "join", errors)):
        if not isinstance(j, Mapping) or not isinstance(j.get("dataset"), str):
            errors.append(f"join[{i}]: {{dataset, on, columns}} is required")
            continue
        named(f"join[{i}].dataset", j["dataset"])
        joins.append(
            Join(
                j["dataset"],
                names(f"join[{i}].on", j.get("on") or ()),
                names(f"join[{i}].columns", j.get("columns") or ()),
            )
        )
    flags = []
    for i, f in enumerate(_listed(data.get("flags"), "flags", errors)):
        if not isinstance(f, Mapping) or not all(
            isinstance(f.get(k), str) for k in ("name", "dataset")
        ):
            errors.append(f"flags[{i}]: {{name, dataset, where}} is required")
            continue
        named(f"flags[{i}].name", f["name"])
        named(f"flags[{i}].dataset", f["dataset"])
        flags.append(Flag(f["name"], f["dataset"], conditions(f.get("where"), f"flags[{i}].where")))
    statistic = data.get("statistic", "count")
    if kind == "table" and statistic not in STATISTICS:
        errors.append(f"statistic: one of {', '.join(STATISTICS)} is required")
    value = data.get("value")
    if kind in ("table", "summary") and statistic != "count" and not value and kind == "table":
        errors.append(f"value: a {statistic} table needs the column it summarises")
    if kind == "summary" and not value:
        errors.append("value: a summary needs the column it summarises")
    summary = data.get("statistics") or SUMMARY_STATISTICS
    if kind == "summary" and (
        not isinstance(summary, list | tuple)
        or not summary
        or any(s not in STATISTICS or s == "quantile" for s in summary)
    ):
        allowed = ", ".join(s for s in STATISTICS if s != "quantile")
        errors.append(f"statistics: a list of {allowed} is required")
    family = data.get("family", "ols")
    if kind == "model":
        if not isinstance(data.get("formula"), str):
            errors.append("formula: a model needs a formula such as 'y ~ x + C(group)'")
        else:
            try:
                parse_formula(data["formula"])
            except InvalidInput as e:
                errors.append(f"formula: {e}")
        if family not in FAMILIES:
            errors.append(f"family: one of {', '.join(FAMILIES)} is required")
    query = data.get("query")
    bounds = data.get("bounds")
    epsilon = data.get("epsilon")
    if kind == "dp":
        if query not in DP_QUERIES:
            errors.append(f"query: one of {', '.join(DP_QUERIES)} is required")
        if (
            not isinstance(epsilon, int | float)
            or isinstance(epsilon, bool)
            or not math.isfinite(epsilon)
            or epsilon < MIN_EPSILON
        ):
            errors.append(
                f"epsilon: the privacy cost ε to spend is required (a number from {MIN_EPSILON})"
            )
        if query in ("sum", "mean", "quantiles") and (
            not isinstance(bounds, list) or len(bounds) != 2 or bounds[0] >= bounds[1]
        ):
            errors.append("bounds: [lower, upper] of the value is required (values are clamped)")
        if query in ("sum", "mean", "quantiles", "histogram") and not value:
            errors.append(f"value: a DP {query} needs the column it is about")
    quantile = data.get("quantile")
    if statistic == "quantile" and (
        not isinstance(quantile, int | float) or isinstance(quantile, bool) or not 0 < quantile < 1
    ):
        errors.append(
            "quantile: a quantile table needs the quantile, strictly between 0 and 1 (e.g. "
            "0.25); 0 and 1 are the minimum and maximum: ask for min or max"
        )
    if value is not None:
        if not isinstance(value, str):
            errors.append("value: the name of a column is required")
        else:
            named("value", value)
    filters = conditions(data.get("filters"), "filters")
    layout = [*names("rows"), *names("cols")]
    used = [*layout, *([value] if isinstance(value, str) else [])]
    # SQL compares names without case: so does the TRE, wherever names could meet.
    given = [*used, *(f.name for f in flags), *(c for j in joins for c in j.columns)]
    if UNIT in {u.casefold() for u in given}:
        errors.append(
            f"{UNIT} identifies a person: an output cannot be broken down by it or summarise it"
        )
    if len({v.casefold() for v in layout}) < len(layout):
        errors.append("rows, cols: each variable may appear once")
    if errors:
        raise InvalidInput(
            f"{source} is not a valid output specification:\n  - " + "\n  - ".join(errors)
        )
    return OutputSpec(
        name=name,
        kind=kind,
        dataset=dataset,
        join=tuple(joins),
        flags=tuple(flags),
        filters=filters,
        rows=names("rows"),
        cols=names("cols"),
        statistic=statistic,
        value=value,
        quantile=float(quantile) if quantile is not None else None,
        margins=bool(data.get("margins", False)),
        statistics=tuple(summary) if kind == "summary" else SUMMARY_STATISTICS,
        formula=data.get("formula"),
        family=family,
        query=query,
        bounds=(float(bounds[0]), float(bounds[1])) if bounds else None,
        epsilon=float(epsilon) if epsilon is not None else None,
        categories=tuple(data.get("categories") or ()),
        alphas=tuple(data.get("alphas") or (0.25, 0.5, 0.75)),
        raw=dict(data),
    )


def _too_long(value: Any) -> bool:
    """Whether ``value`` (a specification's field, walked through) holds a list longer than
    :data:`MAX_LISTED` or a text longer than :data:`MAX_VALUE_CHARS`."""
    if isinstance(value, str):
        return len(value) > MAX_VALUE_CHARS
    if isinstance(value, Mapping):
        return any(_too_long(v) for v in value.values())
    if isinstance(value, list | tuple):
        return len(value) > MAX_LISTED or any(_too_long(v) for v in value)
    return False


# -- the relation an output is computed over ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Extracts:
    """A project's extracts as the output engine sees them: a read_parquet per dataset and the
    type of every column (from the manifest)."""

    sources: Mapping[str, str]
    types: Mapping[str, Mapping[str, Type]]

    @classmethod
    def of(cls, folder: Path) -> Extracts:
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise InvalidInput("The project has no extracts: is it provisioned?")
        manifest = json.loads(manifest_path.read_text())
        sources = {
            name: f"read_parquet({file_list(folder / f['path'] for f in d['files'])}, "
            "union_by_name = true)"
            for name, d in manifest["datasets"].items()
        }
        types = {
            name: {UNIT: Type.STRING, **{c["name"]: Type(c["type"]) for c in d["columns"]}}
            for name, d in manifest["datasets"].items()
        }
        return cls(sources, types)


def _use_problems(dataset: str, column: str, filtering: bool) -> list[str]:
    """Why ``column`` of ``dataset`` may not be filtered on (``filtering``) or be a row or
    column, as the catalog says (:meth:`tre.catalog.Dataset.use_problem`)."""
    from tre import catalog

    if column == UNIT:
        return [f"{UNIT} identifies a person: no output is broken down or filtered by person"]
    found = catalog.DATASETS.get(dataset)
    if found is None:
        return []
    why = found.use_problem(column, as_filter=filtering)
    return [f"{'filter on' if filtering else 'row or column'} {why}"] if why else []


def relation(spec: OutputSpec, extracts: Extracts, con: Connection) -> tuple[str, dict[str, Type]]:
    """SQL for the records an output is computed over, and the type of each column (values
    bound on ``con``, where the SQL will run)."""
    problems = []

    def need(dataset: str) -> Mapping[str, Type]:
        if dataset not in extracts.types:
            problems.append(
                f"the project has no extract {dataset!r}; it has "
                f"{', '.join(sorted(extracts.types))}"
            )
            return {}
        return extracts.types[dataset]

    unit = identifier(UNIT)
    main = need(spec.dataset)
    columns: dict[str, Type] = dict(main)
    #: The dataset each column comes from (a flag comes from none: it is yes or no).
    origin = dict.fromkeys(main, spec.dataset)
    joins = []
    for i, j in enumerate(spec.join):
        other = need(j.dataset)
        for c in (*j.on, *j.columns):
            if other and c not in other:
                problems.append(f"{j.dataset} has no column {c!r}")
            if c in j.on and c not in main:
                problems.append(f"{spec.dataset} has no column {c!r} to join on")
        taken = {c.casefold() for c in columns}
        for c in j.columns:
            if c.casefold() in taken:
                problems.append(
                    f"join {j.dataset}: {c!r} is already a column of the records (join on it "
                    "instead, or leave it out)"
                )
        if problems:
            continue
        alias = f"j{i}"
        picked = ", ".join(identifier(c) for c in (*j.on, *j.columns))
        on = " AND ".join(
            [f"m.{unit} = {alias}.{unit}"]
            + [f"m.{identifier(c)} = {alias}.{identifier(c)}" for c in j.on]
        )
        # One row per key on the joined side, so joining never multiplies the records.
        partition = ", ".join([unit, *(identifier(c) for c in j.on)])
        joins.append(
            f"LEFT JOIN (SELECT {unit}, {picked} FROM {extracts.sources[j.dataset]} "
            f"QUALIFY row_number() OVER (PARTITION BY {partition}) = 1) {alias} ON {on}"
        )
        for c in j.columns:
            columns[c] = other[c]
            origin[c] = j.dataset
    flag_sql = []
    for f in spec.flags:
        other = need(f.dataset)
        for c in f.where:
            if other and c.column not in other:
                problems.append(f"flag {f.name}: {f.dataset} has no column {c.column!r}")
            elif other:
                problems += _use_problems(f.dataset, c.column, filtering=True)
        if f.name.casefold() in {c.casefold() for c in columns}:
            problems.append(f"flag {f.name}: the records already have a column of that name")
        if problems:
            continue
        where = " AND ".join(f"({c.sql(other[c.column], con.bind)})" for c in f.where) or "true"
        flag_sql.append(
            f"m.{unit} IN (SELECT {unit} FROM {extracts.sources[f.dataset]} WHERE {where}) "
            f"AS {identifier(f.name)}"
        )
        columns[f.name] = Type.BOOLEAN
    for c in spec.filters:
        if c.column not in columns:
            problems.append(f"filter on unknown column {c.column!r}")
        elif c.column in origin:
            problems += _use_problems(origin[c.column], c.column, filtering=True)
    for c in (*spec.rows, *spec.cols, *([spec.value] if spec.value else [])):
        if c not in columns:
            problems.append(f"unknown column {c!r}; available: {', '.join(sorted(columns))}")
    for c in (*spec.rows, *spec.cols):
        if c in origin:
            problems += _use_problems(origin[c], c, filtering=False)
    if problems:
        raise InvalidInput(
            f"Output {spec.name!r} cannot be computed:\n  - "
            + "\n  - ".join(dict.fromkeys(problems))
        )
    selected = ["m.*"]
    for i, j in enumerate(spec.join):
        selected += [f"j{i}.{identifier(c)}" for c in j.columns]
    selected += flag_sql
    sql = (
        f"(SELECT {', '.join(selected)} FROM {extracts.sources[spec.dataset]} m {' '.join(joins)})"
    )
    return sql, columns


def where(conditions: tuple[Condition, ...], columns: Mapping[str, Type], con: Connection) -> str:
    """SQL for ``conditions`` (all of them), their values bound on ``con``."""
    return " AND ".join(f"({c.sql(columns[c.column], con.bind)})" for c in conditions) or "true"
