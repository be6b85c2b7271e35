"""Workspaces: JupyterHub behind Keycloak, one named server per project.

The hub's configuration (``infra/jupyterhub/jupyterhub_config.py``) is :func:`configure`:
login through Keycloak (client ``tre-hub``, authorization code with PKCE), named servers only,
each named after a project. :func:`refusal` decides, from the metadata database (the source
of truth, whatever Keycloak's groups say), whether a user may start a workspace: only a member
of a provisioned project may start that project's, and nobody starts a default server.

The hub runs as the unprivileged ``tre`` account. A workspace runs under an OS account of its
own for that researcher in that project (:func:`tre.privileged.workspace_account`), whose only
supplementary group is the project's (the group that reads its extracts), in a sandbox, from a
virtualenv every account can read (``TRE_WORKSPACE_ENV``, built by ``make setup`` from
Debian's Python): the privileged helper creates the account and starts the server for the
hub (:mod:`tre.hub.spawner`).

When a project leaves the provisioned state (suspended, expired, closed), its running
workspaces are stopped and removed (:func:`stop_workspaces`, a project access hook), through
the hub's API with the TRE's own service token.

Nothing is downloaded from a workspace: its Jupyter server answers ``/files/`` with 403 and
has no export handlers, and JupyterLab's download commands are disabled
(``infra/jupyterhub/workspace``, installed into the environment by ``make setup``).

Inside a workspace, :mod:`tre.workspace` calls the TRE's API as the researcher: the hub keeps
their Keycloak tokens (encrypted auth state, refreshed before they expire) and the workspace's
own hub token may read them, so no secret is stored in the workspace. New workspaces get a
copy of the notebook templates (``notebooks_templates/``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from tre.config import Settings
from tre.db import Database
from tre.exceptions import ConfigError, ServiceUnavailable
from tre.home import Home
from tre.privileged import workspace_account
from tre.projects.lifecycle import State
from tre.services import HomeServer, free_port

HERE = Path(__file__).parent
CONFIG = HERE.parents[1] / "infra" / "jupyterhub" / "jupyterhub_config.py"
GATEWAY_CONFIG = CONFIG.with_name("dask_gateway_config.py")
GATEWAY = "dask-gateway"
HUB_TEMPLATES = HERE.parents[1] / "infra" / "jupyterhub" / "templates"
START_TIMEOUT_S = 90
SERVICE = "tre"
__all__ = ["HubServer", "configure", "refusal", "stop_workspaces", "sweep", "workspace_account"]
PAGE = 200
#: The hub checks the researcher's Keycloak tokens (and groups) at most this often, and renews
#: the access token when it has less than FRESH_S left: a workspace always gets one valid for a
#: minute.
AUTH_REFRESH_S = 60
FRESH_S = 120
#: What a workspace's own hub token may do: report activity, be used by its server's OAuth,
#: and read its researcher's tokens (to call the TRE's API as them).
SERVER_TOKEN_SCOPES = ["access:servers!server", "users:activity!user", "admin:auth_state!user"]


def refusal(db: Database, username: str, server_name: str) -> str | None:
    """Why ``username`` may not start the workspace ``server_name``, or None if they may."""
    from tre import projects

    everyone = projects.listing(db)
    mine = [p for p in everyone if username in p.members() and p.status is State.PROVISIONED]
    choices = ", ".join(p.id for p in mine) or "none yet: apply for a project in the portal"
    if not server_name:
        return (
            "Every workspace belongs to a project: start the workspace of one of your active "
            f"projects ({choices})."
        )
    project = next((p for p in everyone if p.id == server_name), None)
    if project is None or username not in project.members():
        return (
            f"You are not a member of a project {server_name!r}. Your active projects: {choices}."
        )
    if project.status is not State.PROVISIONED:
        return (
            f"Project {server_name} is {project.state}: its workspace cannot be started. "
            "Ask a TRE administrator."
        )
    return None


def api_token(home: Home) -> str:
    """The TRE's token for the hub's API (the hub service ``tre``), derived from the master key
    so that the hub and the TRE's commands agree on it with nothing more to store."""
    from tre import keys

    return keys.purpose_key(home.keys, "hub api token").hex()


def stop_workspaces(settings: Settings, project) -> list[str]:
    """Stop and remove the workspaces of ``project`` once it is no longer provisioned; return
    the users whose workspace was stopped. Nothing to do when the hub is not running (it
    refuses to start them again whatever happens)."""
    if project.status is State.PROVISIONED or not HubServer.from_settings(settings).answers():
        return []
    try:
        api_token(Home(settings.home))
    except (ConfigError, PermissionError):
        # Provisioning's account (closure) does not hold the services' key: the helper has
        # already killed the workspaces' processes, and the hub's sweeper removes them.
        return []
    try:
        return [user for user, _ in _stop_where(settings, lambda user, name: name == project.id)]
    except httpx.HTTPError as e:
        raise ServiceUnavailable(
            f"Project {project.id} is {project.state}, but the hub did not stop its workspaces "
            f"({e}). Stop them from the hub's admin page, or run the command again."
        ) from None


def sweep(settings: Settings, refused: set[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """What the hub's sweeper does every ``TRE_HUB_SWEEP_SECONDS``: expire the projects past
    their end date (the access hooks then stop their workspaces), and stop any running
    workspace the hub would not start now (its project is not provisioned, or its researcher
    is no longer a member), whatever was missed while the hub was down; remove the records of
    stopped servers it would not start, once they have been there a whole sweep (``refused``:
    those seen at the last sweep, updated). Returns the (user, project) workspaces stopped."""
    from tre import projects

    db = Database.of_settings(settings)
    try:
        projects.expire_due(db)
        allowed = {
            (member, p.id)
            for p in projects.listing(db)
            if p.status is State.PROVISIONED
            for member in p.members()
        }
    finally:
        db.dispose()
    return _stop_where(settings, lambda user, name: (user, name) not in allowed, refused)


def _stop_where(
    settings: Settings, unwanted, stopped_before: set[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """Stop and remove every workspace (user, server name) that ``unwanted`` picks; return
    those that were running. Stopped ones are removed too: the hub keeps a record of every
    named server asked for, even one it refused to start. With ``stopped_before`` (the
    stopped ones picked last time, updated in place), a stopped one goes only when it was
    already there last time: the hub records a server as soon as it is asked for, before it
    refuses it, and a record removed in between turns the refusal into an error."""
    api = f"{settings.hub_url}/hub/api"
    headers = {"Authorization": f"token {api_token(Home(settings.home))}"}
    with httpx.Client(headers=headers, timeout=60) as client:
        servers, offset = [], 0
        while True:
            page = client.get(
                f"{api}/users",
                params={"include_stopped_servers": "1", "offset": offset, "limit": PAGE},
            )
            page.raise_for_status()
            users = page.json()
            servers += [
                (u["name"], name, not server.get("stopped", False))
                for u in users
                for name, server in (u.get("servers") or {}).items()
                # The default server cannot be removed (and never starts); one being started
                # or stopped is the hub's to finish (a refused start ends stopped).
                if name and not server.get("pending")
            ]
            if len(users) < PAGE:
                break
            offset += PAGE
        # Listed first, removed after: the pages stay as they were listed.
        picked = [(user, name, running) for user, name, running in servers if unwanted(user, name)]
        removed = picked
        if stopped_before is not None:
            stopped = {(user, name) for user, name, running in picked if not running}
            removed = [p for p in picked if p[2] or p[:2] in stopped_before]
            stopped_before.clear()
            stopped_before.update(stopped - {p[:2] for p in removed})
        for user, name, _ in removed:
            client.request(
                "DELETE",
                f"{api}/users/{quote(user, safe='')}/servers/{quote(name, safe='')}",
                json={"remove": True},
            ).raise_for_status()
    return [(user, name) for user, name, running in removed if running]


def proxy_command(settings: Settings) -> str:
    """configurable-http-proxy, as ``infra/setup.sh`` installs it (or from the PATH)."""
    local = settings.cache_dir / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
    found = str(local) if local.is_file() else shutil.which("configurable-http-proxy")
    if found is None:
        raise ServiceUnavailable(
            "configurable-http-proxy is not installed: run `make setup` (it installs it with "
            "npm into the TRE cache)."
        )
    return found


def configure(c, settings: Settings) -> None:
    """Set the JupyterHub configuration ``c`` for the TRE of ``settings``."""
    from tornado import web

    from tre import keys
    from tre.identity.server import client_secret

    state = settings.home / "hub"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    issuer = settings.keycloak_issuer
    hub = urlsplit(settings.hub_url)

    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = hub.port or 8081
    c.JupyterHub.hub_ip = "127.0.0.1"
    # The hub's own API and the proxy's API: internal, on ports free when the hub starts.
    c.JupyterHub.hub_port = free_port()
    c.ConfigurableHTTPProxy.command = [proxy_command(settings)]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{free_port()}"
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub-app.pid")
    c.JupyterHub.default_url = "/hub/home"

    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = "tre-hub"
    c.GenericOAuthenticator.client_secret = client_secret(settings, "hub")
    c.GenericOAuthenticator.oauth_callback_url = f"{settings.hub_url}/hub/oauth_callback"
    c.GenericOAuthenticator.authorize_url = f"{issuer}/protocol/openid-connect/auth"
    c.GenericOAuthenticator.token_url = f"{issuer}/protocol/openid-connect/token"
    c.GenericOAuthenticator.userdata_url = f"{issuer}/protocol/openid-connect/userinfo"
    c.GenericOAuthenticator.logout_redirect_url = f"{issuer}/protocol/openid-connect/logout"
    c.GenericOAuthenticator.scope = ["openid", "profile"]
    c.GenericOAuthenticator.username_claim = "preferred_username"
    c.GenericOAuthenticator.enable_pkce = True
    # Anyone of the realm may log in; what they may start is decided per project below.
    c.GenericOAuthenticator.allow_all = True
    # The researcher's tokens, kept encrypted by the hub, so that their workspace calls the TRE's
    # API as them (tre.workspace) with nothing stored in it.
    c.GenericOAuthenticator.enable_auth_state = True
    c.CryptKeeper.keys = [keys.purpose_key(Home(settings.home).keys, "hub auth state")]
    c.GenericOAuthenticator.auth_refresh_age = AUTH_REFRESH_S
    c.GenericOAuthenticator.refresh_user_hook = fresh_tokens
    # Keycloak's groups (project-<id>, custodian-<id>) mirrored as the hub's, read again before
    # each start. They are shown, not trusted: who may start what is decided by refusal() below.
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
    c.GenericOAuthenticator.refresh_pre_spawn = True

    # The TRE's own access to the hub's API: stopping a project's workspaces.
    # It is also the hub's sweeper (tre.hub.sweeper), a service the hub runs and restarts.
    tre_environment = {
        **{k: v for k, v in os.environ.items() if k.startswith("TRE_")},
        "TRE_HOME": str(settings.home),
    }
    # Dask's multi-tenant engine (tre.hub.gateway), on a port of its own, free at start.
    gateway_port = free_port()
    c.JupyterHub.services = [
        {
            "name": SERVICE,
            "api_token": api_token(Home(settings.home)),
            "command": [sys.executable, "-m", "tre.hub.sweeper"],
            "environment": tre_environment,
        },
        {
            "name": GATEWAY,
            "command": [
                str(Path(sys.executable).with_name("dask-gateway-server")),
                "-f",
                str(GATEWAY_CONFIG),
            ],
            "environment": {
                **tre_environment,
                "TRE_DASK_GATEWAY_PORT": str(gateway_port),
                "TRE_DASK_GATEWAY_TLS_PORT": str(free_port()),
            },
        },
    ]
    c.JupyterHub.load_roles = [
        {
            "name": "tre-lifecycle",
            "description": "Stop the workspaces of a project that is no longer provisioned.",
            "scopes": ["list:users", "read:users:name", "read:servers", "delete:servers"],
            "services": [SERVICE],
        },
        {
            "name": "user",
            "description": "A researcher: their own servers, and their own tokens for the API.",
            "scopes": ["self", "admin:auth_state!user"],
        },
    ]
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES

    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0
    env = Path(settings.workspace_env)
    needed = (
        "bin/jupyterhub-singleuser",
        "etc/jupyter/jupyter_server_config.py",
        "etc/tre-user-config/migrated",
    )
    if not all((env / part).is_file() for part in needed):
        raise ServiceUnavailable(
            f"The workspace environment {env} is missing or incomplete: run `make setup` as "
            "root (it builds it from Debian's Python), or set TRE_WORKSPACE_ENV."
        )
    stale = stale_client(env)
    if stale:
        raise ServiceUnavailable(
            f"The workspace environment {env} holds another version of tre.workspace than this "
            f"checkout ({', '.join(stale)}): run `make setup` as root to install it there."
        )
    closed = [str(p) for p in (settings.home, *settings.home.parents) if not p.stat().st_mode & 1]
    if closed:
        raise ConfigError(
            f"Workspace accounts cannot pass through {', '.join(closed)} to their project's "
            "folder: give those folders the execute bit for others (chmod o+x), or put the "
            "TRE home elsewhere."
        )
    c.JupyterHub.spawner_class = "tre.hub.spawner.WorkspaceSpawner"
    c.WorkspaceSpawner.tre_home = str(settings.home)
    c.WorkspaceSpawner.portal_url = settings.portal_url
    c.WorkspaceSpawner.gateway_url = f"http://127.0.0.1:{gateway_port}"
    # The helper runs the workspace environment's jupyterhub-singleuser, whatever cmd says.
    c.Spawner.cmd = [str(env / "bin" / "jupyterhub-singleuser")]
    c.Spawner.env_keep = ["LANG", "LC_ALL"]  # nothing of the hub's own environment
    c.Spawner.disable_user_config = True  # no configuration from the researcher's folder
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = START_TIMEOUT_S

    db = Database.of_settings(settings)

    def check(spawner) -> None:
        reason = refusal(db, spawner.user.name, spawner.name)
        if reason is not None:
            refused = web.HTTPError(403, reason)
            # What the hub's pages show (else "Failed to start your server on the last attempt").
            refused.jupyterhub_message = reason
            raise refused

    c.Spawner.pre_spawn_hook = check

    def workspaces(user) -> list[dict]:
        """The home page's rows: the user's projects, which can be started, which run."""
        if user is None:
            return []
        from tre import projects

        running = {name for name, spawner in user.spawners.items() if name and spawner.active}
        return [
            {
                "id": p.id,
                "title": p.title,
                "state": p.state,
                "startable": p.status is State.PROVISIONED,
                "running": p.id in running,
            }
            for p in projects.listing(db)
            if user.name in p.members()
        ]

    c.JupyterHub.template_paths = [str(HUB_TEMPLATES)]
    # The hub computes template variables for every page it renders: the rows are read only by
    # the home page, when it calls tre_projects().
    c.JupyterHub.template_vars = {
        "tre_projects": lambda user: lambda: workspaces(user),
        "tre_portal_url": settings.portal_url,
    }


def stale_client(env: Path) -> list[str]:
    """The files of the workspace client (``tre.workspace``, the exceptions it raises and the
    SQL sandbox it opens) that the workspace environment ``env`` does not hold as this checkout
    has them."""
    tre = HERE.parent
    installed = next(env.glob("lib/python3*/site-packages/tre"), env / "missing")
    names = [f"workspace/{f.name}" for f in sorted((tre / "workspace").glob("*.py"))]
    return [
        name
        for name in [*names, "exceptions.py", "sql.py"]
        if not (installed / name).is_file()
        or (installed / name).read_bytes() != (tre / name).read_bytes()
    ]


async def fresh_tokens(authenticator, user, auth_state):
    """The hub's refresh of a researcher's tokens (``refresh_user_hook``). While the access
    token has more than :data:`FRESH_S` seconds left, the stock refresh (None): Keycloak's
    userinfo read again with it, which also refreshes the user's groups. Else a new token from
    Keycloak with the refresh token (False, "log in again", when Keycloak refuses it): the stock
    refresh renews only an access token that has already expired."""
    if not auth_state:
        return None
    if _seconds_left(auth_state.get("access_token", "")) > FRESH_S:
        return None
    refresh = auth_state.get("refresh_token")
    if not refresh:
        return None
    try:
        token_info = await authenticator.get_token_info(
            None, authenticator.build_refresh_token_request_params(refresh)
        )
    except Exception as e:  # any refusal from Keycloak means a new login
        authenticator.log.info("Renewing the tokens of %s failed (%s): new login", user.name, e)
        return False
    token_info.setdefault("refresh_token", refresh)
    return await authenticator._token_to_auth_model(token_info)


def _seconds_left(token: str) -> float:
    """Seconds before a JWT's ``exp`` (read, not verified: the hub got it from Keycloak)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - time.time()
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


class HubServer(HomeServer):
    """JupyterHub (with its proxy) as ``tre hub up`` runs it, state and log in ``<home>/hub``."""

    name = "Hub"
    port_variable = "TRE_HUB_URL"
    markers = (b"jupyterhub",)
    start_timeout = START_TIMEOUT_S
    folder = "hub"
    url_setting = "hub_url"
    default_port = 8081

    def command(self) -> list[str]:
        hub = Path(sys.executable).with_name("jupyterhub")
        return [str(hub), "-f", str(CONFIG)]

    def prepare(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/hub/api/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
