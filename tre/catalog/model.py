"""The vocabulary of the catalog: custodians, datasets, columns, sensitivities, transforms.

A column is declared once with everything the TRE needs to know about it; validation of
deliveries, the release transform at ingest, the linkage, synthetic data and the reference docs
are all derived from that one declaration.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from tre.catalog.constraints import Codes, Constraint, Postcode


class Sensitivity(enum.StrEnum):
    DIRECT_IDENTIFIER = "direct_identifier"
    """Names a person on its own. Never leaves the landing store."""
    QUASI_IDENTIFIER = "quasi_identifier"
    """Identifies a person in combination with others. Generalised before release."""
    SENSITIVE = "sensitive"
    """Special-category data (health, special needs, deprivation)."""
    SAFE = "safe"
    """Neither identifying nor sensitive on its own."""


class Transform(enum.StrEnum):
    """What ingest does to a column before it reaches the curated store."""

    PSEUDONYMISE = "pseudonymise"
    """Used to link records, then replaced by person_key."""
    DROP = "drop"
    """Used for linkage only; not in curated data."""
    KEEP = "keep"
    YEAR_MONTH = "year_month"
    """A date becomes its year and month, as text `YYYY-MM`."""
    AGE_BAND = "age_band"
    """An age in years becomes a five-year band: `0-4`, `5-9`, …"""
    AREA_CODE = "area_code"
    """A postcode becomes its district (outward code), e.g. `LS6`."""


class Type(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    DATE = "date"
    BOOLEAN = "boolean"

    @property
    def sql(self) -> str:
        return {
            "string": "VARCHAR",
            "integer": "INTEGER",
            "decimal": "DOUBLE",
            "date": "DATE",
            "boolean": "BOOLEAN",
        }[self.value]


class Identity(enum.StrEnum):
    """The part a column plays in identifying a person, for linkage."""

    UPN = "upn"
    NHS_NUMBER = "nhs_number"
    FORENAME = "forename"
    SURNAME = "surname"
    DATE_OF_BIRTH = "date_of_birth"
    SEX = "sex"
    POSTCODE = "postcode"


RELEASED_TYPE = {
    Transform.YEAR_MONTH: Type.STRING,
    Transform.AGE_BAND: Type.STRING,
    Transform.AREA_CODE: Type.STRING,
}


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: Type
    description: str
    sensitivity: Sensitivity
    transform: Transform = Transform.KEEP
    constraints: tuple[Constraint, ...] = ()
    required: bool = True
    identity: Identity | None = None
    released_as: str | None = None
    """Name of the column in curated data, when the transform changes its meaning."""

    def __post_init__(self):
        if self.sensitivity is Sensitivity.DIRECT_IDENTIFIER and self.transform not in (
            Transform.DROP,
            Transform.PSEUDONYMISE,
        ):
            raise ValueError(f"direct identifier {self.name} must be dropped or pseudonymised")
        if self.transform is Transform.AREA_CODE and Postcode() not in self.constraints:
            # The transform takes the text before the space: the format makes that the district.
            raise ValueError(f"{self.name} becomes an area code, so it needs the Postcode() format")
        if self.type not in (Type.STRING, Type.INTEGER) and any(
            isinstance(k, Codes) for k in self.constraints
        ):
            # Codes compare the value as text: exact for text and integers only.
            raise ValueError(f"{self.name}: allowed codes apply to text or integer columns")

    @property
    def released(self) -> bool:
        return self.transform not in (Transform.DROP, Transform.PSEUDONYMISE)

    @property
    def released_name(self) -> str:
        return self.released_as or self.name

    @property
    def released_type(self) -> Type:
        return RELEASED_TYPE.get(self.transform, self.type)


@dataclasses.dataclass(frozen=True)
class RowCheck:
    """A rule over several columns of a row, written in SQL over the typed columns."""

    name: str
    description: str
    sql_invalid: str


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    custodian: str
    title: str
    description: str
    columns: tuple[Column, ...]
    record_key: str | None = None
    """A column unique per row (an episode or attendance id), if the dataset has one."""
    partition_by: str | None = None
    """The released column whose values split the curated Parquet into files."""
    row_checks: tuple[RowCheck, ...] = ()
    output_rules: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Output-checking rules this dataset's custodian requires (only stricter than default)."""

    def __post_init__(self):
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name} declares a column twice")
        released = [c.released_name for c in self.columns if c.released]
        if "person_key" in released or len(set(released)) != len(released):
            raise ValueError(f"dataset {self.name} releases a column name twice")

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name}")

    def identity_columns(self) -> Mapping[Identity, Column]:
        return {c.identity: c for c in self.columns if c.identity is not None}

    @property
    def released_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.released)

    def released_column(self, released_name: str) -> Column | None:
        return next((c for c in self.released_columns if c.released_name == released_name), None)

    def use_problem(self, released_name: str, as_filter: bool) -> str:
        """Why the released column may not be an output's filter (``as_filter``) or its row
        or column (``""``: it may): it singles out records or people, whatever the threshold
        (issue #21: a table by sex, score and date of birth printed two pupils' records as
        its labels). A record's id and an exact date are neither; the month of birth and a
        measurement are no row or column, but may be filtered on (by range)."""
        column = self.released_column(released_name)
        if column is None:
            return ""
        if column.name == self.record_key:
            instead = "no filter picks records" if as_filter else "count records instead"
            return f"{released_name} identifies one record of {self.name}: {instead}"
        if column.released_type is Type.DATE:
            return f"{released_name} is an exact date: use a month or year column"
        if as_filter:
            return ""
        if column.identity is Identity.DATE_OF_BIRTH:
            return (
                f"{released_name} (the month of birth) singles people out beside other "
                "variables: group by academic_year or nc_year, or age_band in hospital data"
            )
        if column.released_type is Type.DECIMAL:
            return (
                f"{released_name} is a measurement: use it as the value (mean, median, …) or "
                "filter on a range of it, not as a row or column"
            )
        return ""


@dataclasses.dataclass(frozen=True)
class Custodian:
    id: str
    name: str
    description: str
    datasets: tuple[Dataset, ...]
