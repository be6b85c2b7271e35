"""SQL text written by the TRE: string literals for values and paths.

DuckDB takes parameters for values but not everywhere a path goes (``COPY … TO``, a
``read_parquet`` in a view, ``SET temp_directory``); those are written as literals, so a quote
in a folder name cannot end the string early.
"""

from __future__ import annotations

from typing import Any


def literal(value: Any) -> str:
    """``value`` as a SQL string literal (its text, quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"
