"""Jupyter Server in a TRE workspace (copied by ``make setup`` into the workspace environment's
``etc/jupyter``): results leave only through the airlock, so nothing is served for download.

- ``/files/…`` (raw files, downloads) answers 403;
- the nbconvert export handlers (``/nbconvert/…``, "Save and export as") are not installed.

The language-server extension is off: the environment has no language server for it to run
(loading it anyway is part of each workspace's start).
"""

from jupyter_server import serverapp

c.ContentsManager.files_handler_class = "tornado.web.ErrorHandler"  # noqa: F821
c.ContentsManager.files_handler_params = {"status_code": 403}  # noqa: F821
serverapp.JUPYTER_SERVICE_HANDLERS["files"] = None
serverapp.JUPYTER_SERVICE_HANDLERS["nbconvert"] = None
c.ServerApp.jpserver_extensions = {"jupyter_lsp": False}  # noqa: F821
