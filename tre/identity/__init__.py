"""Identities: the local Keycloak server and the validation of its access tokens."""

from tre.identity.server import DEMO_USERS, KeycloakServer
from tre.identity.tokens import Identity, TokenValidator, form_login, password_grant

__all__ = [
    "DEMO_USERS",
    "Identity",
    "KeycloakServer",
    "TokenValidator",
    "form_login",
    "password_grant",
]
