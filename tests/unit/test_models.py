"""Models in the airlock: the formula is read by the TRE (patsy never evaluates what a
researcher wrote), the person pseudonym is never a term, and a coefficient never describes
fewer than ``threshold`` people. Real DuckDB and statsmodels over a small table."""

from __future__ import annotations

import random

import duckdb
import pandas as pd
import pytest

from tre.catalog import Type
from tre.exceptions import InvalidInput
from tre.outputs import models, specs
from tre.outputs import rules as R
from tre.sql import Connection

COLUMNS = {
    "pseudo_id": Type.STRING,
    "grp": Type.STRING,
    "score": Type.DECIMAL,
    "x": Type.DECIMAL,
    "passed": Type.INTEGER,
    "born": Type.DATE,
}


@pytest.fixture
def con():
    rng = random.Random(0)
    rows, person = [], 0
    for group, size in (("A", 50), ("B", 3), ("C", 40)):
        for _ in range(size):
            person += 1
            score = float(rng.randint(10, 90))
            rows.append(
                {
                    "pseudo_id": f"p{person}",
                    "grp": group,
                    "score": score,
                    "x": rng.random(),
                    "passed": int(score > 50),
                    "born": pd.Timestamp("2010-01-01"),
                }
            )
    connection = duckdb.connect()
    connection.register("records", pd.DataFrame(rows))
    yield connection
    connection.close()


def fit(con, formula: str, family: str = "ols", where: str = "true"):
    return models.fit(
        Connection(con), "records", where, formula, family, R.RuleSet(), {}, COLUMNS, specs.UNIT
    )


def test_a_formula_is_never_evaluated(con, tmp_path):
    marker = tmp_path / "ran"
    attacks = [
        f"score ~ x + I(0*x + len(__import__('os').system('touch {marker}')))",
        "score ~ I(int(str(list(zip(pseudo_id, score))[:5])))",
        "score ~ np.log(x)",
        "score ~ x + C(grp, Treatment('B'))",
        "score ~ x**2",
    ]
    for attack in attacks:
        with pytest.raises(InvalidInput, match="formula"):
            fit(con, attack)
        with pytest.raises(InvalidInput, match="formula"):
            specs.parse({"name": "m", "kind": "model", "dataset": "d", "formula": attack})
    assert not marker.exists()


def test_the_grammar_reads_terms_interactions_and_the_intercept():
    assert models.parse_formula("y ~ a*C(b) - 1").patsy == "y ~ 0 + a + C(b) + a:C(b)"
    assert models.parse_formula("y~1").patsy == "y ~ 1"
    assert models.parse_formula("y ~ -1 + a:b + a").patsy == "y ~ 0 + a:b + a"


def test_a_model_names_only_columns_and_never_the_pseudonym(con):
    for formula, problem in (
        ("score ~ pseudo_id", "pseudo_id"),
        ("score ~ x + nowhere", "'nowhere'"),
        ("score ~ born", "date"),
    ):
        with pytest.raises(InvalidInput, match=problem):
            fit(con, formula)


def test_a_coefficient_of_a_small_group_is_not_released(con):
    # B has 3 people: intercept + its coefficient would be their mean score.
    small = fit(con, "score ~ C(grp)")
    assert small.status == R.FAIL and all(c.value is None for c in small.cells)
    assert any("grp" in reason and "fewer than 10" in reason for reason in small.cells[0].reasons)
    merged = fit(con, "score ~ C(grp)", where="grp <> 'B'")
    assert merged.status == R.PASS and all(c.value is not None for c in merged.cells)
    # Text columns are categorical without C(): the same group is found.
    assert fit(con, "score ~ x + grp").status == R.FAIL


def test_a_logit_checks_each_outcome_within_each_group(con):
    everyone = fit(con, "passed ~ x", "logit", where="grp <> 'B'")
    assert everyone.status == R.PASS
    # Few people with one of the outcomes: the coefficients would describe them.
    few = con.execute(
        "SELECT min(score) FROM (SELECT score FROM records WHERE grp <> 'B' "
        "ORDER BY score DESC LIMIT 4)"
    ).fetchone()[0]
    rare = fit(con, "passed ~ x", "logit", where=f"grp <> 'B' AND (score < 50 OR score >= {few})")
    assert rare.status == R.FAIL and "passed" in rare.cells[0].reasons[-1]


def test_an_unfittable_model_says_why_without_quoting_data(con):
    with pytest.raises(InvalidInput) as refused:
        fit(con, "grp ~ x", "logit")
    message = str(refused.value)
    assert "cannot be fitted" in message
    assert not any(f"'{g}'" in message for g in ("A", "B", "C"))
