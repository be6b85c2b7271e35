"""What an output specification may ask for: refused at once, with the reason, when it would
break a person's record out (the pseudonym as a grouping), hide a minimum or maximum as a
quantile, or hold values the engine cannot use."""

from __future__ import annotations

import math

import pytest

from tre.exceptions import InvalidInput
from tre.outputs import specs

TABLE = {"name": "t", "kind": "table", "dataset": "pupils", "rows": ["sex"]}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"rows": ["pseudo_id"], "cols": ["ethnicity"]}, "pseudo_id identifies a person"),
        ({"cols": ["pseudo_id"]}, "pseudo_id identifies a person"),
        ({"statistic": "max", "value": "pseudo_id"}, "pseudo_id identifies a person"),
        ({"statistic": "quantile", "value": "score", "quantile": 1.0}, "ask for min or max"),
        ({"statistic": "quantile", "value": "score", "quantile": 0}, "ask for min or max"),
        ({"statistic": "quantile", "value": "score", "quantile": 7}, "strictly between"),
        ({"kind": "summary", "value": "score", "statistics": ["bogus"]}, "statistics:"),
        ({"kind": "summary", "value": "score", "statistics": ["quantile"]}, "statistics:"),
        ({"kind": "summary", "value": "score", "statistics": "mean"}, "statistics:"),
    ],
)
def test_a_specification_that_could_disclose_or_break_is_refused(fields, reason):
    with pytest.raises(InvalidInput, match=reason):
        specs.parse({**TABLE, **fields})


@pytest.mark.parametrize("epsilon", [math.nan, math.inf, 1e-320, 0, -1, True, "1"])
def test_a_dp_query_needs_a_usable_privacy_cost(epsilon):
    spec = {"name": "q", "kind": "dp", "dataset": "pupils", "query": "count", "epsilon": epsilon}
    with pytest.raises(InvalidInput, match="epsilon"):
        specs.parse(spec)


def test_allowed_specifications_still_parse():
    assert specs.parse({**TABLE, "statistic": "quantile", "value": "s", "quantile": 0.9})
    summary = specs.parse({**TABLE, "kind": "summary", "value": "s", "statistics": ["min"]})
    assert summary.statistics == ("min",)
    assert specs.parse({**TABLE, "kind": "summary", "value": "s"}).statistics == (
        specs.SUMMARY_STATISTICS
    )
    dp = {"name": "q", "kind": "dp", "dataset": "pupils", "query": "count", "epsilon": 0.5}
    assert specs.parse(dp).epsilon == 0.5


def test_a_specification_carries_no_free_text_beyond_its_fields():
    """Found by the review of #20's fixes: a specification is stored and shown from home as
    given, so an extra key, a long name or a long list carried rows out of a workspace."""
    base = {"name": "t", "kind": "table", "dataset": "pupils", "rows": ["sex"]}
    too_long = [
        {**base, "notes": "p1,55,F\n" * 1000},
        {**base, "name": "x" * 201},
        {**base, "filters": [{"column": "sex", "op": "in", "value": ["M"] * 1001}]},
        {**base, "filters": [{"column": "sex", "op": "eq", "value": "x" * 201}]},
        {**base, "formula": "y ~ " + " + ".join(["x"] * 400)},
    ]
    for raw in too_long:
        with pytest.raises(InvalidInput):
            specs.parse(raw)
    assert specs.parse({**base, "name": "x" * 200}).name == "x" * 200
