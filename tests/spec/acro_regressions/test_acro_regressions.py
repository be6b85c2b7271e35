"""Bugs of ACRO 1.0.2 that tre does not repeat."""

from tests.spec.helpers import check


def test_a_table_with_margins_and_integer_row_labels_is_really_suppressed():
    """Row labels that are numbers (years) are labels like any other: the small cell and its
    complements are suppressed, margins included."""
    check(
        margins=True,
        table="""
                 |  1 |  2
            2019 | 40 |  3
            2020 | 30 | 35
        """,
        released="""
                 |  1 |  2 | All
            2019 |  ~ |  ~ | 43
            2020 |  ~ |  ~ | 65
             All | 70 | 38 | 108
        """,
    )


def test_a_standard_deviation_of_large_groups_is_released():
    """A standard deviation over many people is not disclosive and is not blanked."""
    check(
        statistic="std",
        table="""
              | -
            x | 1,2,3,4,5,6,7,8,9,10,11,12
            y | 2,4,6,8,10,12,14,16,18,20,22,24
        """,
        released="""
              | -
            x | 3.60555
            y | 7.2111
        """,
    )


def test_a_cell_whose_total_is_zero_does_not_fail_the_p_percent_rule():
    """With a total of zero there is nothing to estimate: the p % rule passes the cell."""
    check(
        statistic="sum",
        table="""
              | -
            x | 0,0,0,0,0,0,0,0,0,0,0,0
            y | 1,2,3,4,5,6,7,8,9,10,11,12
        """,
        released="""
              | -
            x | 0
            y | 78
        """,
    )
