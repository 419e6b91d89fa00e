"""Model v1.1 (docs/model.md §12) in the distributed methods: the interior point's site
elimination with the limit rows and ADMM's site QP reach the centralised optimum, each limit
alone and all together, and respect every limit.

Every solve is real: Clarabel through cvxpy for the reference, the interior point's rounds
and OSQP's site QPs in process (``--executor inline``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import make_scenario
from test_plant_limits import DERATED, assert_within_limits, onsite_by_window, with_plant

from thermoroute.common import synth
from thermoroute.common.central import solve_central
from thermoroute.common.evaluate import (
    evaluate,
    load_gpus,
    minimal_active_gpus,
    plant_limits,
    true_pue,
)
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.launch import solve_distributed

#: The issue's bound on a distributed answer's objective against the optimum.
OBJECTIVE_RTOL = 1e-4

SETTINGS = {"ipm": IpmSettings(), "admm": AdmmSettings()}


def limits_from_the_v1_optimum(sc: Scenario) -> dict[str, Scenario]:
    """Each v1.1 addition alone and all together, sized from ``sc``'s own v1 optimum so
    that each binds: the derating of the site with the hottest hour (to a share of what
    the optimum powers then), a share of
    the second busiest's peak facility power, a share of the water the busiest used in its
    tightest window, and a knee in the second's pPUE (milder shares all together, so the
    fleet can still serve its demand)."""
    base = solve_central(sc)
    facility_kw = true_pue(sc) * evaluate(sc, base.x, base.n).steps.it_kw
    order = np.argsort(load_gpus(sc, base.x).sum(axis=1))
    busiest, second = int(order[-1]), int(order[-2])
    site, other = sc.sites.site_id[busiest], sc.sites.site_id[second]
    used = onsite_by_window(sc, base.x, base.n)[busiest]
    windows = plant_limits(with_plant(sc, water_cap_l_per_day={site: 1.0})).water_l[busiest]
    lo, hi = float(sc.dry_bulb_c[second].min()), float(sc.dry_bulb_c[second].max())
    knee = lo + 0.4 * (hi - lo)
    curve = {"ppue_curve": {other: [[lo, 1.08], [knee, 1.08], [hi + 1.0, 1.6]]}}

    # Derate the site with the hottest hour so that then it keeps a share of the GPUs the
    # v1 optimum powers there, at 3 %/°C above its design temperature (other hot hours of
    # the site lose less).
    hot_site, hottest = np.unravel_index(np.argmax(sc.dry_bulb_c), sc.dry_bulb_c.shape)
    powered = float(base.n[hot_site, hottest] / sc.sites.gpus[hot_site])
    hot_id = sc.sites.site_id[hot_site]

    def limits(kept: float, grid_share: float, water_share: float) -> dict:
        loss = 1.0 - kept * powered
        out = {
            "cooling_design_c": {hot_id: float(sc.dry_bulb_c[hot_site, hottest]) - loss / 0.03},
            "cooling_derate_per_c": {hot_id: 0.03},
            "cooling_min_fraction": {hot_id: 0.1},
            "grid_limit_kw": {other: grid_share * float(facility_kw[second].max())},
        }
        per_day = water_share * float(np.min(used / windows))
        if per_day > 0:
            out["water_cap_l_per_day"] = {site: per_day}
        return out

    alone = limits(0.8, 0.8, 0.6)
    together = {**limits(0.9, 0.9, 0.8), **curve}
    cases = {
        "derated": with_plant(sc, **{k: v for k, v in alone.items() if k.startswith("cooling_")}),
        "grid": with_plant(sc, grid_limit_kw=alone["grid_limit_kw"]),
        "curve": with_plant(sc, **curve),
        "all": with_plant(sc, **together),
    }
    if "water_cap_l_per_day" in alone:
        cases["water"] = with_plant(sc, water_cap_l_per_day=alone["water_cap_l_per_day"])
    return cases


def distributed(sc: Scenario, directory: Path, method: str) -> tuple[float, np.ndarray, np.ndarray]:
    """The run's objective (the fleet's sum of what the sites charged themselves), its
    schedule and the GPUs it powers (``L / u_max``: no limit of these cases leaves room for
    more, and where idling pays the sites power ``f_t G``, within the limit by definition).
    """
    run = solve_distributed(
        write_scenario(sc, directory), executor="inline", settings=SETTINGS[method]
    )
    assert run.outcome.converged
    x = run.outputs.schedule.x
    return run.outputs.objective_aud, x, minimal_active_gpus(sc, load_gpus(sc, x))


SCENARIOS = {
    "tiny": make_scenario,
    "synthetic-4-sites": lambda: synth.synthesize(sites=4, regions=3, seed=13, steps=6),
    "synthetic-5-sites": lambda: synth.synthesize(sites=5, regions=4, seed=29, steps=6),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def cases(request: pytest.FixtureRequest) -> tuple[str, dict[str, Scenario]]:
    return request.param, limits_from_the_v1_optimum(SCENARIOS[request.param]())


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_each_limit_alone_and_all_together_reach_the_optimum_within_every_limit(
    cases: tuple[str, dict[str, Scenario]], method: str, tmp_path: Path
) -> None:
    name, scenarios = cases
    for kind, sc in scenarios.items():
        reference = solve_central(sc)
        assert_within_limits(sc, reference.x, reference.n)
        objective, x, n = distributed(sc, tmp_path / f"{name}-{kind}", method)
        assert objective == pytest.approx(reference.objective_aud, rel=OBJECTIVE_RTOL), kind
        assert_within_limits(sc, x, n)


def test_the_limits_bind_so_the_comparison_means_something() -> None:
    # Each case changes the optimum (the curve may make it cheaper): a limit that never
    # binds would test nothing.
    sc = make_scenario()
    v1 = solve_central(sc).objective_aud
    for kind, limited in limits_from_the_v1_optimum(sc).items():
        assert abs(solve_central(limited).objective_aud / v1 - 1.0) > 1e-5, kind


def idle_pays(sc: Scenario, sites: list[str]) -> Scenario:
    """``sc`` with the ``sites``' price at −1,000 AUD/MWh (the NEM's floor) in the first
    step: idling earns money there."""
    price = sc.price_aud_per_mwh.copy()
    price[[sc.sites.site_id.index(site) for site in sites], 0] = -1000.0
    return replace(sc, price_aud_per_mwh=price)


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_a_grid_limit_where_idle_gpus_earn_money_splits_it_as_the_optimum_does(
    method: str, tmp_path: Path
) -> None:
    # Every powered GPU earns money in the first hour, so the optimum powers idle GPUs; the
    # site powering most of them gets a connection that carries its load and only half of
    # its idle GPUs' power. The optimum splits what the limit leaves between load and idle
    # GPUs, and so must the site's own GPUs-beyond-the-load variables.
    base = idle_pays(make_scenario(), list(make_scenario().sites.site_id))
    unlimited = solve_central(base)
    busy = load_gpus(base, unlimited.x)[:, 0] / base.sites.u_max
    i = int(np.argmax(unlimited.n[:, 0] - busy))
    assert unlimited.n[i, 0] > busy[i] + 1.0
    idle_kw = base.sites.idle_w[i] * (unlimited.n[i, 0] - busy[i]) / 1000.0
    it_kw = evaluate(base, unlimited.x, unlimited.n).steps.it_kw[i, 0]
    limit = float(true_pue(base)[i, 0] * (it_kw - 0.5 * idle_kw))
    sc = with_plant(base, grid_limit_kw={base.sites.site_id[i]: limit})
    reference = solve_central(sc)
    facility_kw = true_pue(sc) * evaluate(sc, reference.x, reference.n).steps.it_kw
    assert facility_kw[i, 0] == pytest.approx(limit, rel=1e-6)
    assert reference.objective_aud > unlimited.objective_aud * (1 + 1e-6)
    run = solve_distributed(
        write_scenario(sc, tmp_path / "scenario"),
        executor="inline",
        settings=SETTINGS[method],
        share_site_details=True,
    )
    assert run.outcome.converged
    schedule = run.outputs.schedule
    assert run.outputs.objective_aud == pytest.approx(reference.objective_aud, rel=OBJECTIVE_RTOL)
    assert schedule.n[i, 0] == pytest.approx(reference.n[i, 0], rel=1e-3)
    assert_within_limits(sc, schedule.x, schedule.n)


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_derating_where_idle_gpus_earn_money_powers_only_the_derated_gpus(
    method: str, tmp_path: Path
) -> None:
    # Derating alone stays exact where idling pays: n = f_t G there.
    sc = idle_pays(with_plant(make_scenario(), **DERATED), ["mel"])
    reference = solve_central(sc)
    objective, x, n = distributed(sc, tmp_path / "derated", method)
    assert objective == pytest.approx(reference.objective_aud, rel=OBJECTIVE_RTOL)
    assert_within_limits(sc, x, n)
