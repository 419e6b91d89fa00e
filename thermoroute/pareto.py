"""Trade-off fronts: the optimum as one objective weight sweeps around its default.

The objective (docs/model.md §6) prices carbon, water and latency with three weights. How
the answer moves with each is what an operator asks before trusting one value:
:func:`sweep` solves the scenario at log-spaced multiples of one weight — the scenario's own
value always among them — with the centralised solver (an interior point, exact to its
tolerance and fast on fleets of tens of sites), and beside each point the
temperature-unaware plan for the same weights, so the front shows what temperature-awareness
adds at every price. Every point is charged under the true model with its own weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from common.baselines import run_solver
from common.bounds import bound_of
from common.compare import REFERENCE
from common.scenario import Scenario

#: What ``--vary`` names: the objective's field, its unit, the front's y quantity.
WEIGHTS: dict[str, tuple[str, str, str, str]] = {
    "carbon": ("carbon_aud_per_kg", "AUD/kg", "carbon_kg", "carbon [kg CO2-e]"),
    "water": ("water_aud_per_l", "AUD/L", "water_l", "water [L]"),
    "latency": ("latency_aud_per_req_s", "AUD/(request·s)", "ttft_mean_ms", "mean TTFT [ms]"),
}
#: The sweep spans the default divided and multiplied by this.
SPAN = 10.0
#: Charged terms written per point.
TERMS = (
    "objective_aud", "energy_cost_aud", "carbon_kg", "water_l", "cooling_kwh", "facility_kwh",
    "latency_req_s", "ttft_mean_ms",
)  # fmt: skip
#: The solvers of every point: the temperature-aware optimum and its reference.
SOLVERS = ("central", REFERENCE)


class SweepError(ValueError):
    """A sweep that cannot be made (one line: the option, the value, what is allowed)."""


def weights_for(scenario: Scenario, vary: str, points: int) -> np.ndarray:
    """``points`` log-spaced weights from default/10 to default·10, the default among them
    (for an even count the point nearest to it is moved onto it), clipped to the
    documented bounds of the weight."""
    if vary not in WEIGHTS:
        raise SweepError(f"--vary {vary}: one of {', '.join(WEIGHTS)}")
    if not 2 <= points <= 50:
        raise SweepError(f"--points {points}: an integer in [2, 50]")
    field, unit, _, _ = WEIGHTS[vary]
    default = float(getattr(scenario.objective, field))
    if not default > 0:
        raise SweepError(
            f"--vary {vary}: the scenario's {field} is {default:g} {unit}; a log-spaced sweep "
            "needs a positive default"
        )
    weights = default * np.logspace(-math.log10(SPAN), math.log10(SPAN), points)
    weights[np.argmin(np.abs(np.log(weights / default)))] = default
    bound = bound_of("scenario.toml", field)
    if bound is not None:
        weights = np.clip(weights, bound.low, bound.high)
    return np.unique(weights)


def sweep(
    scenario: Scenario,
    vary: str,
    points: int = 7,
    on_point: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Solve ``scenario`` at every weight of :func:`weights_for`.

    Returns
    -------
    DataFrame
        One row per weight and solver: ``vary, weight_name, weight, factor, default,
        solver`` and every term of :data:`TERMS` (charged with that row's weights).
    """
    field, _, _, _ = WEIGHTS[vary]
    weights = weights_for(scenario, vary, points)
    default = float(getattr(scenario.objective, field))
    rows = []
    total = len(weights) * len(SOLVERS)
    for k, weight in enumerate(weights):
        varied = replace(scenario, objective=replace(scenario.objective, **{field: float(weight)}))
        for m, solver in enumerate(SOLVERS):
            run = run_solver(solver, varied)
            totals = run.evaluation.totals_with_objective()
            rows.append(
                {
                    "vary": vary,
                    "weight_name": field,
                    "weight": float(weight),
                    "factor": float(weight / default),
                    "default": bool(np.isclose(weight, default, rtol=1e-12)),
                    "solver": solver,
                    **{t: totals.get(t) for t in TERMS},
                }
            )
            if on_point is not None:
                on_point(k * len(SOLVERS) + m + 1, total)
    return pd.DataFrame(rows)
