"""`tre privileged`: the privileged helper, the one process of the TRE that keeps root."""

from __future__ import annotations

import click

from tre.cli import Context, cli, home_option, pass_context
from tre.cli.servers import add_down_and_status


@cli.group("privileged")
def privileged_group() -> None:
    """The privileged helper: OS accounts, output workers and workspaces (root only)."""


def _server(ctx: Context):
    from tre.privileged import Helper

    return Helper(ctx.settings.home, ctx.environ)


@privileged_group.command("up")
@home_option
@pass_context
def privileged_up(ctx: Context) -> None:
    """Start the privileged helper in the background (as root)."""
    from tre.home import Home

    Home(ctx.settings.home).check()
    status = _server(ctx).start()
    click.echo(f"Privileged helper ready at {status.url} (pid {status.pid}).")


add_down_and_status(
    privileged_group, _server, "privileged helper", "Stop the privileged helper (as root)."
)
