"""`tre project`: applications, decisions, provisioning and the rest of a project's life."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tre.cli import Context, cli, home_option, pass_context
from tre.exceptions import InvalidInput


def _person(actor: str | None, needed: bool = True):
    from tre.people import local_person

    if actor is None:
        if needed:
            raise InvalidInput("Say who is acting with --as USER (e.g. --as alice).")
        return None
    return local_person(actor)


as_option = click.option(
    "--as", "actor", metavar="USER", help="Who is acting (a user of the local realm)."
)


@cli.group("project")
def project_group() -> None:
    """Project applications, custodians' decisions, provisioning, suspension, closure."""


@project_group.command("submit")
@home_option
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@as_option
@pass_context
def project_submit(ctx: Context, spec_file: Path, actor: str | None) -> None:
    """Submit an application (a YAML specification) to the custodians."""
    from tre import projects
    from tre.projects import spec

    project = projects.submit(ctx.database(), spec.load(spec_file), _person(actor))
    custodians = ", ".join(project.spec_object().custodians)
    click.echo(f"Submitted project {project.id}: {project.title}")
    click.echo(f"It now waits for the decision of each custodian concerned: {custodians}.")


@project_group.command("list")
@home_option
@as_option
@pass_context
def project_list(ctx: Context, actor: str | None) -> None:
    """List projects (those USER may see, with --as)."""
    from tre import projects

    rows = projects.listing(ctx.database(), _person(actor, needed=False))
    if not rows:
        click.echo("No projects.")
    for p in rows:
        click.echo(f"{p.id:<24} {p.state:<12} ends {p.end_date}  {p.title}")


@project_group.command("show")
@home_option
@click.argument("project_id")
@as_option
@click.option("--json", "as_json", is_flag=True, help="Print the project as JSON.")
@pass_context
def project_show(ctx: Context, project_id: str, actor: str | None, as_json: bool) -> None:
    """Show a project: application, state, decisions, approved extract."""
    from tre import projects
    from tre.projects.lifecycle import OWNERS

    db = ctx.database()
    viewer = _person(actor, needed=False)
    project = projects.get(db, project_id, viewer)
    decisions = projects.decisions(db, project_id)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": project.id,
                    "state": project.state,
                    "spec": project.spec,
                    "approved": project.approved_spec,
                    "decisions": [d.summary() for d in decisions],
                },
                indent=2,
            )
        )
        return
    spec = project.spec_object()
    click.echo(f"{project.id}: {project.title}")
    click.echo(f"  state: {project.state} (next: {OWNERS[project.status]})")
    click.echo(
        f"  lead {spec.lead}; members {', '.join(spec.members)}; {spec.start} to {project.end_date}"
    )
    click.echo(f"  purpose: {spec.purpose}")
    for name, columns in spec.datasets.items():
        click.echo(f"  requests {name}: {', '.join(columns)}")
    for clause in spec.cohort:
        click.echo(f"  cohort: {clause.describe()}")
    click.echo(f"  privacy budget requested: ε = {spec.privacy_budget}")
    for d in decisions:
        click.echo(f"  {d.custodian}: {d.decision} by {d.decided_by} on {d.decided_at}")
        from tre.projects.approvals import Conditions

        for line in Conditions.from_dict(d.conditions).describe():
            click.echo(f"    with {line}")
        if d.reasons:
            click.echo(f"    reasons: {d.reasons}")
    if project.approved_spec:
        approved = project.approved()
        click.echo("  approved extract:")
        for name, columns in approved.datasets.items():
            click.echo(f"    {name}: {', '.join(columns)}")
        for clause in approved.cohort:
            click.echo(f"    cohort: {clause.describe()}")
        click.echo(f"    ends {approved.end}; privacy budget ε = {approved.privacy_budget}")
    if project.extracts_sha256:
        click.echo(f"  extracts: manifest SHA-256 {project.extracts_sha256}")
    if (
        viewer is not None
        and project.state == "submitted"
        and viewer.custodian_of & set(spec.custodians)
    ):
        from tre.home import Home
        from tre.projects import risk

        click.echo("  disclosure risk of the extract as requested:")
        for item in risk.report(Home(ctx.settings.home), db, spec):
            for line in item.lines():
                click.echo(f"    {line}")


@project_group.command("risk")
@home_option
@click.argument("project_id")
@as_option
@pass_context
def project_risk(ctx: Context, project_id: str, actor: str | None) -> None:
    """Disclosure-risk report of the extract as requested (for custodians)."""
    from tre import projects
    from tre.home import Home
    from tre.projects import risk

    db = ctx.database()
    project = projects.get(db, project_id, _person(actor, needed=False))
    for item in risk.report(Home(ctx.settings.home), db, project.spec_object()):
        for line in item.lines():
            click.echo(line)


@project_group.command("approve")
@home_option
@click.argument("project_id")
@as_option
@click.option("--custodian", help="Which custodian you decide for (if you hold several).")
@click.option(
    "--columns",
    "columns",
    multiple=True,
    metavar="DATASET=COL,COL",
    help="Keep only these requested columns of one of your datasets (repeatable).",
)
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="'DATASET:COLUMN OP VALUE'",
    help="Add a cohort condition on one of your datasets (repeatable).",
)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Bring the end date forward.")
@click.option("--privacy-budget", type=float, help="Lower the privacy budget ε.")
@click.option("--dask-workers", type=int, help="Fewer workers per Dask cluster.")
@click.option("--dask-worker-cores", type=int, help="Fewer cores per Dask worker.")
@click.option("--dask-worker-memory-gb", type=float, help="Less memory per Dask worker (GiB).")
@click.option("--note", default="", help="A note for the applicant.")
@pass_context
def project_approve(
    ctx,
    project_id,
    actor,
    custodian,
    columns,
    where,
    end,
    privacy_budget,
    dask_workers,
    dask_worker_cores,
    dask_worker_memory_gb,
    note,
) -> None:
    """Approve, as a custodian, the use of your datasets (optionally narrowed)."""
    from tre import projects
    from tre.projects import approvals
    from tre.projects.spec import Compute

    db = ctx.database()
    person = _person(actor)
    project = projects.get(db, project_id)
    custodian = projects.custodian_for(person, project, custodian, option="--custodian ")
    chosen = {}
    for item in columns:
        dataset, _, cols = item.partition("=")
        if not cols:
            raise InvalidInput(f"--columns {item!r}: write DATASET=COL,COL.")
        chosen[dataset] = tuple(c.strip() for c in cols.split(",") if c.strip())
    spec = project.spec_object()
    conditions = approvals.Conditions(
        columns=chosen,
        cohort=tuple(approvals.parse_cohort_condition(spec, w) for w in where),
        end=end.date() if end else None,
        privacy_budget=privacy_budget,
        compute=Compute(dask_workers, dask_worker_cores, dask_worker_memory_gb),
        note=note,
    )
    project = projects.decide(
        db, project_id, custodian, person, approve=True, conditions=conditions
    )
    click.echo(f"{custodian} approved project {project_id}; it is now {project.state}.")


@project_group.command("reject")
@home_option
@click.argument("project_id")
@as_option
@click.option("--custodian", help="Which custodian you decide for (if you hold several).")
@click.option("--reason", required=True, help="Why: shown to the applicant.")
@pass_context
def project_reject(ctx, project_id, actor, custodian, reason) -> None:
    """Reject, as a custodian, with reasons shown to the applicant."""
    from tre import projects

    db = ctx.database()
    person = _person(actor)
    custodian = projects.custodian_for(
        person, projects.get(db, project_id), custodian, option="--custodian "
    )
    projects.decide(db, project_id, custodian, person, approve=False, reasons=reason)
    click.echo(f"{custodian} rejected project {project_id}.")


@project_group.command("provision")
@home_option
@click.argument("project_id")
@as_option
@pass_context
def project_provision(ctx: Context, project_id: str, actor: str | None) -> None:
    """Build an approved project's extracts with its own pseudonyms."""
    from tre.home import Home
    from tre.projects import extracts

    home = Home(ctx.settings.home)
    _, changed = extracts.provision(home, ctx.database(), project_id, _person(actor))
    target = extracts.folder(home, project_id) / "extracts"
    if not changed:
        click.echo(f"Project {project_id} is already provisioned; nothing changed.")
        return
    manifest = json.loads((target / extracts.MANIFEST).read_text())
    click.echo(f"Provisioned project {project_id} into {target}:")
    for name, d in manifest["datasets"].items():
        click.echo(f"  {name:<11} {d['rows']:>10,} rows  {len(d['columns'])} columns")


def _admin_command(action: str, help_text: str, needs_reason: bool):
    @project_group.command(action, help=help_text)
    @home_option
    @click.argument("project_id")
    @as_option
    @click.option("--reason", required=needs_reason, default="", help="Why (in the audit log).")
    @pass_context
    def command(ctx: Context, project_id: str, actor: str | None, reason: str) -> None:
        from tre import projects

        project = projects.set_state(ctx.database(), project_id, action, _person(actor), reason)
        click.echo(f"Project {project_id} is now {project.state}.")

    return command


_admin_command("suspend", "Suspend an active project (its workspaces cannot start).", True)
_admin_command("resume", "Resume a suspended project.", False)


@project_group.command("close")
@home_option
@click.argument("project_id")
@as_option
@click.option("--reason", required=True, help="Why (in the deletion certificate).")
@pass_context
def project_close(ctx: Context, project_id: str, actor: str | None, reason: str) -> None:
    """Close: delete extracts and the project key; certify it in the audit log."""
    from tre.home import Home
    from tre.projects import extracts

    certificate = extracts.close(
        Home(ctx.settings.home), ctx.database(), project_id, _person(actor), reason
    )
    click.echo(
        f"Closed project {project_id}: {len(certificate['extract_files'])} extract files "
        "and the project key destroyed; certificate in the audit log."
    )


@project_group.command("sync-access")
@home_option
@click.argument("project_id")
@pass_context
def project_sync_access(ctx: Context, project_id: str) -> None:
    """Make the project's Keycloak group match its state (members only while active)."""
    from tre import projects
    from tre.identity import groups

    project = projects.get(ctx.database(), project_id)
    groups.sync(ctx.settings, project)
    members = groups.ProjectGroups(ctx.settings).members(project_id)
    click.echo(f"Group {groups.group_name(project_id)}: {', '.join(members) or 'no members'}.")
