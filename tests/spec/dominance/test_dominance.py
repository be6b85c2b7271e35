"""Dominance in magnitude tables: the N-K rule (n = 2, k = 90 %) and the p % rule (10 %)."""

from tests.spec.helpers import check


def test_two_people_holding_more_than_ninety_percent_fail():
    """If the 2 largest contributors make up more than 90 % of a cell's total, the total
    reveals roughly what they contribute."""
    check(
        statistic="sum",
        table="""
              | -
            x | 1000,900,5,5,5,5,5,5,5,5,5,5
            y | 10,10,10,10,10,10,10,10,10,10,10,10
        """,
        released="""
              | -
            x | ~
            y | 120
        """,
    )


def test_the_p_percent_rule():
    """The second largest contributor knows their own value; if the rest of the total is less
    than 10 % of the largest value, they can estimate it closely: the cell fails."""
    check(
        statistic="sum",
        table="""
              | -
            x | 1000,500,10,10,10,10,10,10,10,10
            y | 100,90,80,70,60,50,40,30,20,10
        """,
        released="""
              | -
            x | ~
            y | 550
        """,
    )


def test_negative_values_send_a_cell_to_review():
    """With negative contributions, dominance cannot be judged automatically: a person
    checks the cell."""
    check(
        statistic="sum",
        table="""
              | -
            x | 50,-40,30,20,10,10,10,10,10,10
        """,
        released="""
              | -
            x | 120?
        """,
    )


def test_dominance_applies_to_means_too():
    """A mean is a total divided by a count: the same dominance rules apply."""
    check(
        statistic="mean",
        table="""
              | -
            x | 1000,900,1,1,1,1,1,1,1,1
            y | 5,5,5,5,5,5,5,5,5,5
        """,
        released="""
              | -
            x | ~
            y | 5
        """,
    )


def test_dominance_is_checked_in_margins_too():
    """A margin is a cell like any other: the total of row x and of column a are dominated by
    one or two people, so they fail, and enough other cells are hidden to protect them. The
    grand total passes: its two largest contributors hold just under 90 %."""
    check(
        statistic="sum",
        margins=True,
        table="""
              | a | b
            x | 900,5,5,5,5,5,5,5,5,5 | 800,5,5,5,5,5,5,5,5,5
            y | 5,5,5,5,5,5,5,5,5,5 | 5,5,5,5,5,5,5,5,5,5
        """,
        released="""
              | a | b | All
            x | ~ | ~ | ~
            y | 50 | ~ | ~
          All | ~ | ~ | 1890
        """,
    )
