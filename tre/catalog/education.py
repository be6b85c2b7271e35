"""Datasets of the Department for Education (custodian `dfe`), in the style of the National
Pupil Database: the yearly school census, key stage 2 and 4 attainment, absence and
exclusions. Pupils are identified by their Unique Pupil Number (UPN)."""

from tre.catalog import codes
from tre.catalog.constraints import UPN, Codes, DateRange, Pattern, Postcode, Range
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


def upn() -> Column:
    return Column(
        "upn",
        Type.STRING,
        "Unique Pupil Number, allocated when a child first enters a state school in England",
        D,
        Transform.PSEUDONYMISE,
        (UPN(),),
        identity=Identity.UPN,
    )


def academic_year(description: str = "Academic year of the record (2019 means 2019/20)") -> Column:
    return Column("academic_year", Type.INTEGER, description, OK, constraints=(Range(2005, 2030),))


def school_urn() -> Column:
    return Column(
        "school_urn",
        Type.STRING,
        "Unique Reference Number of the school (6 digits)",
        Q,
        constraints=(
            Pattern(
                r"[1-9][0-9]{5}",
                "6 digits, not starting with 0",
                "urn_format",
                per_distinct_value=True,
            ),
        ),
    )


PUPILS = Dataset(
    "pupils",
    "dfe",
    "School census: pupils",
    "One row per pupil per January census, with their characteristics that year.",
    (
        upn(),
        Column(
            "forename", Type.STRING, "Legal forename", D, Transform.DROP, identity=Identity.FORENAME
        ),
        Column(
            "surname", Type.STRING, "Legal surname", D, Transform.DROP, identity=Identity.SURNAME
        ),
        Column(
            "date_of_birth",
            Type.DATE,
            "Date of birth",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("1998-09-01", "2022-08-31"),),
            identity=Identity.DATE_OF_BIRTH,
            released_as="birth_month",
        ),
        Column(
            "sex",
            Type.STRING,
            "Sex recorded by the school",
            Q,
            constraints=(Codes(codes.DFE_SEX),),
            identity=Identity.SEX,
        ),
        Column(
            "postcode",
            Type.STRING,
            "Home postcode at the census",
            Q,
            Transform.AREA_CODE,
            (Postcode(),),
            identity=Identity.POSTCODE,
            released_as="postcode_district",
        ),
        Column(
            "ethnicity", Type.STRING, "Major ethnic group", Q, constraints=(Codes(codes.ETHNICITY),)
        ),
        Column("fsm_eligible", Type.BOOLEAN, "Eligible for free school meals at the census", S),
        Column(
            "sen_provision",
            Type.STRING,
            "Special educational needs provision",
            S,
            constraints=(Codes(codes.SEN_PROVISION),),
        ),
        Column(
            "idaci_decile",
            Type.INTEGER,
            "Income Deprivation Affecting Children Index decile of the home area "
            "(1 = most deprived)",
            S,
            constraints=(Range(1, 10),),
        ),
        school_urn(),
        Column(
            "la_code",
            Type.STRING,
            "Local authority of the school (3-digit DfE code)",
            OK,
            constraints=(Codes({k: v[0] for k, v in codes.LOCAL_AUTHORITIES.items()}),),
        ),
        academic_year("Academic year of the census (2019 means the January 2020 census)"),
        Column(
            "nc_year",
            Type.INTEGER,
            "National curriculum year group (0 = reception … 11 = year 11)",
            OK,
            constraints=(Range(0, 14),),
        ),
    ),
    partition_by="academic_year",
)

KS2 = Dataset(
    "ks2",
    "dfe",
    "Key stage 2 attainment",
    "End of primary school (year 6) test results, one row per pupil.",
    (
        upn(),
        academic_year("Academic year of the tests"),
        Column(
            "read_score",
            Type.INTEGER,
            "Reading scaled score (80–120)",
            OK,
            constraints=(Range(80, 120),),
            required=False,
        ),
        Column(
            "maths_score",
            Type.INTEGER,
            "Mathematics scaled score (80–120)",
            OK,
            constraints=(Range(80, 120),),
            required=False,
        ),
        Column(
            "expected_standard",
            Type.BOOLEAN,
            "Met the expected standard in reading, writing and mathematics",
            OK,
        ),
        school_urn(),
    ),
    partition_by="academic_year",
)

KS4 = Dataset(
    "ks4",
    "dfe",
    "Key stage 4 attainment",
    "End of secondary school (year 11) GCSE results, one row per pupil.",
    (
        upn(),
        academic_year("Academic year of the exams"),
        Column(
            "attainment8",
            Type.DECIMAL,
            "Attainment 8 score (0–90)",
            OK,
            constraints=(Range(0, 90),),
        ),
        Column(
            "eng_maths_grade4",
            Type.BOOLEAN,
            "Grade 4 or above in both English and mathematics GCSEs",
            OK,
        ),
        school_urn(),
    ),
    partition_by="academic_year",
)

ABSENCE = Dataset(
    "absence",
    "dfe",
    "Pupil absence",
    "Sessions (half days) possible and missed, one row per pupil per academic year.",
    (
        upn(),
        academic_year(),
        Column(
            "sessions_possible",
            Type.INTEGER,
            "Sessions the pupil could attend",
            OK,
            constraints=(Range(0, 400),),
        ),
        Column(
            "sessions_authorised",
            Type.INTEGER,
            "Sessions missed with authorisation",
            S,
            constraints=(Range(0, 400),),
        ),
        Column(
            "sessions_unauthorised",
            Type.INTEGER,
            "Sessions missed without authorisation",
            S,
            constraints=(Range(0, 400),),
        ),
    ),
    partition_by="academic_year",
    row_checks=(
        RowCheck(
            "absence_within_possible",
            "sessions missed cannot exceed sessions possible",
            "sessions_authorised + sessions_unauthorised > sessions_possible",
        ),
    ),
)

EXCLUSIONS = Dataset(
    "exclusions",
    "dfe",
    "Suspensions and permanent exclusions",
    "One row per suspension or permanent exclusion.",
    (
        upn(),
        academic_year(),
        Column(
            "exclusion_date",
            Type.DATE,
            "Start date of the exclusion",
            Q,
            Transform.YEAR_MONTH,
            (DateRange("2005-09-01", "2031-08-31"),),
            released_as="exclusion_month",
        ),
        Column(
            "exclusion_type",
            Type.STRING,
            "Kind of exclusion",
            S,
            constraints=(Codes(codes.EXCLUSION_TYPE),),
        ),
        Column(
            "reason",
            Type.STRING,
            "Main reason given by the school",
            S,
            constraints=(Codes(codes.EXCLUSION_REASON),),
        ),
        Column(
            "sessions",
            Type.DECIMAL,
            "Sessions excluded (for suspensions)",
            OK,
            constraints=(Range(0, 400),),
            required=False,
        ),
    ),
    partition_by="academic_year",
)

DFE = Custodian(
    "dfe",
    "Department for Education",
    "National Pupil Database: school census, attainment, absence and exclusions for pupils "
    "in state schools in England.",
    (PUPILS, KS2, KS4, ABSENCE, EXCLUSIONS),
)
