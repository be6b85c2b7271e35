"""`tre audit`: verify, checkpoint and export the audit log."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from tre import audit
from tre.audit import checkpoints
from tre.cli import Context, cli, home_option, pass_context
from tre.exceptions import IntegrityError, InvalidInput
from tre.home import Home, checkpoint_audit


@cli.group("audit")
def audit_group() -> None:
    """Verify and export the tamper-evident audit log."""


def _anchor(_ctx, _param, value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise click.BadParameter("give the published head as SEQ:HASH (a 64-hex-digit hash)")
    return int(seq), digest.lower()


@audit_group.command("verify")
@home_option
@click.option(
    "--anchor",
    callback=_anchor,
    metavar="SEQ:HASH",
    help="A head published earlier (as printed by this command) that the log must still hold.",
)
@click.option(
    "--checkpoint",
    "exported",
    type=click.Path(dir_okay=False, exists=True),
    help="A checkpoint exported earlier (`tre audit checkpoint --export`) that the log must "
    "still hold.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def audit_verify(
    ctx: Context, anchor: tuple[int, str] | None, exported: str | None, as_json: bool
) -> None:
    """Recompute the chain and its MACs and check it against every signed checkpoint; fail
    naming the first bad seq and what was done (truncation, deletion, rewrite, rehash)."""
    kept = None
    if exported is not None:
        try:
            kept, key = checkpoints.from_export(Path(exported).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"Cannot read {exported}: {e}.") from None
        ours = Home(ctx.settings.home).checkpoints.public_key()
        if ours is not None and ours != key:
            raise IntegrityError(
                f"The exported {kept.describe()} is signed by key "
                f"{checkpoints.fingerprint(key)}, not by this TRE's audit signing key "
                f"{checkpoints.fingerprint(ours)}: it is not this TRE's, or one of the two was "
                "replaced. Compare both fingerprints with the one the TRE gave you."
            )
        click.echo(
            f"Exported {kept.describe()}, signed by key {checkpoints.fingerprint(key)}: compare "
            "that fingerprint with the one the TRE gave you.",
            err=True,
        )
    db = ctx.database()
    result = audit.verify(
        db, anchor=anchor, store=Home(ctx.settings.home).checkpoints, exported=kept
    )
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
    if not result.intact:
        raise IntegrityError(
            f"The audit log is NOT intact: {result.problem}. First bad seq: "
            f"{result.first_bad_seq}. Keep the database as it is and investigate."
        )
    if not as_json:
        against = (
            f"; checked against checkpoint {result.checkpoint} (seq {result.checkpoint_seq})"
            if result.checkpoint
            else "; no checkpoint yet (`tre audit checkpoint` writes one)"
        )
        click.echo(
            f"The audit log is intact: {result.events} events, "
            f"{'each MAC checked' if result.macs_checked else 'MACs not checked'}{against}. "
            f"Head {result.head_seq}:{result.head_hash}."
        )


@audit_group.command("checkpoint")
@home_option
@click.option(
    "--export",
    "out",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Also write the newest checkpoint with the key that signed it, for a custodian to "
    "keep and verify against later (`tre audit verify --checkpoint FILE`); - for standard "
    "output.",
)
@pass_context
def audit_checkpoint(ctx: Context, out: str | None) -> None:
    """Sign a checkpoint of the audit log's head into the checkpoint store (the portal does so
    every TRE_AUDIT_CHECKPOINT_SECONDS while the head moves)."""
    db = ctx.database()
    store = Home(ctx.settings.home).checkpoints
    written = checkpoint_audit(ctx.settings.home, db)
    reading = store.read()
    newest = reading.latest if written is None else written
    if newest is None or reading.public_key is None:
        raise IntegrityError(
            "No sound checkpoint could be read back from the store: run `tre audit verify`."
        )
    click.echo(
        f"Newest {newest.describe()}, head {newest.head}; signing key "
        f"{checkpoints.fingerprint(reading.public_key)}.",
        err=True,
    )
    if out is None:
        return
    text = json.dumps(checkpoints.exported(newest, reading.public_key), indent=2) + "\n"
    if out == "-":
        click.echo(text, nl=False)
        return
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    click.echo(f"Wrote {newest.describe()} to {target}.", err=True)


@audit_group.command("export")
@home_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="-",
    show_default=True,
    help="File to write, or - for standard output.",
)
@pass_context
def audit_export(ctx: Context, out: str) -> None:
    """Write every audit event as one JSON line, in chain order."""
    db = ctx.database()
    if out == "-":
        audit.export(db, sys.stdout)
        return
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        n = audit.export(db, f)
    tmp.replace(target)
    click.echo(f"Wrote {n} events to {target}.", err=True)
