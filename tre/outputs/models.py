"""Statistical models (OLS, logit, probit) fitted with statsmodels, checked for residual
degrees of freedom. The coefficients table is what would be released."""

from __future__ import annotations

import warnings
from typing import Any

import duckdb
import numpy as np

from tre.exceptions import InvalidInput
from tre.outputs import rules as R
from tre.outputs.results import CheckedCell, Result


def fit(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    where: str,
    formula: str,
    family: str,
    rule_set: R.RuleSet,
    description: dict[str, Any],
) -> Result:
    import statsmodels.formula.api as smf
    from patsy import PatsyError

    data = con.execute(f"SELECT * FROM {relation} WHERE {where}").df()
    fitter = {"ols": smf.ols, "logit": smf.logit, "probit": smf.probit}[family]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fitter(formula, data=data)
            fitted = model.fit(disp=0) if family != "ols" else model.fit()
    except (PatsyError, ValueError, np.linalg.LinAlgError) as e:
        raise InvalidInput(f"The model {formula!r} cannot be fitted: {e}") from None
    dof = float(fitted.df_resid)
    findings = R.degrees_of_freedom(dof, rule_set)
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
        {**description, "formula": formula, "family": family},
        tuple(cells),
        rule_set,
        extra,
    )
