"""The contents API of a workspace's Jupyter server: what JupyterLab needs, never data.

:class:`WorkspaceContents` is the server's contents manager (set in the workspace
environment's ``etc/jupyter``, which the server reads instead of the researcher's folder). When
the browser asks for a file's content, the file is read once, judged by its content
(:func:`tre.workspace.files.judge`) and, if it may be shown, served from those same bytes (a
file swapped between the judging and the serving changes nothing). Notebooks have outputs past
``max_output_bytes`` cut. A refusal answers 403 with the reason, and is recorded in the TRE's
audit log through the portal (the file's name, size and the reason; never its content).

:func:`keep_private` makes the server's process one its own account cannot trace or read the
memory of (``PR_SET_DUMPABLE`` 0): a kernel, run by the same account, cannot change what the
server serves.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import stat
import sys
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import httputil, web
from traitlets import Integer

from tre.workspace import files

_PR_SET_DUMPABLE = 4
#: The routes (after the server's base URL) whose responses are not capped: the contents API
#: (which judges what it serves, under its own limit) and the files of the workspace
#: environment itself (JupyterLab's code, themes, translations, licences, kernels' logos),
#: which no researcher writes. Every other response (pages, settings, workspaces,
#: configuration sections, listings) is refused past :data:`CAPPED_BYTES`: the server reads
#: some of them from the researcher's folder, and none needs more.
UNCAPPED = (
    "api/contents",
    "static/",
    "lab/static/",
    "lab/extensions/",
    "lab/api/themes",
    "lab/api/translations",
    "lab/api/licenses",
)
CAPPED_BYTES = 256 << 10
_base_url = ["/"]
#: How much larger than ``max_file_bytes`` a notebook may be on disk before its outputs are cut.
NOTEBOOK_READ_FACTOR = 16
log = logging.getLogger(__name__)


def keep_private() -> None:
    """No process of this account may trace this one or read its memory."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "tre.workspace.contents"}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Loaded by the workspace's server (its configuration enables it): responses of
    :data:`CAPPED` routes larger than :data:`CAPPED_BYTES` refused."""
    _base_url[0] = serverapp.base_url
    serverapp.web_app.add_transform(CappedResponses)


class CappedResponses(web.OutputTransform):
    """A response of a route not in :data:`UNCAPPED` is refused (403) when its first part is
    larger than :data:`CAPPED_BYTES` or holds data (:func:`tre.workspace.files.data_in`, on
    each text of a JSON answer: JupyterLab's settings and workspaces are files of the
    researcher's folder, found by the review), and cut when the rest would take it past."""

    def __init__(self, request: httputil.HTTPServerRequest):
        super().__init__(request)
        self.path = request.path or ""
        base = _base_url[0]
        route = self.path[len(base) :] if self.path.startswith(base) else None
        self.capped = route is None or not route.startswith(UNCAPPED)
        self.sent = 0

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        why = ""
        if self.capped:
            why = "larger than a workspace's server answers" if len(chunk) > CAPPED_BYTES else ""
            why = why or _data_in_answer(chunk)
        if why:
            log.warning("Refused a response of %d bytes to %s: %s", len(chunk), self.path, why)
            message = json.dumps(
                {"message": f"Refused: {why} (data leaves through the airlock)."}
            ).encode()
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(message))
            headers.pop("Etag", None)
            return 403, headers, message
        self.sent = len(chunk)
        return status_code, headers, chunk

    def transform_chunk(self, chunk, finishing):
        if not self.capped:
            return chunk
        self.sent += len(chunk)
        return chunk if self.sent <= CAPPED_BYTES and not _data_in_answer(chunk) else b""


def _data_in_answer(body: bytes) -> str:
    """What data a (capped) answer holds: in each of its texts if it is JSON, else in it
    whole (``""``: none, or it is no text)."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return files.data_in(text)
    return next((w for w in map(files.data_in, files.strings(value)) if w), "")


class EnvironmentKernels(KernelSpecManager):
    """Kernel specifications from the workspace environment's own folder alone: never from
    the researcher's (``~/.ipython/kernels``, ``~/.local/share/jupyter/kernels``), whose
    files the ``kernelspecs/`` route would serve one by one (found by the fourth review;
    ``kernel_dirs`` is not a setting, hence this class)."""

    def _kernel_dirs_default(self) -> list[str]:
        return [os.path.join(sys.prefix, "share", "jupyter", "kernels")]


class WorkspaceContents(AsyncLargeFileManager):
    max_file_bytes = Integer(
        2 << 20, help="The largest file handed to the browser (TRE_WORKSPACE_FILE_MAX_MB)."
    ).tag(config=True)
    max_output_bytes = Integer(
        64 << 10, help="The most of one notebook output handed over (TRE_NOTEBOOK_OUTPUT_KB)."
    ).tag(config=True)

    async def get(self, path, content=True, type=None, format=None, require_hash=False):
        path = path.strip("/")
        os_path = self._get_os_path(path)
        if not content:
            return await super().get(path, content, type, format, require_hash=require_hash)
        if os.path.isdir(os_path) or type == "directory":
            # Asked for as a folder: the parent answers 400 if it has become a file since.
            return await self._folder(path)
        data, size = self._read(path, os_path)
        # The hash, when asked for, is the file's on disk (JupyterLab compares it on saving).
        hashed = self._get_hash(data) if require_hash and data is not None else {}
        try:
            if data is None:
                raise files.Refused(files.too_large(size, self.max_file_bytes))
            kind = files.judge(data, self.max_file_bytes)
            if kind == "notebook" or type == "notebook":
                # Opened as a notebook or as its text, it is what _notebook makes of it: its
                # outputs cut, then no larger than any other file.
                model = await self._notebook(path, data)
                if type in (None, "notebook"):
                    return {**model, **hashed}
                data, kind = json.dumps(model["content"], indent=1).encode(), "text"
        except files.Refused as refused:
            await self._refuse(path, size, str(refused))
        if type == "notebook":  # pragma: no cover - judged above
            raise web.HTTPError(400, f"{path} is not a notebook")
        model = await super().get(path, content=False, type="file")
        if kind == "text" and format != "base64":
            model.update(content=data.decode("utf-8"), format="text", mimetype="text/plain")
        else:
            mimetype = kind if kind.startswith("image/") else "text/plain"
            if kind.startswith("image/"):  # its pixels alone, encoded again
                data = files.redrawn(data)
            model.update(
                content=base64.b64encode(data).decode(), format="base64", mimetype=mimetype
            )
        model["size"] = len(data)
        return {**model, **hashed}

    async def _folder(self, path: str) -> dict[str, Any]:
        """A folder's listing, judged as a file is: its names may carry data too."""
        model = await super().get(path, content=True, type="directory")
        names = "\n".join(entry["name"] for entry in model["content"])
        size = len(json.dumps(model, default=str))
        try:
            if size > self.max_file_bytes:
                raise files.Refused(files.too_large(size, self.max_file_bytes))
            why = files.data_in(names)
            if why:
                raise files.Refused(f"its file names are {why}")
        except files.Refused as refused:
            await self._refuse(path or ".", size, str(refused))
        return model

    def _read(self, path: str, os_path: str) -> tuple[bytes | None, int]:
        """The file's bytes (None past what any file shown may hold) and its size."""
        limit = self.max_file_bytes * NOTEBOOK_READ_FACTOR
        try:
            fd = os.open(os_path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise web.HTTPError(404, f"No such file: {path}") from None
        except OSError as e:
            raise web.HTTPError(403 if e.errno == errno.EACCES else 400, str(e)) from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise web.HTTPError(400, f"{path} is not a file")
            data = f.read(limit + 1) if info.st_size <= limit else b""
            size = max(info.st_size, len(data))
        return (None if size > limit else data), size

    async def _notebook(self, path: str, data: bytes) -> dict[str, Any]:
        import nbformat

        try:
            notebook = json.loads(data.decode("utf-8"))
        except ValueError:
            raise files.Refused("it is not a notebook") from None
        files.cut_outputs(notebook, self.max_output_bytes)
        shown = json.dumps(notebook)
        if len(shown) > self.max_file_bytes:
            raise files.Refused(files.too_large(len(shown), self.max_file_bytes))
        node = nbformat.reads(shown, as_version=nbformat.NO_CONVERT)
        model = await super().get(path, content=False, type="notebook")
        self.mark_trusted_cells(node, path)
        model.update(content=node, format="json", mimetype=None)
        self.validate_notebook_model(model)
        return model

    async def _refuse(self, path: str, size: int, why: str) -> None:
        await asyncio.to_thread(_record, path, size, why)
        raise web.HTTPError(403, f"{path} is not shown in the browser: {why}.")


def _record(path: str, size: int, why: str) -> None:
    """The refusal in the TRE's audit log, as the researcher (the portal checks they are a
    member of the project)."""
    from tre.workspace import api
    from tre.workspace.sandbox import Workspace

    try:
        body = {"file": path, "bytes": size, "why": why[:200]}
        api.call("POST", f"/projects/{Workspace.here().project}/workspace/refusals", body)
    except Exception as e:  # the refusal stands; the server's log says the record failed
        log.warning("A refusal of %s (%d bytes) was not recorded: %s", path, size, e)
