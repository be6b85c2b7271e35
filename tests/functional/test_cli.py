"""The `tre` command as a user runs it: main(argv, environ), real files, real SQLite."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tre.cli import cli, main
from tre.keys import KEY_BYTES


def test_help_lists_every_command_with_a_one_line_summary(capsys):
    assert main(["--help"], {}) == 0
    out = capsys.readouterr().out
    for name, command in cli.commands.items():
        summary = command.get_short_help_str(limit=200)
        assert summary and not summary.endswith("...")
        assert name in out


def test_init_creates_a_home_with_private_keys(environ, capsys):
    """As root (as the tests run), each key belongs to the one service account that uses it;
    the folder of keys is the services' group's to pass through, not to write."""
    import pwd

    assert main(["init"], environ) == 0
    home = os.path.join(environ["TRE_HOME"])
    for store in ("landing", "curated", "projects", "outputs", "released"):
        assert os.path.isdir(os.path.join(home, store))
    folder = os.stat(os.path.join(home, "keys"))
    assert (folder.st_uid, stat.S_IMODE(folder.st_mode)) == (0, 0o750)
    owners = {"link.key": "tre-ingest", "master.key": "tre-provision", "service.key": "tre"}
    for name, owner in owners.items():
        key = os.path.join(home, "keys", name)
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert pwd.getpwuid(os.stat(key).st_uid).pw_name == owner
        assert os.path.getsize(key) == KEY_BYTES
    contents = {Path(home, "keys", name).read_bytes() for name in owners}
    assert len(contents) == 3
    db = os.stat(os.path.join(home, "db", "tre.db"))
    assert (pwd.getpwuid(db.st_uid).pw_name, stat.S_IMODE(db.st_mode)) == ("tre", 0o660)
    assert "created key link.key" in capsys.readouterr().out


def test_init_again_changes_nothing_and_says_so(environ, capsys):
    assert main(["init"], environ) == 0
    home = Path(environ["TRE_HOME"])

    def snapshot():
        files = sorted(p for p in home.rglob("*") if p.is_file() and "tre.db" not in p.name)
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    before = snapshot()
    capsys.readouterr()
    assert main(["init"], environ) == 0
    assert "already initialised; nothing changed" in capsys.readouterr().out
    assert snapshot() == before
    assert main(["audit", "verify", "--json"], environ) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 1  # no second "initialised" event


def test_an_interrupted_init_is_finished_by_running_it_again(environ, capsys):
    # Simulate a run killed after the first key: folders and one key exist, nothing else.
    home = environ["TRE_HOME"]
    os.makedirs(os.path.join(home, "keys"), mode=0o700)
    os.makedirs(os.path.join(home, "landing"))
    with open(os.path.join(home, "keys", "link.key"), "wb") as f:
        f.write(b"k" * KEY_BYTES)
    os.chmod(os.path.join(home, "keys", "link.key"), 0o600)
    assert main(["init"], environ) == 0
    out = capsys.readouterr().out
    assert "created key master.key" in out and "created key link.key" not in out
    assert (Path(home) / "keys" / "link.key").read_bytes() == b"k" * KEY_BYTES
    assert main(["audit", "verify"], environ) == 0


def test_init_refuses_a_key_file_others_can_read(environ, capsys):
    assert main(["init"], environ) == 0
    key = os.path.join(environ["TRE_HOME"], "keys", "master.key")
    os.chmod(key, 0o644)
    capsys.readouterr()
    assert main(["init"], environ) == 78
    err = capsys.readouterr().err
    assert "can be read by other accounts" in err and "chmod 600" in err
    assert "Traceback" not in err


def test_init_refuses_a_damaged_key(environ, capsys):
    assert main(["init"], environ) == 0
    key = os.path.join(environ["TRE_HOME"], "keys", "link.key")
    with open(key, "wb") as f:
        f.write(b"short")
    assert main(["init"], environ) == 3
    assert "truncated or replaced" in capsys.readouterr().err


def test_init_with_home_option(environ, tmp_path, capsys):
    target = tmp_path / "elsewhere"
    assert main(["init", "--home", str(target)], environ) == 0
    assert (target / "keys" / "link.key").exists()
    assert not os.path.exists(environ["TRE_HOME"])


def test_a_bad_setting_stops_with_a_message_naming_it(environ, capsys):
    environ["TRE_KEYCLOAK_PORT"] = "eighty"
    assert main(["identity", "status"], environ) == 78
    err = capsys.readouterr().err
    assert "TRE_KEYCLOAK_PORT='eighty'" in err and "port number" in err
    assert "Traceback" not in err


def test_commands_on_a_missing_home_say_to_run_init(environ, capsys):
    assert main(["audit", "verify"], environ) == 66
    assert "Run `tre init`" in capsys.readouterr().err


def test_home_that_is_a_file_is_refused(environ, tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("x")
    environ["TRE_HOME"] = str(path)
    assert main(["init"], environ) == 78
    assert "is a file, not a folder" in capsys.readouterr().err


def test_audit_verify_fails_naming_the_seq_of_a_modified_event(environ, capsys):
    assert main(["init"], environ) == 0
    db = os.path.join(environ["TRE_HOME"], "db", "tre.db")
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        c.exec_driver_sql("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    engine.dispose()
    capsys.readouterr()
    assert main(["audit", "verify"], environ) == 3
    err = capsys.readouterr().err
    assert "NOT intact" in err and "First bad seq: 1" in err


def test_audit_export_writes_json_lines(environ, tmp_path, capsys):
    assert main(["init"], environ) == 0
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--out", str(out)], environ) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["action"] == "tre.initialised"


def test_audit_verify_checks_an_anchor(environ, capsys):
    assert main(["init"], environ) == 0
    assert main(["audit", "verify", "--anchor", "1:" + "0" * 64], environ) == 3
    assert "published anchor" in capsys.readouterr().err
    assert main(["audit", "verify", "--anchor", "nonsense"], environ) == 2


def test_identity_status_when_nothing_runs(environ, capsys):
    assert main(["init"], environ) == 0
    assert main(["identity", "status"], environ) == 69
    assert "not running" in capsys.readouterr().err


def test_the_installed_console_script_runs(environ):
    tre = os.path.join(os.path.dirname(sys.executable), "tre")
    result = subprocess.run([tre, "--help"], capture_output=True, text=True, env=environ)
    assert result.returncode == 0 and "init" in result.stdout


@pytest.mark.parametrize("argv", [["audit", "verify"], ["audit", "export"]])
def test_commands_refuse_an_unmigrated_database(environ, capsys, argv):
    assert main(["init"], environ) == 0
    db = os.path.join(environ["TRE_HOME"], "db", "tre.db")
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    assert main(argv, environ) == 66
    assert "Run `tre init`" in capsys.readouterr().err


def _sql(environ, statement: str) -> None:
    db = os.path.join(environ["TRE_HOME"], "db", "tre.db")
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        c.exec_driver_sql(statement)
    engine.dispose()


def test_a_custodians_exported_checkpoint_verifies_and_catches_a_truncation(
    environ, tmp_path, capsys
):
    assert main(["init"], environ) == 0
    exported = tmp_path / "checkpoint.json"
    assert main(["audit", "checkpoint", "--export", str(exported)], environ) == 0
    err = capsys.readouterr().err
    assert "Newest checkpoint 1 (seq 1" in err and "Wrote checkpoint 1" in err
    fingerprint = json.loads(exported.read_text())["fingerprint"]
    assert main(["audit", "verify", "--checkpoint", str(exported)], environ) == 0
    captured = capsys.readouterr()
    assert fingerprint in captured.err and "checked against checkpoint 1" in captured.out
    _sql(environ, "DELETE FROM audit_events")
    _sql(environ, f"UPDATE audit_head SET seq = 0, hash = '{'0' * 64}'")
    assert main(["audit", "verify", "--checkpoint", str(exported)], environ) == 3
    assert "truncated" in capsys.readouterr().err


def _downgrade(environ, revision: str) -> None:
    """The home's database as an older tre left it."""
    from alembic import command

    from tre.db import Database

    db = Database(f"sqlite:///{os.path.join(environ['TRE_HOME'], 'db', 'tre.db')}")
    with db.engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), revision)
    db.dispose()


def test_events_from_before_the_audit_key_are_sealed_once_in_the_upgrade(environ, capsys):
    assert main(["init"], environ) == 0
    _downgrade(environ, "0008")  # as a database from before the MACs
    assert main(["init"], environ) == 0
    out = capsys.readouterr().out
    assert "migrated metadata database 0008" in out
    assert "gave 1 earlier audit events their MACs" in out
    assert main(["audit", "verify"], environ) == 0
    # After that upgrade, an event without a MAC is tampering: never sealed again.
    _sql(environ, "UPDATE audit_events SET mac = NULL WHERE seq = 1")
    assert main(["init"], environ) == 0
    capsys.readouterr()
    assert main(["audit", "verify"], environ) == 3
    assert "seq 1 has no MAC" in capsys.readouterr().err


def test_an_upgrade_never_seals_a_broken_chain(environ, capsys):
    assert main(["init"], environ) == 0
    _downgrade(environ, "0008")
    _sql(environ, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    capsys.readouterr()
    assert main(["init"], environ) != 0
    assert "NOT intact" in capsys.readouterr().err
