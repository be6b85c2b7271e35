"""Commands for data: synthetic deliveries, custodians' keys, ingest, the linkage report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tre.cli import (
    Context,
    actor_name,
    actor_option,
    cli,
    home_option,
    pass_context,
    run_as_own_account,
)

existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@cli.command()
@click.option(
    "--pupils",
    type=click.IntRange(1, 10_000_000),
    default=2000,
    show_default=True,
    help="How many pupils (children in the school census).",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Random seed: the same seed gives the same files, byte for byte.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write dfe/, nhs/ and truth/ into.",
)
@click.option(
    "--keys",
    type=existing_dir,
    default=None,
    help="Folder of <custodian>.key files: sign each delivery with them.",
)
def synth(pupils: int, seed: int, out: Path, keys: Path | None) -> None:
    """Write synthetic deliveries (DfE and NHS) for invented children."""
    from tre import custodians
    from tre import synth as synthetic
    from tre.exceptions import InvalidInput

    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} is not empty. Give a new or empty folder.")
    signers = {}
    if keys is not None:
        signers = {p.stem: custodians.signer(p) for p in sorted(keys.glob("*.key"))}
    summary = synthetic.generate(pupils, seed, out, signers)
    for line in summary.lines():
        click.echo(line)


# -- custodians ---------------------------------------------------------------------------


@cli.group("custodian")
def custodian_group() -> None:
    """Custodians' signing keys and the signing of deliveries."""


@custodian_group.command("keygen")
@click.argument("custodian")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for <custodian>.key and .pub.",
)
def custodian_keygen(custodian: str, out: Path) -> None:
    """Make an Ed25519 key pair for signing a custodian's deliveries."""
    from tre import custodians

    private, public = custodians.keygen(custodian, out)
    click.echo(f"Wrote {private} (private: keep it with the custodian, mode 0600) and {public}.")
    click.echo(
        f"Send {public.name} to the TRE to register: tre custodian register "
        f"{custodian} {public.name}"
    )


@custodian_group.command("register")
@home_option
@click.argument("custodian")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@actor_option
@pass_context
def custodian_register(ctx: Context, custodian: str, public_key: Path, actor: str | None) -> None:
    """Register a custodian's public key, so their signed deliveries are accepted."""
    from tre import audit, custodians

    key = custodians.load_public_key(public_key)
    db = ctx.database()
    with db.write() as session:
        kid = custodians.register(
            session,
            custodian,
            key,
            audit.Event(
                actor_name(actor), "tre-admin", "custodian.key_registered", "custodian", custodian
            ),
        )
    click.echo(f"Registered key {kid} for custodian {custodian}.")


@custodian_group.command("revoke")
@home_option
@click.argument("key_id")
@actor_option
@pass_context
def custodian_revoke(ctx: Context, key_id: str, actor: str | None) -> None:
    """Revoke a registered key: deliveries signed with it are refused from now on."""
    from tre import audit, custodians

    with ctx.database().write() as session:
        custodians.revoke(
            session,
            key_id,
            audit.Event(actor_name(actor), "tre-admin", "custodian.key_revoked", "custodian", "?"),
        )
    click.echo(f"Revoked key {key_id}.")


@custodian_group.command("sign")
@click.argument("delivery", type=existing_dir)
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The custodian's private key (<custodian>.key).",
)
def custodian_sign(delivery: Path, key_file: Path) -> None:
    """Sign a delivery's manifest.json (writes manifest.sig)."""
    from tre import custodians, deliveries

    path = deliveries.sign_manifest(delivery, custodians.signer(key_file))
    click.echo(f"Signed: {path}")


@custodian_group.command("manifest")
@click.argument("delivery", type=existing_dir)
@click.argument("custodian")
@click.option("--name", required=True, help="A name for this delivery, e.g. dfe-2026-01.")
@click.option("--description", default="", help="What the delivery holds.")
def custodian_manifest(delivery: Path, custodian: str, name: str, description: str) -> None:
    """Write manifest.json for a folder of <dataset>.csv files (then sign it)."""
    from tre import deliveries

    path = deliveries.write_manifest(delivery, custodian, name, description)
    click.echo(f"Wrote {path}. Sign it: tre custodian sign {delivery} --key {custodian}.key")


# -- ingest and linkage -------------------------------------------------------------------


@cli.command()
@home_option
@click.argument("delivery", type=existing_dir)
@click.option(
    "--quarantine",
    is_flag=True,
    help="Set rows that break the catalog aside (counted, kept in the landing store) "
    "instead of refusing the delivery.",
)
@actor_option
@pass_context
def ingest(ctx: Context, delivery: Path, quarantine: bool, actor: str | None) -> None:
    """Verify, validate, link and pseudonymise a signed delivery into the curated store."""
    from tre import ingest as ingestion

    report = ingestion.ingest(
        ctx.settings,
        delivery,
        actor=actor_name(actor),
        quarantine=quarantine,
        progress=sys.stderr.isatty(),
    )
    for line in report.lines():
        click.echo(line)


@cli.group("linkage")
def linkage_group() -> None:
    """How pupils and patients were linked."""


@linkage_group.command("report")
@home_option
@click.option(
    "--truth",
    type=existing_dir,
    default=None,
    help="truth/ folder of synthetic deliveries: adds precision, recall.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def linkage_report(ctx: Context, truth: Path | None, as_json: bool) -> None:
    """Link rates by sex, ethnicity and FSM; with --truth, precision and recall."""
    from tre.home import Home
    from tre.linkage import report as linkage_report_module

    result = linkage_report_module.report(Home(ctx.settings.home), ctx.database(), truth)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)


# -- demo ---------------------------------------------------------------------------------


@cli.group("demo")
def demo_group() -> None:
    """Run the TRE's pipeline on synthetic data."""


pupils_option = click.option(
    "--pupils",
    type=click.IntRange(1, 10_000_000),
    default=2000,
    show_default=True,
    help="How many synthetic pupils.",
)


@demo_group.command("prepare")
@home_option
@pupils_option
@pass_context
def demo_prepare(ctx: Context, pupils: int) -> None:
    """Keys, synthetic deliveries, ingest and linkage report, then the example projects
    through approval and provisioning, in one go (re-runnable). As root, each part runs as the
    account that may do it (`tre demo data`, `tre demo projects`)."""
    from tre import demo, privileged
    from tre.exceptions import ConfigError

    if privileged.running_as_root():
        if not privileged.separated(ctx.settings.home):
            raise ConfigError(
                f"{ctx.settings.home} was not made by `sudo tre init`: as root, the demo runs "
                "as the TRE's accounts. Run `sudo tre init` first."
            )
        run_as_own_account(ctx, ["demo", "data", "--pupils", str(pupils)])
        run_as_own_account(ctx, ["demo", "projects"])
        return
    demo.prepare(ctx.settings, pupils, say=click.echo)


@demo_group.command("data")
@home_option
@pupils_option
@pass_context
def demo_data(ctx: Context, pupils: int) -> None:
    """The custodians' keys and synthetic deliveries, ingested, and the linkage report."""
    from tre import demo

    demo.prepare_data(ctx.settings, pupils, say=click.echo)


@demo_group.command("projects")
@home_option
@pass_context
def demo_projects(ctx: Context) -> None:
    """The example applications in projects/ submitted, approved and provisioned."""
    from tre import demo

    demo.prepare_projects(ctx.settings, say=click.echo)
