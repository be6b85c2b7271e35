"""Validation of every row of a delivery against the catalog, in DuckDB.

Each file is loaded into ``raw_<dataset>``. The fast path reads it with Arrow, with the
catalog's column types; if any value does not parse (or the columns are in another order), or a
rule finds anything, DuckDB reads the file again as text, so that each badly typed value
becomes a finding with its row number rather than a crash. The rules of a dataset, all derived
from its catalog declaration, are then counted in one pass: a required value missing, a value
not of the column's type, a constraint broken, a multi-column check failed, a duplicated record
id, a UPN not in the census. Some are first checked on distinct values (:func:`_prechecks`):
check digits, codes, schools and diagnoses (each value once per delivery), references and
record ids; the pass over the rows then only looks for the values found, and skips a rule that
found none. Findings name the file, the rule, the column, how many rows, and the first row
numbers (1 = the first row after the header); never a value, which could be an identifier.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv

from tre.catalog import Column, Dataset, Type
from tre.catalog.constraints import Constraint
from tre.exceptions import InvalidInput

FIRST_ROWS = 5


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    column: str
    description: str
    sql_invalid: str


@dataclasses.dataclass(frozen=True)
class Problem:
    file: str
    rule: str
    column: str
    description: str
    count: int
    rows: tuple[int, ...]

    def __str__(self) -> str:
        where = f" in column {self.column}" if self.column else ""
        rows = ", ".join(str(r) for r in self.rows)
        more = ", …" if self.count > len(self.rows) else ""
        return (
            f"{self.file}: {self.count:,} row(s) break {self.rule}{where} "
            f"({self.description}): rows {rows}{more}"
        )


@dataclasses.dataclass(frozen=True)
class Loaded:
    rows: int
    typed: bool
    """Whether ``raw_<dataset>`` holds typed columns (fast path: an Arrow view without
    ``rowid``, or a table in no particular order) or text (careful path: ``rowid + 1`` is the
    row number in the file)."""
    missing: dict[str, int] | None = None
    """How many values each column lacks, where the load knew it without a pass over the
    rows (Arrow counts them as it reads)."""


def raw_table(dataset: Dataset) -> str:
    return f"raw_{dataset.name}"


def value(column: Column, typed: bool) -> str:
    """SQL for a column's typed value in ``raw_<dataset>`` (NULL where it does not parse)."""
    if typed or column.type is Type.STRING:
        return f'"{column.name}"'
    return f'TRY_CAST("{column.name}" AS {column.type.sql})'


@dataclasses.dataclass(frozen=True)
class Reference:
    """Every value of ``column`` must be in the one-column table ``keys``: the valid keys of
    the file ``target`` of the same delivery. ``checked``: constraints every key met there
    (so a value found among the keys meets them too)."""

    column: str
    keys: str
    target: str
    checked: tuple[Constraint, ...] = ()


def distinct_values(dataset: Dataset, column: str) -> str:
    """The table of a column's distinct non-missing values, made by :func:`validate` for the
    columns it checks per distinct value (column ``v``)."""
    return f"distinct_{dataset.name}_{column}"


def _failed_values(dataset: Dataset, column: Column, index: int) -> str:
    """The values of ``column`` breaking its ``index``-th constraint (a per-value one)."""
    return f"failed_{dataset.name}_{column.name}_{index}"


def _missing_values(dataset: Dataset, reference: Reference) -> str:
    return f"missing_{dataset.name}_{reference.column}"


def _duplicated_keys(dataset: Dataset) -> str:
    return f"duplicated_{dataset.name}"


def _passed_values(column: Column, constraint: Constraint) -> str:
    """Values that met a constraint, kept for the delivery's next files: one table per
    constraint (and type), whichever column and file it comes from."""
    rule = f"{column.type.sql} {constraint.sql_invalid('v')}"
    return f"passed_{hashlib.sha256(rule.encode()).hexdigest()[:16]}"


def _prechecks(
    con: duckdb.DuckDBPyConnection,
    dataset: Dataset,
    typed: bool,
    references: tuple[Reference, ...],
) -> dict[str, str]:
    """Checks made on distinct values before the pass over the rows: constraints marked
    ``per_distinct_value`` (each value checked once per delivery), references, duplicated
    record ids. Each leaves a table of the offending values; returns, for each such check
    that found some, its rule's SQL over the rows (the others break no row). A column that
    refers to another file's keys is looked up among them first: when every value is a key,
    the constraints the keys met (``Reference.checked``) are not checked again."""
    table = raw_table(dataset)
    found: dict[str, str] = {}

    def offending(name: str, sql: str, expr: str) -> None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        if con.execute(f"SELECT EXISTS (SELECT 1 FROM {name})").fetchone()[0]:
            found[name] = f"{expr} IN (SELECT v FROM {name})"

    referenced = {r.column: r for r in references}
    for c in dataset.columns:
        costly = [(i, k) for i, k in enumerate(c.constraints) if k.per_distinct_value]
        if not costly and c.name not in referenced:
            continue
        v, distinct = value(c, typed), distinct_values(dataset, c.name)
        if c.name in referenced:
            reference = referenced[c.name]
            missing = _missing_values(dataset, reference)
            offending(
                missing,
                f"SELECT DISTINCT {v} AS v FROM {table} "
                f"WHERE {v} NOT IN (SELECT * FROM {reference.keys})",
                v,
            )
            if missing not in found:
                # Every value is a key, and met what the keys met.
                costly = [(i, k) for i, k in costly if k not in reference.checked]
        if not costly:
            continue
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {distinct} AS "
            f"SELECT DISTINCT {v} AS v FROM {table} WHERE {v} IS NOT NULL"
        )
        for i, k in costly:
            passed = _passed_values(c, k)
            con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {passed} (v {c.type.sql})")
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE unchecked AS "
                f"SELECT v FROM {distinct} WHERE v NOT IN (SELECT v FROM {passed})"
            )
            failed = _failed_values(dataset, c, i)
            offending(failed, f"SELECT v FROM unchecked WHERE {k.sql_invalid('v')}", v)
            con.execute(
                f"INSERT INTO {passed} SELECT v FROM unchecked "
                f"WHERE v NOT IN (SELECT v FROM {failed})"
            )
    if dataset.record_key:
        key = f'"{dataset.record_key}"'
        offending(
            _duplicated_keys(dataset),
            f"SELECT {key} AS v FROM {table} GROUP BY {key} HAVING count(*) > 1",
            key,
        )
    return found


def rules(
    dataset: Dataset,
    typed: bool,
    found: dict[str, str],
    references: tuple[Reference, ...] = (),
    missing: dict[str, int] | None = None,
) -> list[Rule]:
    """Every rule of ``dataset`` as SQL over its rows; ``found`` is what :func:`_prechecks`
    found (a precheck that found nothing gives its rule as ``false``), ``missing`` what
    :class:`Loaded` knows of missing values (a required column known to lack none gives
    ``false``)."""
    out: list[Rule] = []
    for c in dataset.columns:
        q = f'"{c.name}"'
        v = value(c, typed)
        if c.required:
            lacks = missing is None or missing.get(c.name, 1) > 0
            out.append(
                Rule(
                    "required", c.name, "a value is required", f"{q} IS NULL" if lacks else "false"
                )
            )
        if c.type is not Type.STRING and not typed:
            out.append(
                Rule(
                    f"type_{c.type.value}",
                    c.name,
                    f"must be {'an' if c.type.value[0] in 'aeiou' else 'a'} {c.type.value}",
                    f"{q} IS NOT NULL AND {v} IS NULL",
                )
            )
        for i, k in enumerate(c.constraints):
            if k.per_distinct_value:
                invalid = found.get(_failed_values(dataset, c, i), "false")
            else:
                invalid = f"{v} IS NOT NULL AND ({k.sql_invalid(v)})"
            out.append(Rule(k.name, c.name, k.describe(), invalid))
    for check in dataset.row_checks:
        expr = check.sql_invalid
        for c in dataset.columns:
            expr = re.sub(rf"\b{c.name}\b", value(c, typed), expr)
        out.append(Rule(check.name, "", check.description, f"coalesce({expr}, false)"))
    if dataset.record_key:
        out.append(
            Rule(
                "unique_record_id",
                dataset.record_key,
                "record ids must be unique in the file",
                found.get(_duplicated_keys(dataset), "false"),
            )
        )
    for r in references:
        out.append(
            Rule(
                f"{r.column}_in_{r.target.removesuffix('.csv')}",
                r.column,
                f"must be the {r.column} of a valid row of {r.target} in the same delivery",
                found.get(_missing_values(dataset, r), "false"),
            )
        )
    return out


def load(
    con: duckdb.DuckDBPyConnection,
    dataset: Dataset,
    path: str,
    fast: bool = True,
    in_memory: bool = True,
) -> Loaded:
    """Load a CSV file into ``raw_<dataset>``.

    The fast path reads typed columns, with Arrow into memory (:func:`_read_typed`, a view),
    or with ``in_memory=False`` with DuckDB into a table it may spill to disk; it is taken when
    the header is in catalog order and every value parses. Otherwise (or with ``fast=False``)
    the careful path reads text into a table, in file order, so findings can name their rows."""
    header = _header(dataset, path)
    expected = [c.name for c in dataset.columns]
    missing = [c for c in expected if c not in header]
    unknown = [c for c in header if c not in expected]
    twice = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or twice:
        parts = [f"column(s) named twice: {', '.join(twice)}"] if twice else []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"column(s) not in the catalog: {', '.join(unknown)}")
        raise InvalidInput(
            f"{dataset.file_name} does not have the columns of dataset {dataset.name}: "
            f"{'; '.join(parts)}. See the catalog reference for its columns."
        )
    table = raw_table(dataset)
    # A view of the fast path's Arrow table may hold the name (loading again, carefully).
    con.unregister(table)
    if fast and header == expected and in_memory:
        typed = _read_typed(dataset, path)
        if typed is not None:
            con.register(table, typed)
            missing = {name: typed.column(name).null_count for name in typed.column_names}
            return Loaded(typed.num_rows, True, missing)
    elif fast and header == expected:
        types = ", ".join(f"'{c.name}': '{c.type.sql}'" for c in dataset.columns)
        con.execute("SET preserve_insertion_order = false")
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {_read_csv(types)}",
                [path],
            )
            return Loaded(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], True)
        except duckdb.Error:
            pass  # a value that does not parse: read as text, to report it precisely
        finally:
            con.execute("SET preserve_insertion_order = true")
    columns = ", ".join(f'"{c}"' for c in expected)
    text = ", ".join(f"'{c}': 'VARCHAR'" for c in header)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {columns} FROM {_read_csv(text)}",
            [path],
        )
    except duckdb.Error as e:
        raise InvalidInput(f"{dataset.file_name} is not well-formed CSV: {_safe(e)}") from None
    return Loaded(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], False)


#: How deliveries are written (see the custodians' guide): comma-separated, fields quoted with
#: double quotes, a double quote inside one doubled. Never guessed from the file, so a row
#: with too many values is an error on its line, not a reason to read the file another way.
DIALECT = "delim = ',', quote = '\"', escape = '\"'"


def _read_csv(columns: str) -> str:
    """DuckDB's reader of the file given as parameter, in the :data:`DIALECT`, with a header
    and the ``columns`` (a list of ``'name': 'TYPE'``), nothing guessed."""
    return (
        "read_csv(?, header = true, auto_detect = false, strict_mode = true, "
        f"{DIALECT}, columns = {{{columns}}})"
    )


def _header(dataset: Dataset, path: str) -> list[str]:
    """The column names in the first line of the file (UTF-8, a byte-order mark allowed)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidInput(
            f"{dataset.file_name} cannot be read as CSV: its header is not UTF-8 "
            f"comma-separated text ({type(e).__name__})."
        ) from None


#: CSV bytes of one delivery read into memory by Arrow; files beyond go to DuckDB, which can
#: spill to disk (Arrow cannot): a national census is several gigabytes.
ARROW_BYTES = 2 * 1024**3

#: Arrow types of the catalog's types. Arrow's parsers accept fewer spellings than DuckDB's
#: (no ``+5``, ``t`` or ``2010/01/05``; dates only as YYYY-MM-DD) and read the same value from
#: what both accept; what Arrow refuses is read on the careful path, with DuckDB's casts.
ARROW_TYPES = {
    Type.STRING: pa.string(),
    Type.INTEGER: pa.int32(),
    Type.DECIMAL: pa.float64(),
    Type.DATE: pa.date32(),
    Type.BOOLEAN: pa.bool_(),
}


def _read_typed(dataset: Dataset, path: str) -> pa.Table | None:
    """The file read by Arrow with the catalog's types, or None if any row does not parse.

    Arrow's reader is about twice as fast as DuckDB's on these files. As in DuckDB, an empty
    value (quoted or not) is missing and nothing else is; a row with too many or too few
    values fails, like any value that does not parse."""
    try:
        table = pa_csv.read_csv(
            path,
            # DuckDB skips an empty line, unless the file has one column (a missing value).
            parse_options=pa_csv.ParseOptions(ignore_empty_lines=len(dataset.columns) > 1),
            convert_options=pa_csv.ConvertOptions(
                column_types={c.name: ARROW_TYPES[c.type] for c in dataset.columns},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowException:
        return None
    return table if table.column_names == [c.name for c in dataset.columns] else None


def _safe(error: duckdb.Error) -> str:
    """DuckDB's message without the offending line, which may hold identifiers."""
    message = str(error)
    columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
    line = re.search(r"[Ll]ine:? (\d+)", message)
    if columns and line:
        return (
            f"line {line.group(1)} has {columns.group(2)} values where the header has "
            f"{columns.group(1)} columns"
        )
    text = re.sub(r'".*"|\'.*\'', "…", message.splitlines()[0])[:200]
    return f"{text} (near line {line.group(1)})" if line and line.group(0) not in text else text


def validate(
    con: duckdb.DuckDBPyConnection,
    dataset: Dataset,
    typed: bool,
    references: tuple[Reference, ...] = (),
    missing: dict[str, int] | None = None,
) -> list[Problem]:
    """Run every rule over ``raw_<dataset>``; leave the failing rows in ``bad_<dataset>``
    (``missing``: see :func:`rules`)."""
    table = raw_table(dataset)
    found = _prechecks(con, dataset, typed, references)
    counted = [
        r for r in rules(dataset, typed, found, references, missing) if r.sql_invalid != "false"
    ]
    counts = (
        con.execute(
            "SELECT "
            + ", ".join(f"count(*) FILTER (WHERE {r.sql_invalid})" for r in counted)
            + f" FROM {table}"
        ).fetchone()
        if counted
        else ()
    )
    failing = [(r, n) for r, n in zip(counted, counts, strict=True) if n]
    con.execute(f"CREATE OR REPLACE TEMP TABLE bad_{dataset.name} (row_number BIGINT)")
    if not failing:
        return []
    if typed:
        # Rows have no number on the fast path: :func:`check` loads the file again carefully.
        return [
            Problem(dataset.file_name, r.name, r.column, r.description, n, ()) for r, n in failing
        ]
    problems = []
    for rule, n in failing:
        first = con.execute(
            f"SELECT rowid + 1 FROM {table} WHERE {rule.sql_invalid} ORDER BY rowid "
            f"LIMIT {FIRST_ROWS}"
        ).fetchall()
        problems.append(
            Problem(
                dataset.file_name,
                rule.name,
                rule.column,
                rule.description,
                n,
                tuple(r[0] for r in first),
            )
        )
    condition = " OR ".join(f"({r.sql_invalid})" for r, _ in failing)
    con.execute(f"INSERT INTO bad_{dataset.name} SELECT rowid + 1 FROM {table} WHERE {condition}")
    return problems


def valid_rows(con: duckdb.DuckDBPyConnection, dataset: Dataset, alias: str = "") -> str:
    """A condition on ``raw_<dataset>`` (as ``alias``) selecting the rows that broke no rule.

    Only a file loaded on the careful path can have such rows (and a ``rowid``)."""
    bad = f"bad_{dataset.name}"
    if not con.execute(f"SELECT EXISTS (SELECT 1 FROM {bad})").fetchone()[0]:
        return "true"
    return f"{alias + '.' if alias else ''}rowid + 1 NOT IN (SELECT row_number FROM {bad})"


def check(
    con: duckdb.DuckDBPyConnection,
    dataset: Dataset,
    path: str,
    references: tuple[Reference, ...] = (),
    in_memory: bool = True,
) -> tuple[Loaded, list[Problem]]:
    """Load and validate a file (``in_memory``: see :func:`load`).

    A file with findings is loaded again on the careful path, so every finding names the
    right rows and the failing rows can be set aside."""
    loaded = load(con, dataset, path, in_memory=in_memory)
    problems = validate(con, dataset, loaded.typed, references, loaded.missing)
    if problems and loaded.typed:
        loaded = load(con, dataset, path, fast=False)
        problems = validate(con, dataset, loaded.typed, references)
    return loaded, problems
