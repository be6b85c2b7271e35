"""Fixtures shared by every test folder.

Services are real: a PostgreSQL server (``TRE_TEST_POSTGRES_URL``, or one started for the
session by ``infra/postgres/test-server.sh``) and a Keycloak server started once per session.
With ``TRE_TEST_STRICT=1`` (set by ``.ci/run``) a skipped test fails the run, so CI can never
pass while hiding a test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib
import os
import random
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.factories import init_home
from tre import projects
from tre.cli import main
from tre.config import Settings
from tre.db import Database
from tre.home import Home
from tre.people import local_person
from tre.projects import approvals, extracts, spec
from tre.services import free_port

REPO = Path(__file__).resolve().parents[1]
STRICT = os.environ.get("TRE_TEST_STRICT") == "1"


# -- guards -----------------------------------------------------------------------------------

# rich (imported by the portal's web framework) draws from the global random generator when it
# is first imported: import it before any test, so the guard below sees only what tests draw.
importlib.import_module("rich.style")


@pytest.fixture(autouse=True)
def _no_global_random():
    """A test that draws from the global random generators fails: use a seeded Generator."""
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    if random.getstate() != py_state:
        pytest.fail("the test used Python's global random generator; use random.Random(seed)")
    new_np = np.random.get_state()
    if new_np[2] != np_state[2] or not np.array_equal(new_np[1], np_state[1]):
        pytest.fail("the test used numpy's global random generator; use default_rng(seed)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """The session's temporary folders under a folder of its own (pytest resets the mode of
    the shared /tmp/pytest-of-<user> at every session's start, which would close the homes of
    a session running alongside to the TRE's accounts); removed at the end when every test
    passed, kept for a look otherwise."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="tre-tests-")
        config._tre_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    made = getattr(config, "_tre_basetemp", None)
    if made and getattr(config, "_tre_passed", False):
        import shutil

        shutil.rmtree(made, ignore_errors=True)


def _tre_accounts() -> set[str]:
    import pwd

    prefixes = ("tre-w-", "tre-x-", "tre-p-", "tre-q-")
    service = ("tre", "tre-ingest", "tre-provision")
    return {
        e.pw_name for e in pwd.getpwall() if e.pw_name.startswith(prefixes) or e.pw_name in service
    }


@pytest.fixture(scope="session", autouse=True)
def _remove_os_accounts_made_by_the_tests():
    """The OS accounts and groups the tests made (services, projects, workspaces) are removed
    at the end of the session, their processes first, then the network enclaves the tests made;
    those there before are kept."""
    from tre.privileged import enclaves

    before, enclaves_before = _tre_accounts(), set(enclaves.every())
    yield
    if os.geteuid() != 0:
        return
    from tre.privileged import accounts as os_accounts
    from tre.privileged.operations import _kill_account

    made = _tre_accounts() - before
    # Workspaces and projects first: the service accounts' groups hold no one then.
    for name in sorted(made, key=lambda n: n in ("tre", "tre-ingest", "tre-provision")):
        _kill_account(name)
        os_accounts.remove(name)
    for home, project, member in set(enclaves.every()) - enclaves_before:
        enclaves.remove(home, project, [member])


def pytest_sessionfinish(session, exitstatus):
    session.config._tre_passed = exitstatus == 0
    if not STRICT:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(
            f"TRE_TEST_STRICT=1: {skipped} test(s) were skipped; CI runs every test.", red=True
        )
        session.exitstatus = 1


# -- helpers ----------------------------------------------------------------------------------


def passable(folder: Path) -> Path:
    """``folder`` and the folders above it opened for other accounts to pass through (not to
    list): the TRE's service, project and workspace accounts reach a home made in pytest's
    0700 temporary folders, as they would one in /srv."""
    for path in [folder, *folder.parents]:
        if path == Path(tempfile.gettempdir()) or path == Path("/"):
            break
        if path.exists():
            path.chmod(path.stat().st_mode | 0o001)
    return folder


@pytest.fixture
def environ(tmp_path) -> dict[str, str]:
    """An environment for the CLI with its own TRE home and the shared download cache."""
    passable(tmp_path)
    env = {
        "TRE_HOME": str(tmp_path / "home"),
        **({"TRE_CACHE_DIR": os.environ["TRE_CACHE_DIR"]} if "TRE_CACHE_DIR" in os.environ else {}),
        "TRE_LOG_LEVEL": "WARNING",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
    }
    return env


@pytest.fixture
def settings(environ) -> Settings:
    return Settings.from_environ(environ)


# -- databases --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("TRE_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        out = subprocess.run(
            [str(REPO / "infra" / "postgres" / "test-server.sh"), "start"],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no PostgreSQL for the tests: {getattr(e, 'stderr', e)}")
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``base_url``; dropped afterwards."""
    name = f"tre_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        Settings.from_environ({"TRE_DATABASE_URL": base_url}).database_url,
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    """A fresh, empty metadata database: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tre.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def db(database_url) -> Database:
    """A migrated metadata database, on SQLite and on PostgreSQL."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


# -- Keycloak ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LocalTRE:
    """A TRE home with its own Keycloak, for the whole test session."""

    environ: dict[str, str]
    settings: Settings
    portal_port: int
    hub_port: int

    @property
    def issuer(self) -> str:
        return self.settings.keycloak_issuer

    def token(self, username: str) -> str:
        """An access token as the public client ``tre-cli`` gets one: by the device grant."""
        from tre.identity import device_login

        return device_login(self.issuer, username, self.settings.demo_password)


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory) -> LocalTRE:
    """A real Keycloak 26, started through `tre identity up` once per session."""
    from tre.cli import main

    home = passable(tmp_path_factory.mktemp("keycloak-home"))
    portal_port, hub_port = free_port(), free_port()
    env = {
        "TRE_HOME": str(home / "home"),
        **({"TRE_CACHE_DIR": os.environ["TRE_CACHE_DIR"]} if "TRE_CACHE_DIR" in os.environ else {}),
        "TRE_KEYCLOAK_PORT": str(free_port()),
        "TRE_PORTAL_URL": f"http://127.0.0.1:{portal_port}",
        "TRE_HUB_URL": f"http://127.0.0.1:{hub_port}",
        "TRE_LOG_LEVEL": "WARNING",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
    }
    assert main(["init"], env) == 0
    if main(["identity", "up"], env) != 0:
        pytest.fail("the test Keycloak did not start; see the output above")
    yield LocalTRE(env, Settings.from_environ(env), portal_port, hub_port)
    assert main(["identity", "down"], env) == 0
    assert main(["identity", "status"], env) == 69  # stopped, and says so


# -- data -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """Synthetic signed deliveries for 300 pupils, made once per session (do not modify)."""
    from tests.factories import make_deliveries

    # The ingest account reads them, as it would a custodian's upload folder.
    return make_deliveries(passable(tmp_path_factory.mktemp("synthetic")))


@pytest.fixture
def deliveries(synthetic, tmp_path):
    """A private copy of the synthetic deliveries, free to edit."""
    return synthetic.copy(tmp_path / "deliveries")


@pytest.fixture
def home_environ(environ, database_url, synthetic):
    """A TRE home with the custodians' keys registered, on SQLite and on PostgreSQL."""
    if not database_url.startswith("sqlite"):
        environ["TRE_DATABASE_URL"] = database_url
    init_home(environ, synthetic.keys)
    return environ


# -- a provisioned project ---------------------------------------------------------------------

ALICE, DORA, HUGH, ADA = (local_person(u) for u in ("alice", "dora", "hugh", "ada"))


@dataclasses.dataclass
class World:
    environ: dict
    home: Home
    db: Database
    project: str


def ingest_synthetic(environ: dict[str, str], synthetic) -> tuple[Home, Database]:
    """Initialise the TRE home of ``environ``, register the custodians' keys and ingest both
    synthetic deliveries. Return the home and its database (to dispose of)."""
    init_home(environ, synthetic.keys)
    assert main(["ingest", str(synthetic.dfe)], environ) == 0
    assert main(["ingest", str(synthetic.nhs)], environ) == 0
    settings = Settings.from_environ(environ)
    return Home(settings.home), Database.of_settings(settings)


@contextlib.contextmanager
def ingested_home(request, tmp_path_factory, synthetic, name: str):
    """For a module fixture parametrised "sqlite"/"postgres": a TRE home with both synthetic
    deliveries ingested, its database a SQLite file or a fresh PostgreSQL database. Yields the
    environment, the home and the database."""
    tmp = passable(tmp_path_factory.mktemp(f"{name}-{request.param}"))
    environ = {
        "TRE_HOME": str(tmp / "home"),
        "TRE_LOG_LEVEL": "WARNING",
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(Path.home()),
    }
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            environ["TRE_DATABASE_URL"] = stack.enter_context(
                fresh_postgres_database(request.getfixturevalue("postgres_url"))
            )
        home, db = ingest_synthetic(environ, synthetic)
        try:
            yield environ, home, db
        finally:
            db.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request, tmp_path_factory, synthetic):
    """A TRE home with the provisioned project ``out-project`` (alice), on SQLite and
    PostgreSQL."""
    with ingested_home(request, tmp_path_factory, synthetic, "outputs") as (environ, home, db):
        provision_project(home, db, example_application("out-project", privacy_budget=1.0), ALICE)
        yield World(environ, home, db, "out-project")


def example_application(project_id: str, days: int = 100, **changes) -> spec.ProjectSpec:
    """The example project asthma-ks4 as ``project_id``, from today for ``days``, without its
    cohort (so that the small synthetic data fills it)."""
    today = dt.date.today()
    return dataclasses.replace(
        spec.load(REPO / "projects" / "asthma-ks4.yaml"),
        id=project_id,
        start=today,
        end=today + dt.timedelta(days=days),
        cohort=(),
        **changes,
    )


def provision_project(home, db, application, applicant, dfe_conditions=None) -> None:
    """Submit ``application`` (of the DfE and NHS data) as ``applicant``; both custodians
    approve it (the DfE with ``dfe_conditions``) and an administrator provisions it."""
    projects.submit(db, application, applicant)
    projects.decide(db, application.id, "dfe", DORA, approve=True, conditions=dfe_conditions)
    projects.decide(db, application.id, "nhs", HUGH, approve=True)
    extracts.provision(home, db, application.id, ADA)


# -- the portal --------------------------------------------------------------------------------


@dataclasses.dataclass
class Portal:
    """A portal served by uvicorn in its own process, behind the session's real Keycloak, over
    a TRE home holding: ``project`` (provisioned; alice and bob), ``pending`` (submitted; bob),
    ``in_review`` (an export request of ``project`` waiting for its reviews), ``released`` (one
    reviewed and released) and ``output`` (the output in both)."""

    url: str
    environ: dict[str, str]
    keycloak: LocalTRE
    home: Home
    db: Database
    project: str
    pending: str
    in_review: int
    released: int
    output: int

    def token(self, username: str) -> str:
        return self.keycloak.token(username)

    def api(self, username: str | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {self.token(username)}"} if username else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60)

    def login(self, username: str):
        """An HTTP client logged in to the portal through the real Keycloak login form."""
        from tre.identity import form_login

        return form_login(self.url, username, self.keycloak.settings.demo_password)


def start_portal(keycloak, synthetic, folder: Path, url: str, sync: bool = True):
    """Build the portal's TRE home (see :class:`Portal`) in ``folder`` and serve it at ``url``.
    Return the portal and its server (``tre portal up``'s, with its log in the home)."""
    from tre import airlock, outputs
    from tre.identity.server import KeycloakServer
    from tre.outputs import specs
    from tre.portal.server import PortalServer
    from tre.privileged import Helper

    server = KeycloakServer.from_settings(keycloak.settings)
    passable(folder)
    environ = {
        **keycloak.environ,
        "TRE_HOME": str(folder / "home"),
        "TRE_PORTAL_URL": url,
        "TRE_PORTAL_CLIENT_SECRET": server.secret("portal_secret"),
        "TRE_KEYCLOAK_PROVISIONER_SECRET": server.secret("provisioner_secret"),
        "TRE_KEYCLOAK_SYNC": "on" if sync else "off",
    }
    home, db = ingest_synthetic(environ, synthetic)
    settings = Settings.from_environ(environ)
    people = {u: local_person(u) for u in ("alice", "bob", "dora", "hugh", "olga", "oscar", "ada")}
    today = dt.date.today()
    asthma = spec.load(REPO / "projects" / "asthma-ks4.yaml")
    application = dataclasses.replace(
        asthma,
        id="portal-project",
        start=today,
        end=today + dt.timedelta(days=100),
        cohort=(),
        compute=spec.Compute(workers=3, worker_cores=1, worker_memory_gb=3),
    )
    # The DfE grants smaller Dask workers than asked (the gateway's tests hold it to them).
    smaller = approvals.Conditions(compute=spec.Compute(worker_memory_gb=2.5))
    projects.install_access_hooks(lambda: settings)  # groups follow when ``sync``
    try:
        provision_project(home, db, application, people["alice"], smaller)
    finally:
        projects.ACCESS_HOOKS.clear()
    pending = dataclasses.replace(
        application, id="pending-project", lead="bob", members=("bob",), title="Pending"
    )
    projects.submit(db, pending, people["bob"])
    table = specs.parse(
        {"name": "pupils by sex", "kind": "table", "dataset": "pupils", "rows": ["sex"]}
    )
    output, _ = outputs.check(home, db, application.id, table, people["alice"])
    made = []
    for title in ("Waiting for review", "Released already"):
        request = airlock.create(db, application.id, title, people["alice"])
        airlock.put_output(db, request.id, output.id, "pupils by sex, for table 1", people["alice"])
        airlock.submit(home, db, request.id, people["alice"])
        made.append(request.id)
    for checker in ("olga", "oscar"):
        airlock.review(home, db, made[1], 1, "approve", "", people[checker])
    # Made as root by this process: handed to its owners, as `tre init` does, before the
    # portal (as the services' account) and the privileged helper serve it.
    assert main(["init"], environ) == 0
    helper = Helper(settings.home, environ)
    helper.start()
    served = PortalServer(settings.home, url, environ)
    served.start()
    portal = Portal(url, environ, keycloak, home, db, application.id, pending.id, *made, output.id)
    return portal, (served, helper)


def stop_portal(portal: Portal, servers) -> None:
    served, helper = servers
    assert served.stop(), "the portal had stopped before the end of its tests"
    assert helper.stop(), "the privileged helper had stopped before the end of the tests"
    portal.db.dispose()


@pytest.fixture(scope="session")
def portal(keycloak, synthetic, tmp_path_factory) -> Portal:
    """The portal at the URL Keycloak redirects logins to, with project groups kept in sync."""
    portal, served = start_portal(
        keycloak, synthetic, tmp_path_factory.mktemp("portal"), keycloak.settings.portal_url
    )
    yield portal
    stop_portal(portal, served)


# -- the hub -----------------------------------------------------------------------------------

#: A provisioned project of bob's only, next to the portal's.
HUB_OTHER = "hub-other"


@pytest.fixture(scope="session")
def hub(portal, keycloak):
    """The hub on the URL Keycloak knows, over the portal's home, with a second provisioned
    project (``hub-other``, of bob) next to the portal's (alice and bob)."""
    from tre.hub import HubServer
    from tre.identity.server import KeycloakServer

    assert os.geteuid() == 0, "workspaces run under OS accounts of their own: run as root"
    today = dt.date.today()
    other = dataclasses.replace(
        spec.load(REPO / "projects" / "fsm-ae.yaml"),
        id=HUB_OTHER,
        lead="bob",
        members=("bob",),
        start=today,
        end=today + dt.timedelta(days=100),
    )
    provision_project(portal.home, portal.db, other, local_person("bob"))
    environ = {
        **portal.environ,
        "TRE_HUB_CLIENT_SECRET": KeycloakServer.from_settings(keycloak.settings).secret(
            "hub_secret"
        ),
        "TRE_HUB_SWEEP_SECONDS": "2",
    }
    settings = Settings.from_environ(environ)
    server = HubServer.from_settings(settings, environ)
    server.start()
    assert main(["hub", "status"], environ) == 0
    yield settings
    assert main(["hub", "down"], environ) == 0
    assert main(["hub", "status"], environ) == 69
    assert not any(p.endswith("jupyterhub-singleuser") for p in _commands()), "left running"


def _commands() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def keys_of_an_earlier_version(home: Path, dataset: str) -> None:
    """Rewrite a curated dataset as tre wrote it before person keys were UUIDs: with the hex
    digits of the whole HMAC."""
    import duckdb

    for path in home.glob(f"curated/*/{dataset}/**/*.parquet"):
        with duckdb.connect() as con:
            con.execute(
                f"COPY (SELECT sha256(CAST(person_key AS VARCHAR)) AS person_key, * EXCLUDE "
                f"(person_key) FROM read_parquet('{path}')) TO '{path}.new' (FORMAT parquet)"
            )
        os.replace(f"{path}.new", path)
