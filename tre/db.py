"""The metadata database: SQLAlchemy engine, transactions and Alembic migrations.

SQLite (a file in the TRE home) is the default; PostgreSQL is used when ``TRE_DATABASE_URL``
says so. Tables are declared next to the domain they belong to (``tre.audit`` declares the audit
log) on the one :class:`Base` defined here, and created only by the migrations in
``tre/migrations``.

State changes happen in :meth:`Database.write`: one transaction that holds the database's write
lock from its first statement (SQLite ``BEGIN IMMEDIATE``; on PostgreSQL, rows that must be
serialised are locked with ``SELECT ... FOR UPDATE`` by the code that reads them), so two
processes can never interleave half of one change with half of another.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import DeclarativeBase, Session

from tre.exceptions import InvalidInput, NotInitialised, ServiceUnavailable

if TYPE_CHECKING:
    from tre.config import Settings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 60
#: Connections kept open, and opened beyond that under load (the portal serves from a pool of
#: threads).
POOL_SIZE, POOL_OVERFLOW = 10, 30
#: Where a write session carries the audit key (:mod:`tre.audit.log` MACs each event with it).
AUDIT_KEY = "tre_audit_key"


class Base(DeclarativeBase):
    pass


def metadata() -> sa.MetaData:
    """Every table of the TRE (importing the modules that declare them)."""
    import tre.airlock
    import tre.audit
    import tre.curated
    import tre.custodians
    import tre.outputs
    import tre.outputs.privacy
    import tre.portal.auth
    import tre.projects  # noqa: F401

    return Base.metadata


class Database:
    """The metadata database. ``audit_key`` (the TRE's services have it: :meth:`of_home`)
    MACs each audit event written and lets :func:`tre.audit.verify` check those MACs."""

    def __init__(self, url: str, audit_key: bytes | None = None):
        self.url = url
        self.audit_key = audit_key
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # Connections are pooled (opening one costs ~1 ms with its pragmas); each is used
            # by one thread at a time, which the pool guarantees.
            self.engine = sa.create_engine(
                url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
            )
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = sa.create_engine(
                url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
            )
        self._writer = self.engine.execution_options(tre_write=True)

    @classmethod
    def of_home(cls, url: str, home: Path) -> Database:
        """The database as the TRE's services open it: with the home's audit key."""
        from tre.keys import AUDIT_KEY as AUDIT_KEY_FILE
        from tre.keys import read_key

        return cls(url, audit_key=read_key(Path(home) / "keys" / AUDIT_KEY_FILE, group_read=True))

    @classmethod
    def of_settings(cls, settings: Settings) -> Database:
        return cls.of_home(settings.metadata_url, settings.home)

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            if self.audit_key is not None:
                session.info[AUDIT_KEY] = self.audit_key
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def rows(self) -> Iterator[sa.Connection]:
        """A read transaction on a plain connection, for Core statements that only read rows:
        no ORM session, whose set-up costs about as much as a page's queries."""
        with self.engine.connect() as connection, connection.begin():
            yield connection

    # -- migrations -------------------------------------------------------------------------

    def _alembic_config(self, connection: sa.Connection) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except sa.exc.OperationalError as e:
            raise ServiceUnavailable(
                f"Cannot open the metadata database: {e.orig}. Check TRE_DATABASE_URL and that "
                "the database server is running."
            ) from None

    def head_revision(self) -> str:
        script = ScriptDirectory(str(MIGRATIONS))
        head = script.get_current_head()
        assert head is not None
        return head

    def migrate(self) -> tuple[str | None, str]:
        """Bring the schema to the newest revision; return (revision before, revision after)."""
        before = self.current_revision()
        with self._writer.begin() as connection:
            command.upgrade(self._alembic_config(connection), "head")
        return before, self.head_revision()

    def check_current(self) -> None:
        """Refuse to work on a database that is missing or older than this code."""
        current = self.current_revision()
        if current is None:
            raise NotInitialised(
                "The metadata database has no tables yet. Run `tre init` to create it."
            )
        if current != self.head_revision():
            raise NotInitialised(
                "The metadata database is at an older schema than this version of tre. "
                "Run `tre init` to migrate it."
            )

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Let SQLAlchemy's "begin" event, not the driver, start transactions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    if connection.get_execution_options().get("tre_write"):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def check_daily_cap(session, created_at, cap: int, what: str, *conditions) -> None:
    """Refuse one more of ``what`` when ``cap`` rows meeting ``conditions`` were made in the
    last day (``created_at``: an ISO UTC time column, as the TRE writes them). The daily caps
    on what one researcher makes: text shown outside a workspace is bounded in number, not
    only in length."""
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat(timespec="seconds")
    query = sa.select(sa.func.count()).where(created_at >= since, *conditions)
    made = session.execute(query).scalar_one()
    if made >= cap:
        raise InvalidInput(
            f"You made {made} {what} in the last day, the most a day allows: try again "
            "tomorrow, or ask the TRE's operators."
        )
