"""Match keys compared in numpy: the keys that single out one holder, and one-to-one links.

A key is two 64-bit hashes of its values, ``h1`` and ``h2``, both 0 where a part of the key
is missing (see :func:`tre.linkage._hashed`). Keys are grouped by ``h1`` and must agree on
``h2``: a group whose ``h2`` differ (two keys clashing on ``h1``, about 2^-64 per pair)
singles out no one, so such a clash can only miss a link, never make one.

Holders are dense integer ids (a pupil, a patient, a person), numbered in the same way from
two hashes of their UPN or NHS number (:func:`number`): comparing and counting them is sorting
and counting integers, which is what numpy does fastest.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa


@dataclasses.dataclass(frozen=True)
class Held:
    """Keys with their holder, one row each."""

    h1: np.ndarray
    h2: np.ndarray
    holder: np.ndarray

    def __getitem__(self, rows: np.ndarray) -> Held:
        return Held(self.h1[rows], self.h2[rows], self.holder[rows])

    @property
    def present(self) -> np.ndarray:
        return self.h1 != 0

    @staticmethod
    def concat(*parts: Held) -> Held:
        return Held(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("h1", "h2", "holder"))
        )


#: Arrow and numpy types of the columns linkage converts.
_TYPES = {pa.int64(): np.int64, pa.uint64(): np.uint64, pa.int32(): np.int32}


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Integers without missing values, as a (read-only) numpy array of the same memory.

    pyarrow's own conversions both ways (``to_numpy``, ``pa.array`` of a numpy array) import
    pandas on first use: 0.4 s, more than linkage spends converting."""
    dtype = _TYPES[values.type]
    if not len(values):
        # Before combine_chunks, which imports pandas for a chunked array of no chunks.
        return np.empty(0, dtype=dtype)
    if isinstance(values, pa.ChunkedArray):
        # combine_chunks copies even a single chunk.
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    if values.null_count:
        raise ValueError("missing values have no numpy integer")
    return np.frombuffer(
        values.buffers()[1],
        dtype=dtype,
        count=len(values),
        offset=values.offset * np.dtype(dtype).itemsize,
    )


def to_arrow(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A numpy array of integers or booleans as an Arrow array, missing where ``valid`` is
    False (see :func:`to_numpy`)."""
    if values.dtype == np.bool_:
        kind, data = pa.bool_(), np.packbits(values, bitorder="little")
    else:
        kind = {dtype: arrow for arrow, dtype in _TYPES.items()}[values.dtype.type]
        data = np.ascontiguousarray(values)
    buffers = [None, pa.py_buffer(data)]
    missing = 0
    if valid is not None:
        buffers[0] = pa.py_buffer(np.packbits(valid, bitorder="little"))
        missing = len(valid) - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(kind, len(values), buffers, null_count=missing)


def _starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of the sorted ``ordered`` starts."""
    return np.concatenate(([True], ordered[1:] != ordered[:-1]))[: len(ordered)]


def sort(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices that sort the 64-bit ``values`` (equal values in index order), and the
    values sorted.

    numpy's ``argsort`` is several times slower than its ``sort`` on 64-bit integers, so each
    value's index is put in its low bits and those are sorted; when two values differ only in
    those bits (about one chance in ten for a million random hashes), what comes out is not
    in order and ``argsort`` is used instead."""
    n = len(values)
    bits = max(1, (n - 1).bit_length())
    if bits <= 40:
        low = np.uint64((1 << bits) - 1)
        packed = values & ~low
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        packed &= low
        by = packed.view(np.int64)
        ordered = values[by]
        if not np.any(ordered[1:] < ordered[:-1]):
            return by, ordered
    by = np.argsort(values, kind="stable")
    return by, values[by]


def number(h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the holders named by two 64-bit hashes of their names (one pair per row): each
    row's holder id, 0, 1, …, and a row of each holder.

    Rows are grouped by ``h1`` and must agree on ``h2`` (two names agree on both with a
    probability of about 2^-128 per pair); if two names share ``h1`` only (about 2^-64 per
    pair), rows are grouped by both."""
    by, first = sort(h1)
    new = _starts(first)
    second = h2[by]
    if np.any(~new[1:] & (second[1:] != second[:-1])):
        by = np.lexsort((h2, h1))
        new = _starts(h1[by]) | _starts(h2[by])
    ids = np.empty(len(h1), dtype=np.int64)
    ids[by] = np.cumsum(new) - 1
    return ids, by[new]


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (numpy's own ``unique`` hashes, and is many times slower on
    64-bit keys than sorting)."""
    values = np.sort(values)
    return values[_starts(values)]


#: Bits of a key's ``h1`` that index :func:`among`'s filter (2^22 flags: 4 MiB, cache-sized).
FILTER_BITS = 22


def among(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``wanted`` (sorted, distinct).

    A flag per value of the low bits of ``h1`` (set for the wanted keys) rules most values out
    at the cost of one lookup in a cache-sized table; the few that pass are searched for."""
    found = np.zeros(len(values), dtype=bool)
    if not len(wanted) or not len(values):
        return found
    low = np.uint64((1 << FILTER_BITS) - 1)
    flags = np.zeros(1 << FILTER_BITS, dtype=bool)
    flags[wanted & low] = True
    maybe = np.flatnonzero(flags[values & low])
    at = np.searchsorted(wanted, values[maybe])
    at[at == len(wanted)] = 0
    found[maybe] = wanted[at] == values[maybe]
    return found


def singled_out(held: Held) -> Held:
    """The keys held by exactly one holder (however many times), sorted by ``h1``."""
    held = held[held.present]
    if not len(held.h1):
        return held
    by, h1 = sort(held.h1)
    held = Held(h1, held.h2[by], held.holder[by])
    start = np.flatnonzero(_starts(held.h1))
    one = (np.minimum.reduceat(held.holder, start) == np.maximum.reduceat(held.holder, start)) & (
        np.minimum.reduceat(held.h2, start) == np.maximum.reduceat(held.h2, start)
    )
    return held[start[one]]


def lookup(keys: Held, singled: Held) -> np.ndarray:
    """For each key of ``keys``, the holder ``singled`` (a :func:`singled_out` result) gives
    it, or -1."""
    found = np.full(len(keys.h1), -1, dtype=np.int64)
    if not len(singled.h1):
        return found
    at = np.searchsorted(singled.h1, keys.h1)
    at[at == len(singled.h1)] = 0
    hit = keys.present & (singled.h1[at] == keys.h1) & (singled.h2[at] == keys.h2)
    found[hit] = singled.holder[at[hit]]
    return found


def candidates(pupils: Held, patients: Held, pupil_open: np.ndarray, patient_open: np.ndarray):
    """(pupil, patient) pairs whose key singles out one pupil and one patient among everyone,
    both still open (``*_open``: by holder id).

    Once some are linked, only the keys that an open pupil and an open patient share are
    counted among everyone, so a level costs in proportion to who is left to link."""
    if not (pupil_open.all() and patient_open.all()):
        shared = distinct(pupils.h1[pupil_open[pupils.holder] & pupils.present])
        shared = shared[
            among(shared, distinct(patients.h1[patient_open[patients.holder] & patients.present]))
        ]
        pupils, patients = pupils[among(pupils.h1, shared)], patients[among(patients.h1, shared)]
    # The two sides in two threads: numpy sorts without holding the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(singled_out, (pupils, patients))
    found = lookup(a, b)
    pupil, patient = a.holder[found >= 0], found[found >= 0]
    keep = pupil_open[pupil] & patient_open[patient]
    return pupil[keep], patient[keep]


def one_to_one(pupil: np.ndarray, patient: np.ndarray, pupils: int, patients: int):
    """Of candidate pairs, the distinct ones in which each side has a single candidate."""
    if pupils * patients >= 2**63:
        raise ValueError(f"{pupils:,} pupils by {patients:,} patients: too many to pair")
    pairs = distinct(pupil.astype(np.int64) * patients + patient)
    pupil, patient = pairs // max(patients, 1), pairs % max(patients, 1)
    once = (np.bincount(pupil, minlength=pupils)[pupil] == 1) & (
        np.bincount(patient, minlength=patients)[patient] == 1
    )
    return pupil[once], patient[once]
