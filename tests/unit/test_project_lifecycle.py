"""The project lifecycle as data: every state covered, every transition audited."""

import pytest

from tre import audit
from tre.exceptions import InvalidTransition
from tre.projects.lifecycle import OWNERS, TRANSITIONS, State, mermaid, transition


def test_every_state_has_an_owner_and_appears_in_a_transition():
    assert set(OWNERS) == set(State)
    touched = {t.source for t in TRANSITIONS} | {t.target for t in TRANSITIONS}
    assert touched == set(State)


def test_every_state_but_the_first_is_reachable_from_draft():
    reached, frontier = {State.DRAFT}, [State.DRAFT]
    while frontier:
        state = frontier.pop()
        for t in TRANSITIONS:
            if t.source is state and t.target not in reached:
                reached.add(t.target)
                frontier.append(t.target)
    assert reached == set(State)


def test_closed_and_rejected_are_final():
    for final in (State.CLOSED, State.REJECTED):
        assert not [t for t in TRANSITIONS if t.source is final]


def test_every_transition_writes_a_declared_audit_event():
    for t in TRANSITIONS:
        assert t.event in audit.ACTIONS and t.meaning


ALLOWED = {(t.source, t.action) for t in TRANSITIONS if t.action != "draft"}
ACTIONS = sorted({t.action for t in TRANSITIONS} - {"draft"})


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_is_allowed_exactly_where_the_table_says(state, action):
    if (state, action) in ALLOWED:
        last = any(
            t.target is State.APPROVED
            for t in TRANSITIONS
            if (t.source, t.action) == (state, action)
        )
        assert transition(state, action, last_approval=last).source is state
    else:
        with pytest.raises(InvalidTransition, match=f"is {state.value} cannot be"):
            transition(state, action)


def test_the_last_approval_approves_the_project():
    assert transition(State.SUBMITTED, "approve").target is State.SUBMITTED
    assert transition(State.SUBMITTED, "approve", last_approval=True).target is State.APPROVED


def test_the_diagram_shows_every_state():
    diagram = mermaid()
    for state in State:
        assert state.value in diagram
