"""The project commands, as an operator runs them in the local profile."""

import json
from pathlib import Path

from tre.cli import main

PROJECTS = Path(__file__).resolve().parents[2] / "projects"


def run(environ, capsys, *argv, code=0):
    assert main(list(argv), environ) == code, capsys.readouterr()
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_an_application_from_submission_to_closure(home_environ, synthetic, capsys):
    env = home_environ
    run(env, capsys, "ingest", str(synthetic.dfe))
    run(env, capsys, "ingest", str(synthetic.nhs))
    spec = str(PROJECTS / "fsm-ae.yaml")
    assert "Say who is acting" in run(env, capsys, "project", "submit", spec, code=65)
    assert "Only the project's lead (bob)" in run(
        env, capsys, "project", "submit", spec, "--as", "alice", code=77
    )
    assert "waits for the decision of each custodian" in run(
        env, capsys, "project", "submit", spec, "--as", "bob"
    )
    shown = run(env, capsys, "project", "show", "fsm-ae", "--as", "dora")
    assert "disclosure risk of the extract as requested" in shown and "smallest class" in shown
    assert "is not a custodian of nhs" in run(
        env, capsys, "project", "approve", "fsm-ae", "--as", "dora", "--custodian", "nhs", code=77
    )
    run(
        env,
        capsys,
        "project",
        "approve",
        "fsm-ae",
        "--as",
        "dora",
        "--columns",
        "pupils=sex,fsm_eligible,academic_year,nc_year",
        "--where",
        "pupils:idaci_decile lte 5",
    )
    assert "only an approved project is provisioned" in run(
        env, capsys, "project", "provision", "fsm-ae", "--as", "ada", code=65
    )
    run(env, capsys, "project", "approve", "fsm-ae", "--as", "hugh")
    out = run(env, capsys, "project", "provision", "fsm-ae", "--as", "ada")
    assert "Provisioned project fsm-ae" in out and "hes_ae" in out
    assert "already provisioned; nothing changed" in run(
        env, capsys, "project", "provision", "fsm-ae", "--as", "ada"
    )
    listed = run(env, capsys, "project", "list", "--as", "olga")
    assert "fsm-ae" not in listed
    assert "provisioned" in run(env, capsys, "project", "list", "--as", "bob")
    shown = json.loads(run(env, capsys, "project", "show", "fsm-ae", "--json"))
    assert shown["approved"]["datasets"]["pupils"] == [
        "sex",
        "fsm_eligible",
        "academic_year",
        "nc_year",
    ]
    run(env, capsys, "project", "suspend", "fsm-ae", "--as", "ada", "--reason", "audit check")
    assert "is now provisioned" in run(env, capsys, "project", "resume", "fsm-ae", "--as", "ada")
    assert "Closed project fsm-ae" in run(
        env, capsys, "project", "close", "fsm-ae", "--as", "ada", "--reason", "finished"
    )
    assert "closed cannot be" in run(
        env, capsys, "project", "suspend", "fsm-ae", "--as", "ada", "--reason", "x", code=65
    )
    assert main(["audit", "verify"], env) == 0


def test_a_rejection_is_shown_to_the_applicant(home_environ, synthetic, capsys):
    env = home_environ
    run(env, capsys, "ingest", str(synthetic.dfe))
    run(env, capsys, "project", "submit", str(PROJECTS / "asthma-ks4.yaml"), "--as", "alice")
    run(
        env,
        capsys,
        "project",
        "reject",
        "asthma-ks4",
        "--as",
        "hugh",
        "--reason",
        "Primary diagnoses of every admission are more than the purpose needs.",
    )
    shown = run(env, capsys, "project", "show", "asthma-ks4", "--as", "alice")
    assert "state: rejected" in shown and "more than the purpose needs" in shown
