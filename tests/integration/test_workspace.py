"""tre.workspace over real extracts: the sandboxed DuckDB connection, Dask, and how outputs show.

These run the client in the test process, with the environment a workspace gets from the hub
(TRE_PROJECT, TRE_EXTRACTS). The same client inside a real spawned kernel, calling the portal as
the researcher, is tested in test_hub.py."""

from __future__ import annotations

import json
import random

import duckdb
import pytest

from tests.conftest import ALICE, example_application, ingested_home, provision_project
from tre.exceptions import ConfigError, InvalidInput
from tre.projects import extracts
from tre.workspace import Output, connect, dask, tables


@pytest.fixture(scope="module", params=["sqlite"])
def two_projects(request, tmp_path_factory, synthetic):
    """A TRE home with two provisioned projects, ``ws-a`` and ``ws-b``."""
    with ingested_home(request, tmp_path_factory, synthetic, "workspace") as (_environ, home, db):
        for project_id in ("ws-a", "ws-b"):
            provision_project(home, db, example_application(project_id), ALICE)
        yield home


@pytest.fixture
def in_workspace(two_projects, monkeypatch, tmp_path):
    """This process as if it were a kernel of ws-a's workspace."""
    folder = extracts.folder(two_projects, "ws-a") / "extracts"
    monkeypatch.setenv("TRE_PROJECT", "ws-a")
    monkeypatch.setenv("TRE_EXTRACTS", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path))
    return folder


def test_connect_has_a_view_per_extract_and_reads_nothing_else(in_workspace, two_projects):
    manifest = json.loads((in_workspace / extracts.MANIFEST).read_text())
    con = connect()
    for name, dataset in manifest["datasets"].items():
        rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        assert rows == dataset["rows"] > 0, name
        columns = [c[0] for c in con.execute(f'DESCRIBE "{name}"').fetchall()]
        assert columns == ["pseudo_id", *(c["name"] for c in dataset["columns"])], name
    assert set(tables()) == set(manifest["datasets"])

    others = extracts.folder(two_projects, "ws-b") / "extracts"
    other = next(others.rglob("*.parquet"))
    escape = in_workspace / ".." / ".." / "ws-b" / "extracts" / other.relative_to(others)
    assert escape.resolve() == other.resolve()
    scratch = two_projects.root.parent / "scratch"
    attempts = {
        "a system file": "SELECT * FROM read_csv('/etc/passwd')",
        "the keys": f"SELECT * FROM read_blob('{two_projects.keys / 'link.key'}')",
        "another project's extract": f"SELECT count(*) FROM read_parquet('{other}')",
        "a path climbing out of the extracts": f"SELECT count(*) FROM read_parquet('{escape}')",
        "the curated store": (
            f"SELECT count(*) FROM read_parquet('{two_projects.curated}/**/*.parquet')"
        ),
        "a URL": "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
        "writing a file": f"COPY (SELECT 1 AS x) TO '{scratch}.csv'",
        "attaching a database": f"ATTACH '{scratch}.duckdb'",
        "installing an extension": "INSTALL httpfs",
        "loading an extension": "LOAD httpfs",
        "turning external access back on": "SET enable_external_access = true",
        "widening the allowed folders": "SET allowed_directories = ['/']",
        "resetting the configuration": "RESET enable_external_access",
    }
    for what, sql in attempts.items():
        with pytest.raises(duckdb.Error):
            con.execute(sql).fetchall()
            pytest.fail(f"{what} was allowed: {sql}")
    assert not scratch.with_suffix(".csv").exists()
    assert not scratch.with_suffix(".duckdb").exists()
    # Still usable, still sandboxed.
    assert con.execute("SELECT count(*) FROM pupils").fetchone()[0] > 0
    assert con.execute("SELECT current_setting('enable_external_access')").fetchone()[0] is False


def test_dask_reads_an_extract_in_partitions_with_the_same_answers(in_workspace):
    con = connect()
    expected = dict(con.execute("SELECT sex, count(*) FROM pupils GROUP BY sex").fetchall())
    frame = dask("pupils")
    assert frame.npartitions >= 2
    # Dask's scheduler picks workers with Python's global random generator (the test guard
    # checks that *our* code does not use it): keep its state around the computation.
    state = random.getstate()
    try:
        assert frame.groupby("sex").size().compute().to_dict() == expected
    finally:
        random.setstate(state)
    assert list(dask("ks4", columns=["attainment8"]).columns) == ["attainment8"]


def test_the_client_says_what_is_wrong(in_workspace, monkeypatch):
    with pytest.raises(InvalidInput, match="has no extract 'hes_ae'; it has hes_apc, ks4, pupils"):
        dask("hes_ae")
    monkeypatch.delenv("TRE_EXTRACTS")
    with pytest.raises(ConfigError, match=r"TRE_EXTRACTS is not set: tre\.workspace runs inside"):
        connect()


def test_an_output_shows_its_check_cell_by_cell():
    output = Output(
        7,
        "admissions <by> sex",
        "table",
        "fail",
        {},
        {
            "summary": {"status": "fail", "pass": 1, "fail": 1, "suppressed_primary": 1},
            "cells": [
                {"row": ["F"], "col": [], "value": 120, "status": "pass", "reasons": []},
                {
                    "row": ["M"],
                    "col": [],
                    "value": None,
                    "status": "fail",
                    "reasons": ["fewer than 10 people contribute to this cell"],
                    "suppression": "primary",
                },
            ],
        },
    )
    assert output.headline() == (
        "Output #7 'admissions <by> sex' (table): fail (1 pass, 1 fail; 1 suppressed)"
    )
    page = output._repr_html_()
    assert "&lt;by&gt;" in page and "<by>" not in page
    assert page.count("<tr>") == 3 and "fewer than 10 people" in page
    assert output.frame()["status"].tolist() == ["pass", "fail"]
