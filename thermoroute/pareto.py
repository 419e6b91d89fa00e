"""Trade-off fronts: every plan as one objective weight sweeps around its default.

The objective (docs/model.md §6) prices carbon, water and latency with three weights. How the answer
moves with each is what an operator asks before trusting one value: :func:`sweep` solves the
scenario at log-spaced multiples of one weight — the scenario's own value always among them — with
the centralised solver (an interior point, exact to its tolerance and fast on fleets of tens of
sites) and, beside it, with every baseline :mod:`thermoroute.common.baselines` registers, each
planned for the same weights. Every plan is charged under the true model with its point's weights,
and every term of the objective is kept: a picture of two terms alone (energy cost against carbon)
can show a baseline "better" in both while it loses the objective through the terms not drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from thermoroute.common.baselines import SOLVERS as REGISTERED
from thermoroute.common.baselines import run_solver
from thermoroute.common.bounds import bound_of
from thermoroute.common.compare import OPTIMUM, percent_change
from thermoroute.common.scenario import Scenario
from thermoroute.report.figures import pareto_panels

#: What ``--vary`` names: the objective's field and its unit.
WEIGHTS: dict[str, tuple[str, str]] = {
    "carbon": ("carbon_aud_per_kg", "AUD/kg"),
    "water": ("water_aud_per_l", "AUD/L"),
    "latency": ("latency_aud_per_req_s", "AUD/(request·s)"),
}
#: The sweep spans the default divided and multiplied by this.
SPAN = 10.0
#: Charged terms written per point.
TERMS = (
    "objective_aud", "energy_cost_aud", "carbon_kg", "water_l", "cooling_kwh", "facility_kwh",
    "latency_req_s", "ttft_mean_ms",
)  # fmt: skip
#: The solvers of every point: the temperature-aware optimum first, then every registered #:
#: baseline (a baseline added to :data:`thermoroute.common.baselines.SOLVERS` joins the sweep). Each
#: is #: one centralised solve or a greedy pass — about 0.1 s on ``australia`` — so all are run.
SOLVERS: tuple[str, ...] = tuple(REGISTERED)
#: The quantities drawn, one panel each: (column, title, unit). The objective, how far each
#: plan is above the optimum's, every term the objective charges (energy cost, carbon,
#: water; latency as the mean TTFT it is proportional to at fixed demand) and the cooling
#: energy inside them, which is where temperature-awareness acts.
PANELS: tuple[tuple[str, str, str], ...] = (
    ("objective_aud", "objective", "AUD"),
    ("objective_above_optimum_pct", "objective above the optimum's", "%"),
    ("energy_cost_aud", "energy cost", "AUD"),
    ("carbon_kg", "carbon", "kg CO2-e"),
    ("water_l", "water (on- and off-site)", "L"),
    ("ttft_mean_ms", "latency: mean TTFT", "ms"),
    ("cooling_kwh", "cooling energy (inside the terms)", "kWh"),
)


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
    field, unit = WEIGHTS[vary]
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
    """Solve ``scenario`` with every solver of :data:`SOLVERS` at every weight of
    :func:`weights_for`.

    Parameters
    ----------
    scenario : Scenario
    vary : str
        A key of :data:`WEIGHTS`.
    points : int
        Weights in the sweep, 2–50.
    on_point : callable, optional
        Called with ``(solves done, solves in all)`` after every solve.

    Returns
    -------
    DataFrame
        One row per weight and solver, weights ascending, solvers in :data:`SOLVERS`'
        order: ``vary, weight_name, weight`` (in the weight's unit of :data:`WEIGHTS`),
        ``factor`` (weight / default), ``default`` (the scenario's own weight), ``solver``,
        every term of :data:`TERMS` (AUD, kg CO2-e, L, kWh, request-seconds, ms; charged
        under the true model with that row's weights) and ``objective_above_optimum_pct``,
        ``100 · (objective − optimum's) / |optimum's|`` at the same weight.
    """
    field, _ = WEIGHTS[vary]
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
    frame = pd.DataFrame(rows)
    optimum = frame[frame["solver"] == OPTIMUM].set_index("weight")["objective_aud"]
    frame["objective_above_optimum_pct"] = [
        percent_change(value, optimum[weight])
        for weight, value in zip(frame["weight"], frame["objective_aud"], strict=True)
    ]
    return frame


def weight_free(frame: pd.DataFrame) -> list[str]:
    """The solvers of a :func:`sweep` whose plan does not move with the weight: every term
    but the objective the same at every point, to 1e-9 relative (on ``australia``:
    ``nearest``, ``price-only`` and ``carbon-only``, which plan without the swept weight).
    Their objective still moves — it is charged with each point's weight.
    """
    terms = [t for t in TERMS if t != "objective_aud"]
    out = []
    for solver, rows in frame.groupby("solver", sort=False):
        values = rows[terms].to_numpy(dtype=float)
        spread = np.ptp(values, axis=0)
        if np.all(spread <= 1e-9 * np.maximum(np.abs(values).max(axis=0), 1.0)):
            out.append(str(solver))
    return out


def front_figure(frame: pd.DataFrame, scenario_name: str) -> Figure:
    """``pareto.png``: every quantity of :data:`PANELS` against the swept weight, one panel
    each on a shared log axis, the optimum and every baseline of ``frame`` (a
    :func:`sweep`) on the same axes."""
    vary = str(frame["vary"].iloc[0])
    field, unit = WEIGHTS[vary]
    title = f"{scenario_name}: every plan charged under the true model as {field} varies"
    flat = weight_free(frame)
    if flat:
        title += (
            f"\n{', '.join(flat)}: plans that do not move with this weight — flat terms, the "
            "objective charged with it all the same"
        )
    return pareto_panels(frame, PANELS, f"{field} [{unit}] (log scale)", title, optimum=OPTIMUM)
