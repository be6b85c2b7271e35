"""Differential privacy with OpenDP, charged to the project's privacy budget.

Queries run in the TRE service, never in a workspace, over one record per person (so adding or
removing a person changes the input by one record): *count* of persons, *sum* and *mean* of a
per-person value clamped to public bounds, *histogram* of persons over public categories,
*quantiles* of a per-person value within bounds. The cost ε is computed first
(``measurement.map(1)``), with the expected accuracy, and shown before anything is spent.

The budget (ε granted at approval) lives in the metadata database. Spending is: reserve the
cost in one locked transaction (SQLite's write lock; PostgreSQL ``SELECT … FOR UPDATE`` on the
project's budget row) only if it fits, then run the mechanism, then mark the reservation
spent. A reservation that ran is never refunded, so the budget can never be exceeded, also
under concurrent requests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from tre import audit
from tre.db import Base, Database
from tre.exceptions import InvalidInput, PermissionDenied
from tre.outputs import rules as R
from tre.outputs.specs import OutputSpec

ALPHA = 0.05  # accuracy is stated at 95 % confidence

audit.declare_actions(
    {
        "privacy.budget_set": "A project's privacy budget ε was set (at provisioning).",
        "privacy.reserved": "Part of a project's privacy budget was reserved for a DP query.",
        "privacy.spent": "A DP query ran; its reserved ε is spent.",
    }
)


class PrivacyBudget(Base):
    __tablename__ = "privacy_budgets"

    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), primary_key=True)
    epsilon: Mapped[float] = mapped_column(sa.Float)


class PrivacySpend(Base):
    __tablename__ = "privacy_spends"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    query: Mapped[str] = mapped_column(sa.String(200))
    epsilon: Mapped[float] = mapped_column(sa.Float)
    state: Mapped[str] = mapped_column(sa.String(16))  # reserved | spent
    spent_by: Mapped[str] = mapped_column(sa.String(64))


def set_budget(session: Session, project_id: str, epsilon: float, event: audit.Event) -> None:
    if session.get(PrivacyBudget, project_id) is None:
        session.add(PrivacyBudget(project_id=project_id, epsilon=epsilon))
        audit.record(session, event.but(details={"epsilon": epsilon}))


def remaining(db: Database, project_id: str) -> tuple[float, float]:
    """(granted, left) for the project."""
    with db.read() as session:
        budget = session.get(PrivacyBudget, project_id)
        if budget is None:
            return 0.0, 0.0
        used = session.execute(
            sa.select(sa.func.coalesce(sa.func.sum(PrivacySpend.epsilon), 0.0)).where(
                PrivacySpend.project_id == project_id
            )
        ).scalar_one()
        return budget.epsilon, max(budget.epsilon - used, 0.0)


def reserve(db: Database, project_id: str, epsilon: float, query: str, by) -> int:
    """Reserve ``epsilon`` if it fits in what is left; return the reservation id."""
    with db.write() as session:
        budget = session.execute(
            sa.select(PrivacyBudget).where(PrivacyBudget.project_id == project_id).with_for_update()
        ).scalar_one_or_none()
        if budget is None:
            raise PermissionDenied(f"Project {project_id} has no privacy budget.")
        used = session.execute(
            sa.select(sa.func.coalesce(sa.func.sum(PrivacySpend.epsilon), 0.0)).where(
                PrivacySpend.project_id == project_id
            )
        ).scalar_one()
        if used + epsilon > budget.epsilon + 1e-12:
            raise PermissionDenied(
                f"This query costs ε = {epsilon:g} but only ε = {max(budget.epsilon - used, 0):g}"
                f" of the project's {budget.epsilon:g} is left. Ask for less precision (a "
                "smaller ε) or ask the custodians for more budget."
            )
        spend = PrivacySpend(
            project_id=project_id,
            query=query[:200],
            epsilon=epsilon,
            state="reserved",
            spent_by=by.username,
        )
        session.add(spend)
        session.flush()
        audit.record(
            session,
            audit.Event(
                by.username,
                by.main_role,
                "privacy.reserved",
                "project",
                project_id,
                {"epsilon": epsilon, "query": query[:200], "reservation": spend.id},
            ),
        )
        return spend.id


def mark_spent(db: Database, reservation: int, by) -> None:
    with db.write() as session:
        spend = session.get(PrivacySpend, reservation)
        spend.state = "spent"
        details = {"reservation": reservation, "epsilon": spend.epsilon}
        event = audit.Event(
            by.username, by.main_role, "privacy.spent", "project", spend.project_id, details
        )
        audit.record(session, event)


# -- the queries -------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """A DP query ready to run: its cost, its accuracy and the OpenDP measurement."""

    query: str
    epsilon: float
    accuracy: str
    run: Any  # callable: data -> noisy release


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def plan(spec: OutputSpec, categories: Sequence[Any] = ()) -> Plan:
    """Build the measurement for ``spec``, with its cost and expected accuracy."""
    dp = _dp()
    epsilon = spec.epsilon
    # Scales are widened by a hair so that floating-point rounding never makes the true cost
    # (measurement.map(1)) exceed the ε charged to the budget.
    widen = 1 + 1e-6
    floats = (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance())
    if spec.query == "count":
        scale = widen / epsilon
        meas = floats >> dp.t.then_count() >> dp.m.then_laplace(scale=scale)
        accuracy = dp.discrete_laplacian_scale_to_accuracy(scale, ALPHA)
        text = f"±{accuracy:.1f} persons"
    elif spec.query in ("sum", "mean"):
        low, high = spec.bounds
        sensitivity = max(abs(low), abs(high))
        share = epsilon if spec.query == "sum" else epsilon / 2
        scale = widen * sensitivity / share
        summed = (
            floats
            >> dp.t.then_clamp((low, high))
            >> dp.t.then_sum()
            >> dp.m.then_laplace(scale=scale)
        )
        accuracy = dp.laplacian_scale_to_accuracy(scale, ALPHA)
        if spec.query == "sum":
            meas, text = summed, f"±{accuracy:.1f} on the sum"
        else:
            counted = floats >> dp.t.then_count() >> dp.m.then_laplace(scale=widen / share)
            meas = dp.c.make_composition([summed, counted])
            text = f"±{accuracy:.1f} on the sum and ±{dp.discrete_laplacian_scale_to_accuracy(1.0 / share, ALPHA):.1f} on the count behind the mean"  # noqa: E501
    elif spec.query == "histogram":
        if not categories:
            raise InvalidInput("A DP histogram needs its categories, listed in the specification.")
        strings = (dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance())
        scale = widen / epsilon
        meas = (
            strings
            >> dp.t.then_count_by_categories(categories=[str(c) for c in categories])
            >> dp.m.then_laplace(scale=scale)
        )
        accuracy = dp.discrete_laplacian_scale_to_accuracy(scale, ALPHA)
        text = f"±{accuracy:.1f} persons per category"
    elif spec.query == "quantiles":
        low, high = spec.bounds
        candidates = [low + (high - low) * i / 100 for i in range(101)]
        share = epsilon / len(spec.alphas)
        parts = []
        for alpha in spec.alphas:

            def quantile(scale: float, alpha: float = alpha):
                return (
                    floats
                    >> dp.t.then_clamp((low, high))
                    >> dp.m.then_private_quantile(
                        dp.max_divergence(), candidates=candidates, alpha=alpha, scale=scale
                    )
                )

            # A quantile away from the median costs more at the same scale (by
            # max(alpha, 1 - alpha)): the scale that costs its share is found from the cost at 1.
            parts.append(quantile(widen * float(quantile(1.0).map(1)) / share))
        meas = dp.c.make_composition(parts)
        text = f"to the nearest 1 % of [{low:g}, {high:g}], noisier with few persons"
    else:
        raise InvalidInput(f"Unknown DP query {spec.query!r}.")
    cost = float(meas.map(1))
    if cost > epsilon:
        raise AssertionError(f"DP query costs {cost} > the ε = {epsilon} it is charged")
    return Plan(spec.query, epsilon, f"with 95 % confidence within {text}", meas)


def release(
    spec: OutputSpec, noisy: Any, categories: Sequence[Any], rule_set: R.RuleSet
) -> list[dict[str, Any]]:
    """The released cells: noisy values post-processed by the rule set (rounding, and
    suppression of noisy counts below the threshold)."""

    def count_cell(label: list[str], value: float) -> dict[str, Any]:
        value = max(0.0, float(value))
        if value < rule_set.threshold:
            return {
                "row": label,
                "col": ["count"],
                "value": None,
                "status": R.FAIL,
                "reasons": [f"the noisy count is below {rule_set.threshold}"],
                "suppression": "primary",
            }
        return {
            "row": label,
            "col": ["count"],
            "value": R.round_to(value, rule_set.rounding_base),
            "status": R.PASS,
            "reasons": [],
            "suppression": None,
        }

    if spec.query == "count":
        return [count_cell(["All"], noisy)]
    if spec.query == "histogram":
        # OpenDP adds a last bin for values outside the categories: it is not released.
        return [count_cell([str(c)], v) for c, v in zip(categories, noisy, strict=False)]
    if spec.query == "sum":
        return [
            {
                "row": ["All"],
                "col": ["sum"],
                "value": float(noisy),
                "status": R.PASS,
                "reasons": [],
                "suppression": None,
            }
        ]
    if spec.query == "mean":
        total, count = noisy
        if count < rule_set.threshold:
            return [
                {
                    "row": ["All"],
                    "col": ["mean"],
                    "value": None,
                    "status": R.FAIL,
                    "reasons": [f"the noisy count behind the mean is below {rule_set.threshold}"],
                    "suppression": "primary",
                }
            ]
        return [
            {
                "row": ["All"],
                "col": ["mean"],
                "value": float(total) / max(count, 1),
                "status": R.PASS,
                "reasons": [],
                "suppression": None,
            }
        ]
    return [
        {
            "row": [f"q{alpha:g}"],
            "col": [spec.value],
            "value": float(v),
            "status": R.PASS,
            "reasons": [],
            "suppression": None,
        }
        for alpha, v in zip(spec.alphas, noisy, strict=True)
    ]


def is_finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
