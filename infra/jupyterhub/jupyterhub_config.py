"""JupyterHub for the TRE's workspaces, configured from the TRE's settings (``TRE_*``
environment variables): see :func:`tre.hub.configure`. Started by ``tre hub up``."""

from tre.config import Settings
from tre.hub import configure

configure(c, Settings.from_environ())  # noqa: F821 (JupyterHub defines c)
