"""Differentially private queries (OpenDP, run by the TRE) against the project's privacy budget.

``dp.count(...)``, ``dp.sum(...)``, ``dp.mean(...)`` and ``dp.histogram(...)`` return a
:class:`Query` that shows, before anything is spent, what it would cost (ε), how accurate it
would be and how much of the budget is left. ``query.run()`` spends the ε and returns the
noisy :class:`~tre.workspace.outputs.Output`, ready for :func:`~tre.workspace.request_export`.
Spent ε is never given back: the budget is kept by the TRE, not by the notebook.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from typing import Any

from tre.workspace import api
from tre.workspace.outputs import Output
from tre.workspace.sandbox import Workspace


@dataclasses.dataclass(frozen=True)
class Query:
    spec: dict[str, Any]
    epsilon: float
    accuracy: str
    budget_left: float
    budget_granted: float

    def __str__(self) -> str:
        return (
            f"DP {self.spec['query']} {self.spec['name']!r}: costs ε = {self.epsilon:g} of the "
            f"{self.budget_left:g} left (of {self.budget_granted:g}); {self.accuracy}. "
            "Nothing is spent until .run()."
        )

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(str(self))}</p>"

    def run(self) -> Output:
        """Spend the ε and run the query; the noisy result, stored by the TRE."""
        project = Workspace.here().project
        return Output.from_api(api.call("POST", f"/projects/{project}/dp", self.spec))


def _query(query: str, dataset: str, epsilon: float, name: str | None, **fields) -> Query:
    fields["filters"] = [dict(f) for f in fields.get("filters", ())]
    spec = {
        "name": name or f"DP {query}" + (f" of {fields['value']}" if fields.get("value") else ""),
        "kind": "dp",
        "dataset": dataset,
        "query": query,
        "epsilon": epsilon,
        **{k: v for k, v in fields.items() if v not in (None, (), [])},
    }
    project = Workspace.here().project
    plan = api.call("POST", f"/projects/{project}/dp/plan", spec)
    return Query(
        spec, plan["epsilon"], plan["accuracy"], plan["budget"]["left"], plan["budget"]["granted"]
    )


def count(
    dataset: str, *, epsilon: float, filters: Sequence[dict] = (), name: str | None = None
) -> Query:
    """How many people (one record per person) match ``filters``."""
    return _query("count", dataset, epsilon, name, filters=filters)


def sum(  # the name researchers look for, as dp.sum
    dataset: str,
    value: str,
    *,
    bounds: tuple[float, float],
    epsilon: float,
    filters: Sequence[dict] = (),
    name: str | None = None,
) -> Query:
    """The sum of ``value`` over people, each person's total clamped to ``bounds``."""
    return _query("sum", dataset, epsilon, name, value=value, bounds=list(bounds), filters=filters)


def mean(
    dataset: str,
    value: str,
    *,
    bounds: tuple[float, float],
    epsilon: float,
    filters: Sequence[dict] = (),
    name: str | None = None,
) -> Query:
    """The mean of ``value`` over people, values clamped to ``bounds``."""
    return _query("mean", dataset, epsilon, name, value=value, bounds=list(bounds), filters=filters)


def histogram(
    dataset: str,
    value: str,
    *,
    categories: Sequence[Any],
    epsilon: float,
    filters: Sequence[dict] = (),
    name: str | None = None,
) -> Query:
    """How many people have each of ``categories`` as their (most frequent) ``value``."""
    return _query(
        "histogram",
        dataset,
        epsilon,
        name,
        value=value,
        categories=list(categories),
        filters=filters,
    )
