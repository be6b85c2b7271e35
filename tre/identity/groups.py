"""Project groups in Keycloak: who may use a project's workspace.

Provisioning a project creates the group ``project-<id>`` with its members (through the
``tre-provisioner`` service account, via python-keycloak); suspension, expiry and closure remove
every member (closure deletes the group); resumption adds them back. The metadata database
stays the source of truth: the hub and the portal also check the project's state, so a
project never becomes usable because Keycloak is out of step.
"""

from __future__ import annotations

import logging

from tre.config import Settings
from tre.exceptions import ServiceUnavailable

log = logging.getLogger(__name__)

GROUP_PREFIX = "project-"


def group_name(project_id: str) -> str:
    return GROUP_PREFIX + project_id


def admin_client(settings: Settings):
    """A python-keycloak admin client acting as the tre-provisioner service account."""
    from keycloak import KeycloakAdmin

    from tre.identity.server import KeycloakServer

    secret = settings.provisioner_secret or KeycloakServer.from_settings(settings).secret(
        "provisioner_secret"
    )
    return KeycloakAdmin(
        server_url=settings.keycloak_base_url,
        realm_name=settings.keycloak_realm,
        client_id="tre-provisioner",
        client_secret_key=secret,
    )


class ProjectGroups:
    def __init__(self, settings: Settings):
        self._admin = admin_client(settings)

    def _call(self, what: str, fn, *args):
        from keycloak.exceptions import KeycloakError

        try:
            return fn(*args)
        except (KeycloakError, OSError) as e:
            raise ServiceUnavailable(
                f"Keycloak could not {what}: {e}. The project's state is recorded; run "
                "`tre project sync-access ID` once Keycloak answers."
            ) from None

    def _group_id(self, project_id: str, create: bool) -> str | None:
        name = group_name(project_id)
        for group in self._call("list groups", self._admin.get_groups, {"search": name}):
            if group["name"] == name:
                return group["id"]
        if not create:
            return None
        return self._call("create a group", self._admin.create_group, {"name": name})

    def grant(self, project_id: str, members: list[str]) -> None:
        """The group holds exactly ``members``."""
        group_id = self._group_id(project_id, create=True)
        current = {
            m["username"]: m["id"]
            for m in self._call("list members", self._admin.get_group_members, group_id)
        }
        for username in members:
            if username in current:
                continue
            user_id = self._call("find a user", self._admin.get_user_id, username)
            if user_id is None:
                log.warning("project %s: user %s is not in Keycloak", project_id, username)
                continue
            self._call("add a member", self._admin.group_user_add, user_id, group_id)
        for username, user_id in current.items():
            if username not in members:
                self._call("remove a member", self._admin.group_user_remove, user_id, group_id)

    def revoke(self, project_id: str, delete: bool = False) -> None:
        group_id = self._group_id(project_id, create=False)
        if group_id is None:
            return
        if delete:
            self._call("delete a group", self._admin.delete_group, group_id)
            return
        for member in self._call("list members", self._admin.get_group_members, group_id):
            self._call("remove a member", self._admin.group_user_remove, member["id"], group_id)

    def members(self, project_id: str) -> list[str]:
        group_id = self._group_id(project_id, create=False)
        if group_id is None:
            return []
        return sorted(
            m["username"]
            for m in self._call("list members", self._admin.get_group_members, group_id)
        )


def sync(settings: Settings, project) -> None:
    """Make the project's group match its state: members while active, nobody otherwise."""
    groups = ProjectGroups(settings)
    if project.state == "provisioned":
        groups.grant(project.id, list(project.members()))
    else:
        groups.revoke(project.id, delete=project.state == "closed")
