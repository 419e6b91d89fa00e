"""The centralised reference QP: feasibility, optimality, hand-checked optima, shadow prices."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from thermoroute.common.central import (
    MOVE_PENALTY_SHARE,
    CentralSolveError,
    least_moving_optimum,
    solve_central,
)
from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.evaluate import evaluate, feasibility, load_gpus

REFERENCE_DIR = Path(__file__).parent / "reference"


def test_schedule_feasible_and_objective_matches_evaluate(tiny_scenario):
    sc = tiny_scenario
    result = solve_central(sc)
    assert result.status == "optimal"
    assert result.solver == "CLARABEL"
    check = feasibility(sc, result.x, result.n)
    assert check.ok(), check
    forbidden = ~sc.allowed()
    assert forbidden.any(), "the fixture is meant to have forbidden pairs"
    assert np.all(result.x[forbidden] == 0.0)
    # Variables exist only for allowed triples: K·T of x plus S·T of n.
    S, _, _, T = sc.shape
    assert result.variables == int(sc.allowed().sum()) * T + S * T
    charged = evaluate(sc, result.x, result.n)
    assert charged.objective_aud == pytest.approx(result.objective_aud, rel=1e-6)


def test_hand_checkable_two_sites(two_site):
    # Marginal cost of 1 req/s for one hour at a site, n following the load (n = L/u_max):
    #   IT power per req/s = (idle_w · gpu_s / u_max + energy_j) / 1000
    #                      = (100 · 1 / 0.8 + 300) / 1000 = 0.425 kW  -> 0.425 kWh in 1 h
    #   site a: 0.425 kWh · pPUE 1.0 · 100 AUD/MWh / 1000 = 0.0425   AUD per req/s·h
    #   site b: 0.425 kWh · pPUE 1.5 ·  50 AUD/MWh / 1000 = 0.031875 AUD per req/s·h
    # b is cheaper but carries at most u_max·G/gpu_s = 0.8·10/1 = 8 req/s, so for D = 10:
    #   x_b = 8, x_a = 2, n_b = 8/0.8 = 10, n_a = 2/0.8 = 2.5,
    #   J = 8 · 0.031875 + 2 · 0.0425 = 0.255 + 0.085 = 0.34 AUD,
    # and one more request per second goes to a: dJ/dD = 0.0425 AUD per req/s·h,
    # i.e. 0.0425 / 3600 AUD per request.
    result = solve_central(two_site(10.0))
    np.testing.assert_allclose(result.x[:, 0, 0, 0], [2.0, 8.0], rtol=1e-7)
    np.testing.assert_allclose(result.n[:, 0], [2.5, 10.0], rtol=1e-7)
    assert result.objective_aud == pytest.approx(0.34, rel=1e-7)
    assert result.shadow_interactive[0, 0, 0] == pytest.approx(0.0425 / 3600, rel=1e-6)
    assert result.row_prices[0] == pytest.approx(0.0425, rel=1e-6)
    # Below b's capacity everything goes to b and the marginal request is b's.
    result = solve_central(two_site(6.0))
    np.testing.assert_allclose(result.x[:, 0, 0, 0], [0.0, 6.0], atol=1e-7)
    assert result.objective_aud == pytest.approx(6 * 0.031875, rel=1e-7)
    assert result.shadow_interactive[0, 0, 0] == pytest.approx(0.031875 / 3600, rel=1e-6)


def test_perturbations_along_feasible_directions_do_not_improve(tiny_scenario):
    """KKT sanity: no small feasible move lowers the true objective of the optimum."""
    sc = tiny_scenario
    result = solve_central(sc)
    x0, n0 = result.x, result.n
    best = evaluate(sc, x0, n0).objective_aud
    s = sc.sites
    allowed = sc.allowed()
    rng = np.random.default_rng(1)
    _, R, C, T = sc.shape
    tried = 0

    def charge(x: np.ndarray, n: np.ndarray) -> float | None:
        # Keep n feasible: at least L/u_max, at most G; skip moves that cannot be.
        n = np.maximum(n, load_gpus(sc, x) / s.u_max[:, None])
        if np.any(n > s.gpus[:, None] * (1 + 1e-12)):
            return None
        assert feasibility(sc, x, n).ok()
        return evaluate(sc, x, n).objective_aud

    for _ in range(300):
        j, c, t = rng.integers(R), rng.integers(C), rng.integers(T)
        sites = np.flatnonzero(allowed[:, j, c])
        if len(sites) < 2:
            continue
        a, b = rng.choice(sites, 2, replace=False)
        delta = 1e-3 * max(x0[a, j, c, t], 1e-3)
        if x0[a, j, c, t] < delta:
            continue
        x = x0.copy()
        if sc.classes.deferrable[c]:
            # Deferrable volume may also move in time: from (a, t) to (b, t2).
            t2 = rng.integers(T)
            x[a, j, c, t] -= delta
            x[b, j, c, t2] += delta
        else:
            x[a, j, c, t] -= delta
            x[b, j, c, t] += delta
        value = charge(x, n0)
        if value is None:
            continue
        tried += 1
        assert value >= best - 1e-9 * abs(best), (a, b, j, c, t)
    # Moving powered GPUs alone (within [L/u_max, G]) cannot help either.
    for sign in (+1.0, -1.0):
        n = np.clip(n0 + sign * 1e-3, load_gpus(sc, x0) / s.u_max[:, None], s.gpus[:, None])
        assert evaluate(sc, x0, n).objective_aud >= best - 1e-9 * abs(best)
    assert tried > 50


def test_row_prices_follow_the_coupling_layout(tiny_scenario):
    sc = tiny_scenario
    result = solve_central(sc)
    _, R, C, T = sc.shape
    layout = CouplingLayout(R, tuple(bool(v) for v in sc.classes.deferrable), T)
    assert result.row_prices.shape == (layout.n_rows,)
    per_step, per_horizon = layout.unpack(result.row_prices)
    inter = sc.classes.interactive
    np.testing.assert_allclose(
        per_step[:, inter] / sc.step_seconds, result.shadow_interactive[:, inter]
    )
    np.testing.assert_allclose(per_horizon[:, ~inter], result.shadow_deferrable[:, ~inter])
    assert np.all(np.isnan(result.shadow_interactive[:, ~inter]))
    assert np.all(np.isnan(result.shadow_deferrable[:, inter]))
    # Every request costs something here (prices are mostly positive): prices are positive.
    assert np.all(result.row_prices > 0)
    full = result.shadow_prices()
    assert full.shape == (R, C, T) and np.all(np.isfinite(full))


def _optimum(sc) -> float:
    return solve_central(sc).objective_aud


@pytest.mark.parametrize(("j", "c", "t"), [(0, 0, 1), (1, 1, 2), (0, 1, 3)])
def test_interactive_shadow_price_is_a_derivative_of_the_optimum(tiny_scenario, j, c, t):
    """The dual lies between the one-sided difference quotients of J*(D) (it is a
    subgradient of the convex value function) and matches them where J* is smooth."""
    sc = tiny_scenario
    price = solve_central(sc).shadow_interactive[j, c, t] * sc.step_seconds  # AUD per req/s
    base = _optimum(sc)
    step = 1e-3 * sc.demand_rps[j, c, t]

    def bumped(delta: float) -> float:
        demand = sc.demand_rps.copy()
        demand[j, c, t] += delta
        return _optimum(replace(sc, demand_rps=demand))

    right = (bumped(step) - base) / step
    left = (base - bumped(-step)) / step
    tol = 1e-6 * abs(price) + 1e-9
    assert left - tol <= price <= right + tol
    assert price == pytest.approx(0.5 * (left + right), abs=0.5 * (right - left) + tol)


def test_deferrable_shadow_price_is_a_derivative_of_the_optimum(tiny_scenario):
    sc = tiny_scenario
    j, c = 0, 2
    price = solve_central(sc).shadow_deferrable[j, c]  # AUD per request
    base = _optimum(sc)
    step = 1e-3 * sc.batch_requests[j, c]

    def bumped(delta: float) -> float:
        batch = sc.batch_requests.copy()
        batch[j, c] += delta
        return _optimum(replace(sc, batch_requests=batch))

    right = (bumped(step) - base) / step
    left = (base - bumped(-step)) / step
    tol = 1e-6 * abs(price) + 1e-12
    assert left - tol <= price <= right + tol
    assert price == pytest.approx(0.5 * (left + right), abs=0.5 * (right - left) + tol)


def test_planner_cooling_and_weight_overrides(tiny_scenario):
    sc = tiny_scenario
    result = solve_central(sc, pue=1.2, wue=0.5, weights={"carbon_aud_per_kg": 0.1})
    planned = evaluate(sc, result.x, result.n, pue=np.full((3, 4), 1.2), wue=np.full((3, 4), 0.5))
    # Re-weight the per-site-step parts exactly as the planner did.
    p = planned.per_site_step
    o = sc.objective
    expected = (
        p["energy_cost_aud"].sum()
        + 0.1 * p["carbon_kg"].sum()
        + o.water_aud_per_l * p["water_l"].sum()
        + o.latency_aud_per_req_s * p["latency_req_s"].sum()
    )
    assert result.objective_aud == pytest.approx(expected, rel=1e-6)
    # Without latency the plan ignores path and queueing.
    no_latency = solve_central(sc, include_latency=False)
    p = evaluate(sc, no_latency.x, no_latency.n).per_site_step
    expected = (
        p["energy_cost_aud"].sum()
        + o.carbon_aud_per_kg * p["carbon_kg"].sum()
        + o.water_aud_per_l * p["water_l"].sum()
    )
    assert no_latency.objective_aud == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown objective weight"):
        solve_central(sc, weights={"carbon": 1.0})
    with pytest.raises(ValueError, match="finite"):
        solve_central(sc, pue=np.nan)


def test_tie_break_spreads_equal_sites_evenly(two_site):
    # Two identical sites (same pPUE, price, RTT): every split of the demand is optimal;
    # the tie-break picks the even one, and does so every time.
    sc = two_site(10.0)
    sc = replace(
        sc,
        sites=replace(sc.sites, ppue_a=np.ones(2), gpus=np.full(2, 20.0)),
        price_aud_per_mwh=np.full((2, 1), 80.0),
    )
    first = solve_central(sc, tie_break=True)
    np.testing.assert_allclose(first.x[:, 0, 0, 0], [5.0, 5.0], rtol=1e-6)
    again = solve_central(sc, tie_break=True)
    np.testing.assert_array_equal(first.x, again.x)
    assert first.info["tie_break"]["objective_aud"] == pytest.approx(first.objective_aud)


@pytest.mark.parametrize("split", [(5.0, 5.0), (8.0, 2.0), (10.0, 0.0)])
def test_the_least_moving_optimum_keeps_an_equally_good_reference(two_site, split):
    # Two identical sites: every split of the demand is optimal, so the optimum's plan that
    # moves least from any split is that split itself, at the optimum's objective.
    sc = two_site(10.0)
    sc = replace(
        sc,
        sites=replace(sc.sites, ppue_a=np.ones(2), gpus=np.full(2, 20.0)),
        price_aud_per_mwh=np.full((2, 1), 80.0),
    )
    reference = np.zeros(sc.shape)
    reference[:, 0, 0, 0] = split
    x, penalty = least_moving_optimum(sc, reference)
    # (to 1e-4 of the demand: the solver's accuracy on a face the penalty barely tilts)
    np.testing.assert_allclose(x[:, 0, 0, 0], split, atol=1e-3)
    optimum = solve_central(sc).objective_aud
    assert evaluate(sc, x).objective_aud == pytest.approx(optimum, rel=1e-9)
    assert penalty == pytest.approx(MOVE_PENALTY_SHARE * optimum / (10.0 * 3600.0), rel=1e-6)


def test_the_least_moving_optimum_moves_no_more_than_the_optimum(tiny_scenario):
    from thermoroute.common.baselines import temperature_unaware

    sc = tiny_scenario
    reference = temperature_unaware(sc).x
    optimum = solve_central(sc)
    x, _ = least_moving_optimum(sc, reference)
    moved = np.abs(x - reference).sum()
    assert moved <= np.abs(optimum.x - reference).sum() * (1 + 1e-6)
    inter = sc.classes.interactive  # the plan serves the demand; the optimum's objective
    np.testing.assert_allclose(x.sum(axis=0)[:, inter], sc.demand_rps[:, inter], rtol=1e-6)
    assert evaluate(sc, x).objective_aud == pytest.approx(optimum.objective_aud, rel=1e-6)


def test_infeasible_demand_is_reported_with_its_cause(tiny_scenario):
    sc = tiny_scenario
    # Twice the code demand of region syd at step 1 cannot fit... but only together with
    # everything else: raise all interactive demand until the fleet cannot carry it.
    with pytest.raises(CentralSolveError, match="capacity"):
        solve_central(replace(sc, demand_rps=sc.demand_rps * 1.6))
    # Demand that no site reaches within the SLO is refused before solving.
    slo = sc.classes.ttft_slo_ms.copy()
    slo[1] = 100.0  # code: 2 + 70 + 50 ms > 100 ms even at the nearest site
    with pytest.raises(CentralSolveError, match="TTFT SLO"):
        solve_central(replace(sc, classes=replace(sc.classes, ttft_slo_ms=slo)))


def test_matches_stored_reference(tiny_scenario):
    """Against tests/reference/tiny_central.json (see its ``command`` for how it was made).

    Tolerance: 1e-6 relative on the objective (what the solver minimises, solved to 1e-10)
    and 1e-5 relative on the other totals, which are only as accurate as the primal
    solution; the optimum of this scenario is unique in every total.
    """
    stored = json.loads((REFERENCE_DIR / "tiny_central.json").read_text())
    result = solve_central(tiny_scenario)
    assert result.objective_aud == pytest.approx(stored["objective_aud"], rel=1e-6)
    totals = evaluate(tiny_scenario, result.x, result.n).totals()
    for key, value in stored["totals"].items():
        assert totals[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    np.testing.assert_allclose(result.n, np.array(stored["active_gpus"]), rtol=1e-5, atol=1e-6)


def test_synthetic_fleet(synth_scenario):
    sc = synth_scenario
    result = solve_central(sc)
    assert feasibility(sc, result.x, result.n).ok()
    assert np.all(result.x[~sc.allowed()] == 0.0)
    assert evaluate(sc, result.x, result.n).objective_aud == pytest.approx(
        result.objective_aud, rel=1e-6
    )


def test_australia_solves_to_optimality(australia):
    result = solve_central(australia)
    assert result.status == "optimal"
    assert feasibility(australia, result.x, result.n).ok()
    assert evaluate(australia, result.x, result.n).objective_aud == pytest.approx(
        result.objective_aud, rel=1e-6
    )


@pytest.mark.slow
def test_hundred_site_fleet_is_feasible():
    # Solve time is a benchmark figure (bench/, BENCHMARKS.md), not a test assertion.
    from thermoroute.common import synth

    sc = synth.synthesize(sites=100, regions=20, seed=3)
    result = solve_central(sc)
    assert feasibility(sc, result.x, result.n).ok()
