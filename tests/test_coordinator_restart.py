"""A coordinator lost mid-run is restarted by Ray and resumes from its checkpoint (real Ray).

The coordinator actor's process is killed (SIGKILL, from inside it, at a chosen iteration,
once); Ray starts it again, the driver gives it its fleet back, and it goes on from the
state it last wrote — to the same optimum. Without restarts left the run ends with one line.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import embedded_scenario
from thermoroute.common.central import solve_central
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.events import IterationRecord, NullObserver
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.launch import CoordinatorLost, solve_distributed

pytestmark = pytest.mark.ray


class KillOnce(NullObserver):
    """Kills the process it runs in (the coordinator actor) at ``iteration``, the first time
    only: the marker file survives the restart, the process does not."""

    def __init__(self, marker: Path, iteration: int) -> None:
        self.marker = marker
        self.iteration = iteration

    def on_iteration(self, record: IterationRecord) -> None:
        if record.iteration >= self.iteration and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(
    ("settings", "kill_at", "checkpoint_at", "rtol"),
    [(AdmmSettings(), 200, 200, 1e-3), (IpmSettings(), 7, 5, 1e-4)],
    ids=["admm", "ipm"],
)
def test_a_killed_coordinator_resumes_and_ends_at_the_optimum(
    ray_cluster: Any, tmp_path: Path, settings: Any, kill_at: int, checkpoint_at: int, rtol: float
) -> None:
    marker = tmp_path / "killed"
    run = solve_distributed(
        "australia", executor="ray", settings=settings,
        observers=[KillOnce(marker, kill_at)],
    )  # fmt: skip
    assert marker.exists(), "the coordinator was never killed"
    stats = run.outcome.run.extra_stats
    assert stats["coordinator_restarts"] == 1
    assert stats["resumed_from_iteration"] == checkpoint_at
    assert run.converged
    central = solve_central(embedded_scenario("australia")).objective_aud
    assert run.objective_aud == pytest.approx(central, rel=rtol)


def test_a_coordinator_without_restarts_left_ends_the_run_in_one_line(
    ray_cluster: Any, tmp_path: Path
) -> None:
    with pytest.raises(CoordinatorLost) as info:
        solve_distributed(
            "australia", executor="ray", settings=IpmSettings(), coordinator_restarts=0,
            observers=[KillOnce(tmp_path / "killed", 3)],
        )  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and "no outputs written" in message
