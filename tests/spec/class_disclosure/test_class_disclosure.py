"""Zeros and full cells (class disclosure): flagged for review, not suppressed."""

from tests.spec.helpers import check


def test_an_empty_cell_is_flagged():
    """An empty cell says that nobody in a group has a characteristic: a person checks it."""
    check(
        table="""
              |  a |  b
            x | 12 |  0
            y | 20 | 15
        """,
        released="""
              |  a |  b
            x | 12? | 0?
            y | 20 | 15
        """,
    )


def test_a_full_cell_is_flagged():
    """When a whole row is in one cell, the table says everyone in that group has the
    characteristic of the column."""
    check(
        table="""
              |  a |  b
            x | 12 | 14
            y | 20 |  0
        """,
        released="""
              |  a |  b
            x | 12 | 14
            y | 20? | 0?
        """,
    )


def test_a_minimum_or_maximum_goes_to_review():
    """A minimum or a maximum is one person's value: even in a large cell a person checks it."""
    check(
        statistic="max",
        table="""
              | -
            x | 1,2,3,4,5,6,7,8,9,10,11,12
        """,
        released="""
              | -
            x | 12?
        """,
    )
