"""`tre portal`: the web portal and API."""

from __future__ import annotations

import click

from tre.cli import Context, cli, home_option, pass_context
from tre.cli.servers import add_down_and_status, keycloak_running


@cli.group("portal")
def portal_group() -> None:
    """The web portal and the /api/v1 API."""


@portal_group.command("serve")
@home_option
@click.option(
    "--port", type=int, default=None, help="Port on 127.0.0.1 (default: from TRE_PORTAL_URL)."
)
@pass_context
def portal_serve(ctx: Context, port: int | None) -> None:
    """Serve the portal on 127.0.0.1 in this terminal (Keycloak must be running)."""
    from tre import portal

    settings = ctx.settings
    click.echo(f"Portal on {settings.portal_url} (Ctrl-C to stop).")
    portal.serve(settings, ctx.environ, port)


def _server(ctx: Context):
    from tre.portal.server import PortalServer

    ctx.database()  # the home must exist and its database be current
    return PortalServer.from_settings(ctx.settings, ctx.environ)


@portal_group.command("up")
@home_option
@pass_context
def portal_up(ctx: Context) -> None:
    """Start Keycloak if needed, then the portal in the background; print where to log in."""
    from tre.cli.identity import echo_demo_accounts

    server = _server(ctx)
    settings = ctx.settings
    keycloak = keycloak_running(settings)
    status = server.start()
    click.echo(f"Portal ready at {settings.portal_url} (pid {status.pid}; log {server.log_file}).")
    click.echo(f"API: {settings.portal_url}/api/v1/docs; identity: {keycloak.issuer}.")
    echo_demo_accounts(settings)
    click.echo("Stop with `tre portal down` and `tre identity down` (or `make clean`).")


add_down_and_status(portal_group, _server, "portal", "Stop the background portal.")
