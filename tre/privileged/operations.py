"""What the privileged helper does for the TRE's unprivileged services: a small fixed set.

Each operation checks its arguments (project ids, usernames, relative paths: by grammar), works
from the TRE home it was given at start (never a path from the request), touches folders by
file descriptor (:mod:`tre.privileged.folders`), and runs anything a researcher influences as
an account that holds only that researcher's or that project's rights:

==========================  ===================  =================================================
operation                   who may ask          what it does
==========================  ===================  =================================================
``prepare_project``         provisioning         the project's group and worker account; its
                                                 folder in that group; ``work/`` owned by root
``grant_extracts``          provisioning         new extracts (files of the provisioning account
                                                 only) readable by the project's group
``run_output_job``          services             the output engine as the project's account,
                                                 within time and memory limits
``prepare_workspace``       services             a researcher's account and 0700 folder, the
                                                 templates copied as that account
``start_workspace``         services             the same, then the server started in its
                                                 sandbox, in the researcher's network enclave
                                                 (:mod:`tre.privileged.enclaves`)
``workspace_running``       services             whether that server still runs
``stop_workspace``          services             every process of that account killed
``revoke_access``           services, provis.    accounts no longer allowed: processes killed,
                                                 project group taken away
``remove_project``          provisioning         at closure: processes, working folders,
                                                 accounts and group removed
``administer_project``      services             provisioning or closure asked in the portal,
                                                 run as the provisioning account
``read_workspace_files``    services             files of a researcher's folder, read as their
                                                 account, no symlink followed
``start_dask``              services             a Dask scheduler or worker of the hub's
                                                 gateway, as the workspace account, in its
                                                 sandbox and enclave, ports chosen here
``dask_running``            services             whether that process still runs
``stop_dask``               services             that process's sandbox killed whole
==========================  ===================  =================================================
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import os
import re
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tre.exceptions import (
    ConfigError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from tre.privileged import accounts, enclaves, folders
from tre.privileged.processes import Limits, call_as, sandboxed

SERVICES, PROVISIONING = "services", "provisioning"
#: The most a workspace file read for the airlock may hold.
MAX_FILE_BYTES = 50 << 20
#: Environment variables a workspace server may be given by the hub (besides those the helper
#: sets itself).
WORKSPACE_ENVIRONMENT = re.compile(
    r"(JUPYTERHUB_[A-Z_]+|JPY_[A-Z_]+|TRE_PORTAL_URL|TRE_DASK_GATEWAY_URL|LANG|LC_ALL)"
)
#: The workspace servers' "user" configuration folder: empty, in their environment (made by
#: ``make setup``, with the marker that tells Jupyter there is nothing to migrate into it).
USER_CONFIG = "etc/tre-user-config"
#: Dask's configuration folder for the gateway's schedulers and workers (empty, in their
#: environment: made by ``make setup``).
DASK_CONFIG = "etc/tre-dask"
#: A dask-gateway cluster's or worker's name (a UUID's hex digits).
DASK_NAME = re.compile(r"[0-9a-f]{32}")
EXTRACTS_TMP = re.compile(r"\.extracts-\d{1,10}")
#: How much less an output worker gets of the processors than the portal and the hub.
OUTPUT_NICE = 10
#: The most processes and threads a project's output workers may have at once.
OUTPUT_PROCESSES = 256
#: The most outputs of one project computed at once; more are refused until one ends (one
#: researcher cannot take every worker of the TRE).
OUTPUT_JOBS_PER_PROJECT = 2


@dataclasses.dataclass(frozen=True)
class Operation:
    function: Callable[..., Any]
    callers: frozenset[str]


OPERATIONS: dict[str, Operation] = {}


def operation(*callers: str):
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        OPERATIONS[function.__name__] = Operation(function, frozenset(callers))
        return function

    return register


@dataclasses.dataclass(frozen=True)
class Context:
    """What an operation works with: the TRE home and the workspaces' environment, both from
    the helper's own settings."""

    home: Path
    workspace_env: Path = Path("/opt/tre/workspace-env")
    templates: Path | None = None
    enclave_network: str = enclaves.DEFAULT_NETWORK
    #: What a workspace's Jupyter server hands to the browser at most: a file, one output.
    file_max_bytes: int = 2 << 20
    notebook_output_bytes: int = 64 << 10

    @property
    def projects(self) -> Path:
        return self.home / "projects"


def _as_root() -> bool:
    return accounts.running_as_root()


#: Where the helper's per-project locks are (root's alone).
PROJECT_LOCKS = Path("/run/tre/projects")


@contextlib.contextmanager
def _project_locked(project: str) -> Iterator[None]:
    """One change of a project's members' processes at a time, across the helper's children
    (each request is handled in a child of its own): a Dask start against a revocation."""
    if not _as_root():  # no workspace accounts: nothing to race
        yield
        return
    PROJECT_LOCKS.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(PROJECT_LOCKS / f"{accounts.check_project_id(project)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _provisioning_uid() -> int:
    return accounts.uid(accounts.PROVISION) if _as_root() else os.geteuid()


# -- projects --------------------------------------------------------------------------------


@operation(PROVISIONING)
def prepare_project(ctx: Context, project: str) -> int:
    """The project's group and worker account; ``projects/<id>`` (made by provisioning) in
    that group, 0750; ``work/`` in it owned by root, 0750: members list it, none can rename or
    remove another's folder. Returns the group's id."""
    accounts.check_project_id(project)
    if not _as_root():
        return os.getegid()
    gid = accounts.ensure_project(project).gid
    provisioning = _provisioning_uid()
    with folders.opened(ctx.projects) as projects, folders.walk(projects, [project]) as base:
        # Made by provisioning (or by root itself, provisioning in the same process).
        if folders.owner_of(base) not in (provisioning, 0):
            raise PermissionDenied(f"The folder of project {project} is not provisioning's own.")
        os.fchown(base, provisioning, gid)
        os.fchmod(base, 0o750)
        os.close(folders.subfolder(base, "work", uid=0, gid=gid, mode=0o750))
    return gid


@operation(PROVISIONING)
def grant_extracts(ctx: Context, project: str, folder: str) -> int:
    """Every file and folder of ``projects/<id>/<folder>`` (new extracts, all owned by the
    provisioning account) read-only for the owner and the project's group. Returns how many."""
    accounts.check_project_id(project)
    if not EXTRACTS_TMP.fullmatch(folder):
        raise InvalidInput(f"{folder[:40]!r} is not a folder of extracts being provisioned.")
    gid = accounts.gid(accounts.project_group(project)) if _as_root() else -1
    owner = _provisioning_uid()
    count = 0
    with (
        folders.opened(ctx.projects) as projects,
        folders.walk(projects, [project, folder]) as root,
    ):
        for fd, info in folders.tree(root):
            if info.st_uid not in (owner, 0):
                raise PermissionDenied("The extracts hold a file provisioning did not write.")
            if stat.S_ISREG(info.st_mode) and info.st_nlink != 1:
                raise PermissionDenied("The extracts hold a file linked from elsewhere.")
            os.fchown(fd, owner if _as_root() else -1, gid)
            os.fchmod(fd, 0o550 if stat.S_ISDIR(info.st_mode) else 0o440)
            count += 1
    return count


@operation(PROVISIONING)
def remove_project(ctx: Context, project: str) -> dict[str, int]:
    """At closure: every process of the project's accounts killed, its working folders
    deleted, its network enclave, accounts and group removed."""
    accounts.check_project_id(project)
    names = [*accounts.project_members(project), accounts.project_group(project)]
    killed = sum(_kill_account(name) for name in names)
    removed = 0
    with (
        contextlib.suppress(FileNotFoundError),  # nothing left, or no working folder
        folders.opened(ctx.projects) as projects,
        folders.walk(projects, [project]) as base,
    ):
        os.stat("work", dir_fd=base, follow_symlinks=False)  # FileNotFoundError: none
        # find and rm walk without recursion (a folder thousands deep stops neither), never
        # follow a link, stay on this file system, and run from the project's folder opened
        # as above, never through a path someone could change.
        removed = len(_in_folder(base, ["find", "work", "-xdev", "-type", "f", "-printf", "."]))
        _in_folder(base, ["rm", "-rf", "--one-file-system", "--", "work"])
    if _as_root():
        enclaves.remove(ctx.home, project)  # its processes, the last users of it, are gone
        for name in names:
            accounts.remove(name)
    return {"processes": killed, "files": removed, "accounts": len(names)}


def _in_folder(folder: int, command: list[str]) -> bytes:
    """``command`` run (as this process's account) in the open folder ``folder``; its output."""
    done = subprocess.run(
        command,
        preexec_fn=lambda: os.fchdir(folder),
        pass_fds=(folder,),
        capture_output=True,
        env=_base_environment(),
        check=False,
    )
    if done.returncode != 0:
        raise ServiceUnavailable(
            f"`{command[0]}` failed in the project's folder ({done.stderr.decode()[:200]})."
        )
    return done.stdout


#: Settings a service may pass to provisioning: the TRE's own, never the home (the helper's).
PASSED_SETTINGS = re.compile(r"TRE_[A-Z_]{1,60}")
PROVISIONING_LIMITS = Limits(cpu_seconds=4 * 3600, memory_bytes=64 << 30, wall_seconds=8 * 3600)


def _administer(payload: dict[str, Any]) -> Any:
    """As the provisioning account: provision or close, as the person the portal
    authenticated."""
    from tre import projects
    from tre.config import Settings
    from tre.db import Database
    from tre.home import Home
    from tre.people import Person
    from tre.projects import extracts

    settings = Settings.from_environ(os.environ)
    projects.install_access_hooks(lambda: settings)
    person = Person(
        payload["person"]["username"],
        frozenset(payload["person"]["roles"]),
        frozenset(payload["person"]["groups"]),
        payload["person"]["name"],
    )
    db = Database.of_settings(settings)
    try:
        home = Home(settings.home)
        if payload["action"] == "provision":
            _, changed = extracts.provision(home, db, payload["project"], person)
            return {"changed": changed}
        return extracts.close(home, db, payload["project"], person, payload["reason"])
    finally:
        db.dispose()


@operation(SERVICES)
def administer_project(
    ctx: Context,
    action: str,
    project: str,
    person: Mapping[str, Any],
    reason: str,
    settings: Mapping[str, str],
) -> Any:
    """Provision or close ``project`` as the provisioning account (only it reads the master
    key), for the portal, as the ``person`` it authenticated (whose permission provisioning
    checks)."""
    accounts.check_project_id(project)
    if action not in ("provision", "close"):
        raise InvalidInput(f"{str(action)[:20]!r} is not done by provisioning.")
    try:
        who = {
            "username": accounts.check_username(person["username"]),
            "roles": [str(r) for r in person["roles"]],
            "groups": [str(g) for g in person["groups"]],
            "name": str(person.get("name", "")),
        }
    except (KeyError, TypeError):
        raise InvalidInput("Say who asks: username, roles and groups.") from None
    environment = {
        k: v
        for k, v in settings.items()
        if PASSED_SETTINGS.fullmatch(k) and isinstance(v, str) and "\0" not in v
    }
    environment.update(_base_environment(), TRE_HOME=str(ctx.home), HOME="/nonexistent")
    account = accounts.Account.named(accounts.PROVISION) if _as_root() else None
    payload = {"action": action, "project": project, "person": who, "reason": str(reason)}
    return call_as(account, PROVISIONING_LIMITS, _administer, payload, environment=environment)


# -- output jobs -----------------------------------------------------------------------------


def _engine_job(job: dict[str, Any]) -> Any:
    from tre.outputs import engine

    return engine.run(engine.Job.from_dict(job))


@operation(SERVICES)
def run_output_job(
    ctx: Context, project: str, job: Mapping[str, Any], limits: Mapping[str, float]
) -> Any:
    """The output engine over the project's extracts, as the project's account."""
    accounts.check_project_id(project)
    expected = str(ctx.projects / project / "extracts")
    if not isinstance(job, Mapping) or job.get("extracts") != expected:
        raise InvalidInput("An output job reads its own project's extracts only.")
    bounds = _limits(limits)
    account = accounts.ensure_project(project) if _as_root() else None
    environment = {**_base_environment(), "HOME": "/nonexistent"}
    with _job_slot(ctx, project):
        try:
            return call_as(account, bounds, _engine_job, dict(job), environment=environment)
        except LimitExceeded as e:
            raise InvalidInput(_limit_message(e.limit, bounds)) from None


@contextlib.contextmanager
def _job_slot(ctx: Context, project: str):
    """One of the project's :data:`OUTPUT_JOBS_PER_PROJECT` slots (a lock held while the job
    runs, released when its process ends, whatever happens); refused when all are taken. The
    locks are in ``run/jobs``, reached one name at a time without following a link."""
    import fcntl

    with folders.opened(ctx.home) as home:
        with contextlib.suppress(FileExistsError):
            os.mkdir("run", 0o750, dir_fd=home)
        with folders.walk(home, ["run"]) as run:
            with contextlib.suppress(FileExistsError):
                os.mkdir("jobs", 0o700, dir_fd=run)
            with folders.walk(run, ["jobs"]) as jobs:
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                held = None
                for slot in range(OUTPUT_JOBS_PER_PROJECT):
                    fd = os.open(f"{project}.{slot}", flags, 0o600, dir_fd=jobs)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)
                        continue
                    held = fd
                    break
    if held is None:
        raise ServiceUnavailable(
            f"Project {project} already has {OUTPUT_JOBS_PER_PROJECT} outputs being checked: "
            "try again when one of them has finished."
        )
    try:
        yield
    finally:
        os.close(held)  # the lock goes with it


def _limits(raw: Mapping[str, float]) -> Limits:
    try:
        cpu = int(raw["cpu_seconds"])
        memory = int(raw["memory_bytes"])
        wall = float(raw["wall_seconds"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("An output job states its limits.") from None
    if not (1 <= cpu <= 86_400 and 64 << 20 <= memory <= 1 << 40 and 1 <= wall <= 86_400):
        raise InvalidInput("An output job's limits are out of range.")
    return Limits(cpu, memory, wall, processes=OUTPUT_PROCESSES, nice=OUTPUT_NICE)


def _limit_message(limit: str, limits: Limits) -> str:
    what = {
        "cpu": f"more than {limits.cpu_seconds} s of computing (TRE_OUTPUT_CPU_SECONDS)",
        "time": f"longer than {limits.wall_seconds:.0f} s (TRE_OUTPUT_CPU_SECONDS)",
        "memory": f"more than {limits.memory_bytes >> 20} MB of memory (TRE_OUTPUT_MEMORY_MB)",
    }.get(limit, f"past its {limit} limit")
    return (
        f"The output needed {what}, the most the TRE gives one output, and was stopped. Ask "
        "for fewer cells (fewer row or column variables, or variables with fewer levels), "
        "filter the records first, or ask a TRE administrator for a larger limit."
    )


def _base_environment() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


# -- workspaces ------------------------------------------------------------------------------


def _member_folder(ctx: Context, username: str, project: str, account: accounts.Account) -> Path:
    """``projects/<id>/work/<username>``: owned by ``account``, 0700, made if missing. A
    symlink or a file in its place, or a folder of another account, is refused."""
    with (
        folders.opened(ctx.projects) as projects,
        folders.walk(projects, [project, "work"]) as work,
    ):
        if folders.owner_of(work) != 0 and _as_root():
            raise PermissionDenied(f"The working folder of project {project} is not the TRE's.")
        with contextlib.suppress(FileExistsError):
            os.mkdir(username, mode=0o700, dir_fd=work)
        fd = os.open(username, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=work)
        try:
            info = os.fstat(fd)
            if info.st_uid not in (0, account.uid):
                raise PermissionDenied(
                    f"The folder of {username} in project {project} belongs to another account."
                )
            if _as_root():
                os.fchown(fd, account.uid, account.gid)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    return ctx.projects / project / "work" / username


def _copy_templates(folder: str, templates: list[list[str]]) -> list[str]:
    """In the workspace account's own process: each template not already there, created new
    (``O_EXCL``, ``O_NOFOLLOW``: never through a symlink), 0600. Returns those copied."""
    copied = []
    base = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name, text in templates:
            try:
                fd = os.open(
                    folders.check_name(name),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o600,
                    dir_fd=base,
                )
            except FileExistsError:
                continue  # an edited copy is never overwritten (nor a symlink followed)
            with os.fdopen(fd, "wb") as out:
                out.write(base64.b64decode(text))
            copied.append(name)
    finally:
        os.close(base)
    return copied


def _workspace(ctx: Context, username: str, project: str) -> tuple[accounts.Account, Path]:
    accounts.check_username(username)
    accounts.check_project_id(project)
    if not _as_root():
        raise ServiceUnavailable("Workspaces run under accounts of their own: the TRE needs root.")
    account = accounts.ensure_workspace_account(username, project)
    folder = _member_folder(ctx, username, project, account)
    templates = [
        [t.name, base64.b64encode(t.read_bytes()).decode()]
        for t in sorted(ctx.templates.glob("*.ipynb") if ctx.templates else [])
    ]
    call_as(account, Limits(30, 1 << 30, 60), _copy_templates, str(folder), templates)
    return account, folder


@operation(SERVICES)
def prepare_workspace(ctx: Context, username: str, project: str) -> dict[str, str]:
    """``username``'s account in ``project`` (the project's group its only other group), their
    0700 folder, the notebook templates copied as them. Returns the account and folder."""
    account, folder = _workspace(ctx, username, project)
    return {"account": account.name, "folder": str(folder)}


@operation(SERVICES)
def start_workspace(
    ctx: Context, username: str, project: str, environment: Mapping[str, str]
) -> dict[str, Any]:
    """:func:`prepare_workspace`, then the server in its sandbox
    (:func:`~tre.privileged.processes.sandboxed_command`). Returns its pid and account."""
    env = {k: str(v) for k, v in environment.items() if WORKSPACE_ENVIRONMENT.fullmatch(k)}
    if any("\0" in v for v in env.values()):
        raise InvalidInput("An environment value holds a NUL byte.")
    ports = [_loopback(env, name) for name in ("JUPYTERHUB_API_URL", "TRE_PORTAL_URL")]
    gateway = _loopback(env, "TRE_DASK_GATEWAY_URL") if "TRE_DASK_GATEWAY_URL" in env else None
    account, folder = _workspace(ctx, username, project)
    enclave = enclaves.ensure(
        ctx.home, project, username, [*ports, *([gateway] if gateway else [])], ctx.enclave_network
    )
    # Seen from the enclave, the hub and the portal are at its gateway; the server listens on
    # the enclave's own address, where the hub's proxy reaches it.
    for name in (
        "JUPYTERHUB_API_URL",
        "JUPYTERHUB_ACTIVITY_URL",
        "TRE_PORTAL_URL",
        "TRE_DASK_GATEWAY_URL",
    ):
        if name in env:
            env[name] = _moved(env[name], enclave.gateway)
    if "JUPYTERHUB_SERVICE_URL" in env:
        env["JUPYTERHUB_SERVICE_URL"] = _moved(env["JUPYTERHUB_SERVICE_URL"], enclave.address)
    extracts = ctx.projects / project / "extracts"
    env.update(
        USER=account.name,
        LOGNAME=account.name,
        HOME=str(folder),
        SHELL="/bin/sh",
        PATH=f"{ctx.workspace_env}/bin:/usr/bin:/bin",
        TRE_PROJECT=project,
        TRE_EXTRACTS=str(extracts),
        # The server's configuration is the TRE's alone (its environment's etc/jupyter): none
        # is read from the researcher's folder (~/.jupyter, ~/.local), where they could undo it
        # (its "user" configuration folder is an empty one of the environment's); JupyterLab
        # keeps the researcher's settings and layouts in their folder still.
        JUPYTERHUB_DISABLE_USER_CONFIG="1",
        JUPYTER_CONFIG_DIR=str(ctx.workspace_env / USER_CONFIG),
        JUPYTERLAB_SETTINGS_DIR=str(folder / ".jupyter" / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(folder / ".jupyter" / "lab" / "workspaces"),
        PYTHONNOUSERSITE="1",
    )
    if gateway:  # dask_gateway's client reads these (with the kernel's hub token)
        env.update(
            DASK_GATEWAY__ADDRESS=f"http://{enclave.gateway}:{gateway}",
            DASK_GATEWAY__AUTH__TYPE="jupyterhub",
        )
    command = [
        str(ctx.workspace_env / "bin" / "jupyterhub-singleuser"),
        f"--WorkspaceContents.max_file_bytes={ctx.file_max_bytes}",
        f"--WorkspaceContents.max_output_bytes={ctx.notebook_output_bytes}",
    ]
    process = sandboxed(
        account,
        command,
        writable=[folder],
        readable=[extracts] if extracts.is_dir() else [],
        environment=env,
        cwd=folder,
        network=enclave.inside,
        stdin=subprocess.DEVNULL,
    )
    _STARTED[process.pid] = process  # reaped when asked whether it runs (or by the helper)
    return {"pid": process.pid, "account": account.name, "address": enclave.address}


# -- Dask clusters (for the hub's dask-gateway) --------------------------------------------


@operation(SERVICES)
def start_dask(ctx: Context, username: str, project: str, process: Mapping[str, Any]) -> dict:
    """A Dask scheduler or worker of one of ``username``'s gateway clusters in ``project``: as
    their workspace account, in its sandbox and enclave (which their workspace made), with the
    cluster's TLS certificate and key written as that account into their folder. Every
    command and address is built here from the request's checked values. Returns its pid."""
    accounts.check_username(username)
    accounts.check_project_id(project)
    role, cluster = process.get("role"), str(process.get("cluster", ""))
    if role not in ("scheduler", "worker") or not DASK_NAME.fullmatch(cluster):
        raise InvalidInput("A Dask process is a scheduler or a worker of a named cluster.")
    numbers = {
        k: process.get(k) for k in ("gateway_port", "threads", "memory", "heartbeat", "idle")
    }
    if not all(isinstance(v, int | float) and v >= 0 for v in numbers.values()):
        raise InvalidInput("A Dask process's ports, threads, memory and periods are numbers.")
    if not 1024 <= int(numbers["gateway_port"]) < 65536:
        raise InvalidInput("The gateway listens on an unprivileged port.")
    # Under the project's lock, which a revocation holds while it takes members out: no Dask
    # process starts for a researcher being revoked, nor after (found by the review).
    with _project_locked(project):
        return _start_dask(ctx, username, project, process, role, cluster, numbers)


def _start_dask(
    ctx: Context,
    username: str,
    project: str,
    process: Mapping[str, Any],
    role: str,
    cluster: str,
    numbers: Mapping[str, Any],
) -> dict:
    enclave = enclaves.find(ctx.home, project, username, ctx.enclave_network)
    name = accounts.workspace_account(username, project)
    if enclave is None or not accounts.exists(name):
        raise ServiceUnavailable(
            f"{username} has no workspace of {project} yet: start it from the hub first."
        )
    if name not in accounts.project_members(project):
        raise PermissionDenied(f"{username} is no longer a member of {project}.")
    account = accounts.Account.named(name)
    folder = _member_folder(ctx, username, project, account)
    certs = f".dask-gateway-{cluster}"
    # The scheduler's ports are chosen here, and only these are believed of its heartbeats
    # (the scheduler is the researcher's process: it could report any).
    ports = secrets.SystemRandom().sample(range(20000, 60000), 2)
    files = [[f"{certs}/dask.crt", process["tls_cert"]], [f"{certs}/dask.pem", process["tls_key"]]]
    if role == "scheduler":  # where the kernel's client finds it, in the same enclave
        files.append([f"{certs}/scheduler", f"tls://{enclave.address}:{ports[0]}"])
    call_as(account, Limits(30, 1 << 30, 60), _write_secrets, str(folder), certs, files)
    cert, key = str(folder / certs / "dask.crt"), str(folder / certs / "dask.pem")
    dask = str(ctx.workspace_env / "bin" / "dask")
    side = "SCHEDULER" if role == "scheduler" else "WORKER"
    env = {
        **_base_environment(),
        # Not the researcher's folder: Dask reads ~/.config/dask whatever DASK_CONFIG says
        # (found by the review); the sandbox's /tmp is its own, empty at start.
        "HOME": "/tmp",  # noqa: S108 - the sandbox's own
        "USER": account.name,
        "PATH": f"{ctx.workspace_env}/bin:/usr/bin:/bin",
        "TRE_PROJECT": project,
        "TRE_EXTRACTS": str(ctx.projects / project / "extracts"),
        "PYTHONNOUSERSITE": "1",
        # Dask's configuration is the environment's (empty) folder's and these variables.
        "DASK_CONFIG": str(ctx.workspace_env / DASK_CONFIG),
        "DASK_GATEWAY_API_URL": f"http://{enclave.gateway}:{int(numbers['gateway_port'])}/api",
        "DASK_GATEWAY_API_TOKEN": str(process.get("token", "")),
        "DASK_GATEWAY_CLUSTER_NAME": cluster,
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": cert,
        f"DASK_DISTRIBUTED__COMM__TLS__{side}__CERT": cert,
        f"DASK_DISTRIBUTED__COMM__TLS__{side}__KEY": key,
        # No HTTP route: nothing of the cluster served without TLS.
        "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": "[]",
        "DASK_DISTRIBUTED__WORKER__HTTP__ROUTES": "[]",
    }
    if role == "scheduler":
        command = [dask, "scheduler", "--protocol", "tls", "--port", str(ports[0])]
        command += ["--host", enclave.address, "--no-dashboard"]
        command += ["--preload", "dask_gateway.scheduler_preload"]
        command += ["--dg-api-address", f"{enclave.address}:{ports[1]}"]
        command += ["--dg-heartbeat-period", str(float(numbers["heartbeat"]))]
        command += ["--dg-adaptive-period", "3.0", "--dg-idle-timeout", str(float(numbers["idle"]))]
    else:
        worker, scheduler = str(process.get("worker", "")), str(process.get("scheduler", ""))
        parts = urlsplit(scheduler)
        if (
            not DASK_NAME.fullmatch(worker)
            or parts.scheme != "tls"
            or parts.hostname != enclave.address
        ):
            raise InvalidInput("A worker joins its own cluster's scheduler, in its enclave.")
        command = [dask, "worker", f"tls://{enclave.address}:{parts.port}", "--no-dashboard"]
        command += ["--name", worker, "--nthreads", str(int(numbers["threads"]))]
        command += ["--memory-limit", str(int(numbers["memory"]))]
    if any("\0" in v for v in env.values()):
        raise InvalidInput("An environment value holds a NUL byte.")
    started = sandboxed(
        account,
        command,
        writable=[folder],
        readable=[ctx.projects / project / "extracts"],
        environment=env,
        cwd=folder,
        network=enclave.inside,
        stdin=subprocess.DEVNULL,
    )
    _STARTED[started.pid] = started
    found = {"pid": started.pid, "started": _start_time(started.pid)}
    if role == "scheduler":
        return {
            **found,
            "scheduler": f"tls://{enclave.address}:{ports[0]}",
            "api": f"http://{enclave.address}:{ports[1]}",
        }
    return found


def _write_secrets(folder: str, subfolder: str, files: list[list[str]]) -> None:
    """In the workspace account's own process: ``subfolder`` (0700) and its files (0600), new,
    never through a link."""
    base = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folders.check_name(subfolder), 0o700, dir_fd=base)
        for path, text in files:
            name = path.rsplit("/", 1)[1]
            with folders.walk(base, [subfolder]) as inner:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=inner)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fd = os.open(folders.check_name(name), flags, 0o600, dir_fd=inner)
                with os.fdopen(fd, "w") as out:
                    out.write(text)
    finally:
        os.close(base)


def _sandbox_of(
    username: str, project: str, pid: int, command: str = "", started: int | None = None
) -> bool:
    """Whether ``pid`` is still a sandbox this helper starts for ``username``'s workspace
    account in ``project`` (bubblewrap, as root, with that account's ``--reuid`` and, when
    given, ``command`` among its arguments, and started at ``started``, in clock ticks since
    boot: a pid reused since is not it), one thread of it alive."""
    if pid in _STARTED and _STARTED[pid].poll() is not None:
        del _STARTED[pid]
        return False
    name = accounts.workspace_account(username, project)
    if not isinstance(pid, int) or pid <= 1 or not accounts.exists(name):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    mine = (
        owner == 0
        and Path(argv[0].decode(errors="replace")).name == "bwrap"
        and f"--reuid={accounts.uid(name)}".encode() in argv
        and (not command or command.encode() in argv)
        and (started is None or _start_time(pid) == started)
    )
    return mine and _alive(pid)


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``'s 22nd field)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@operation(SERVICES)
def dask_running(ctx: Context, username: str, project: str, pid: int, started: int) -> bool:
    """Whether ``pid`` (started at ``started``) is still the sandbox of a Dask process of
    ``username`` in ``project``."""
    accounts.check_username(username)
    accounts.check_project_id(project)
    dask = str(ctx.workspace_env / "bin" / "dask")
    return _sandbox_of(username, project, pid, dask, started)


@operation(SERVICES)
def stop_dask(ctx: Context, username: str, project: str, pid: int, started: int) -> bool:
    """Stop the sandbox ``pid`` (started at ``started``) of a Dask process of ``username`` in
    ``project`` (and all it holds: the sandbox is its own PID namespace); whether it ran."""
    accounts.check_username(username)
    accounts.check_project_id(project)
    if not _sandbox_of(username, project, pid, str(ctx.workspace_env / "bin" / "dask"), started):
        return False
    # The sandbox's first process inside is its PID namespace's init: killed, the kernel
    # kills every process of the namespace; then bubblewrap, which waited on it, ends.
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if pid in _STARTED:
        _STARTED.pop(pid).wait(timeout=10)
    return True


def _loopback(env: Mapping[str, str], name: str) -> int:
    """The port of ``env[name]``, an ``http://127.0.0.1:<port>`` URL (the enclave lets out to
    that port alone)."""
    parts = urlsplit(env.get(name, ""))
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or not port:
        raise ConfigError(
            f"{name} is {env.get(name)!r}: a workspace's enclave reaches the hub and the portal "
            "at http://127.0.0.1:<port> URLs only."
        )
    return port


def _moved(url: str, host: str) -> str:
    """``url`` on ``host`` (same scheme, port and path)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()


#: The sandboxes this process started (when it is the one that runs them, not the helper).
_STARTED: dict[int, subprocess.Popen] = {}


@operation(SERVICES)
def workspace_running(ctx: Context, username: str, project: str, pid: int) -> bool:
    """Whether ``pid`` is still the sandbox of ``username``'s workspace of ``project``."""
    del ctx
    return _sandbox_of(username, project, pid)


@operation(SERVICES)
def stop_workspace(ctx: Context, username: str, project: str) -> int:
    """Kill every process of ``username``'s workspace account in ``project``; how many."""
    del ctx
    return _kill_account(accounts.workspace_account(username, project))


@operation(SERVICES, PROVISIONING)
def revoke_access(ctx: Context, project: str, keep: list[str]) -> list[str]:
    """Every workspace account of ``project`` but those of ``keep`` (usernames): processes
    killed, the project's group taken away (its extracts are then closed to it), network
    enclave removed. Returns the accounts revoked."""
    accounts.check_project_id(project)
    with _project_locked(project):
        return _revoke_access(ctx, project, keep)


def _revoke_access(ctx: Context, project: str, keep: list[str]) -> list[str]:
    allowed = {accounts.workspace_account(accounts.check_username(u), project) for u in keep}
    revoked = []
    for name in accounts.project_members(project):
        if name in allowed:
            continue
        if _as_root():
            accounts.leave_project(name)  # then no process of it holds the group for long:
        _kill_account(name)  # every one is killed, and new ones no longer get it
        revoked.append(name)
    if _as_root():
        kept = set(keep)
        gone = [m for p, m in enclaves.of_home(ctx.home) if p == project and m not in kept]
        enclaves.remove(ctx.home, project, gone)
    return revoked


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs (a process whose first thread has exited shows
    as a zombie while its other threads go on)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        with contextlib.suppress(OSError, IndexError):
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
    return False


def _living(uid: int) -> list[int]:
    """The processes of ``uid`` of which a thread still runs."""
    return [pid for pid in _processes_of(uid) if _alive(pid)]


def _kill_launchers(uid: int) -> None:
    """Kill every root bubblewrap process that would become ``uid`` (``--reuid=<uid>`` among
    its arguments: the sandboxes this helper starts), and all it holds."""
    wanted = f"--reuid={uid}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if (
                entry.stat().st_uid == 0
                and Path(argv[0].decode(errors="replace")).name == "bwrap"
                and wanted in argv
            ):
                for child in (entry / "task" / entry.name / "children").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(child), signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


def _kill_account(name: str) -> int:
    """Kill every process of the account ``name``; how many there were. A child becomes the
    account and calls ``kill(-1, SIGKILL)``, which the kernel sends to all its processes at
    once (no fork slips between), again until none is left. Never returns while one lives."""
    if not accounts.exists(name):
        return 0
    account = accounts.Account.named(name)
    if account.uid in (0, os.geteuid()):
        return 0  # never this process's own account, never root's
    # First the sandboxes still being set up for it: bubblewrap runs as root until it becomes
    # the account, so kill(-1) as the account would miss one started just before (found by the
    # review of #20's fixes: a Dask worker started during a revocation).
    _kill_launchers(account.uid)
    found = _living(account.uid)
    for attempt in range(50):
        if attempt and not _living(account.uid):  # at least one round, whatever was seen
            return len(found)
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(account.gid, account.gid, account.gid)
                os.setresuid(account.uid, account.uid, account.uid)
                if os.getresuid() == (account.uid,) * 3:  # never -1 as anyone else
                    for _ in range(1000):
                        os.kill(-1, signal.SIGKILL)  # all its processes but this one
            except ProcessLookupError:
                pass  # none left but itself
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.02)
    raise ServiceUnavailable(
        f"The processes of {name} could not all be stopped: ask the machine's administrator."
    )


def _read_files(folder: str, paths: list[str]) -> list[list[str]]:
    """In the workspace account's own process: each path under ``folder``, one name at a
    time without following a symlink; regular files only, of bounded size."""
    out = []
    with folders.opened(Path(folder)) as base:
        for path in paths:
            parts = folders.relative_parts(path)
            try:
                with folders.walk(base, parts[:-1]) as parent:
                    fd = os.open(
                        parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent
                    )
            except FileNotFoundError:
                raise NotFound(f"There is no file {path!r} in your workspace folder.") from None
            except OSError:
                raise InvalidInput(
                    f"{path!r} goes through a link or is not a file: give the path of a file "
                    "of your workspace folder itself."
                ) from None
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInput(f"{path!r} is not a plain file.")
                if info.st_size > MAX_FILE_BYTES:
                    raise InvalidInput(
                        f"{path!r} is larger than {MAX_FILE_BYTES >> 20} MB: outputs are "
                        "summaries, not data."
                    )
                data = f.read(MAX_FILE_BYTES + 1)
            out.append([parts[-1], base64.b64encode(data).decode()])
    return out


@operation(SERVICES)
def read_workspace_files(
    ctx: Context, username: str, project: str, paths: list[str]
) -> list[list[str]]:
    """The files at ``paths`` (relative to ``username``'s folder in ``project``), read as
    their workspace account: [name, base64 content] each."""
    accounts.check_username(username)
    accounts.check_project_id(project)
    if not isinstance(paths, list) or not paths or len(paths) > 200:
        raise InvalidInput("Give between 1 and 200 paths.")
    for path in paths:
        folders.relative_parts(path)
    folder = ctx.projects / project / "work" / username
    account = None
    if _as_root():
        name = accounts.workspace_account(username, project)
        if not accounts.exists(name):
            raise NotFound(f"{username} has no workspace in project {project} yet.")
        account = accounts.Account.named(name)
    return call_as(account, Limits(60, 1 << 30, 120), _read_files, str(folder), paths)


AUDIT_READ_SECONDS = 900
#: Serialises the checkpoint writers: root's own file (0600), which nobody else can open and
#: so hold locked.
AUDIT_LOCK = ".audit-checkpoint.lock"


@operation(SERVICES, PROVISIONING)
def write_audit_checkpoint(ctx: Context, database_url: str) -> dict[str, Any] | None:
    """Sign a checkpoint of the audit log's head with the audit signing key, which only root
    reads, into ``<home>/audit``, where only root writes. The head is not taken from the
    caller: the events since the newest checkpoint are read (as the services' account: root
    never opens the database) and checked here, chain and MACs, to extend it; anything else
    is refused and nothing is signed. Returns the newest checkpoint, or None when one written
    meanwhile is newer."""
    from tre.audit import checkpoints, verification
    from tre.keys import AUDIT_KEY, AUDIT_SIGNING_KEY, read_key
    from tre.privileged.helper import separated

    if not isinstance(database_url, str) or not 0 < len(database_url) <= 2000:
        raise InvalidInput("Give the metadata database's URL.")
    keys = ctx.home / "keys"
    signing, mac_key = read_key(keys / AUDIT_SIGNING_KEY), read_key(keys / AUDIT_KEY, True)
    reader = accounts.Account.named(accounts.SERVICE) if separated(ctx.home) else None

    def head_after(newest: checkpoints.Checkpoint | None) -> tuple[int, str]:
        start = None if newest is None else (newest.seq, newest.head)
        found = _audit_segment(reader, database_url, 1 if start is None else start[0])
        return verification.checked_head(found, start, mac_key)

    written = checkpoints.append(
        ctx.home / checkpoints.FOLDER, signing, head_after, keys / AUDIT_LOCK
    )
    return None if written is None else dataclasses.asdict(written)


#: Run by :func:`_audit_segment` in a fresh interpreter: the URL and the first seq on standard
#: input (never the command line, which others may read), the events as JSON on standard output.
_SEGMENT_CODE = (
    "import json, sys; from tre.audit.verification import segment; from tre.db import Database; "
    "ask = json.load(sys.stdin); db = Database(ask['url']); "
    "print(json.dumps(segment(db, ask['start']))); db.dispose()"
)


def _audit_segment(reader: accounts.Account | None, database_url: str, start: int) -> dict:
    """The events from seq ``start`` on, read by ``reader`` (the services' account; None: this
    one) in a new interpreter: not a fork, for SQLite must not be used in a process forked
    from one that has the database open."""
    import json
    import sys

    as_reader: dict[str, Any] = {}
    if reader is not None:
        as_reader = {"user": reader.uid, "group": reader.gid, "extra_groups": list(reader.groups)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SEGMENT_CODE],
            input=json.dumps({"url": database_url, "start": start}),
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"},
            cwd="/",
            umask=0o077,
            capture_output=True,
            text=True,
            timeout=AUDIT_READ_SECONDS,
            check=False,
            **as_reader,
        )
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable("Reading the audit log for a checkpoint took too long.") from None
    if done.returncode != 0:
        kind = (done.stderr.strip().splitlines() or ["no reason given"])[-1].split(":")[0]
        raise ServiceUnavailable(f"The audit log could not be read for a checkpoint ({kind}).")
    return json.loads(done.stdout)
