"""`tre audit`: verify and export the audit log."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from tre import audit
from tre.cli import Context, cli, home_option, pass_context
from tre.exceptions import IntegrityError


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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def audit_verify(ctx: Context, anchor: tuple[int, str] | None, as_json: bool) -> None:
    """Recompute the hash chain; fail naming the first bad seq."""
    result = audit.verify(ctx.database(), anchor=anchor)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
    if not result.intact:
        raise IntegrityError(
            f"The audit log is NOT intact: {result.problem}. First bad seq: "
            f"{result.first_bad_seq}. Keep the database as it is and investigate."
        )
    if not as_json:
        click.echo(
            f"The audit log is intact: {result.events} events. "
            f"Head {result.head_seq}:{result.head_hash} (publish it to anchor the log)."
        )


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
