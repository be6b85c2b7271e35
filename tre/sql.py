"""SQL written by the TRE: one grammar for names, one quoting function, values bound.

Everything a researcher, a custodian or a delivery sends is data, never SQL:

- a **name** (a dataset, a column, a flag, a label, an alias) must match :data:`IDENTIFIER`
  and is written by :func:`identifier`, the one function that quotes names;
- a **value** (a filter's, a cohort's, a cell label looked up again) is a bound parameter
  (:meth:`Connection.bind`), never text in the statement;
- a :class:`Connection` runs **one statement per call**, and by default only one that reads.

Paths the TRE itself writes into SQL (``read_parquet`` of an extract, ``COPY … TO`` a store,
``SET temp_directory``) are literals (:func:`literal`): DuckDB takes no parameter there. Files
to read are listed one by one rather than matched by a pattern, so ``[``, ``?`` or ``*`` in a
folder name are not read as wildcards.

:func:`sandboxed_duckdb` opens the connection that researchers' queries run on, in a workspace
and in the output worker: it reads one folder and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tre.exceptions import InvalidInput

if TYPE_CHECKING:
    import duckdb

#: The names the TRE accepts wherever a name reaches SQL: ASCII letters, digits and ``_``,
#: starting with a letter, at most 63 characters (PostgreSQL's limit, and enough). Names that
#: start with ``_`` are the TRE's own (the output engine's aliases): no one else's can equal
#: them.
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
IDENTIFIER_HELP = "letters a-z, digits and _, starting with a letter, at most 63 characters"
#: The prefix of the names the TRE gives in SQL it writes (never a name a person gives).
INTERNAL = "_tre_"
_PARAMETER = re.compile(r"\$(v\d+)\b")


def is_identifier(name: object) -> bool:
    return isinstance(name, str) and IDENTIFIER.fullmatch(name) is not None


def identifier(name: object) -> str:
    """``name`` quoted as a SQL identifier, once it has matched :data:`IDENTIFIER`."""
    if not is_identifier(name):
        raise InvalidInput(f"{str(name)[:80]!r} is not a valid name: use {IDENTIFIER_HELP}.")
    return f'"{name}"'


def literal(value: Any) -> str:
    """``value`` as a SQL string literal (its text, quotes doubled): for paths the TRE writes,
    never for what a user sent."""
    return "'" + str(value).replace("'", "''") + "'"


def file_list(paths: Iterable[Any]) -> str:
    """A SQL list of file paths (for ``read_parquet``)."""
    return "[" + ", ".join(literal(p) for p in paths) + "]"


class Connection:
    """A DuckDB connection that runs one statement per call (by default, one that reads), with
    the values given to :meth:`bind` as parameters."""

    def __init__(self, con: duckdb.DuckDBPyConnection, reads_only: bool = True) -> None:
        self.duckdb = con
        self.reads_only = reads_only
        self._values: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        """A parameter standing for ``value`` in the statements of this connection."""
        name = f"v{len(self._values)}"
        self._values[name] = value
        return f"${name}"

    def execute(self, statement: str) -> duckdb.DuckDBPyConnection:
        import duckdb

        parsed = self.duckdb.extract_statements(statement)
        if len(parsed) != 1:
            raise InvalidInput("The TRE runs one statement at a time; this holds several.")
        if self.reads_only and parsed[0].type is not duckdb.StatementType.SELECT:
            raise InvalidInput("This connection only reads: the statement is not a query.")
        used = {name: self._values[name] for name in _PARAMETER.findall(statement)}
        return self.duckdb.execute(statement, used) if used else self.duckdb.execute(statement)

    def close(self) -> None:
        self.duckdb.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def bound_list(con: Connection, values: Sequence[Any]) -> str:
    """``($v1, $v2, …)`` for an ``IN`` list."""
    return "(" + ", ".join(con.bind(v) for v in values) + ")"


def sandboxed_duckdb(
    readable: Path,
    temp: Path,
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    spill_limit: str | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that reads files under ``readable`` (and spills to ``temp``) and
    nothing else: no extension is installed or loaded, no other file is read or written, no
    database is attached, no URL is fetched, and none of that can be undone with ``SET`` or
    ``RESET``. This constrains SQL only: the operating system decides what the process may
    open at all."""
    import duckdb

    config: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        **(extra_config or {}),
    }
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    # In this order: the temporary folder and the one readable folder first, then external
    # access off, then the configuration locked (allowed_directories cannot go in the config
    # of connect() in DuckDB 2.0).
    con.execute(f"SET temp_directory = {literal(str(temp))}")
    if spill_limit:
        con.execute(f"SET max_temp_directory_size = {literal(spill_limit)}")
    con.execute(f"SET allowed_directories = [{literal(str(readable))}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con
