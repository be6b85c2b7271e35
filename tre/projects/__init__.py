"""Projects: applications, custodians' decisions, provisioning, suspension, expiry, closure.

Every function that changes a project names the person acting (``by``), checks their right to
act in :mod:`tre.permissions`, takes the transition from :mod:`tre.projects.lifecycle`, and
writes that transition's audit event in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from tre import audit, permissions, texts
from tre.db import Base, Database
from tre.exceptions import InvalidInput, NotFound, PermissionDenied
from tre.people import SYSTEM, Person
from tre.projects import approvals
from tre.projects.lifecycle import LIVE, State, transition
from tre.projects.spec import ProjectSpec


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(sa.String(30), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(300))
    lead: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    spec: Mapped[dict] = mapped_column(sa.JSON)
    approved_spec: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)
    end_date: Mapped[str] = mapped_column(sa.String(10))
    created_at: Mapped[str] = mapped_column(sa.String(32))
    updated_at: Mapped[str] = mapped_column(sa.String(32))
    extracts_sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    #: What the extracts hold, by dataset: rows and column names (the portal shows it).
    extracts_summary: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)

    def spec_object(self) -> ProjectSpec:
        return ProjectSpec.from_dict(self.spec)

    def approved(self) -> ProjectSpec:
        if self.approved_spec is None:
            raise InvalidInput(f"Project {self.id} has not been approved.")
        return ProjectSpec.from_dict(self.approved_spec)

    def members(self) -> tuple[str, ...]:
        return tuple(self.spec["members"])

    @property
    def status(self) -> State:
        return State(self.state)


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    custodian: Mapped[str] = mapped_column(sa.String(32))
    decision: Mapped[str] = mapped_column(sa.String(16))
    decided_by: Mapped[str] = mapped_column(sa.String(64))
    decided_at: Mapped[str] = mapped_column(sa.String(32))
    conditions: Mapped[dict] = mapped_column(sa.JSON)
    reasons: Mapped[str] = mapped_column(sa.Text)

    __table_args__ = (sa.UniqueConstraint("project_id", "custodian"),)

    def summary(self) -> dict[str, Any]:
        return {
            "custodian": self.custodian,
            "decision": self.decision,
            "by": self.decided_by,
            "at": self.decided_at,
            "conditions": self.conditions,
            "reasons": self.reasons,
        }


#: Called with the project after its access changes (provisioned, suspended, resumed, expired,
#: closed); the CLI and the portal register the Keycloak group sync here when it is on.
ACCESS_HOOKS: list[Callable[[Project], None]] = []


def install_access_hooks(settings: Callable[[], Any]) -> None:
    """What a change of a project's access updates besides the database: its Keycloak group
    (with TRE_KEYCLOAK_SYNC on), the OS accounts of its workspaces (those no longer allowed
    lose the project's group and their processes), then its running workspaces (stopped once
    it is no longer provisioned). ``settings`` gives the settings in force when a project
    changes."""
    from tre import hub, privileged
    from tre.identity import groups

    def keycloak_group(project: Project) -> None:
        if settings().keycloak_sync:
            groups.sync(settings(), project)

    def accounts(project: Project) -> None:
        if project.status is State.CLOSED:
            return  # closure removed them
        keep = list(project.members()) if project.status is State.PROVISIONED else []
        privileged.call(settings().home, "revoke_access", project=project.id, keep=keep)

    def workspaces(project: Project) -> None:
        hub.stop_workspaces(settings(), project)

    ACCESS_HOOKS[:] = [keycloak_group, accounts, workspaces]


def access_changed(project: Project) -> None:
    for hook in ACCESS_HOOKS:
        hook(project)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _event(by: Person, action: str, project_id: str, details: dict[str, Any]) -> audit.Event:
    return audit.Event(by.username, by.main_role, action, "project", project_id, details)


def _lock(session: Session, project_id: str) -> Project:
    project = session.execute(
        sa.select(Project).where(Project.id == project_id).with_for_update()
    ).scalar_one_or_none()
    if project is None:
        raise NotFound(f"There is no project {project_id!r}. `tre project list` shows them.")
    return project


def _move(
    session: Session,
    project: Project,
    action: str,
    by: Person,
    details: dict,
    last_approval: bool = False,
) -> None:
    step = transition(project.status, action, last_approval=last_approval)
    project.state = step.target.value
    project.updated_at = now()
    audit.record(session, _event(by, step.event, project.id, details))


# -- reading -----------------------------------------------------------------------------------


def get(db: Database, project_id: str, viewer: Person | None = None) -> Project:
    expire_due(db)
    with db.read() as session:
        project = session.get(Project, project_id)
        if project is None:
            raise NotFound(f"There is no project {project_id!r}. `tre project list` shows them.")
        if viewer is not None:
            permissions.check_can_view_project(viewer, project)
        return project


def decisions(db: Database, project_id: str) -> list[Approval]:
    with db.read() as session:
        return list(
            session.execute(
                sa.select(Approval).where(Approval.project_id == project_id).order_by(Approval.id)
            ).scalars()
        )


def listing(db: Database, viewer: Person | None = None) -> list[Project]:
    expire_due(db)
    with db.read() as session:
        projects = session.execute(sa.select(Project).order_by(Project.id)).scalars().all()
    if viewer is None:
        return list(projects)
    return [p for p in projects if permissions.can_view_project(viewer, p)]


def member_of(db: Database, username: str) -> list[Project]:
    return [p for p in listing(db) if username in p.members()]


# -- changing ----------------------------------------------------------------------------------


def submit(db: Database, spec: ProjectSpec, by: Person) -> Project:
    """Record the application (draft) and submit it to the custodians, in one transaction."""
    permissions.check_can_submit(by, spec.lead)
    if spec.end <= dt.date.today():
        raise InvalidInput(f"The project would end on {spec.end}, which has passed.")
    with db.write() as session:
        if session.get(Project, spec.id) is not None:
            raise InvalidInput(
                f"A project {spec.id!r} exists already. Choose another id for a new application."
            )
        stamp = now()
        project = Project(
            id=spec.id,
            title=spec.title,
            lead=spec.lead,
            state=State.DRAFT.value,
            spec=spec.as_dict(),
            end_date=spec.end.isoformat(),
            created_at=stamp,
            updated_at=stamp,
        )
        session.add(project)
        session.flush()
        audit.record(session, _event(by, "project.drafted", spec.id, {"title": spec.title}))
        _move(
            session,
            project,
            "submit",
            by,
            {
                "datasets": {d: list(c) for d, c in spec.datasets.items()},
                "custodians": list(spec.custodians),
                "members": list(spec.members),
            },
        )
        return project


def custodian_for(person: Person, project: Project, custodian: str | None, option: str = "") -> str:
    """For which custodian ``person`` decides: the one named, else their only custodian among
    the project's. ``option`` is how the caller names the choice (``--custodian `` on the
    command line)."""
    if custodian:
        return custodian
    concerned = sorted(person.custodian_of & set(project.spec_object().custodians))
    if len(concerned) == 1:
        return concerned[0]
    if not concerned:
        raise PermissionDenied(
            f"{person.username} is not a custodian of any dataset project {project.id} requests."
        )
    raise InvalidInput(f"Say for which custodian you decide: {option}{' or '.join(concerned)}.")


def decide(
    db: Database,
    project_id: str,
    custodian: str,
    by: Person,
    *,
    approve: bool,
    conditions: approvals.Conditions | None = None,
    reasons: str = "",
) -> Project:
    """A custodian's decision on their datasets in the project."""
    expire_due(db)
    with db.write() as session:
        project = _lock(session, project_id)
        permissions.check_can_decide(by, project, custodian)
        transition(
            project.status,
            "approve" if approve else "reject",
            last_approval=False if not approve else _others_approved(session, project, custodian),
        )
        if session.execute(
            sa.select(Approval).where(
                Approval.project_id == project_id, Approval.custodian == custodian
            )
        ).first():
            raise InvalidInput(f"The custodian {custodian} has already decided on {project_id}.")
        spec = project.spec_object()
        conditions = conditions or approvals.Conditions()
        if approve:
            approvals.check_narrows(spec, custodian, conditions)
        elif len(reasons.strip()) < 10:
            raise InvalidInput("Say why the application is rejected (at least 10 characters).")
        texts.at_most(reasons, "reasons")
        texts.at_most(conditions.note, "note")
        session.add(
            Approval(
                project_id=project_id,
                custodian=custodian,
                decision="approved" if approve else "rejected",
                decided_by=by.username,
                decided_at=now(),
                conditions=conditions.as_dict(),
                reasons=reasons.strip(),
            )
        )
        session.flush()
        details = {"custodian": custodian, "conditions": conditions.as_dict()}
        if not approve:
            _move(session, project, "reject", by, {**details, "reasons": reasons.strip()})
            return project
        decided = (
            session.execute(sa.select(Approval).where(Approval.project_id == project_id))
            .scalars()
            .all()
        )
        last = {a.custodian for a in decided if a.decision == "approved"} == set(spec.custodians)
        if last:
            effective = approvals.effective(
                spec, [approvals.Conditions.from_dict(a.conditions) for a in decided]
            )
            project.approved_spec = effective.as_dict()
            project.end_date = effective.end.isoformat()
        _move(session, project, "approve", by, details, last_approval=last)
        return project


def _others_approved(session: Session, project: Project, custodian: str) -> bool:
    approved = {
        a.custodian
        for a in session.execute(
            sa.select(Approval).where(
                Approval.project_id == project.id, Approval.decision == "approved"
            )
        ).scalars()
    }
    return approved | {custodian} == set(project.spec_object().custodians)


def set_state(db: Database, project_id: str, action: str, by: Person, reason: str = "") -> Project:
    """Suspend or resume (administrators)."""
    permissions.check_can_administer(by, f"{action} a project")
    texts.at_most(reason, "reason")
    expire_due(db)
    with db.write() as session:
        project = _lock(session, project_id)
        _move(session, project, action, by, {"reason": reason} if reason else {})
    access_changed(project)
    return project


audit.declare_actions(
    {
        "workspace.file_refused": "A workspace's Jupyter server refused to hand a file of the "
        "researcher's folder to the browser (data, or too large); its name and size are kept.",
        "workspace.refusals_throttled": "More refusals were reported for a researcher than a "
        "workspace's server makes in a minute: those past the limit that minute are not "
        "itemised (recorded once a minute).",
    }
)


#: The most refusals one researcher's workspaces record per minute (past it, they are refused:
#: the audit log is no place to flood).
REFUSALS_PER_MINUTE = 60


def record_refusal(db: Database, project_id: str, by: Person, file: str, size: int, why: str):
    """A workspace's Jupyter server refused ``by`` a file of their folder (data, or too large):
    recorded with its name and size, never its content."""
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with db.write() as session:
        project = _lock(session, project_id)
        permissions.check_can_report_refusal(by, project)

        def recorded(action: str, *more) -> int:
            """How many ``action`` events of ``by`` in the last minute."""
            found = audit.AuditEventRow
            query = sa.select(sa.func.count()).where(
                found.action == action, found.actor == by.username, found.time >= since, *more
            )
            return session.execute(query).scalar_one()

        if recorded("workspace.file_refused") < REFUSALS_PER_MINUTE:
            details = {"file": file[-1000:], "bytes": size, "why": why}
            audit.record(session, _event(by, "workspace.file_refused", project_id, details))
            return
        # Past the limit (a kernel posting refusals of its own, say, to drown the server's):
        # the flood itself is recorded, once a minute, so no refusal goes unseen.
        throttled = recorded(
            "workspace.refusals_throttled", audit.AuditEventRow.object_id == project_id
        )
        if not throttled:
            details = {"per_minute": REFUSALS_PER_MINUTE}
            audit.record(session, _event(by, "workspace.refusals_throttled", project_id, details))
    raise InvalidInput(
        f"More than {REFUSALS_PER_MINUTE} refusals a minute: the workspace's server is not "
        "opening this many files on its own; those past it are recorded together."
    )


def expire_due(db: Database, today: dt.date | None = None) -> list[str]:
    """Expire every live project past its end date. Any command touching projects calls it."""
    today = today or dt.date.today()
    with db.write() as session:
        due = (
            session.execute(
                sa.select(Project)
                .where(Project.state.in_([s.value for s in LIVE]))
                .where(Project.end_date < today.isoformat())
                .with_for_update()
            )
            .scalars()
            .all()
        )
        for project in due:
            _move(session, project, "expire", SYSTEM, {"end_date": project.end_date})
    for project in due:
        access_changed(project)
    return [p.id for p in due]


def record_provisioned(
    session: Session,
    project: Project,
    by: Person,
    manifest_sha256: str,
    details: dict,
    summary: dict | None = None,
) -> None:
    project.extracts_sha256 = manifest_sha256
    project.extracts_summary = summary
    _move(session, project, "provision", by, {**details, "manifest_sha256": manifest_sha256})


def record_closed(session: Session, project: Project, by: Person, certificate: dict) -> None:
    _move(session, project, "close", by, certificate)


def lock(session: Session, project_id: str) -> Project:
    return _lock(session, project_id)


def ids(projects: Iterable[Project]) -> list[str]:
    return [p.id for p in projects]
