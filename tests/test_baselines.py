"""Baselines: feasible, within capacity and SLOs, never better than the optimum; the registry
and the comparison table."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from thermoroute.common.baselines import (
    BASELINES,
    SOLVERS,
    BaselineError,
    carbon_only,
    fleet_mean_cooling,
    mean_efficiency,
    nearest,
    price_only,
    run_solver,
    site_mean_cooling,
    temperature_unaware,
)
from thermoroute.common.central import solve_central
from thermoroute.common.compare import (
    METRIC_KEYS,
    REFERENCE,
    compare,
    render_table,
    to_json,
    to_text,
)
from thermoroute.common.evaluate import evaluate, feasibility, load_gpus, true_pue, true_wue


@pytest.fixture(scope="module")
def tiny_runs(scenario_builder):
    """Every solver's schedule of the tiny scenario (solved once for the module)."""
    sc = scenario_builder()
    return sc, {name: SOLVERS[name](sc) for name in SOLVERS}


def test_registry_names():
    assert set(BASELINES) == {
        "nearest", "temperature-unaware", "mean-efficiency", "price-only", "carbon-only",
    }  # fmt: skip
    assert list(SOLVERS) == ["central", *BASELINES]
    with pytest.raises(KeyError, match="known: central"):
        run_solver("fastest", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_feasible_and_not_better_than_central(tiny_runs, name):
    sc, runs = tiny_runs
    x, n = runs[name]
    assert x.shape == sc.shape and n.shape == (len(sc.sites), sc.steps)
    check = feasibility(sc, x, n)
    assert check.ok(), check
    assert np.all(x[~sc.allowed()] == 0.0)
    s = sc.sites
    assert np.all(load_gpus(sc, x) <= s.u_max[:, None] * n * (1 + 1e-9) + 1e-9)
    assert np.all(n <= s.gpus[:, None] * (1 + 1e-12))
    best = evaluate(sc, *runs["central"]).objective_aud
    assert evaluate(sc, x, n).objective_aud >= best * (1 - 1e-9)


def test_single_objective_baselines_win_their_own_metric(tiny_runs):
    # Price-only minimises energy cost over the same feasible set, carbon-only carbon: no
    # other schedule can beat them on that one total.
    sc, runs = tiny_runs
    totals = {name: evaluate(sc, *schedule).totals() for name, schedule in runs.items()}
    for other in totals:
        assert totals["price-only"]["energy_cost_aud"] <= totals[other]["energy_cost_aud"] + 1e-7
        assert totals["carbon-only"]["carbon_kg"] <= totals[other]["carbon_kg"] + 1e-7


def test_temperature_unaware_plans_with_the_fleet_mean(tiny_scenario):
    sc = tiny_scenario
    pue, wue = fleet_mean_cooling(sc)
    assert pue == pytest.approx(float(np.mean(true_pue(sc))))
    assert wue == pytest.approx(float(np.mean(true_wue(sc))))
    schedule = temperature_unaware(sc)
    shape = (len(sc.sites), sc.steps)
    believed = evaluate(
        sc, schedule.x, schedule.n, pue=np.full(shape, pue), wue=np.full(shape, wue)
    )
    # What it planned is what it would cost if cooling really were uniform ...
    assert schedule.info["planned_objective_aud"] == pytest.approx(believed.objective_aud, rel=1e-6)
    # ... and it is the optimum of that belief, not of the true model.
    assert schedule.info["assumed_pue"] == pue
    true_cost = evaluate(sc, schedule.x, schedule.n).objective_aud
    assert true_cost >= solve_central(sc).objective_aud * (1 - 1e-9)


def test_mean_efficiency_plans_with_each_sites_own_mean(tiny_scenario):
    sc = tiny_scenario
    pue, wue = site_mean_cooling(sc)
    np.testing.assert_allclose(pue, true_pue(sc).mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(wue, true_wue(sc).mean(axis=1), rtol=1e-15)
    # The tiny sites' climates differ, so the per-site means are not the fleet's one number.
    assert np.ptp(pue) > 0.01
    schedule = mean_efficiency(sc)
    shape = (len(sc.sites), sc.steps)
    believed = evaluate(
        sc,
        schedule.x,
        schedule.n,
        pue=np.broadcast_to(pue[:, None], shape),
        wue=np.broadcast_to(wue[:, None], shape),
    )
    # What it planned is what the plan costs if each site ran at its mean all horizon ...
    assert schedule.info["planned_objective_aud"] == pytest.approx(believed.objective_aud, rel=1e-6)
    np.testing.assert_array_equal(schedule.info["assumed_pue"], pue)
    # ... and charged at the true temperatures it is no better than the optimum.
    true_cost = evaluate(sc, schedule.x, schedule.n).objective_aud
    assert true_cost >= solve_central(sc).objective_aud * (1 - 1e-9)


def test_solve_central_takes_one_value_per_site(tiny_scenario):
    """An (S,) belief is per site and constant in time — the same problem as its (S, T)
    broadcast, number for number; one of the wrong length is refused, not broadcast along
    the steps."""
    sc = tiny_scenario
    pue, wue = site_mean_cooling(sc)
    shape = (len(sc.sites), sc.steps)
    per_site = solve_central(sc, pue=pue, wue=wue)
    per_step = solve_central(
        sc, pue=np.broadcast_to(pue[:, None], shape), wue=np.broadcast_to(wue[:, None], shape)
    )
    np.testing.assert_array_equal(per_site.x, per_step.x)
    assert per_site.objective_aud == per_step.objective_aud
    with pytest.raises(ValueError, match="S = 3"):
        solve_central(sc, pue=np.ones(sc.steps))


def test_nearest_fills_nearest_sites_first(tiny_runs):
    """Whenever a farther site serves an interactive pair, every nearer allowed site is full."""
    sc, runs = tiny_runs
    x, _ = runs["nearest"]
    s = sc.sites
    spare = s.u_max[:, None] * s.gpus[:, None] - load_gpus(sc, x)  # (S, T) busy GPUs
    allowed = sc.allowed()
    for j in range(len(sc.regions)):
        for c in np.flatnonzero(sc.classes.interactive):
            for t in range(sc.steps):
                used = np.flatnonzero(x[:, j, c, t] > 0)
                for i in used:
                    nearer = allowed[:, j, c] & (sc.rtt_ms[:, j] < sc.rtt_ms[i, j])
                    assert np.all(spare[nearer, t] <= 1e-9), (i, j, c, t)
    # Deferrable volume goes out evenly wherever the fleet has room for it.
    d = np.flatnonzero(sc.classes.deferrable)
    per_step = x[:, :, d, :].sum(axis=0)  # (R, Cd, T)
    rate = sc.batch_requests[:, d] / (sc.steps * sc.step_seconds)
    np.testing.assert_allclose(per_step, np.broadcast_to(rate[..., None], per_step.shape))


def test_nearest_hand_case(two_site):
    # Equal RTT: ties go to the lower site index, so site a takes everything it can hold
    # (u_max·G/gpu_s = 16 req/s > 10), and n = L/u_max = 10/0.8 = 12.5.
    x, n = nearest(two_site(10.0))
    np.testing.assert_allclose(x[:, 0, 0, 0], [10.0, 0.0])
    np.testing.assert_allclose(n[:, 0], [12.5, 0.0])
    # 20 req/s: a fills up (16), the remaining 4 go to b.
    x, n = nearest(two_site(20.0))
    np.testing.assert_allclose(x[:, 0, 0, 0], [16.0, 4.0])
    np.testing.assert_allclose(n[:, 0], [20.0, 5.0])
    with pytest.raises(BaselineError, match="no site with spare capacity"):
        nearest(two_site(30.0))


def test_lp_baselines_are_deterministic(tiny_scenario):
    for plan in (price_only, carbon_only):
        first, second = plan(tiny_scenario), plan(tiny_scenario)
        np.testing.assert_array_equal(first.x, second.x)
        np.testing.assert_array_equal(first.n, second.n)
        assert "tie_break" in first.info


def test_run_solver_stats_and_shadow_prices(tiny_scenario):
    run = run_solver("central", tiny_scenario)
    assert run.stats.converged
    assert run.stats.primal_residual < 1e-6
    assert run.stats.extra["solver"] == "CLARABEL"
    json.dumps(run.stats.as_dict(), allow_nan=False)
    R, C, T = tiny_scenario.demand_rps.shape
    assert run.shadow_prices is not None and run.shadow_prices.shape == (R, C, T)
    baseline = run_solver("nearest", tiny_scenario)
    assert baseline.shadow_prices is None
    assert baseline.evaluation.objective_aud >= run.evaluation.objective_aud


def test_compare_rows_and_renderings(tiny_scenario):
    rows = compare(tiny_scenario)
    assert [r.solver for r in rows] == list(SOLVERS)
    by_name = {r.solver: r for r in rows}
    for key in METRIC_KEYS:
        assert by_name[REFERENCE].pct_vs_reference[key] == 0.0
    for row in rows:
        charged = evaluate(tiny_scenario, *SOLVERS[row.solver](tiny_scenario))
        assert row["objective_aud"] == pytest.approx(charged.objective_aud, rel=1e-6)
        ref = by_name[REFERENCE].values["carbon_kg"]
        assert row.pct_vs_reference["carbon_kg"] == pytest.approx(
            100 * (row["carbon_kg"] - ref) / ref
        )
    central = by_name["central"]["objective_aud"]
    assert all(r["objective_aud"] >= central * (1 - 1e-9) for r in rows)
    doc = json.loads(to_json(rows))
    assert [r["solver"] for r in doc["rows"]] == list(SOLVERS)
    assert doc["scenario"] == "tiny" and "decomposition" in doc
    text = to_text(rows)
    assert all(name in text for name in SOLVERS) and "%" in text
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render_table(rows, title="tiny"))
    rendered = console.export_text()
    assert "[kWh]" in rendered and "carbon-only" in rendered
    # Asking for a subset still measures against the reference.
    subset = compare(tiny_scenario, ["nearest"])
    assert [r.solver for r in subset] == ["nearest"]
    assert subset[0].pct_vs_reference["objective_aud"] == pytest.approx(
        by_name["nearest"].pct_vs_reference["objective_aud"], rel=1e-6
    )


def test_synthetic_fleet_baselines(synth_scenario):
    sc = synth_scenario
    best = solve_central(sc).objective_aud
    for name, plan in BASELINES.items():
        x, n = plan(sc)
        assert feasibility(sc, x, n).ok(), name
        assert np.all(x[~sc.allowed()] == 0.0), name
        assert evaluate(sc, x, n).objective_aud >= best * (1 - 1e-9), name


def test_australia_central_beats_every_baseline(australia):
    rows = compare(australia)
    by_name = {r.solver: r for r in rows}
    central = by_name["central"]["objective_aud"]
    for row in rows:
        x, n = SOLVERS[row.solver](australia)
        assert feasibility(australia, x, n).ok(), row.solver
        if row.solver != "central":
            # Central is optimal for the true model; the temperature-unaware plan may come
            # within solver tolerance of it when cooling is a small part of the objective.
            assert central <= row["objective_aud"] * (1 + 1e-9), row.solver
    print()
    print(to_text(rows))


def test_baselines_keep_slo_when_a_class_is_tight(tiny_scenario):
    # Tighten code's SLO so only the nearest site of each region may serve it.
    slo = tiny_scenario.classes.ttft_slo_ms.copy()
    slo[1] = 2.0 + 70.0 + 50.0 + 1.0
    sc = replace(tiny_scenario, classes=replace(tiny_scenario.classes, ttft_slo_ms=slo))
    allowed = sc.allowed()
    assert allowed[:, :, 1].sum() == 2
    for name, plan in SOLVERS.items():
        x, n = plan(sc)
        assert np.all(x[~allowed] == 0.0), name
        assert feasibility(sc, x, n).ok(), name


def test_nearest_moves_batch_that_does_not_fit_its_step(tiny_scenario):
    # Interactive load needs 33, 45.6, 53.9 and 36.1 busy GPUs of the fleet's 72 over the
    # four steps; 6× the batch volume is 23.3 GPUs per step if spread evenly: more than the
    # 18.1 left at the peak step (t = 2), less than the 119.4 GPU-steps left over the
    # horizon. Part of it moves to the earliest steps with room; 40× does not fit at all.
    sc = replace(tiny_scenario, batch_requests=tiny_scenario.batch_requests * 6)
    schedule = nearest(sc)
    assert schedule.info["batch_moved_to_other_steps"] > 0
    assert feasibility(sc, schedule.x, schedule.n).ok()
    spare = sc.sites.u_max[:, None] * sc.sites.gpus[:, None] - load_gpus(sc, schedule.x)
    assert np.all(spare[:, 2] <= 1e-9)  # the peak step is full
    with pytest.raises(BaselineError, match="no spare capacity"):
        nearest(replace(tiny_scenario, batch_requests=tiny_scenario.batch_requests * 40))
