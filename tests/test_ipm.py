"""The distributed interior-point method against the centralised optimum, in process.

Real site agents (``thermoroute.site_agent.group.SiteGroup``) through the composition root, real
masking, the centralised cvxpy/Clarabel reference for every answer. The Ray paths are in
tests/test_ipm_ray.py; what crosses the boundary in tests/test_privacy.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from thermoroute import launch
from thermoroute.common.central import solve_central
from thermoroute.common.evaluate import evaluate, feasibility
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.launch import DistributedRun

#: These tests charge the schedule under the model, which needs each site's active GPUs: the
#: sites share their detail with the coordinator (docs/model.md §9), as an operator may.
solve_distributed = partial(launch.solve_distributed, share_site_details=True)

#: Done means: within 0.01 % of the centralised optimum.
OBJECTIVE_RTOL = 1e-4
#: Demand, batch volume and capacity met to this relative tolerance (Feasibility.ok).
FEASIBILITY_RTOL = 1e-4


def _check(scenario: Scenario, run: DistributedRun, max_iterations: int) -> None:
    assert run.converged
    assert run.outcome.method == "ipm"
    assert 0 < run.iterations <= max_iterations
    schedule = run.outputs.schedule
    ev = evaluate(scenario, schedule.x, schedule.n)
    central = solve_central(scenario)
    assert ev.objective_aud == pytest.approx(central.objective_aud, rel=OBJECTIVE_RTOL)
    # What the sites reported is what the model charges for their schedule.
    assert run.objective_aud == pytest.approx(ev.objective_aud, rel=1e-9)
    f = feasibility(scenario, schedule.x, schedule.n)
    assert f.ok(rel_tol=FEASIBILITY_RTOL), f


def _embedded(name: str) -> Scenario:
    from tests.conftest import embedded_scenario

    return embedded_scenario(name)


def test_australia_within_0_01_percent_in_at_most_15_iterations(tmp_path: Path) -> None:
    scenario = _embedded("australia")
    run = solve_distributed("australia", executor="inline", settings=IpmSettings())
    _check(scenario, run, 15)
    assert run.outcome.run.extra_stats["secure_aggregation"] is True
    # Shadow prices are λ: the centralised duals of the demand rows, to the tolerance.
    central = solve_central(scenario)
    ours = -run.outcome.run.scaled_prices / run.outcome.structure.row_scale
    served = run.outcome.structure.counts > 0
    scale = np.abs(central.row_prices[served]).max()
    assert np.max(np.abs(ours[served] - central.row_prices[served])) <= 1e-2 * scale


def test_australia_20_takes_three_rounds_an_iteration() -> None:
    run = solve_distributed("australia-20", executor="inline", settings=IpmSettings())
    stats = run.outcome.run.extra_stats
    assert run.converged and stats["rounds"] == 3 * run.iterations


def test_outputs_carry_the_method_and_its_convergence(tmp_path: Path) -> None:
    run = solve_distributed("australia", executor="inline", settings=IpmSettings())
    written = run.outputs.write(tmp_path / "out", solver="ipm")
    summary = json.loads((written / "summary.json").read_text())
    assert summary["solver"] == "ipm"
    stats = summary["solver_stats"]
    assert stats["method"] == "ipm" and stats["iterations"] == run.iterations
    assert stats["clean_share"] == IpmSettings().clean_share
    # Three rounds an iteration (newton, predict, correct: docs/model.md §13); the start
    # and the first newton round are one exchange, cleaning rides on the last newton round.
    assert stats["rounds"] == 3 * stats["iterations"]
    assert stats["round_trips"] == stats["rounds"] + 2  # the run's keys and its start
    lines = (written / "convergence.csv").read_text().splitlines()
    assert (
        lines[0] == "iteration,coupling_residual,mu,step,sites_dual_pending,objective_aud,elapsed_s"
    )
    assert len(lines) == run.iterations + 2  # header, the start, one row per step
    mu = [float(line.split(",")[2]) for line in lines[1:]]
    assert mu[-1] < 1e-3 * mu[0]
    # The objective column is the fleet's sum as the sites computed it, iterate by iterate.
    last = float(lines[-1].split(",")[5])
    assert last == pytest.approx(run.objective_aud, rel=1e-3)


def test_tiny_flows_are_cleaned_and_demand_still_met(tmp_path: Path) -> None:
    scenario = _embedded("australia")
    run = solve_distributed("australia", executor="inline", settings=IpmSettings())
    share = IpmSettings().clean_share
    x = run.outputs.schedule.x  # (S, R, C, T)
    inter = scenario.classes.interactive
    demand = scenario.demand_rps[None, :, inter, :]
    flows = x[:, :, inter, :]
    # No interactive flow is below the threshold share of its row's demand unless its row
    # could not be repaired (then its dropped flows came back).
    tiny = (flows > 0) & (flows < share * demand)
    restored = run.outcome.run.extra_stats["rows_restored"]
    assert tiny.sum() <= restored * len(scenario.sites)
    # Without cleaning the interior point leaves a flow on nearly every allowed pair.
    raw = solve_distributed(
        "australia", executor="inline", settings=replace(IpmSettings(), clean_share=0.0)
    )
    assert (raw.outputs.schedule.x > 0).sum() > (x > 0).sum()
    assert feasibility(scenario, x, run.outputs.schedule.n).ok(rel_tol=FEASIBILITY_RTOL)


@pytest.mark.slow
def test_australia_20_within_0_01_percent_in_at_most_16_iterations() -> None:
    run = solve_distributed("australia-20", executor="inline", settings=IpmSettings())
    _check(_embedded("australia-20"), run, 16)


@pytest.mark.slow
def test_synthetic_100_sites_within_0_01_percent_in_at_most_25_iterations(
    tmp_path: Path,
) -> None:
    from thermoroute.common import synth

    scenario = synth.synthesize(100, 20, 0)
    directory = write_scenario(scenario, tmp_path / "s100")
    run = solve_distributed(
        directory, executor="inline", sites_per_agent=25, settings=IpmSettings()
    )
    _check(scenario, run, 25)


def test_groups_and_masking_do_not_change_the_answer(tiny_scenario: Scenario, tmp_path) -> None:
    directory = write_scenario(tiny_scenario, tmp_path / "tiny")
    alone = solve_distributed(directory, executor="inline", settings=IpmSettings())
    grouped = solve_distributed(
        directory, executor="inline", sites_per_agent=2, settings=IpmSettings()
    )
    clear = solve_distributed(
        directory,
        executor="inline",
        settings=replace(IpmSettings(), secure_aggregation=False),
    )
    assert alone.outcome.run.extra_stats["secure_aggregation"] is True
    assert clear.outcome.run.extra_stats["secure_aggregation"] is False
    assert alone.iterations == grouped.iterations == clear.iterations
    for other in (grouped, clear):
        assert other.objective_aud == pytest.approx(alone.objective_aud, rel=1e-9)
    _check(tiny_scenario, alone, 15)


def test_iteration_limit_reports_not_converged(tiny_scenario: Scenario, tmp_path) -> None:
    directory = write_scenario(tiny_scenario, tmp_path / "tiny")
    run = solve_distributed(
        directory, executor="inline", settings=replace(IpmSettings(), max_iter=3)
    )
    assert not run.converged and run.iterations == 3
    # The schedule is still written whole: the last iterate, cleaned.
    assert run.outputs.schedule.x.shape[0] == len(tiny_scenario.sites)


def test_settings_are_validated() -> None:
    for bad in ({"max_iter": 0}, {"step_fraction": 1.0}, {"clean_share": 0.5},
                {"eps_rel": 0.0}, {"centrality_correctors": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            replace(IpmSettings(), **bad)


@pytest.mark.slow
def test_receding_horizon_warm_starts_cut_iterations_not_accuracy() -> None:
    """A day of australia, hour by hour: warm-started from the kept central-path iterate,
    a median of at most 9 iterations (27 rounds) per step against 12 cold, and the same
    totals as solving each step cold, to 0.01 %."""
    from thermoroute.launch import DistributedRunSpec
    from thermoroute.simulation import SimulationSpec, simulate

    # The day's steps only: drain steps are solved cold either way.
    ipm = DistributedRunSpec(executor="inline", settings=IpmSettings())
    day = SimulationSpec(days=1, baseline=None, drain=False)
    warm = simulate("australia", day, ipm)
    cold = simulate("australia", replace(day, warm=False), ipm)
    assert len(warm.steps) == len(cold.steps) == 24
    assert all(s.converged for s in warm.steps) and all(s.converged for s in cold.steps)
    assert float(np.median(warm.iterations)) <= 9 < 11 <= float(np.median(cold.iterations))
    assert warm.totals["objective_aud"] == pytest.approx(cold.totals["objective_aud"], rel=1e-4)
    for key in ("energy_cost_aud", "carbon_kg", "water_l"):
        assert warm.totals[key] == pytest.approx(cold.totals[key], rel=1e-3)
