"""Linked tables: the same people counted twice (a table without margins, then with them)
must not give away, together, what each hides alone. The attacker's linear program is
written here, independently of tre's."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
from scipy.optimize import linprog

from tre.catalog import Type
from tre.outputs import engine, linked, results, specs, tables
from tre.outputs import rules as R
from tre.sql import Connection

#: ethnicity × admitted: ASIA/True holds 3 people.
GROUPS = {
    ("ASIA", "False"): 60,
    ("ASIA", "True"): 3,
    ("WHIT", "False"): 200,
    ("WHIT", "True"): 40,
    ("BLAK", "False"): 30,
    ("BLAK", "True"): 12,
}
FIELDS = {"kind": "table", "dataset": "pupils", "rows": ["ethnicity"], "cols": ["admitted"]}
COLUMNS = {"ethnicity": Type.STRING, "admitted": Type.STRING, "v": Type.DECIMAL}


def people() -> Connection:
    con = duckdb.connect()
    rows = [
        (f"p{len(r)}", e, a)
        for r in [[]]
        for (e, a), n in GROUPS.items()
        for _ in range(n)
        if not r.append(0)
    ]
    con.execute("CREATE TABLE people (pseudo_id VARCHAR, ethnicity VARCHAR, admitted VARCHAR)")
    con.executemany("INSERT INTO people VALUES (?, ?, ?)", rows)
    return Connection(con, reads_only=False)


def checked(con, spec: specs.OutputSpec, releases=()) -> tuple[tables.Table, results.Result]:
    """The table and its result, linked with ``releases`` as tre links them."""
    table = tables.compute(
        con,
        "people",
        spec.rows,
        spec.cols,
        statistic=spec.statistic,
        value=spec.value,
        unit="pseudo_id",
        margins=spec.margins,
    )
    if spec.statistic != "mean":
        table = tables.with_empty_cells(table)
    rule_set = R.RuleSet()
    result = results.check_table(table, rule_set)
    where = specs.where(spec.filters, COLUMNS, con)
    linked_with = engine._linked_releases(con, "people", COLUMNS, spec, releases)
    hide_also = engine._linked(
        con, "people", COLUMNS, where, spec, table, result, linked_with, rule_set
    )
    return table, results.check_table(table, rule_set, hide_also=hide_also)


def check(con, spec: specs.OutputSpec, releases=()) -> results.Result:
    return checked(con, spec, releases)[1]


def narrowest(*published: results.Result) -> float:
    finest = list(GROUPS)

    def row(cell) -> np.ndarray:
        labels = (*cell.row, *cell.col)
        return np.array(
            [all(a in ("All", x) for a, x in zip(labels, f, strict=True)) for f in finest],
            dtype=float,
        )

    known = [(row(c), c.value) for r in published for c in r.cells if c.value is not None]
    a_eq, b_eq = np.array([k for k, _ in known]), np.array([v for _, v in known])
    widths = []
    for r in published:
        for c in r.cells:
            if c.suppression == "primary":
                low = linprog(row(c), A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
                high = linprog(-row(c), A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
                widths.append(-high.fun - low.fun if high.status == 0 else np.inf)
    return min(widths)


def test_a_table_with_margins_after_the_same_without_them_hides_more():
    con = people()
    first = check(con, specs.parse({**FIELDS, "name": "a"}))
    assert narrowest(first) >= 10
    spec = specs.parse({**FIELDS, "name": "b", "margins": True})
    alone = check(con, spec)
    assert narrowest(alone) >= 10
    # Checked alone, the second relies on cells the first published: together they disclose.
    assert narrowest(first, alone) < 10
    release = linked.Release(
        "#1 'a'", specs.parse({**FIELDS, "name": "a"}), [c.as_dict() for c in first.cells]
    )
    assert linked.linked(spec, [release]) == [release]
    second = check(con, spec, [release])
    assert narrowest(first, second) >= 10
    assert any("earlier release #1 'a'" in r for c in second.cells for r in c.reasons)


def test_only_tables_over_the_same_people_and_statistic_are_linked():
    release = linked.Release("#1", specs.parse({**FIELDS, "name": "a"}), [])
    other_people = specs.parse(
        {**FIELDS, "name": "b", "filters": [{"column": "admitted", "op": "eq", "value": "True"}]}
    )
    other_statistic = specs.parse({**FIELDS, "name": "c", "statistic": "sum", "value": "x"})
    assert linked.linked(other_people, [release]) == []
    assert linked.linked(other_statistic, [release]) == []


def test_a_filter_that_excludes_no_one_still_links_the_tables():
    """The same table with margins, over the same people written as another population (a
    filter keeping everyone): the data, not the wording, says they are linked."""
    from tre.outputs import differencing

    con = people()
    first = check(con, specs.parse({**FIELDS, "name": "a"}))
    release = linked.Release(
        "#1 'a'", specs.parse({**FIELDS, "name": "a"}), [c.as_dict() for c in first.cells]
    )
    everyone = [{"column": "ethnicity", "op": "in", "value": ["ASIA", "WHIT", "BLAK"]}]
    spec = specs.parse({**FIELDS, "name": "b", "margins": True, "filters": everyone})
    assert spec.population() != release.spec.population()
    assert narrowest(first, check(con, spec)) < 10  # checked alone: together they disclose

    def same(old):
        return differencing.same_rows(con, "people", COLUMNS, spec, old)

    assert linked.linked(spec, [release]) == []  # by the wording alone
    assert linked.linked(spec, [release], same) == [release]
    assert narrowest(first, check(con, spec, [release])) >= 10
    # A filter that leaves someone out describes other people: differencing's concern.
    fewer = specs.parse(
        {**FIELDS, "name": "c", "filters": [{"column": "ethnicity", "op": "ne", "value": "BLAK"}]}
    )
    assert not differencing.same_rows(con, "people", COLUMNS, fewer, release.spec)


def test_mean_tables_are_linked_through_the_sums_behind_their_means():
    """The same people's means, without margins then with them: with every count known (a
    count table gives them) a mean is a sum, and the two are linked as sum tables would be.
    Every value is 1, so each sum is the count of the table above."""
    con = people()
    con.execute("ALTER TABLE people ADD COLUMN v DOUBLE DEFAULT 1.0")
    fields = {**FIELDS, "statistic": "mean", "value": "v"}

    def as_sums(table, result):
        """The result as the attacker sees it with every count: published means as sums."""
        units = {c.key: c.stats.units for c in table.cells}
        cells = [
            dataclasses.replace(
                c, value=None if c.value is None else c.value * units[(c.row, c.col)]
            )
            for c in result.cells
        ]
        return dataclasses.replace(result, cells=tuple(cells))

    first_spec = specs.parse({**fields, "name": "a"})
    first_table, first = checked(con, first_spec)
    spec = specs.parse({**fields, "name": "b", "margins": True})
    alone_table, alone = checked(con, spec)
    assert narrowest(as_sums(alone_table, alone)) >= 10
    # Checked alone, the second relies on means the first published: together they disclose.
    assert narrowest(as_sums(first_table, first), as_sums(alone_table, alone)) < 10
    release = linked.Release("#1 'a'", first_spec, [c.as_dict() for c in first.cells])
    assert linked.linked(spec, [release]) == [release]
    second_table, second = checked(con, spec, [release])
    assert narrowest(as_sums(first_table, first), as_sums(second_table, second)) >= 10
    # A count table of the same people is another kind of table: not linked with means.
    counts = specs.parse({**FIELDS, "name": "c"})
    assert linked.linked(counts, [release]) == []
