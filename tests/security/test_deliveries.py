"""Boundary: a delivery folder, written by a custodian, is read by the TRE's ingest account.

The attacker can write the delivery folder (a custodian, or whoever else can write where
deliveries arrive), before ingest and while it runs. What they may get in is what the
custodian's registered key signed, and nothing else: no other manifest, no file outside the
folder (a key, a system file, another custodian's landing copy). Ingest reads manifest.json
once and checks the signature over exactly the bytes it parses; it opens every file relative to
the folder it opened, without following links, refuses anything that is not a regular file, and
lands what it read from those descriptors. Canary files watched through the kernel's inotify
show that nothing outside the delivery is opened.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.factories import edit_csv, init_home
from tests.security.canaries import Canaries
from tre import curated, custodians, ingest
from tre.cli import main
from tre.config import Settings
from tre.db import Database
from tre.deliveries import MANIFEST, SIGNATURE, verify
from tre.exceptions import TREError

INTEGRITY, INVALID = 3, 65
RACE_VERIFICATIONS = 200
RACE_INGESTS = 4


@pytest.fixture
def home(environ, synthetic) -> dict[str, str]:
    """A TRE home (SQLite) whose custodians' keys are registered."""
    init_home(environ, synthetic.keys)
    return environ


@pytest.fixture
def metadata(home):
    database = Database.of_settings(Settings.from_environ(home))
    yield database
    database.dispose()


def landed(environ) -> list[Path]:
    """Every file in the landing store."""
    return sorted(p for p in (Path(environ["TRE_HOME"]) / "landing").rglob("*") if p.is_file())


def ingested_digests(database: Database) -> set[str]:
    with database.read() as session:
        return set(session.execute(sa.select(curated.Delivery.digest)).scalars())


def rewrite_manifest(folder: Path, keys: Path, edit) -> None:
    """Edit manifest.json (``edit`` changes the parsed JSON) and sign its bytes with the
    custodian's own key, as a custodian's own tool could, whatever the manifest says."""
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    raw = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(raw)
    signer = custodians.signer(keys / f"{data['custodian']}.key")
    signature = base64.b64encode(signer.sign(raw)).decode()
    (folder / SIGNATURE).write_text(json.dumps({"key_id": signer.key_id, "signature": signature}))


def listed(data: dict, file: str) -> dict:
    return next(f for f in data["files"] if f["file"] == file)


def attempt(environ, folder: Path, capsys) -> tuple[int, str]:
    """Ingest ``folder`` through the CLI: its exit code and what it printed on stderr."""
    capsys.readouterr()
    code = main(["ingest", str(folder)], environ)
    return code, capsys.readouterr().err


def refused(environ, folder: Path, capsys, exit_code: int = INTEGRITY) -> str:
    code, err = attempt(environ, folder, capsys)
    assert code == exit_code, err
    assert not landed(environ)
    return err


# -- the manifest read twice -------------------------------------------------------------------


def forge_description(folder: Path) -> bytes:
    """Another description: the same files, another manifest (so another digest)."""
    data = json.loads((folder / MANIFEST).read_text())
    data["description"] = "forged"
    return (json.dumps(data, indent=2) + "\n").encode()


def forge_a_changed_file(folder: Path) -> bytes:
    """A changed pupils.csv in the folder, and a manifest listing its new size and hash."""
    path = folder / "pupils.csv"
    edit_csv(path, 1, "forename", "MALLORY")
    content = path.read_bytes()
    data = json.loads((folder / MANIFEST).read_text())
    entry = listed(data, "pupils.csv")
    entry["bytes"], entry["sha256"] = len(content), hashlib.sha256(content).hexdigest()
    return (json.dumps(data, indent=2) + "\n").encode()


class Swapper(threading.Thread):
    """Keeps replacing manifest.json with the forged copy and back with the genuine one."""

    def __init__(self, manifest: Path, genuine: Path, forged: Path):
        super().__init__(daemon=True)
        self.manifest, self.genuine, self.forged = manifest, genuine, forged
        self.stop = threading.Event()
        self.swaps = 0

    def run(self) -> None:
        staged = self.genuine.with_name("next.json")
        while not self.stop.is_set():
            for source in (self.forged, self.genuine):
                os.link(source, staged)
                os.replace(staged, self.manifest)
                self.swaps += 1

    def __enter__(self) -> Swapper:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.join()


@pytest.mark.parametrize("forge", [forge_description, forge_a_changed_file])
def test_a_manifest_swapped_during_ingest_never_gets_forged_content_in(
    home, metadata, deliveries, tmp_path, forge
):
    """Whoever can write the delivery folder swaps a forged manifest.json in and out while
    ingest reads it: a manifest parsed at one moment and checked at another would let the
    forged one in under the genuine signature."""
    folder = deliveries.dfe
    manifest = folder / MANIFEST
    genuine_bytes = manifest.read_bytes()
    genuine = hashlib.sha256(genuine_bytes).hexdigest()
    swap = tmp_path / "swap"  # outside the delivery, on the same file system
    swap.mkdir()
    (swap / "genuine.json").write_bytes(genuine_bytes)
    (swap / "forged.json").write_bytes(forge(folder))
    settings = Settings.from_environ(home)
    accepted, ingests, refusals = [], 0, 0
    started = time.monotonic()
    with Swapper(manifest, swap / "genuine.json", swap / "forged.json") as swapper:
        for _ in range(RACE_VERIFICATIONS):
            with metadata.read() as session:
                try:
                    accepted.append(verify(folder, session).digest)
                except TREError:
                    refusals += 1
        for _ in range(RACE_INGESTS):
            try:
                ingest.ingest(settings, folder, actor="race")
                ingests += 1
            except TREError:
                refusals += 1
    elapsed = time.monotonic() - started
    assert swapper.swaps > RACE_VERIFICATIONS, "the manifest was not swapped while read"
    assert set(accepted) <= {genuine}, f"forged manifest accepted in {len(accepted)} runs"
    assert ingested_digests(metadata) <= {genuine}
    for path in landed(home):
        if path.name == MANIFEST:
            assert path.read_bytes() == genuine_bytes
    if forge is forge_description:
        assert accepted, "no run accepted the genuine delivery"
    else:
        assert not accepted and not ingested_digests(metadata)
    assert len(accepted) + ingests + refusals == RACE_VERIFICATIONS + RACE_INGESTS
    print(
        f"race: {swapper.swaps} swaps; {len(accepted)} verifications and {ingests} ingests "
        f"accepted, {refusals} refused, in {elapsed:.1f} s"
    )


def test_a_delivery_changed_after_its_checks_is_not_what_lands(
    home, metadata, deliveries, tmp_path, canaries, monkeypatch
):
    """Between the checks and the copy into the landing store, the attacker turns ks4.csv into
    a link to a key and puts a forged manifest.json and manifest.sig in place: what lands must
    be what was checked, read through what the checks opened."""
    folder = deliveries.dfe
    genuine = {name: (folder / name).read_bytes() for name in (MANIFEST, SIGNATURE, "ks4.csv")}
    key = canaries.file(tmp_path / "secrets" / "custodian.key", b"a private key\n")
    forged = forge_description(folder)
    check_complete = ingest._check_complete

    def change_the_folder(*args):
        (folder / "ks4.csv").unlink()
        (folder / "ks4.csv").symlink_to(key)
        (folder / MANIFEST).write_bytes(forged)
        (folder / SIGNATURE).write_text("{}")
        return check_complete(*args)

    monkeypatch.setattr(ingest, "_check_complete", change_the_folder)
    canaries.events()
    ingest.ingest(Settings.from_environ(home), folder, actor="after")
    assert canaries.events() == []
    assert ingested_digests(metadata) == {hashlib.sha256(genuine[MANIFEST]).hexdigest()}
    (landing,) = (Path(home["TRE_HOME"]) / "landing" / "dfe").iterdir()
    for name, content in genuine.items():
        assert (landing / name).read_bytes() == content, name


# -- links and other things that are not files -------------------------------------------------


@pytest.fixture
def canaries(tmp_path):
    with Canaries() as watched:
        yield watched


def test_a_delivered_file_linked_to_a_key_never_reads_the_key(
    home, deliveries, tmp_path, canaries, capsys
):
    """ks4.csv is a link to a key outside the delivery; the manifest lists the key's size and
    hash (the worst case: the attacker knows them)."""
    secret = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n-----END PRIVATE KEY-----\n"
    key = canaries.file(tmp_path / "secrets" / "custodian.key", secret)
    folder = deliveries.dfe
    (folder / "ks4.csv").unlink()
    (folder / "ks4.csv").symlink_to(key)

    def list_the_key(data):
        entry = listed(data, "ks4.csv")
        entry["bytes"], entry["sha256"] = len(secret), hashlib.sha256(secret).hexdigest()

    rewrite_manifest(folder, deliveries.keys, list_the_key)
    canaries.events()  # planting is not the attack
    code, err = attempt(home, folder, capsys)
    assert canaries.events() == []
    assert not landed(home)
    assert code == INTEGRITY and "ks4.csv" in err and "link" in err
    assert secret.decode() not in err


@pytest.mark.parametrize("name", [MANIFEST, SIGNATURE])
def test_a_manifest_or_signature_linked_from_elsewhere_is_never_read(
    home, deliveries, tmp_path, canaries, capsys, name
):
    """The genuine manifest.json (or manifest.sig) is moved out of the folder and linked to:
    what the delivery holds must be the delivery itself."""
    folder = deliveries.dfe
    outside = canaries.file(tmp_path / "elsewhere" / name, (folder / name).read_bytes())
    (folder / name).unlink()
    (folder / name).symlink_to(outside)
    canaries.events()
    code, err = attempt(home, folder, capsys)
    assert canaries.events() == []
    assert code == INTEGRITY and name in err and "link" in err


NOT_PLAIN = ["/etc/passwd", "../x.csv", "sub/pupils.csv", "pupils.csv\x00", "..", "."]


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_a_manifest_naming_a_file_outside_the_folder_is_refused_before_reading_it(
    home, deliveries, canaries, capsys, name
):
    folder = deliveries.dfe
    outside = canaries.file(deliveries.root / "x.csv", (folder / "pupils.csv").read_bytes())
    nested = canaries.file(folder / "sub" / "pupils.csv", outside.read_bytes())

    def name_it(data):
        listed(data, "pupils.csv")["file"] = name

    rewrite_manifest(folder, deliveries.keys, name_it)
    canaries.events()
    err = refused(home, folder, capsys, INVALID)
    assert canaries.events() == [], (outside, nested)
    assert "not a plain file name" in err and "pupils.csv" in err


@pytest.mark.parametrize(("field", "value"), [("bytes", "138339"), ("rows", -1), ("file", 7)])
def test_a_manifest_with_fields_of_the_wrong_type_is_refused_with_a_message(
    home, deliveries, capsys, field, value
):
    """A signed manifest whose sizes are text, counts negative or names numbers: a refusal
    that says so, not a traceback."""

    def retype(data):
        listed(data, "pupils.csv")[field] = value

    rewrite_manifest(deliveries.dfe, deliveries.keys, retype)
    err = refused(home, deliveries.dfe, capsys, INVALID)
    assert "is not a valid manifest" in err


@pytest.mark.parametrize(
    ("entry", "kind"),
    [("sub", "a folder"), ("extra.csv", "a link"), ("ks4.csv", "a folder")],
)
def test_a_folder_or_link_in_the_delivery_is_refused(
    home, deliveries, tmp_path, canaries, capsys, entry, kind
):
    folder = deliveries.dfe
    secret = canaries.file(tmp_path / "secrets" / "other.csv", (folder / "ks4.csv").read_bytes())
    path = folder / entry
    if path.exists():
        path.unlink()
    if kind == "a link":
        path.symlink_to(secret)
    else:
        path.mkdir()
        (path / "pupils.csv").write_bytes(b"upn\n")
    canaries.events()
    err = refused(home, folder, capsys)
    assert canaries.events() == []
    assert entry in err and kind in err


@pytest.mark.parametrize("name", ["ks4.csv", MANIFEST, SIGNATURE])
def test_a_named_pipe_in_the_delivery_is_refused_without_hanging(home, deliveries, name):
    """A reader that opens a named pipe waits for a writer: ingest would hang for ever."""
    folder = deliveries.dfe
    (folder / name).unlink()
    os.mkfifo(folder / name)
    outcome: list[BaseException | None] = []

    def run():
        try:
            ingest.ingest(Settings.from_environ(home), folder, actor="pipe")
            outcome.append(None)
        except BaseException as e:  # reported by the main thread
            outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    hung = worker.is_alive()
    while worker.is_alive():  # let it go: a writer that closes at once gives it an empty read
        with contextlib.suppress(OSError):
            os.close(os.open(folder / name, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=0.1)
    assert not hung, f"ingest hung on a named pipe as {name}"
    assert len(outcome) == 1 and isinstance(outcome[0], TREError), outcome
    assert name in str(outcome[0]) and "named pipe" in str(outcome[0])
    assert not landed(home)
