"""Population sketches: the difference of two populations is counted exactly when it is
small, never under-counted, and the sketches DuckDB computes agree with the sets they sketch."""

from __future__ import annotations

import random

import duckdb
import pytest

from tre.outputs import populations as P
from tre.sql import Connection


@pytest.mark.parametrize("threshold", [3, 5, 10, 20])
def test_a_small_difference_is_counted_exactly(threshold):
    """Seeded trials of every small difference, one- and two-sided: each one is counted
    exactly (a difference the sketch could not peel would let differencing pass)."""
    rng = random.Random(threshold)
    width = P.width_for(threshold)
    for trial in range(2000):
        base = [rng.getrandbits(64) for _ in range(rng.randint(0, 60))]
        d = 1 + trial % (threshold - 1)
        extra = [rng.getrandbits(64) for _ in range(d)]
        split = rng.randint(0, d)
        a = P.Sketch.of(base + extra[:split], width)
        b = P.Sketch.of(base + extra[split:], width)
        assert P.difference(a, b, width, threshold) == d, (trial, d, split)
        assert P.difference(a, a, width, threshold) == 0


@pytest.mark.parametrize("threshold", [3, 10])
def test_a_large_difference_is_never_counted_as_small(threshold):
    rng = random.Random(99)
    width = P.width_for(threshold)
    for trial in range(1000):
        base = [rng.getrandbits(64) for _ in range(rng.randint(0, 200))]
        d = threshold + trial % (5 * threshold)
        extra = [rng.getrandbits(64) for _ in range(d)]
        split = rng.randint(0, d)
        a = P.Sketch.of(base + extra[:split], width)
        b = P.Sketch.of(base + extra[split:], width)
        assert P.difference(a, b, width, threshold) is None, (trial, d)


def test_a_sketch_survives_its_wire_form():
    width = P.width_for(10)
    rng = random.Random(1)
    sketch = P.Sketch.of([rng.getrandbits(64) for _ in range(40)], width)
    again = P.Sketch.from_wire(sketch.to_wire(), width)
    assert again.n == 40 and P.difference(sketch, again, width, 10) == 0
    with pytest.raises(ValueError):
        P.Sketch.from_wire(sketch.to_wire(), width + 1)


def test_duckdb_sketches_count_the_people_who_differ():
    """Per cell and margin, the difference DuckDB's sketches give is the true number of people
    in one cell's population and not the other's (counted here from the rows)."""
    raw = duckdb.connect()
    rng = random.Random(7)
    rows = [(f"p{rng.randrange(400)}", rng.choice("ABC"), rng.choice("xy")) for _ in range(2000)]
    raw.execute("CREATE TABLE t (pseudo_id VARCHAR, a VARCHAR, b VARCHAR)")
    raw.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    con = Connection(raw)
    width, key = P.width_for(10), b"k" * 32
    dropped = set(sorted({p for p, _, _ in rows})[:4])
    full = P.compute(con, "t", "true", ["a"], ["b"], "pseudo_id", key, width, margins=True)
    where = "pseudo_id NOT IN (" + ", ".join(f"'{p}'" for p in sorted(dropped)) + ")"
    less = P.compute(con, "t", where, ["a"], ["b"], "pseudo_id", key, width, margins=True)
    assert set(full) == set(less) and len(full) == 3 * 2 + 3 + 2 + 1

    def people(row: str, col: str) -> set[str]:
        return {p for p, a, b in rows if row in (a, "All") and col in (b, "All")}

    for (row, col), sketch in full.items():
        population = people(row[0], col[0])
        assert sketch.n == len(population)
        assert P.difference(sketch, less[(row, col)], width, 10) == len(population & dropped)


def test_a_one_way_tables_margin_counts_each_person_once():
    """Its grouping sets (the rows, and everything) are each sketched once: a set listed twice
    counted everyone twice, and the margin was compared with nothing of its size."""
    raw = duckdb.connect()
    raw.execute("CREATE TABLE t AS SELECT 'p' || i AS pseudo_id, i % 3 AS a FROM range(50) r(i)")
    width = P.width_for(10)
    found = P.compute(Connection(raw), "t", "true", ["a"], [], "pseudo_id", b"k", width, True)
    assert found[(("All",), ())].n == 50
    assert sorted(s.n for k, s in found.items() if k[0] != ("All",)) == [16, 17, 17]
