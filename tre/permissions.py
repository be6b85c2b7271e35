"""Who may do what, in one place.

Each ``check_can_x`` raises :class:`~tre.exceptions.PermissionDenied` with a sentence a person
can read (it becomes the 403 body and the tooltip of a disabled button); each ``can_x``
answers the same question with a bool. Deny unless allowed.
"""

from __future__ import annotations

from collections.abc import Callable

from tre.exceptions import PermissionDenied
from tre.people import Person


def _boolean(check: Callable[..., None]) -> Callable[..., bool]:
    def can(*args, **kwargs) -> bool:
        try:
            check(*args, **kwargs)
        except PermissionDenied:
            return False
        return True

    can.__doc__ = check.__doc__
    return can


def check_has_role(person: Person, role: str, doing: str) -> None:
    if not person.has_role(role):
        raise PermissionDenied(
            f"Only a user with the {role} role can {doing}; {person.username} does not have it."
        )


# -- projects ----------------------------------------------------------------------------------


def check_can_submit(person: Person, lead: str) -> None:
    """Researchers submit applications they lead."""
    check_has_role(person, "researcher", "apply for a project")
    if person.username != lead:
        raise PermissionDenied(f"Only the project's lead ({lead}) can submit its application.")


def check_can_decide(person: Person, project, custodian: str) -> None:
    """A custodian decides for their own datasets, never on a project they belong to."""
    check_has_role(person, "custodian", "approve or reject a project")
    if custodian not in person.custodian_of:
        raise PermissionDenied(
            f"{person.username} is not a custodian of {custodian}: only its custodians decide "
            "on its datasets."
        )
    if custodian not in project.spec_object().custodians:
        raise PermissionDenied(f"Project {project.id} requests no dataset of {custodian}.")
    if person.username in project.members():
        raise PermissionDenied(
            f"{person.username} is a member of project {project.id} and so cannot decide on it."
        )


def check_can_administer(person: Person, doing: str) -> None:
    """Provisioning, suspension, resumption and closure are for TRE administrators."""
    check_has_role(person, "tre-admin", doing)


def check_can_view_project(person: Person, project) -> None:
    """Members, the custodians concerned and administrators see a project."""
    if person.has_role("tre-admin") or person.username in project.members():
        return
    if person.custodian_of & set(project.spec_object().custodians):
        return
    raise PermissionDenied(
        f"{person.username} is neither a member of project {project.id}, nor a custodian of "
        "its data, nor an administrator."
    )


def check_can_see_risk(person: Person, project) -> None:
    """The disclosure-risk report of an application is for its custodians and administrators."""
    check_can_view_project(person, project)
    if not (
        person.has_role("tre-admin") or person.custodian_of & set(project.spec_object().custodians)
    ):
        raise PermissionDenied("The disclosure-risk report is for custodians and administrators.")


def check_can_view_output(person: Person, project, submitted: bool) -> None:
    """Those who see the project see its outputs; output checkers outside the project see the
    outputs ``submitted`` in an export request."""
    if submitted and person.has_role("output-checker") and person.username not in project.members():
        return
    try:
        check_can_view_project(person, project)
    except PermissionDenied:
        raise PermissionDenied(
            "Only the project's members, custodians and administrators see its outputs, and "
            "output checkers those submitted for export."
        ) from None


def sees_unreviewed_values(person: Person, project, released: bool) -> bool:
    """Whether ``person`` sees the values an automatic check left for review (a minimum, a
    maximum, an empty cell, a file's cells) before the output is released: only output checkers
    outside the project. Everyone else sees them once two checkers have released them, so the
    portal is never a way round the airlock."""
    return released or (
        person.has_role("output-checker") and person.username not in project.members()
    )


# -- the airlock -------------------------------------------------------------------------------


def check_can_request_export(person: Person, project) -> None:
    """Researchers of an active project ask for exports of its outputs."""
    check_has_role(person, "researcher", "request an export")
    if person.username not in project.members():
        raise PermissionDenied(f"{person.username} is not a member of project {project.id}.")
    check_project_active(project, "exports are requested")


def check_can_report_refusal(person: Person, project) -> None:
    """The workspace of a researcher of an active project reports what it refused to show."""
    check_has_role(person, "researcher", "report what a workspace refused")
    if person.username not in project.members():
        raise PermissionDenied(f"{person.username} is not a member of project {project.id}.")
    check_project_active(project, "workspaces run")


def check_project_active(project, doing: str) -> None:
    """Nothing moves through the airlock of a project that is not active (suspended, expired,
    closed): not a new output, a submission, a review or a download."""
    if project.state != "provisioned":
        raise PermissionDenied(
            f"Project {project.id} is {project.state}: {doing} only while it is active. Ask a "
            "TRE administrator."
        )


def check_is_author(person: Person, request) -> None:
    if person.username != request.author:
        raise PermissionDenied(
            f"Only the author of export request #{request.id} ({request.author}) can change, "
            "submit or withdraw it."
        )


def check_can_review(person: Person, request, members: tuple[str, ...]) -> None:
    """Output checkers review requests of projects they are not part of, never their own."""
    check_has_role(person, "output-checker", "review export requests")
    if person.username == request.author:
        raise PermissionDenied("Nobody reviews their own export request.")
    if person.username in members:
        raise PermissionDenied(
            f"{person.username} is a member of project {request.project_id} and so cannot "
            "review its outputs."
        )


def check_can_view_request(person: Person, request, project) -> None:
    if person.username in project.members() or person.has_role("tre-admin"):
        return
    if (
        person.has_role("output-checker")
        and person.username not in project.members()
        and request.state != "draft"
    ):
        return
    raise PermissionDenied(
        f"{person.username} is neither a member of project {project.id} nor an output checker."
    )


def check_can_download(person: Person, request, project) -> None:
    """Released outputs are downloaded by the project's researchers."""
    if person.username not in project.members() or not person.has_role("researcher"):
        raise PermissionDenied(
            f"Only the researchers of project {project.id} download its released outputs."
        )


def check_can_revoke(person: Person) -> None:
    if not (person.has_role("tre-admin") or person.has_role("output-checker")):
        raise PermissionDenied("Only output checkers and administrators revoke a release.")


can_submit = _boolean(check_can_submit)
can_decide = _boolean(check_can_decide)
can_administer = _boolean(check_can_administer)
can_view_request = _boolean(check_can_view_request)
can_view_project = _boolean(check_can_view_project)
can_see_risk = _boolean(check_can_see_risk)
can_request_export = _boolean(check_can_request_export)
can_review = _boolean(check_can_review)
can_download = _boolean(check_can_download)
can_revoke = _boolean(check_can_revoke)
