"""What the TRE's lifecycles (projects, export requests) share: a transition as data, the past
tense of an action for messages, and the state diagram drawn for the docs."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Transition:
    action: str
    source: enum.Enum
    target: enum.Enum
    event: str
    meaning: str


#: Actions whose past tense is not the action followed by "d" or "ed".
_IRREGULAR = {"submit": "submitted", "withdraw": "withdrawn", "checked": "checked"}


def past(action: str) -> str:
    """``approve`` → ``approved``, ``submit`` → ``submitted``: for "cannot be …" messages."""
    if action in _IRREGULAR:
        return _IRREGULAR[action]
    return action + ("d" if action.endswith("e") else "ed")


def mermaid(transitions: Iterable[Transition], final: Iterable[str] = ()) -> str:
    """A Mermaid state diagram: one arrow per pair of states (loops left out), from the initial
    ``draft``, and to the end from each state in ``final``."""
    lines = ["stateDiagram-v2", "    [*] --> draft"]
    seen = set()
    for t in transitions:
        if t.source is t.target or (t.source, t.target) in seen:
            continue
        seen.add((t.source, t.target))
        lines.append(f"    {t.source.value} --> {t.target.value}: {t.action}")
    lines += [f"    {state} --> [*]" for state in final]
    return "\n".join(lines)
