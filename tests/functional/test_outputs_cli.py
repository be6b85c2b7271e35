"""`tre outputs`, as a researcher runs it in the local profile."""

import json
from pathlib import Path

from tre.cli import main

PROJECTS = Path(__file__).resolve().parents[2] / "projects"


def run(environ, capsys, *argv, code=0):
    assert main(list(argv), environ) == code, capsys.readouterr()
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_check_dp_budget_and_listing(home_environ, synthetic, capsys, tmp_path):
    env = home_environ
    run(env, capsys, "ingest", str(synthetic.dfe))
    run(env, capsys, "ingest", str(synthetic.nhs))
    run(env, capsys, "project", "submit", str(PROJECTS / "fsm-ae.yaml"), "--as", "bob")
    run(env, capsys, "project", "approve", "fsm-ae", "--as", "dora")
    run(env, capsys, "project", "approve", "fsm-ae", "--as", "hugh")
    run(env, capsys, "project", "provision", "fsm-ae", "--as", "ada")

    table = tmp_path / "table.yaml"
    table.write_text(
        "name: pupils by fsm\nkind: table\ndataset: pupils\nrows: [fsm_eligible]\n"
        "cols: [sex]\nmargins: true\n"
    )
    out = run(env, capsys, "outputs", "check", str(table), "--project", "fsm-ae", "--as", "bob")
    assert "Output #1 stored." in out and "pupils by fsm:" in out
    assert "not a member" in run(
        env,
        capsys,
        "outputs",
        "check",
        str(table),
        "--project",
        "fsm-ae",
        "--as",
        "alice",
        code=77,
    )
    shown = json.loads(run(env, capsys, "outputs", "show", "1", "--json"))
    assert shown["summary"]["cells"] == len(shown["cells"]) > 0

    dp = tmp_path / "dp.yaml"
    dp.write_text("name: count\nkind: dp\ndataset: pupils\nquery: count\nepsilon: 0.25\n")
    preview = run(env, capsys, "outputs", "dp", str(dp), "--project", "fsm-ae", "--as", "bob")
    assert "costing ε = 0.25 of the 1 left" in preview and "Nothing spent" in preview
    spent = run(
        env, capsys, "outputs", "dp", str(dp), "--project", "fsm-ae", "--as", "bob", "--spend"
    )
    assert "ε left: 0.75" in spent
    assert "0.75 left" in run(env, capsys, "outputs", "budget", "--project", "fsm-ae")

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: table\ndataset: pupils\nrows: [sex]\nstatistic: mode\n")
    assert "statistic: one of" in run(
        env, capsys, "outputs", "check", str(bad), "--project", "fsm-ae", "--as", "bob", code=65
    )
    listed = run(env, capsys, "outputs", "list", "--project", "fsm-ae", "--as", "bob")
    assert "#1" in listed and "dp" in listed
