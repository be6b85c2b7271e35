"""Datasets of the NHS (custodian `nhs`), in the style of Hospital Episode Statistics and
the civil registration of deaths. Patients are identified by their NHS number, which some
records lack."""

from tre.catalog import codes
from tre.catalog.constraints import ICD10, Codes, DateRange, NHSNumber, Pattern, Postcode, Range
from tre.catalog.model import (
    Column,
    Custodian,
    Dataset,
    Identity,
    RowCheck,
    Sensitivity,
    Transform,
    Type,
)

D, Q, S, OK = (
    Sensitivity.DIRECT_IDENTIFIER,
    Sensitivity.QUASI_IDENTIFIER,
    Sensitivity.SENSITIVE,
    Sensitivity.SAFE,
)


def patient_identifiers() -> tuple[Column, ...]:
    return (
        Column(
            "nhs_number",
            Type.STRING,
            "NHS number (missing on some records)",
            D,
            Transform.PSEUDONYMISE,
            (NHSNumber(),),
            required=False,
            identity=Identity.NHS_NUMBER,
        ),
        Column(
            "forename",
            Type.STRING,
            "Forename as recorded by the hospital",
            D,
            Transform.DROP,
            identity=Identity.FORENAME,
        ),
        Column(
            "surname",
            Type.STRING,
            "Surname as recorded by the hospital",
            D,
            Transform.DROP,
            identity=Identity.SURNAME,
        ),
        Column(
            "date_of_birth",
            Type.DATE,
            "Date of birth",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("1990-01-01", "2024-12-31"),),
            identity=Identity.DATE_OF_BIRTH,
            released_as="birth_month",
        ),
        Column(
            "sex",
            Type.STRING,
            "Sex (1 male, 2 female, 9 not specified)",
            Q,
            constraints=(Codes(codes.HES_SEX),),
            identity=Identity.SEX,
        ),
        Column(
            "postcode",
            Type.STRING,
            "Postcode of usual address",
            Q,
            Transform.AREA_CODE,
            (Postcode(),),
            identity=Identity.POSTCODE,
            released_as="postcode_district",
        ),
    )


def financial_year(what: str) -> Column:
    return Column(
        "financial_year",
        Type.INTEGER,
        f"Financial year of the {what} (2019 means April 2019 to March 2020)",
        OK,
        constraints=(Range(2005, 2030),),
    )


def record_id(name: str, what: str) -> Column:
    return Column(
        name,
        Type.STRING,
        f"Identifier of the {what}, unique in the dataset",
        OK,
        constraints=(Pattern(r"[A-Z]{1,3}[0-9]{6,12}", "letters then digits", "record_id_format"),),
    )


HES_APC = Dataset(
    "hes_apc",
    "nhs",
    "Hospital Episode Statistics: admitted patient care",
    "One row per episode of care of a patient admitted to an NHS hospital in England.",
    (
        record_id("episode_id", "episode"),
        *patient_identifiers(),
        Column(
            "admission_date",
            Type.DATE,
            "Date of admission",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("2005-01-01", "2031-12-31"),),
            released_as="admission_month",
        ),
        Column(
            "discharge_date",
            Type.DATE,
            "Date of discharge",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("2005-01-01", "2031-12-31"),),
            released_as="discharge_month",
        ),
        Column(
            "length_of_stay",
            Type.INTEGER,
            "Days from admission to discharge",
            OK,
            constraints=(Range(0, 3650),),
        ),
        Column(
            "age_at_admission",
            Type.INTEGER,
            "Age in whole years on admission",
            Q,
            Transform.AGE_BAND,
            (Range(0, 120),),
            released_as="age_band",
        ),
        Column(
            "admission_method",
            Type.STRING,
            "How the patient was admitted",
            OK,
            constraints=(Codes(codes.ADMISSION_METHOD),),
        ),
        Column(
            "primary_diagnosis",
            Type.STRING,
            "Primary diagnosis (ICD-10)",
            S,
            constraints=(ICD10(),),
        ),
        Column(
            "secondary_diagnosis",
            Type.STRING,
            "First secondary diagnosis (ICD-10)",
            S,
            constraints=(ICD10(),),
            required=False,
        ),
        financial_year("episode"),
    ),
    record_key="episode_id",
    partition_by="financial_year",
    row_checks=(
        RowCheck(
            "discharge_after_admission",
            "discharge cannot come before admission",
            "discharge_date < admission_date",
        ),
        RowCheck(
            "length_of_stay_matches_dates",
            "length of stay is the number of days from admission to discharge",
            "length_of_stay <> date_diff('day', admission_date, discharge_date)",
        ),
    ),
)

HES_AE = Dataset(
    "hes_ae",
    "nhs",
    "Hospital Episode Statistics: A&E attendances",
    "One row per attendance at an accident and emergency department.",
    (
        record_id("attendance_id", "attendance"),
        *patient_identifiers(),
        Column(
            "arrival_date",
            Type.DATE,
            "Date of arrival",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("2005-01-01", "2031-12-31"),),
            released_as="arrival_month",
        ),
        Column(
            "arrival_mode",
            Type.STRING,
            "How the patient arrived",
            OK,
            constraints=(Codes(codes.AE_ARRIVAL_MODE),),
        ),
        Column("diagnosis", Type.STRING, "Main diagnosis (ICD-10)", S, constraints=(ICD10(),)),
        Column(
            "disposal",
            Type.STRING,
            "What happened at the end of the attendance",
            OK,
            constraints=(Codes(codes.AE_DISPOSAL),),
        ),
        financial_year("attendance"),
    ),
    record_key="attendance_id",
    partition_by="financial_year",
)

DEATHS = Dataset(
    "deaths",
    "nhs",
    "Registered deaths",
    "One row per death registered in England and Wales.",
    (
        record_id("death_id", "death registration"),
        *patient_identifiers(),
        Column(
            "date_of_death",
            Type.DATE,
            "Date of death",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("2005-01-01", "2031-12-31"),),
            released_as="death_month",
        ),
        Column(
            "underlying_cause",
            Type.STRING,
            "Underlying cause of death (ICD-10)",
            S,
            constraints=(ICD10(),),
        ),
        Column(
            "registration_year",
            Type.INTEGER,
            "Calendar year of registration",
            OK,
            constraints=(Range(2005, 2031),),
        ),
    ),
    record_key="death_id",
    partition_by="registration_year",
)

NHS = Custodian(
    "nhs",
    "NHS England",
    "Hospital Episode Statistics (admitted care and A&E) and registered deaths.",
    (HES_APC, HES_AE, DEATHS),
)
