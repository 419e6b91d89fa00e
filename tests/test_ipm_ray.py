"""The distributed interior-point method on a real (local) Ray cluster.

One actor per site and site groups, secure aggregation on, a real agent process killed in the
middle of a round. On the session's Ray cluster (tests/conftest.py, 2 CPUs, no dashboard).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.test_ipm import _check, _embedded
from thermoroute import launch
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.fleet import SiteGroupLost
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.site_agent.group import SiteGroup

#: These tests charge the schedule under the model, which needs each site's active GPUs: the
#: sites share their detail with the coordinator (docs/model.md §9), as an operator may.
solve_distributed = partial(launch.solve_distributed, share_site_details=True)

pytestmark = pytest.mark.ray


def test_australia_on_ray_one_actor_per_site(ray_cluster: Any) -> None:
    statuses: list[dict[str, Any]] = []
    run = solve_distributed(
        "australia", executor="ray", settings=IpmSettings(), progress=statuses.append
    )
    assert run.executor == "ray" and len(run.groups) == 8
    _check(_embedded("australia"), run, 15)
    assert run.outcome.run.extra_stats["secure_aggregation"] is True
    assert statuses[-1]["state"] == "converged" and statuses[-1]["method"] == "ipm"


def test_heatwave_on_ray_reaches_the_optimum(ray_cluster: Any) -> None:
    # The heatwave's default day (VIC1 at the price cap, Hobart derated, Adelaide's limits
    # where its prices go negative) across Ray actors, as in process.
    name = "australia-heatwave-2020"
    run = solve_distributed(name, executor="ray", settings=IpmSettings())
    _check(_embedded(name), run, 30)


def test_site_groups_on_ray_give_the_same_answer(ray_cluster: Any) -> None:
    alone = solve_distributed("australia", executor="inline", settings=IpmSettings())
    grouped = solve_distributed(
        "australia", executor="ray", sites_per_agent=3, settings=IpmSettings()
    )
    assert len(grouped.groups) == 3
    assert grouped.iterations == alone.iterations
    assert grouped.objective_aud == pytest.approx(alone.objective_aud, rel=1e-9)


class CrashingGroup(SiteGroup):
    """A real site group whose process dies (``os._exit``) in the ``predict`` round of
    iteration ``crash_at`` — once (the restarted actor has a fresh count), or on every
    iteration from then with ``always``."""

    def __init__(
        self, source: str, site_ids: list[str], crash_at: int, always: bool, **kwargs: Any
    ) -> None:
        super().__init__(source, site_ids, threads=1, **kwargs)
        self.crash_at = crash_at
        self.always = always

    def method_round(self, request: Any) -> Any:
        hit = request.iteration == self.crash_at or (
            self.always and request.iteration > self.crash_at
        )
        if self.crash_at >= 0 and hit and request.phase == "predict" and not self._restarted():
            os._exit(1)
        return super().method_round(request)

    def _restarted(self) -> bool:
        import ray

        return (not self.always) and ray.get_runtime_context().was_current_actor_reconstructed


def _fleet(ray: Any, source: Path, crash_at: int, always: bool) -> list[Any]:
    remote = ray.remote(CrashingGroup).options(num_cpus=0, max_restarts=1)
    return [
        remote.remote(str(source), [sid], crash_at if sid == "mel" else -1, always)
        for sid in ("syd", "mel", "per")
    ]


def _coordinator(scenario: Scenario, handles: list[Any]) -> Coordinator:
    coordinator = Coordinator(DemandView.of(scenario), IpmSettings(agent_restarts=1))
    coordinator.attach_actors(handles, [["syd"], ["mel"], ["per"]])
    coordinator.register()
    return coordinator


def test_agent_crash_mid_round_ends_at_the_optimum(
    ray_cluster: Any, tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    ray = ray_cluster
    clean = solve_distributed(tiny_scenario_dir, executor="inline", settings=IpmSettings())
    handles = _fleet(ray, tiny_scenario_dir, 4, always=False)
    coordinator = _coordinator(tiny_scenario, handles)
    outcome = coordinator.run()
    assert coordinator.fleet.crashes == [0, 1, 0]
    result = outcome.result
    crashed = [(h.iteration, h.crashed_sites) for h in result.history if h.crashed_sites]
    assert crashed == [(4, ("mel",))]
    assert result.rejoins == 1 and outcome.outputs.stats.extra["site_crashes"] == 1
    assert outcome.converged
    assert outcome.objective_aud == pytest.approx(clean.objective_aud, rel=1e-4)
    for h in handles:
        ray.kill(h)


def test_agent_crashing_past_its_restarts_fails_the_run(
    ray_cluster: Any, tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    ray = ray_cluster
    handles = _fleet(ray, tiny_scenario_dir, 2, always=True)
    coordinator = _coordinator(tiny_scenario, handles)
    with pytest.raises(SiteGroupLost, match=r"\['mel'\]"):
        coordinator.run()
    for h in handles:
        ray.kill(h)


class RegisterCrashingGroup(SiteGroup):
    """A real site group whose process dies in its second registration (a crash between two
    of ``serve``'s cycles, after the fleet moved and before the next run registers)."""

    def __init__(self, source: str, site_ids: list[str], crash: bool) -> None:
        super().__init__(source, site_ids, threads=1)
        self.crash = crash
        self.registrations = 0

    def register(self, layout: Any, row_scale: Any) -> Any:
        import ray

        self.registrations += 1
        reborn = ray.get_runtime_context().was_current_actor_reconstructed
        if self.crash and self.registrations == 2 and not reborn:
            os._exit(1)
        return super().register(layout, row_scale)


def test_a_group_lost_while_registering_is_a_failed_round_the_fleet_recovers(
    ray_cluster: Any, tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    from thermoroute.coordinator.fleet import RoundFailed

    ray = ray_cluster
    remote = ray.remote(RegisterCrashingGroup).options(num_cpus=0, max_restarts=1)
    handles = [
        remote.remote(str(tiny_scenario_dir), [s], s == "mel") for s in ("syd", "mel", "per")
    ]
    coordinator = _coordinator(tiny_scenario, handles)
    # Not Ray's own error escaping the fleet (serve would die of it): a round that failed,
    # naming the group to recover.
    with pytest.raises(RoundFailed, match=r"\['mel'\]") as failed:
        coordinator.register()
    assert failed.value.groups == [1]
    coordinator.fleet.recover(failed.value.groups)
    assert coordinator.register()["sites"] == 3
    assert coordinator.run().converged
    for h in handles:
        ray.kill(h)
