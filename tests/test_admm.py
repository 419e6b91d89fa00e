"""Exchange ADMM (coordinator/admm.py) against the centralised optimum, in process.

Two site implementations are used: :mod:`tests.cvxpy_site` (cvxpy/Clarabel written from the
model, independent of ``site_agent``) and the product's ``thermoroute.site_agent.group.SiteGroup``
(OSQP), the latter through the composition root ``thermoroute.launch.solve_distributed``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.cvxpy_site import CvxSiteGroup, assemble
from thermoroute.common.central import solve_central
from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.evaluate import evaluate, feasibility
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.coordinator.admm import (
    AdmmSettings,
    AdmmState,
    ExchangeAdmm,
    shadow_prices,
    shift_state,
)
from thermoroute.coordinator.data import layout_of, row_scale_of
from thermoroute.coordinator.events import NullObserver
from thermoroute.coordinator.fleet import InlineFleet
from thermoroute.coordinator.structure import CouplingError, build_structure

#: Done means: the ADMM objective within 0.1 % of the centralised optimum.
OBJECTIVE_RTOL = 1e-3
#: Worst relative demand violation accepted of a schedule at ε_rel = 1e-4: Boyd's test
#: bounds the residual's norm, so a single row may be off by up to ~10·ε_rel.
DEMAND_RTOL = 2e-3


def _cvx_run(scenario: Scenario, settings: AdmmSettings, groups: list[list[str]] | None = None):
    view = DemandView.of(scenario)
    layout = layout_of(view)
    scale = row_scale_of(view, layout)
    groups = groups or [[s] for s in scenario.sites.site_id]
    sites = [CvxSiteGroup(scenario, g) for g in groups]
    fleet = InlineFleet(sites, groups)
    supports = fleet.register(layout, scale)
    structure = build_structure(view, layout, scale, fleet.site_ids, supports)
    admm = ExchangeAdmm(structure, settings)
    result = admm.run(fleet)
    x, n = assemble(scenario, [r for g in sites for r in g.site_reports(result.report_iteration)])
    return result, structure, layout, x, n, sites


def _check_schedule(scenario: Scenario, x: np.ndarray, n: np.ndarray) -> None:
    f = feasibility(scenario, x, n)
    assert f.demand_rel <= DEMAND_RTOL, f
    assert f.batch_rel <= DEMAND_RTOL, f
    assert f.capacity_gpus <= 1e-6, f
    assert f.active_over_gpus <= 1e-6, f
    assert f.forbidden_rps == 0.0, f  # SLO: forbidden pairs carry nothing
    assert f.negative_rps <= 0.0, f


# ------------------------------------------------------------------------------------------
# The update itself


def _tiny_admm(tiny_scenario: Scenario, **settings: object) -> ExchangeAdmm:
    view = DemandView.of(tiny_scenario)
    layout = layout_of(view)
    scale = row_scale_of(view, layout)
    allowed = tiny_scenario.allowed()
    supports = [layout.support(allowed[i]) for i in range(len(tiny_scenario.sites))]
    st = build_structure(view, layout, scale, tiny_scenario.sites.site_id, supports)
    return ExchangeAdmm(st, AdmmSettings(**settings))  # type: ignore[arg-type]


def test_exchange_update_keeps_rows_balanced(tiny_scenario: Scenario) -> None:
    admm = _tiny_admm(tiny_scenario, rho=3.0, alpha=1.6)
    st = admm.structure
    # Initial z splits every row evenly and sums to b.
    np.testing.assert_allclose(st.row_sum(admm.state.z), st.b, atol=1e-12)
    rng = np.random.default_rng(1)
    p = rng.uniform(0.0, 1.0, st.n_entries)
    z_new, u_new, delta = admm.plain_step(p)
    np.testing.assert_allclose(st.row_sum(z_new), st.b, atol=1e-12)
    np.testing.assert_allclose(u_new - admm.state.u, delta)
    # δ is the over-relaxed average excess per row.
    h = 1.6 * p - 0.6 * admm.state.z
    rows = st.counts > 0
    np.testing.assert_allclose(
        delta[rows], ((st.row_sum(h) - st.b) / np.maximum(st.counts, 1))[rows], atol=1e-12
    )
    # The targets alone determine the state (the splitting's fixed-point variable).
    z_back, u_back = admm.state_of_targets(z_new - st.spread(u_new))
    np.testing.assert_allclose(z_back, z_new, atol=1e-12)
    np.testing.assert_allclose(u_back[rows], u_new[rows], atol=1e-12)


def test_row_nobody_serves_is_an_error_naming_region_and_class(tiny_scenario: Scenario) -> None:
    view = DemandView.of(tiny_scenario)
    layout = layout_of(view)
    scale = row_scale_of(view, layout)
    allowed = tiny_scenario.allowed().copy()
    allowed[:, 1, 1] = False  # nobody serves region `mel`, class `code`
    supports = [layout.support(allowed[i]) for i in range(len(tiny_scenario.sites))]
    with pytest.raises(CouplingError, match=r"region 'mel', class 'code'"):
        build_structure(view, layout, scale, tiny_scenario.sites.site_id, supports)


def test_residual_balancing_keeps_the_price(tiny_scenario: Scenario) -> None:
    admm = _tiny_admm(tiny_scenario, rho=2.0, rho_update_every=1)
    st = admm.structure
    admm.state.u = np.linspace(-1.0, 1.0, st.n_rows)
    price = admm.state.rho * admm.state.u
    res = admm.residuals(admm.state.z + 1.0, admm.state.z, admm.state.u)  # ‖r‖ ≫ ‖s‖ = 0
    assert admm._balance_rho(res, 1)
    assert admm.state.rho == pytest.approx(4.0)
    np.testing.assert_allclose(admm.state.rho * admm.state.u, price)


def test_row_nobody_serves_gets_a_larger_penalty_at_the_same_price(
    tiny_scenario: Scenario,
) -> None:
    """Sites answer zero on row 0 (z does not move): only that row's penalty doubles, and
    every row's price ρ w u stays where it was."""
    admm = _tiny_admm(tiny_scenario, rho=2.0, rho_update_every=1, price_floor=None)
    st = admm.structure
    admm.state.u = np.linspace(-1.0, -0.1, st.n_rows)
    price = admm.state.prices().copy()
    p = admm.state.z.copy()  # every row exactly met: no residual anywhere …
    dead = st.rows == 0
    p[dead] = 0.0  # … but row 0, which no site serves at this price
    z_new, _, _ = admm.plain_step(p)
    z_new[~dead] = admm.state.z[~dead]
    assert admm._balance_rows(admm._row_residuals(p, z_new), 1)
    w = admm.state.weights
    assert w is not None
    assert w[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(w[1:], 1.0)
    np.testing.assert_allclose(admm.state.prices(), price)
    np.testing.assert_array_equal(admm.state.rho_rows, 2.0 * w)


def test_row_whose_allocation_swings_gets_a_smaller_penalty(tiny_scenario: Scenario) -> None:
    admm = _tiny_admm(tiny_scenario, rho=2.0, rho_update_every=1, price_floor=None)
    st = admm.structure
    on_row = st.rows == 3
    z_new = admm.state.z.copy()
    z_new[on_row] += np.where(np.arange(on_row.sum()) % 2, 0.5, -0.5)  # moves, sums kept
    p = z_new.copy()  # proposals meet the new allocation: no primal residual
    assert admm._balance_rows(admm._row_residuals(p, z_new), 1)
    assert admm.state.weights[3] == pytest.approx(0.5)
    assert np.count_nonzero(admm.state.weights != 1.0) == 1


def test_price_floor_raises_the_penalty_of_an_expensive_row(tiny_scenario: Scenario) -> None:
    """Residuals balanced everywhere, but row 2's price is far above ρ: the floor doubles
    its weight until ρ w_2 reaches κ |price| / (b/|S|) / τ."""
    kappa = 0.1
    admm = _tiny_admm(tiny_scenario, rho=2.0, rho_update_every=1, price_floor=kappa)
    st = admm.structure
    admm.state.u = np.zeros(st.n_rows)
    admm.state.u[2] = -500.0  # price −1000
    share = st.b[2] / st.counts[2]
    wanted = kappa * 1000.0 / share / 2.0
    no_residual = (np.zeros(st.n_rows), np.zeros(st.n_rows))
    steps = 0
    while admm._balance_rows(no_residual, 1):
        steps += 1
        assert steps < 60
    w = admm.state.weights
    assert wanted / 2.0 <= w[2] < wanted
    np.testing.assert_array_equal(np.delete(w, 2), 1.0)
    assert admm.state.prices()[2] == pytest.approx(-1000.0)


def test_shift_carries_the_row_weights(tiny_scenario: Scenario) -> None:
    admm = _tiny_admm(tiny_scenario)
    st = admm.structure
    layout = layout_of(DemandView.of(tiny_scenario))
    state = admm.state.copy()
    state.weights = np.arange(1.0, st.n_rows + 1.0)
    shifted = shift_state(state, st, st, layout, 1)
    assert shifted.weights is not None
    T = layout.steps
    # Interactive row (j, c, t) takes (j, c, t+1); the last step repeats; volumes stay.
    np.testing.assert_array_equal(shifted.weights[: T - 1], state.weights[1:T])
    assert shifted.weights[T - 1] == state.weights[T - 1]
    n_int = layout.n_interactive
    np.testing.assert_array_equal(shifted.weights[n_int:], state.weights[n_int:])


# ------------------------------------------------------------------------------------------
# Against the centralised optimum, with the independent cvxpy sites


@pytest.mark.parametrize(
    ("per_row", "acceleration"),
    [(True, "none"), (False, "none"), (True, "anderson"), (True, "nesterov")],
)
def test_matches_central_with_cvxpy_sites(
    tiny_scenario: Scenario, per_row: bool, acceleration: str
) -> None:
    central = solve_central(tiny_scenario)
    settings = AdmmSettings(per_row=per_row, acceleration=acceleration, max_iter=3000)
    result, structure, layout, x, n, _ = _cvx_run(tiny_scenario, settings)
    assert result.converged
    objective = evaluate(tiny_scenario, x, n).objective_aud
    assert objective == pytest.approx(central.objective_aud, rel=OBJECTIVE_RTOL)
    _check_schedule(tiny_scenario, x, n)
    # Shadow prices: −ρu/s in row units is the centralised solver's ∂J*/∂b (same sign).
    per_step, per_volume = shadow_prices(structure, result.state, layout)
    rows = np.concatenate(
        [
            per_step[:, layout.interactive_classes, :].reshape(-1),
            per_volume[:, layout.deferrable_classes].reshape(-1),
        ]
    )
    ref = central.row_prices
    ok = np.isfinite(ref)
    assert np.all(
        np.sign(rows[ok][np.abs(ref[ok]) > 1e-6]) == np.sign(ref[ok][np.abs(ref[ok]) > 1e-6])
    )
    np.testing.assert_allclose(rows[ok], ref[ok], rtol=0.02, atol=0.02 * np.abs(ref[ok]).max())


def test_volume_price_is_the_marginal_cost(tiny_scenario: Scenario) -> None:
    """Finite difference of the optimum in one batch volume against the ADMM price."""
    result, structure, layout, *_ = _cvx_run(tiny_scenario, AdmmSettings(max_iter=3000))
    _, per_volume = shadow_prices(structure, result.state, layout)
    dv = 500.0  # requests
    batch = tiny_scenario.batch_requests.copy()
    batch[0, 2] += dv
    up = solve_central(replace(tiny_scenario, batch_requests=batch)).objective_aud
    base = solve_central(tiny_scenario).objective_aud
    assert per_volume[0, 2] > 0  # more work costs more
    assert per_volume[0, 2] == pytest.approx((up - base) / dv, rel=0.05)


def test_groups_give_the_same_answer(tiny_scenario: Scenario) -> None:
    one = _cvx_run(tiny_scenario, AdmmSettings(acceleration="none", max_iter=3000))
    grouped = _cvx_run(
        tiny_scenario,
        AdmmSettings(acceleration="none", max_iter=3000),
        groups=[["syd", "mel"], ["per"]],
    )
    assert one[0].iterations == grouped[0].iterations
    np.testing.assert_allclose(one[3], grouped[3], rtol=1e-6, atol=1e-6)


def test_iteration_limit_reports_the_best_iterate(tiny_scenario: Scenario) -> None:
    result, *_ = _cvx_run(tiny_scenario, AdmmSettings(max_iter=8, polish_factor=None))
    assert not result.converged
    assert result.iterations == 8
    best = min(result.history, key=lambda h: h.residuals.merit)
    assert result.report_iteration == best.iteration
    assert all(math.isfinite(h.residuals.primal) for h in result.history)


def test_warm_start_from_the_solution_converges_at_once(tiny_scenario: Scenario) -> None:
    settings = AdmmSettings(acceleration="none", max_iter=3000, polish_factor=None)
    cold, structure, layout, *_ = _cvx_run(tiny_scenario, settings)
    view = DemandView.of(tiny_scenario)
    scale = row_scale_of(view, layout)
    groups = [[s] for s in tiny_scenario.sites.site_id]
    fleet = InlineFleet([CvxSiteGroup(tiny_scenario, g) for g in groups], groups)
    fleet.register(layout, scale)
    warm_state = AdmmState(cold.state.z, cold.state.u, cold.final_rho, weights=cold.state.weights)
    warm = ExchangeAdmm(structure, settings, warm_state)
    result = warm.run(fleet)
    assert result.converged
    assert result.iterations <= max(5, cold.iterations // 10)


def test_shift_state_moves_rows_one_step(tiny_scenario: Scenario) -> None:
    view = DemandView.of(tiny_scenario)
    layout = layout_of(view)
    scale = row_scale_of(view, layout)
    allowed = tiny_scenario.allowed()
    supports = [layout.support(allowed[i]) for i in range(len(tiny_scenario.sites))]
    st = build_structure(view, layout, scale, tiny_scenario.sites.site_id, supports)
    state = AdmmState.initial(st, 5.0)
    state.u = np.arange(st.n_rows, dtype=float)
    shifted = shift_state(state, st, st, layout, 1)
    # The unscaled price −ρu/s of row (j, c, t) is the old one of (j, c, t+1); the last
    # step repeats; deferrable rows keep theirs.
    price = state.u / st.row_scale
    new_price = shifted.u / st.row_scale
    T = layout.steps
    r = layout.interactive_row(0, 0, 1)
    assert new_price[r] == pytest.approx(price[r + 1])
    r_last = layout.interactive_row(0, 0, T - 1)
    assert new_price[r_last] == pytest.approx(price[r_last])
    d = layout.deferrable_row(0, 2)
    assert new_price[d] == pytest.approx(price[d])
    np.testing.assert_allclose(st.row_sum(shifted.z), st.b, atol=1e-12)


class _Recorder(NullObserver):
    def __init__(self) -> None:
        self.iterations: list[int] = []
        self.states: list[str] = []

    def on_state(self, run_id, state) -> None:
        self.states.append(state.value)

    def on_iteration(self, record) -> None:
        self.iterations.append(record.iteration)


class _Broken(NullObserver):
    def on_iteration(self, record) -> None:
        raise RuntimeError("observer bug")


def test_observers_called_and_a_failing_one_dropped(tiny_scenario: Scenario) -> None:
    view = DemandView.of(tiny_scenario)
    layout = layout_of(view)
    scale = row_scale_of(view, layout)
    groups = [[s] for s in tiny_scenario.sites.site_id]
    fleet = InlineFleet([CvxSiteGroup(tiny_scenario, g) for g in groups], groups)
    supports = fleet.register(layout, scale)
    st = build_structure(view, layout, scale, fleet.site_ids, supports)
    rec = _Recorder()
    result = ExchangeAdmm(st, AdmmSettings(max_iter=6, polish_factor=None)).run(
        fleet, [_Broken(), rec]
    )
    assert rec.iterations == list(range(result.iterations))
    assert rec.states[0] == "running" and rec.states[-1] in ("converged", "stopped")


# ------------------------------------------------------------------------------------------
# The product's site agents, through the composition root (in process)


def _launch_inline(directory: Path, **settings) -> tuple:
    from thermoroute.launch import solve_distributed

    return solve_distributed(
        directory, executor="inline", settings=AdmmSettings(**settings), share_site_details=True
    )


def _check_against_central(scenario: Scenario, run) -> None:
    central = solve_central(scenario)
    out = run.outputs
    assert run.converged
    ev = evaluate(scenario, out.schedule.x, out.schedule.n)
    # Sites' reported totals are what the model charges.
    assert out.objective_aud == pytest.approx(ev.objective_aud, rel=1e-9)
    assert out.objective_aud == pytest.approx(central.objective_aud, rel=OBJECTIVE_RTOL)
    _check_schedule(scenario, out.schedule.x, out.schedule.n)
    # Converged means the iterate the stopping test saw meets both tolerances, and the
    # summary's residuals are that iterate's; the reported iterate (polished when that met
    # demand better) is the convergence file's last row, with its own figures named so.
    extra = out.stats.extra
    history = {h.iteration: h.residuals for h in run.outcome.result.history}
    decided = history[extra["decided_iteration"]]
    assert decided.converged and extra["tolerances_met"] == ["primal", "dual"]
    assert (out.stats.primal_residual, out.stats.dual_residual) == (decided.primal, decided.dual)
    reported = history[extra["report_iteration"]]
    assert out.convergence[-1][0] == extra["report_iteration"]
    assert extra["reported_tolerances_met"] == list(reported.tolerances_met)
    assert "primal" in extra["reported_tolerances_met"]
    assert extra["reported_coupling_max_rel"] == reported.coupling_max <= decided.coupling_max


def test_site_agents_inline_match_central(tiny_scenario: Scenario, tmp_path: Path) -> None:
    directory = write_scenario(tiny_scenario, tmp_path / "tiny")
    run = _launch_inline(directory)
    _check_against_central(tiny_scenario, run)
    written = run.outputs.write(tmp_path / "out")
    for name in ("summary.json", "schedule.csv", "site_steps.csv", "convergence.csv",
                 "shadow_prices.csv"):  # fmt: skip
        assert (written / name).is_file()


@pytest.mark.slow
def test_synthetic_fleet_converges_with_per_row_penalties(tmp_path: Path) -> None:
    """Rows shared by tens of sites with prices orders of magnitude apart: the per-row
    penalties converge in well under the iterations plain ADMM (one ρ) needs.

    30 sites (3 agents of 10): at the benchmark's ε_rel plain ADMM took 1,894 iterations
    here and the per-row penalties 836 (measured on this machine), so the cap of 1,200
    fails the test if the per-row penalties fall back to one ρ's pace. The 100-site fleet,
    where plain ADMM does not converge in 2,000 iterations, is bench/admm_bench.py's
    ``synth100`` (BENCHMARKS.md): minutes, not a test's seconds.
    """
    from thermoroute.common import synth

    scenario = synth.synthesize(30, 20, 0)
    directory = write_scenario(scenario, tmp_path / "s30")
    # The default's tighter ε_rel = 5e-5 only adds iterations here.
    run = solve_admm_grouped(directory, 10, AdmmSettings(eps_rel=1e-4, max_iter=1200))
    _check_against_central(scenario, run)


def solve_admm_grouped(directory: Path, per_agent: int, settings: AdmmSettings | None = None):
    from thermoroute.launch import solve_distributed

    return solve_distributed(
        directory,
        executor="inline",
        sites_per_agent=per_agent,
        settings=settings or AdmmSettings(),
        share_site_details=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["australia", "australia-20"])
def test_embedded_inline(name: str) -> None:
    from tests.conftest import embedded_scenario

    scenario = embedded_scenario(name)
    run = solve_admm_grouped(Path(scenario.metadata["directory"]), 1)
    _check_against_central(scenario, run)


def test_layout_matches_coupling_module(tiny_scenario: Scenario) -> None:
    view = DemandView.of(tiny_scenario)
    assert layout_of(view) == CouplingLayout(2, (False, False, True), 4)


def test_receding_horizon_applies_first_steps(tmp_path: Path) -> None:
    from tests.conftest import make_scenario
    from thermoroute.launch import DistributedRunSpec
    from thermoroute.simulation import SimulationSpec, simulate

    scenario = make_scenario()  # 4 hourly steps
    directory = write_scenario(scenario, tmp_path / "tiny")
    admm = DistributedRunSpec(executor="inline", settings=AdmmSettings())
    result = simulate(
        directory, SimulationSpec(days=2 / 24, horizon=2, demand_sigma=0.1, seed=3), admm
    )
    # Two steps with arrivals, then at most horizon − 1 draining.
    assert [s.step for s in result.steps][:2] == [0, 1] and len(result.steps) <= 3
    assert all(s.converged for s in result.steps)
    # Applied steps serve the real interactive demand of those hours (the nowcast is exact).
    inter = scenario.classes.interactive
    applied = len(result.steps)
    real = float(scenario.demand_rps[:, inter, :applied].sum()) * scenario.step_seconds
    assert result.totals["interactive_requests"] == pytest.approx(real, rel=DEMAND_RTOL)
    assert result.baseline_totals["interactive_requests"] == pytest.approx(real, rel=1e-6)
    assert math.isfinite(result.totals["objective_aud"])
    assert result.work.deferrable_left >= 0.0 and result.baseline_work.deferrable_left >= 0.0


def test_receding_horizon_sites_plan_with_their_own_forecasts(tmp_path: Path) -> None:
    """By default each site plans with noisy forecasts of its series; the applied step is
    still charged under the real data, and planning with perfect forecasts is selectable."""
    from tests.conftest import make_scenario
    from thermoroute.launch import DistributedRunSpec
    from thermoroute.simulation import SimulationSpec, simulate
    from thermoroute.site_agent.forecast import SiteForecast

    scenario = make_scenario()
    directory = write_scenario(scenario, tmp_path / "tiny")
    admm = DistributedRunSpec(executor="inline", settings=AdmmSettings())
    spec = SimulationSpec(days=2 / 24, horizon=3, demand_sigma=0.0, seed=3, baseline=None)
    noisy = simulate(directory, spec, admm)
    perfect = simulate(directory, replace(spec, site_forecast=SiteForecast.perfect()), admm)
    assert noisy.settings["price_sigma"] == pytest.approx(0.3)
    assert perfect.settings["price_sigma"] == 0.0
    assert all(s.converged for s in noisy.steps + perfect.steps)
    inter = scenario.classes.interactive
    for result in (noisy, perfect):
        applied = len(result.steps)
        real = float(scenario.demand_rps[:, inter, :applied].sum()) * scenario.step_seconds
        assert result.totals["interactive_requests"] == pytest.approx(real, rel=DEMAND_RTOL)
    # Different plans: the forecasts moved the sites' costs beyond the current hour.
    assert noisy.totals["objective_aud"] != pytest.approx(perfect.totals["objective_aud"], rel=1e-9)


def test_unconverged_run_says_which_tolerances_its_iterate_met(
    tiny_scenario: Scenario, tmp_path: Path
) -> None:
    directory = write_scenario(tiny_scenario, tmp_path / "tiny")
    stats = _launch_inline(directory, max_iter=8).outputs.stats
    assert not stats.converged
    met = stats.extra["tolerances_met"]
    assert met != ["primal", "dual"]
    assert ("primal" in met) == (stats.primal_residual <= stats.extra["eps_primal"])
    assert ("dual" in met) == (stats.dual_residual <= stats.extra["eps_dual"])
