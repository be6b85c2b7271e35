"""Conditions: the constrained filters researchers write instead of SQL.

A condition names a column, an operator from :data:`OPERATORS` and a value; the TRE renders
it as SQL: the column through the one quoting function of :mod:`tre.sql`, each value converted
to the column's type and bound as a parameter, so no text a researcher writes becomes SQL.
Cohorts of projects and filters of outputs are lists of conditions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable
from typing import Any

from tre.catalog import Type
from tre.exceptions import InvalidInput
from tre.sql import identifier

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

    def sql(self, column_type: Type, bind: Callable[[Any], str]) -> str:
        """SQL for this condition: the column through the one quoting function, each value
        converted to the column's type and bound as a parameter (``bind`` gives its
        placeholder), never spliced into the statement."""
        name = identifier(self.column)
        if self.op in ("is_null", "not_null"):
            return f"{name} {OPERATORS[self.op]}"
        if self.op in ("in", "not_in"):
            values = self.value if isinstance(self.value, list | tuple) else None
            if not values:
                raise InvalidInput(f"{self.describe()}: '{self.op}' needs a list of values.")
            placeholders = ", ".join(bind(self._typed(v, column_type)) for v in values)
            return f"{name} {OPERATORS[self.op]} ({placeholders})"
        if self.op == "between":
            if not isinstance(self.value, list | tuple) or len(self.value) != 2:
                raise InvalidInput(f"{self.describe()}: 'between' needs [low, high].")
            low, high = (bind(self._typed(v, column_type)) for v in self.value)
            return f"{name} BETWEEN {low} AND {high}"
        return f"{name} {OPERATORS[self.op]} {bind(self._typed(self.value, column_type))}"

    def _typed(self, value: Any, column_type: Type) -> Any:
        try:
            return typed_value(value, column_type)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(
                f"{self.describe()}: {str(value)[:40]!r} does not fit column {self.column} "
                f"({column_type.value}): give a value of that type."
            ) from None

    def describe(self) -> str:
        if self.op in ("is_null", "not_null"):
            return f"{self.column} {OPERATORS[self.op].lower()}"
        return f"{self.column} {self.op} {self.value!r}"


def typed_value(value: Any, column_type: Type) -> Any:
    """``value`` as the Python value of a column of ``column_type`` (None stays None)."""
    if value is None:
        return None
    if column_type is Type.BOOLEAN:
        return bool(value)
    if column_type is Type.INTEGER:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if column_type is Type.DECIMAL:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    if column_type is Type.DATE:
        return dt.date.fromisoformat(str(value))
    return str(value)
