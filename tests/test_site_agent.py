"""The site agent and site group: data isolation, the per-iteration protocol, reports."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from thermoroute.common.admm_protocol import AdmmRequest, AdmmSiteSettings
from thermoroute.common.coupling import CouplingLayout, coefficient_of_entry
from thermoroute.common.errors import ScenarioError
from thermoroute.common.evaluate import TOTAL_KEYS, evaluate
from thermoroute.common.method_protocol import MethodBegin
from thermoroute.common.scenario import Objective, Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_split import split_scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.synth import synthesize
from thermoroute.coordinator.admm import NAME as ADMM_NAME
from thermoroute.coordinator.admm import SITE_HANDLER as ADMM_SITE_HANDLER
from thermoroute.site_agent.agent import SiteAgent, SiteReport
from thermoroute.site_agent.data import load_site, load_sites
from thermoroute.site_agent.group import SiteGroup
from thermoroute.site_agent.subproblem import InnerSettings

#: Objective weights of the synthetic fixtures, pinned (those of the embedded scenarios).
WEIGHTS = Objective(carbon_aud_per_kg=0.075, water_aud_per_l=0.00267, latency_aud_per_req_s=7.6e-5)
#: A penalty at which sites serve most of their targets.
RHO = 1e3


def synth(sites: int, regions: int, seed: int, steps: int) -> Scenario:
    scenario = synthesize(sites=sites, regions=regions, seed=seed, steps=steps)
    return replace(scenario, objective=WEIGHTS)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, Path]:
    scenario = synth(4, 5, 11, 8)
    directory = tmp_path_factory.mktemp("fleet")
    write_scenario(scenario, directory)
    return scenario, directory


@pytest.fixture(scope="module")
def split(fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, directory = fleet
    out = tmp_path_factory.mktemp("split")
    split_scenario(directory, out)
    return out


def layout_of(scenario: Scenario) -> CouplingLayout:
    return CouplingLayout(
        len(scenario.regions),
        tuple(bool(d) for d in scenario.classes.deferrable),
        scenario.steps,
    )


def _registered(agent: SiteAgent, lay: CouplingLayout, scale: np.ndarray, rho: float) -> np.ndarray:
    """Register ``agent`` and set the penalty of its proximal subproblem (what exchange
    ADMM's begin does); its support."""
    support = agent.register(lay, scale)
    agent.set_penalty(rho)
    return support


def _admm(rho: float) -> MethodBegin:
    """The begin of an exchange-ADMM run whose sites start at penalty ``rho``."""
    return MethodBegin(ADMM_NAME, ADMM_SITE_HANDLER, AdmmSiteSettings(rho=rho))


def scaled(scenario: Scenario) -> tuple[CouplingLayout, np.ndarray, np.ndarray]:
    lay = layout_of(scenario)
    scale = lay.row_scale(scenario.demand_rps, scenario.batch_requests)
    b = lay.right_hand_side(scenario.demand_rps, scenario.batch_requests) / scale
    return lay, scale, b


def target_for(support: np.ndarray, b: np.ndarray, k: int, sites: int = 4) -> np.ndarray:
    rng = np.random.default_rng(1000 + k)
    return b[support] / sites * (1.0 + 0.2 * rng.standard_normal(support.size))


# --------------------------------------------------------------------------------------------
# Data: only the site's own


def test_load_site_from_full_directory_holds_only_that_site(fleet):
    scenario, directory = fleet
    i = 2
    sid = scenario.sites.site_id[i]
    site = load_site(directory, sid)
    assert site.sites.site_id == (sid,)
    assert site.shape == (1, *scenario.shape[1:])
    # Every site-indexed array has one row, equal to the site's row of the full scenario.
    for name in ("gpu_s", "energy_j", "prefill_ms", "rtt_ms", "dry_bulb_c", "wet_bulb_c"):
        np.testing.assert_array_equal(getattr(site, name), getattr(scenario, name)[i : i + 1])
    for name in ("price_aud_per_mwh", "carbon_kg_per_kwh", "ewif_l_per_kwh"):
        np.testing.assert_array_equal(getattr(site, name), getattr(scenario, name)[i : i + 1])
    for f in fields(site.sites):
        value = getattr(site.sites, f.name)
        if value is None:  # model v1.1's optional plant data, absent from v1 data
            assert getattr(scenario.sites, f.name) is None, f.name
            continue
        assert len(value) == 1, f.name
        np.testing.assert_array_equal(
            np.asarray(value), np.asarray(getattr(scenario.sites, f.name))[[i]]
        )
    # None of the coordinator's data: no demand, no volumes, no populations.
    assert not site.demand_rps.any() and not site.batch_requests.any()
    assert not site.regions.population.any()
    assert site.regions.region_id == scenario.regions.region_id  # public ids are kept
    others = set(scenario.sites.site_id) - {sid}
    assert not others & set(site.sites.site_id)
    assert sid in repr(site.metadata) and not any(o in repr(site.metadata) for o in others)


def test_per_site_directory_and_split_root_give_the_same_data(fleet, split):
    scenario, directory = fleet
    sid = scenario.sites.site_id[1]
    from_full = load_site(directory, sid)
    from_own = load_site(split / "sites" / sid, sid)
    from_root = load_site(split, sid)
    for other in (from_own, from_root):
        assert other.sites.site_id == (sid,)
        for name in ("gpu_s", "rtt_ms", "dry_bulb_c", "price_aud_per_mwh", "ewif_l_per_kwh"):
            np.testing.assert_array_equal(getattr(other, name), getattr(from_full, name))
        assert other.times == from_full.times


def test_load_site_refuses_unknown_or_foreign_sites(fleet, split):
    scenario, directory = fleet
    with pytest.raises(ScenarioError, match="no site with site_id"):
        load_site(directory, "nowhere")
    a, b = scenario.sites.site_id[:2]
    with pytest.raises(ScenarioError, match="per-site directory"):
        load_site(split / "sites" / a, b)


def test_load_site_by_embedded_scenario_name():
    from thermoroute.common import scenarios
    from thermoroute.common.scenario_loading import load_scenario

    full = load_scenario(scenarios.embedded_path("australia"))
    site = load_site("australia", "mel")
    i = full.sites.site_id.index("mel")
    assert site.sites.site_id == ("mel",)
    np.testing.assert_array_equal(site.price_aud_per_mwh, full.price_aud_per_mwh[i : i + 1])
    assert not site.demand_rps.any() and not site.regions.population.any()
    with pytest.raises(ScenarioError):
        load_site("no-such-scenario", "mel")


def test_load_site_window(fleet):
    scenario, directory = fleet
    sid = scenario.sites.site_id[0]
    site = load_site(directory, sid, start=scenario.times[2], steps=4)
    assert site.times == scenario.times[2:6]
    np.testing.assert_array_equal(site.dry_bulb_c[0], scenario.dry_bulb_c[0, 2:6])


def _bits(site: Scenario) -> bytes:
    """Every field but the metadata, bit for bit."""
    return pickle.dumps(replace(site, metadata={}))


def test_a_group_read_in_one_pass_equals_each_site_read_alone(fleet):
    scenario, directory = fleet
    ids = list(scenario.sites.site_id[1:3])
    loaded = load_sites(directory, ids)
    assert list(loaded) == ids
    for sid in ids:
        alone = load_site(directory, sid)
        assert _bits(loaded[sid]) == _bits(alone)
        assert loaded[sid].metadata == alone.metadata


def test_a_site_reads_what_validation_reads(fleet, tmp_path):
    # A byte-order mark and CRLF line ends on every file: validation accepts them, so must
    # a site (issue 21: the old slicer's own reader failed on a BOM).
    scenario, directory = fleet
    marked = tmp_path / "marked"
    shutil.copytree(directory, marked)
    for path in marked.glob("*.csv"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    sid = scenario.sites.site_id[1]
    assert _bits(load_site(marked, sid)) == _bits(load_site(directory, sid))


def test_other_sites_rows_are_neither_read_nor_judged(fleet, tmp_path):
    scenario, directory = fleet
    mine, other = scenario.sites.site_id[0], scenario.sites.site_id[1]
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    rows = (broken / "site_series.csv").read_text(encoding="utf-8").splitlines()
    k = next(i for i, r in enumerate(rows) if r.split(",")[1] == other)
    rows[k] = rows[k].replace(other, f"{other},extra", 1)  # a field too many, on its row
    rows.append(rows[1].replace(mine, "nowhere", 1))  # a row of no site of the fleet
    (broken / "site_series.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as full:
        load_scenario(broken)
    with pytest.raises(ScenarioError) as own:
        load_site(broken, mine)
    # The other site's row is its own to refuse; the row of no site is everyone's, in
    # validation's words.
    assert [str(p) for p in own.value.problems] == [
        str(p) for p in full.value.problems if "nowhere" in p.reason
    ]
    with pytest.raises(ScenarioError) as others:
        load_site(broken, other)
    assert {str(p) for p in others.value.problems} == {str(p) for p in full.value.problems}


# --------------------------------------------------------------------------------------------
# The per-iteration protocol


def test_solve_is_idempotent_per_iteration(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    agent = SiteAgent(directory, scenario.sites.site_id[0])
    support = _registered(agent, lay, scale, RHO)
    sub = agent.subproblem
    first = agent.solve(0, RHO, target_for(support, b, 0))
    second = agent.solve(1, RHO, target_for(support, b, 1))
    assert sub.info.solves == 2
    # A retried call — with any target — returns the cached answer without solving.
    again = agent.solve(1, RHO, target_for(support, b, 99))
    late = agent.solve(0, RHO, target_for(support, b, 98))
    assert sub.info.solves == 2
    assert again[0] == 1 and np.array_equal(again[1], second[1])
    assert late[0] == 0 and np.array_equal(late[1], first[1])
    again[1][:] = -1.0  # the caller's copy; the cache is untouched
    assert np.array_equal(agent.solve(1, RHO, target_for(support, b, 1))[1], second[1])
    agent.solve(2, RHO, target_for(support, b, 2))
    assert sub.info.solves == 3
    agent.reset_cache()
    agent.solve(1, RHO, target_for(support, b, 1))
    assert sub.info.solves == 4


def test_solve_answers_served_demand_and_nothing_else(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    agent = SiteAgent(directory, scenario.sites.site_id[3])
    support = _registered(agent, lay, scale, RHO)
    assert support.dtype == np.int64
    np.testing.assert_array_equal(support, lay.support(scenario.allowed()[3]))
    answer = agent.solve(0, RHO, target_for(support, b, 0))
    assert isinstance(answer, tuple) and len(answer) == 2
    iteration, served = answer
    assert type(iteration) is int and iteration == 0
    assert type(served) is np.ndarray and served.dtype == np.float64
    assert served.shape == support.shape
    # The message is the served demand A_i x_i of the site's own schedule, no more.
    x = agent.subproblem.x
    full = np.zeros(lay.n_rows)
    np.add.at(
        full,
        lay.row_of_entry(),
        x * coefficient_of_entry(lay, scenario.step_seconds)[None, :, None],
    )
    np.testing.assert_allclose(served, (full / scale)[support], rtol=1e-12, atol=1e-12)
    assert len(pickle.dumps(answer)) < served.nbytes + 400


def test_registering_again_for_the_same_horizon_after_per_row_penalties(fleet):
    """A restarted coordinator registers the fleet again, same scales, scalar ρ, after the
    sites held per-row penalties: the subproblem is kept and takes the scalar ρ."""
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    agent = SiteAgent(directory, scenario.sites.site_id[0])
    support = _registered(agent, lay, scale, RHO)
    per_row = np.linspace(0.5, 2.0, lay.n_rows) * RHO
    agent.solve(0, per_row, target_for(support, b, 0), None, None)
    sub = agent.subproblem
    assert np.array_equal(_registered(agent, lay, scale, RHO), support)
    assert agent.subproblem is sub
    again = agent.solve(0, RHO, target_for(support, b, 0), None, None)[1]
    fresh = SiteAgent(directory, scenario.sites.site_id[0])
    _registered(fresh, lay, scale, RHO)
    alone = fresh.solve(0, RHO, target_for(support, b, 0), None, None)[1]
    np.testing.assert_allclose(again, alone, rtol=1e-3, atol=1e-6)


def test_best_snapshot_and_final_report(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    agent = SiteAgent(directory, scenario.sites.site_id[1])
    support = _registered(agent, lay, scale, RHO)
    xs, ns, objectives = {}, {}, {}
    best = None
    for k in range(5):
        agent.solve(k, RHO, target_for(support, b, k), None, best)
        xs[k], ns[k] = agent.subproblem.x, agent.subproblem.n
        objectives[k] = agent.subproblem.objective_value()
        best = 2 if k >= 2 else k  # the coordinator's best: iteration 2 from then on
    report = agent.final_report(2)
    assert isinstance(report, SiteReport)
    assert (report.iteration, report.best) == (2, True)
    np.testing.assert_array_equal(report.x, xs[2])
    np.testing.assert_array_equal(report.n, ns[2])
    last = agent.final_report(4)
    assert (last.iteration, last.best) == (4, False)
    np.testing.assert_array_equal(last.x, xs[4])
    assert last.objective_history == [objectives[k] for k in range(5)]
    assert last.history_iterations == list(range(5))
    # Totals and per-step arrays are the true model's, for the reported iterate.
    ev = evaluate(agent.site, xs[2][None], ns[2][None])
    assert set(report.totals) == set(TOTAL_KEYS) | {"interactive_requests", "objective_aud"}
    for key, value in ev.site_totals(0).items():
        assert report.totals[key] == pytest.approx(value, rel=1e-12)
    assert report.totals["objective_aud"] == pytest.approx(ev.objective_aud, rel=1e-12)
    assert report.totals["objective_aud"] == pytest.approx(objectives[2], rel=1e-9)
    np.testing.assert_allclose(report.it_kw, ev.steps.it_kw[0])
    np.testing.assert_allclose(report.pue, ev.steps.pue[0])
    np.testing.assert_allclose(report.wue, ev.steps.wue_l_per_kwh[0])
    for name in ("active_gpus", "load_gpus", "it_kw", "pue", "cooling_kw", "wue"):
        assert getattr(report, name).shape == (scenario.steps,)
    assert report.times == scenario.times


def test_telemetry_stays_with_the_site(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    agent = SiteAgent(directory, scenario.sites.site_id[0])
    support = _registered(agent, lay, scale, RHO)
    agent.solve(0, RHO, target_for(support, b, 0))
    tel = agent.telemetry()
    assert tel["iteration"] == 0 and tel["setup_count"] == 1 and tel["solved"]
    assert tel["osqp_iterations"] > 0 and tel["solve_s"] > 0
    parts = tel["objective"]
    assert set(parts) == {"energy_cost", "carbon", "water", "latency", "total"}
    assert parts["total"] == pytest.approx(agent.subproblem.objective_value(), rel=1e-9)


def test_register_again_reuses_the_solver(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    agent = SiteAgent(directory, scenario.sites.site_id[2])
    support = _registered(agent, lay, scale, RHO)
    solver = agent.subproblem.solver
    agent.solve(0, RHO, target_for(support, b, 0))
    again = _registered(agent, lay, scale * 1.5, 2 * RHO)
    np.testing.assert_array_equal(again, support)
    sub = agent.subproblem
    # New scales, then a new penalty: one value update each, never a new OSQP set-up.
    assert sub.solver is solver and sub.setup_count == 1 and sub.px_updates == 2
    assert agent.final_report(None).objective_history == []  # a new run


# --------------------------------------------------------------------------------------------
# Groups


def test_group_solve_equals_individual_solves(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    ids = scenario.sites.site_id
    group = SiteGroup(directory, ids, threads=2)
    try:
        supports = group.register(lay, scale)
        assert group.method_begin(_admm(RHO)) == b""  # exchange ADMM masks nothing
        agents = {s: SiteAgent(directory, s) for s in ids}
        for s, agent in agents.items():
            np.testing.assert_array_equal(_registered(agent, lay, scale, RHO), supports[s])
        for k in range(4):
            rho = RHO if k < 2 else 2 * RHO
            targets = {s: target_for(supports[s], b, 10 * k + n) for n, s in enumerate(ids)}
            if k % 2:  # the concatenated form
                packed = np.concatenate([targets[s] for s in ids])
                answer = group.method_scatter(AdmmRequest(k, packed, rho, 1e-7))
            else:
                answer = group.method_scatter(AdmmRequest(k, targets, rho, 1e-7))
            answered, served = answer.iteration, answer.served
            assert answered == k and list(served) == list(ids)
            for s in ids:
                _, alone = agents[s].solve(k, rho, targets[s], 1e-7, None)
                np.testing.assert_array_equal(served[s], alone)
        cached = group.method_scatter(AdmmRequest(3, packed, 2 * RHO, 1e-7))
        assert cached.iteration == 3
        for s in ids:
            np.testing.assert_array_equal(cached.served[s], served[s])
        reports = group.site_reports(3)
        assert [r.site_id for r in reports] == list(ids)
        for r in reports:
            np.testing.assert_array_equal(r.x, agents[r.site_id].final_report(3).x)
        assert set(group.telemetry()) == set(ids)
    finally:
        group.close()


def test_group_imports_site_handlers_ahead_and_answers_an_empty_round(fleet):
    """The product's site handlers import in a group (as its actor does while it starts);
    a name that names nothing fails there as it would at a run's begin."""
    from thermoroute.cluster import PRODUCT_SITE_HANDLERS
    from thermoroute.common.method_protocol import EmptyRound

    scenario, directory = fleet
    group = SiteGroup(directory, scenario.sites.site_id[:1], threads=1)
    try:
        group.import_site_handlers(PRODUCT_SITE_HANDLERS)
        with pytest.raises(ValueError, match=r"no site handler 'thermoroute\.nowhere:begin'"):
            group.import_site_handlers(["thermoroute.nowhere:begin"])
        masked = group.empty_round(EmptyRound(5))
        assert masked.shape == (2, 5) and masked.dtype == np.uint64 and not masked.any()
        assert group.empty_round(EmptyRound(3, masked=False)).shape == (3,)
    finally:
        group.close()


def test_sum_of_site_objectives_equals_the_whole_scenario(fleet):
    scenario, directory = fleet
    lay, scale, b = scaled(scenario)
    group = SiteGroup(directory, scenario.sites.site_id, threads=1)
    supports = group.register(lay, scale)
    group.method_begin(_admm(RHO))
    targets = {s: target_for(v, b, n) for n, (s, v) in enumerate(supports.items())}
    group.method_scatter(AdmmRequest(0, targets, RHO))
    x = np.zeros(scenario.shape)
    n = np.zeros((len(scenario.sites), scenario.steps))
    parts: dict[str, float] = {}
    for i, sid in enumerate(scenario.sites.site_id):
        sub = group.agents[sid].subproblem
        x[i], n[i] = sub.x, sub.n
        for key, value in sub.local_objective().items():
            parts[key] = parts.get(key, 0.0) + value
    whole = evaluate(scenario, x, n)
    o = scenario.objective
    per = whole.per_site_step
    assert parts["total"] == pytest.approx(whole.objective_aud, rel=1e-12)
    assert parts["energy_cost"] == pytest.approx(per["energy_cost_aud"].sum(), rel=1e-12)
    assert parts["carbon"] == pytest.approx(o.carbon_aud_per_kg * per["carbon_kg"].sum())
    assert parts["water"] == pytest.approx(o.water_aud_per_l * per["water_l"].sum())
    assert parts["latency"] == pytest.approx(o.latency_aud_per_req_s * per["latency_req_s"].sum())


# --------------------------------------------------------------------------------------------
# Receding horizon


def test_shift_moves_the_window_without_a_new_setup(tmp_path):
    scenario = synth(3, 4, 21, 12)
    write_scenario(scenario, tmp_path)
    horizon = 6
    sid = scenario.sites.site_id[1]
    lay = CouplingLayout(
        len(scenario.regions), tuple(bool(d) for d in scenario.classes.deferrable), horizon
    )
    window = scenario.window(0, horizon)
    scale = lay.row_scale(window.demand_rps, window.batch_requests)
    b = lay.right_hand_side(window.demand_rps, window.batch_requests) / scale
    agent = SiteAgent(
        tmp_path, sid, steps=horizon, settings=InnerSettings(eps_abs=1e-9, eps_rel=1e-9)
    )
    support = _registered(agent, lay, scale, RHO)
    agent.solve(0, RHO, target_for(support, b, 0, 3))
    solver = agent.subproblem.solver
    agent.shift(2)
    assert agent.site.start == scenario.times[2] and agent.site.steps == horizon
    np.testing.assert_array_equal(agent.site.dry_bulb_c[0], scenario.dry_bulb_c[1, 2:8])
    assert agent.subproblem.solver is solver and agent.subproblem.setup_count == 1
    target = target_for(support, b, 1, 3)
    _, served = agent.solve(0, RHO, target)  # iteration ids start again after a shift
    fresh = SiteAgent(
        tmp_path,
        sid,
        start=scenario.times[2],
        steps=horizon,
        settings=InnerSettings(eps_abs=1e-9, eps_rel=1e-9),
    )
    _registered(fresh, lay, scale, RHO)
    np.testing.assert_allclose(served, fresh.solve(0, RHO, target)[1], atol=1e-6)
    # To an explicit start.
    agent.shift(4, scenario.times[6])
    assert agent.site.times == scenario.times[6:12]

    group = SiteGroup(tmp_path, scenario.sites.site_id, steps=horizon, threads=2)
    try:
        group.register(lay, scale)
        group.method_begin(_admm(RHO))
        group.shift(3)
        assert all(a.site.start == scenario.times[3] for a in group.agents.values())
        assert all(a.subproblem.setup_count == 1 for a in group.agents.values())
    finally:
        group.close()


# --------------------------------------------------------------------------------------------
# The site side inside a plain exchange ADMM, on the embedded australia scenario


def test_plain_exchange_admm_over_site_groups_reaches_the_central_optimum():
    """Textbook exchange ADMM (Boyd et al. 2011, §7.3.2; fixed ρ, no acceleration) over two
    site groups loaded by scenario name: the sites' answers must add up to the centralised
    optimum. This checks that each site solves the right subproblem with the right coupling
    contribution, not the coordinator (which has its own tests)."""
    from thermoroute.common import scenarios
    from thermoroute.common.central import solve_central
    from thermoroute.common.scenario_loading import load_scenario

    scenario = load_scenario(scenarios.embedded_path("australia"))
    lay, scale, b = scaled(scenario)
    ids = scenario.sites.site_id
    groups = [SiteGroup("australia", ids[:4], threads=2), SiteGroup("australia", ids[4:])]
    rho = 10.0
    try:
        supports: dict[str, np.ndarray] = {}
        for g in groups:
            supports.update(g.register(lay, scale))
            g.method_begin(_admm(rho))
        counts = np.zeros(lay.n_rows)
        for rows in supports.values():
            counts[rows] += 1
        served = {s: np.zeros(rows.size) for s, rows in supports.items()}
        u = np.zeros(lay.n_rows)
        mean_residual = -b / counts
        for k in range(300):
            targets = {s: served[s] - (mean_residual + u)[supports[s]] for s in supports}
            for g in groups:
                answer = g.method_scatter(AdmmRequest(k, {s: targets[s] for s in g.site_ids}, rho))
                assert answer.iteration == k
                served.update(answer.served)
            total = np.zeros(lay.n_rows)
            for s, v in served.items():
                total[supports[s]] += v
            mean_residual = (total - b) / counts
            u += mean_residual
        reports = [r for g in groups for r in g.site_reports(k)]
    finally:
        for g in groups:
            g.close()
    assert np.linalg.norm(total - b) <= 1e-2
    x = np.stack([r.x for r in reports])
    n = np.stack([r.n for r in reports])
    admm = evaluate(scenario, x, n).objective_aud
    assert admm == pytest.approx(sum(r.totals["objective_aud"] for r in reports), rel=1e-12)
    central = solve_central(scenario).objective_aud
    assert abs(admm - central) <= 1e-3 * central
