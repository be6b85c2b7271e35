"""``tre.workspace``: the TRE from inside a researcher's notebook.

.. code-block:: python

    from tre.workspace import connect, dask, dp, request_export, safe

    con = connect()                    # DuckDB over this project's extracts, and nothing else
    con.sql("SELECT fsm_eligible, count(*) FROM pupils GROUP BY ALL")
    admissions = dask("hes_apc")       # a Dask DataFrame, on a small local cluster
    t = safe.table("ks4", rows=["fsm_eligible"], statistic="mean", value="attainment8")
    t                                  # computed and checked by the TRE, cell by cell
    request_export([t], "Attainment 8 by free school meals eligibility")

Where the workspace is comes from its environment, set by the hub: ``TRE_PROJECT``,
``TRE_EXTRACTS`` (the project's read-only extracts) and ``TRE_PORTAL_URL`` (the TRE's API).
Outputs are computed and checked by the TRE from their specification, never from numbers the
notebook sends, and every call to the API is made as the researcher with the Keycloak token the
hub keeps for them (:mod:`tre.workspace.api`): nothing secret is stored in the workspace.

This package must import with the workspace environment alone (DuckDB, pyarrow, httpx, Dask):
it uses nothing else of ``tre`` but its exceptions.
"""

from __future__ import annotations

from tre.workspace import dp, safe
from tre.workspace.outputs import Output, request_export
from tre.workspace.sandbox import close_cluster, cluster, connect, dask, tables

__all__ = [
    "Output",
    "close_cluster",
    "cluster",
    "connect",
    "dask",
    "dp",
    "request_export",
    "safe",
    "tables",
]
