"""SQL text written by the TRE: string literals for values and paths.

DuckDB takes parameters for values but not everywhere a path goes (``COPY … TO``, a
``read_parquet`` in a view, ``SET temp_directory``); those are written as literals, so a quote
in a folder name cannot end the string early. Files to read are listed one by one rather than
matched by a pattern, so ``[``, ``?`` or ``*`` in a folder name are not read as wildcards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def literal(value: Any) -> str:
    """``value`` as a SQL string literal (its text, quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def file_list(paths: Iterable[Any]) -> str:
    """A SQL list of file paths (for ``read_parquet``)."""
    return "[" + ", ".join(literal(p) for p in paths) + "]"
