"""Conditions: the constrained filters researchers write instead of SQL.

A condition names a column, an operator from :data:`OPERATORS` and a value; the TRE renders
it as SQL with typed literals (quotes doubled, numbers as numbers, dates as DATE literals), so
no text a researcher writes ever becomes SQL. Cohorts of projects and filters of outputs are
lists of conditions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from tre.catalog import Type
from tre.sql import literal

OPERATORS = {
    "eq": "=",
    "ne": "<>",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "in": "IN",
    "not_in": "NOT IN",
    "between": "BETWEEN",
    "is_null": "IS NULL",
    "not_null": "IS NOT NULL",
}


@dataclasses.dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any = None

    def sql(self, column_type: Type) -> str:
        """SQL for this condition; values are rendered as typed literals, never spliced."""
        name = f'"{self.column}"'
        if self.op in ("is_null", "not_null"):
            return f"{name} {OPERATORS[self.op]}"
        if self.op in ("in", "not_in"):
            values = ", ".join(_literal(v, column_type) for v in self.value)
            return f"{name} {OPERATORS[self.op]} ({values})"
        if self.op == "between":
            low, high = (_literal(v, column_type) for v in self.value)
            return f"{name} BETWEEN {low} AND {high}"
        return f"{name} {OPERATORS[self.op]} {_literal(self.value, column_type)}"

    def describe(self) -> str:
        if self.op in ("is_null", "not_null"):
            return f"{self.column} {OPERATORS[self.op].lower()}"
        return f"{self.column} {self.op} {self.value!r}"


def _literal(value: Any, column_type: Type) -> str:
    if value is None:
        return "NULL"
    if column_type is Type.BOOLEAN:
        return "true" if value else "false"
    if column_type in (Type.INTEGER, Type.DECIMAL):
        return repr(float(value)) if column_type is Type.DECIMAL else str(int(value))
    if column_type is Type.DATE:
        return f"DATE '{dt.date.fromisoformat(str(value)).isoformat()}'"
    return literal(value)
