"""The catalog: every custodian, dataset and column the TRE holds, declared as code.

Everything about a column (type, description, sensitivity, release transform, constraints,
part in linkage) is declared once here; validation, ingest, synthetic data and the catalog
reference in the docs are derived from it.
"""

from __future__ import annotations

import hashlib
import json

from tre.catalog.education import DFE
from tre.catalog.health import NHS
from tre.catalog.model import (
    Column,
    Custodian,
    Dataset,
    Identity,
    RowCheck,
    Sensitivity,
    Transform,
    Type,
)
from tre.exceptions import NotFound

CUSTODIANS: dict[str, Custodian] = {c.id: c for c in (DFE, NHS)}
DATASETS: dict[str, Dataset] = {d.name: d for c in CUSTODIANS.values() for d in c.datasets}


def _fingerprint() -> str:
    def column(c: Column) -> dict:
        return {
            "name": c.name,
            "type": c.type.value,
            "sensitivity": c.sensitivity.value,
            "transform": c.transform.value,
            "released_as": c.released_name,
            "required": c.required,
            "constraints": [repr(k) for k in c.constraints],
            "identity": c.identity and c.identity.value,
        }

    shape = {
        name: {
            "custodian": d.custodian,
            "columns": [column(c) for c in d.columns],
            "record_key": d.record_key,
            "row_checks": [repr(r) for r in d.row_checks],
        }
        for name, d in sorted(DATASETS.items())
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]


#: Changes whenever a declaration that affects validation, linkage or release changes.
CATALOG_VERSION = f"1.{_fingerprint()}"


def custodian(custodian_id: str) -> Custodian:
    try:
        return CUSTODIANS[custodian_id]
    except KeyError:
        raise NotFound(
            f"There is no custodian {custodian_id!r}. Known custodians: "
            f"{', '.join(sorted(CUSTODIANS))}."
        ) from None


def dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise NotFound(
            f"There is no dataset {name!r} in the catalog. Known datasets: "
            f"{', '.join(sorted(DATASETS))}."
        ) from None


__all__ = [
    "CATALOG_VERSION",
    "CUSTODIANS",
    "DATASETS",
    "Column",
    "Custodian",
    "Dataset",
    "Identity",
    "RowCheck",
    "Sensitivity",
    "Transform",
    "Type",
    "custodian",
    "dataset",
]
