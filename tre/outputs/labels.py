"""Labels of suppressed cells, as they leave the TRE.

A cell is suppressed because few people are in it; its label says what those few have in
common. Where the label is a category the catalog publishes (a column's allowed codes, a
flag's yes or no, a margin or a missing value), saying that the cell exists reveals nothing
the catalog does not. Anything else, such as a score, a year, a band or a code outside the
list, is hidden: a released output shows :data:`HIDDEN` in its place (issue #21: the labels of
failing cells were two pupils' records). Checkers see every label, and so does the researcher
inside the workspace, who holds the rows anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tre.outputs.tables import ALL, MISSING

HIDDEN = "(not a published category)"


def published(datasets: Sequence[str], column: str, flags: Sequence[str] = ()) -> frozenset | None:
    """The labels the catalog publishes for ``column`` of one of ``datasets`` (None: any, a
    flag's); an empty set when it publishes none."""
    from tre import catalog
    from tre.catalog.constraints import Codes

    if column in flags:
        return None
    for name in datasets:
        dataset = catalog.DATASETS.get(name)
        if dataset is None:
            continue
        for c in dataset.columns:
            if column in (c.name, c.released_name):
                codes = [k for k in c.constraints if isinstance(k, Codes)]
                return frozenset(codes[0].codes) if codes else frozenset()
    return frozenset()


def for_release(result: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` with each suppressed cell's labels that are not published categories
    replaced by :data:`HIDDEN` (a failing model's term names too: they name categories)."""
    datasets = [
        spec.get("dataset", ""),
        *(j.get("dataset", "") for j in spec.get("join", []) or [] if isinstance(j, Mapping)),
    ]
    flags = [f.get("name", "") for f in spec.get("flags", []) or [] if isinstance(f, Mapping)]
    kind = result.get("kind", spec.get("kind"))
    rows = list(spec.get("rows") or [])
    cols = list(spec.get("cols") or []) if kind == "table" else []
    allowed = [published(datasets, c, flags) for c in [*rows, *cols]]
    cells = []
    for cell in result.get("cells", []):
        if cell.get("value") is None:
            if kind == "model":
                cell = {**cell, "row": [HIDDEN for _ in cell["row"]]}
            else:
                labels = [*cell["row"], *(cell["col"] if kind == "table" else [])]
                shown = [
                    label
                    if label in (ALL, MISSING)
                    or i >= len(allowed)
                    or allowed[i] is None
                    or label in allowed[i]
                    else HIDDEN
                    for i, label in enumerate(labels)
                ]
                row = shown[: len(cell["row"])]
                col = shown[len(cell["row"]) :] if kind == "table" else cell["col"]
                cell = {**cell, "row": row, "col": col}
        cells.append(cell)
    return {**result, "cells": cells}
