"""Custodians' signing keys.

Each custodian signs the manifest of every delivery with an Ed25519 private key that never
leaves the custodian (``tre custodian keygen`` makes a pair). The TRE holds the public keys,
registered by an administrator and audited; ``tre ingest`` refuses a delivery whose manifest
signature does not verify against a registered, unrevoked key of the custodian it names.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.orm import Mapped, Session, mapped_column

from tre import audit, catalog
from tre.db import Base
from tre.exceptions import IntegrityError, InvalidInput, NotFound

audit.declare_actions(
    {
        "custodian.key_registered": "A custodian's public signing key was registered.",
        "custodian.key_revoked": "A custodian's public signing key was revoked.",
    }
)


class CustodianKey(Base):
    __tablename__ = "custodian_keys"

    key_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    custodian: Mapped[str] = mapped_column(sa.String(32), index=True)
    public_key: Mapped[str] = mapped_column(sa.String(64))
    registered_at: Mapped[str] = mapped_column(sa.String(32))
    revoked_at: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(custodian_id: str, out: Path) -> tuple[Path, Path]:
    """Write ``<custodian>.key`` (private, 0600) and ``<custodian>.pub`` into ``out``."""
    catalog.custodian(custodian_id)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{custodian_id}.key", out / f"{custodian_id}.pub"
    if private_path.exists():
        raise InvalidInput(
            f"{private_path} already exists. Keep using it, or move it away first: a new key "
            "must be registered with the TRE before deliveries signed with it are accepted."
        )
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{path} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} is not an Ed25519 public key.")
    return key


@dataclasses.dataclass(frozen=True)
class Signer:
    key_id: str
    sign: Callable[[bytes], bytes]


def signer(private_key_path: Path) -> Signer:
    """Signs bytes with the custodian's private key (read from a PEM file)."""
    try:
        key = serialization.load_pem_private_key(private_key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise InvalidInput(
            f"{private_key_path} is not an unencrypted PEM private key: {e}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{private_key_path} is not an Ed25519 private key.")
    return Signer(key_id(key.public_key()), key.sign)


def register(
    session: Session, custodian_id: str, public_key: Ed25519PublicKey, event: audit.Event
) -> str:
    catalog.custodian(custodian_id)
    kid = key_id(public_key)
    existing = session.get(CustodianKey, kid)
    if existing is not None:
        if existing.custodian != custodian_id:
            raise InvalidInput(
                f"That key is already registered for custodian {existing.custodian}."
            )
        return kid
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    session.add(
        CustodianKey(
            key_id=kid,
            custodian=custodian_id,
            public_key=base64.b64encode(raw).decode(),
            registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    )
    audit.record(
        session, event.but(object_type="custodian", object_id=custodian_id, details={"key_id": kid})
    )
    return kid


def revoke(session: Session, kid: str, event: audit.Event) -> None:
    key = session.get(CustodianKey, kid)
    if key is None:
        raise NotFound(f"No registered key has the id {kid}.")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC).isoformat(timespec="seconds")
        audit.record(
            session,
            event.but(object_type="custodian", object_id=key.custodian, details={"key_id": kid}),
        )


def verify_signature(
    session: Session, custodian_id: str, kid: str, message: bytes, signature: bytes
) -> None:
    """Raise unless ``signature`` is ``custodian_id``'s, by a registered, unrevoked key."""
    keys = (
        session.execute(sa.select(CustodianKey).where(CustodianKey.custodian == custodian_id))
        .scalars()
        .all()
    )
    if not keys:
        raise IntegrityError(
            f"No signing key is registered for custodian {custodian_id}. An administrator "
            f"registers the custodian's public key with `tre custodian register {custodian_id} "
            "KEY.pub`."
        )
    key = next((k for k in keys if k.key_id == kid), None)
    if key is None:
        raise IntegrityError(
            f"The delivery is signed with key {kid}, which is not registered for custodian "
            f"{custodian_id}. Ask the custodian which key they used."
        )
    if key.revoked_at is not None:
        raise IntegrityError(
            f"The delivery is signed with key {kid} of {custodian_id}, revoked on "
            f"{key.revoked_at}. Ask the custodian to sign with their current key."
        )
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key.public_key))
    try:
        public.verify(signature, message)
    except InvalidSignature:
        raise IntegrityError(
            f"The signature of the manifest does not verify with {custodian_id}'s key {kid}: "
            "the manifest was changed after signing, or signed with another key. Ask the "
            "custodian to send the delivery again."
        ) from None
