"""The TRE's HTTP API, ``/api/v1``: JSON, bearer tokens from Keycloak, for everything the
pages do. The permission functions of :mod:`tre.permissions` guard each call, as they guard
the pages; a refused call answers with the sentence saying why."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from tre import airlock, audit, catalog, outputs, permissions, projects
from tre.exceptions import InvalidInput, NotFound
from tre.outputs import privacy, specs
from tre.people import Person
from tre.portal import dcat, views, workspaces
from tre.portal.computing import computing, quickly
from tre.projects import approvals, extracts, risk, spec
from tre.projects.spec import Compute

# From a workspace's enclave, only the calls tre.workspace makes, for its own project.
router = APIRouter(prefix="/api/v1", dependencies=[Depends(workspaces.scope)])

MAX_ID = 2**31 - 1
#: Identifiers of outputs, requests and slots in paths: positive, and within a database integer.
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def caller(request: Request) -> Person:
    return request.app.state.auth.bearer(request)


def app_state(request: Request):
    return request.app.state


# -- bodies ------------------------------------------------------------------------------------


class Decision(BaseModel):
    approve: bool
    custodian: str | None = None
    columns: dict[str, list[str]] = Field(default_factory=dict)
    cohort: list[str] = Field(default_factory=list, description="'DATASET:COLUMN OP VALUE'")
    end: dt.date | None = None
    privacy_budget: float | None = Field(default=None, gt=0)
    dask_workers: int | None = Field(default=None, description="Fewer Dask workers per cluster")
    dask_worker_cores: int | None = Field(default=None, description="Fewer cores per worker")
    dask_worker_memory_gb: float | None = Field(default=None, description="Less memory (GiB)")
    note: str = ""
    reasons: str = ""


class Reason(BaseModel):
    reason: str = ""


class NewRequest(BaseModel):
    project: str
    title: str


class PutOutput(BaseModel):
    output_id: int = Field(ge=1, le=MAX_ID)
    description: str
    slot: int | None = Field(default=None, ge=1, le=MAX_ID)


class Refusal(BaseModel):
    file: str = Field(min_length=1, max_length=4096)
    bytes: int = Field(ge=0, le=1 << 50)
    why: str = Field(min_length=1, max_length=200)


class Vote(BaseModel):
    vote: Literal["approve", "request_changes", "reject"]
    comment: str = ""
    visibility: Literal["researcher", "checkers"] = "researcher"


# -- who and what -----------------------------------------------------------------------------


@router.get("/me", summary="Who the token belongs to")
def me(person: Person = Depends(caller)) -> dict[str, Any]:
    return {
        "username": person.username,
        "name": person.name,
        "roles": sorted(person.roles),
        "custodian_of": sorted(person.custodian_of),
    }


@router.get("/catalog", summary="Datasets and columns (metadata only)")
def catalog_index(person: Person = Depends(caller)) -> list[dict[str, Any]]:
    return [views.dataset_summary(d) for d in catalog.DATASETS.values()]


@router.get("/catalog/{dataset}", summary="One dataset's columns")
def catalog_dataset(dataset: str, person: Person = Depends(caller)) -> dict[str, Any]:
    return views.dataset_detail(catalog.dataset(dataset))


@router.get("/catalog.jsonld", summary="The catalog as DCAT-AP JSON-LD")
def catalog_dcat(request: Request, person: Person = Depends(caller)) -> dict[str, Any]:
    return dcat.document(request.app.state.settings.portal_url)


# -- projects ---------------------------------------------------------------------------------


@router.get("/projects", summary="Projects the caller may see")
def project_list(state=Depends(app_state), person: Person = Depends(caller)) -> list[dict]:
    return [views.project_summary(p) for p in projects.listing(state.db, person)]


@router.post("/projects", status_code=201, summary="Submit an application")
def project_submit(
    body: dict[str, Any], state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    project = projects.submit(state.db, spec.ProjectSpec.from_dict(body, "the application"), person)
    return views.project_summary(project)


@router.get("/projects/{project_id}", summary="A project with its decisions and budget")
def project_detail(
    project_id: str, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    return views.project_detail(state, projects.get(state.db, project_id, person))


@router.get("/projects/{project_id}/risk", summary="Disclosure risk of the extract as requested")
def project_risk(
    project_id: str, state=Depends(app_state), person: Person = Depends(caller)
) -> list[dict[str, Any]]:
    project = projects.get(state.db, project_id, person)
    permissions.check_can_see_risk(person, project)
    return [vars(r) for r in risk.report(state.home, state.db, project.spec_object())]


@router.post("/projects/{project_id}/decision", summary="A custodian's decision")
def project_decide(
    project_id: str, body: Decision, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    project = projects.get(state.db, project_id, person)
    custodian = projects.custodian_for(person, project, body.custodian)
    conditions = approvals.Conditions(
        columns={d: tuple(c) for d, c in body.columns.items()},
        cohort=tuple(
            approvals.parse_cohort_condition(project.spec_object(), w) for w in body.cohort
        ),
        end=body.end,
        privacy_budget=body.privacy_budget,
        compute=Compute(
            workers=body.dask_workers,
            worker_cores=body.dask_worker_cores,
            worker_memory_gb=body.dask_worker_memory_gb,
        ),
        note=body.note,
    )
    project = projects.decide(
        state.db,
        project_id,
        custodian,
        person,
        approve=body.approve,
        conditions=conditions,
        reasons=body.reasons,
    )
    return views.project_summary(project)


@router.get("/projects/{project_id}/outputs", summary="A project's checked outputs")
def project_outputs(
    project_id: str, state=Depends(app_state), person: Person = Depends(caller)
) -> list[dict[str, Any]]:
    return [views.output_summary(o) for o in outputs.of_project(state.db, project_id, person)]


@router.post(
    "/projects/{project_id}/outputs",
    status_code=201,
    summary="Compute and check an output from its specification",
)
async def project_output_check(
    request: Request,
    project_id: str,
    body: dict[str, Any],
    state=Depends(app_state),
    person: Person = Depends(caller),
) -> dict[str, Any]:
    workspaces.check_inside(request)
    spec = specs.parse(body)
    output, _ = await computing(outputs.check, state.home, state.db, project_id, spec, person)
    return await quickly(_output_view, state, output, person, project_id, True)


def _output_view(state, output, person: Person, project_id: str, inside: bool) -> dict[str, Any]:
    return views.output_detail(output, person, projects.get(state.db, project_id), inside)


@router.post(
    "/projects/{project_id}/dp/plan",
    summary="What a differentially private query would cost and how accurate it would be",
)
def project_dp_plan(
    project_id: str,
    body: dict[str, Any],
    state=Depends(app_state),
    person: Person = Depends(caller),
) -> dict[str, Any]:
    plan = outputs.preview_dp(state.db, project_id, _dp_spec(body), person)
    granted, left = privacy.remaining(state.db, project_id)
    return {
        "query": plan.query,
        "epsilon": plan.epsilon,
        "accuracy": plan.accuracy,
        "budget": {"granted": granted, "left": left},
    }


@router.post(
    "/projects/{project_id}/dp",
    status_code=201,
    summary="Run a differentially private query: spends its ε of the project's budget",
)
async def project_dp_run(
    request: Request,
    project_id: str,
    body: dict[str, Any],
    state=Depends(app_state),
    person: Person = Depends(caller),
) -> dict[str, Any]:
    workspaces.check_inside(request)
    spec = _dp_spec(body)
    output, _ = await computing(outputs.run_dp, state.home, state.db, project_id, spec, person)
    return await quickly(_output_view, state, output, person, project_id, True)


def _dp_spec(body: dict[str, Any]) -> specs.OutputSpec:
    spec = specs.parse(body)
    if spec.kind != "dp":
        raise InvalidInput(
            f"{spec.name} is a {spec.kind}, not a DP query: check it with "
            f"POST /projects/{{id}}/outputs."
        )
    return spec


@router.post(
    "/projects/{project_id}/workspace/refusals",
    status_code=201,
    summary="A file a workspace refused to hand to the browser (recorded in the audit log)",
)
def workspace_refusal(
    project_id: str, body: Refusal, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, str]:
    projects.record_refusal(state.db, project_id, person, body.file, body.bytes, body.why)
    return {"recorded": body.file}


@router.get("/projects/{project_id}/budget", summary="Privacy budget: granted and left")
def project_budget(
    project_id: str, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, float]:
    projects.get(state.db, project_id, person)
    granted, left = privacy.remaining(state.db, project_id)
    return {"granted": granted, "left": left}


@router.post("/projects/{project_id}/{action}", summary="Provision, suspend, resume or close")
async def project_action(
    project_id: str,
    action: Literal["provision", "suspend", "resume", "close"],
    body: Reason,
    state=Depends(app_state),
    person: Person = Depends(caller),
) -> dict[str, Any]:
    project = await computing(
        extracts.administer, state.home, state.db, project_id, action, person, body.reason
    )
    return views.project_summary(project)


@router.get("/outputs/{output_id}", summary="An output and its check")
def output_detail(
    output_id: Id, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    output = airlock.viewable_output(state.db, output_id, person)
    return views.output_detail(output, person, projects.get(state.db, output.project_id))


# -- the airlock ------------------------------------------------------------------------------


@router.post("/requests", status_code=201, summary="Start an export request")
def request_create(
    body: NewRequest, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    request = airlock.create(state.db, body.project, body.title, person)
    return airlock.view(state.db, request.id, person)


@router.get("/requests", summary="Export requests of a project")
def request_list(
    project: str = Query(...), state=Depends(app_state), person: Person = Depends(caller)
) -> list[dict[str, Any]]:
    found = projects.get(state.db, project, person)
    return [
        views.request_summary(r)
        for r in airlock.of_project(state.db, project)
        if permissions.can_view_request(person, r, found)
    ]


@router.get("/requests/{request_id}", summary="An export request as the caller may see it")
def request_detail(
    request_id: Id, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    return airlock.view(state.db, request_id, person)


@router.post("/requests/{request_id}/outputs", summary="Add (or, with slot, replace) an output")
def request_put_output(
    request_id: Id, body: PutOutput, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    airlock.put_output(state.db, request_id, body.output_id, body.description, person, body.slot)
    return airlock.view(state.db, request_id, person)


@router.post("/requests/{request_id}/submit", summary="Submit: checks run again, reviews open")
async def request_submit(
    request_id: Id, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    await computing(airlock.submit, state.home, state.db, request_id, person)
    return await quickly(airlock.view, state.db, request_id, person)


@router.post("/requests/{request_id}/withdraw", summary="Withdraw a request")
def request_withdraw(
    request_id: Id, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    airlock.withdraw(state.db, request_id, person)
    return airlock.view(state.db, request_id, person)


@router.post("/requests/{request_id}/outputs/{slot}/reviews", summary="An output checker's vote")
def request_review(
    request_id: Id,
    slot: Id,
    body: Vote,
    state=Depends(app_state),
    person: Person = Depends(caller),
) -> dict[str, Any]:
    airlock.review(
        state.home, state.db, request_id, slot, body.vote, body.comment, person, body.visibility
    )
    return airlock.view(state.db, request_id, person)


@router.post("/requests/{request_id}/revoke", summary="Revoke a release")
def request_revoke(
    request_id: Id, body: Reason, state=Depends(app_state), person: Person = Depends(caller)
) -> dict[str, Any]:
    airlock.revoke(state.home, state.db, request_id, person, body.reason)
    return views.request_summary(airlock.get(state.db, request_id))


@router.get(
    "/requests/{request_id}/outputs/{slot}/download",
    summary="Download a released file",
    response_class=FileResponse,
)
def request_download(
    request_id: Id, slot: Id, state=Depends(app_state), person: Person = Depends(caller)
):
    path = airlock.download(state.home, state.db, request_id, slot, person)
    return FileResponse(path, filename=path.name)


@router.get("/review/queue", summary="Requests waiting for the calling output checker")
def review_queue(
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0),
    state=Depends(app_state),
    person: Person = Depends(caller),
) -> list[dict]:
    return airlock.queue(state.db, person, limit, offset)


# -- custodians and administrators -------------------------------------------------------------


@router.get("/custodian/usage", summary="Projects using the caller's datasets, with their audit")
def custodian_usage(state=Depends(app_state), person: Person = Depends(caller)) -> dict:
    return views.custodian_usage(state, person)


@router.get("/audit/verify", summary="Verify the audit log (administrators)")
def audit_verify(state=Depends(app_state), person: Person = Depends(caller)) -> dict[str, Any]:
    permissions.check_can_administer(person, "verify the audit log")
    return vars(audit.verify(state.db, store=state.home.checkpoints))


@router.get("/users", summary="Users and their roles, as Keycloak reports them (administrators)")
def users(state=Depends(app_state), person: Person = Depends(caller)) -> list[dict[str, Any]]:
    permissions.check_can_administer(person, "list users")
    return views.users(state)


def not_found(_: Request) -> None:
    raise NotFound("There is no such page.")
