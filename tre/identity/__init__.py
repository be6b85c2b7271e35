"""Identities: the local Keycloak server and the validation of its access tokens."""

from tre.identity.server import DEMO_USERS, KeycloakServer
from tre.identity.tokens import Identity, TokenValidator, device_login, form_login

__all__ = [
    "DEMO_USERS",
    "Identity",
    "KeycloakServer",
    "TokenValidator",
    "device_login",
    "form_login",
]
