"""Keyed pseudonyms: HMAC-SHA256 in Python and in DuckDB SQL, giving the same values.

``person_key`` in curated data is the first 128 bits of ``HMAC-SHA256(K_link, canonical
identity)`` (the truncation of RFC 2104, section 5), stored as a UUID: 16 bytes where the hex
digits of the whole HMAC took 64. The identity is ``upn:<UPN>``, ``nhs:<NHS number>`` or
``rec:<dataset>:<record id>`` (see :mod:`tre.linkage`). A project's ``pseudo_id`` is the
whole ``HMAC-SHA256(K_project, person_key)`` in hex, the person key written as text (the
UUID's usual form, lower case with hyphens).

In SQL the HMAC is written with DuckDB's ``sha256`` over the key's inner and outer pads, which
live in a one-row temporary table: the key never appears in SQL text. Each distinct identity is
hashed once and joined, rather than hashing every row.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

import duckdb

BLOCK = 64
PADS_TABLE = "_hmac_pads"
#: The SQL type of person_key in curated data.
PERSON_KEY_TYPE = "UUID"


def pseudonym(key: bytes, text: str) -> str:
    """The hex HMAC-SHA256 of ``text`` under ``key`` (what :func:`hmac_sql` gives)."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def person_key(key: bytes, identity: str) -> uuid.UUID:
    """An identity's person_key (what :func:`person_key_sql` gives)."""
    return uuid.UUID(hex=pseudonym(key, identity)[:32])


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
    """SQL for the hex HMAC-SHA256 of ``expr`` (as text) under the key loaded as ``name``."""
    pads = f"(SELECT {{}} FROM {PADS_TABLE} WHERE name = '{name}')"
    inner = f"unhex(sha256({pads.format('ipad')} || encode(CAST({expr} AS VARCHAR))))"
    return f"sha256({pads.format('opad')} || {inner})"


def person_key_sql(expr: str) -> str:
    """SQL for the person_key of the identity ``expr`` (under the link key, loaded)."""
    return f"CAST(left({hmac_sql(expr)}, 32) AS {PERSON_KEY_TYPE})"
