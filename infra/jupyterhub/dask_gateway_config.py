"""dask-gateway-server's configuration: the TRE's, from its settings (:mod:`tre.hub.gateway`).
The hub runs the gateway as one of its services, with the port in ``TRE_DASK_GATEWAY_PORT``."""

import os

from tre.config import Settings
from tre.hub.gateway import configure

configure(c, Settings.from_environ(), int(os.environ["TRE_DASK_GATEWAY_PORT"]))  # noqa: F821
