"""Ingest's memory settings hold while it runs and are put back after, even on a failure."""

import numpy as np
import pyarrow as pa
import pytest

from tre import ingest


def _numpy_huge_pages() -> bool:
    from numpy._core import multiarray

    setting = multiarray._set_madvise_hugepage(True)
    multiarray._set_madvise_hugepage(setting)
    return setting


def test_small_pages_while_ingest_runs_and_the_defaults_after():
    pool, huge = pa.default_memory_pool().backend_name, _numpy_huge_pages()
    with pytest.raises(RuntimeError), ingest._small_pages():
        assert pa.default_memory_pool().backend_name == "jemalloc"
        assert _numpy_huge_pages() is False
        np.zeros(1 << 20)  # allocating under the settings works
        raise RuntimeError("an ingest that fails")
    assert (pa.default_memory_pool().backend_name, _numpy_huge_pages()) == (pool, huge)
