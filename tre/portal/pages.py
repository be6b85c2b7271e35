"""The portal's pages: server-rendered HTML for researchers, custodians, output checkers and
administrators. Every page needs a login (a Keycloak session); every form carries the
session's CSRF token; the permission functions guard each action as they guard the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from tre import airlock, audit, catalog, outputs, permissions, projects
from tre.exceptions import AuthenticationFailed, InvalidInput, TREError
from tre.outputs import privacy
from tre.people import Person
from tre.portal import views
from tre.portal.api import MAX_ID, Id
from tre.portal.auth import LOGIN_COOKIE, SESSION_COOKIE
from tre.portal.computing import computing, quickly
from tre.projects import approvals, extracts, risk, spec
from tre.projects.spec import MAX_COMPUTE, Compute

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


def _session(request: Request):
    session = request.app.state.auth.session_of(request)
    if session is None:
        raise LoginRequired(request.url.path)
    return session


def _render(
    request: Request, template: str, session=None, status: int = 200, **context
) -> HTMLResponse:
    person = request.app.state.auth.person_of(session) if session else None
    return request.app.state.templates.TemplateResponse(
        request,
        template,
        {"person": person, "csrf": session.csrf if session else "", "nav": _nav(person), **context},
        status_code=status,
    )


def _nav(person: Person | None) -> list[tuple[str, str]]:
    if person is None:
        return []
    items = [("/", "Home"), ("/catalog", "Catalog")]
    if person.has_role("researcher"):
        items += [("/projects", "My projects"), ("/projects/apply", "Apply")]
    if person.has_role("custodian"):
        items += [("/decisions", "Decisions"), ("/usage", "Use of my data")]
    if person.has_role("output-checker"):
        items += [("/review", "Review queue")]
    if person.has_role("tre-admin"):
        items += [("/admin", "Administration")]
    return items


def _form_person(request: Request, csrf: str) -> Person:
    """The person behind a form, once its CSRF token is checked."""
    session = _session(request)
    request.app.state.auth.check_csrf(session, csrf)
    return request.app.state.auth.person_of(session)


def _back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- login ------------------------------------------------------------------------------------


@router.get("/login")
def login(request: Request, next: str = "/") -> Response:
    url, cookie = request.app.state.auth.login_redirect(next)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=600,
        httponly=True,
        samesite="lax",
        secure=request.app.state.auth.secure,
    )
    return response


@router.get("/auth/callback")
def callback(request: Request, code: str = "", state: str = "") -> Response:
    if not code:
        raise AuthenticationFailed("Keycloak did not log you in. Try again.")
    token, next_url = request.app.state.auth.callback(
        code, state, request.cookies.get(LOGIN_COOKIE)
    )
    response = RedirectResponse(next_url, status_code=303)
    response.delete_cookie(LOGIN_COOKIE)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.app.state.auth.secure,
        max_age=8 * 3600,
    )
    return response


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    _form_person(request, csrf)
    request.app.state.auth.close_session(request)
    response = RedirectResponse(request.app.state.auth.logout_url(), status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- everyone ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    session = request.app.state.auth.session_of(request)
    if session is None:
        return _render(request, "welcome.html")
    person = request.app.state.auth.person_of(session)
    state = request.app.state
    context: dict[str, Any] = {}
    if person.has_role("researcher"):
        context["mine"] = [
            views.project_summary(p) for p in projects.member_of(state.db, person.username)
        ]
    if person.custodian_of:
        context["to_decide"] = _awaiting(state, person)
    if person.has_role("output-checker"):
        context["queue"] = airlock.queue(state.db, person, limit=10)
    return _render(request, "home.html", session, **context)


@router.get("/catalog", response_class=HTMLResponse)
def catalog_page(request: Request) -> Response:
    session = _session(request)
    custodians = [
        (c, [views.dataset_summary(d) for d in c.datasets]) for c in catalog.CUSTODIANS.values()
    ]
    return _render(
        request, "catalog.html", session, custodians=custodians, version=catalog.CATALOG_VERSION
    )


@router.get("/catalog/{dataset}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset: str) -> Response:
    session = _session(request)
    return _render(
        request, "dataset.html", session, dataset=views.dataset_detail(catalog.dataset(dataset))
    )


@router.get("/catalog.jsonld")
def catalog_jsonld(request: Request) -> Response:
    _session(request)
    from fastapi.responses import JSONResponse

    from tre.portal import dcat

    return JSONResponse(
        dcat.document(request.app.state.settings.portal_url), media_type="application/ld+json"
    )


# -- projects ---------------------------------------------------------------------------------


@router.get("/projects", response_class=HTMLResponse)
def project_list(request: Request) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    rows = [views.project_summary(p) for p in projects.listing(request.app.state.db, person)]
    return _render(request, "projects.html", session, projects=rows)


@router.get("/projects/apply", response_class=HTMLResponse)
def apply_page(request: Request) -> Response:
    session = _session(request)
    permissions.check_has_role(
        request.app.state.auth.person_of(session), "researcher", "apply for a project"
    )
    example = (request.app.state.repo / "projects" / "fsm-ae.yaml").read_text()
    return _render(request, "apply.html", session, example=example, text="")


@router.post("/projects/apply")
def apply(request: Request, csrf: str = Form(""), text: str = Form("")) -> Response:
    person = _form_person(request, csrf)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidInput(f"The application is not valid YAML: {e}") from None
    project = projects.submit(
        request.app.state.db, spec.ProjectSpec.from_dict(data, "the application"), person
    )
    return _back(f"/projects/{project.id}")


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(request: Request, project_id: str) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    state = request.app.state
    project = projects.get(state.db, project_id, person)
    detail = views.project_detail(state, project)
    for decision in detail["decisions"]:
        decision["compute"] = Compute(**decision["conditions"].get("compute", {})).describe()
    application = project.spec_object()
    context: dict[str, Any] = {
        "project": detail,
        "application": application,
        # What was asked, the TRE's defaults where it asked nothing.
        "compute": application.compute.granted(state.settings),
    }
    if project.approved_spec is not None:
        context["granted_compute"] = project.approved().compute.granted(
            state.settings, application.compute
        )
    concerned = sorted(person.custodian_of & set(application.custodians))
    decided = {d["custodian"] for d in detail["decisions"]}
    context["deciding"] = (
        [c for c in concerned if c not in decided]
        if (project.state == "submitted" and person.username not in project.members())
        else []
    )
    if project.state == "submitted" and permissions.can_see_risk(person, project):
        context["risk"] = risk.report(state.home, state.db, application)
    if person.username in project.members():
        context["outputs"] = [
            views.output_summary(o) for o in outputs.of_project(state.db, project_id)
        ]
        context["requests"] = [
            views.request_summary(r) for r in airlock.of_project(state.db, project_id)
        ]
    if permissions.can_administer(person, ""):
        context["administration"] = extracts.ADMINISTRATION
    return _render(request, "project.html", session, **context)


@router.post("/projects/{project_id}/decision")
async def decide(request: Request, project_id: str) -> Response:
    form = await request.form()
    person = _form_person(request, str(form.get("csrf", "")))
    state = request.app.state
    project = projects.get(state.db, project_id, person)
    application = project.spec_object()
    custodian = str(form.get("custodian", ""))
    columns = {}
    for dataset in application.datasets_of(custodian):
        chosen = [str(c) for c in form.getlist(f"columns.{dataset}")]
        if set(chosen) != set(application.datasets[dataset]):
            columns[dataset] = tuple(chosen)
    end, budget = str(form.get("end", "")), str(form.get("privacy_budget", ""))
    sizes = {k: str(form.get(f"compute.{k}", "")).strip() for k in MAX_COMPUTE}
    try:
        conditions = approvals.Conditions(
            columns=columns,
            end=dt.date.fromisoformat(end) if end else None,
            privacy_budget=float(budget) if budget else None,
            compute=Compute(
                **{k: (float(v) if "memory" in k else int(v)) for k, v in sizes.items() if v}
            ),
            note=str(form.get("note", "")),
        )
    except ValueError:
        raise InvalidInput(
            "The end date is YYYY-MM-DD, the budget and memory numbers, workers and cores whole "
            "numbers."
        ) from None
    projects.decide(
        state.db,
        project_id,
        custodian,
        person,
        approve=form.get("decision") == "approve",
        conditions=conditions,
        reasons=str(form.get("reasons", "")),
    )
    return _back(f"/projects/{project_id}")


@router.post("/projects/{project_id}/action/{action}")
async def project_action(
    request: Request, project_id: str, action: str, csrf: str = Form(""), reason: str = Form("")
) -> Response:
    person = await quickly(_form_person, request, csrf)
    state = request.app.state
    await computing(extracts.administer, state.home, state.db, project_id, action, person, reason)
    return _back(f"/projects/{project_id}")


@router.get("/outputs/{output_id}", response_class=HTMLResponse)
def output_page(request: Request, output_id: Id) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    output = airlock.viewable_output(request.app.state.db, output_id, person)
    project = projects.get(request.app.state.db, output.project_id)
    return _render(
        request,
        "output.html",
        session,
        output=views.output_detail(output, person, project),
        project=views.project_summary(project),
    )


# -- the airlock ------------------------------------------------------------------------------


@router.post("/requests")
def create_request(
    request: Request, csrf: str = Form(""), project: str = Form(""), title: str = Form("")
) -> Response:
    person = _form_person(request, csrf)
    created = airlock.create(request.app.state.db, project, title, person)
    return _back(f"/requests/{created.id}")


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, request_id: Id) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    state = request.app.state
    detail, export, project = airlock.view_with_records(state.db, request_id, person)
    members = project.members()
    context: dict[str, Any] = {"request_": detail, "author": person.username == export.author}
    context["can_review"] = permissions.can_review(person, export, members) and (
        export.state == "in_review"
    )
    if context["author"]:
        context["available"] = [
            views.output_summary(o) for o in outputs.of_project(state.db, export.project_id)
        ]
    if context["can_review"] or person.has_role("output-checker"):
        context["earlier"] = [
            views.output_summary(o)
            for o in outputs.released(state.db, export.project_id, with_results=False)
        ]
    context["can_revoke"] = permissions.can_revoke(person) and export.state in (
        "approved",
        "released",
    )
    context["can_download"] = permissions.can_download(person, export, project)
    return _render(request, "request.html", session, **context)


@router.post("/requests/{request_id}/outputs")
def put_output(
    request: Request,
    request_id: Id,
    csrf: str = Form(""),
    output_id: int = Form(..., ge=1, le=MAX_ID),
    description: str = Form(""),
    slot: str = Form(""),
) -> Response:
    person = _form_person(request, csrf)
    airlock.put_output(
        request.app.state.db,
        request_id,
        output_id,
        description,
        person,
        _slot(slot),
    )
    return _back(f"/requests/{request_id}")


def _slot(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise InvalidInput(f"{text!r} is not the number of an output of the request.")
    return int(text)


@router.post("/requests/{request_id}/{action}")
async def request_action(
    request: Request, request_id: Id, action: str, csrf: str = Form(""), reason: str = Form("")
) -> Response:
    person = await quickly(_form_person, request, csrf)
    state = request.app.state
    if action == "submit":
        await computing(airlock.submit, state.home, state.db, request_id, person)
    elif action == "withdraw":
        await quickly(airlock.withdraw, state.db, request_id, person)
    elif action == "revoke":
        await quickly(airlock.revoke, state.home, state.db, request_id, person, reason)
    else:
        raise InvalidInput(f"Unknown action {action!r}.")
    return _back(f"/requests/{request_id}")


@router.post("/requests/{request_id}/outputs/{slot}/reviews")
def vote(
    request: Request,
    request_id: Id,
    slot: Id,
    csrf: str = Form(""),
    vote: str = Form(""),
    comment: str = Form(""),
    visibility: str = Form("researcher"),
) -> Response:
    person = _form_person(request, csrf)
    state = request.app.state
    airlock.review(state.home, state.db, request_id, slot, vote, comment, person, visibility)
    return _back(f"/requests/{request_id}")


@router.get("/requests/{request_id}/outputs/{slot}/download")
def download(request: Request, request_id: Id, slot: Id) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    path = airlock.download(request.app.state.home, request.app.state.db, request_id, slot, person)
    return FileResponse(path, filename=path.name)


# -- checkers, custodians, administrators ------------------------------------------------------


@router.get("/review", response_class=HTMLResponse)
def review_queue(request: Request, page: int = 1) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    items = airlock.queue(request.app.state.db, person, limit=50, offset=(max(page, 1) - 1) * 50)
    return _render(request, "review.html", session, items=items, page=page)


def _awaiting(state, person: Person) -> list[dict[str, Any]]:
    out = []
    for p in projects.listing(state.db, person):
        if p.state != "submitted" or person.username in p.members():
            continue
        decided = {d.custodian for d in projects.decisions(state.db, p.id)}
        if (person.custodian_of & set(p.spec_object().custodians)) - decided:
            out.append(views.project_summary(p))
    return out


@router.get("/decisions", response_class=HTMLResponse)
def decisions_page(request: Request) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    permissions.check_has_role(person, "custodian", "decide on applications")
    return _render(request, "decisions.html", session, items=_awaiting(request.app.state, person))


@router.get("/usage", response_class=HTMLResponse)
def usage_page(request: Request) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    return _render(
        request, "usage.html", session, usage=views.custodian_usage(request.app.state, person)
    )


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    session = _session(request)
    person = request.app.state.auth.person_of(session)
    permissions.check_can_administer(person, "see the administration page")
    state = request.app.state
    verification = audit.verify(state.db, store=state.home.checkpoints)
    try:
        users = views.users(state)
    except TREError as e:
        users, users_error = [], e.message
    else:
        users_error = ""
    budgets = {p.id: privacy.remaining(state.db, p.id) for p in projects.listing(state.db)}
    return _render(
        request,
        "admin.html",
        session,
        projects=[views.project_summary(p) for p in projects.listing(state.db)],
        verification=verification,
        users=users,
        users_error=users_error,
        budgets=budgets,
    )
