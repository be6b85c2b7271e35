"""`tre outputs`: check outputs against the disclosure rules, run DP queries, import ACRO."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tre.cli import Context, cli, home_option, pass_context
from tre.cli.projects import _person, as_option


def render(result: dict) -> list[str]:
    """A checked table as text: suppressed cells show as `~`, cells to review end with `?`."""
    lines = [f"{result.get('name') or result['kind']}: {result['summary']['status'].upper()}"]
    cells = result.get("cells", [])
    if not cells:
        return lines + [f"  {r}" for r in result["summary"].get("reasons", [])]
    cols = list(dict.fromkeys(tuple(c["col"]) for c in cells))
    rows = list(dict.fromkeys(tuple(c["row"]) for c in cells))
    by_key = {(tuple(c["row"]), tuple(c["col"])): c for c in cells}

    def show(cell) -> str:
        if cell is None:
            return ""
        if cell["value"] is None:
            return "~"
        value = cell["value"]
        text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"
        return text + ("?" if cell["status"] == "review" else "")

    header = [" / ".join(r) for r in [("",)]] + [" / ".join(c) for c in cols]
    table = [[" / ".join(r)] + [show(by_key.get((r, c))) for c in cols] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *table, strict=True)]
    for row in [header, *table]:
        lines.append("  " + "  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True)))
    reasons = {}
    for c in cells:
        for reason in c["reasons"]:
            reasons.setdefault(reason, 0)
            reasons[reason] += 1
    for reason, n in reasons.items():
        lines.append(f"  {n} cell(s): {reason}")
    summary = result["summary"]
    if summary.get("suppressed_primary") or summary.get("suppressed_secondary"):
        lines.append(
            f"  suppressed: {summary['suppressed_primary']} failing, "
            f"{summary['suppressed_secondary']} more to protect them (~)"
        )
    return lines


@cli.group("outputs")
def outputs_group() -> None:
    """Check outputs against the disclosure rules; DP queries; ACRO sessions."""


project_option = click.option("--project", "project_id", required=True, help="The project.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
rule_set_option = click.option(
    "--rule-set",
    type=click.Choice(["default", "opensafely"]),
    default="default",
    show_default=True,
    help="Which rules: the TRE's, or OpenSAFELY's (redact ≤ 7, round to 5).",
)


@outputs_group.command("check")
@home_option
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@as_option
@rule_set_option
@json_option
@pass_context
def outputs_check(ctx: Context, spec_file: Path, project_id: str, actor, rule_set, as_json):
    """Compute an output from its specification over the project's extracts and check it."""
    from tre import outputs
    from tre.home import Home
    from tre.outputs import specs

    output, result = outputs.check(
        Home(ctx.settings.home),
        ctx.database(),
        project_id,
        specs.load(spec_file),
        _person(actor),
        rule_set,
    )
    if as_json:
        click.echo(outputs.as_json(output))
        return
    click.echo(f"Output #{output.id} stored.")
    for line in render(result.as_dict()):
        click.echo(line)


@outputs_group.command("check-table")
@click.option(
    "--data",
    "data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A Parquet or CSV file.",
)
@click.option("--rows", required=True, help="Row variable(s), comma-separated.")
@click.option("--cols", default="", help="Column variable(s), comma-separated.")
@click.option("--values", "value", default=None, help="The column a sum or mean is of.")
@click.option(
    "--agg",
    type=click.Choice(["count", "sum", "mean", "median", "min", "max", "std"]),
    default="count",
    show_default=True,
    help="The statistic in each cell.",
)
@click.option("--unit", default=None, help="Column identifying a person (default: each record).")
@click.option("--margins", is_flag=True, help="Add row and column totals (All).")
@rule_set_option
@json_option
def outputs_check_table(data: Path, rows, cols, value, agg, unit, margins, rule_set, as_json):
    """Check a table built from a Parquet or CSV file (rules, suppression, no storage)."""
    import tempfile

    import duckdb

    from tre import sql
    from tre.exceptions import InvalidInput
    from tre.outputs import results, tables
    from tre.outputs import rules as R

    if agg != "count" and not value:
        raise InvalidInput(f"--agg {agg} needs --values COLUMN.")
    data = data.resolve()
    reader = "read_parquet" if data.suffix.lower() == ".parquet" else "read_csv"
    source = f"{reader}({sql.literal(data)})"
    temp = tempfile.TemporaryDirectory(prefix="tre-check-table-")
    # The file's own folder, read by the same sandboxed connection as the output worker's.
    con = sql.Connection(sql.sandboxed_duckdb(data.parent, Path(temp.name)))
    try:
        table = tables.compute(
            con,
            source,
            [r for r in rows.split(",") if r],
            [c for c in cols.split(",") if c],
            statistic=agg,
            value=value,
            unit=unit,
            margins=margins,
        )
    except duckdb.Error as e:
        raise InvalidInput(f"The table cannot be computed from {data.name}: {e}") from None
    finally:
        con.close()
        temp.cleanup()
    if table.statistic in ("count", "sum"):
        table = tables.with_empty_cells(table)
    result = results.check_table(table, R.RuleSet.named(rule_set)).as_dict()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for line in render(result):
            click.echo(line)


@outputs_group.command("dp")
@home_option
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@as_option
@click.option("--spend", is_flag=True, help="Spend the budget and run (else only show the cost).")
@json_option
@pass_context
def outputs_dp(ctx: Context, spec_file: Path, project_id: str, actor, spend: bool, as_json):
    """A differentially private query: show its cost and accuracy; with --spend, run it."""
    from tre import outputs
    from tre.home import Home
    from tre.outputs import privacy, specs

    db, person, spec = ctx.database(), _person(actor), specs.load(spec_file)
    plan = outputs.preview_dp(db, project_id, spec, person)
    granted, left = privacy.remaining(db, project_id)
    click.echo(
        f"{spec.name}: a DP {plan.query} costing ε = {plan.epsilon:g} of the "
        f"{left:g} left (of {granted:g}); {plan.accuracy}."
    )
    if not spend:
        click.echo("Nothing spent. Run again with --spend to spend it and see the result.")
        return
    output, result = outputs.run_dp(Home(ctx.settings.home), db, project_id, spec, person)
    if as_json:
        click.echo(outputs.as_json(output))
        return
    click.echo(f"Output #{output.id} stored; ε left: {privacy.remaining(db, project_id)[1]:g}.")
    for line in render(result):
        click.echo(line)


@outputs_group.command("budget")
@home_option
@project_option
@pass_context
def outputs_budget(ctx: Context, project_id: str) -> None:
    """The project's privacy budget: granted and left."""
    from tre.outputs import privacy

    granted, left = privacy.remaining(ctx.database(), project_id)
    click.echo(f"Project {project_id}: ε = {granted:g} granted, {left:g} left.")


@outputs_group.command("add-file")
@home_option
@click.argument("path")
@project_option
@as_option
@click.option("--description", default="", help="What the file shows.")
@pass_context
def outputs_add_file(ctx: Context, path: str, project_id: str, actor, description: str):
    """Add a plain file of USER's workspace folder in the project as an output (PATH relative
    to that folder; checked on its face; always reviewed)."""
    from tre import outputs
    from tre.home import Home

    output = outputs.add_file(
        Home(ctx.settings.home), ctx.database(), project_id, path, _person(actor), description
    )
    click.echo(f"Output #{output.id} ({output.name}) stored for review.")
    for line in render(output.result):
        click.echo(line)


@outputs_group.command("import-acro")
@home_option
@click.argument("folder")
@project_option
@as_option
@pass_context
def outputs_import_acro(ctx: Context, folder: str, project_id: str, actor) -> None:
    """Import an ACRO session (results.json and its files, in FOLDER of USER's workspace folder
    in the project) as outputs for review."""
    from tre import outputs
    from tre.home import Home

    db, home, person = ctx.database(), Home(ctx.settings.home), _person(actor)
    imported = outputs.import_acro(home, db, project_id, folder, person)
    for output, item in imported:
        click.echo(
            f"Output #{output.id}: {output.name} from ACRO {item['uid']} "
            f"(ACRO said {item['status']}); for review."
        )
    if not imported:
        click.echo("The ACRO session holds no outputs.")


@outputs_group.command("list")
@home_option
@project_option
@as_option
@pass_context
def outputs_list(ctx: Context, project_id: str, actor) -> None:
    """List a project's outputs."""
    from tre import outputs

    rows = outputs.of_project(ctx.database(), project_id, _person(actor, needed=False))
    for o in rows:
        released = f"released {o.released_at}" if o.released_at else ""
        click.echo(f"#{o.id:<5} {o.kind:<8} {o.status:<7} {o.name}  {released}")
    if not rows:
        click.echo("No outputs yet.")


@outputs_group.command("show")
@home_option
@click.argument("output_id", type=int)
@json_option
@pass_context
def outputs_show(ctx: Context, output_id: int, as_json: bool) -> None:
    """Show a stored output and its check."""
    from tre import outputs

    output = outputs.get(ctx.database(), output_id)
    if as_json:
        click.echo(outputs.as_json(output))
    else:
        for line in render(output.result):
            click.echo(line)
