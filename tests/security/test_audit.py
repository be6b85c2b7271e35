"""Attacks on the audit log by someone holding only the metadata database (its administrator,
or a copy restored over it): truncation, deletion, rewrite and rehash, each done the way they
could (SQL and SHA-256, never the audit key or the signing key), each first shown to pass the
plain hash chain, then caught by the MACs or the signed checkpoints. And attacks on the
checkpoints themselves: deleted, forged, or a services' account trying to remove one."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.security.conftest import PROJECT, as_account
from tre import audit, home, privileged
from tre.audit import checkpoints
from tre.audit.log import _body, _event_hash
from tre.db import Database
from tre.exceptions import IntegrityError
from tre.keys import AUDIT_SIGNING_KEY, create_key_file
from tre.privileged import accounts

AUDIT_KEY = secrets.token_bytes(32)


@pytest.fixture(autouse=True)
def _test_action():
    audit.declare_actions({"test.happened": "Something happened in a test."})
    yield
    del audit.ACTIONS["test.happened"]


@pytest.fixture
def tre_home(tmp_path) -> Path:
    """A home with just what the audit log needs: its two keys and the checkpoint store."""
    (tmp_path / "keys").mkdir(mode=0o700)
    create_key_file(tmp_path / "keys" / AUDIT_SIGNING_KEY)
    audit_key = tmp_path / "keys" / "audit.key"
    audit_key.write_bytes(AUDIT_KEY)
    audit_key.chmod(0o600)
    (tmp_path / "audit").mkdir()
    return tmp_path


@pytest.fixture
def keyed(database_url) -> Database:
    """The database as the TRE's services open it: with the audit key."""
    database = Database(database_url, audit_key=AUDIT_KEY)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def stolen(keyed) -> Database:
    """The same database as its administrator has it: no audit key."""
    database = Database(keyed.url)
    yield database
    database.dispose()


def append(db: Database, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with db.write() as session:
            audit.record(
                session,
                audit.Event("alice", "researcher", "test.happened", "thing", f"t{i}", {"i": i}),
            )


def store_of(tre_home: Path) -> audit.Store:
    return audit.Store.of_home(tre_home)


def rechain(session, from_seq: int) -> None:
    """What an attacker with the database does after a change: recompute every hash from
    ``from_seq`` on, and the head, with SHA-256 (public), leaving the MACs as they were."""
    rows = session.execute(
        sa.select(audit.AuditEventRow).order_by(audit.AuditEventRow.seq)
    ).scalars()
    prev = audit.GENESIS_HASH
    last = None
    for row in rows:
        if row.seq >= from_seq:
            row.prev_hash = prev
            row.hash = _event_hash(prev, _body(row))
        prev, last = row.hash, row
    head = session.get(audit.AuditHead, 1)
    head.seq, head.hash = last.seq, last.hash


def test_every_event_carries_a_mac_under_the_key(keyed):
    append(keyed, 3)
    with keyed.read() as session:
        rows = session.execute(sa.select(audit.AuditEventRow)).scalars().all()
    assert all(row.mac == audit.mac_of(AUDIT_KEY, row.hash) for row in rows)
    result = audit.verify(keyed)
    assert result.intact and result.macs_checked


def test_truncation_is_detected_by_the_checkpoint(keyed, stolen, tre_home):
    append(keyed, 10)
    assert home.checkpoint_audit(tre_home, keyed).seq == 10
    with stolen.write() as session:  # delete the newest events, move the head back
        session.execute(sa.delete(audit.AuditEventRow).where(audit.AuditEventRow.seq > 6))
        six = session.get(audit.AuditEventRow, 6)
        head = session.get(audit.AuditHead, 1)
        head.seq, head.hash = 6, six.hash
    # The chain and every remaining MAC still hold: only the checkpoint saw seq 7 to 10.
    assert audit.verify(keyed).intact
    result = audit.verify(keyed, store=store_of(tre_home))
    assert not result.intact
    assert result.first_bad_seq == 7
    assert "truncated" in result.problem and "checkpoint 1" in result.problem


def test_deletion_is_detected_by_the_macs(keyed, stolen):
    append(keyed, 10)
    with stolen.write() as session:  # delete seq 4, renumber what follows, rechain
        session.execute(sa.delete(audit.AuditEventRow).where(audit.AuditEventRow.seq == 4))
        for seq in range(5, 11):
            session.execute(
                sa.update(audit.AuditEventRow)
                .where(audit.AuditEventRow.seq == seq)
                .values(seq=seq - 1)
            )
        rechain(session, 4)
    assert audit.verify(stolen).intact  # the plain chain is fooled
    result = audit.verify(keyed)
    assert not result.intact and result.first_bad_seq == 4
    assert "MAC does not match" in result.problem


def test_a_rewrite_is_detected_by_the_macs(keyed, stolen):
    append(keyed, 10)
    with stolen.write() as session:  # replace seq 4 on by forged events, well chained
        for row in session.execute(
            sa.select(audit.AuditEventRow).where(audit.AuditEventRow.seq >= 4)
        ).scalars():
            row.actor, row.details, row.mac = "mallory", '{"forged":true}', None
        rechain(session, 4)
    assert audit.verify(stolen).intact
    result = audit.verify(keyed)
    assert not result.intact and result.first_bad_seq == 4
    assert "has no MAC" in result.problem


def test_a_rehash_is_detected_by_the_macs_and_by_the_checkpoint(keyed, stolen, tre_home):
    append(keyed, 10)
    home.checkpoint_audit(tre_home, keyed)
    with stolen.write() as session:  # change one event, recompute the whole chain
        session.get(audit.AuditEventRow, 4).actor = "mallory"
        rechain(session, 1)
    assert audit.verify(stolen).intact
    by_mac = audit.verify(keyed)
    assert not by_mac.intact and by_mac.first_bad_seq == 4
    assert "MAC does not match" in by_mac.problem
    # Even with the audit key stolen too, the signed checkpoint still disagrees.
    by_checkpoint = audit.verify(stolen, store=store_of(tre_home))
    assert not by_checkpoint.intact and by_checkpoint.first_bad_seq == 10
    assert "does not match checkpoint 1" in by_checkpoint.problem


def test_a_checkpoint_refuses_a_seq_whose_head_changed(keyed, stolen, tre_home):
    append(keyed, 5)
    home.checkpoint_audit(tre_home, keyed)
    with stolen.write() as session:
        session.get(audit.AuditEventRow, 5).actor = "mallory"
        rechain(session, 5)
    with pytest.raises(IntegrityError, match="rewritten"):
        home.checkpoint_audit(tre_home, keyed)


def _three_checkpoints(keyed, tre_home) -> Path:
    for start in (0, 3, 6):
        append(keyed, 3, start)
        home.checkpoint_audit(tre_home, keyed)
    folder = tre_home / "audit" / "checkpoints"
    assert sorted(os.listdir(folder)) == [f"{i:012d}.json" for i in (1, 2, 3)]
    assert audit.verify(keyed, store=store_of(tre_home)).checkpoint == 3
    return folder


def test_a_checkpoint_deleted_from_the_middle_is_reported(keyed, tre_home):
    folder = _three_checkpoints(keyed, tre_home)
    (folder / "000000000002.json").unlink()
    result = audit.verify(keyed, store=store_of(tre_home))
    assert not result.intact
    assert "checkpoint 2 is missing from the store: deleted" in result.problem


def test_the_newest_checkpoints_deleted_are_reported(keyed, tre_home):
    folder = _three_checkpoints(keyed, tre_home)
    (folder / "000000000003.json").unlink()
    (folder / "000000000002.json").unlink()
    result = audit.verify(keyed, store=store_of(tre_home))
    assert not result.intact
    assert "checkpoint 2 to 3 is missing" in result.problem


def test_a_forged_checkpoint_is_reported(keyed, tre_home):
    folder = _three_checkpoints(keyed, tre_home)
    real = audit.Checkpoint.parse((folder / "000000000003.json").read_text())
    # The forger signs a checkpoint for a head of their choosing with a key of their own.
    forged = checkpoints.sign(secrets.token_bytes(32), dataclasses.replace(real, seq=2))
    target = folder / "000000000003.json"
    target.chmod(0o644)
    target.write_text(forged.text())
    result = audit.verify(keyed, store=store_of(tre_home))
    assert not result.intact
    assert "checkpoint 3 is not signed by this TRE's audit signing key" in result.problem
    append(keyed, 1, 20)
    with pytest.raises(IntegrityError, match="not signed by the audit signing key"):
        home.checkpoint_audit(tre_home, keyed)  # nothing is signed after a forged one


def test_a_head_the_log_does_not_hold_is_never_signed(keyed, stolen, tre_home):
    """The database's administrator points the head at a seq far ahead for one checkpoint:
    had it been signed, every later checkpoint would be refused as older."""
    append(keyed, 5)
    home.checkpoint_audit(tre_home, keyed)
    with stolen.write() as session:
        head = session.get(audit.AuditHead, 1)
        head.seq, head.hash = 10**15, "f" * 64
    with pytest.raises(IntegrityError, match="NOT intact"):
        home.checkpoint_audit(tre_home, keyed)
    assert len(os.listdir(tre_home / "audit" / "checkpoints")) == 1


def test_events_rechained_without_the_key_are_never_signed(keyed, stolen, tre_home):
    append(keyed, 5)
    home.checkpoint_audit(tre_home, keyed)
    append(keyed, 3, 5)
    with stolen.write() as session:  # events 6 to 8 rewritten before the next checkpoint
        session.get(audit.AuditEventRow, 7).actor = "mallory"
        rechain(session, 7)
    with pytest.raises(IntegrityError, match="seq 7 was rewritten"):
        home.checkpoint_audit(tre_home, keyed)


def test_a_trigger_that_drops_events_as_they_are_written_is_caught(keyed, stolen, tre_home):
    """A trigger hides chosen events as they are written: the change would commit without
    its record, and every later MAC and checkpoint would cover the doctored chain."""
    append(keyed, 3)
    with stolen.engine.begin() as c:
        for statement in SQLITE_TRIGGER if keyed.is_sqlite else POSTGRES_TRIGGER:
            c.exec_driver_sql(statement)
    dropped = pytest.raises(IntegrityError, match="changed or dropped as it was written")
    with dropped, keyed.write() as session:
        audit.record(
            session, audit.Event("alice", "researcher", "test.happened", "thing", "hidden")
        )
    result = audit.verify(keyed)
    assert not result.intact and "trigger hide" in result.problem
    with pytest.raises(IntegrityError, match="trigger hide"):
        home.checkpoint_audit(tre_home, keyed)


SQLITE_TRIGGER = [
    """CREATE TRIGGER hide AFTER UPDATE ON audit_head
    WHEN (SELECT object_id FROM audit_events WHERE seq = NEW.seq) = 'hidden'
    BEGIN
        DELETE FROM audit_events WHERE seq = NEW.seq;
        UPDATE audit_head SET seq = OLD.seq, hash = OLD.hash WHERE id = 1;
    END"""
]
POSTGRES_TRIGGER = [
    """CREATE FUNCTION hide_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT object_id FROM audit_events WHERE seq = NEW.seq) = 'hidden' THEN
            DELETE FROM audit_events WHERE seq = NEW.seq;
            NEW.seq := OLD.seq;
            NEW.hash := OLD.hash;
        END IF;
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER hide BEFORE UPDATE ON audit_head FOR EACH ROW EXECUTE FUNCTION hide_event()",
]


def test_damaged_rows_are_reported_never_a_crash(keyed, stolen):
    append(keyed, 3)
    with stolen.write() as session:
        session.get(audit.AuditEventRow, 2).mac = "é" * 64
    result = audit.verify(keyed)
    assert not result.intact and "seq 2" in result.problem
    with stolen.write() as session:
        session.execute(sa.delete(audit.AuditHead))
    result = audit.verify(keyed)
    assert not result.intact and "chain head" in result.problem


def test_a_custodians_exported_checkpoint_catches_what_the_store_lost(keyed, stolen, tre_home):
    append(keyed, 8)
    written = home.checkpoint_audit(tre_home, keyed)
    store = store_of(tre_home)
    kept = json.dumps(checkpoints.exported(written, store.public_key()))
    # The attacker also removes the whole checkpoint store, and truncates the log.
    for path in sorted((tre_home / "audit").rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    with stolen.write() as session:
        session.execute(sa.delete(audit.AuditEventRow).where(audit.AuditEventRow.seq > 5))
        five = session.get(audit.AuditEventRow, 5)
        head = session.get(audit.AuditHead, 1)
        head.seq, head.hash, head.checkpoint = 5, five.hash, 0
    assert audit.verify(keyed, store=store).intact  # nothing left here says otherwise
    checkpoint, key = checkpoints.from_export(kept)
    assert checkpoints.fingerprint(key) == checkpoints.fingerprint(
        checkpoints.public_key_of((tre_home / "keys" / AUDIT_SIGNING_KEY).read_bytes())
    )
    result = audit.verify(keyed, store=store, exported=checkpoint)
    assert not result.intact and "truncated" in result.problem


def test_an_exported_checkpoint_of_another_key_is_refused(environ, tmp_path, capsys):
    from tre.cli import main

    assert main(["init"], environ) == 0
    exported = tmp_path / "checkpoint.json"
    assert main(["audit", "checkpoint", "--export", str(exported)], environ) == 0
    copy = json.loads(exported.read_text())
    other = secrets.token_bytes(32)
    cp = audit.Checkpoint(**{k: v for k, v in copy["checkpoint"].items() if k != "format"})
    forged = checkpoints.exported(checkpoints.sign(other, cp), checkpoints.public_key_of(other))
    exported.write_text(json.dumps(forged))
    capsys.readouterr()
    assert main(["audit", "verify", "--checkpoint", str(exported)], environ) == 3
    assert "not by this TRE's audit signing key" in capsys.readouterr().err


def test_an_exported_checkpoint_cannot_be_edited(keyed, tre_home):
    append(keyed, 4)
    written = home.checkpoint_audit(tre_home, keyed)
    copy = checkpoints.exported(written, store_of(tre_home).public_key())
    copy["checkpoint"]["seq"] = 2
    with pytest.raises(IntegrityError, match="not signed"):
        checkpoints.from_export(json.dumps(copy))


def test_the_services_cannot_remove_or_replace_a_checkpoint(two_projects):
    """In a separated home the checkpoints are root's: the services' accounts read them but
    neither delete, replace nor add one; nor can they read the signing key or open the lock
    the helper serialises its writers with (held, it would stop every checkpoint). A
    researcher's accounts cannot even read them."""
    environ_home = two_projects.home.root
    written = home.checkpoint_audit(environ_home, two_projects.db)
    assert written is not None
    folder = environ_home / "audit" / "checkpoints"
    path = str(folder / f"{written.index:012d}.json")

    def attempts(path: str, folder: str, key: str, lock: str) -> dict[str, str]:
        out = {}
        for name, attempt in {
            "read": lambda: Path(path).read_text(),
            "delete": lambda: os.unlink(path),
            "replace": lambda: os.replace(_own_file(), path),
            "add": lambda: Path(folder, "999999999999.json").touch(exist_ok=False),
            "read key": lambda: Path(key).read_bytes(),
            "open lock": lambda: os.close(os.open(lock, os.O_RDONLY)),
        }.items():
            try:
                attempt()
                out[name] = "done"
            except OSError as e:
                out[name] = type(e).__name__
        return out

    def _own_file() -> str:
        fd, name = tempfile.mkstemp()
        os.close(fd)
        return name

    key = str(environ_home / "keys" / AUDIT_SIGNING_KEY)
    lock = str(environ_home / "keys" / ".audit-checkpoint.lock")
    assert Path(lock).exists()
    refused = {
        "delete": "PermissionError",
        "replace": "PermissionError",
        "add": "PermissionError",
        "read key": "PermissionError",
        "open lock": "PermissionError",
    }
    for account in (accounts.SERVICE, accounts.INGEST, accounts.PROVISION):
        got = as_account(account, attempts, path, str(folder), key, lock)
        assert got == {"read": "done", **refused}, (account, got)
    privileged.call(environ_home, "prepare_workspace", username="alice", project=PROJECT)
    for account in (
        privileged.workspace_account("alice", PROJECT),
        privileged.project_group(PROJECT),
    ):
        got = as_account(account, attempts, path, str(folder), key, lock)
        assert got == {"read": "PermissionError", **refused}, (account, got)
    result = audit.verify(two_projects.db, store=two_projects.home.checkpoints)
    assert result.intact and result.checkpoint == written.index, result.problem
