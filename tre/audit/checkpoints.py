"""Signed checkpoints of the audit log, kept outside the metadata database.

A checkpoint says "the log held ``seq`` events and its head hash was ``head`` at ``time``",
signed with the audit signing key (Ed25519). Checkpoints are numbered 1, 2, 3, … and each
holds the SHA-256 of the one before it (``previous``), so one taken out of the middle breaks
the sequence; the metadata database counts them too (``audit_head.checkpoint``), so ones taken
from the end are noticed.

They are files in ``<home>/audit/checkpoints`` (``000000000001.json``, …), with the public key
in ``<home>/audit/signing.pub``. In a home with separated accounts the folder, the files and
the signing key are root's: the privileged helper writes them
(:func:`tre.privileged.operations.write_audit_checkpoint`) and the services can read them but
neither change nor delete one. A file, once written, is never replaced.

What the checkpoints add to the chain and its MACs (:mod:`tre.audit.log`): someone holding
only the database can delete the newest events and move the head back, and every remaining
MAC still matches; a checkpoint that saw those events says they were there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tre.audit.log import canonical_json
from tre.exceptions import IntegrityError, InvalidInput

FORMAT = "tre-audit-checkpoint/1"
FOLDER = "audit"
CHECKPOINTS = "checkpoints"
PUBLIC_KEY = "signing.pub"
_NAME = re.compile(r"(\d{12})\.json")
_HASH = re.compile(r"[0-9a-f]{64}")
FIRST_PREVIOUS = "0" * 64
#: What a checkpoint file may weigh at most (it is a few hundred bytes).
MAX_FILE_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    index: int
    seq: int
    head: str
    time: str
    previous: str
    signature: str = ""

    def body(self) -> dict[str, Any]:
        """What is signed: everything but the signature."""
        fields = dataclasses.asdict(self)
        del fields["signature"]
        return {"format": FORMAT, **fields}

    def text(self) -> str:
        return canonical_json({**self.body(), "signature": self.signature}) + "\n"

    def digest(self) -> str:
        """What the next checkpoint holds as ``previous``."""
        return hashlib.sha256(self.text().encode()).hexdigest()

    def describe(self) -> str:
        return f"checkpoint {self.index} (seq {self.seq}, {self.time})"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint from its file's text; InvalidInput when it is not one."""
        try:
            raw = json.loads(text)
            if raw.pop("format") != FORMAT:
                raise ValueError("not a tre audit checkpoint")
            cp = cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InvalidInput(f"not a tre audit checkpoint ({e})") from None
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (cp.index, cp.seq))
        texts = all(isinstance(v, str) for v in (cp.time, cp.signature))
        hashes = all(isinstance(v, str) and _HASH.fullmatch(v) for v in (cp.head, cp.previous))
        if not (ints and texts and hashes) or cp.index < 1 or cp.seq < 0:
            raise InvalidInput("not a tre audit checkpoint (a field has the wrong form)")
        return cp


# -- keys ------------------------------------------------------------------------------------


def public_key_of(signing_key: bytes) -> bytes:
    private = Ed25519PrivateKey.from_private_bytes(signing_key)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """How a person compares keys: the first 32 hex digits of the key's SHA-256, grouped."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def sign(signing_key: bytes, checkpoint: Checkpoint) -> Checkpoint:
    private = Ed25519PrivateKey.from_private_bytes(signing_key)
    signature = private.sign(canonical_json(checkpoint.body()).encode()).hex()
    return dataclasses.replace(checkpoint, signature=signature)


def signed_by(public_key: bytes, checkpoint: Checkpoint) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            bytes.fromhex(checkpoint.signature), canonical_json(checkpoint.body()).encode()
        )
        return True
    except (InvalidSignature, ValueError):
        return False


# -- the store -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a store holds: its checkpoints that are sound, in order, and what is wrong."""

    checkpoints: list[Checkpoint]
    public_key: bytes | None
    problems: list[str]

    @property
    def latest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None


@dataclasses.dataclass(frozen=True)
class Store:
    """The checkpoints of one TRE home: ``<home>/audit``."""

    folder: Path

    @classmethod
    def of_home(cls, home: Path) -> Store:
        return cls(Path(home) / FOLDER)

    def public_key(self) -> bytes | None:
        try:
            text = (self.folder / PUBLIC_KEY).read_text().strip()
        except FileNotFoundError:
            return None
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise IntegrityError(
                f"{self.folder / PUBLIC_KEY} does not hold an Ed25519 public key: it was "
                "damaged or replaced. Restore it from a custodian's exported checkpoint."
            )
        return key

    def read(self) -> Reading:
        """Every checkpoint, each checked: well formed, signed by the store's key, numbered
        without a gap, each naming the one before and seeing at least as many events."""
        problems: list[str] = []
        key = self.public_key()
        folder = self.folder / CHECKPOINTS
        names = sorted(n for n in _listing(folder) if not n.startswith("."))
        sound: list[Checkpoint] = []
        before: Checkpoint | None = None
        last_index = 0
        for name in names:
            match = _NAME.fullmatch(name)
            if match is None:
                problems.append(f"{folder / name} is not a checkpoint: remove what was put there")
                continue
            index = int(match.group(1))
            expected, last_index = last_index + 1, index
            if index != expected:
                gap = f"{expected}" if index == expected + 1 else f"{expected} to {index - 1}"
                problems.append(f"checkpoint {gap} is missing from the store: deleted")
            try:
                cp = Checkpoint.parse(_read_small(folder / name))
            except (InvalidInput, OSError, UnicodeDecodeError) as e:
                problems.append(f"checkpoint {index} cannot be read: {e}")
                before = None
                continue
            if cp.index != index:
                problems.append(f"checkpoint file {name} holds checkpoint {cp.index}: renamed")
            elif key is None or not signed_by(key, cp):
                problems.append(
                    f"checkpoint {index} is not signed by this TRE's audit signing key: forged"
                )
            elif (
                before is not None
                and before.index == index - 1
                and (cp.previous != before.digest() or cp.seq < before.seq)
            ):
                problems.append(
                    f"checkpoint {index} does not follow checkpoint {before.index}: "
                    "one of them was replaced"
                )
            elif before is None and index == 1 and cp.previous != FIRST_PREVIOUS:
                problems.append("checkpoint 1 names a checkpoint before it: replaced")
            else:
                sound.append(cp)
            before = cp
        if names and key is None:
            problems.insert(0, f"{self.folder / PUBLIC_KEY} is missing: deleted")
        return Reading(sound, key, problems)


def append(
    folder: Path,
    signing_key: bytes,
    head_after: Callable[[Checkpoint | None], tuple[int, str]],
    lock: Path,
) -> Checkpoint | None:
    """Sign and store a checkpoint after the newest one; return it.

    ``head_after(newest)`` gives the (seq, head) to sign, once it has checked that the log
    extends the newest checkpoint (it raises otherwise, and nothing is signed). The same
    (seq, head) as the newest is not written again (that one is returned); an older seq
    writes nothing and returns None. ``lock`` (a file only the writer can open) serialises
    writers.
    """
    store = Store(folder)
    checkpoints = folder / CHECKPOINTS
    # setgid (as the home's audit folder is): what root writes here is the services' group's.
    checkpoints.mkdir(mode=0o2750, parents=True, exist_ok=True)
    public = public_key_of(signing_key)
    with _locked(lock):
        _write_once(folder / PUBLIC_KEY, public.hex() + "\n")
        if store.public_key() != public:
            raise IntegrityError(
                f"{folder / PUBLIC_KEY} is not the public half of the audit signing key: one "
                "of them was replaced. Restore both from the key backup."
            )
        index = max([0, *(_indexes(checkpoints))]) + 1
        latest = _checkpoint(checkpoints, index - 1)
        if latest is not None and not signed_by(public, latest):
            raise IntegrityError(
                f"The newest checkpoint ({index - 1}) is not signed by the audit signing key: "
                "it was forged or damaged. Run `tre audit verify`; no checkpoint is signed."
            )
        seq, head = head_after(latest)
        if latest is not None and seq < latest.seq:
            return None
        if latest is not None and seq == latest.seq:
            if head == latest.head:
                return latest
            raise IntegrityError(
                f"seq {seq} of the audit log no longer has the head that {latest.describe()} "
                "signed: the log was rewritten. Run `tre audit verify`."
            )
        on_disk = _checkpoint(checkpoints, index - 1)
        previous = on_disk.digest() if on_disk is not None else FIRST_PREVIOUS
        cp = sign(
            signing_key,
            Checkpoint(
                index=index,
                seq=seq,
                head=head,
                time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                previous=previous,
            ),
        )
        _write_once(checkpoints / f"{index:012d}.json", cp.text())
        return cp


def _indexes(folder: Path) -> Iterator[int]:
    for name in _listing(folder):
        match = _NAME.fullmatch(name)
        if match:
            yield int(match.group(1))


def _checkpoint(folder: Path, index: int) -> Checkpoint | None:
    """Checkpoint ``index`` as it is on disk, if it reads as one (whether or not it is sound:
    the checkpoints go on after a bad one, and verification reports it)."""
    if index < 1:
        return None
    try:
        return Checkpoint.parse(_read_small(folder / f"{index:012d}.json"))
    except (InvalidInput, OSError, UnicodeDecodeError):
        return None


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _read_small(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput("larger than a checkpoint")
    return data.decode("utf-8")


def _write_once(path: Path, text: str) -> None:
    """Write ``path`` whole (read-only, 0440) unless it exists; never replace it."""
    if path.exists() or path.is_symlink():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o440)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def exported(checkpoint: Checkpoint, public_key: bytes) -> dict[str, Any]:
    """What `tre audit checkpoint --export` gives a custodian: the checkpoint and the key that
    signed it, with the key's fingerprint to compare out of band."""
    return {
        "checkpoint": json.loads(checkpoint.text()),
        "public_key": public_key.hex(),
        "fingerprint": fingerprint(public_key),
    }


def from_export(text: str) -> tuple[Checkpoint, bytes]:
    """A checkpoint and its key from an exported copy, refused unless the key signed it."""
    try:
        raw = json.loads(text)
        cp = Checkpoint.parse(json.dumps(raw["checkpoint"]))
        key = bytes.fromhex(raw["public_key"])
    except (ValueError, TypeError, KeyError) as e:
        raise InvalidInput(f"This is not an exported audit checkpoint ({e}).") from None
    if len(key) != 32 or not signed_by(key, cp):
        raise IntegrityError("The exported checkpoint is not signed by the key it names.")
    return cp, key
