"""The distributed runtime on a real (local) Ray cluster.

On the session's Ray cluster (tests/conftest.py, 2 CPUs, no dashboard); the tests are few
and small because the machine is shared.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cvxpy_site import CvxSiteGroup, assemble
from tests.test_admm import OBJECTIVE_RTOL, _check_schedule
from thermoroute.common.admm_protocol import AdmmAnswer, AdmmRequest, AdmmSiteSettings
from thermoroute.common.central import solve_central
from thermoroute.common.evaluate import evaluate
from thermoroute.common.method_protocol import MethodBegin, ScatterAnswer, ScatterRequest
from thermoroute.common.report_protocol import ReportRequest
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.admm import NAME as ADMM_NAME
from thermoroute.coordinator.admm import SITE_HANDLER as ADMM_SITE_HANDLER
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.fleet import RayFleet, SiteGroupLost
from thermoroute.site_agent.group import SiteGroup

pytestmark = pytest.mark.ray


class SlowGroup(CvxSiteGroup):
    """A cvxpy site group that stalls once, past the coordinator's deadline."""

    def __init__(self, scenario: Scenario, site_ids: list[str], stall_at: int, stall_s: float):
        super().__init__(scenario, site_ids)
        self.stall_at = stall_at
        self.stall_s = stall_s

    def method_scatter(self, request: AdmmRequest) -> AdmmAnswer:
        if request.iteration == self.stall_at:
            time.sleep(self.stall_s)
        return super().method_scatter(request)


#: One agent per site of the tiny scenario.
SINGLE_SITE_GROUPS = [["syd"], ["mel"], ["per"]]


def _registered(
    scenario: Scenario, handles: list[Any], groups: list[list[str]], settings: AdmmSettings
) -> Coordinator:
    """An in-process coordinator over ``handles``, registered and ready to run."""
    coordinator = Coordinator(DemandView.of(scenario), settings, share_site_details=True)
    coordinator.attach_actors(handles, groups)
    coordinator.register()
    return coordinator


def test_late_group_keeps_its_last_proposal(ray_cluster: Any, tiny_scenario: Scenario) -> None:
    ray = ray_cluster
    remote = ray.remote(SlowGroup).options(num_cpus=0)
    # Perth stalls 6 s at iteration 3, past a 2.5 s deadline that a healthy cvxpy solve of
    # the tiny scenario never reaches even on a loaded machine (at 1 s, a suite running
    # beside it once made another site late too).
    handles = [
        remote.remote(tiny_scenario, g, 3 if g == ["per"] else -1, 6.0) for g in SINGLE_SITE_GROUPS
    ]
    coordinator = _registered(
        tiny_scenario,
        handles,
        SINGLE_SITE_GROUPS,
        AdmmSettings(max_iter=3000, solve_timeout_s=2.5, clean_share=0.0),
    )
    outcome = coordinator.run()
    result = outcome.result
    late = [h.iteration for h in result.history if h.late_sites]
    assert late and late[0] == 3
    assert all(set(h.late_sites) <= {"per"} for h in result.history)
    assert result.late_total >= 1
    assert result.converged  # a late answer is used in a later iteration
    assert result.report_iteration not in late
    x = outcome.outputs.schedule.x
    assert x.shape == tiny_scenario.shape
    for h in handles:
        ray.kill(h)


class CrashingGroup(SiteGroup):
    """A real site group whose process dies (``os._exit``) when told to solve ``crash_from``
    or a later iteration — once, or on every call with ``always``."""

    def __init__(
        self, source: str, site_ids: list[str], crash_from: int, always: bool, **kwargs: Any
    ) -> None:
        super().__init__(source, site_ids, threads=1, **kwargs)
        self.crash_from = crash_from
        self.always = always

    def method_scatter(self, request: ScatterRequest) -> ScatterAnswer:
        iteration = request.iteration
        if self.crash_from >= 0 and (
            iteration == self.crash_from or (self.always and iteration > self.crash_from)
        ):
            os._exit(1)
        return super().method_scatter(request)


def _crashing_fleet(
    ray: Any, source: Path, crash_from: int, always: bool, **kwargs: Any
) -> list[Any]:
    """One agent per site (restartable once); ``mel``'s crashes from ``crash_from``."""
    remote = ray.remote(CrashingGroup).options(num_cpus=0, max_restarts=1)
    crash = {"mel": crash_from}
    return [
        remote.remote(str(source), g, crash.get(g[0], -1), always, **kwargs)
        for g in SINGLE_SITE_GROUPS
    ]


def test_crashed_agent_is_restarted_and_rejoins(
    ray_cluster: Any, tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    ray = ray_cluster
    handles = _crashing_fleet(ray, tiny_scenario_dir, 20, always=False)
    coordinator = _registered(
        tiny_scenario, handles, SINGLE_SITE_GROUPS, AdmmSettings(max_iter=3000, agent_restarts=1)
    )
    outcome = coordinator.run()
    result = outcome.result
    assert coordinator.fleet.crashes == [0, 1, 0]
    late = [h.iteration for h in result.history if h.late_sites]
    # The crash is the only miss: the restarted agent is registered again without waiting.
    assert late[0] == 20
    assert all(set(h.late_sites) == {"mel"} for h in result.history if h.late_sites)
    # One crash, booked once, however many calls Ray refused while restarting the agent.
    assert [(h.iteration, h.crashed_sites) for h in result.history if h.crashed_sites] == [
        (20, ("mel",))
    ]
    assert outcome.outputs.stats.extra["site_crashes"] == 1
    assert result.converged and result.report_iteration > 20
    x, n = outcome.outputs.schedule.x, outcome.outputs.schedule.n
    central = solve_central(tiny_scenario).objective_aud
    assert evaluate(tiny_scenario, x, n).objective_aud == pytest.approx(central, rel=OBJECTIVE_RTOL)
    _check_schedule(tiny_scenario, x, n)
    for h in handles:
        ray.kill(h)


def test_agent_crashing_past_its_restarts_fails_the_run(
    ray_cluster: Any, tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    ray = ray_cluster
    handles = _crashing_fleet(ray, tiny_scenario_dir, 5, always=True)
    coordinator = _registered(
        tiny_scenario, handles, SINGLE_SITE_GROUPS, AdmmSettings(max_iter=3000, agent_restarts=1)
    )
    with pytest.raises(SiteGroupLost, match=r"\['mel'\] (crashed|is lost)"):
        coordinator.run()
    for h in handles:
        ray.kill(h)


def test_restarted_agent_rejoins_at_the_current_horizon(
    ray_cluster: Any, tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    """Receding horizon: an agent restarted after the fleet moved one step is moved there
    too (its constructor loads the first window) before it is registered again."""
    ray = ray_cluster
    handles = _crashing_fleet(ray, tiny_scenario_dir, 0, always=False, steps=3)
    window = tiny_scenario.window(1, 3)
    coordinator = Coordinator(DemandView.of(window), AdmmSettings())
    fleet = RayFleet(handles, SINGLE_SITE_GROUPS, restarts=1, timeout_s=60.0)
    supports = fleet.register(coordinator.layout, coordinator.row_scale)
    fleet.begin(MethodBegin(ADMM_NAME, ADMM_SITE_HANDLER, AdmmSiteSettings(rho=1.0)))
    fleet.shift(1)
    targets = np.zeros(sum(s.size for s in supports))
    first = fleet.scatter(AdmmRequest(0, targets, 1.0))
    assert first.late_sites == ("mel",) and fleet.crashes == [0, 1, 0]
    # Calls fail fast while Ray restarts the actor; the group is late until it is back.
    k, deadline = 1, time.monotonic() + 60.0
    while fleet.scatter(AdmmRequest(k, targets, 1.0)).late_sites:
        assert time.monotonic() < deadline, "the restarted agent never answered"
        time.sleep(0.2)
        k += 1
    assert fleet.crashes == [0, 1, 0]
    request = ReportRequest(run_id="crash", iteration=k, share_details=True)
    reports = [
        d for g in fleet.broadcast("final_report", request, indexed=True) for d in g.decisions
    ]
    assert [r.site_id for r in reports] == ["syd", "mel", "per"]
    assert all(r.detail.times == window.times for r in reports)
    assert all(r.iteration == k for r in reports)
    fleet.close()
    for h in handles:
        ray.kill(h)


def test_cvxpy_sites_on_ray_match_central(ray_cluster: Any, tiny_scenario: Scenario) -> None:
    ray = ray_cluster
    groups = [["syd", "mel"], ["per"]]
    remote = ray.remote(CvxSiteGroup).options(num_cpus=0)
    handles = [remote.remote(tiny_scenario, g) for g in groups]
    # The cvxpy reference sites implement the iteration, not the end-of-run cleaning.
    settings = AdmmSettings(max_iter=3000, clean_share=0.0)
    coordinator = _registered(tiny_scenario, handles, groups, settings)
    outcome = coordinator.run()
    assert outcome.converged and outcome.result.late_total == 0
    reports = ray.get([h.site_reports.remote(outcome.result.report_iteration) for h in handles])
    x, n = assemble(tiny_scenario, [r for rs in reports for r in rs])
    central = solve_central(tiny_scenario).objective_aud
    assert evaluate(tiny_scenario, x, n).objective_aud == pytest.approx(central, rel=OBJECTIVE_RTOL)
    # Per-row penalties travel only when they change, yet every site ends with the
    # coordinator's final ρ w_r on its rows.
    rho_rows = outcome.result.state.rho_rows
    assert outcome.result.state.weights is not None
    if outcome.result.polish_iterations:  # the last solves ran at κρ, kept or not
        rho_rows = rho_rows * AdmmSettings().polish_factor
    structure = coordinator.structure
    for h, group in zip(handles, groups, strict=True):
        penalties = ray.get(h.penalties.remote())
        for sid in group:
            support = structure.support(structure.site_ids.index(sid))
            np.testing.assert_array_equal(penalties[sid], rho_rows[support])
        counts = ray.get(h.penalty_counts.remote())
        # A group gets the whole vector when any row changes, so some of its sites may see
        # their own rows repeated; most calls carry no penalty at all.
        assert counts["changed"] > 0
        assert counts["unchanged"] > counts["changed"] + counts["repeated"]
    for h in handles:
        ray.kill(h)


def test_australia_on_ray(ray_cluster: Any, tmp_path: Path) -> None:
    from tests.conftest import embedded_scenario
    from thermoroute.launch import solve_distributed

    scenario = embedded_scenario("australia")
    statuses: list[dict[str, Any]] = []
    run = solve_distributed(
        "australia", executor="ray", settings=AdmmSettings(), progress=statuses.append,
        measure_ping=True, share_site_details=True,
    )  # fmt: skip
    assert run.executor == "ray" and len(run.groups) == len(scenario.sites)
    assert run.converged
    out = run.outputs
    central = solve_central(scenario)
    ev = evaluate(scenario, out.schedule.x, out.schedule.n)
    assert out.objective_aud == pytest.approx(ev.objective_aud, rel=1e-9)
    assert out.objective_aud == pytest.approx(central.objective_aud, rel=OBJECTIVE_RTOL)
    _check_schedule(scenario, out.schedule.x, out.schedule.n)
    last_plain = [h for h in run.outcome.result.history if not h.polish][-1]
    assert last_plain.residuals.primal <= last_plain.residuals.eps_primal
    assert statuses and statuses[-1]["state"] == "converged"
    written = out.write(tmp_path / "out")
    assert (written / "convergence.csv").read_text().count("\n") == len(
        run.outcome.result.history
    ) + 1
    ms = 1000 * run.seconds_per_iteration
    ping = 1000 * run.timings["ping_s"]
    print(
        f"australia on Ray: {run.iterations} iterations, {ms:.1f} ms/iteration, ping {ping:.1f} ms"
    )
