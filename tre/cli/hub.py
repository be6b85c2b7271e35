"""`tre hub`: JupyterHub, where each project's workspace runs."""

from __future__ import annotations

import click

from tre.cli import Context, cli, home_option, pass_context
from tre.cli.servers import add_down_and_status, keycloak_running


@cli.group("hub")
def hub_group() -> None:
    """JupyterHub and the project workspaces."""


def _server(ctx: Context):
    from tre.hub import HubServer

    ctx.database()  # the home must exist and its database be current
    return HubServer.from_settings(ctx.settings, ctx.environ)


@hub_group.command("up")
@home_option
@pass_context
def hub_up(ctx: Context) -> None:
    """Start Keycloak if needed, then JupyterHub in the background (as root: each workspace
    runs under an OS account of its own)."""
    server = _server(ctx)
    keycloak_running(ctx.settings)
    status = server.start()
    click.echo(f"Hub ready at {ctx.settings.hub_url} (pid {status.pid}; log {server.log_file}).")
    click.echo("Log in as a researcher and start the workspace named after one of your projects.")


add_down_and_status(hub_group, _server, "hub", "Stop JupyterHub and the workspaces it started.")
