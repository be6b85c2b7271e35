"""Who is calling the portal: Keycloak logins (authorization code + PKCE), server-side
sessions, CSRF tokens for forms, bearer tokens for the API.

A login sends the browser to Keycloak with a fresh ``state``, ``nonce`` and PKCE
``code_challenge``, remembered in a short-lived signed cookie. The callback checks the state,
exchanges the code (with the client secret and the verifier) for tokens, validates the access
token like every token (:mod:`tre.identity.tokens`) and opens a session: a random token in an
HttpOnly, SameSite cookie (Secure when the portal is served over https), of which the database
keeps only a hash. Pages that change something carry the session's CSRF token in a hidden
field. The API takes only bearer tokens, never cookies, so it cannot be the target of CSRF.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Mapped, mapped_column

from tre.db import Base
from tre.exceptions import AuthenticationFailed, PermissionDenied, ServiceUnavailable
from tre.people import Person

SESSION_COOKIE = "tre_session"
LOGIN_COOKIE = "tre_login"
SESSION_HOURS = 8
LOGIN_SECONDS = 600


class PortalSession(Base):
    __tablename__ = "portal_sessions"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    roles: Mapped[list] = mapped_column(sa.JSON)
    groups: Mapped[list] = mapped_column(sa.JSON)
    csrf: Mapped[str] = mapped_column(sa.String(64))
    expires_at: Mapped[str] = mapped_column(sa.String(32))


_SESSION_BY_HASH = sa.select(PortalSession.__table__).where(
    PortalSession.token_hash == sa.bindparam("token_hash")
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Auth:
    def __init__(self, app_state):
        self.state = app_state
        self.settings = app_state.settings
        self.signer = URLSafeTimedSerializer(app_state.cookie_key, salt="tre-login")
        self.secure = self.settings.portal_url.startswith("https://")

    # -- Keycloak -------------------------------------------------------------------------

    @property
    def redirect_uri(self) -> str:
        return f"{self.settings.portal_url}/auth/callback"

    def login_redirect(self, next_url: str) -> tuple[str, str]:
        """The Keycloak URL to send the browser to, and the signed cookie remembering it."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        query = urlencode(
            {
                "client_id": "tre-portal",
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": self.redirect_uri,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        url = f"{self.settings.keycloak_issuer}/protocol/openid-connect/auth?{query}"
        if not next_url.startswith("/") or next_url.startswith("//"):
            next_url = "/"
        cookie = self.signer.dumps({"state": state, "verifier": verifier, "next": next_url})
        return url, cookie

    def callback(self, code: str, state: str, cookie: str | None) -> tuple[str, str]:
        """Finish a login: return the new session token and where to go next."""
        try:
            login = self.signer.loads(cookie or "", max_age=LOGIN_SECONDS)
        except BadSignature:
            raise AuthenticationFailed(
                "The login took too long or was tampered with. Log in again."
            ) from None
        if not secrets.compare_digest(login["state"], state or ""):
            raise AuthenticationFailed("The login does not match this browser. Log in again.")
        try:
            response = httpx.post(
                f"{self.settings.keycloak_issuer}/protocol/openid-connect/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "client_id": "tre-portal",
                    "client_secret": self.state.client_secret,
                    "code_verifier": login["verifier"],
                },
                timeout=10,
            )
        except httpx.HTTPError:
            raise ServiceUnavailable("Keycloak cannot be reached to finish the login.") from None
        if response.status_code != 200:
            raise AuthenticationFailed("Keycloak refused the login. Log in again.")
        identity = self.state.validator.identity(response.json()["access_token"])
        person = Person.from_identity(identity)
        return self.open_session(person), login["next"]

    def logout_url(self) -> str:
        query = urlencode(
            {"client_id": "tre-portal", "post_logout_redirect_uri": f"{self.settings.portal_url}/"}
        )
        return f"{self.settings.keycloak_issuer}/protocol/openid-connect/logout?{query}"

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, person: Person) -> str:
        token = secrets.token_urlsafe(32)
        with self.state.db.write() as session:
            session.execute(
                sa.delete(PortalSession).where(PortalSession.expires_at < _now().isoformat())
            )
            session.add(
                PortalSession(
                    token_hash=_hash(token),
                    username=person.username,
                    name=person.name,
                    roles=sorted(person.roles),
                    groups=sorted(person.groups),
                    csrf=secrets.token_urlsafe(32),
                    expires_at=(_now() + dt.timedelta(hours=SESSION_HOURS)).isoformat(),
                )
            )
        return token

    def session_of(self, request: Request):
        """The session row (username, name, roles, groups, csrf) of the request's cookie."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        # A plain read of one row (no ORM unit of work): every page asks for it.
        with self.state.db.rows() as connection:
            found = connection.execute(_SESSION_BY_HASH, {"token_hash": _hash(token)}).first()
        if found is None or found.expires_at < _now().isoformat():
            return None
        return found

    def close_session(self, request: Request) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            with self.state.db.write() as session:
                session.execute(
                    sa.delete(PortalSession).where(PortalSession.token_hash == _hash(token))
                )

    @staticmethod
    def person_of(session: PortalSession) -> Person:
        return Person(
            session.username, frozenset(session.roles), frozenset(session.groups), session.name
        )

    def check_csrf(self, session: PortalSession, token: str | None) -> None:
        if not token or not secrets.compare_digest(session.csrf, token):
            raise PermissionDenied(
                "The form has expired or did not come from this portal. "
                "Reload the page and try again."
            )

    def bearer(self, request: Request) -> Person:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed(
                "The API needs an access token: send `Authorization: Bearer <token>` from Keycloak."
            )
        return Person.from_identity(self.state.validator.identity(token.strip()))
