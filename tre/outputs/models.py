"""Statistical models (OLS, logit, probit) fitted with statsmodels, checked for residual
degrees of freedom and for small groups. The coefficients table is what would be released.

A formula is read by the TRE, not by patsy: ``outcome ~ term + term …`` where a term is a
column, ``C(column)`` (a categorical), an interaction ``a:b`` or ``a*b`` (both and their
interaction), ``1`` or ``0``/``- 1`` (with or without an intercept). Nothing else is accepted
(patsy would evaluate ``I(…)`` and any call as Python), every name must be a column of the
output's records, and the person pseudonym is never one. The formula handed to statsmodels is
rebuilt from what was read.

A coefficient of a categorical describes the people at that level (with a logit or probit,
those at that level with each outcome): like a table's cell, each such group must hold at
least ``threshold`` people, else the model fails.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tre.catalog import Type
from tre.exceptions import InvalidInput
from tre.outputs import rules as R
from tre.outputs.results import CheckedCell, Result
from tre.sql import Connection, identifier

_TOKEN = re.compile(
    r"\s*(?:C\(\s*(?P<categorical>[A-Za-z_]\w{0,62})\s*\)|(?P<name>[A-Za-z_]\w{0,62})"
    r"|(?P<number>\d+)|(?P<op>[~+*:-]))",
    re.ASCII,  # names as tre.sql.IDENTIFIER has them: no other letters or digits
)
#: Column types a model reads as categorical (patsy does the same for text and yes/no).
CATEGORICAL = (Type.STRING, Type.BOOLEAN)
#: The most coefficients a model may have: more describes groups too small to check one by one
#: (a table in disguise), and fitting and checking it would not finish in time.
MAX_COEFFICIENTS = 200
FORMULA_HELP = (
    "write `outcome ~ term + term`, each term a column, C(column), a:b or a*b, or 1 / - 1 "
    "for the intercept"
)


@dataclasses.dataclass(frozen=True)
class Factor:
    column: str
    categorical: bool  # written C(column)

    @property
    def patsy(self) -> str:
        return f"C({self.column})" if self.categorical else self.column


@dataclasses.dataclass(frozen=True)
class Formula:
    outcome: str
    terms: tuple[tuple[Factor, ...], ...]
    intercept: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.outcome, *(f.column for t in self.terms for f in t)]))

    @property
    def patsy(self) -> str:
        parts = ["1" if self.intercept else "0"]
        parts += [":".join(f.patsy for f in term) for term in self.terms]
        return f"{self.outcome} ~ {' + '.join(parts)}"


def parse_formula(text: str) -> Formula:
    """Read ``text`` in the TRE's formula grammar; InvalidInput says what is wrong."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidInput(
                f"The formula {text!r} cannot be read at {text[position:].strip()[:20]!r}: "
                f"{FORMULA_HELP}."
            )
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    if len(tokens) < 3 or tokens[0][0] != "name" or tokens[1] != ("op", "~"):
        raise InvalidInput(f"The formula {text!r} has no outcome: {FORMULA_HELP}.")
    terms: list[tuple[Factor, ...]] = []
    intercept = True
    sign, term, expect_factor = "+", [], True
    for kind, value in [*tokens[2:], ("op", "+")]:
        if expect_factor:
            if kind == "op" and value == "-" and not term and sign == "+" and not terms:
                sign = "-"
                continue
            if kind == "number" and not term and value in ("0", "1"):
                intercept = (value == "1") == (sign == "+")
                term = None  # the intercept term: nothing may be joined to it
            elif kind in ("name", "categorical") and term is not None and sign == "+":
                term.append(Factor(value, kind == "categorical"))
            else:
                raise InvalidInput(
                    f"The formula {text!r} cannot use {value!r} there: {FORMULA_HELP}."
                )
            expect_factor = False
            continue
        if kind != "op" or value == "~":
            raise InvalidInput(f"The formula {text!r} cannot use {value!r} there: {FORMULA_HELP}.")
        if value in (":", "*"):
            if term is None:
                raise InvalidInput(f"The formula {text!r} joins a term to the intercept.")
            if value == "*":
                term.append(Factor("*", False))  # marks where a*b expands
            expect_factor = True
            continue
        if term:
            terms += _expanded(term)
        sign, term, expect_factor = value, [], True
    return Formula(tokens[0][1], tuple(dict.fromkeys(terms)), intercept)


def _expanded(term: list[Factor]) -> list[tuple[Factor, ...]]:
    """a*b*c:d → every product of the parts separated by ``*`` (a, b, c:d, a:b, …)."""
    parts: list[list[Factor]] = [[]]
    for factor in term:
        if factor.column == "*":
            parts.append([])
        else:
            parts[-1].append(factor)
    out: list[tuple[Factor, ...]] = []
    for mask in range(1, 2 ** len(parts)):
        chosen = [f for i, part in enumerate(parts) if mask >> i & 1 for f in part]
        out.append(tuple(dict.fromkeys(chosen)))
    return sorted(out, key=len)


def check_columns(formula: Formula, columns: Mapping[str, Type], unit: str) -> list[str]:
    """Problems with the columns a formula names (empty: none)."""
    problems = []
    for name in formula.columns:
        if name == unit:
            problems.append(f"the formula names {unit}, which a model may not use")
        elif name not in columns:
            problems.append(f"the formula names {name!r}; available: {', '.join(sorted(columns))}")
        elif columns[name] is Type.DATE:
            problems.append(f"{name} is a date: a model takes numbers, text or yes/no columns")
    return problems


def check_size(
    con: Connection, relation: str, where: str, formula_text: str, columns: Mapping[str, Type]
) -> None:
    """Refuse, before fitting, a model of more than :data:`MAX_COEFFICIENTS` coefficients
    (each categorical factor counts its levels but one, interactions multiply)."""
    formula = parse_formula(formula_text)
    if any(name not in columns for name in formula.columns):
        return  # fit() says which column is unknown
    categorical = sorted(
        {
            f.column
            for term in formula.terms
            for f in term
            if f.categorical or columns[f.column] in CATEGORICAL
        }
    )
    levels: dict[str, int] = {}
    if categorical:
        counts = ", ".join(f"count(DISTINCT {identifier(c)})" for c in categorical)
        row = con.execute(f"SELECT {counts} FROM {relation} WHERE {where}").fetchone()
        levels = dict(zip(categorical, (int(n) for n in row), strict=True))
    coefficients = int(formula.intercept)
    for term in formula.terms:
        size = 1
        for factor in term:
            size *= max(levels.get(factor.column, 2) - 1, 1)
        coefficients += size
    if coefficients > MAX_COEFFICIENTS:
        raise InvalidInput(
            f"The model {formula_text!r} would have {coefficients:,} coefficients, more than "
            f"the {MAX_COEFFICIENTS} the TRE checks in one model: merge small categories, use "
            "fewer interactions, or fit separate models."
        )


def groupings(formula: Formula, columns: Mapping[str, Type], family: str) -> list[tuple]:
    """The groups of people a fit's coefficients describe: the categories of each term (with
    the outcome's, for a logit or probit), each grouping once."""
    outcome = [formula.outcome] if family != "ols" else []
    by_term = [
        [f.column for f in term if f.categorical or columns[f.column] in CATEGORICAL]
        for term in formula.terms
    ]
    return [g for g in dict.fromkeys(tuple(g + outcome) for g in [*by_term, []]) if g]


def _groups(
    con: Connection,
    relation: str,
    where: str,
    formula: Formula,
    columns: Mapping[str, Type],
    family: str,
    unit: str,
    rule_set: R.RuleSet,
) -> list[R.Finding]:
    """A finding for each group a coefficient describes with fewer than ``threshold`` people."""
    complete = " AND ".join(
        [f"({where})", *(f"{identifier(c)} IS NOT NULL" for c in formula.columns)]
    )
    findings = []
    for grouping in groupings(formula, columns, family):
        keys = ", ".join(identifier(c) for c in grouping)
        small = con.execute(
            f"SELECT count(*) FROM (SELECT {keys} FROM {relation} WHERE {complete} "
            f"GROUP BY ALL HAVING count(DISTINCT {identifier(unit)}) < "
            f"{con.bind(rule_set.threshold)})"
        ).fetchone()[0]
        if small:
            findings.append(
                R.Finding(
                    "threshold",
                    R.FAIL,
                    f"{small} group(s) of {' × '.join(grouping)} hold fewer than "
                    f"{rule_set.threshold} people, and the model's coefficients would describe "
                    "them: merge small categories or leave the term out",
                )
            )
    return findings


def fit(
    con: Connection,
    relation: str,
    where: str,
    formula_text: str,
    family: str,
    rule_set: R.RuleSet,
    description: dict[str, Any],
    columns: Mapping[str, Type],
    unit: str,
    more: Sequence[R.Finding] = (),
) -> Result:
    """Fit the model and check it; ``more`` adds findings about the whole model (e.g. from
    differencing by populations)."""
    import statsmodels.formula.api as smf
    from patsy import PatsyError

    formula = parse_formula(formula_text)
    problems = check_columns(formula, columns, unit)
    if problems:
        raise InvalidInput(f"The model {formula_text!r} cannot be fitted: {'; '.join(problems)}.")
    selected = ", ".join(identifier(c) for c in formula.columns)
    data = con.execute(f"SELECT {selected} FROM {relation} WHERE {where}").df()
    fitter = {"ols": smf.ols, "logit": smf.logit, "probit": smf.probit}[family]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fitter(formula.patsy, data=data)
            fitted = model.fit(disp=0) if family != "ols" else model.fit()
    except (PatsyError, ValueError, np.linalg.LinAlgError) as e:
        # Only the kind of error: its text may quote values of the data.
        raise InvalidInput(
            f"The model {formula_text!r} cannot be fitted ({type(e).__name__}): check that "
            "the outcome suits the family (0/1 or yes/no for logit and probit), that each "
            "categorical has two levels or more, and that the terms are not collinear."
        ) from None
    dof = float(fitted.df_resid)
    findings = R.degrees_of_freedom(dof, rule_set)
    findings += _groups(con, relation, where, formula, columns, family, unit, rule_set)
    findings += list(more)
    status = R.status(findings)
    cells = []
    conf = fitted.conf_int()
    for name in fitted.params.index:
        for statistic, value in (
            ("coefficient", fitted.params[name]),
            ("standard error", fitted.bse[name]),
            ("p value", fitted.pvalues[name]),
            ("ci lower", conf.loc[name, 0]),
            ("ci upper", conf.loc[name, 1]),
        ):
            released = None if status == R.FAIL else float(value)
            cells.append(
                CheckedCell(
                    (str(name),),
                    (statistic,),
                    released,
                    status,
                    tuple(f.reason for f in findings),
                    "primary" if status == R.FAIL else None,
                    tuple(f.rule for f in findings),
                )
            )
    extra = {
        "observations": int(fitted.nobs),
        "residual_dof": dof,
        "status": status,
    }
    return Result(
        "model",
        {**description, "formula": formula_text, "family": family},
        tuple(cells),
        rule_set,
        extra,
    )
