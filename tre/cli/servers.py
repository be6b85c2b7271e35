"""`down` and `status` for the TRE's background servers (the portal, the hub): the same
commands and messages for each."""

from __future__ import annotations

from collections.abc import Callable

import click

from tre.cli import Context, home_option, pass_context


def keycloak_running(settings):
    """The local Keycloak, started first if it does not answer (what each ``up`` needs)."""
    from tre.identity import KeycloakServer

    keycloak = KeycloakServer.from_settings(settings)
    if not keycloak.answers():
        click.echo(f"Starting Keycloak on {keycloak.url} (first start takes ~1 min)…")
        keycloak.start()
    return keycloak


def add_down_and_status(
    group: click.Group, server_of: Callable[[Context], object], what: str, down_help: str
) -> None:
    """Add ``down`` (help ``down_help``) and ``status`` to ``group``, for the server that
    ``server_of`` gives, called ``what`` in messages ("portal", "hub")."""

    @group.command("down", help=down_help)
    @home_option
    @pass_context
    def down(ctx: Context) -> None:
        stopped = server_of(ctx).stop()
        click.echo(f"{what.capitalize()} stopped." if stopped else f"The {what} was not running.")

    @group.command(
        "status", help=f"Say whether the {what} runs and answers; exit 69 if it does not."
    )
    @home_option
    @pass_context
    def status(ctx: Context) -> None:
        from tre.exceptions import ServiceUnavailable

        found = server_of(ctx).status()
        if not found.ready:
            raise ServiceUnavailable(
                f"The {what} is {'starting' if found.running else 'not running'}. "
                f"Start it with `tre {group.name} up`."
            )
        click.echo(f"The {what} is running at {found.url} (pid {found.pid}) and ready.")
