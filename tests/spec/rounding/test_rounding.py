"""Rounding and the OpenSAFELY rule set: redact counts of 7 or fewer, round the rest to 5."""

from tests.spec.helpers import check
from tre.outputs.rules import RuleSet


def test_opensafely_redacts_seven_or_fewer_and_rounds_to_five():
    """Counts of 7 or fewer are redacted; every other count is rounded to the nearest 5."""
    check(
        rules=RuleSet.named("opensafely"),
        table="""
              |  -
            v |  7
            w |  8
            x | 12
            y | 13
            z | 102
        """,
        released="""
              |  -
            v |  ~
            w | 10
            x | 10
            y | 15
            z | 100
        """,
    )


def test_a_project_can_ask_for_rounding():
    """Rounding can be added to the default rules: counts are then rounded to the base."""
    check(
        rules=RuleSet().strictest({"rounding_base": 5}),
        table="""
              |  -
            x | 11
            y | 24
        """,
        released="""
              |  -
            x | 10
            y | 25
        """,
    )
