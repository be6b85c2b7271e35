"""Keyed pseudonyms: HMAC-SHA256 in Python and in DuckDB SQL, giving the same hex digests.

``person_key = HMAC-SHA256(K_link, canonical identity)`` in curated data, where the identity
is ``upn:<UPN>``, ``nhs:<NHS number>`` or ``rec:<dataset>:<record id>`` (see
:mod:`tre.linkage`). In SQL the HMAC is written with DuckDB's ``sha256`` over the key's inner
and outer pads, which live in a one-row temporary table: the key never appears in SQL text.
Each distinct identity is hashed once and joined, rather than hashing every row.
"""

from __future__ import annotations

import hashlib
import hmac

import duckdb

BLOCK = 64
PADS_TABLE = "_hmac_pads"


def person_key(key: bytes, identity: str) -> str:
    return hmac.new(key, identity.encode("utf-8"), hashlib.sha256).hexdigest()


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def load_key(con: duckdb.DuckDBPyConnection, key: bytes, name: str = "link") -> None:
    """Put the pads of ``key`` in the connection's temporary pads table under ``name``."""
    ipad, opad = _pads(key)
    con.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {PADS_TABLE} (name VARCHAR PRIMARY KEY, "
        "ipad BLOB, opad BLOB)"
    )
    con.execute(f"DELETE FROM {PADS_TABLE} WHERE name = ?", [name])
    con.execute(f"INSERT INTO {PADS_TABLE} VALUES (?, ?, ?)", [name, ipad, opad])


def hmac_sql(expr: str, name: str = "link") -> str:
    """SQL for the hex HMAC-SHA256 of the text ``expr`` under the key loaded as ``name``."""
    pads = f"(SELECT {{}} FROM {PADS_TABLE} WHERE name = '{name}')"
    return (
        f"sha256({pads.format('opad')} || unhex(sha256({pads.format('ipad')} || encode({expr}))))"
    )
