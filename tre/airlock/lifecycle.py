"""The lifecycle of an export request, as data: states, owners, transitions, audit events."""

from __future__ import annotations

import enum

from tre import audit, lifecycle
from tre.exceptions import InvalidTransition
from tre.lifecycle import Transition, past

REVOKED = (
    "A release, or an approval that could not be released, was revoked: nothing is downloaded."
)


class State(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    RETURNED = "returned"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    RELEASED = "released"
    REVOKED = "revoked"


OWNERS: dict[State, str] = {
    State.DRAFT: "the researcher, who adds outputs and submits",
    State.SUBMITTED: "the TRE, which re-runs the automatic checks",
    State.IN_REVIEW: "output checkers outside the project: two independent reviews per output",
    State.RETURNED: "the researcher, who replaces the outputs the checkers asked to change",
    State.APPROVED: (
        "the TRE, which copies the approved outputs to the released store; if it cannot (a "
        "kept file changed), an output checker or administrator revokes the approval"
    ),
    State.REJECTED: "nobody: the request is closed; the researcher sees why",
    State.WITHDRAWN: "nobody: the researcher withdrew it",
    State.RELEASED: "the researcher, who downloads the outputs; checkers may revoke them",
    State.REVOKED: "nobody: the released outputs were withdrawn from download",
}


TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        "create",
        State.DRAFT,
        State.DRAFT,
        "request.created",
        "A researcher started an export request.",
    ),
    Transition(
        "change",
        State.DRAFT,
        State.DRAFT,
        "request.changed",
        "An output was added to or replaced in the request.",
    ),
    Transition(
        "change",
        State.RETURNED,
        State.RETURNED,
        "request.changed",
        "An output was added to or replaced in the request.",
    ),
    Transition(
        "submit",
        State.DRAFT,
        State.SUBMITTED,
        "request.submitted",
        "The researcher submitted the request.",
    ),
    Transition(
        "submit",
        State.RETURNED,
        State.SUBMITTED,
        "request.submitted",
        "The researcher submitted the request again, with changed outputs.",
    ),
    Transition(
        "checked",
        State.SUBMITTED,
        State.IN_REVIEW,
        "request.checked",
        "The automatic checks ran again on every output; reviews can start.",
    ),
    Transition(
        "review",
        State.IN_REVIEW,
        State.IN_REVIEW,
        "request.reviewed",
        "An output checker voted on an output.",
    ),
    Transition(
        "return",
        State.IN_REVIEW,
        State.RETURNED,
        "request.returned",
        "Every output is decided and some need changes: back to the researcher.",
    ),
    Transition(
        "approve",
        State.IN_REVIEW,
        State.APPROVED,
        "request.approved",
        "Every output was approved by two independent output checkers.",
    ),
    Transition(
        "reject",
        State.IN_REVIEW,
        State.REJECTED,
        "request.rejected",
        "An output was rejected: the request stops.",
    ),
    Transition(
        "release",
        State.APPROVED,
        State.RELEASED,
        "request.released",
        "The approved outputs were copied to the released store.",
    ),
    Transition(
        "block",
        State.APPROVED,
        State.RETURNED,
        "request.blocked",
        "At release, the automatic checks ran again against everything released until then, "
        "and an output no longer passed them: back to the researcher, saying why.",
    ),
    Transition(
        "revoke",
        State.RELEASED,
        State.REVOKED,
        "request.revoked",
        REVOKED,
    ),
    Transition(
        "revoke",
        State.APPROVED,
        State.REVOKED,
        "request.revoked",
        REVOKED,
    ),
    *(
        Transition(
            "withdraw",
            state,
            State.WITHDRAWN,
            "request.withdrawn",
            "The researcher withdrew the request.",
        )
        for state in (State.DRAFT, State.IN_REVIEW, State.RETURNED)
    ),
)

audit.declare_actions({t.event: t.meaning for t in TRANSITIONS})
audit.declare_actions({"request.downloaded": "A released output was downloaded."})


def transition(state: State, action: str) -> Transition:
    for t in TRANSITIONS:
        if t.source is state and t.action == action:
            return t
    possible = sorted({t.action for t in TRANSITIONS if t.source is state} - {"create"})
    raise InvalidTransition(
        f"An export request that is {state.value.replace('_', ' ')} cannot be {past(action)}."
        + (f" Possible: {', '.join(possible)}." if possible else " Nothing more can happen.")
    )


def mermaid() -> str:
    """The lifecycle as a Mermaid state diagram (for the docs)."""
    return lifecycle.mermaid(TRANSITIONS)
