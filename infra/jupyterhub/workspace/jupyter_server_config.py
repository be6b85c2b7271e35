"""Jupyter Server in a TRE workspace (copied by ``make setup`` into the workspace environment's
``etc/jupyter``; the server reads no configuration from the researcher's folder): results leave
only through the airlock, so nothing is served for download.

- ``/files/…`` (raw files, downloads) answers 403;
- the nbconvert export handlers (``/nbconvert/…``, "Save and export as") are not installed;
- terminals are off (a terminal prints any file to the browser);
- the contents API hands over notebooks, text and images only, never data
  (:class:`tre.workspace.contents.WorkspaceContents`), and JupyterLab's settings, workspaces
  and configuration sections (files of the researcher's folder too) are capped in size
  (:class:`tre.workspace.contents.CappedResponses`);
- the server's process cannot be traced or read by its kernels
  (:func:`tre.workspace.contents.keep_private`);
- kernels are the environment's alone: kernel specifications (whose folders the
  ``kernelspecs/`` route serves file by file) are read from no folder of the researcher's
  (``~/.ipython/kernels``, ``~/.local/share/jupyter/kernels``: found by the review).

The language-server extension is off: the environment has no language server for it to run
(loading it anyway is part of each workspace's start).
"""

from jupyter_server import serverapp

from tre.workspace.contents import keep_private

keep_private()
c.ServerApp.contents_manager_class = "tre.workspace.contents.WorkspaceContents"  # noqa: F821
c.ServerApp.terminals_enabled = False  # noqa: F821
c.ServerApp.kernel_spec_manager_class = "tre.workspace.contents.EnvironmentKernels"  # noqa: F821
c.ContentsManager.files_handler_class = "tornado.web.ErrorHandler"  # noqa: F821
c.ContentsManager.files_handler_params = {"status_code": 403}  # noqa: F821
serverapp.JUPYTER_SERVICE_HANDLERS["files"] = None
serverapp.JUPYTER_SERVICE_HANDLERS["nbconvert"] = None
c.ServerApp.jpserver_extensions = {"jupyter_lsp": False, "tre.workspace.contents": True}  # noqa: F821
