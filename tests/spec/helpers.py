"""Spec tests: a small text table in, the rule, the released table out.

A table is written as text. The first line holds the column labels after a `|`; each other line
a row label, `|`, then one entry per column. In a count table an entry is the number of people
in the cell; in a magnitude table (sum, mean) it is each person's contribution, separated by
commas. Multi-level labels are written `x/y`; a table with a single column `-` has no column
variable. In the released table, `~` is a suppressed cell and a trailing `?` marks a cell for
review. Margins (`All`) are computed by the TRE when `margins=True` and appear in the
released table only.
"""

from __future__ import annotations

import textwrap

import duckdb

from tre.outputs import results, tables
from tre.outputs import rules as R
from tre.sql import Connection


def parse(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    lines = [line for line in textwrap.dedent(text).strip().splitlines() if line.strip()]
    header = [c.strip() for c in lines[0].split("|")[1:]]
    rows = []
    for line in lines[1:]:
        label, *entries = (part.strip() for part in line.split("|"))
        rows.append((label, entries))
    return header, rows


def records(table: str, statistic: str) -> list[tuple]:
    """One record per person: row labels, column labels, person id, value."""
    header, rows = parse(table)
    out, person = [], 0
    for row_label, entries in rows:
        for col_label, entry in zip(header, entries, strict=True):
            values = (
                [1.0] * int(entry)
                if statistic == "count"
                else [float(v) for v in entry.split(",") if v.strip()]
            )
            for value in values:
                person += 1
                out.append((row_label.split("/"), col_label.split("/"), person, value))
    return out


def as_text(result: results.Result) -> str:
    cols = list(dict.fromkeys(c.col for c in result.cells))
    rows = list(dict.fromkeys(c.row for c in result.cells))
    cells = {(c.row, c.col): c for c in result.cells}

    def show(cell):
        if cell.value is None:
            return "~"
        text = f"{cell.value:g}"
        return text + ("?" if cell.status == R.REVIEW else "")

    header = ["|", *("/".join(c) or "-" for c in cols)]
    lines = [" ".join(header)]
    for r in rows:
        lines.append(" ".join(["/".join(r), "|", *(show(cells[(r, c)]) for c in cols)]))
    return "\n".join(lines)


def normalise(text: str) -> str:
    header, rows = parse(text)
    lines = [" ".join(["|", *header])]
    lines += [" ".join([label, "|", *entries]) for label, entries in rows]
    return "\n".join(lines)


def check(
    *,
    table: str,
    released: str,
    statistic: str = "count",
    margins: bool = False,
    rules: R.RuleSet | None = None,
) -> results.Result:
    header, rows = parse(table)
    row_depth = len(rows[0][0].split("/"))
    col_depth = 0 if header == ["-"] else len(header[0].split("/"))
    row_names = [f"r{i}" for i in range(row_depth)]
    col_names = [f"c{i}" for i in range(col_depth)]
    con = duckdb.connect()
    names = [*row_names, *col_names, "person", "v"]
    con.execute(
        "CREATE TABLE data ("
        + ", ".join(f"{n} VARCHAR" for n in names[:-2])
        + (", " if names[:-2] else "")
        + "person INTEGER, v DOUBLE)"
    )
    for row_labels, col_labels, person, value in records(table, statistic):
        con.execute(
            f"INSERT INTO data VALUES ({', '.join('?' for _ in names)})",
            [*row_labels, *(col_labels if col_depth else []), person, value],
        )
    computed = tables.compute(
        Connection(con),
        "data",
        row_names,
        col_names,
        statistic=statistic,
        value=None if statistic == "count" else "v",
        unit="person",
        margins=margins,
    )
    if statistic in ("count", "sum"):
        computed = tables.with_empty_cells(computed)
    result = results.check_table(computed, rules or R.RuleSet())
    got = as_text(result)
    assert normalise(got) == normalise(released), f"\n{got}"
    return result
