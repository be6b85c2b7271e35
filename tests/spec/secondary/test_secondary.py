"""Secondary suppression: no suppressed cell can be worked out from the published totals.

Every table with margins is audited by solving the attacker's linear program; each suppressed
cell's feasible range must be at least the protection level (the threshold, 10)."""

from tests.spec.helpers import check


def test_one_way_table_with_a_total():
    """With the total published, one suppressed cell would be the total minus the others: the
    smallest other non-empty cell is hidden too."""
    check(
        margins=True,
        table="""
              |  -
            x | 30
            y |  4
            z | 25
        """,
        released="""
              |  -
            x | 30
            y |  ~
            z |  ~
          All | 59
        """,
    )


def test_two_way_table_with_margins():
    """In a two-way table a suppressed cell needs a partner in its row and in its column,
    and their partner too: four cells at least."""
    check(
        margins=True,
        table="""
              |  a |  b |  c
            x | 40 |  3 | 30
            y | 35 | 25 | 20
            z | 50 | 45 | 60
        """,
        released="""
              |  a |  b |  c | All
            x | 40 |  ~ |  ~ |  73
            y | 35 |  ~ |  ~ |  80
            z | 50 | 45 | 60 | 155
          All | 125 | 73 | 110 | 308
        """,
    )


def test_a_small_total_is_protected_too():
    """A row whose total is small is suppressed with its cells, and another row hides it
    from the column totals."""
    check(
        margins=True,
        table="""
              |  a |  b
            x | 40 | 30
            y |  3 |  2
            z | 35 | 45
        """,
        released="""
              |  a |  b | All
            x | 40 | 30 | 70
            y |  ~ |  ~ |  ~
            z |  ~ |  ~ |  ~
          All | 78 | 77 | 155
        """,
    )


def test_three_way_table_with_margins():
    """Rows with two variables (x/p is x and p): the totals of each row combination and of
    each column constrain the cells, and the suppression holds against them all."""
    check(
        margins=True,
        table="""
                |  a |  b
            x/p | 20 | 15
            x/q |  4 | 30
            y/p | 25 | 35
            y/q | 40 | 45
        """,
        released="""
                |  a |  b | All
            x/p |  ~ |  ~ | 35
            x/q |  ~ |  ~ | 34
            y/p | 25 | 35 | 60
            y/q | 40 | 45 | 85
            All/All | 89 | 125 | 214
        """,
    )


def test_a_mean_table_with_a_total_protects_the_sums_behind_its_means():
    """A mean is a sum over a count, and a count table of the same people gives the counts:
    with them, x's sum would be the total's sum minus y's and z's. The means are protected as
    their sums would be: y is hidden too."""
    check(
        statistic="mean",
        margins=True,
        table="""
              | -
            x | 5,6,7
            y | 5,5,5,5,5,5,5,5,5,5
            z | 6,6,6,6,6,6,6,6,6,6
        """,
        released="""
              | -
            x | ~
            y | ~
            z | 6
          All | 5.56522
        """,
    )
