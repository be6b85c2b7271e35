"""Linkage: the numpy matching steps, and the whole of ``tre.linkage.link`` against a
brute-force reading of the rules in docs/data.md, on identities made to collide."""

import datetime
import random
from collections import Counter, defaultdict

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tre import linkage, pseudonyms
from tre.linkage import matching
from tre.linkage.names import equivalence_classes

KEY = b"k" * 32


def held(h1, h2, holder) -> matching.Held:
    return matching.Held(
        np.array(h1, dtype=np.uint64), np.array(h2, dtype=np.uint64), np.array(holder, np.int64)
    )


# -- matching steps ------------------------------------------------------------------------------


@pytest.mark.parametrize("collide", [False, True])
def test_holders_are_numbered_by_name_even_when_their_first_hashes_collide(collide):
    names = ["B7", "A1", "B7", "C3", "A1", "A1"]
    first_hash = {"A1": 11, "B7": 22, "C3": 33}
    second_hash = {"A1": 5, "B7": 4, "C3": 3}
    h1 = np.array([7 if collide else first_hash[n] for n in names], dtype=np.uint64)
    ids, first = matching.number(h1, np.array([second_hash[n] for n in names], np.uint64))
    by_name = defaultdict(set)
    for name, i in zip(names, ids, strict=True):
        by_name[name].add(int(i))
    assert all(len(v) == 1 for v in by_name.values())  # one id per name
    assert len({min(v) for v in by_name.values()}) == 3  # different names, different ids
    assert set(ids.tolist()) == {0, 1, 2}
    assert all(names[first[i]] == names[row] for row, i in enumerate(ids))


@pytest.mark.parametrize(
    "values",
    [
        [],
        [7],
        [5, 4, 5, 4, 0, 2**64 - 1, 0],  # differ only in the low bits that carry the index
        np.random.default_rng(1).integers(0, 2**64 - 1, 100_000, dtype=np.uint64),
        np.random.default_rng(2).integers(0, 50, 100_000, dtype=np.uint64) << np.uint64(40),
    ],
    ids=["empty", "one", "low bits", "random", "many equal"],
)
def test_sorting_gives_the_stable_order_of_the_values(values):
    values = np.asarray(values, dtype=np.uint64)
    by, ordered = matching.sort(values)
    assert by.tolist() == np.argsort(values, kind="stable").tolist()
    assert ordered.tolist() == sorted(values.tolist())


def test_a_key_singles_out_one_holder_however_often_held():
    singled = matching.singled_out(held([5, 5, 7, 7, 9, 0], [1, 1, 2, 2, 3, 0], [0, 1, 2, 2, 3, 4]))
    assert singled.h1.tolist() == [7, 9]  # 5 is held by two; 0 is no key (a part missing)
    assert singled.holder.tolist() == [2, 3]


def test_keys_colliding_on_one_hash_single_out_no_one():
    # Two different keys with the same h1 (a 64-bit collision) held by one holder each.
    assert matching.singled_out(held([5, 5], [1, 2], [0, 1])).h1.tolist() == []
    # The same key twice, by the same holder, still singles them out.
    assert matching.singled_out(held([5, 5], [1, 1], [0, 0])).holder.tolist() == [0]


def test_membership_is_exact_past_the_filter():
    wanted = np.array([(1 << 40) | 5], dtype=np.uint64)
    values = np.array([5, (1 << 40) | 5, (2 << 40) | 5, 6], dtype=np.uint64)
    assert matching.among(values, wanted).tolist() == [False, True, False, False]
    assert matching.among(values, np.array([], dtype=np.uint64)).tolist() == [False] * 4


def test_lookup_needs_both_hashes():
    singled = held([3, 8], [30, 80], [1, 2])
    keys = held([8, 3, 8, 4, 0], [80, 31, 80, 40, 0], [0, 0, 0, 0, 0])
    assert matching.lookup(keys, singled).tolist() == [2, -1, 2, -1, -1]


def test_a_side_with_two_candidates_is_not_linked():
    pupil = np.array([0, 0, 1, 1, 2, 3])
    patient = np.array([0, 1, 2, 2, 3, 3])
    p, q = matching.one_to_one(pupil, patient, 4, 4)
    assert list(zip(p.tolist(), q.tolist(), strict=True)) == [(1, 2)]


def test_only_the_still_open_are_candidates():
    pupils = held([10, 20], [1, 2], [0, 1])
    patients = held([10, 20], [1, 2], [0, 1])
    p, q = matching.candidates(pupils, patients, np.array([True, False]), np.array([True, True]))
    assert (p.tolist(), q.tolist()) == ([0], [0])


def test_empty_sides_link_no_one():
    none = held([], [], [])
    p, q = matching.candidates(none, none, np.ones(0, bool), np.ones(0, bool))
    assert len(p) == len(q) == 0
    ids, first = matching.number(np.array([], np.uint64), np.array([], np.uint64))
    assert len(ids) == len(first) == 0


def test_the_second_hash_of_a_key_clashes_independently_of_the_first():
    """DuckDB XORs the last value's hash into ``hash(a, b, …)``: a second hash over the same
    values would move with the first for keys that differ in their last part."""
    con = duckdb.connect()
    columns = ("fn", "sn", "pc")
    hashes = linkage._column_hashes(columns)
    rows = con.execute(
        f"SELECT {linkage._hashed(columns, 'k')} FROM (SELECT *, {hashes} FROM (VALUES "
        "('AMY', 'KHAN', 'LS61AA'), ('AMY', 'KHAN', 'LS62BB'), ('AMY', 'KHAN', 'M11CC'), "
        "('ZOE', 'KHAN', 'LS61AA')) t(fn, sn, pc))"
    ).fetchall()
    (a1, a2), *others = rows
    for b1, b2 in others:
        assert a1 ^ b1 != a2 ^ b2


# -- the whole of link(), against the rules read literally ---------------------------------------

CANON = equivalence_classes()
FORENAMES = ["WILLIAM", "BILL", "MOHAMMED", "MUHAMMAD", "AMY", "AMIE", "ZOE"]
SURNAMES = ["SMITH", "SMYTH", "KHAN", "JONES"]
DATES = [datetime.date(2010, 3, 4), datetime.date(2010, 4, 3), datetime.date(2011, 7, 7)]
POSTCODES = ["LS61AA", "LS62BB", "M11CC"]


def _random_identity(rng: random.Random) -> tuple:
    return (
        rng.choice(FORENAMES),
        rng.choice(SURNAMES),
        rng.choice(DATES),
        rng.choice("MF"),
        rng.choice([*POSTCODES, None]),
    )


def _changed(rng: random.Random, identity: tuple) -> tuple:
    fn, sn, dob, sex, pc = identity
    match rng.randrange(6):
        case 0:
            fn = rng.choice(FORENAMES)
        case 1:
            sn = sn[:-1] + "X"  # a typo
        case 2:
            pc = rng.choice(POSTCODES)
        case 3:
            dob = dob.replace(day=dob.month, month=dob.day) if dob and dob.day <= 12 else dob
        case 4:
            sn = rng.choice(SURNAMES)
    return fn, sn, dob, sex, pc


def _unknown(rng: random.Random, identity: tuple) -> tuple:
    """A hospital's record with, now and then, no sex (codes other than M/F, 1/2), no date of
    birth or no forename."""
    if rng.random() < 0.1:
        at = rng.choice([0, 2, 3])
        identity = (*identity[:at], None, *identity[at + 1 :])
    return identity


def _identities(seed: int, n_pupils: int, n_patients: int, n_records: int):
    """Small pools of names, dates and postcodes, so that keys are shared often (twins,
    namesakes), with patients made from pupils by the errors linkage meets."""
    rng = random.Random(seed)
    pupils = []
    for i in range(n_pupils):
        identity = _random_identity(rng)
        pupils.append((f"P{i:012d}", *identity))
        if rng.random() < 0.3:  # moved house: a second identity row
            pupils.append((f"P{i:012d}", *identity[:4], rng.choice(POSTCODES)))
    patients, orphans = [], []
    for i in range(n_patients):
        base = rng.choice(pupils)[1:] if pupils and rng.random() < 0.8 else _random_identity(rng)
        identity = _unknown(rng, _changed(rng, base) if rng.random() < 0.5 else base)
        patients.append((f"{9000000000 + i}", *identity))
        if rng.random() < 0.3:
            patients.append((f"{9000000000 + i}", *_unknown(rng, _changed(rng, identity))))
    for i in range(n_records):
        base = rng.choice(pupils + patients)[1:]
        base = _changed(rng, base) if rng.random() < 0.5 else base
        orphans.append((f"R{i}", *_unknown(rng, base)))
    return pupils, patients, orphans


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance (the same as Damerau–Levenshtein up to one edit)."""
    d = [[max(i, j) if 0 in (i, j) else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _fields(identity: tuple) -> dict:
    fn, sn, dob, sex, pc = identity
    swapped = (
        datetime.date(dob.year, dob.day, dob.month)
        if dob and dob.day <= 12 and dob.day != dob.month
        else None
    )
    return {
        "fn": fn,
        "sn": sn,
        "fnc": CANON.get(fn, fn),
        "snc": CANON.get(sn, sn),
        "dob": dob,
        "dob_swapped": swapped,
        "sex": sex,
        "pc": pc,
    }


def _key(identity: tuple, columns: tuple[str, ...]):
    values = tuple(_fields(identity)[c] for c in columns)
    return None if None in values else values


def _similar(a: tuple, b: tuple) -> bool:
    x, y = _fields(a), _fields(b)
    if None in (x["dob"], x["sex"], x["fnc"], x["snc"], y["dob"], y["sex"], y["fnc"], y["snc"]):
        return False  # SQL's NULL: never equal, never within an edit
    return (
        x["dob"] == y["dob"]
        and x["sex"] == y["sex"]
        and _edits(x["fnc"], y["fnc"]) <= 1
        and _edits(x["snc"], y["snc"]) <= 1
    )


def _one_to_one(candidates: set) -> set:
    of_pupil = Counter(p for p, _ in candidates)
    of_patient = Counter(q for _, q in candidates)
    return {(p, q) for p, q in candidates if of_pupil[p] == of_patient[q] == 1}


def _reference(pupils, patients, orphans):
    """Links by the documented rules, by brute force: (pairs, record → person)."""
    pairs: set = set()
    for _, pupil_cols, patient_cols in linkage.LEVELS:
        holders_p, holders_q = defaultdict(set), defaultdict(set)
        for upn, *identity in pupils:
            holders_p[_key(identity, pupil_cols)].add(upn)
        for nhs, *identity in patients:
            holders_q[_key(identity, patient_cols)].add(nhs)
        linked_p, linked_q = {p for p, _ in pairs}, {q for _, q in pairs}
        candidates = {
            (min(holders_p[k]), min(holders_q[k]))
            for k in holders_p.keys() & holders_q.keys()
            if k is not None and len(holders_p[k]) == len(holders_q[k]) == 1
        }
        pairs |= _one_to_one(
            {(p, q) for p, q in candidates if p not in linked_p and q not in linked_q}
        )
    linked_p, linked_q = {p for p, _ in pairs}, {q for _, q in pairs}
    pairs |= _one_to_one(
        {
            (upn, nhs)
            for upn, *a in pupils
            for nhs, *b in patients
            if upn not in linked_p and nhs not in linked_q and _similar(tuple(a), tuple(b))
        }
    )
    partner = {q: p for p, q in pairs}
    persons = [(upn, tuple(i)) for upn, *i in pupils] + [
        (partner.get(nhs, nhs), tuple(i)) for nhs, *i in patients
    ]
    records: dict = {}
    for _, pupil_cols, patient_cols in linkage.LEVELS:
        holders = defaultdict(set)
        for person, identity in persons:
            holders[_key(identity, pupil_cols)].add(person)
        for rid, *identity in orphans:
            key = _key(tuple(identity), patient_cols)
            if rid not in records and key is not None and len(holders.get(key, ())) == 1:
                records[rid] = min(holders[key])
    for rid, *identity in orphans:
        if rid not in records:
            similar = {p for p, i in persons if _similar(tuple(identity), i)}
            if len(similar) == 1:
                records[rid] = similar.pop()
    return pairs, records


@pytest.mark.parametrize(
    ("seed", "n_pupils", "n_patients", "n_records"),
    [
        *((seed, 40, 45, 15) for seed in range(6)),
        (6, 0, 30, 10),
        (7, 30, 0, 10),
        (8, 30, 30, 0),
        (9, 30, 0, 0),  # no hospital data yet: nothing to link
    ],
)
def test_links_are_those_the_rules_give(seed, n_pupils, n_patients, n_records):
    pupils, patients, orphans = _identities(seed, n_pupils, n_patients, n_records)
    con = duckdb.connect()
    pseudonyms.load_key(con, KEY)
    con.execute(
        f"CREATE TEMP TABLE {linkage.PUPIL_IDS} (upn VARCHAR, fn VARCHAR, sn VARCHAR, dob DATE, "
        "sex VARCHAR, pc VARCHAR, person_key UUID)"
    )
    con.execute(
        f"CREATE TEMP TABLE {linkage.PATIENT_IDS} (dataset VARCHAR, record_id VARCHAR, "
        "nhs VARCHAR, fn VARCHAR, sn VARCHAR, dob DATE, sex VARCHAR, pc VARCHAR, records BIGINT)"
    )
    rows = {
        linkage.PUPIL_IDS: [(*p, pseudonyms.person_key(KEY, f"upn:{p[0]}")) for p in pupils],
        linkage.PATIENT_IDS: [(None, None, *q, 2) for q in patients]
        + [("hes_ae", r[0], None, *r[1:], 1) for r in orphans],
    }
    for table, values in rows.items():
        if values:
            marks = ", ".join("?" * len(values[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
    result = linkage.link(con, KEY)

    pairs, records = _reference(pupils, patients, orphans)
    assert pairs or not (pupils and patients), "the identities should give some links"
    of_key = {pseudonyms.person_key(KEY, f"upn:{p[0]}"): p[0] for p in pupils}
    of_key |= {pseudonyms.person_key(KEY, f"nhs:{q[0]}"): q[0] for q in patients}
    linked = {
        (of_key[k], nhs)
        for nhs, k in con.execute("SELECT nhs, person_key FROM link_nhs_keys").fetchall()
        if of_key[k] != nhs
    }
    assert linked == pairs
    got = {
        rid: of_key.get(k)
        for rid, k in con.execute("SELECT record_id, person_key FROM link_orphan_keys").fetchall()
    }
    assert {rid: p for rid, p in got.items() if p is not None} == records
    for rid in set(got) - set(records):  # unlinked: a key of their own
        assert got[rid] is None
    assert sum(result.pupil_patient_links.values()) == len(pairs)
    assert sum(result.record_links.values()) == len(records)
    assert result.records == 2 * len(patients) + len(orphans)
    assert result.pupils == len({p[0] for p in pupils})


def test_numpy_and_arrow_conversions_keep_values_and_missing_ones():
    values = np.array([3, -1, 2**40, 0], dtype=np.int64)
    valid = np.array([True, False, True, True])
    arrow = matching.to_arrow(values, valid)
    assert arrow.to_pylist() == [3, None, 2**40, 0]
    flags = matching.to_arrow(np.array([True, False, True] * 5))
    assert flags.to_pylist() == [True, False, True] * 5
    chunked = pa.chunked_array([pa.array([1, 2], pa.uint64()), pa.array([2**64 - 1], pa.uint64())])
    assert matching.to_numpy(chunked).tolist() == [1, 2, 2**64 - 1]
    assert matching.to_numpy(pa.array([5, 6, 7], pa.int64()).slice(1)).tolist() == [6, 7]
    assert matching.to_numpy(pa.chunked_array([], pa.int64())).tolist() == []
    with pytest.raises(ValueError, match="missing"):
        matching.to_numpy(arrow)
