"""Plain files and ACRO sessions: checked on their face, always reviewed by people.

A CSV file is read as a table: any whole number above zero and below the threshold is flagged
as a possible small count. Other files (figures, documents) cannot be checked automatically.
Either way a plain file goes to review: only a table computed by the TRE from its specification
can pass on its own.

An ACRO session (``results.json`` and its files, as ``acro.finalise(path, "json")`` writes
them) is imported output by output: ACRO's own status, summary and comments are kept for the
checkers, and each CSV file is checked again on its face.

Files come from the researcher's own workspace folder, read by the privileged helper as their
workspace account (``read_workspace_files``): a path is relative to that folder, and neither
``..``, an absolute path nor a symlink leads out of it. What is kept is a copy, so what the
checkers review is what is released.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from tre.exceptions import InvalidInput
from tre.outputs import rules as R

MAX_FILE_BYTES = 50 << 20


def _check_size(path: Path) -> None:
    if not path.is_file():
        raise InvalidInput(f"There is no file {path}.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{path.name} is larger than {MAX_FILE_BYTES >> 20} MB: outputs are "
            "summaries, not data."
        )


def keep(name: str, data: bytes, folder: Path) -> Path:
    """Keep ``data`` (a file called ``name``) in ``folder`` under a name that starts with its
    SHA-256; read-only."""
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{name} is larger than {MAX_FILE_BYTES >> 20} MB: outputs are summaries, not data."
        )
    name = Path(name).name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f".{os.getpid()}-{name}.tmp"
    try:
        with open(tmp, "wb") as target:
            target.write(data)
        kept = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{name}"
        os.chmod(tmp, 0o440)
        os.replace(tmp, kept)
    finally:
        tmp.unlink(missing_ok=True)
    return kept


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, rule_set: R.RuleSet) -> dict[str, Any]:
    _check_size(path)
    cells: list[dict[str, Any]] = []
    reasons = ["a plain file is always reviewed by two output checkers"]
    if path.suffix.lower() == ".csv":
        cells = _csv_cells(path, rule_set)
        small = sum(c["status"] == R.FAIL for c in cells)
        if small:
            reasons.append(f"{small} value(s) look like counts below {rule_set.threshold}")
    else:
        reasons.append(f"a {path.suffix or 'file'} cannot be checked automatically")
    return {
        "kind": "file",
        "name": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
        "summary": {"status": R.REVIEW, "cells": len(cells), "reasons": reasons},
        "cells": cells,
    }


def _csv_cells(path: Path, rule_set: R.RuleSet) -> list[dict[str, Any]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidInput(f"{path.name} is not a readable CSV file: {e}") from None
    if not rows:
        return []
    header, cells = rows[0], []
    for row in rows[1:]:
        label = row[0] if row else ""
        for column, text in zip(header[1:], row[1:], strict=False):
            value = _number(text)
            if value is None:
                continue
            small = value.is_integer() and 0 < value < rule_set.threshold
            cells.append(
                {
                    "row": [label],
                    "col": [column],
                    "value": value,
                    "status": R.FAIL if small else R.REVIEW,
                    "reasons": [f"looks like a count below {rule_set.threshold}"] if small else [],
                    "suppression": None,
                }
            )
    return cells


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_acro_session(folder: str, results: bytes) -> list[dict[str, Any]]:
    """The outputs of the ACRO session in ``folder`` (relative to the workspace folder) whose
    ``results.json`` holds ``results``: name, ACRO's status and comments, and the paths of its
    files (relative to the workspace folder too)."""
    try:
        session = json.loads(results)
        outputs = session["results"]
        if not isinstance(outputs, dict):
            raise TypeError("results is not a mapping")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InvalidInput(f"{folder}/results.json is not an ACRO results file: {e}") from None
    imported = []
    for uid, output in outputs.items():
        names = [f["name"] for f in output.get("files", []) if isinstance(f, dict) and "name" in f]
        imported.append(
            {
                "uid": str(uid),
                "status": output.get("status"),
                "type": output.get("type"),
                "summary": output.get("summary", ""),
                "command": output.get("command", ""),
                "comments": output.get("comments", []),
                "exception": output.get("exception", ""),
                "files": [f"{folder.rstrip('/')}/{Path(str(n)).name}" for n in names],
            }
        )
    return imported
