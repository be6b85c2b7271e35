"""Who is who: a person's username, realm roles, and the custodians they act for.

Keycloak is the source of truth. The portal and the API learn a person from their validated
access token (:meth:`Person.from_identity`). Commands of the local profile, which name their
actor with ``--as USER``, look the user up in the realm file the local Keycloak imports
(``infra/keycloak/realm-tre.json``): the same users, roles and custodian groups, without a
login.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

from tre.exceptions import NotFound

ROLES = ("researcher", "custodian", "output-checker", "tre-admin")
CUSTODIAN_GROUP_PREFIX = "custodian-"
REALM_FILE = Path(__file__).resolve().parents[1] / "infra" / "keycloak" / "realm-tre.json"


@dataclasses.dataclass(frozen=True)
class Person:
    username: str
    roles: frozenset[str]
    groups: frozenset[str] = frozenset()
    name: str = ""

    @property
    def custodian_of(self) -> frozenset[str]:
        """The custodians (``dfe``, ``nhs``) this person decides for."""
        if "custodian" not in self.roles:
            return frozenset()
        return frozenset(
            g.removeprefix(CUSTODIAN_GROUP_PREFIX)
            for g in self.groups
            if g.startswith(CUSTODIAN_GROUP_PREFIX)
        )

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def main_role(self) -> str:
        """The role recorded with this person's actions in the audit log."""
        for role in ("tre-admin", "custodian", "output-checker", "researcher"):
            if role in self.roles:
                return role
        return "none"

    @classmethod
    def from_identity(cls, identity) -> Person:
        return cls(
            identity.username,
            frozenset(r for r in identity.roles if r in ROLES),
            frozenset(identity.groups),
            identity.name,
        )


#: The TRE itself, for what happens automatically (expiry of a project past its end date).
SYSTEM = Person("tre", frozenset({"tre-admin"}), name="the TRE (automatic)")


@functools.cache
def _local_users(realm_file: Path) -> dict[str, Person]:
    realm = json.loads(realm_file.read_text())
    people = {}
    for user in realm.get("users", []):
        if user.get("serviceAccountClientId"):
            continue
        people[user["username"]] = Person(
            user["username"],
            frozenset(r for r in user.get("realmRoles", []) if r in ROLES),
            frozenset(g.lstrip("/") for g in user.get("groups", [])),
            f"{user.get('firstName', '')} {user.get('lastName', '')}".strip(),
        )
    return people


def local_person(username: str, realm_file: Path = REALM_FILE) -> Person:
    """A user of the local profile's realm, for commands run with ``--as USER``."""
    people = _local_users(realm_file)
    try:
        return people[username]
    except KeyError:
        raise NotFound(
            f"There is no user {username!r} in the local realm ({realm_file.name}). "
            f"Users: {', '.join(sorted(people))}. Name one with --as."
        ) from None
