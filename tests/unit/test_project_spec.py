"""Project specifications: the examples are valid; every bad field is named."""

from pathlib import Path

import pytest
import yaml

from tre.exceptions import InvalidInput
from tre.projects import spec

PROJECTS = Path(__file__).resolve().parents[2] / "projects"
EXAMPLES = sorted(PROJECTS.glob("*.yaml"))


def test_there_are_two_example_projects():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_examples_are_valid_and_round_trip(path):
    loaded = spec.load(path)
    assert loaded.id == path.stem
    assert spec.ProjectSpec.from_dict(loaded.as_dict()) == loaded
    assert loaded.lead in loaded.members and loaded.custodians == ("dfe", "nhs")


def example() -> dict:
    return yaml.safe_load((PROJECTS / "asthma-ks4.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"id": "Bad_ID"}, "id", "is not a project id"),
        ({"lead": "Alice Smith"}, "lead", "is not a username"),
        ({"end": "2025-01-01"}, "end", "must come after start"),
        ({"end": "2040-01-01"}, "end", "at most 5 years"),
        ({"start": "soon"}, "start", "a date YYYY-MM-DD"),
        ({"privacy_budget": 0}, "privacy_budget", "0 < ε"),
        ({"privacy_budget": 50}, "privacy_budget", "0 < ε"),
        ({"lay_summary": "short"}, "lay_summary", "at least 40 characters"),
        ({"datasets": {"pupil": ["sex"]}}, "datasets.pupil", "no such dataset"),
        ({"datasets": {"pupils": ["date_of_birth"]}}, "datasets.pupils", "not released columns"),
        ({"datasets": {"pupils": ["upn"]}}, "datasets.pupils", "not released columns"),
        ({"datasets": {"pupils": []}}, "datasets.pupils", "a list of columns"),
        ({"cohort": [{"dataset": "deaths", "where": []}]}, "cohort[0]", "requested datasets"),
        (
            {
                "cohort": [
                    {
                        "dataset": "pupils",
                        "where": [{"column": "nc_year", "op": "like", "value": 1}],
                    }
                ]
            },
            "cohort[0].where[0]",
            "op 'like' is not one of",
        ),
        (
            {
                "cohort": [
                    {
                        "dataset": "pupils",
                        "where": [{"column": "nc_year", "op": "eq", "value": "11; DROP TABLE"}],
                    }
                ]
            },
            "cohort[0].where[0]",
            "an integer is required",
        ),
        (
            {
                "cohort": [
                    {"dataset": "pupils", "where": [{"column": "sex", "op": "eq", "value": "X"}]}
                ]
            },
            "cohort[0].where[0]",
            "one of M, F",
        ),
        (
            {
                "cohort": [
                    {
                        "dataset": "pupils",
                        "where": [{"column": "academic_year", "op": "between", "value": [2019]}],
                    }
                ]
            },
            "cohort[0].where[0]",
            "[low, high]",
        ),
        ({"output_rules": {"threshold": 5}}, "output_rules.threshold", "only make rules stricter"),
        ({"output_rules": {"magic": 1}}, "output_rules.magic", "unknown rule"),
        ({"output_rules": {"threshold": float("nan")}}, "output_rules.threshold", "finite"),
        ({"output_rules": {"threshold": float("inf")}}, "output_rules.threshold", "finite"),
        ({"id": "apply"}, "id", "names a page of the portal"),
        ({"compute": 4}, "compute", "a mapping of workers"),
        ({"compute": {"gpus": 1}}, "compute.gpus", "unknown"),
        ({"compute": {"workers": 0}}, "compute.workers", "a whole number from 1 to 64"),
        ({"compute": {"worker_cores": 1.5}}, "compute.worker_cores", "a whole number"),
        ({"compute": {"worker_memory_gb": 1000}}, "compute.worker_memory_gb", "0.25 to 256"),
        ({"compute": {"workers": True}}, "compute.workers", "a whole number"),
    ],
)
def test_each_bad_field_is_named_with_what_to_do(change, field, says):
    data = {**example(), **change}
    with pytest.raises(InvalidInput) as e:
        spec.ProjectSpec.from_dict(data, "app.yaml")
    message = str(e.value)
    assert message.startswith("app.yaml is not a valid project specification")
    assert f"{field}:" in message and says in message, message


def test_all_problems_are_reported_at_once():
    data = {**example(), "id": "X", "privacy_budget": -1, "datasets": {"nope": ["x"]}}
    with pytest.raises(InvalidInput) as e:
        spec.ProjectSpec.from_dict(data)
    assert str(e.value).count("\n  - ") >= 3


def test_cohort_conditions_become_sql_with_typed_bound_values():
    from tre.catalog import Type

    bound = []

    def bind(value):
        bound.append(value)
        return f"${len(bound)}"

    condition = spec.Condition("sex", "in", ["M", "F'; --"])
    assert condition.sql(Type.STRING, bind) == '"sex" IN ($1, $2)'
    assert bound == ["M", "F'; --"]  # the text is a value, never SQL
    assert spec.Condition("nc_year", "between", ["10", 11]).sql(Type.INTEGER, bind) == (
        '"nc_year" BETWEEN $3 AND $4'
    )
    assert bound[2:] == [10, 11]  # converted to the column's type
    with pytest.raises(InvalidInput, match=r"'eleven' does not fit column nc_year \(integer\)"):
        spec.Condition("nc_year", "eq", "eleven").sql(Type.INTEGER, bind)


def test_a_missing_file_and_bad_yaml_are_reported(tmp_path):
    with pytest.raises(InvalidInput, match="There is no project specification"):
        spec.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed")
    with pytest.raises(InvalidInput, match="is not valid YAML"):
        spec.load(bad)


def test_compute_unset_is_the_settings_and_narrowing_keeps_the_smaller():
    from tre.config import Settings

    settings = Settings.from_environ({"TRE_DASK_MAX_WORKERS": "6"})
    asked = spec.ProjectSpec.from_dict({**example(), "compute": {"worker_cores": 2}})
    granted = asked.compute.granted(settings)
    assert (granted.workers, granted.worker_cores) == (6, 2)
    assert granted.worker_memory_gb == settings.dask_worker_memory_gb
    narrowed = asked.compute.narrowed(spec.Compute(workers=3, worker_cores=4))
    assert narrowed == spec.Compute(workers=3, worker_cores=2)
    # A custodian's "narrowing" of what the application left to the TRE's default (6
    # workers) never takes it past that default (found by the review).
    wider = asked.compute.narrowed(spec.Compute(workers=10))
    assert wider.granted(settings, asked.compute).workers == 6
    assert spec.Compute(workers=3).granted(settings, asked.compute).workers == 3
