"""The lifecycle of a project, as data: states, who owns each, and every allowed transition
with the audit event it writes. The docs draw the diagram from :data:`TRANSITIONS`; a test
checks every state is reachable and covered.
"""

from __future__ import annotations

import enum

from tre import audit, lifecycle
from tre.exceptions import InvalidTransition
from tre.lifecycle import Transition, past


class State(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    PROVISIONED = "provisioned"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    CLOSED = "closed"
    REJECTED = "rejected"


#: Who has the next move in each state.
OWNERS: dict[State, str] = {
    State.DRAFT: "the applicant (researcher), who submits it",
    State.SUBMITTED: "the custodians of the requested datasets, who each approve or reject",
    State.APPROVED: "a TRE administrator, who provisions the extracts",
    State.PROVISIONED: "the project's researchers (active); administrators may suspend or close",
    State.SUSPENDED: "a TRE administrator, who resumes or closes it",
    State.EXPIRED: "a TRE administrator, who closes it",
    State.CLOSED: "nobody: extracts and key destroyed, audit trail kept",
    State.REJECTED: "nobody: the applicant may apply again with a new specification",
}

#: States in which the project's end date still matters (and is enforced by expiry).
LIVE = frozenset({State.SUBMITTED, State.APPROVED, State.PROVISIONED, State.SUSPENDED})


TRANSITIONS: tuple[Transition, ...] = (
    Transition("draft", State.DRAFT, State.DRAFT, "project.drafted", "An application was written."),
    Transition(
        "submit",
        State.DRAFT,
        State.SUBMITTED,
        "project.submitted",
        "The applicant submitted the application to the custodians.",
    ),
    Transition(
        "approve",
        State.SUBMITTED,
        State.SUBMITTED,
        "project.custodian_approved",
        "A custodian approved the use of their datasets, possibly with conditions; "
        "others have still to decide.",
    ),
    Transition(
        "approve",
        State.SUBMITTED,
        State.APPROVED,
        "project.approved",
        "The last custodian approved: every custodian concerned has approved.",
    ),
    Transition(
        "reject",
        State.SUBMITTED,
        State.REJECTED,
        "project.rejected",
        "A custodian rejected the application, with reasons shown to the applicant.",
    ),
    Transition(
        "provision",
        State.APPROVED,
        State.PROVISIONED,
        "project.provisioned",
        "Extracts were built with per-project pseudonyms; the project is active.",
    ),
    Transition(
        "suspend",
        State.PROVISIONED,
        State.SUSPENDED,
        "project.suspended",
        "An administrator suspended the project; its workspaces cannot start.",
    ),
    Transition(
        "resume",
        State.SUSPENDED,
        State.PROVISIONED,
        "project.resumed",
        "An administrator resumed a suspended project.",
    ),
    *(
        Transition(
            "expire",
            state,
            State.EXPIRED,
            "project.expired",
            "The project passed its end date and was expired automatically.",
        )
        for state in (State.SUBMITTED, State.APPROVED, State.PROVISIONED, State.SUSPENDED)
    ),
    *(
        Transition(
            "close",
            state,
            State.CLOSED,
            "project.closed",
            "An administrator closed the project: extracts and project key destroyed, "
            "with a deletion certificate in the audit log.",
        )
        for state in (State.APPROVED, State.PROVISIONED, State.SUSPENDED, State.EXPIRED)
    ),
)

audit.declare_actions({t.event: t.meaning for t in TRANSITIONS})


def transition(state: State, action: str, *, last_approval: bool = False) -> Transition:
    """The transition ``action`` takes from ``state``, or an error saying what is possible."""
    candidates = [t for t in TRANSITIONS if t.source is state and t.action == action]
    if action == "approve" and candidates:
        candidates = [t for t in candidates if (t.target is State.APPROVED) == last_approval]
    if not candidates:
        possible = sorted({t.action for t in TRANSITIONS if t.source is state} - {"draft"})
        raise InvalidTransition(
            f"A project that is {state.value} cannot be {past(action)}. "
            + (
                f"It can be: {', '.join(past(a) for a in possible)}."
                if possible
                else "Nothing more can happen to it."
            )
        )
    return candidates[0]


def mermaid() -> str:
    """The lifecycle as a Mermaid state diagram (for the docs)."""
    return lifecycle.mermaid(TRANSITIONS, final=("closed", "rejected"))
