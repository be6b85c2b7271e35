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
        raise PermissionDenied(f"Only a user with the {role} role can {doing}; {person.username} "
                               "does not have it.")  # fmt: skip


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


can_submit = _boolean(check_can_submit)
can_decide = _boolean(check_can_decide)
can_administer = _boolean(check_can_administer)
can_view_project = _boolean(check_can_view_project)
