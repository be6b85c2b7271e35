"""The ``tre`` command.

``main(argv, environ)`` takes the arguments and the environment explicitly, so tests call it
without patching anything. A :class:`~tre.exceptions.TREError` is printed as one message
(no traceback) and becomes the exit code; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import click

from tre import home
from tre.config import Settings
from tre.db import Database
from tre.exceptions import TREError
from tre.home import Home


@dataclasses.dataclass
class Context:
    environ: Mapping[str, str]
    home: str | None = None
    _databases: list[Database] = dataclasses.field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.from_environ(self.environ, home=self.home)

    def database(self) -> Database:
        settings = self.settings
        Home(settings.home).check()
        db = Database(settings.metadata_url)
        self._databases.append(db)
        db.check_current()
        return db

    def close(self) -> None:
        for db in self._databases:
            db.dispose()


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
        for item in report.changes:
            click.echo(f"  {item}")
    else:
        click.echo(f"The TRE home at {report.home} is already initialised; nothing changed.")


actor_option = click.option(
    "--as",
    "actor",
    metavar="USER",
    default=None,
    help="Who is acting, as recorded in the audit log (local profile); default: your OS account.",
)


def actor_name(actor: str | None) -> str:
    return actor or getpass.getuser()


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
    for chatty in ("alembic", "httpx"):  # one line per migration step or HTTP call
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    _access_hooks(context)
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
    finally:
        context.close()
    return result if isinstance(result, int) else 0


def _access_hooks(context: Context) -> None:
    """Project changes also update their Keycloak groups (TRE_KEYCLOAK_SYNC) and workspaces."""
    from tre import projects as project_lifecycle

    project_lifecycle.install_access_hooks(lambda: context.settings)


def run() -> None:
    sys.exit(main())


# Register the commands of each part of the TRE.
from tre.cli import audit, data, hub, identity, outputs, portal, projects, up  # noqa: E402, F401
