"""Baseline schedulers, and the registry of every solver the CLI can run by name.

Each baseline plans a schedule ``(x, n)`` its own way; all of them are then charged by
:func:`thermoroute.common.evaluate.evaluate` under the true model (true temperatures, prices,
carbon, water and the full objective), so they are compared with the centralised optimum on equal
terms. Every baseline keeps the model's hard constraints: demand met, capacity (``L ≤ u_max·n``, ``n
≤ G``) and TTFT SLOs (forbidden pairs zero).

- ``nearest``: greedy, latency first; no optimisation.
- ``temperature-unaware``: the centralised QP with one location- and time-independent PUE
  and WUE (the fleet's mean), charged at the true temperatures.
- ``mean-efficiency``: the centralised QP with each site's own horizon-mean PUE and WUE,
  constant in time — what a planner knows from the sites' specification sheets without a
  weather forecast. It sits between ``temperature-unaware`` and the optimum, and splits the
  gain of temperature-awareness into site differences and hourly weather
  (:class:`thermoroute.common.compare.GainDecomposition`).
- ``price-only``: minimise energy cost alone (``λ_C = λ_W = λ_L = 0``, true PUE).
- ``carbon-only``: minimise carbon alone.

Model v1.1's plant limits (docs/model.md §12: derated capacity, grid connection, water allowance)
are enforced by the centralised optimum alone. Every baseline plans as model v1 does, without the
plant — the heat is what they do not model — and :func:`thermoroute.common.evaluate.overloads`
reports what its plan puts above each limit once charged under the truth, never clipped.

The two linear programs (price-only, carbon-only) are degenerate — many schedules tie — so they are
made unique by the lexicographic tie-break of :func:`thermoroute.common.central.solve_central`
(least-norm schedule among the optimal ones, i.e. ties spread evenly).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from thermoroute.common.central import CentralResult, CentralSolveError, solve_central
from thermoroute.common.evaluate import (
    Evaluation,
    evaluate,
    feasibility,
    load_gpus,
    minimal_active_gpus,
    true_pue,
    true_wue,
    without_residues,
)
from thermoroute.common.outputs import SolverStats
from thermoroute.common.scenario import Scenario

#: Demand (req/s) or volume (requests) a greedy baseline may leave unplaced, relative.
GREEDY_TOLERANCE = 1e-9


class BaselineError(CentralSolveError):
    """A baseline could not produce a feasible schedule.

    A :class:`~thermoroute.common.central.CentralSolveError`, so a caller that reports solver
    failures (the CLI) catches both with one ``except``.
    """


@dataclass(frozen=True)
class Schedule:
    """A planned schedule; unpacks as ``x, n = schedule``.

    Attributes
    ----------
    x : ndarray (S, R, C, T)
        Requests per second [1/s].
    n : ndarray (S, T)
        Powered GPUs [–].
    info : dict
        What the planner reports: its own objective, solver statistics, assumptions.
    """

    x: np.ndarray
    n: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.x
        yield self.n


def _from_central(result: CentralResult, **extra: Any) -> Schedule:
    info: dict[str, Any] = {
        "planned_objective_aud": result.objective_aud,
        "status": result.status,
        "solver": result.solver,
        "iterations": result.iterations,
        "build_s": result.build_s,
        "solve_s": result.solve_s,
        "variables": result.variables,
        **result.info,
        **extra,
    }
    return Schedule(result.x, result.n, info | {"central": result})


def central(scenario: Scenario) -> Schedule:
    """The temperature-aware optimum of the full model
    (:func:`thermoroute.common.central.solve_central`)."""
    return _from_central(solve_central(scenario))


def fleet_mean_cooling(scenario: Scenario) -> tuple[float, float]:
    """The single PUE and WUE a temperature-unaware planner assumes.

    Returns
    -------
    pue, wue : float
        The unweighted mean over every (site, step) of the horizon of the true partial PUE
        [–] and the true on-site WUE [L/kWh]. Unweighted because the planner does not yet
        know where the load will go (an energy-weighted mean would need the plan itself).
    """
    return float(np.mean(true_pue(scenario))), float(np.mean(true_wue(scenario)))


def temperature_unaware(scenario: Scenario) -> Schedule:
    """The full optimisation with one location-independent PUE and WUE (the fleet mean).

    The plan is made believing every site at every step has the fleet's horizon-mean pPUE
    and WUE (:func:`fleet_mean_cooling`); it is then charged at the true temperatures by
    the caller. Prices, carbon, off-site water and latency are seen as they are.
    """
    pue, wue = fleet_mean_cooling(scenario)
    result = solve_central(scenario, pue=pue, wue=wue, plant_limits=False)
    return _from_central(result, assumed_pue=pue, assumed_wue_l_per_kwh=wue)


def site_mean_cooling(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """The PUE and WUE of each site that a mean-efficiency planner assumes.

    Returns
    -------
    pue, wue : ndarray (S,)
        Each site's unweighted mean over the horizon's steps of its true partial PUE [–]
        and its true on-site WUE [L/kWh]: its efficiency without the hour-by-hour weather.
        Unweighted for the reason given in :func:`fleet_mean_cooling`.
    """
    return true_pue(scenario).mean(axis=1), true_wue(scenario).mean(axis=1)


def mean_efficiency(scenario: Scenario) -> Schedule:
    """The full optimisation with each site's own horizon-mean PUE and WUE, constant in time.

    The plan knows how the sites differ (:func:`site_mean_cooling`) but not how their
    weather moves hour by hour; it is then charged at the true temperatures by the caller.
    On a fleet whose sites share one climate it is the temperature-unaware plan.
    """
    pue, wue = site_mean_cooling(scenario)
    result = solve_central(scenario, pue=pue, wue=wue, plant_limits=False)
    return _from_central(result, assumed_pue=pue, assumed_wue_l_per_kwh=wue)


def price_only(scenario: Scenario) -> Schedule:
    """Minimise energy cost alone (true PUE; ``λ_C = λ_W = λ_L = 0``), ties spread evenly."""
    weights = {"carbon_aud_per_kg": 0.0, "water_aud_per_l": 0.0, "latency_aud_per_req_s": 0.0}
    return _from_central(
        solve_central(scenario, weights=weights, tie_break=True, plant_limits=False)
    )


def carbon_only(scenario: Scenario) -> Schedule:
    """Minimise carbon alone (true PUE), ties spread evenly.

    The planned objective is in kg CO2-e (weight 1 AUD/kg, energy cost weight 0).
    """
    weights = {
        "energy_cost": 0.0,
        "carbon_aud_per_kg": 1.0,
        "water_aud_per_l": 0.0,
        "latency_aud_per_req_s": 0.0,
    }
    return _from_central(
        solve_central(scenario, weights=weights, tie_break=True, plant_limits=False)
    )


def nearest(scenario: Scenario) -> Schedule:
    """Latency first: every request to the lowest-RTT allowed site with spare capacity.

    In every step, interactive demand is placed first, region/class pairs with the fewest
    allowed sites first (ties by region, then class index) so constrained demand is not
    crowded out; each pair fills its sites in order of increasing RTT (ties by site index)
    up to ``u_max · G`` busy GPUs. Deferrable volume is then spread evenly over the horizon
    (``V / (T · 3600Δ)`` req/s per step) and placed the same way into what is left; volume
    that finds no room in its step is placed, nearest first, in the earliest steps with
    spare capacity. Powered GPUs are the fewest that carry the load, ``n = L / u_max``.

    Raises
    ------
    BaselineError
        When greedy placement cannot meet the demand (the fleet is too full for it).
    """
    sc = scenario
    S, R, C, T = sc.shape
    allowed = sc.allowed()
    gpu_s = sc.gpu_s
    spare = np.broadcast_to(sc.sites.u_max * sc.sites.gpus, (T, S)).copy()  # busy GPUs
    x = np.zeros((S, R, C, T))
    by_rtt = [np.argsort(sc.rtt_ms[:, j], kind="stable") for j in range(R)]

    def place(j: int, c: int, t: int, need: float) -> float:
        """Fill the nearest allowed sites at step t; return the rate left unplaced."""
        for i in by_rtt[j]:
            if need <= 0.0:
                break
            if not allowed[i, j, c] or spare[t, i] <= 0.0:
                continue
            take = min(need, spare[t, i] / gpu_s[i, c])
            x[i, j, c, t] += take
            spare[t, i] = max(spare[t, i] - take * gpu_s[i, c], 0.0)
            need -= take
        return max(need, 0.0)

    inter = [int(c) for c in np.flatnonzero(sc.classes.interactive)]
    defer = [int(c) for c in np.flatnonzero(sc.classes.deferrable)]
    pairs = sorted(
        ((j, c) for j in range(R) for c in inter), key=lambda p: (allowed[:, p[0], p[1]].sum(), p)
    )
    for t in range(T):
        for j, c in pairs:
            d = sc.demand_rps[j, c, t]
            left = place(j, c, t, d)
            if left > GREEDY_TOLERANCE * max(d, 1.0):
                raise BaselineError(
                    f"nearest: {left:g} req/s of region {sc.regions.region_id[j]!r}, class "
                    f"{sc.classes.class_id[c]!r} at {sc.times[t].isoformat()} find no site "
                    "with spare capacity within the TTFT SLO"
                )
    carry = np.zeros((R, C))  # deferrable volume not placed in its own step [requests]
    for t in range(T):
        for j in range(R):
            for c in defer:
                rate = sc.batch_requests[j, c] / (T * sc.step_seconds)
                carry[j, c] += place(j, c, t, rate) * sc.step_seconds
    moved = float(carry.sum())
    for j in range(R):
        for c in defer:
            for t in range(T):
                if carry[j, c] <= 0.0:
                    break
                carry[j, c] = place(j, c, t, carry[j, c] / sc.step_seconds) * sc.step_seconds
            if carry[j, c] > GREEDY_TOLERANCE * max(sc.batch_requests[j, c], 1.0):
                raise BaselineError(
                    f"nearest: {carry[j, c]:g} batch requests of region "
                    f"{sc.regions.region_id[j]!r}, class {sc.classes.class_id[c]!r} find no "
                    "spare capacity over the horizon"
                )
    n = np.minimum(minimal_active_gpus(sc, load_gpus(sc, x)), sc.sites.gpus[:, None])
    return Schedule(x, n, {"batch_moved_to_other_steps": moved})


#: The baselines, by the name the CLI uses (``--solver NAME``).
BASELINES: dict[str, Callable[[Scenario], Schedule]] = {
    "nearest": nearest,
    "temperature-unaware": temperature_unaware,
    "mean-efficiency": mean_efficiency,
    "price-only": price_only,
    "carbon-only": carbon_only,
}
#: Every centralised solver: the optimum and the baselines.
SOLVERS: dict[str, Callable[[Scenario], Schedule]] = {"central": central, **BASELINES}


@dataclass(frozen=True)
class SolverRun:
    """A schedule from one named solver, charged under the true model.

    Attributes
    ----------
    name : str
        Key of :data:`SOLVERS`.
    schedule : Schedule
    evaluation : Evaluation
        The schedule charged under the true model.
    stats : SolverStats
        For ``summary.json``: one "iteration" (a direct solve), ``primal_residual`` = the
        worst relative violation of the coupling rows by the returned schedule,
        ``dual_residual`` 0, ``wall_s`` the planning time; solver details in ``extra``.
    shadow_prices : ndarray (R, C, T) or None
        For ``central``: AUD per additional request (see :mod:`thermoroute.common.central`).
    """

    name: str
    schedule: Schedule
    evaluation: Evaluation
    stats: SolverStats
    shadow_prices: np.ndarray | None = None


def run_solver(name: str, scenario: Scenario) -> SolverRun:
    """Plan with solver ``name`` and charge the schedule under the true model.

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    CentralSolveError, BaselineError
        When the solver cannot produce a schedule.
    """
    if name not in SOLVERS:
        raise KeyError(f"unknown solver {name!r} (known: {', '.join(SOLVERS)})")
    t0 = time.perf_counter()
    schedule = SOLVERS[name](scenario)
    wall = time.perf_counter() - t0
    # What is written and charged is the decision, without the solver's residues.
    x, n = without_residues(scenario, schedule.x, schedule.n)
    schedule = replace(schedule, x=x, n=n)
    check = feasibility(scenario, schedule.x, schedule.n)
    extra = {
        k: v
        for k, v in schedule.info.items()
        if isinstance(v, str | int | bool) or (isinstance(v, float) and np.isfinite(v))
    }
    stats = SolverStats(
        iterations=int(schedule.info.get("iterations", 1)),
        converged=check.ok(),
        primal_residual=max(check.demand_rel, check.batch_rel),
        dual_residual=0.0,
        wall_s=wall,
        extra=extra,
    )
    result = schedule.info.get("central")
    prices = result.shadow_prices() if name == "central" and result is not None else None
    return SolverRun(
        name=name,
        schedule=schedule,
        evaluation=evaluate(scenario, schedule.x, schedule.n),
        stats=stats,
        shadow_prices=prices,
    )


__all__ = [
    "BASELINES",
    "SOLVERS",
    "BaselineError",
    "CentralSolveError",
    "Schedule",
    "SolverRun",
    "carbon_only",
    "central",
    "fleet_mean_cooling",
    "mean_efficiency",
    "nearest",
    "price_only",
    "run_solver",
    "site_mean_cooling",
    "temperature_unaware",
]
