"""Validation of access tokens, in one place.

Tokens are JWTs signed by Keycloak. :class:`TokenValidator` checks the signature against the
realm's keys (fetched once and cached, refetched only for an unknown key id), then requires
``exp``, ``iat``, ``iss``, ``aud`` and ``sub``, the issuer of our realm, our API's audience and
``typ == "Bearer"`` (an ID token, whose audience is the client, is not an access token).
Everything the rest of the TRE knows about a caller comes from the :class:`Identity` returned.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import jwt

from tre.exceptions import AuthenticationFailed, ServiceUnavailable

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256"]
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
LEEWAY_S = 10
JWKS_LIFESPAN_S = 3600
VERIFIED_CACHE_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is calling: a Keycloak user, their realm roles and groups."""

    username: str
    subject: str
    roles: frozenset[str]
    groups: frozenset[str]
    name: str = ""

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Identity:
        return cls(
            username=claims.get("preferred_username") or claims["sub"],
            subject=claims["sub"],
            roles=frozenset(claims.get("realm_access", {}).get("roles", [])),
            groups=frozenset(g.lstrip("/") for g in claims.get("groups", [])),
            name=claims.get("name", ""),
        )


class TokenValidator:
    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._jwks = jwt.PyJWKClient(
            jwks_url or f"{self.issuer}/protocol/openid-connect/certs",
            cache_keys=True,
            cache_jwk_set=True,
            lifespan=JWKS_LIFESPAN_S,
            timeout=5,
        )
        #: Tokens already verified, with their claims: a token is checked once, then only its
        #: expiry is (a client sends the same token for many calls).
        self._verified: dict[str, dict[str, Any]] = {}

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``, or :class:`AuthenticationFailed` saying why not."""
        if not token:
            raise AuthenticationFailed("No access token was sent. Log in and try again.")
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= known["exp"] + LEEWAY_S:
                return known
            self._verified.pop(token, None)  # expired: verify again, which says so
        claims = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)), None)  # the oldest
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise ServiceUnavailable(
                "The identity server cannot be reached to check your token. Try again shortly."
            ) from None
        except jwt.PyJWTError:
            raise AuthenticationFailed(
                "The access token is not valid (malformed or signed by an unknown key). "
                "Log in again."
            ) from None
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("Your access token has expired. Log in again.") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed(
                "The access token was not issued for the TRE's API. Log in through the TRE."
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationFailed(
                "The access token was issued by another identity server or realm."
            ) from None
        except jwt.PyJWTError:
            raise AuthenticationFailed(
                "The access token is not valid (bad signature or missing claims). Log in again."
            ) from None
        if claims.get("typ", "Bearer") != "Bearer":
            raise AuthenticationFailed(
                "This is not an access token (an ID or refresh token was sent). "
                "Send the access token."
            )
        return claims

    def identity(self, token: str) -> Identity:
        return Identity.from_claims(self.claims(token))


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def device_grant(issuer: str, username: str, password: str, client_id: str = "tre-cli") -> dict:
    """Tokens by the device authorization grant (RFC 8628), the one way the public client
    ``tre-cli`` gets them (it has no password grant: a password alone, sent from anywhere,
    never yields a token). The person opens Keycloak's page for the device, logs in there and
    approves it, as a browser would (here: its forms filled in over HTTP, for the demo users
    of the local profile, the tests and the smoke journey); this process then collects the
    tokens. Returns Keycloak's token response."""
    import base64
    import hashlib
    import secrets
    import time

    base = f"{issuer.rstrip('/')}/protocol/openid-connect"
    verifier = secrets.token_urlsafe(48)  # PKCE: the client requires it of every flow
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    try:
        started = httpx.post(
            f"{base}/auth/device",
            data={
                "client_id": client_id,
                "scope": "openid",
                "code_challenge": challenge.decode().rstrip("="),
                "code_challenge_method": "S256",
            },
            timeout=10,
        )
    except httpx.HTTPError as e:
        raise ServiceUnavailable(f"Cannot reach the identity server at {issuer}: {e}") from None
    if started.status_code != 200:
        raise AuthenticationFailed(f"Keycloak refused a device login for {client_id}.")
    device = started.json()
    page = httpx.URL(device["verification_uri_complete"])
    if page.host != httpx.URL(issuer).host:
        raise AuthenticationFailed("Keycloak sent the device login elsewhere than itself.")
    with httpx.Client(timeout=60, follow_redirects=False) as browser:
        _approve_device(browser, page, username, password)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = httpx.post(
            f"{base}/token",
            data={
                "grant_type": DEVICE_GRANT,
                "client_id": client_id,
                "device_code": device["device_code"],
                "code_verifier": verifier,
            },
            timeout=10,
        )
        if answer.status_code == 200:
            return answer.json()
        if answer.json().get("error") not in ("authorization_pending", "slow_down"):
            break
        time.sleep(0.2)
    raise AuthenticationFailed(f"Keycloak gave no token for the device login of {username}.")


def device_login(issuer: str, username: str, password: str, client_id: str = "tre-cli") -> str:
    """An access token by :func:`device_grant`."""
    return device_grant(issuer, username, password, client_id)["access_token"]


def _approve_device(browser: httpx.Client, url: httpx.URL, username: str, password: str) -> None:
    """Keycloak's pages for a device login, as a browser goes through them: the user code
    (prefilled), the login form, the grant of access; each form posted, each redirect followed,
    until Keycloak says the device is logged in."""
    import html
    import re

    page = _get(browser, url)
    tried = False
    for _ in range(8):
        text = page.text
        if "kc-form-login" not in text and re.search(r"(?i)device login successful", text):
            return
        form = re.search(r'<form[^>]+action="([^"]+)"', text)
        if form is None:
            break
        action = page.url.join(html.unescape(form.group(1)))
        if action.host != url.host:  # the password goes to the identity server only
            break
        if "kc-form-login" in text:
            if tried:  # the form again: the password was wrong
                break
            tried = True
            data = {"username": username, "password": password, "credentialId": ""}
        elif 'name="accept"' in text:
            data = {"accept": "Yes"}
        else:  # the user code, which the link carries
            code = re.search(r'name="device_user_code"[^>]*value="([^"]*)"', text)
            data = {"device_user_code": html.unescape(code.group(1)) if code else ""}
        page = _follow(browser, browser.post(action, data=data, headers=_cookies(browser)))
    raise AuthenticationFailed(f"Keycloak did not log the device in for {username}.")


def _cookies(client: httpx.Client) -> dict[str, str]:
    """Keycloak marks its cookies Secure, which browsers honour on http://127.0.0.1 (a
    trustworthy origin) but httpx does not: they are sent by hand."""
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)}


def _get(client: httpx.Client, url: str) -> httpx.Response:
    return _follow(client, client.get(url, headers=_cookies(client)))


def _follow(client: httpx.Client, response: httpx.Response) -> httpx.Response:
    """Redirects followed on the identity server's own host only (its cookies go nowhere
    else)."""
    for _ in range(10):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        target = response.url.join(response.headers["location"])
        if target.host != response.url.host:
            return response
        response = client.get(target, headers=_cookies(client))
    return response


def form_login(portal_url: str, username: str, password: str) -> httpx.Client:
    """An HTTP client logged in to the portal as a browser would be: through the portal's
    ``/login``, Keycloak's login form and back (local profile; for tests and benchmarks).
    The client carries the session cookie; its ``csrf`` attribute holds the form token."""
    import re

    client = httpx.Client(base_url=portal_url, timeout=60, follow_redirects=True)
    done = _through_keycloak(client, "/login", f"{portal_url}/auth/callback", username, password)
    token = re.search(r'name="csrf" value="([^"]+)"', done.text)
    if done.status_code != 200 or not str(done.url).startswith(portal_url) or token is None:
        raise AuthenticationFailed(f"The portal did not open a session for {username}.")
    client.csrf = token.group(1)
    return client


def hub_login(hub_url: str, username: str, password: str) -> httpx.Client:
    """An HTTP client logged in to JupyterHub through Keycloak's login form, as a browser
    would be. Its ``xsrf`` attribute holds the token the hub's API wants with its cookies."""
    client = httpx.Client(base_url=hub_url, timeout=120, follow_redirects=True)
    done = _through_keycloak(
        client, "/hub/oauth_login", f"{hub_url}/hub/oauth_callback", username, password
    )
    xsrf = client.cookies.get("_xsrf", path="/hub/")
    if done.status_code != 200 or not xsrf:
        raise AuthenticationFailed(f"JupyterHub did not log {username} in.")
    client.xsrf = xsrf
    return client


def _through_keycloak(
    client: httpx.Client, start: str, callback: str, username: str, password: str
) -> httpx.Response:
    """Follow ``start`` to Keycloak's login form, fill it in, and follow the redirect back to
    ``callback``; return the page it ends on."""
    import html
    import re

    page = client.get(start)
    form = re.search(r'<form[^>]+action="([^"]+)"', page.text)
    if page.status_code != 200 or "kc-form-login" not in page.text or form is None:
        raise AuthenticationFailed(f"No Keycloak login form behind {client.base_url}{start}.")
    # Keycloak marks its cookies Secure, which browsers honour on http://127.0.0.1 (a
    # trustworthy origin) but httpx does not: send them by hand to the login form.
    keycloak_cookies = "; ".join(
        f"{c.name}={c.value}" for c in client.cookies.jar if c.path.startswith("/realms")
    )
    answer = client.post(
        html.unescape(form.group(1)),
        data={"username": username, "password": password, "credentialId": ""},
        headers={"Cookie": keycloak_cookies},
        follow_redirects=False,
    )
    location = answer.headers.get("location", "")
    if answer.status_code != 302 or not location.startswith(callback):
        raise AuthenticationFailed(f"Keycloak refused the login of {username}.")
    return client.get(location)
