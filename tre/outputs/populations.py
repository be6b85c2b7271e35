"""Differencing by populations: whatever their layout, kind or filters, two released figures
over nearly the same people reveal the few who differ.

Every cell of every table, summary row and model is a *population*: the set of units (people,
by the project's ``pseudo_id``) it covers. For each one the engine keeps a :class:`Sketch`:
its size and an invertible Bloom lookup table (IBLT) of its units' keyed 64-bit hashes. The
difference of two sketches is the sketch of the two populations' symmetric difference, and
when that holds few units it can be listed back ("peeled"), so the engine learns exactly how
many people differ. A new cell whose population differs from a released one by 1 to
``threshold - 1`` people fails, naming the earlier release; two populations whose sizes
already differ by ``threshold`` or more are never compared.

A sketch is stored with its output (``outputs.populations``), never shown to anyone: peeled
on its own, a small cell's sketch lists its units' hashes. The hashes are keyed per project
(a key derived from the services' key, handed to the engine with the job), so that even a
sketch read from the database names no ``pseudo_id``.

Each unit goes into one bucket of each of :data:`HASHES` sub-tables of ``width`` buckets; a
bucket holds the count of its units, the XOR of their keys and the XOR of a check of each
key (a multiplicative hash, the same in DuckDB and in Python), by which a bucket holding one
unit is told from one holding several. Peeling fails, rarely, on a difference of fewer than
``threshold`` units; ``tests/unit/test_populations.py`` measures how rarely.
"""

from __future__ import annotations

import base64
import dataclasses
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tre.outputs import rules as R
from tre.outputs.tables import ALL, MISSING, Key, _label
from tre.sql import Connection, identifier

FORMAT = 1
HASHES = 4
#: Bits of the key each sub-table's bucket is taken from (0-15, 16-31, 32-47, 48-63).
_BITS = 16
_MASK = (1 << _BITS) - 1

MODEL: Key = (("model",), ())
#: A summary row's populations: everyone in it (its count) and those with a value (the rest).
COUNT, VALUE = "count", "value"


#: Sketches are made wide enough for thresholds up to this one (larger: wider), so that those
#: of outputs checked under different thresholds can be compared.
WIDTH_THRESHOLD = 20


def width_for(threshold: int) -> int:
    """Buckets per sub-table for differences of up to ``threshold - 1`` units."""
    return max(12, 3 * (threshold - 1))


def buckets_of(key: int, width: int) -> list[int]:
    return [j * width + ((key >> (_BITS * j)) & _MASK) % width for j in range(HASHES)]


@dataclasses.dataclass(frozen=True)
class Sketch:
    n: int
    counts: np.ndarray  # int64, HASHES × width
    keys: np.ndarray  # uint64
    checks: np.ndarray  # uint64

    @classmethod
    def empty(cls, width: int) -> Sketch:
        size = HASHES * width
        zeros = np.zeros(size, np.uint64)
        return cls(0, np.zeros(size, np.int64), zeros, zeros.copy())

    @classmethod
    def of(cls, units: Iterable[int], width: int) -> Sketch:
        """The sketch of a set of keys (what DuckDB computes; for tests)."""
        sketch = cls.empty(width)
        n = 0
        for key in set(units):
            n += 1
            for b in buckets_of(key, width):
                sketch.counts[b] += 1
                sketch.keys[b] ^= np.uint64(key)
                sketch.checks[b] ^= np.uint64(check_of(key))
        return dataclasses.replace(sketch, n=n)

    def to_wire(self) -> list[Any]:
        packed = (
            self.counts.astype("<i4").tobytes()
            + self.keys.astype("<u8").tobytes()
            + self.checks.astype("<u4").tobytes()
        )
        return [self.n, base64.b64encode(packed).decode()]

    @classmethod
    def from_wire(cls, data: Sequence[Any], width: int) -> Sketch:
        n, packed = data
        raw = base64.b64decode(packed)
        size = HASHES * width
        if len(raw) != size * 16:
            raise ValueError("a population sketch of another size")
        counts = np.frombuffer(raw[: 4 * size], "<i4").astype(np.int64)
        keys = np.frombuffer(raw[4 * size : 12 * size], "<u8").astype(np.uint64)
        checks = np.frombuffer(raw[12 * size :], "<u4").astype(np.uint64)
        return cls(int(n), counts, keys, checks)


#: What :func:`difference` says of a difference it could not list back though it may be small.
UNDECIDED = -1


def difference(a: Sketch, b: Sketch, width: int, most: int) -> int | None:
    """How many units are in one population and not the other, if fewer than ``most``; None
    when there are ``most`` or more; :data:`UNDECIDED` when the difference may be that small
    but cannot be listed back (rarely: the caller then treats it as small).

    Each unit of the difference adds 1 to the count of one bucket in each of the
    :data:`HASHES` sub-tables, and cancelling can only lower that: so a difference whose
    counts sum, in absolute value, to more than ``HASHES × (most - 1)`` holds ``most`` units
    or more, for sure."""
    if abs(a.n - b.n) >= most:
        return None
    counts = a.counts - b.counts
    if int(np.abs(counts).sum()) > HASHES * (most - 1):
        return None
    keys = a.keys ^ b.keys
    checks = a.checks ^ b.checks
    if not counts.any() and not keys.any() and not checks.any():
        return 0
    counts, keys, checks = counts.tolist(), keys.tolist(), checks.tolist()
    found = 0
    pending = [i for i, c in enumerate(counts) if c in (1, -1)]
    while pending:
        i = pending.pop()
        if counts[i] not in (1, -1):
            continue
        key = keys[i]
        spots = buckets_of(key, width)
        if i not in spots or checks[i] != check_of(key):
            continue
        sign = counts[i]
        for b in spots:
            counts[b] -= sign
            keys[b] ^= key
            checks[b] ^= check_of(key)
            if counts[b] in (1, -1):
                pending.append(b)
        found += 1
        if found >= most:
            return None
    if any(counts) or any(keys) or any(checks):
        return UNDECIDED
    return found


# -- computing a new output's populations in DuckDB ----------------------------------------------


def _sketches_sql(
    relation: str,
    where: str,
    keys: Sequence[str],
    sets: Sequence[Sequence[str]],
    unit: str,
    key_param: str,
    width: int,
) -> str:
    """Each unit once per cell of every grouping set (one pass: DuckDB's grouping sets), then
    each sub-table's buckets aggregated on its own (a union of four, not four times the
    rows)."""
    quoted = [identifier(k) for k in keys]
    # Keyed: 64 bits of MD5 over the project's key and the unit (DuckDB's own hash() of a key
    # and a value is the value's hash XOR a constant, which one known member gives away).
    unit_key = f"md5_number_lower({key_param} || '|' || CAST({identifier(unit)} AS VARCHAR))"
    grouping = ", ".join(
        "(" + ", ".join([*(identifier(k) for k in s), "_tre_k"]) + ")" for s in sets
    )
    used = {k for s in sets for k in s}  # a key in no set is a margin throughout
    selected = "".join(
        f"{q}, " if k in used else f"NULL AS {q}, " for k, q in zip(keys, quoted, strict=True)
    )
    flags = "".join(
        f"grouping({q}) AS _tre_g{i}, " if k in used else f"1 AS _tre_g{i}, "
        for i, (k, q) in enumerate(zip(keys, quoted, strict=True))
    )
    listed = "".join(f"{q}, " for q in quoted) + "".join(f"_tre_g{i}, " for i in range(len(keys)))
    hi, lo = "(_tre_k >> 32)", "(_tre_k & 4294967295)"
    parts = [
        f"SELECT {listed} {j * width} + ((_tre_k >> {j * _BITS}) & {_MASK}) % {width} AS _tre_b, "
        f"count(*) AS _tre_n, bit_xor(_tre_k) AS _tre_x, bit_xor(_tre_c) AS _tre_y "
        f"FROM _tre_checked GROUP BY ALL"
        for j in range(HASHES)
    ]
    return f"""
        WITH _tre_keyed AS (
            SELECT {"".join(f"{q}, " for q in quoted)} {unit_key} AS _tre_k
            FROM {relation} WHERE ({where}) AND {identifier(unit)} IS NOT NULL),
        _tre_units AS (
            SELECT {selected} {flags} _tre_k
            FROM _tre_keyed GROUP BY GROUPING SETS ({grouping})),
        _tre_checked AS (
            SELECT *, (({hi} * ({lo} | 1)) >> 16) & 4294967295 AS _tre_c FROM _tre_units)
        {" UNION ALL ".join(parts)}"""


def check_of(key: int) -> int:
    """The check of a key: bits 16 to 47 of its high half times its low half (made odd),
    which DuckDB computes in 64 bits without overflow."""
    return (((key >> 32) * ((key & 0xFFFFFFFF) | 1)) >> 16) & 0xFFFFFFFF


def compute(
    con: Connection,
    relation: str,
    where: str,
    rows: Sequence[str],
    cols: Sequence[str],
    unit: str,
    key: bytes,
    width: int,
    margins: bool = False,
    only: Iterable[Key] | None = None,
) -> dict[Key, Sketch]:
    """The sketch of every cell of a table by ``rows`` × ``cols`` (with its margins: each row,
    each column and everything, labelled as the table labels them); with ``only``, of the
    grouping sets those cells may belong to (at least)."""
    keys = [*rows, *cols]
    sets = [tuple(keys)]
    if margins:
        # Every total the cells add up to, whether the table shows it or not: each subset of
        # its variables (a region × sex table gives each region's total by addition).
        sets = [
            tuple(k for i, k in enumerate(keys) if mask >> i & 1)
            for mask in range((1 << len(keys)) - 1, -1, -1)
        ]
    queries: list[tuple[list[tuple[str, ...]], str]] = [(sets, where)]
    if only is not None:
        # Only the grouping sets the cells may belong to, each over the rows whose values
        # have those cells' labels (as text: a cell whose labels DuckDB writes otherwise is
        # missed here, which the caller finds out by its count and computes again whole).
        cells = [[*k[0], *k[1]] for k in only]
        queries = []
        for s in sets:
            mine = [labels for labels in cells if s in sets_of(labels, keys)]
            if mine:
                queries.append(([s], f"({where}) AND {_among(con, keys, s, mine)}"))
    found: dict[tuple, list] = {}
    for grouped, condition in queries:
        sql = _sketches_sql(relation, condition, keys, grouped, unit, con.bind(key.hex()), width)
        for row in con.execute(sql).fetchall():
            values, flags = row[: len(keys)], row[len(keys) : 2 * len(keys)]
            bucket, n, x, y = row[2 * len(keys) :]
            found.setdefault((tuple(values), tuple(flags)), []).append((bucket, n, x, y))
    out: dict[Key, Sketch] = {}
    for (values, flags), buckets in found.items():
        labels = [
            ALL if g else (MISSING if v is None else _label(v))
            for v, g in zip(values, flags, strict=True)
        ]
        sketch = Sketch.empty(width)
        index = np.asarray([b[0] for b in buckets], np.int64)
        sketch.counts[index] = np.asarray([b[1] for b in buckets], np.int64)
        sketch.keys[index] = np.asarray([b[2] for b in buckets], np.uint64)
        sketch.checks[index] = np.asarray([b[3] for b in buckets], np.uint64)
        n = int(sketch.counts[:width].sum())
        out[(tuple(labels[: len(rows)]), tuple(labels[len(rows) :]))] = dataclasses.replace(
            sketch, n=n
        )
    return out


def _among(
    con: Connection, keys: Sequence[str], grouped: Sequence[str], cells: Sequence[Sequence[str]]
) -> str:
    """Each key of ``grouped`` among the labels ``cells`` give it."""
    parts = ["true"]
    for key in grouped:
        labels = sorted({cell[keys.index(key)] for cell in cells})
        shown = [label for label in labels if label != MISSING]
        either = []
        if shown:
            bound = ", ".join(con.bind(label) for label in shown)
            either.append(f"CAST({identifier(key)} AS VARCHAR) IN ({bound})")
        if MISSING in labels:
            either.append(f"{identifier(key)} IS NULL")
        parts.append("(" + " OR ".join(either) + ")")
    return " AND ".join(parts)


def sets_of(labels: Sequence[str], keys: Sequence[str]) -> list[tuple[str, ...]]:
    """Every grouping set a cell of these ``labels`` may belong to: a key labelled ``All`` may
    be a margin or a category of that name, so both."""
    out: list[tuple[str, ...]] = [()]
    for key, label in zip(keys, labels, strict=True):
        out = [(*s, key) for s in out] + (out if label == ALL else [])
    return out


# -- what is stored with an output ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Populations:
    """The sketches of an output's cells (by cell key), of one width, and the threshold its
    checks used (a difference below it is what a comparison with it looks for)."""

    width: int
    cells: Mapping[Key, Sketch]
    threshold: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "width": self.width,
            "threshold": self.threshold,
            "cells": [[list(k[0]), list(k[1]), *s.to_wire()] for k, s in self.cells.items()],
        }

    @staticmethod
    def threshold_of(data: Mapping[str, Any] | None) -> int:
        return int(data.get("threshold") or 0) if isinstance(data, Mapping) else 0

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | None, width: int) -> Populations | None:
        """The stored populations, or None when there are none of this width (made before
        populations were kept, or for a larger threshold): the engine then computes them."""
        if not data or data.get("format") != FORMAT or data.get("width") != width:
            return None
        cells = {
            (tuple(row), tuple(col)): Sketch.from_wire((n, packed), width)
            for row, col, n, packed in data["cells"]
        }
        return cls(width, cells, cls.threshold_of(data))


@dataclasses.dataclass(frozen=True)
class Released:
    """An earlier release's cells that were shown, with their populations, and the threshold
    it was checked under."""

    label: str
    cells: Mapping[Key, Sketch]
    threshold: int = 0


def shown_cells(populations: Populations, cells: Iterable[Mapping[str, Any]]) -> dict[Key, Sketch]:
    """The sketches of the cells an output shows (a value released), by key: a table's cells
    (and the totals its cells add up to, always sketched), a summary's rows (its count covers
    the row's people, its other statistics the people with a value), a model's every
    population if it shows anything."""
    shown = [(tuple(c["row"]), tuple(c["col"])) for c in cells if c.get("value") is not None]
    if not shown:
        return {}
    if MODEL in populations.cells:
        return dict(populations.cells)
    out = {}
    for key in shown:
        row, col = key
        statistic = col[0] if len(col) == 1 else None
        for candidate in (key, (row, (COUNT if statistic == "count" else VALUE,)), (row, ())):
            if candidate in populations.cells:
                out[candidate] = populations.cells[candidate]
                break
    # What the shown cells add up to is released too (a table without margins gives its
    # totals by addition): a total is compared when every cell that adds up to it is shown.
    values = {(tuple(c["row"]), tuple(c["col"])): c.get("value") for c in cells}
    for key, sketch in populations.cells.items():
        if key in out or key in values or not (ALL in key[0] or ALL in key[1]):
            continue
        labels = [*key[0], *key[1]]
        covered = [
            v
            for k, v in values.items()
            if len(labels) == len(k[0]) + len(k[1])
            and all(a in (ALL, b) for a, b in zip(labels, [*k[0], *k[1]], strict=True))
        ]
        if covered and all(v is not None for v in covered):
            out[key] = sketch
    return out


def findings(
    new: Populations, earlier: Sequence[Released], threshold: int
) -> dict[Key, list[R.Finding]]:
    """Findings by cell key of ``new``: a cell whose population differs from a cell of an
    earlier release by 1 to ``t - 1`` people fails, naming that release and cell; ``t`` is
    the larger of the two outputs' thresholds. A difference that may be that small but cannot
    be listed back fails too. Candidates are found by size, then by the sum of their counts'
    differences (vectorised), before any is listed back."""
    candidates = sorted(
        (
            (s, release.label, key, max(threshold, release.threshold))
            for release in earlier
            for key, s in release.cells.items()
        ),
        key=lambda c: c[0].n,
    )
    if not candidates:
        return {}
    most = max(c[3] for c in candidates)
    sizes = [c[0].n for c in candidates]
    stack = np.stack([c[0].counts for c in candidates])
    limits = np.array([HASHES * (c[3] - 1) for c in candidates])
    out: dict[Key, list[R.Finding]] = {}
    for key, sketch in new.cells.items():
        lo = bisect_left(sizes, sketch.n - most + 1)
        hi = bisect_right(sizes, sketch.n + most - 1)
        if lo >= hi:
            continue
        apart = np.abs(stack[lo:hi] - sketch.counts).sum(axis=1)
        for i in np.nonzero(apart <= limits[lo:hi])[0]:
            old, label, _, t = candidates[lo + int(i)]
            differ = difference(sketch, old, new.width, t)
            if differ:
                # Neither cell is named: which of them differ would itself say where the few
                # people are, and an earlier cell's label may be one never released.
                why = (
                    f"fewer than {t} people differ between a figure of this output and one of "
                    f"the earlier release {label}: comparing the two would reveal them"
                )
                if differ == UNDECIDED:
                    why = (
                        f"a figure of this output and one of the earlier release {label} may "
                        f"differ by fewer than {t} people (the difference could not be worked "
                        "out exactly): comparing the two could reveal them"
                    )
                out.setdefault(key, []).append(R.Finding("differencing", R.FAIL, why))
                break
    return out
