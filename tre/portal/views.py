"""What the API returns and the pages show: one serialisation of each thing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tre import airlock, audit, catalog, outputs, permissions, projects
from tre.exceptions import ServiceUnavailable
from tre.outputs import privacy
from tre.people import Person
from tre.projects.lifecycle import OWNERS, State


def dataset_summary(d: catalog.Dataset) -> dict[str, Any]:
    return {
        "name": d.name,
        "custodian": d.custodian,
        "title": d.title,
        "description": d.description,
        "columns": len(d.released_columns),
    }


def dataset_detail(d: catalog.Dataset) -> dict[str, Any]:
    return {
        **dataset_summary(d),
        "columns": [
            {
                "name": c.released_name,
                "type": c.released_type.value,
                "description": c.description,
                "sensitivity": c.sensitivity.value,
                "release": c.transform.value,
            }
            for c in d.released_columns
        ],
    }


def project_summary(p: projects.Project) -> dict[str, Any]:
    return {
        "id": p.id,
        "title": p.title,
        "lead": p.lead,
        "state": p.state,
        "end": p.end_date,
        "members": list(p.members()),
        "next": OWNERS[p.status],
    }


def project_detail(state, p: projects.Project) -> dict[str, Any]:
    decisions = [d.summary() for d in projects.decisions(state.db, p.id)]
    granted, left = privacy.remaining(state.db, p.id)
    extract = p.extracts_summary if p.status is State.PROVISIONED else None
    return {
        **project_summary(p),
        "application": p.spec,
        "approved": p.approved_spec,
        "decisions": decisions,
        "privacy_budget": {"granted": granted, "left": left},
        "extracts": extract,
    }


def output_summary(o) -> dict[str, Any]:
    return {
        "id": o.id,
        "name": o.name,
        "kind": o.kind,
        "status": o.status,
        "created_by": o.created_by,
        "created_at": o.created_at,
        "released_at": o.released_at,
    }


def output_detail(o, viewer: Person, project, inside: bool = False) -> dict[str, Any]:
    """An output with its result as ``viewer`` may see it (:func:`tre.outputs.shown_result`;
    ``inside``: asked from the viewer's own workspace of the project)."""
    return {
        **output_summary(o),
        "project": o.project_id,
        "spec": o.spec,
        "result": outputs.shown_result(o, viewer, project, inside),
    }


def request_summary(r: airlock.ExportRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "project": r.project_id,
        "title": r.title,
        "author": r.author,
        "state": r.state,
        "updated_at": r.updated_at,
    }


def custodian_usage(state, person: Person) -> dict[str, Any]:
    permissions.check_has_role(person, "custodian", "see the use of their datasets")
    using = [
        p
        for p in projects.listing(state.db)
        if person.custodian_of & set(p.spec_object().custodians)
    ]
    ids = [p.id for p in using]
    with state.db.read() as session:
        events = [
            {k: e[k] for k in ("seq", "time", "actor", "action", "object_id")}
            for e in audit.events(session, object_type="project")
            if e["object_id"] in ids
        ]
        from tre import curated

        deliveries = (
            session.execute(
                sa.select(curated.Delivery).where(
                    curated.Delivery.custodian.in_(sorted(person.custodian_of))
                )
            )
            .scalars()
            .all()
        )
    return {
        "custodian_of": sorted(person.custodian_of),
        "projects": [project_summary(p) for p in using],
        "deliveries": [
            {"name": d.name, "received_at": d.received_at, "state": d.state, "rows": d.rows}
            for d in deliveries
        ],
        "audit": events[-200:],
    }


def users(state) -> list[dict[str, Any]]:
    from keycloak.exceptions import KeycloakError

    from tre.identity import groups

    try:
        admin = groups.admin_client(state.settings)
        out = []
        for user in admin.get_users({}):
            if user["username"].startswith("service-account-"):
                continue
            roles = [r["name"] for r in admin.get_realm_roles_of_user(user["id"])]
            groups = [g["name"] for g in admin.get_user_groups(user["id"])]
            out.append(
                {
                    "username": user["username"],
                    "enabled": user.get("enabled", True),
                    "roles": sorted(r for r in roles if not r.startswith("default-")),
                    "groups": sorted(groups),
                }
            )
        return sorted(out, key=lambda u: u["username"])
    except (KeycloakError, OSError) as e:
        raise ServiceUnavailable(f"Keycloak cannot list users: {e}") from None
