"""Whether two outputs describe the same rows though their filters are written otherwise.

Differencing itself (two releases over nearly the same people) compares the populations of
cells, whatever their layout or kind: :mod:`tre.outputs.populations`. Outputs over exactly the
same rows are linked tables instead (:mod:`tre.outputs.linked`), which this module tells.
"""

from __future__ import annotations

from collections.abc import Mapping

from tre.catalog import Type
from tre.exceptions import InvalidInput
from tre.outputs.specs import OutputSpec, where
from tre.sql import Connection


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
