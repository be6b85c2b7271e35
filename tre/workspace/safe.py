"""Safe outputs: tables, summaries and models the TRE computes from the project's extracts and
checks (small cells, dominance, secondary suppression, differencing against earlier releases,
a model's degrees of freedom) before anything is requested.

Each function builds an output specification (docs/outputs.md: the same fields as a YAML
specification), has the TRE compute and check it, and returns the :class:`Output` it stored,
which a notebook shows cell by cell. ``join``, ``flags`` and ``filters`` are lists of mappings
as in a specification, e.g. ``filters=[{"column": "academic_year", "op": "gte", "value":
2019}]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tre.workspace.outputs import Output, check

Conditions = Sequence[dict[str, Any]]


def _spec(kind: str, dataset: str, name: str, fields: dict[str, Any], join, flags, filters):
    spec = {"name": name, "kind": kind, "dataset": dataset, **fields}
    for field, value in (("join", join), ("flags", flags), ("filters", filters)):
        if value:
            spec[field] = [dict(v) for v in value]
    return spec


def table(
    dataset: str,
    rows: Sequence[str],
    cols: Sequence[str] = (),
    *,
    statistic: str = "count",
    value: str | None = None,
    quantile: float | None = None,
    margins: bool = True,
    join: Conditions = (),
    flags: Conditions = (),
    filters: Conditions = (),
    name: str | None = None,
) -> Output:
    """A table of ``statistic`` (count, sum, mean, median, quantile, min, max, std) of
    ``value`` by ``rows`` × ``cols``, with margins by default."""
    fields: dict[str, Any] = {
        "rows": list(rows),
        "cols": list(cols),
        "statistic": statistic,
        "margins": margins,
    }
    if value is not None:
        fields["value"] = value
    if quantile is not None:
        fields["quantile"] = quantile
    what = "count" if statistic == "count" else f"{statistic} of {value}"
    by = " by " + " × ".join(", ".join(x) for x in (rows, cols) if x) if rows or cols else ""
    return check(_spec("table", dataset, name or f"{what}{by}", fields, join, flags, filters))


def summary(
    dataset: str,
    value: str,
    statistics: Sequence[str] = ("count", "mean"),
    rows: Sequence[str] = (),
    *,
    join: Conditions = (),
    flags: Conditions = (),
    filters: Conditions = (),
    name: str | None = None,
) -> Output:
    """Summary statistics of ``value``, overall or by ``rows``."""
    fields = {"value": value, "statistics": list(statistics), "rows": list(rows)}
    default = f"{', '.join(statistics)} of {value}" + (f" by {', '.join(rows)}" if rows else "")
    return check(_spec("summary", dataset, name or default, fields, join, flags, filters))


def model(
    dataset: str,
    formula: str,
    family: str = "ols",
    *,
    join: Conditions = (),
    flags: Conditions = (),
    filters: Conditions = (),
    name: str | None = None,
) -> Output:
    """A regression (``ols``, ``logit`` or ``probit``) given as a formula, e.g.
    ``"attainment8 ~ C(fsm_eligible) + C(sex)"``: its coefficients are checked for residual
    degrees of freedom."""
    fields = {"formula": formula, "family": family}
    return check(
        _spec("model", dataset, name or f"{family}: {formula}", fields, join, flags, filters)
    )
