"""Linkage of pupils and patients: the trusted-third-party step, done at ingest.

Identities come from the latest delivery of each custodian (kept in the landing store, which
no researcher can read). Linking is deterministic and set-based, in DuckDB:

1. **Strong identifiers.** Records sharing a UPN are one pupil; records sharing an NHS number
   are one patient.
2. **Pupils ↔ patients, one to one,** through match keys tried from the strictest to the
   loosest (:data:`LEVELS`), then a fuzzy pass (names within one edit, same date of birth and
   sex). A key links only when it belongs to exactly one pupil and one patient among *all*
   pupils and patients, so twins and namesakes are never linked by a key they share; a pupil or
   patient with two candidates at one level is not linked at that level.
3. **Records without an NHS number** link, many to one, to the person (pupil or patient)
   their match keys single out, by the same levels.

Names are normalised (capitals, letters only, accents removed) and compared also through their
group of nicknames and spellings (:mod:`tre.linkage.names`). Sex codes of both custodians are
harmonised. Keys are compared through two independent 64-bit hashes of their values.

Each person then has ``person_key = HMAC-SHA256(K_link, identity)``, the identity being
``upn:<UPN>`` for anyone who is a pupil, else ``nhs:<NHS number>``, else
``rec:<dataset>:<record id>``: a pupil's key never changes when hospital data arrives.
"""

from __future__ import annotations

import dataclasses

import duckdb

from tre import pseudonyms
from tre.linkage.names import equivalence_classes

#: Match keys, strictest first: (name, pupil-side columns, patient-side columns).
LEVELS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("exact", ("fn", "sn", "dob", "sex", "pc"), ("fn", "sn", "dob", "sex", "pc")),
    ("name groups", ("fnc", "snc", "dob", "sex", "pc"), ("fnc", "snc", "dob", "sex", "pc")),
    ("moved house", ("fnc", "snc", "dob", "sex"), ("fnc", "snc", "dob", "sex")),
    ("day and month swapped", ("fnc", "snc", "dob", "sex"), ("fnc", "snc", "dob_swapped", "sex")),
    ("forename differs", ("snc", "dob", "sex", "pc"), ("snc", "dob", "sex", "pc")),
    ("surname differs", ("fnc", "dob", "sex", "pc"), ("fnc", "dob", "sex", "pc")),
)
FUZZY = "similar names"
MAX_EDITS = 1

#: Input tables: link_pupils (upn, fn, sn, dob, sex, pc, person_key), one row per distinct
#: identity; link_patients (dataset, record_id, nhs, fn, sn, dob, sex, pc), one row per record.
PUPIL_IDS = "link_pupils"
PATIENT_IDS = "link_patients"
IDENTITY = ("fn", "sn", "dob", "sex", "pc")


def _name(column: str) -> str:
    return f"upper(regexp_replace(strip_accents({column}), '[^A-Za-z]', '', 'g'))"


def identity_select(table: str, *, nhs: bool, where: str = "true") -> str:
    """SQL selecting normalised identities from a raw (all-text) delivery table."""
    sex = "CASE WHEN sex IN ('M', '1') THEN 'M' WHEN sex IN ('F', '2') THEN 'F' END"
    extra = "nhs_number AS nhs, " if nhs else "upn, "
    return f"""
        SELECT {extra}
               {_name("forename")} AS fn, {_name("surname")} AS sn,
               TRY_CAST(date_of_birth AS DATE) AS dob, {sex} AS sex,
               upper(replace(postcode, ' ', '')) AS pc
        FROM {table} WHERE {where}"""


@dataclasses.dataclass
class LinkageResult:
    pupils: int = 0
    patients: int = 0
    records: int = 0
    records_without_nhs_number: int = 0
    pupil_patient_links: dict[str, int] = dataclasses.field(default_factory=dict)
    record_links: dict[str, int] = dataclasses.field(default_factory=dict)
    records_linked_to_pupils: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _normalised(source: str, id_columns: str) -> str:
    return f"""
        SELECT {id_columns}, fn, coalesce(f.canonical, fn) AS fnc,
               sn, coalesce(s.canonical, sn) AS snc, dob,
               CASE WHEN day(dob) <= 12 AND day(dob) <> month(dob)
                    THEN make_date(year(dob), day(dob), month(dob)) END AS dob_swapped,
               sex, pc
        FROM ({source}) i
        LEFT JOIN link_names f ON f.name = i.fn
        LEFT JOIN link_names s ON s.name = i.sn"""


def _prepare(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE link_names (name VARCHAR, canonical VARCHAR)")
    con.executemany("INSERT INTO link_names VALUES (?, ?)", list(equivalence_classes().items()))
    ids = ", ".join(IDENTITY)
    # Without patients there is nothing to link pupils to: skip their normalisation.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE link_pupils_n AS "
        + _normalised(
            f"SELECT upn, {ids} FROM {PUPIL_IDS} WHERE EXISTS (SELECT 1 FROM {PATIENT_IDS})",
            "upn",
        )
    )
    # Each distinct way a patient with an NHS number was recorded; and the records without one.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE link_variants AS "
        + _normalised(f"SELECT DISTINCT nhs, {ids} FROM {PATIENT_IDS} WHERE nhs IS NOT NULL", "nhs")
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE link_orphans AS "
        + _normalised(
            f"SELECT dataset, record_id, {ids} FROM {PATIENT_IDS} WHERE nhs IS NULL",
            "dataset || ':' || record_id AS rid, dataset, record_id",
        )
    )


def _keyed(table: str, columns: tuple[str, ...], owner: str) -> str:
    """Rows of ``table`` with their key as two independent 64-bit hashes ``h1``, ``h2``.

    Keys are compared by both hashes: two different keys collide with a probability of about
    2^-128 per pair, far below any error the identifiers themselves carry.
    """
    cols = ", ".join(columns)
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in columns)
    return (
        f"SELECT hash({cols}) AS h1, hash('tre-link', {cols}) AS h2, {owner} AS owner "
        f"FROM {table} WHERE {not_null}"
    )


def _unique_among(keyed: str, wanted: str) -> str:
    """Of the keys in ``wanted``, those held by exactly one owner in ``keyed``."""
    return f"""(SELECT k.h1, k.h2, min(k.owner) AS owner
                FROM ({keyed}) k JOIN {wanted} w ON k.h1 = w.h1 AND k.h2 = w.h2
                GROUP BY k.h1, k.h2 HAVING min(k.owner) = max(k.owner))"""


def _one_to_one(con: duckdb.DuckDBPyConnection, level: str) -> int:
    """Keep candidate pairs where each side has one candidate; record them as links."""
    n = con.execute(f"""
        INSERT INTO link_pairs
        SELECT upn, nhs, '{level}' FROM (
            SELECT upn, nhs, count(*) OVER (PARTITION BY upn) AS of_upn,
                   count(*) OVER (PARTITION BY nhs) AS of_nhs
            FROM link_candidates)
        WHERE of_upn = 1 AND of_nhs = 1
    """).fetchone()[0]
    con.execute(
        f"DELETE FROM link_open_pupils WHERE upn IN "
        f"(SELECT upn FROM link_pairs WHERE level = '{level}')"
    )
    con.execute(
        f"DELETE FROM link_open_variants WHERE nhs IN "
        f"(SELECT nhs FROM link_pairs WHERE level = '{level}')"
    )
    return n


def _link_pupils_to_patients(con: duckdb.DuckDBPyConnection, result: LinkageResult) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE link_pairs (upn VARCHAR, nhs VARCHAR, level VARCHAR)")
    # Who is still unlinked, shrinking level by level.
    con.execute("CREATE OR REPLACE TEMP TABLE link_open_pupils AS SELECT * FROM link_pupils_n")
    con.execute("CREATE OR REPLACE TEMP TABLE link_open_variants AS SELECT * FROM link_variants")
    for level, pupil_cols, patient_cols in LEVELS:
        # Keys shared by an unlinked pupil and an unlinked patient; then, of those, the ones
        # that single out one pupil and one patient among everyone.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE link_shared AS
            SELECT h1, h2 FROM ({_keyed("link_open_pupils", pupil_cols, "upn")})
            INTERSECT
            SELECT h1, h2 FROM ({_keyed("link_open_variants", patient_cols, "nhs")})""")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE link_candidates AS
            SELECT DISTINCT p.owner AS upn, q.owner AS nhs
            FROM {_unique_among(_keyed("link_pupils_n", pupil_cols, "upn"), "link_shared")} p
            JOIN {_unique_among(_keyed("link_variants", patient_cols, "nhs"), "link_shared")} q
              ON p.h1 = q.h1 AND p.h2 = q.h2
            WHERE p.owner IN (SELECT upn FROM link_open_pupils)
              AND q.owner IN (SELECT nhs FROM link_open_variants)""")
        result.pupil_patient_links[level] = _one_to_one(con, level)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE link_candidates AS
        WITH p AS (SELECT DISTINCT upn, fnc, snc, dob, sex FROM link_open_pupils),
             q AS (SELECT DISTINCT nhs, fnc, snc, dob, sex FROM link_open_variants)
        SELECT DISTINCT p.upn, q.nhs FROM p JOIN q USING (dob, sex)
        WHERE damerau_levenshtein(p.fnc, q.fnc) <= {MAX_EDITS}
          AND damerau_levenshtein(p.snc, q.snc) <= {MAX_EDITS}""")
    result.pupil_patient_links[FUZZY] = _one_to_one(con, FUZZY)


def _link_records_without_nhs_number(con: duckdb.DuckDBPyConnection, result: LinkageResult) -> None:
    # Persons: every pupil, and every patient with an NHS number (linked to a pupil or not).
    con.execute("""
        CREATE OR REPLACE TEMP TABLE link_persons AS
        SELECT 'upn:' || upn AS person, fn, fnc, sn, snc, dob, dob_swapped, sex, pc
        FROM link_pupils_n
        UNION ALL
        SELECT coalesce('upn:' || l.upn, 'nhs:' || q.nhs), fn, fnc, sn, snc, dob, dob_swapped,
               sex, pc
        FROM link_variants q LEFT JOIN link_pairs l USING (nhs)""")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE link_records (rid VARCHAR, person VARCHAR, level VARCHAR)"
    )
    for level, pupil_cols, patient_cols in LEVELS:
        result.record_links[level] = con.execute(f"""
            INSERT INTO link_records
            WITH orphans AS (
                SELECT * FROM ({_keyed("link_orphans", patient_cols, "rid")})
                WHERE owner NOT IN (SELECT rid FROM link_records)),
            wanted AS (SELECT DISTINCT h1, h2 FROM orphans)
            SELECT DISTINCT r.owner, p.owner, '{level}'
            FROM orphans r
            JOIN {_unique_among(_keyed("link_persons", pupil_cols, "person"), "wanted")} p
              ON p.h1 = r.h1 AND p.h2 = r.h2
        """).fetchone()[0]
    result.record_links[FUZZY] = con.execute(f"""
        INSERT INTO link_records
        SELECT rid, min(person), '{FUZZY}' FROM (
            SELECT DISTINCT r.rid, p.person
            FROM (SELECT * FROM link_orphans WHERE rid NOT IN (SELECT rid FROM link_records)) r
            JOIN link_persons p ON p.dob = r.dob AND p.sex = r.sex
            WHERE damerau_levenshtein(p.fnc, r.fnc) <= {MAX_EDITS}
              AND damerau_levenshtein(p.snc, r.snc) <= {MAX_EDITS})
        GROUP BY rid HAVING count(*) = 1
    """).fetchone()[0]


def _keys(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    pseudonyms.load_key(con, key)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE link_pupil_keys AS
        SELECT DISTINCT upn, person_key FROM {PUPIL_IDS}""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE link_nhs_keys AS
        SELECT n.nhs, coalesce(p.person_key, {pseudonyms.hmac_sql("'nhs:' || n.nhs")})
                   AS person_key,
               p.person_key IS NOT NULL AS pupil, coalesce(l.level, 'nhs number') AS level
        FROM (SELECT DISTINCT nhs FROM link_variants) n
        LEFT JOIN link_pairs l USING (nhs)
        LEFT JOIN link_pupil_keys p ON p.upn = l.upn""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE link_orphan_keys AS
        SELECT o.dataset, o.record_id,
               coalesce(p.person_key, n.person_key,
                        {pseudonyms.hmac_sql("'rec:' || o.rid")}) AS person_key,
               p.person_key IS NOT NULL OR coalesce(n.pupil, false) AS pupil,
               coalesce(r.level, 'unlinked') AS level
        FROM link_orphans o
        LEFT JOIN link_records r USING (rid)
        LEFT JOIN link_pupil_keys p ON 'upn:' || p.upn = r.person
        LEFT JOIN link_nhs_keys n ON 'nhs:' || n.nhs = r.person""")


def link(con: duckdb.DuckDBPyConnection, key: bytes) -> LinkageResult:
    """Link the identities in ``link_pupils`` and ``link_patients`` (see above).

    Leaves ``link_pupil_keys`` (upn, person_key), ``link_nhs_keys`` (nhs, person_key, pupil,
    level) and ``link_orphan_keys`` (dataset, record_id, person_key, pupil, level) for the
    records without an NHS number.
    """
    result = LinkageResult()
    _prepare(con)
    _link_pupils_to_patients(con, result)
    _link_records_without_nhs_number(con, result)
    _keys(con, key)
    result.pupils = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT upn FROM link_pupil_keys)"
    ).fetchone()[0]
    result.patients = con.execute("SELECT count(*) FROM link_nhs_keys").fetchone()[0]
    result.records, result.records_without_nhs_number = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE nhs IS NULL) FROM {PATIENT_IDS}"
    ).fetchone()
    result.records_linked_to_pupils = con.execute(f"""
        SELECT (SELECT count(*) FROM {PATIENT_IDS} r JOIN link_nhs_keys k USING (nhs)
                WHERE k.pupil)
             + (SELECT count(*) FROM link_orphan_keys WHERE pupil)""").fetchone()[0]
    return result


def record_keys() -> str:
    """SQL giving (dataset, record_id, person_key) for every hospital record linked above."""
    return f"""
        SELECT p.dataset, p.record_id, coalesce(n.person_key, o.person_key) AS person_key
        FROM {PATIENT_IDS} p
        LEFT JOIN link_nhs_keys n ON n.nhs = p.nhs
        LEFT JOIN link_orphan_keys o ON o.dataset = p.dataset AND o.record_id = p.record_id"""
