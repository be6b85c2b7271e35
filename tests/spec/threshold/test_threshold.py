"""Minimum units per cell (threshold, default 10)."""

from tests.spec.helpers import check
from tre.outputs.rules import RuleSet


def test_a_cell_with_fewer_than_ten_people_is_suppressed():
    """A cell describing fewer than 10 people could identify them: it is not released."""
    check(
        table="""
              |  a |  b
            x | 12 |  3
            y | 20 | 15
        """,
        released="""
              |  a |  b
            x | 12 |  ~
            y | 20 | 15
        """,
    )


def test_ten_people_are_enough():
    """The threshold is the smallest number of people a cell may describe: 10 passes."""
    check(
        table="""
              |  -
            x | 10
            y |  9
        """,
        released="""
              |  -
            x | 10
            y |  ~
        """,
    )


def test_a_project_can_raise_the_threshold():
    """Projects and datasets may make rules stricter: with a threshold of 20, 15 fails."""
    check(
        table="""
              |  -
            x | 25
            y | 15
        """,
        released="""
              |  -
            x | 25
            y |  ~
        """,
        rules=RuleSet().strictest({"threshold": 20}),
    )


def test_the_threshold_counts_people_not_records():
    """Cells count distinct people: a magnitude cell of 3 people fails even with large
    values."""
    check(
        statistic="sum",
        table="""
              | -
            x | 500,400,300,200,100,90,80,70,60,50,40
            y | 900,800,700
        """,
        released="""
              | -
            x | 1890
            y | ~
        """,
    )
