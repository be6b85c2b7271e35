"""`tre up` and `tre down`: the whole local TRE in one command."""

from __future__ import annotations

import os

import click

from tre.cli import Context, cli, home_option, pass_context, run_as_own_account
from tre.cli.servers import keycloak_running


@cli.command("up")
@home_option
@click.option(
    "--pupils",
    type=click.IntRange(100, 2_000_000),
    default=None,
    help="Size of the synthetic data made the first time (default: the demo's).",
)
@click.option(
    "--smoke",
    is_flag=True,
    help="Then run a short journey through every part (hub, workspace, airlock, portal) and "
    "stop everything: exit 0 when it passed.",
)
@pass_context
def up(ctx: Context, pupils: int | None, smoke: bool) -> None:
    """Bring up the whole local TRE over the TRE home: Keycloak, the demo catalog's synthetic
    data ingested, the example projects provisioned, the portal and (as root) the hub. Each
    part already there is kept. Prints the URLs and the demo accounts.

    As root, only the privileged helper keeps root: ingest runs as tre-ingest, provisioning as
    tre-provision, Keycloak, the portal and the hub as tre."""
    from tre import demo, home
    from tre.cli.audit import audit_checkpoint, audit_verify
    from tre.cli.identity import echo_demo_accounts
    from tre.hub import HubServer
    from tre.identity import KeycloakServer
    from tre.portal.server import PortalServer
    from tre.privileged import Helper

    # Project membership is mirrored into Keycloak's groups, as a real deployment does.
    ctx.environ = {**ctx.environ, "TRE_KEYCLOAK_SYNC": ctx.environ.get("TRE_KEYCLOAK_SYNC", "on")}
    settings = ctx.settings
    as_root = os.geteuid() == 0
    home.init(settings)
    if as_root:
        Helper(settings.home, ctx.environ).start()
        run_as_own_account(ctx, ["identity", "up"])
        keycloak = KeycloakServer.from_settings(settings)
    else:
        keycloak = keycloak_running(settings)
    pupils = pupils or demo.DEFAULT_PUPILS
    if as_root:
        run_as_own_account(ctx, ["demo", "data", "--pupils", str(pupils)])
        run_as_own_account(ctx, ["demo", "projects"])
        run_as_own_account(ctx, ["audit", "verify"])
        run_as_own_account(ctx, ["audit", "checkpoint"])
    else:
        demo.prepare(settings, pupils, say=click.echo)
        invoke = click.get_current_context().invoke
        invoke(audit_verify, anchor=None, exported=None, as_json=False)
        invoke(audit_checkpoint, out=None)
    portal = PortalServer.from_settings(settings, ctx.environ).start()
    hub_running = as_root
    if hub_running:
        HubServer.from_settings(settings, ctx.environ).start()
    click.echo("")
    click.echo("The TRE is up:")
    click.echo(f"  portal     {settings.portal_url}  (API: {settings.portal_url}/api/v1/docs)")
    if hub_running:
        click.echo(f"  workspaces {settings.hub_url}  (start the workspace named after a project)")
    else:
        click.echo(
            "  workspaces not started: the hub needs root (each workspace runs under an "
            "account of its own); run `sudo tre hub up`"
        )
    click.echo(f"  identity   {keycloak.issuer}")
    click.echo(f"  home       {settings.home}  (portal pid {portal.pid})")
    echo_demo_accounts(settings)
    if smoke:
        _smoke(ctx, hub_running)
    else:
        click.echo("Stop it all with `tre down`.")


def _smoke(ctx: Context, hub_running: bool) -> None:
    from tre import smoke
    from tre.exceptions import ConfigError

    try:
        if not hub_running:
            raise ConfigError(
                "The smoke test goes through a workspace: run `tre up --smoke` as root."
            )
        click.echo("")
        smoke.run(ctx.settings, say=click.echo)
    finally:
        _down(ctx)


@cli.command("down")
@home_option
@pass_context
def down(ctx: Context) -> None:
    """Stop the hub (and its workspaces), the portal, Keycloak and the privileged helper; the
    TRE home is kept."""
    _down(ctx)


def _down(ctx: Context) -> None:
    from tre.hub import HubServer
    from tre.identity import KeycloakServer
    from tre.portal.server import PortalServer
    from tre.privileged import Helper

    settings = ctx.settings
    servers = [
        ("Hub", HubServer.from_settings(settings, ctx.environ)),
        ("Portal", PortalServer.from_settings(settings, ctx.environ)),
        ("Keycloak", KeycloakServer.from_settings(settings)),
    ]
    if os.geteuid() == 0:
        servers.append(("Privileged helper", Helper(settings.home, ctx.environ)))
    for name, server in servers:
        click.echo(f"{name} {'stopped' if server.stop() else 'was not running'}.")
