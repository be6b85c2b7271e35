"""Who is calling the portal: Keycloak logins (authorization code + PKCE), server-side
sessions, CSRF tokens for forms, bearer tokens for the API.

A login sends the browser to Keycloak with a fresh ``state``, ``nonce`` and PKCE
``code_challenge``, remembered in a short-lived signed cookie. The callback checks the state,
exchanges the code (with the client secret and the verifier) for tokens, validates the access
token like every token (:mod:`tre.identity.tokens`) and opens a session: a random token in an
HttpOnly, SameSite cookie (Secure when the portal is served over https), of which the database
keeps only a hash. Pages that change something carry the session's CSRF token in a hidden
field. The API takes only bearer tokens, never cookies, so it cannot be the target of CSRF.

A session trusts the roles and groups it holds for ``portal_role_check_seconds`` at most; then
the portal asks Keycloak again, with the refresh token of the login (kept encrypted), and takes
the answer: new roles and groups, or the end of the session if Keycloak ended the login (the
person logged out elsewhere, was disabled, or was idle longer than Keycloak allows).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Mapped, mapped_column

from tre.db import Base
from tre.exceptions import AuthenticationFailed, PermissionDenied, ServiceUnavailable, TREError
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
    refresh_token: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """Keycloak's refresh token of the login, encrypted with the portal's token key."""
    checked_at: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    """When Keycloak last said who this is (roles, groups); None: never (log in again)."""


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
        self.sealer = Fernet(base64.urlsafe_b64encode(app_state.token_key))
        self.trust = dt.timedelta(seconds=self.settings.portal_role_check_seconds)

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
        response = self._token(
            "finish the login",
            grant_type="authorization_code",
            code=code,
            redirect_uri=self.redirect_uri,
            code_verifier=login["verifier"],
        )
        if response.status_code != 200:
            raise AuthenticationFailed("Keycloak refused the login. Log in again.")
        tokens = response.json()
        person = Person.from_identity(self.state.validator.identity(tokens["access_token"]))
        return self.open_session(person, tokens.get("refresh_token")), login["next"]

    def _token(self, what: str, **form: str) -> httpx.Response:
        """Keycloak's token endpoint's answer to the portal's ``form``."""
        try:
            return httpx.post(
                f"{self.settings.keycloak_issuer}/protocol/openid-connect/token",
                data={**form, "client_id": "tre-portal", "client_secret": self.state.client_secret},
                timeout=10,
            )
        except httpx.HTTPError:
            raise ServiceUnavailable(f"Keycloak cannot be reached to {what}.") from None

    def logout_url(self) -> str:
        query = urlencode(
            {"client_id": "tre-portal", "post_logout_redirect_uri": f"{self.settings.portal_url}/"}
        )
        return f"{self.settings.keycloak_issuer}/protocol/openid-connect/logout?{query}"

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, person: Person, refresh_token: str | None) -> str:
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
                    refresh_token=self._seal(refresh_token),
                    checked_at=_now().isoformat(),
                )
            )
        return token

    def session_of(self, request: Request, recheck: bool = True):
        """The session row (username, name, roles, groups, csrf) of the request's cookie.

        Its roles and groups are asked of Keycloak again when older than the setting
        ``portal_role_check_seconds`` (unless ``recheck`` is False: an error page's menu)."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        found = self._read(_hash(token))
        if found is None or found.expires_at < _now().isoformat():
            return None
        if recheck and (found.checked_at or "") < (_now() - self.trust).isoformat():
            return self._recheck(found)
        return found

    def _read(self, token_hash: str):
        # A plain read of one row (no ORM unit of work): every page asks for it.
        with self.state.db.rows() as connection:
            return connection.execute(_SESSION_BY_HASH, {"token_hash": token_hash}).first()

    def _recheck(self, found):
        """Ask Keycloak who the session's person is now: the session row with their roles and
        groups of today, or None (the session closed) if Keycloak ended their login."""
        refresh = self._unseal(found.refresh_token)
        response = (
            self._token("check who you are", grant_type="refresh_token", refresh_token=refresh)
            if refresh
            else None
        )
        person = None
        if response is not None and response.status_code == 200:
            tokens = response.json()
            try:
                identity = self.state.validator.identity(tokens["access_token"])
            except TREError:
                identity = None
            if identity is not None and identity.username == found.username:
                person = Person.from_identity(identity)
        with self.state.db.write() as session:
            if person is None:
                session.execute(
                    sa.delete(PortalSession).where(PortalSession.token_hash == found.token_hash)
                )
                return None
            session.execute(
                sa.update(PortalSession)
                .where(PortalSession.token_hash == found.token_hash)
                .values(
                    name=person.name,
                    roles=sorted(person.roles),
                    groups=sorted(person.groups),
                    refresh_token=self._seal(tokens.get("refresh_token") or refresh),
                    checked_at=_now().isoformat(),
                )
            )
        return self._read(found.token_hash)

    def _seal(self, token: str | None) -> str | None:
        return self.sealer.encrypt(token.encode()).decode() if token else None

    def _unseal(self, sealed: str | None) -> str | None:
        try:
            return self.sealer.decrypt(sealed.encode()).decode() if sealed else None
        except InvalidToken:  # sealed under another master key: log in again
            return None

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
