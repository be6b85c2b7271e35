"""The disclosure-risk report custodians read before deciding.

For the extract as requested (the cohort applied), per dataset: rows and persons; over the
requested quasi-identifiers, the equivalence classes (persons sharing the same values): the
smallest class (the data is k-anonymous for that k), the share of records in classes of fewer
than 5 and 10 persons, and for each quasi-identifier how much that share would fall if the
column were left out (the columns that drive the risk).
"""

from __future__ import annotations

import dataclasses

import duckdb

from tre import catalog
from tre.catalog import Sensitivity
from tre.db import Database
from tre.home import Home
from tre.projects.extracts import cohort_sql, sources_of
from tre.projects.spec import ProjectSpec
from tre.sql import Connection, identifier

SMALL = (5, 10)


@dataclasses.dataclass
class DatasetRisk:
    dataset: str
    rows: int
    persons: int
    quasi_identifiers: list[str]
    k: int
    share_below_5: float
    share_below_10: float
    drivers: list[tuple[str, float]]

    def lines(self) -> list[str]:
        out = [f"{self.dataset}: {self.rows:,} rows, {self.persons:,} persons"]
        if not self.quasi_identifiers:
            out.append("  no quasi-identifier requested")
            return out
        out.append(
            f"  quasi-identifiers: {', '.join(self.quasi_identifiers)}; smallest class k = "
            f"{self.k}; records in classes < 5: {self.share_below_5:.1%}, < 10: "
            f"{self.share_below_10:.1%}"
        )
        for column, drop in self.drivers:
            out.append(f"  without {column}: records in classes < 10 fall by {drop:.1%}")
        return out


def _classes(con, source: str, columns: list[str]) -> tuple[int, float, float]:
    if not columns:
        persons = con.execute(f"SELECT count(DISTINCT person_key) FROM {source}").fetchone()[0]
        return persons, 0.0, 0.0
    cols = ", ".join(identifier(c) for c in columns)
    k, below5, below10 = con.execute(f"""
        WITH classes AS (
            SELECT {cols}, count(*) AS records, count(DISTINCT person_key) AS persons
            FROM {source} GROUP BY ALL)
        SELECT min(persons),
               coalesce(sum(records) FILTER (WHERE persons < 5) / sum(records), 0),
               coalesce(sum(records) FILTER (WHERE persons < 10) / sum(records), 0)
        FROM classes""").fetchone()
    return k or 0, float(below5), float(below10)


def report(home: Home, db: Database, spec: ProjectSpec) -> list[DatasetRisk]:
    sources, _ = sources_of(home, db, spec)
    con = Connection(duckdb.connect(), reads_only=False)
    try:
        cohort = cohort_sql(spec, sources, con)
        if cohort:
            con.execute(f"CREATE TEMP TABLE cohort AS {cohort}")
        out = []
        for name, columns in spec.datasets.items():
            dataset = catalog.dataset(name)
            qi = [
                c.released_name
                for c in dataset.released_columns
                if c.released_name in columns and c.sensitivity is Sensitivity.QUASI_IDENTIFIER
            ]
            where = "WHERE person_key IN (SELECT person_key FROM cohort)" if cohort else ""
            con.execute(
                "CREATE OR REPLACE TEMP TABLE extract AS SELECT person_key"
                + "".join(f", {identifier(c)}" for c in qi)
                + f" FROM {sources[name]} {where}"
            )
            rows, persons = con.execute(
                "SELECT count(*), count(DISTINCT person_key) FROM extract"
            ).fetchone()
            k, below5, below10 = _classes(con, "extract", qi)
            drivers = []
            if len(qi) > 1:
                for column in qi:
                    _, _, without = _classes(con, "extract", [c for c in qi if c != column])
                    drivers.append((column, below10 - without))
                drivers.sort(key=lambda d: -d[1])
            out.append(DatasetRisk(name, rows, persons, qi, k, below5, below10, drivers))
        return out
    finally:
        con.close()
