"""`tre portal`: the web portal and API."""

from __future__ import annotations

import click

from tre.cli import Context, cli, home_option, pass_context


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
    """Serve the portal on 127.0.0.1 (Keycloak must be running)."""
    from tre import portal

    settings = ctx.settings
    click.echo(f"Portal on {settings.portal_url} (Ctrl-C to stop).")
    portal.serve(settings, port)
