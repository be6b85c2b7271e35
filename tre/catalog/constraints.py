"""Constraints a column's values must meet, each with a Python and a SQL form.

The SQL form (:meth:`Constraint.sql_invalid`) is what ingest runs over a whole delivery in
DuckDB; the Python form (:meth:`Constraint.valid`) is what the synthetic data generator and the
tests use. Tests check that both forms agree. Constraints see only non-missing values that
already have the column's type.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping

from tre.sql import literal

UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # 23 letters: no I, O, S


def nhs_check_digit(first_nine: str) -> int | None:
    """The mod-11 check digit of an NHS number, or None when no digit is possible (10)."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(first_nine))
    check = (11 - total % 11) % 11
    return None if check == 10 else check


def upn_check_letter(last_twelve: str) -> str:
    """The check letter of a UPN: characters 2–13 weighted by their position, mod 23."""
    total = sum(int(d) * (i + 2) for i, d in enumerate(last_twelve))
    return UPN_LETTERS[total % 23]


def _per_distinct(default: bool):
    """The ``per_distinct_value`` field: how a constraint is checked, not what it requires, so
    left out of its repr (hence of the catalog version)."""
    return dataclasses.field(default=default, repr=False, compare=False)


class Constraint:
    name: str = ""
    #: Checked once per distinct value rather than per row: costly checks on repeated values,
    #: and checks of columns with few distinct values (codes, schools, diagnoses).
    per_distinct_value: bool = False

    def describe(self) -> str:
        raise NotImplementedError

    def valid(self, value) -> bool:
        raise NotImplementedError

    def sql_invalid(self, expr: str) -> str:
        """A SQL boolean, true when the (typed, non-null) value ``expr`` breaks the rule."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class NHSNumber(Constraint):
    name: str = "nhs_number_check_digit"
    per_distinct_value: bool = _per_distinct(True)

    def describe(self) -> str:
        return "10 digits whose last is the mod-11 check digit of the first nine"

    def valid(self, value: str) -> bool:
        return (
            len(value) == 10
            and value.isascii()
            and value.isdigit()
            and nhs_check_digit(value[:9]) == int(value[9])
        )

    def sql_invalid(self, expr: str) -> str:
        total = " + ".join(
            f"CAST(substr({expr}, {i + 1}, 1) AS INTEGER) * {10 - i}" for i in range(9)
        )
        return (
            f"CASE WHEN regexp_full_match({expr}, '[0-9]{{10}}') "
            f"THEN (11 - ({total}) % 11) % 11 <> CAST(substr({expr}, 10, 1) AS INTEGER) "
            "ELSE true END"
        )


@dataclasses.dataclass(frozen=True)
class UPN(Constraint):
    name: str = "upn_check_letter"
    per_distinct_value: bool = _per_distinct(True)

    def describe(self) -> str:
        return (
            "a check letter followed by 12 digits; the letter is the sum of each digit times "
            "its position (2–13), mod 23, as a letter of ABCDEFGHJKLMNPQRTUVWXYZ"
        )

    def valid(self, value: str) -> bool:
        return (
            len(value) == 13
            and value[1:].isascii()
            and value[1:].isdigit()
            and upn_check_letter(value[1:]) == value[0]
        )

    def sql_invalid(self, expr: str) -> str:
        total = " + ".join(
            f"CAST(substr({expr}, {i + 2}, 1) AS INTEGER) * {i + 2}" for i in range(12)
        )
        return (
            f"CASE WHEN regexp_full_match({expr}, '[A-Z][0-9]{{12}}') "
            f"THEN substr('{UPN_LETTERS}', (({total}) % 23) + 1, 1) <> substr({expr}, 1, 1) "
            "ELSE true END"
        )


@dataclasses.dataclass(frozen=True)
class Pattern(Constraint):
    regex: str
    what: str
    name: str = "format"
    per_distinct_value: bool = _per_distinct(False)

    def describe(self) -> str:
        return self.what

    def valid(self, value: str) -> bool:
        return re.fullmatch(self.regex, value) is not None

    def sql_invalid(self, expr: str) -> str:
        return f"NOT regexp_full_match({expr}, {literal(self.regex)})"


def ICD10(name: str = "icd10_format") -> Pattern:
    return Pattern(
        r"[A-Z][0-9]{2}[0-9X]?",
        "an ICD-10 code as HES records it: a letter, two digits, and an optional fourth "
        "character (a digit, or X as filler), without a dot",
        name,
        per_distinct_value=True,
    )


def Postcode() -> Pattern:
    return Pattern(
        r"[A-Z]{1,2}[0-9][0-9A-Z]? [0-9][A-Z]{2}",
        "a UK postcode in capitals with one space, e.g. LS6 2AB",
        "postcode_format",
    )


@dataclasses.dataclass(frozen=True)
class Codes(Constraint):
    codes: Mapping[str, str]
    name: str = "allowed_codes"
    per_distinct_value: bool = _per_distinct(True)

    def describe(self) -> str:
        return "one of: " + "; ".join(f"`{k}` {v}" for k, v in self.codes.items())

    def valid(self, value) -> bool:
        return str(value) in self.codes

    def sql_invalid(self, expr: str) -> str:
        values = ", ".join(literal(k) for k in self.codes)
        return f"CAST({expr} AS VARCHAR) NOT IN ({values})"


@dataclasses.dataclass(frozen=True)
class Range(Constraint):
    low: float | int | dt.date
    high: float | int | dt.date
    name: str = "range"

    def describe(self) -> str:
        return f"between {self.low} and {self.high}"

    def valid(self, value) -> bool:
        return self.low <= value <= self.high

    def sql_invalid(self, expr: str) -> str:
        if isinstance(self.low, dt.date):
            return f"{expr} NOT BETWEEN DATE '{self.low}' AND DATE '{self.high}'"
        return f"{expr} NOT BETWEEN {self.low} AND {self.high}"


def DateRange(low: str, high: str) -> Range:
    return Range(dt.date.fromisoformat(low), dt.date.fromisoformat(high), "date_range")
