"""Outputs computed from a provisioned project's real extracts: tables, differencing, models,
files, ACRO sessions, and differential privacy against the budget, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import warnings
from pathlib import Path

import pytest

from tests.factories import in_workspace
from tre import outputs, projects
from tre.cli import main
from tre.db import Database
from tre.exceptions import InvalidInput, PermissionDenied
from tre.outputs import privacy, specs
from tre.outputs import rules as R
from tre.people import local_person
from tre.projects import extracts

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB, DORA, HUGH, ADA = (local_person(u) for u in ("alice", "bob", "dora", "hugh", "ada"))


def table(name: str, **fields) -> specs.OutputSpec:
    return specs.parse({"name": name, "kind": "table", "dataset": "pupils", **fields})


def released_by_checkers(world, output_id: int) -> None:
    """Mark an output released, as two checkers' approval would."""
    with world.db.write() as session:
        outputs.mark_released(
            session,
            session.get(outputs.Output, output_id),
            outputs.audit.Event(
                "olga", "output-checker", "output.released", "output", str(output_id)
            ),
        )


def test_a_table_is_computed_from_the_extract_and_checked(world):
    output, result = outputs.check(
        world.home,
        world.db,
        world.project,
        table("pupils by sex and fsm", rows=["sex"], cols=["fsm_eligible"], margins=True),
        ALICE,
    )
    cells = {(tuple(c.row), tuple(c.col)): c for c in result.cells}
    total = cells[(("All",), ("All",))]
    assert total.value == 300  # every pupil of the synthetic delivery, counted once
    stored = outputs.get(world.db, output.id)
    assert stored.result["summary"]["status"] == result.status
    assert {tuple(c["row"]) for c in stored.result["cells"]} >= {("F",), ("M",), ("All",)}


def test_only_members_of_an_active_project_make_outputs(world):
    spec_ = table("t", rows=["sex"])
    with pytest.raises(PermissionDenied, match="not a member"):
        outputs.check(world.home, world.db, world.project, spec_, DORA)


def test_unknown_columns_and_extracts_are_refused_clearly(world):
    with pytest.raises(InvalidInput, match="unknown column 'postcode'"):
        outputs.check(world.home, world.db, world.project, table("t", rows=["postcode"]), ALICE)
    with pytest.raises(InvalidInput, match="no extract 'deaths'"):
        outputs.check(
            world.home,
            world.db,
            world.project,
            specs.parse({"name": "t", "dataset": "deaths", "rows": ["x"]}),
            ALICE,
        )


def test_a_joined_mean_table_with_dominance_statistics(world):
    _, result = outputs.check(
        world.home,
        world.db,
        world.project,
        specs.parse(
            {
                "name": "attainment",
                "dataset": "ks4",
                "rows": ["fsm_eligible"],
                "statistic": "mean",
                "value": "attainment8",
                "join": [
                    {"dataset": "pupils", "on": ["academic_year"], "columns": ["fsm_eligible"]}
                ],
            }
        ),
        ALICE,
    )
    values = {c.row: c.value for c in result.cells if c.value is not None}
    assert values[("False",)] > values[("True",)]  # the synthetic data's deprivation gradient


def test_differencing_catches_two_releases_a_few_people_apart(world):
    import duckdb

    folder = extracts.folder(world.home, world.project) / "extracts" / "pupils"
    counts = (
        duckdb.connect()
        .execute(
            "SELECT ethnicity, count(DISTINCT pseudo_id) n FROM "
            f"read_parquet('{folder}/**/*.parquet') GROUP BY ALL "
            "HAVING n BETWEEN 1 AND 9 ORDER BY n"
        )
        .fetchall()
    )
    assert counts, "the synthetic data has a small ethnic group"
    small_group = counts[0][0]
    first, _ = outputs.check(
        world.home, world.db, world.project, table("by sex", rows=["sex"]), ALICE
    )
    released_by_checkers(world, first.id)
    _, result = outputs.check(
        world.home,
        world.db,
        world.project,
        table(
            "by sex without one group",
            rows=["sex"],
            filters=[{"column": "ethnicity", "op": "ne", "value": small_group}],
        ),
        ALICE,
    )
    failing = [c for c in result.cells if "differencing" in c.rules]
    assert failing, "at least one cell differs from the earlier release by a few people"
    assert all(c.value is None and f"#{first.id}" in " ".join(c.reasons) for c in failing)
    # the same difference written with a list of values (once a crash: lists are not hashable)
    _, listed = outputs.check(
        world.home,
        world.db,
        world.project,
        table(
            "by sex, the group left out by a list",
            rows=["sex"],
            filters=[{"column": "ethnicity", "op": "not_in", "value": [small_group]}],
        ),
        ALICE,
    )
    assert any("differencing" in c.rules for c in listed.cells)
    # the same filters again are not a difference
    _, again = outputs.check(
        world.home, world.db, world.project, table("by sex again", rows=["sex"]), ALICE
    )
    assert not any("differencing" in c.rules for c in again.cells)


def test_a_model_with_enough_degrees_of_freedom_passes_and_a_tiny_one_fails(world):
    model = {
        "name": "ols",
        "kind": "model",
        "dataset": "ks4",
        "formula": "attainment8 ~ C(fsm_eligible)",
        "family": "ols",
        "join": [{"dataset": "pupils", "on": ["academic_year"], "columns": ["fsm_eligible"]}],
    }
    _, result = outputs.check(world.home, world.db, world.project, specs.parse(model), ALICE)
    assert result.status == R.PASS and result.extra["residual_dof"] >= 10
    import duckdb

    folder = extracts.folder(world.home, world.project) / "extracts" / "ks4"
    fifth = (
        duckdb.connect()
        .execute(
            f"SELECT attainment8 FROM read_parquet('{folder}/**/*.parquet') "
            "ORDER BY attainment8 DESC LIMIT 1 OFFSET 4"
        )
        .fetchone()[0]
    )
    tiny = {
        **model,
        "name": "tiny",
        "formula": "attainment8 ~ 1",
        "filters": [{"column": "attainment8", "op": "gte", "value": fifth}],
    }
    _, result = outputs.check(world.home, world.db, world.project, specs.parse(tiny), ALICE)
    assert result.status == R.FAIL and all(c.value is None for c in result.cells)
    assert "degrees of freedom" in result.cells[0].reasons[0]


def test_a_plain_csv_is_checked_on_its_face_and_always_reviewed(world):
    path = in_workspace(
        world.home.root, "alice", world.project, "counts.csv", "group,n\nA,25\nB,3\nC,40\n"
    )
    output = outputs.add_file(world.home, world.db, world.project, path, ALICE)
    assert output.result["summary"]["status"] == R.REVIEW
    flagged = [c for c in output.result["cells"] if c["status"] == R.FAIL]
    assert [c["row"] for c in flagged] == [["B"]]


def test_an_acro_session_is_imported_for_review(world):
    import acro
    import pandas as pd

    in_workspace(world.home.root, "alice", world.project, "notes.txt", "an ACRO session next")
    folder = world.home.projects / world.project / "work" / "alice" / "acro"  # ACRO makes it
    with warnings.catch_warnings():  # ACRO itself warns (pandas); not ours to fix
        warnings.simplefilter("ignore")
        session = acro.ACRO(suppress=True)
        data = pd.DataFrame({"group": ["a"] * 30 + ["b"] * 3, "sex": ["F", "M"] * 16 + ["F"]})
        session.crosstab(data["group"], data["sex"])
        session.finalise(str(folder), "json")
    env = world.environ
    assert (
        main(
            ["outputs", "import-acro", "acro", "--project", world.project, "--as", "alice"],
            env,
        )
        == 0
    )
    listed = outputs.of_project(world.db, world.project)
    imported = [o for o in listed if o.kind == "file" and "ACRO" in o.spec["description"]]
    assert imported and all(o.status == R.REVIEW for o in imported)


def test_check_table_cli_writes_the_documented_json(world, tmp_path, capsys):
    folder = extracts.folder(world.home, world.project) / "extracts" / "pupils"
    data = next(folder.rglob("*.parquet"))
    capsys.readouterr()
    assert (
        main(
            [
                "outputs",
                "check-table",
                "--data",
                str(data),
                "--rows",
                "sex",
                "--cols",
                "ethnicity",
                "--unit",
                "pseudo_id",
                "--margins",
                "--json",
            ],
            {},
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result["summary"]) >= {"status", "suppressed_primary", "suppressed_secondary"}
    for cell in result["cells"]:
        assert set(cell) == {"row", "col", "value", "status", "reasons", "suppression"}
        assert isinstance(cell["row"], list) and isinstance(cell["col"], list)
        if cell["suppression"]:
            assert cell["value"] is None
    assert any(cell["row"] == ["All"] for cell in result["cells"])


# -- differential privacy ----------------------------------------------------------------------


def dp_spec(epsilon: float, query: str = "count", **fields) -> specs.OutputSpec:
    return specs.parse(
        {
            "name": f"dp {query}",
            "kind": "dp",
            "dataset": "pupils",
            "query": query,
            "epsilon": epsilon,
            **fields,
        }
    )


def test_a_dp_count_spends_budget_and_is_close(world):
    granted, before = privacy.remaining(world.db, world.project)
    assert granted == 1.0
    plan = outputs.preview_dp(world.db, world.project, dp_spec(0.2), ALICE)
    assert plan.epsilon == 0.2 and "95 %" in plan.accuracy
    assert privacy.remaining(world.db, world.project)[1] == before  # preview spends nothing
    _, result = outputs.run_dp(world.home, world.db, world.project, dp_spec(0.2), ALICE)
    assert abs(privacy.remaining(world.db, world.project)[1] - (before - 0.2)) < 1e-9
    assert abs(result["cells"][0]["value"] - 300) < 80  # within a wide margin of the truth


def test_a_dp_histogram_and_mean(world):
    histogram = dp_spec(0.1, "histogram", value="sex", categories=["F", "M"])
    _, result = outputs.run_dp(world.home, world.db, world.project, histogram, ALICE)
    assert [c["row"] for c in result["cells"]] == [["F"], ["M"]]
    mean = dp_spec(0.1, "mean", dataset="ks4", value="attainment8", bounds=[0, 90])
    _, result = outputs.run_dp(world.home, world.db, world.project, mean, ALICE)
    assert len(result["cells"]) == 1


def test_dp_quartiles_cost_exactly_what_is_charged(world):
    """Quantiles away from the median cost more at the same noise: each gets its share."""
    for alphas in ([0.25, 0.5, 0.75], [0.1, 0.9], [0.5]):
        spec = dp_spec(0.1, "quantiles", value="idaci_decile", bounds=[1, 10], alphas=alphas)
        plan = privacy.plan(spec)
        cost = float(plan.run.map(1))
        assert 0.1 * 0.999 < cost <= 0.1
    _, before = privacy.remaining(world.db, world.project)
    _, result = outputs.run_dp(
        world.home,
        world.db,
        world.project,
        dp_spec(0.1, "quantiles", value="idaci_decile", bounds=[1, 10]),
        ALICE,
    )
    assert len(result["cells"]) == 3
    assert all(1 <= c["value"] <= 10 for c in result["cells"])
    assert abs(privacy.remaining(world.db, world.project)[1] - (before - 0.1)) < 1e-9


def test_the_budget_cannot_be_exceeded(world):
    left = privacy.remaining(world.db, world.project)[1]
    with pytest.raises(PermissionDenied, match="is left"):
        outputs.run_dp(world.home, world.db, world.project, dp_spec(left + 0.01), ALICE)
    assert privacy.remaining(world.db, world.project)[1] == left


BUDGET, COST, WORKERS = 1.0, 0.3, 8


def _spend(url: str, project_id: str, results) -> None:
    db = Database(url)
    try:
        privacy.reserve(db, project_id, COST, "concurrent", ALICE)
        results.put(True)
    except PermissionDenied:
        results.put(False)
    finally:
        db.dispose()


def test_concurrent_spending_never_exceeds_the_budget(world):
    with world.db.write() as session:  # a project of its own, with ε = 1.0
        session.add(
            projects.Project(
                id="out-budget",
                title="budget",
                lead="alice",
                state="provisioned",
                spec={"members": ["alice"]},
                end_date="2099-01-01",
                created_at="x",
                updated_at="x",
            )
        )
        session.flush()
        session.add(privacy.PrivacyBudget(project_id="out-budget", epsilon=BUDGET))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_spend, args=(world.db.url, "out-budget", queue))
        for _ in range(WORKERS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    granted = [queue.get() for _ in range(WORKERS)]
    assert sum(granted) == int(BUDGET // COST)  # exactly as many as fit: 3
    total, left = privacy.remaining(world.db, "out-budget")
    assert total - left <= BUDGET + 1e-12


# -- linked tables -----------------------------------------------------------------------------


def _attacker_ranges(releases: list[tuple[list[str], list[dict]]]) -> dict[tuple, tuple]:
    """Written here independently of tre: over the finest cells (ethnicity × sex) of tables
    over the same people, each suppressed cell's [min, max] given everything published."""
    import numpy as np
    from scipy.optimize import linprog

    def labels(names, cell):
        return dict(zip(names, [*cell["row"], *cell["col"]], strict=True))

    finest = sorted(
        {
            (lab["ethnicity"], lab["sex"])
            for names, cells in releases
            for cell in cells
            for lab in [labels(names, cell)]
            if "All" not in lab.values()
        }
    )

    def row(lab):
        return np.array(
            [
                all(
                    lab.get(v, "All") in ("All", x)
                    for v, x in zip(("ethnicity", "sex"), f, strict=True)
                )
                for f in finest
            ],
            dtype=float,
        )

    published = [
        (row(labels(names, c)), c["value"])
        for names, cs in releases
        for c in cs
        if c["value"] is not None
    ]
    a_eq = np.array([r for r, _ in published])
    b_eq = np.array([v for _, v in published])
    ranges = {}
    for names, cells in releases:
        for c in cells:
            if c["value"] is None:
                target = row(labels(names, c))
                low = linprog(target, A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
                high = linprog(-target, A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
                ranges[(tuple(c["row"]), tuple(c["col"]))] = (
                    low.fun,
                    -high.fun if high.status == 0 else np.inf,
                )
    return ranges


def _nothing_narrowed(world, *output_ids: int) -> None:
    """No suppressed cell of these tables of ethnicity by sex can be narrowed below the
    threshold from all of them together."""
    released = [outputs.get(world.db, i).result["cells"] for i in output_ids]
    ranges = _attacker_ranges([(["ethnicity", "sex"], cells) for cells in released])
    assert ranges
    # The small cells (a table may also be hidden whole by differencing, its figures given
    # by the other: those are released, not small).
    small = {
        (tuple(c["row"]), tuple(c["col"]))
        for cells in released
        for c in cells
        if any("fewer than 10 people contribute" in r for r in c["reasons"])
    }
    assert small
    for key, (low, high) in ranges.items():
        if key in small:
            assert high - low >= 10 - 1e-6, (key, low, high)


def test_a_table_released_with_and_without_margins_keeps_its_small_cells_hidden(world):
    """The same table twice, without margins then with them, on the project's real extracts:
    nothing suppressed in either can be narrowed below the threshold from both together (the
    case where the second must hide more is built in tests/unit/test_linked_tables.py)."""
    fields = {
        "rows": ["ethnicity"],
        "cols": ["sex"],
        "filters": [{"column": "idaci_decile", "op": "lte", "value": 5}],  # this test's own
    }
    first, first_result = outputs.check(
        world.home, world.db, world.project, table("ethnicity by sex", **fields), ALICE
    )
    assert any(c.value is None for c in first_result.cells), "the table has small cells"
    released_by_checkers(world, first.id)
    second, _ = outputs.check(
        world.home,
        world.db,
        world.project,
        table("ethnicity by sex, with totals", margins=True, **fields),
        ALICE,
    )
    _nothing_narrowed(world, first.id, second.id)


def test_tables_over_the_same_people_are_linked_however_their_filters_are_written(world):
    """As above, but the second table's filters are written otherwise and keep the same rows
    (another order, and a condition that excludes no one): it is solved with the first, and
    its result says so."""
    # A population of this test's own, apart from the others' (every figure is compared).
    own = [{"column": "idaci_decile", "op": "gte", "value": 6}]
    fields = {"rows": ["ethnicity"], "cols": ["sex"]}
    first, _ = outputs.check(
        world.home, world.db, world.project, table("by ethnicity", filters=own, **fields), ALICE
    )
    released_by_checkers(world, first.id)
    reworded = [{"column": "sex", "op": "not_null"}, *own]
    second, _ = outputs.check(
        world.home,
        world.db,
        world.project,
        table("by ethnicity, with totals", margins=True, filters=reworded, **fields),
        ALICE,
    )
    assert f"#{first.id} 'by ethnicity'" in second.result["linked_with"]
    _nothing_narrowed(world, first.id, second.id)


def test_a_summary_does_not_give_away_what_an_earlier_summary_hid(world):
    """Counts and means by ethnicity, then the same over everyone: everyone minus the groups
    shown would be the hidden group (its count, and its mean through the sums)."""
    # Over the pupils of deciles 1 to 5, as the table of ethnicity by sex above: over everyone,
    # its total would be compared with other tests' releases over everyone but a few.
    own = [{"column": "idaci_decile", "op": "lte", "value": 5}]
    fields = {
        "kind": "summary",
        "dataset": "pupils",
        "value": "idaci_decile",
        "statistics": ["count", "mean"],
        "filters": own,
    }
    by_group, grouped = outputs.check(
        world.home,
        world.db,
        world.project,
        specs.parse({**fields, "name": "by ethnicity", "rows": ["ethnicity"]}),
        ALICE,
    )
    hidden = {c.row for c in grouped.cells if c.value is None}
    assert hidden, "a small group is hidden"
    released_by_checkers(world, by_group.id)
    _, overall = outputs.check(
        world.home, world.db, world.project, specs.parse({**fields, "name": "everyone"}), ALICE
    )
    assert all(c.value is None for c in overall.cells)
    # Named: the summary by ethnicity, or another release of the shared test project that
    # differencing by populations compares it with first.
    assert all(any("earlier release #" in r for r in c.reasons) for c in overall.cells)
