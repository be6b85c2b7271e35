"""Outputs as a notebook shows them, and export requests.

An :class:`Output` is what the TRE stored after computing and checking a specification over the
project's extracts: its id, its cells (value, status, reasons, suppression) and its summary. It
shows itself as a table in a notebook. :func:`request_export` puts outputs into an export
request and submits it to the output checkers.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable, Sequence
from typing import Any

from tre.exceptions import InvalidInput
from tre.workspace import api
from tre.workspace.sandbox import Workspace

#: Fields of a cell shown, in this order (any other field follows).
CELL_FIELDS = ("row", "col", "category", "value", "status", "reasons", "suppression")


@dataclasses.dataclass(frozen=True)
class Output:
    id: int
    name: str
    kind: str
    status: str
    spec: dict[str, Any]
    result: dict[str, Any]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Output:
        return cls(
            data["id"], data["name"], data["kind"], data["status"], data["spec"], data["result"]
        )

    @property
    def cells(self) -> list[dict[str, Any]]:
        return list(self.result.get("cells", []))

    def headline(self) -> str:
        summary = self.result.get("summary", {})
        counts = ", ".join(
            f"{summary[k]} {k}" for k in ("pass", "review", "fail") if summary.get(k)
        )
        suppressed = summary.get("suppressed_primary", 0) + summary.get("suppressed_secondary", 0)
        extra = f"; {suppressed} suppressed" if suppressed else ""
        cost = f"; ε = {self.result['epsilon']:g} spent" if self.kind == "dp" else ""
        return (
            f"Output #{self.id} {self.name!r} ({self.kind}): {self.status}"
            f"{f' ({counts}{extra})' if counts else ''}{cost}"
        )

    def frame(self):
        """The cells as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.cells)

    def _columns(self) -> list[str]:
        seen = {k for cell in self.cells for k in cell}
        return [f for f in CELL_FIELDS if f in seen] + sorted(seen - set(CELL_FIELDS))

    def __str__(self) -> str:
        lines = [self.headline()]
        for cell in self.cells:
            lines.append("  " + "  ".join(f"{k}={_text(cell.get(k))}" for k in self._columns()))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        columns = self._columns()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(_text(cell.get(c)))}</td>" for c in columns)
            + "</tr>"
            for cell in self.cells
        )
        return (
            f"<p><b>{html.escape(self.headline())}</b></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def check(spec: dict[str, Any]) -> Output:
    """Have the TRE compute and check ``spec`` over the project's extracts."""
    workspace = Workspace.here()
    return Output.from_api(api.call("POST", f"/projects/{workspace.project}/outputs", spec))


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    id: int
    state: str
    title: str
    outputs: list[dict[str, Any]]

    def __str__(self) -> str:
        return (
            f"Export request #{self.id} {self.title!r}: {self.state}, {len(self.outputs)} "
            "output(s). Two output checkers review it in the portal."
        )

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(str(self))}</p>"


def request_export(
    outputs: Sequence[Output] | Output,
    description: str,
    *,
    descriptions: Iterable[str] | None = None,
    submit: bool = True,
) -> ExportRequest:
    """Put ``outputs`` into a new export request titled ``description`` and (unless
    ``submit=False``) submit it: the TRE checks them again and two output checkers review them.

    ``descriptions`` says, output by output, what each is (the checkers read it); by default
    the output's name."""
    if isinstance(outputs, Output):
        outputs = [outputs]
    outputs = list(outputs)
    wrong = [o for o in outputs if not isinstance(o, Output)]
    if not outputs or wrong:
        raise InvalidInput(
            "request_export takes outputs made by safe.table, safe.summary, safe.model or a "
            "DP query's .run(): the TRE exports only what it computed and checked itself."
        )
    texts = list(descriptions) if descriptions is not None else [o.name for o in outputs]
    if len(texts) != len(outputs):
        raise InvalidInput(f"{len(outputs)} outputs but {len(texts)} descriptions.")
    if not description.strip():
        raise InvalidInput("Describe the request: the output checkers read it first.")
    project = Workspace.here().project
    made = api.call("POST", "/requests", {"project": project, "title": description})
    view = made
    for output, text in zip(outputs, texts, strict=True):
        view = api.call(
            "POST", f"/requests/{made['id']}/outputs", {"output_id": output.id, "description": text}
        )
    if submit:
        view = api.call("POST", f"/requests/{made['id']}/submit")
    return ExportRequest(view["id"], view["state"], view["title"], view.get("outputs", []))
