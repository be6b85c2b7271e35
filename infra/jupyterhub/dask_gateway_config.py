"""dask-gateway-server's configuration: the TRE's, from its settings (:mod:`tre.hub.gateway`).
The hub runs the gateway as one of its services, with its ports in ``TRE_DASK_GATEWAY_PORT``
(its API) and ``TRE_DASK_GATEWAY_TLS_PORT`` (its proxy's TLS routing, which no enclave reaches)."""

import os

from tre.config import Settings
from tre.hub.gateway import configure

configure(
    c,  # noqa: F821 (dask-gateway-server defines c)
    Settings.from_environ(),
    int(os.environ["TRE_DASK_GATEWAY_PORT"]),
    int(os.environ["TRE_DASK_GATEWAY_TLS_PORT"]),
)
