"""Linkage of pupils and patients: the trusted-third-party step, done at ingest.

Identities come from the latest delivery of each custodian (kept in the landing store, which
no researcher can read). Linking is deterministic:

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
harmonised. Keys are compared through two 64-bit hashes of their values (:func:`_hashed`).

How: identities are normalised and their keys hashed in DuckDB, fetched as Arrow; who holds
which key is then sorted and counted in numpy (:mod:`tre.linkage.matching`). The first level
counts everyone's keys; each later level first takes the keys that the still unlinked share,
then counts the holders of only those among everyone, so it costs in proportion to who is left
to link. Records without an NHS number go through the levels in the same way. The fuzzy passes
run in DuckDB over the still unlinked.

Each person then has ``person_key = HMAC-SHA256(K_link, identity)``, the identity being
``upn:<UPN>`` for anyone who is a pupil, else ``nhs:<NHS number>``, else
``rec:<dataset>:<record id>``: a pupil's key never changes when hospital data arrives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa

from tre import pseudonyms
from tre.linkage import matching
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
#: The distinct keys each side hashes.
PUPIL_KEYS = tuple(dict.fromkeys(pupil_cols for _, pupil_cols, _ in LEVELS))
PATIENT_KEYS = tuple(dict.fromkeys(patient_cols for _, _, patient_cols in LEVELS))
#: Key columns holding text of many values (the others are dates, and sex, of two values).
TEXT = ("fn", "fnc", "sn", "snc", "pc")
FUZZY = "similar names"
#: Rows per Arrow batch fetched from DuckDB: no limit, so a result comes in the few batches its
#: threads make, joined into one numpy array per column at little cost.
ONE_BATCH = 1 << 40
MAX_EDITS = 1

#: Input tables. link_pupils (upn, fn, sn, dob, sex, pc, person_key): one row per distinct
#: identity of a pupil. link_patients (dataset, record_id, nhs, fn, sn, dob, sex, pc, records):
#: one row per distinct identity of a patient with an NHS number (dataset and record_id NULL,
#: ``records`` the number of records carrying it), and one row per record without an NHS
#: number (``records`` = 1).
PUPIL_IDS = "link_pupils"
PATIENT_IDS = "link_patients"
IDENTITY = ("fn", "sn", "dob", "sex", "pc")


def patient_identities(patients: str, records: str) -> str:
    """SQL for the rows of ``link_patients``: from ``patients`` (nhs, fn, sn, dob, sex, pc,
    records), the distinct identities of those with an NHS number, and from ``records``
    (dataset, record_id, fn, sn, dob, sex, pc), the records without one."""
    ids = ", ".join(IDENTITY)
    return (
        f"SELECT NULL AS dataset, NULL AS record_id, nhs, {ids}, records FROM ({patients}) "
        f"UNION ALL SELECT dataset, record_id, NULL AS nhs, {ids}, 1 FROM ({records})"
    )


def _name(column: str) -> str:
    return f"upper(regexp_replace(strip_accents({column}), '[^A-Za-z]', '', 'g'))"


def identity_select(table: str, *, nhs: bool, where: str = "true", keep: str = "") -> str:
    """SQL selecting normalised identities from a raw delivery table (and ``keep``, a list of
    its other columns)."""
    sex = "CASE WHEN sex IN ('M', '1') THEN 'M' WHEN sex IN ('F', '2') THEN 'F' END"
    extra = "nhs_number AS nhs, " if nhs else "upn, "
    return f"""
        SELECT {extra} {keep + ", " if keep else ""}
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


def _column_hashes(columns: Iterable[str]) -> str:
    """Select-list expressions hashing each of ``columns`` once (``<column>_h``), text columns
    also reversed (``<column>_r``), for :func:`_hashed` to combine: a column is in several
    keys, and its text is hashed once rather than once per key."""
    return ", ".join(
        f"hash({c}) AS {c}_h" + (f", hash(reverse({c})) AS {c}_r" if c in TEXT else "")
        for c in columns
    )


def _hashed(columns: tuple[str, ...], name: str) -> str:
    """Select-list expressions for a key as two 64-bit hashes (0 where a part is missing),
    combining its columns' hashes (:func:`_column_hashes`).

    The second combines the hashes of the text values reversed. DuckDB's ``hash(a, b, …)``
    combines the values' own hashes, XOR-ing the last one in, so a second hash over the same
    values (even salted) would clash whenever the first does; over reversed text it clashes
    independently, and two different keys then agree on both with a probability of about
    2^-128 per pair."""
    first = ", ".join(f"{c}_h" for c in columns)
    second = ", ".join(f"{c}_r" if c in TEXT else f"{c}_h" for c in columns)
    present = " AND ".join(f"{c} IS NOT NULL" for c in columns)
    return (
        f"CASE WHEN {present} THEN hash({first}) ELSE 0 END AS {name}_1, "
        f"CASE WHEN {present} THEN hash({second}) ELSE 0 END AS {name}_2"
    )


@dataclasses.dataclass
class _Side:
    """Identities fetched from DuckDB: each row's holder (a dense id), its keys, and what the
    fuzzy pass compares."""

    holder_column: str | None
    first: np.ndarray
    """A row of each holder id."""
    holder: np.ndarray
    """Each row's holder id."""
    keys: dict[tuple[str, ...], matching.Held]
    rows: pa.Table
    """As fetched: the holder's UPN or NHS number (or dataset and record_id), the columns
    asked for, fnc, snc, dob, sex and the hashes."""

    @functools.cached_property
    def names(self) -> pa.Array:
        """The UPN or NHS number of each holder id."""
        return self.rows[self.holder_column].take(matching.to_arrow(self.first)).combine_chunks()

    def fuzzy(self, holder: np.ndarray, rows: np.ndarray | None = None) -> pa.Table:
        """What the fuzzy pass compares, with ``id`` = ``holder``, of the rows selected by the
        mask ``rows`` (all rows without it)."""
        table = self.rows.select(["fnc", "snc", "dob", "sex"]).append_column(
            "id", matching.to_arrow(holder)
        )
        return table if rows is None else table.filter(matching.to_arrow(rows))


def _fetch(
    con: duckdb.DuckDBPyConnection,
    source: str,
    holder: str | None,
    keys: tuple[tuple[str, ...], ...],
    extra: tuple[str, ...] = (),
) -> pa.Table:
    """Normalise ``source``'s identities and hash their ``keys``; ``holder`` is the column
    naming who holds them (None: each row is its own holder)."""
    hashed = ", ".join(_hashed(k, f"k{i}") for i, k in enumerate(keys))
    passed = [holder, *extra] if holder else list(extra)
    named = f"hash({holder}) AS holder_1, hash(reverse({holder})) AS holder_2, " if holder else ""
    hashes = _column_hashes(dict.fromkeys(c for k in keys for c in k))
    # Person keys as Arrow UUIDs (16 bytes), not as their text.
    con.execute("SET arrow_lossless_conversion = true")
    try:
        return con.sql(
            f"SELECT {', '.join([*passed, 'fnc', 'snc', 'dob', 'sex'])}, {named}{hashed} "
            f"FROM (SELECT *, {hashes} FROM ({_normalised(source, ', '.join(passed))}))"
        ).to_arrow_table(ONE_BATCH)
    finally:
        con.execute("RESET arrow_lossless_conversion")


def _side(table: pa.Table, holder: str | None, keys: tuple[tuple[str, ...], ...]) -> _Side:
    """What :func:`_fetch` gave, with its holders numbered and its keys as numpy arrays."""
    if holder:
        ids, first = matching.number(
            matching.to_numpy(table["holder_1"]), matching.to_numpy(table["holder_2"])
        )
    else:
        ids = first = np.arange(table.num_rows, dtype=np.int64)
    return _Side(
        holder,
        first,
        ids,
        {
            k: matching.Held(
                matching.to_numpy(table[f"k{i}_1"]), matching.to_numpy(table[f"k{i}_2"]), ids
            )
            for i, k in enumerate(keys)
        },
        table,
    )


def _query_pairs(
    con: duckdb.DuckDBPyConnection, sql: str, **tables: pa.Table
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``sql`` over the Arrow ``tables``; its two columns as numpy arrays."""
    with _registered(con, **tables):
        a, b = con.sql(sql).to_arrow_table(ONE_BATCH).columns
    return matching.to_numpy(a).astype(np.int64), matching.to_numpy(b).astype(np.int64)


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, **tables: pa.Table) -> Iterator[None]:
    """The Arrow ``tables`` visible to ``con`` under their names, for the ``with`` block."""
    for name, table in tables.items():
        con.register(name, table)
    try:
        yield
    finally:
        for name in tables:
            con.unregister(name)


def _similar(a: str, b: str) -> str:
    """Names within MAX_EDITS edits (the length test, implied, rules most pairs out cheaply)."""
    return " AND ".join(
        f"abs(length({a}.{c}) - length({b}.{c})) <= {MAX_EDITS} "
        f"AND damerau_levenshtein({a}.{c}, {b}.{c}) <= {MAX_EDITS}"
        for c in ("fnc", "snc")
    )


FUZZY_PAIRS = f"""
    WITH p AS (SELECT DISTINCT * FROM link_fuzzy_pupils),
         q AS (SELECT DISTINCT * FROM link_fuzzy_patients)
    SELECT DISTINCT p.id AS pupil, q.id AS patient
    FROM p JOIN q USING (dob, sex) WHERE {_similar("p", "q")}"""

FUZZY_RECORDS = f"""
    SELECT r.id AS record, min(p.id) AS person
    FROM link_fuzzy_records r JOIN link_fuzzy_persons p USING (dob, sex)
    WHERE {_similar("p", "r")}
    GROUP BY r.id HAVING min(p.id) = max(p.id)"""


def _link_pupils_to_patients(
    con: duckdb.DuckDBPyConnection, pupils: _Side, patients: _Side, result: LinkageResult
) -> tuple[np.ndarray, np.ndarray]:
    """Pupil ↔ patient links, one to one, level by level: (pupil, patient) ids."""
    n_pupils, n_patients = len(pupils.first), len(patients.first)
    pupil_open = np.ones(n_pupils, dtype=bool)
    patient_open = np.ones(n_patients, dtype=bool)
    links: list[tuple[np.ndarray, np.ndarray]] = []
    for _, pupil_cols, patient_cols in LEVELS:
        pupil, patient = matching.candidates(
            pupils.keys[pupil_cols], patients.keys[patient_cols], pupil_open, patient_open
        )
        links.append(matching.one_to_one(pupil, patient, n_pupils, n_patients))
        pupil_open[links[-1][0]] = False
        patient_open[links[-1][1]] = False
    pupil, patient = _query_pairs(
        con,
        FUZZY_PAIRS,
        link_fuzzy_pupils=pupils.fuzzy(pupils.holder, pupil_open[pupils.holder]),
        link_fuzzy_patients=patients.fuzzy(patients.holder, patient_open[patients.holder]),
    )
    links.append(matching.one_to_one(pupil, patient, n_pupils, n_patients))
    for name, (pupil, _) in zip([*(n for n, _, _ in LEVELS), FUZZY], links, strict=True):
        result.pupil_patient_links[name] = len(pupil)
    return np.concatenate([p for p, _ in links]), np.concatenate([q for _, q in links])


def _link_records(
    con: duckdb.DuckDBPyConnection,
    pupils: _Side,
    patients: _Side,
    records: _Side,
    partner: np.ndarray,
    result: LinkageResult,
) -> np.ndarray:
    """Each record without an NHS number: the person its keys single out (a pupil id, or the
    number of pupils + a patient id), or -1."""
    n_pupils = len(pupils.first)
    # A person is a pupil (with the patient linked to them) or a patient linked to no pupil.
    person_of_patient = np.where(
        partner >= 0, partner, n_pupils + np.arange(len(partner), dtype=np.int64)
    )
    patient_person = person_of_patient[patients.holder]
    person = np.full(len(records.holder), -1, dtype=np.int64)
    level = np.full(len(records.holder), -1, dtype=np.int8)
    for i, (_, pupil_cols, patient_cols) in enumerate(LEVELS):
        keys = records.keys[patient_cols]
        wanted = matching.distinct(keys.h1[(person < 0) & keys.present])
        holders = matching.Held.concat(
            *(
                held[matching.among(held.h1, wanted)]
                for held in (
                    pupils.keys[pupil_cols],
                    dataclasses.replace(patients.keys[pupil_cols], holder=patient_person),
                )
            )
        )
        found = matching.lookup(keys, matching.singled_out(holders))
        found[person >= 0] = -1
        person[found >= 0], level[found >= 0] = found[found >= 0], i
    record, fuzzy = _query_pairs(
        con,
        FUZZY_RECORDS,
        link_fuzzy_records=records.fuzzy(records.holder, person < 0),
        link_fuzzy_persons=pa.concat_tables(
            [
                pupils.fuzzy(pupils.holder),
                patients.fuzzy(patient_person),
            ]
        ),
    )
    person[record], level[record] = fuzzy, len(LEVELS)
    for i, name in enumerate([*(n for n, _, _ in LEVELS), FUZZY]):
        result.record_links[name] = int(np.count_nonzero(level == i))
    return person


def _store(con: duckdb.DuckDBPyConnection, name: str, select: str, table: pa.Table) -> None:
    """Create the temporary table ``name`` from ``select`` over the Arrow ``table`` (as
    ``link_arrow``)."""
    with _registered(con, link_arrow=table):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {select}")


def _taken(
    values: pa.ChunkedArray, rows: np.ndarray, valid: np.ndarray, through: np.ndarray | None = None
) -> pa.ChunkedArray | pa.Array:
    """``values[through[rows]]`` (or ``values[rows]``) where ``valid``, else NULL."""
    picked = rows[valid] if through is None else through[rows[valid]]
    if not len(values):
        return pa.nulls(len(rows), values.type)
    index = np.zeros(len(rows), dtype=np.int64)
    index[valid] = picked
    return values.take(matching.to_arrow(index, valid))


def _keys(
    con: duckdb.DuckDBPyConnection,
    pupils: _Side,
    patients: _Side,
    records: _Side,
    partner: np.ndarray,
    person: np.ndarray,
) -> None:
    """Each patient's and record's person_key (see above)."""
    pupil_keys = pupils.rows["person_key"]
    linked = partner >= 0
    carried = np.bincount(
        patients.holder, weights=matching.to_numpy(patients.rows["records"]), minlength=len(partner)
    )
    _store(
        con,
        "link_nhs_keys",
        f"""
        SELECT nhs, coalesce(person_key, {pseudonyms.person_key_sql("'nhs:' || nhs")})
                   AS person_key,
               person_key IS NOT NULL AS pupil, records
        FROM link_arrow""",
        pa.table(
            {
                "nhs": patients.names,
                "person_key": _taken(pupil_keys, partner, linked, through=pupils.first),
                "records": matching.to_arrow(carried.astype(np.int64)),
            }
        ),
    )
    n_pupils = len(pupils.first)
    _store(
        con,
        "link_orphan_keys",
        f"""
        SELECT o.dataset, o.record_id,
               coalesce(o.person_key, n.person_key,
                        {pseudonyms.person_key_sql("'rec:' || o.dataset || ':' || o.record_id")})
                   AS person_key,
               o.person_key IS NOT NULL OR coalesce(n.pupil, false) AS pupil
        FROM link_arrow o LEFT JOIN link_nhs_keys n USING (nhs)""",
        pa.table(
            {
                "dataset": records.rows["dataset"],
                "record_id": records.rows["record_id"],
                "person_key": _taken(
                    pupil_keys, person, (person >= 0) & (person < n_pupils), through=pupils.first
                ),
                "nhs": _taken(patients.names, person - n_pupils, person >= n_pupils),
            }
        ),
    )


def link(con: duckdb.DuckDBPyConnection, key: bytes) -> LinkageResult:
    """Link the identities in ``link_pupils`` and ``link_patients`` (see above).

    Leaves ``link_nhs_keys`` (nhs, person_key, pupil, records: whether linked to a pupil, how
    many records carry the NHS number) and ``link_orphan_keys`` (dataset, record_id,
    person_key, pupil) for the records without one. A pupil's person_key is in
    ``link_pupils``.
    """
    result = LinkageResult()
    ((anyone,),) = con.execute(f"SELECT EXISTS (SELECT 1 FROM {PATIENT_IDS})").fetchall()
    if not anyone:
        # No patient and no record: nothing to link, no key to make but the pupils' own.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE link_nhs_keys (nhs VARCHAR, "
            f"person_key {pseudonyms.PERSON_KEY_TYPE}, pupil BOOLEAN, records BIGINT)"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE link_orphan_keys (dataset VARCHAR, record_id VARCHAR, "
            f"person_key {pseudonyms.PERSON_KEY_TYPE}, pupil BOOLEAN)"
        )
        ((result.pupils,),) = con.execute(f"SELECT count(DISTINCT upn) FROM {PUPIL_IDS}").fetchall()
        return result
    con.execute("CREATE OR REPLACE TEMP TABLE link_names (name VARCHAR, canonical VARCHAR)")
    con.executemany("INSERT INTO link_names VALUES (?, ?)", list(equivalence_classes().items()))
    ids = ", ".join(IDENTITY)
    patient_keys = tuple(dict.fromkeys(PATIENT_KEYS + PUPIL_KEYS))
    pupil_rows = _fetch(
        con,
        f"SELECT upn, person_key, {ids} FROM {PUPIL_IDS}",
        "upn",
        PUPIL_KEYS,
        extra=("person_key",),
    )
    patient_rows = _fetch(
        con,
        f"SELECT nhs, records, {ids} FROM {PATIENT_IDS} WHERE nhs IS NOT NULL",
        "nhs",
        patient_keys,
        extra=("records",),
    )
    record_rows = _fetch(
        con,
        f"SELECT dataset, record_id, {ids} FROM {PATIENT_IDS} WHERE nhs IS NULL",
        None,
        PATIENT_KEYS,
        extra=("dataset", "record_id"),
    )
    # Pupils and patients numbered in two threads once DuckDB is done (numpy sorts without the
    # GIL; alongside DuckDB's own threads they would only take turns).
    with ThreadPoolExecutor(max_workers=2) as pool:
        numbered = pool.submit(_side, pupil_rows, "upn", PUPIL_KEYS)
        patients = _side(patient_rows, "nhs", patient_keys)
        pupils = numbered.result()
    records = _side(record_rows, None, PATIENT_KEYS)
    pupil, patient = _link_pupils_to_patients(con, pupils, patients, result)
    partner = np.full(len(patients.first), -1, dtype=np.int64)
    partner[patient] = pupil
    person = _link_records(con, pupils, patients, records, partner, result)
    pseudonyms.load_key(con, key)
    _keys(con, pupils, patients, records, partner, person)
    result.pupils = len(pupils.first)
    (
        result.patients,
        result.records,
        result.records_without_nhs_number,
        result.records_linked_to_pupils,
    ) = con.execute("""
        SELECT (SELECT count(*) FROM link_nhs_keys), n.records + o.records, o.records,
               n.linked + o.linked
        FROM (SELECT coalesce(sum(records), 0) AS records,
                     coalesce(sum(records) FILTER (WHERE pupil), 0) AS linked
              FROM link_nhs_keys) n,
             (SELECT count(*) AS records, count(*) FILTER (WHERE pupil) AS linked
              FROM link_orphan_keys) o""").fetchone()
    return result


def record_keys(records: str) -> str:
    """SQL giving (dataset, record_id, person_key) for the hospital records of ``records``
    (SQL giving their dataset, record_id and nhs), as linked above."""
    return f"""
        SELECT r.dataset, r.record_id, coalesce(n.person_key, o.person_key) AS person_key
        FROM ({records}) r
        LEFT JOIN link_nhs_keys n ON n.nhs = r.nhs
        LEFT JOIN link_orphan_keys o ON o.dataset = r.dataset AND o.record_id = r.record_id"""
