"""Tree aggregation on a real (local) Ray cluster: relays call their children actor to actor,
the run is the flat run, and a group that crashes or hangs inside a subtree fails the round
naming it, so the method recovers it and converges. On the session's cluster
(tests/conftest.py); the tiny scenario's three one-site groups under a fan-in of 2: group 0
(``syd``) relays group 1 (``mel``); group 2 (``per``) answers the coordinator itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from thermoroute import launch
from thermoroute.common.aggregation_tree import AggregationTree
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.fleet import RayFleet
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.site_agent.group import SiteGroup

pytestmark = pytest.mark.ray

SITES = ("syd", "mel", "per")
TREE = AggregationTree.k_ary(3, 2)


def test_the_tree_is_what_the_tests_say() -> None:
    assert TREE.top == (0, 2) and TREE.children[0] == (1,)


def test_a_run_through_relays_of_relays_on_ray_is_the_flat_run(
    ray_cluster: Any, synth_scenario: Scenario, tmp_path: Path
) -> None:
    """Five one-site actors under a fan-in of 2: 0 relays 1 and 2 (which relays 3), 4
    answers the coordinator itself; the sums are the flat run's to the bit."""
    assert AggregationTree.k_ary(5, 2).children[:3] == ((1, 2), (), (3,))
    source = write_scenario(synth_scenario, tmp_path / "synth")
    flat = launch.solve_distributed(source, executor="inline", settings=IpmSettings())
    relayed = launch.solve_distributed(
        source, executor="ray", settings=IpmSettings(), aggregation_fan_in=2
    )
    assert len(relayed.groups) == 5 and relayed.converged
    assert relayed.iterations == flat.iterations
    assert relayed.objective_aud == pytest.approx(flat.objective_aud, rel=1e-12)


class FailingGroup(SiteGroup):
    """A real site group that, in the ``predict`` round of iteration ``at``, dies
    (``os._exit``) or hangs — once: the actor Ray restarts behaves."""

    def __init__(self, source: str, site_ids: list[str], at: int, how: str) -> None:
        super().__init__(source, site_ids, threads=1)
        self.at = at
        self.how = how

    def method_round(self, request: Any) -> Any:
        import ray

        reborn = ray.get_runtime_context().was_current_actor_reconstructed
        if request.iteration == self.at and request.phase == "predict" and not reborn:
            if self.how == "crash":
                os._exit(1)
            time.sleep(300.0)  # restarted by the fleet long before
        return super().method_round(request)


def _coordinator(
    ray: Any, scenario: Scenario, source: Path, failing: str, how: str, seen: list[int]
) -> tuple[Coordinator, list[Any]]:
    remote = ray.remote(FailingGroup).options(num_cpus=0, max_restarts=1)
    handles = [remote.remote(str(source), [s], 3 if s == failing else -1, how) for s in SITES]
    coordinator = Coordinator(DemandView.of(scenario), IpmSettings(agent_restarts=1))
    # A hanging group is restarted after the setup deadline: short enough for a test, long
    # enough that a healthy group on a loaded machine is never taken for a hanging one.
    fleet = RayFleet(
        handles,
        [[s] for s in SITES],
        timeout_s=10.0,
        setup_timeout_s=20.0 if how == "hang" else 600.0,
        restarts=1,
        tree=TREE,
        # The rounds that answer sums (not the finish's empty acknowledgements, a broadcast).
        tap=lambda kind, g, m: seen.append(g) if kind == "method_round" and m.values.size else None,
    )
    coordinator.attach(fleet)
    coordinator.register()
    return coordinator, handles


@pytest.mark.parametrize(
    ("failing", "how", "crashes"),
    [
        ("mel", "crash", [0, 1, 0]),  # a member inside the relay's subtree
        ("syd", "crash", [1, 0, 0]),  # the relay itself
        # A member later than its relay's deadline (waits out the 20 s setup deadline).
        pytest.param("mel", "hang", [0, 1, 0], marks=pytest.mark.slow),
        # The relay itself hanging: the coordinator names it (20 s, then 5 s of slack).
        pytest.param("syd", "hang", [1, 0, 0], marks=pytest.mark.slow),
    ],
)
def test_a_group_failing_inside_a_subtree_fails_the_round_naming_it(
    ray_cluster: Any,
    tiny_scenario: Scenario,
    tiny_scenario_dir: Path,
    failing: str,
    how: str,
    crashes: list[int],
) -> None:
    ray = ray_cluster
    flat = launch.solve_distributed(tiny_scenario_dir, executor="inline", settings=IpmSettings())
    answered: list[int] = []
    coordinator, handles = _coordinator(
        ray, tiny_scenario, tiny_scenario_dir, failing, how, answered
    )
    try:
        outcome = coordinator.run()
        assert isinstance(coordinator.fleet, RayFleet)
        assert coordinator.fleet.crashes == crashes
        result = outcome.result
        named = [(h.iteration, h.crashed_sites) for h in result.history if h.crashed_sites]
        assert named == [(3, (failing,))]
        assert result.rejoins == 1 and outcome.converged
        assert outcome.objective_aud == pytest.approx(flat.objective_aud, rel=1e-4)
        assert set(answered) == set(TREE.top)  # mel's answers came through syd
    finally:
        for h in handles:
            ray.kill(h)
