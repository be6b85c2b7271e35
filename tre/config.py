"""Settings of the TRE, each declared once: name, environment variable, default and help.

Settings are read from the environment given to :meth:`Settings.from_environ` (the CLI passes
its own ``environ``, so nothing here reads ``os.environ`` behind the caller's back). Every value
is checked when it is read; a bad one stops the TRE at start-up with a message naming the
variable and what to set it to. The settings reference in the docs is generated from
:data:`SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tre.exceptions import ConfigError


def _path(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _cache_path(value: str) -> Path:
    """The cache folder; by default ``~/.cache/tre``, or ``/var/cache/tre`` as root (root's
    own home is closed to the service accounts that run what is cached there)."""
    if not value:
        value = "/var/cache/tre" if os.geteuid() == 0 else "~/.cache/tre"
    return _path(value)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError("must be a port number between 1 and 65535")
    return port


def _count_of(what: str, most: int = 64) -> Callable[[str], int]:
    def count(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= most:
            raise ValueError(f"must be a number of {what} between 1 and {most}")
        return n

    return count


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host name")
    return value.rstrip("/")


def _optional_url(value: str) -> str:
    return _url(value) if value else ""


def _database_url(value: str) -> str:
    if not value:
        return ""
    scheme = value.split(":", 1)[0]
    if scheme in ("postgres", "postgresql"):
        # psycopg 3 is the driver we install; accept the plain libpq form too.
        return "postgresql+psycopg:" + value.split(":", 1)[1]
    if scheme in ("sqlite", "postgresql+psycopg"):
        return value
    raise ValueError("must be a sqlite:/// or postgresql:// URL")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def _text(value: str) -> str:
    return value


def private_network(value: str) -> str:
    """``value`` as a private IPv4 network of at least 16 addresses (what the enclaves' /30s
    are taken from), written canonically; ValueError otherwise."""
    import ipaddress

    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        network = None
    if network is None or not network.is_private or network.prefixlen > 28:
        raise ValueError(
            "must be a private IPv4 network of at least 16 addresses, e.g. 10.213.0.0/16"
        )
    return str(network)


def _switch(value: str) -> bool:
    if value.lower() in ("1", "on", "true", "yes"):
        return True
    if value.lower() in ("", "0", "off", "false", "no"):
        return False
    raise ValueError("must be on or off")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: where it comes from, what it means, how its text is turned into a value."""

    name: str
    env: str
    default: str
    help: str
    parse: Callable[[str], Any] = _text
    example: str = ""

    def read(self, environ: Mapping[str, str]) -> Any:
        raw = environ.get(self.env, self.default)
        try:
            return self.parse(raw)
        except ValueError as e:
            hint = f", for example {self.env}={self.example}" if self.example else ""
            raise ConfigError(
                f"{self.env}={raw!r} is not usable: it {e}. Set it to a valid value{hint}, "
                f"or unset it to use the default ({self.default or 'none'})."
            ) from None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "home",
        "TRE_HOME",
        "./var",
        "Folder holding the TRE's stores (landing, curated, projects, released), its keys and, "
        "by default, the metadata database. Created by `tre init`.",
        _path,
        "/srv/tre",
    ),
    Setting(
        "database_url",
        "TRE_DATABASE_URL",
        "",
        "Metadata database (projects, approvals, requests, privacy ledger, audit log). Empty "
        "means a SQLite file `db/tre.db` in the TRE home; use a postgresql:// URL in production.",
        _database_url,
        "postgresql://tre@db.internal/tre",
    ),
    Setting(
        "cache_dir",
        "TRE_CACHE_DIR",
        "",
        "Where downloaded servers (the Keycloak distribution, JupyterHub's proxy) are kept "
        "between installs; never inside the repository. Empty means ~/.cache/tre, or "
        "/var/cache/tre as root (the service accounts run what is kept there).",
        _cache_path,
        "/var/cache/tre",
    ),
    Setting(
        "log_level",
        "TRE_LOG_LEVEL",
        "INFO",
        "How much the TRE logs: DEBUG, INFO, WARNING or ERROR.",
        _log_level,
        "DEBUG",
    ),
    Setting(
        "keycloak_version",
        "TRE_KEYCLOAK_VERSION",
        "26.7.3",
        "Version of the Keycloak server fetched from Maven Central "
        "(org.keycloak:keycloak-quarkus-dist) for the local profile.",
        _text,
        "26.5.6",
    ),
    Setting(
        "keycloak_port",
        "TRE_KEYCLOAK_PORT",
        "8080",
        "Port on 127.0.0.1 where `tre identity up` runs Keycloak.",
        _port,
        "8080",
    ),
    Setting(
        "keycloak_url",
        "TRE_KEYCLOAK_URL",
        "",
        "Base URL of the Keycloak server. Empty means the local one, "
        "http://127.0.0.1:<TRE_KEYCLOAK_PORT>.",
        _optional_url,
        "https://id.tre.example.org",
    ),
    Setting(
        "keycloak_realm",
        "TRE_KEYCLOAK_REALM",
        "tre",
        "Keycloak realm holding the TRE's users, roles and project groups.",
        _text,
        "tre",
    ),
    Setting(
        "api_audience",
        "TRE_API_AUDIENCE",
        "tre-portal",
        "Audience (`aud`) an access token must carry to be accepted by the TRE's API.",
        _text,
        "tre-portal",
    ),
    Setting(
        "portal_url",
        "TRE_PORTAL_URL",
        "http://127.0.0.1:8000",
        "Public URL of the portal; Keycloak only redirects logins back to it.",
        _url,
        "https://portal.tre.example.org",
    ),
    Setting(
        "portal_workers",
        "TRE_PORTAL_WORKERS",
        "2",
        "Processes serving the portal (uvicorn workers; each new connection goes to the next). "
        "One per core is a good start; sessions live in the metadata database, so any worker "
        "serves any user.",
        _count_of("processes"),
        "4",
    ),
    Setting(
        "portal_threads",
        "TRE_PORTAL_THREADS",
        "2",
        "Threads per portal process running page and API handlers. Handlers mostly compute, "
        "which Python does one thread at a time, so few is fastest; more help only when "
        "handlers wait on a remote database.",
        _count_of("threads"),
        "1",
    ),
    Setting(
        "portal_role_check_seconds",
        "TRE_PORTAL_ROLE_CHECK_SECONDS",
        "60",
        "How long a portal session trusts the roles and groups Keycloak gave it before asking "
        "again with the login's refresh token. A role removed in Keycloak is gone from the "
        "portal this long after at most; a person logged out, disabled or idle past "
        "Keycloak's limit is logged out of the portal.",
        _count_of("seconds", 3600),
        "30",
    ),
    Setting(
        "hub_url",
        "TRE_HUB_URL",
        "http://127.0.0.1:8081",
        "Public URL of the JupyterHub serving the workspaces.",
        _url,
        "https://workspaces.tre.example.org",
    ),
    Setting(
        "hub_sweep_seconds",
        "TRE_HUB_SWEEP_SECONDS",
        "60",
        "How often the hub's sweeper expires projects past their end date and stops any running "
        "workspace whose project is not provisioned or whose researcher left the project.",
        _count_of("seconds", 86_400),
        "300",
    ),
    Setting(
        "audit_checkpoint_seconds",
        "TRE_AUDIT_CHECKPOINT_SECONDS",
        "60",
        "How often the portal has the audit log's head signed into a checkpoint outside the "
        "database, when it moved: events deleted from the end of the log after the newest "
        "checkpoint are the only tampering verification cannot see.",
        _count_of("seconds", 86_400),
        "300",
    ),
    Setting(
        "workspace_env",
        "TRE_WORKSPACE_ENV",
        "/opt/tre/workspace-env",
        "The virtualenv workspaces run from: built by `make setup` (as root) from Debian's "
        "Python, readable by every workspace account.",
        _text,
        "/srv/tre/workspace-env",
    ),
    Setting(
        "enclave_network",
        "TRE_ENCLAVE_NETWORK",
        "10.213.0.0/16",
        "The private IPv4 network the projects' network enclaves take their addresses from (a "
        "/30 each): keep it for them, unused by anything else on the machine.",
        private_network,
        "10.90.0.0/16",
    ),
    Setting(
        "workspace_file_max_mb",
        "TRE_WORKSPACE_FILE_MAX_MB",
        "2",
        "The largest file a workspace's Jupyter server hands to the browser (notebooks, code, "
        "text, images), in MB; data files are never handed over, whatever their size.",
        _count_of("megabytes", 1024),
        "5",
    ),
    Setting(
        "notebook_output_kb",
        "TRE_NOTEBOOK_OUTPUT_KB",
        "64",
        "The most of one notebook output the browser is given when it opens a notebook, in KB; "
        "past it, the output is cut and says so.",
        _count_of("kilobytes", 1 << 20),
        "256",
    ),
    Setting(
        "dask_max_workers",
        "TRE_DASK_MAX_WORKERS",
        "4",
        "The most Dask workers one researcher's cluster of a project may have (on the hub's "
        "dask-gateway), when the project's application asks for no other (its compute.workers, "
        "which custodians may lower).",
        _count_of("workers", 1024),
        "16",
    ),
    Setting(
        "dask_worker_cores",
        "TRE_DASK_WORKER_CORES",
        "1",
        "The most cores (threads) a Dask worker may ask for, when the project's application asks "
        "for no other (compute.worker_cores).",
        _count_of("cores", 256),
        "4",
    ),
    Setting(
        "dask_worker_memory_gb",
        "TRE_DASK_WORKER_MEMORY_GB",
        "4",
        "The most memory a Dask worker may ask for, in GiB, when the project's application asks "
        "for no other (compute.worker_memory_gb). Dask's own limit: it spills, then restarts "
        "the worker, past it.",
        _count_of("gibibytes", 4096),
        "16",
    ),
    Setting(
        "dask_idle_minutes",
        "TRE_DASK_IDLE_MINUTES",
        "30",
        "How long a Dask cluster may sit idle (no task) before the gateway stops it.",
        _count_of("minutes", 7 * 24 * 60),
        "60",
    ),
    Setting(
        "output_cpu_seconds",
        "TRE_OUTPUT_CPU_SECONDS",
        "120",
        "Computing time one output may take (its worker is stopped past it, and past twice "
        "as long on the clock); the researcher is told to ask for fewer cells.",
        _count_of("seconds", 86_400),
        "600",
    ),
    Setting(
        "output_memory_mb",
        "TRE_OUTPUT_MEMORY_MB",
        "4096",
        "Memory one output's worker may use, in MB (DuckDB is given half of it).",
        _count_of("megabytes", 1 << 20),
        "16384",
    ),
    Setting(
        "output_max_cells",
        "TRE_OUTPUT_MAX_CELLS",
        "5000",
        "The most cells a table or summary may have, counted over the finest combination of "
        "its variables (and those of the tables it is linked with). A larger one is refused "
        "before anything is computed: it is no summary, and its checks would not finish.",
        _count_of("cells", 10_000_000),
        "20000",
    ),
    Setting(
        "output_max_categories",
        "TRE_OUTPUT_MAX_CATEGORIES",
        "50",
        "The most categories (distinct values, missing counted as one) a row or column "
        "variable of a table or summary may have. More is refused before anything is "
        "computed, saying to band the variable: a category per value singles people out.",
        _count_of("categories", 100_000),
        "100",
    ),
    Setting(
        "keycloak_sync",
        "TRE_KEYCLOAK_SYNC",
        "off",
        "Whether project changes update Keycloak: provisioning creates the group project-<id> "
        "with its members; suspension, expiry and closure remove them. On for `tre up` and "
        "the portal.",
        _switch,
        "on",
    ),
    Setting(
        "provisioner_secret",
        "TRE_KEYCLOAK_PROVISIONER_SECRET",
        "",
        "Client secret of the tre-provisioner service account. Empty means the one generated "
        "for the local Keycloak in <home>/identity/secrets.json.",
        _text,
        "a-client-secret",
    ),
    Setting(
        "portal_client_secret",
        "TRE_PORTAL_CLIENT_SECRET",
        "",
        "Client secret of the tre-portal client, for logins. Empty means the one generated "
        "for the local Keycloak in <home>/identity/secrets.json.",
        _text,
        "a-client-secret",
    ),
    Setting(
        "hub_client_secret",
        "TRE_HUB_CLIENT_SECRET",
        "",
        "Client secret of the tre-hub client, for JupyterHub's logins. Empty means the one "
        "generated for the local Keycloak in <home>/identity/secrets.json.",
        _text,
        "a-client-secret",
    ),
    Setting(
        "demo_password",
        "TRE_DEMO_PASSWORD",
        "tre-demo",
        "Password of the demo users imported into a local Keycloak (local profile only; "
        "production realms have no demo users).",
        _text,
        "a-long-passphrase",
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The values of every setting, read and checked at once."""

    home: Path
    database_url: str
    cache_dir: Path
    log_level: str
    keycloak_version: str
    keycloak_port: int
    keycloak_url: str
    keycloak_realm: str
    api_audience: str
    portal_url: str
    portal_workers: int
    portal_threads: int
    portal_role_check_seconds: int
    hub_url: str
    hub_sweep_seconds: int
    audit_checkpoint_seconds: int
    workspace_env: str
    enclave_network: str
    workspace_file_max_mb: int
    notebook_output_kb: int
    dask_max_workers: int
    dask_worker_cores: int
    dask_worker_memory_gb: int
    dask_idle_minutes: int
    output_cpu_seconds: int
    output_memory_mb: int
    output_max_cells: int
    output_max_categories: int
    keycloak_sync: bool
    provisioner_secret: str
    portal_client_secret: str
    hub_client_secret: str
    demo_password: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ``; ``overrides`` (e.g. ``home`` from ``--home``)
        take precedence and are checked the same way."""
        environ = dict(os.environ if environ is None else environ)
        by_name = {s.name: s for s in SETTINGS}
        for name, value in overrides.items():
            if value is not None:
                environ[by_name[name].env] = str(value)
        return cls(**{s.name: s.read(environ) for s in SETTINGS})

    @property
    def metadata_url(self) -> str:
        """The database URL actually used: the configured one, or SQLite in the TRE home."""
        # The path quoted: "?" or "#" in a folder's name would end it in a URL.
        return self.database_url or f"sqlite:///{quote(str(self.home / 'db' / 'tre.db'))}"

    @property
    def keycloak_base_url(self) -> str:
        return self.keycloak_url or f"http://127.0.0.1:{self.keycloak_port}"

    @property
    def keycloak_issuer(self) -> str:
        return f"{self.keycloak_base_url}/realms/{self.keycloak_realm}"


# Every field of Settings is declared once in SETTINGS, and nothing else is.
assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in SETTINGS]
