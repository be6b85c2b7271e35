"""The ``tre`` command.

``main(argv, environ)`` takes the arguments and the environment explicitly, so tests call it
without patching anything. A :class:`~tre.exceptions.TREError` is printed as one message
(no traceback) and becomes the exit code; anything else is a bug and shows its traceback.

Run by root (``sudo tre …``), the ``tre`` command first becomes the account its command is
for (:data:`ACCOUNTS`): ingest runs as ``tre-ingest``, provisioning and closure as
``tre-provision``, everything else that touches the TRE home as ``tre``. Only ``init``, ``up``,
``down``, ``privileged`` and the commands that never open the home keep root.
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
from tre.exceptions import ConfigError, TREError
from tre.home import Home
from tre.privileged import accounts
from tre.privileged.processes import become


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
        db = Database.of_settings(settings)
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


#: The account a command runs as when root runs it, by its first words ("root": it keeps root;
#: anything not listed runs as the services' account).
ACCOUNTS: dict[tuple[str, ...], str] = {
    ("init",): "root",
    ("up",): "root",
    ("down",): "root",
    ("privileged",): "root",
    ("demo", "prepare"): "root",  # runs its parts as their accounts
    # Never open the TRE home: the operator's and the custodians' own tools.
    ("identity", "fetch"): "root",
    ("synth",): "root",
    ("custodian", "keygen"): "root",
    ("custodian", "sign"): "root",
    ("custodian", "manifest"): "root",
    ("outputs", "check-table"): accounts.SERVICE,
    ("ingest",): accounts.INGEST,
    ("linkage",): accounts.INGEST,
    ("demo", "data"): accounts.INGEST,
    ("project", "provision"): accounts.PROVISION,
    ("project", "close"): accounts.PROVISION,
    ("demo", "projects"): accounts.PROVISION,
}


def command_path(argv: Sequence[str]) -> tuple[str, ...]:
    """The names of the command ``argv`` runs (``("project", "provision")``), as click itself
    reads them: an option's value that looks like a command or like ``--help`` is a value."""
    names: list[str] = []
    command: click.Command = cli
    try:
        ctx = cli.make_context("tre", list(argv), resilient_parsing=True)
        while isinstance(command, click.Group):
            # What is left to read after the group's own options (click 8.2 onwards keeps
            # the subcommand's name apart, in a private field; before, in protected_args).
            fields = vars(ctx)
            protected = fields.get("_protected_args", fields.get("protected_args", ()))
            rest = [*protected, *ctx.args]
            if not rest:
                break
            name, command, rest = command.resolve_command(ctx, rest)
            if command is None:
                break
            names.append(name)
            ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=True)
    except click.ClickException:
        pass  # click will say what is wrong with the command line
    return tuple(names)


def account_for(argv: Sequence[str]) -> str:
    """The account the command ``argv`` runs as when root runs it."""
    words = command_path(argv)
    if not words:
        return "root"  # no command: help or the version
    for length in (2, 1):
        if words[:length] in ACCOUNTS:
            return ACCOUNTS[words[:length]]
    return accounts.SERVICE


def become_account_for(argv: Sequence[str], environ: dict[str, str]) -> None:
    """As root, become the account of the command ``argv`` (for good): its groups, gid, uid,
    umask 027. The environment keeps the cache folder root would use."""
    if not accounts.running_as_root():
        return
    account = account_for(argv)
    if account == "root":
        return
    if not accounts.service_accounts_exist():
        raise ConfigError(
            "The TRE's service accounts do not exist yet: run `sudo tre init` (or `sudo tre up`) "
            "first."
        )
    environ.setdefault("TRE_CACHE_DIR", str(Settings.from_environ(environ).cache_dir))
    environ["HOME"] = "/nonexistent"
    environ["USER"] = environ["LOGNAME"] = account
    become(accounts.Account.named(account))
    os.umask(0o027)


def run_as_own_account(ctx: Context, argv: Sequence[str]) -> None:
    """Run ``tre argv`` in a process of its own (as root: it becomes its command's account);
    its output goes to this command's; a failure stops this one with its exit code."""
    import subprocess

    environ = {**ctx.environ, "TRE_HOME": str(ctx.settings.home)}
    done = subprocess.run([sys.executable, "-m", "tre", *argv], env=environ, check=False)
    if done.returncode != 0:
        raise TREError(f"`tre {' '.join(argv)}` failed (exit code {done.returncode}).")


def run() -> None:
    try:
        become_account_for(sys.argv[1:], os.environ)
    except TREError as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(e.exit_code)
    sys.exit(main())


# Register the commands of each part of the TRE.
from tre.cli import (  # noqa: E402, F401
    audit,
    data,
    hub,
    identity,
    outputs,
    portal,
    privileged,
    projects,
    servers,
    up,
)
