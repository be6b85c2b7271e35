"""Differencing: two releases over nearly the same people reveal the few who differ.

When a table is checked, it is compared with every earlier *released* table of the project
over the same records and the same row and column variables but other filters. For each cell,
the TRE counts, from the data, the units that are in one population and not the other. If
that number is above zero but below the threshold, subtracting one release from the other would
describe those few people: the cell fails, and the reason names the earlier release.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from tre.catalog import Type
from tre.exceptions import InvalidInput
from tre.outputs import rules as R
from tre.outputs.specs import UNIT, OutputSpec, where
from tre.outputs.tables import ALL, MISSING
from tre.sql import Connection, identifier

Key = tuple[tuple[str, ...], tuple[str, ...]]


def comparable(new: OutputSpec, old: OutputSpec) -> bool:
    """Same records and layout, other filters."""
    if old.kind != "table" or new.kind != "table":
        return False
    same_base = (
        new.dataset == old.dataset
        and new.join == old.join
        and new.flags == old.flags
        and set(new.rows) | set(new.cols) == set(old.rows) | set(old.cols)
    )
    return same_base and _filters(new) != _filters(old)


def same_rows(
    con: Connection,
    relation: str,
    columns: Mapping[str, Type],
    new: OutputSpec,
    old: OutputSpec,
) -> bool:
    """Whether ``old`` keeps exactly the rows of ``relation`` that ``new`` keeps, though its
    filters may be written otherwise (in another order, or one that excludes no one): the two
    then describe the same people, and are linked tables (:mod:`tre.outputs.linked`)."""
    if old.population() == new.population():
        return True
    if (new.dataset, new.join, new.flags) != (old.dataset, old.join, old.flags):
        return False
    in_new = f"coalesce({where(new.filters, columns, con)}, false)"
    try:
        in_old = f"coalesce({where(old.filters, columns, con)}, false)"
    except (InvalidInput, KeyError):  # a column the extracts no longer have: not the same rows
        return False
    (differ,) = con.execute(
        f"SELECT count(*) FROM {relation} WHERE {in_new} <> {in_old}"
    ).fetchone()
    return differ == 0


def _filters(spec: OutputSpec) -> set[str]:
    """The filters as comparable text (a condition's value may be a list: not hashable)."""
    return {json.dumps(dataclasses.asdict(c), sort_keys=True, default=str) for c in spec.filters}


def findings(
    con: Connection,
    relation: str,
    columns: Mapping[str, Type],
    new: OutputSpec,
    earlier: Iterable[tuple[str, OutputSpec]],
    rules: R.RuleSet,
) -> dict[Key, list[R.Finding]]:
    """Findings by cell key of ``new`` against each (label, spec) released earlier."""
    out: dict[Key, list[R.Finding]] = {}
    keys = [*new.rows, *new.cols]
    quoted = ", ".join(identifier(k) for k in keys)
    for label, old in earlier:
        if not comparable(new, old):
            continue
        in_new = f"coalesce({where(new.filters, columns, con)}, false)"
        try:
            in_old = f"coalesce({where(old.filters, columns, con)}, false)"
        except (InvalidInput, KeyError):  # a column the extracts no longer have
            continue
        sets = {tuple(keys), tuple(new.rows), tuple(new.cols), ()} if new.margins else {tuple(keys)}
        grouping = ", ".join("(" + ", ".join(identifier(k) for k in s) + ")" for s in sets)
        flags = ", ".join(f"grouping({identifier(k)}) AS _tre_g{i}" for i, k in enumerate(keys))
        differ = f"count(DISTINCT {identifier(UNIT)}) FILTER (WHERE {in_new} <> {in_old})"
        rows = con.execute(f"""
            SELECT {quoted}, {flags}, {differ} AS _tre_differ
            FROM {relation} WHERE {in_new} OR {in_old}
            GROUP BY GROUPING SETS ({grouping})""").fetchall()
        for row in rows:
            values, groups, differ = row[: len(keys)], row[len(keys) : 2 * len(keys)], row[-1]
            if not 0 < differ < rules.threshold:
                continue
            labels = [
                ALL if g else (MISSING if v is None else _label(v))
                for v, g in zip(values, groups, strict=True)
            ]
            key = (tuple(labels[: len(new.rows)]), tuple(labels[len(new.rows) :]))
            out.setdefault(key, []).append(
                R.Finding(
                    "differencing",
                    R.FAIL,
                    f"fewer than {rules.threshold} people differ between this cell and the same "
                    f"cell of the earlier release {label}: comparing the two would reveal them",
                )
            )
    return out


def _label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
