"""The portal: web pages and the ``/api/v1`` API, behind Keycloak.

``create_app(settings)`` builds the FastAPI application; ``tre portal serve`` runs it with
uvicorn. Pages are server-rendered (Jinja2), with no front-end build step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
import jinja2
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tre import audit
from tre.config import Settings
from tre.db import Database
from tre.exceptions import TREError
from tre.home import Home, checkpoint_audit
from tre.identity import TokenValidator

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
REPO = HERE.parents[1]


def security_headers(settings: Settings) -> dict[str, str]:
    # Forms post to the portal; logging out redirects to Keycloak.
    return {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
        f"style-src 'self'; script-src 'self'; form-action 'self' {settings.keycloak_base_url}; "
        "frame-ancestors 'none'",
    }


class SecurityHeaders:
    """Adds the security headers to every response, and ``Cache-Control: no-store`` to all but
    static files (a plain ASGI middleware: no extra task or stream per request)."""

    def __init__(self, app, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(self.headers)
        if not scope["path"].startswith("/static"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Templates(jinja2.Environment):
    """Jinja for the portal's pages, which render the dicts of :mod:`tre.portal.views`.

    ``{{ row.title }}`` on a dict gives the same answer as Jinja's own lookup, reached without
    first raising and catching an ``AttributeError`` (a dict's only attributes are its methods),
    which was three quarters of the time spent rendering a 50-row queue."""

    def getattr(self, obj, attribute):
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@dataclasses.dataclass
class State:
    settings: Settings
    db: Database
    home: Home
    validator: TokenValidator
    client_secret: str
    cookie_key: str
    token_key: bytes
    templates: Jinja2Templates
    repo: Path = REPO
    auth: object = None


def _secrets(settings: Settings, home: Home) -> tuple[str, str, bytes]:
    """The portal's client secret, the key signing its cookies and the key encrypting the
    refresh tokens of its sessions."""
    from tre import keys
    from tre.identity.server import client_secret

    return (
        client_secret(settings, "portal"),
        keys.purpose_key(home.keys, "portal cookies").hex(),
        keys.purpose_key(home.keys, "portal refresh tokens"),
    )


async def _checkpoint_audit(settings: Settings, db: Database) -> None:
    """Every ``TRE_AUDIT_CHECKPOINT_SECONDS``, a signed checkpoint of the audit log's head if it
    moved (each worker process does it; the helper writes one checkpoint per head)."""
    last = None
    while True:
        await asyncio.sleep(settings.audit_checkpoint_seconds)
        try:
            head = await anyio.to_thread.run_sync(_audit_head, db)
            if head != last:
                await anyio.to_thread.run_sync(checkpoint_audit, settings.home, db)
                last = head
        except Exception:
            log.exception("could not write an audit checkpoint; trying again later")


def _audit_head(db: Database) -> tuple[int, str]:
    with db.rows() as rows:
        seq, digest = rows.execute(sa.select(audit.AuditHead.seq, audit.AuditHead.hash)).one()
    return seq, digest


def create_app(settings: Settings) -> FastAPI:
    from tre import projects
    from tre.portal import api, auth, pages, workspaces

    home = Home(settings.home)
    home.check()
    db = Database.of_settings(settings)
    db.check_current()
    client_secret, cookie_key, token_key = _secrets(settings, home)
    templates = Jinja2Templates(
        env=_Templates(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(),
            auto_reload=False,  # templates ship with the code: no stat() per page
        )
    )
    state = State(
        settings,
        db,
        home,
        TokenValidator(settings.keycloak_issuer, settings.api_audience),
        client_secret,
        cookie_key,
        token_key,
        templates,
    )
    state.auth = auth.Auth(state)
    projects.install_access_hooks(lambda: settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Few threads: handlers are short and mostly compute; more threads only fight over
        # the GIL and make every request slower under load.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.portal_threads
        checkpoints = asyncio.create_task(_checkpoint_audit(settings, db))
        try:
            yield
        finally:
            checkpoints.cancel()

    app = FastAPI(
        lifespan=lifespan,
        title="tre: trusted research environment",
        version="1",
        description="Projects, outputs and the airlock. Every call needs a Keycloak access "
        "token for the `tre-portal` audience: `Authorization: Bearer <token>`.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    for name in dataclasses.fields(state):
        setattr(app.state, name.name, getattr(state, name.name))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.exception_handler(TREError)
    async def tre_error(request: Request, error: TREError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": error.message}, status_code=error.http_status)
        session = state.auth.session_of(request, recheck=False)
        return pages._render(
            request, "error.html", session, status=error.http_status, message=error.message
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in error.errors()
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)
        session = state.auth.session_of(request, recheck=False)
        return pages._render(request, "error.html", session, status=422, message=problems)

    @app.exception_handler(pages.LoginRequired)
    async def login_required(request: Request, error: pages.LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(error.next_url)}", status_code=303)

    app.add_middleware(workspaces.PagesRefused)
    app.add_middleware(SecurityHeaders, headers=security_headers(settings))
    return app


def serve(settings: Settings, environ: Mapping[str, str], port: int | None = None) -> None:
    """Serve the portal on 127.0.0.1 with ``settings.portal_workers`` processes (see
    :mod:`tre.portal.workers`)."""
    from urllib.parse import urlsplit

    import uvicorn

    port = port or urlsplit(settings.portal_url).port or 8000
    app = create_app(settings)  # in this process first, so a bad setting is told once
    if settings.portal_workers == 1:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
        return
    from tre.portal import workers

    # Workers are new processes that read their settings from the environment.
    environment = {k: v for k, v in environ.items() if k.startswith("TRE_")}
    environment["TRE_HOME"] = str(settings.home)
    workers.serve("tre.portal:app_from_environment", port, settings.portal_workers, environment)


def app_from_environment() -> FastAPI:
    """The portal for a worker process, configured by its environment."""
    return create_app(Settings.from_environ(os.environ))
