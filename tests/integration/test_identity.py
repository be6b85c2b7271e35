"""Tokens from a real Keycloak 26, validated by tre.identity.tokens."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from keycloak import KeycloakAdmin

from tre.cli import main
from tre.exceptions import AuthenticationFailed
from tre.identity import DEMO_USERS, KeycloakServer, TokenValidator
from tre.identity.tokens import LEEWAY_S, device_grant

pytestmark = pytest.mark.keycloak


@pytest.fixture(scope="module")
def validator(keycloak) -> TokenValidator:
    return TokenValidator(keycloak.issuer, keycloak.settings.api_audience)


@pytest.fixture(scope="module")
def admin(keycloak) -> KeycloakAdmin:
    server = KeycloakServer.from_settings(keycloak.settings)
    return KeycloakAdmin(
        server_url=server.url,
        username="admin",
        password=server.secret("admin_password"),
        realm_name=keycloak.settings.keycloak_realm,
        user_realm_name="master",
    )


def _claims_unverified(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _direct_grant_client(admin: KeycloakAdmin, **attributes) -> str:
    """A throwaway public client of the tre realm allowing the password grant."""
    client_id = f"test-{uuid.uuid4().hex[:8]}"
    admin.create_client(
        {
            "clientId": client_id,
            "publicClient": True,
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": False,
            "attributes": attributes.pop("attributes", {}),
            **attributes,
        }
    )
    return client_id


def _token(keycloak, username: str, client_id: str, kind: str = "access_token") -> str:
    response = httpx.post(
        f"{keycloak.issuer}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": keycloak.settings.demo_password,
            "scope": "openid",
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json()[kind]


@pytest.mark.parametrize("username", sorted(DEMO_USERS))
def test_each_demo_user_gets_a_valid_token_with_their_role(keycloak, validator, username):
    identity = validator.identity(keycloak.token(username))
    role = DEMO_USERS[username][0]
    assert identity.username == username
    assert identity.roles & {"researcher", "custodian", "output-checker", "tre-admin"} == {role}


def test_custodians_carry_their_custodian_group_without_a_path(keycloak, validator):
    token = keycloak.token("dora")
    assert "custodian-dfe" in _claims_unverified(token)["groups"]  # full.path=false: no "/"
    assert validator.identity(token).groups == {"custodian-dfe"}
    assert validator.identity(keycloak.token("hugh")).groups == {"custodian-nhs"}


def test_a_tampered_token_is_refused(keycloak, validator):
    header, payload, signature = keycloak.token("alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["realm_access"]["roles"].append("tre-admin")
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthenticationFailed, match="not valid"):
        validator.identity(f"{header}.{forged}.{signature}")


def test_a_token_signed_with_another_key_is_refused(keycloak, validator):
    real = keycloak.token("alice")
    claims = _claims_unverified(real)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        claims, key, algorithm="RS256", headers={"kid": jwt.get_unverified_header(real)["kid"]}
    )
    with pytest.raises(AuthenticationFailed):
        validator.identity(forged)


def test_an_expired_token_is_refused(keycloak, validator, admin):
    client_id = _direct_grant_client(
        admin,
        attributes={"access.token.lifespan": "1"},
        protocolMappers=[
            {
                "name": "aud",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": "tre-portal", "access.token.claim": "true"},
            }
        ],
    )
    token = _token(keycloak, "alice", client_id)
    assert validator.identity(token).username == "alice"  # valid while fresh
    time.sleep(1 + LEEWAY_S + 1)
    with pytest.raises(AuthenticationFailed, match="expired"):
        validator.identity(token)


def test_a_token_for_another_audience_is_refused(keycloak, validator, admin):
    client_id = _direct_grant_client(
        admin,
        protocolMappers=[
            {
                "name": "aud",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": "tre-hub", "access.token.claim": "true"},
            }
        ],
    )
    token = _token(keycloak, "alice", client_id)
    assert _claims_unverified(token)["aud"] == "tre-hub"
    with pytest.raises(AuthenticationFailed, match="not issued for the TRE's API"):
        validator.identity(token)


def test_a_token_from_another_issuer_is_refused(keycloak):
    other_issuer = keycloak.issuer.replace("127.0.0.1", "localhost")
    validator = TokenValidator(
        other_issuer,
        keycloak.settings.api_audience,
        jwks_url=f"{keycloak.issuer}/protocol/openid-connect/certs",
    )
    with pytest.raises(AuthenticationFailed, match="another identity server"):
        validator.identity(keycloak.token("alice"))


def test_an_id_token_is_not_an_access_token(keycloak):
    id_token = device_grant(keycloak.issuer, "alice", keycloak.settings.demo_password)["id_token"]
    validator = TokenValidator(keycloak.issuer, "tre-cli")  # the ID token's own audience
    with pytest.raises(AuthenticationFailed, match="not an access token"):
        validator.identity(id_token)


def test_no_token_is_refused(validator):
    with pytest.raises(AuthenticationFailed, match="No access token"):
        validator.identity("")


def test_the_provisioning_service_account_can_manage_groups(keycloak):
    server = KeycloakServer.from_settings(keycloak.settings)
    provisioner = KeycloakAdmin(
        server_url=server.url,
        realm_name=keycloak.settings.keycloak_realm,
        client_id="tre-provisioner",
        client_secret_key=server.secret("provisioner_secret"),
    )
    name = f"project-test-{uuid.uuid4().hex[:6]}"
    group_id = provisioner.create_group({"name": name})
    alice = provisioner.get_user_id("alice")
    provisioner.group_user_add(alice, group_id)
    assert [m["username"] for m in provisioner.get_group_members(group_id)] == ["alice"]
    provisioner.delete_group(group_id)


def test_cli_status_reports_the_running_server(keycloak, capsys):
    assert main(["identity", "status"], keycloak.environ) == 0
    assert "ready" in capsys.readouterr().out
    assert main(["identity", "up"], keycloak.environ) == 0  # already up: nothing to do
    assert "ready" in capsys.readouterr().out
