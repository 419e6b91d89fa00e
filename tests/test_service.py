"""The planning service in process (site agents inline, the tiny fleet): a cycle that misses
its budget keeps the previous plan shifted, an old plan is marked stale, a restarted
service resumes from its checkpoint, and ``thermoroute status`` fails in one line."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from thermoroute.cluster import discover, serve_fleet
from thermoroute.options import RunOptions
from thermoroute.service import KEPT_PREVIOUS, PLANNED, PlanningService, ServeSettings


def _service(directory: Path, **serve: object) -> PlanningService:
    coordinator_dir, site_ids = discover(directory)
    settings = ServeSettings(**{"horizon": 2, "step_seconds": 3600.0, **serve})
    return PlanningService(
        coordinator_dir, site_ids, RunOptions(method="ipm").method_settings(), settings,
        serve_fleet(directory, site_ids, executor="inline"),
    )  # fmt: skip


def test_a_late_cycle_keeps_the_previous_plan_shifted(tiny_scenario_dir: Path) -> None:
    service = _service(tiny_scenario_dir)
    first = service.cycle(0)
    assert first.outcome == PLANNED and first.converged
    # The next cycle may not even start its method: it keeps the plan of cycle 0.
    service.settings = replace(service.settings, time_limit_s=1e-9)
    late = service.cycle(1)
    assert late.outcome == KEPT_PREVIOUS and not late.converged
    answer = service.plan_at(service.time_of(1))
    assert answer is not None and answer["plan_cycle"] == 0 and answer["kept_previous"]
    # The old plan's second step is what is served for the new step.
    assert answer["time"] == service.time_of(1).isoformat()
    assert service.status()["cycles_by_outcome"] == {PLANNED: 1, KEPT_PREVIOUS: 1}
    # Past the plan's horizon nothing is served rather than a wrong hour.
    assert service.plan_at(service.time_of(2)) is None


def test_an_old_plan_is_marked_stale(tiny_scenario_dir: Path) -> None:
    service = _service(tiny_scenario_dir, max_plan_age_s=0.2)
    service.cycle(0)
    assert service.plan_at(service.time_of(0))["stale"] is False
    time.sleep(0.3)
    answer = service.plan_at(service.time_of(0))
    assert answer["stale"] is True and answer["age_s"] > 0.2
    assert service.status()["plan"]["stale"] is True


def test_a_restarted_service_resumes_from_its_checkpoint(
    tiny_scenario_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = _service(tiny_scenario_dir, state_dir=state, cycles=2, step_seconds=0.5)
    first.run()
    assert [c["cycle"] for c in first.status()["last_cycles"]] == [0, 1]
    again = _service(tiny_scenario_dir, state_dir=state, cycles=3, step_seconds=0.5)
    # Before any cycle of its own it serves the plan it had, for the step it resumes at.
    resumed = again.plan_at()
    assert resumed is not None and resumed["plan_cycle"] == 1
    assert resumed["time"] == again.time_of(2).isoformat()  # the clock resumed at step 2
    again.run()
    cycles = [c["cycle"] for c in again.status()["last_cycles"]]
    assert cycles == [0, 1, 2] and again.status()["cycles"] == 3


def test_status_without_a_service_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "status", "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no thermoroute serve answers" in lines[0]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0"),  # beyond loopback without a token
        (["--step-seconds", "0"], "--step-seconds 0"),
        (["--cycles", "0"], "--cycles 0"),
        (["--port", "70000"], "--port 70000"),
    ],
)
def test_serve_flags_are_checked_before_any_work(args: list[str], flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "serve", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), lines


def test_cycles_plan_within_plant_limits(tmp_path: Path) -> None:
    # Model v1.1 in serve: each cycle's sites solve their derated capacity, connection and
    # water rows from their own data, warm-started across cycles (the rows shift with the
    # horizon); every published plan keeps within the limits of its horizon.
    import numpy as np

    from tests.conftest import make_scenario
    from tests.test_plant_limits import DERATED, with_plant
    from thermoroute.common.evaluate import evaluate, load_gpus, minimal_active_gpus, overloads
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenario_writing import write_scenario

    sc = make_scenario()
    # Sydney's connection just below its v1 peak (16.1 kW), Melbourne's water below its v1 use
    # (~990 L a day): both bind, beside Melbourne's derating.
    sc = with_plant(
        sc,
        **DERATED,
        grid_limit_kw={"syd": 16.0},
        water_cap_l_per_day={"mel": 800.0},
    )
    directory = write_scenario(sc, tmp_path / "plant")
    service = _service(directory, horizon=3)
    for cycle in range(2):
        record = service.cycle(cycle)
        assert record.outcome == PLANNED and record.converged, record
        plan = service._state.plan
        assert plan is not None and plan.cycle == cycle
        # The plan's horizon as a scenario: its hours of the true data.
        truth = load_scenario(directory, start=plan.start, steps=len(plan.times))
        n = minimal_active_gpus(truth, load_gpus(truth, plan.x))
        report = overloads(truth, evaluate(truth, plan.x, n))
        assert not any(o.any for o in report.values()), report
        assert np.all(plan.x >= 0)
