"""Free text people type into the TRE (titles, descriptions, reasons, comments, notes): one
limit for each kind, checked where the text enters. Text is no channel for data: past its
limit it is refused with a message, never cut or stored (found by an attack review: a kernel
could post an extract as a request's title, then read it back from home)."""

from __future__ import annotations

from tre.exceptions import InvalidInput

#: The longest title (of a project, an export request).
TITLE = 200
#: The longest other free text (a description, a reason, a comment, a summary).
TEXT = 4000


def at_most(value: str, what: str, most: int = TEXT) -> str:
    """``value`` stripped, if it is at most ``most`` characters long (else :class:`InvalidInput`
    naming ``what``)."""
    text = value.strip()
    if len(text) > most:
        raise InvalidInput(
            f"The {what} is {len(text):,} characters long; at most {most:,} are taken. Results "
            "leave through the airlock, never in free text."
        )
    return text
