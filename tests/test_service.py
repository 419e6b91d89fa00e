"""The planning service in process (site agents inline, the tiny fleet): a cycle that misses
its budget keeps the previous plan shifted, an old plan is marked stale, a restarted
service resumes from its checkpoint, and ``thermoroute status`` fails in one line. Every
cycle logs one line, as text or JSON, with the reason /status gives; so does the shutdown.
A real ``serve`` process logs JSON lines that agree with its /status and ``thermoroute
status``."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import thermoroute_in_process, wait_for_serve
from thermoroute import service_log
from thermoroute.cluster import discover, serve_fleet
from thermoroute.options import RunOptions
from thermoroute.service import KEPT_PREVIOUS, PLANNED, PlanningService, ServeSettings

#: The keys of a cycle's JSON line (docs/serve.md), and of the shutdown's.
CYCLE_KEYS = {
    *service_log.COMMON_KEYS, "cycle", "time", "outcome", "converged", "degraded", "iterations",
    "seconds", "reason", "stale_sites", "rejoining_sites", "plan_cycle", "plan_step",
}  # fmt: skip
SHUTDOWN_KEYS = {
    *service_log.COMMON_KEYS, "why", "in_flight", "in_flight_cycle", "in_flight_outcome",
    "plan_cycle",
}  # fmt: skip


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


@pytest.fixture
def log_to() -> Iterator[Any]:
    """``log_to(format)``: a buffer receiving the service's log lines in that format from
    then on (the handler :func:`thermoroute.service_log.configure` installs, as serve's)."""
    logger = logging.getLogger(service_log.ROOT)
    before = (list(logger.handlers), logger.level, logger.propagate)

    def install(log_format: str) -> io.StringIO:
        buffer = io.StringIO()
        service_log.configure(log_format, buffer)
        return buffer

    yield install
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in before[0]:
        logger.addHandler(handler)
    logger.setLevel(before[1])
    logger.propagate = before[2]


def _lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_each_cycle_logs_one_json_line_agreeing_with_status(
    tiny_scenario_dir: Path, log_to: Any
) -> None:
    log = log_to(service_log.JSON)
    service = _service(tiny_scenario_dir)
    service.cycle(0)
    service.settings = replace(service.settings, time_limit_s=1e-9)
    service.cycle(1)
    logged = [json.loads(line) for line in _lines(log)]
    cycles = [line for line in logged if line["event"] == "cycle"]
    assert [c["cycle"] for c in cycles] == [0, 1]
    assert all(set(c) == CYCLE_KEYS for c in cycles), cycles
    status = service.status()["last_cycles"]
    for line, cycle in zip(cycles, status, strict=True):
        for key in ("cycle", "time", "outcome", "converged", "degraded", "iterations", "reason"):
            assert line[key] == cycle[key], key
        assert line["seconds"] == pytest.approx(cycle["duration_s"], abs=1e-3)
    planned, kept = cycles
    assert planned["outcome"] == PLANNED and planned["reason"] is None
    assert (planned["plan_cycle"], planned["plan_step"], planned["level"]) == (0, 0, "info")
    # The kept cycle says why, and which plan is served instead.
    assert kept["outcome"] == KEPT_PREVIOUS and kept["level"] == "warning"
    assert kept["reason"].startswith("the solve ran out of the cycle's budget (1e-09 s)")
    assert (kept["plan_cycle"], kept["plan_step"]) == (0, 1)
    assert "serving step 1 of the plan of cycle 0" in kept["message"]


def test_a_text_line_per_cycle_names_a_stale_site(tiny_scenario_dir: Path, log_to: Any) -> None:
    log = log_to(service_log.TEXT)
    service = _service(tiny_scenario_dir)
    service.cycle(0)
    # Melbourne's pipeline writes a bad value into the next horizon's last hour.
    series = tiny_scenario_dir / "site_series.csv"
    with series.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    last = service.time_of(2)
    for row in rows:
        if row["site_id"] == "mel" and datetime.fromisoformat(row["time"]) == last:
            row["dry_bulb_c"] = "hot"
    with series.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    record = service.cycle(1)
    assert record.outcome == PLANNED and record.degraded
    assert record.reason == "stale forecast at 1 site (mel)"
    # (Beside the site's own lines: inline, its agent logs in this process what it refused.)
    text = [line for line in _lines(log) if " cycle " in line]
    assert len(text) == 2, _lines(log)
    assert text[0].endswith(
        f"INFO    cycle 0 at {service.time_of(0).isoformat()}: planned, "
        f"{service.status()['last_cycles'][0]['iterations']} iterations, "
        f"{service.status()['last_cycles'][0]['duration_s']:.2f} s"
    )
    assert f"WARNING cycle 1 at {service.time_of(1).isoformat()}: planned (degraded)" in text[1]
    assert text[1].endswith("— stale forecast at 1 site (mel)")
    assert service.status()["last_cycles"][1]["reason"] == record.reason


class _StopOnCycle:
    """Metrics that stop the service as a cycle records itself, as SIGTERM would mid-cycle."""

    def __init__(self) -> None:
        self.service: PlanningService | None = None

    def bind(self, service: PlanningService) -> None:
        self.service = service

    def on_cycle(self, record: Any) -> None:
        assert self.service is not None
        self.service.stop("SIGTERM")


def test_a_stop_mid_cycle_finishes_it_and_logs_the_shutdown(
    tiny_scenario_dir: Path, log_to: Any
) -> None:
    log = log_to(service_log.JSON)
    coordinator_dir, site_ids = discover(tiny_scenario_dir)
    service = PlanningService(
        coordinator_dir, site_ids, RunOptions(method="ipm").method_settings(),
        ServeSettings(horizon=2, step_seconds=3600.0), serve_fleet(
            tiny_scenario_dir, site_ids, executor="inline"), metrics=_StopOnCycle(),
    )  # fmt: skip
    service.run()
    *cycles, shutdown = [json.loads(line) for line in _lines(log)]
    assert [c["cycle"] for c in cycles] == [0]
    assert set(shutdown) == SHUTDOWN_KEYS and shutdown["event"] == "shutdown"
    assert shutdown["why"] == "SIGTERM" and shutdown["in_flight"] == "finished"
    assert (shutdown["in_flight_cycle"], shutdown["in_flight_outcome"]) == (0, PLANNED)
    assert shutdown["plan_cycle"] == 0
    assert shutdown["message"] == (
        "shutting down (SIGTERM): cycle 0 was in flight and was finished first (planned); "
        "the plan of cycle 0 stays; closing the site agents"
    )


def test_ctrl_c_mid_cycle_abandons_it_and_says_so(tiny_scenario_dir: Path, log_to: Any) -> None:
    log = log_to(service_log.JSON)
    coordinator_dir, site_ids = discover(tiny_scenario_dir)
    inline = serve_fleet(tiny_scenario_dir, site_ids, executor="inline")
    closed = []

    def fleet_interrupted_at_refresh(start: Any, horizon: int) -> Any:
        """The inline fleet, with Ctrl-C arriving while the sites move to the horizon."""
        fleet, close = inline(start, horizon)

        def refresh(when: Any) -> Any:
            raise KeyboardInterrupt

        fleet.refresh = refresh
        return fleet, lambda: closed.append(close())

    service = PlanningService(
        coordinator_dir, site_ids, RunOptions(method="ipm").method_settings(),
        ServeSettings(horizon=2, step_seconds=3600.0), fleet_interrupted_at_refresh,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        service.run()
    assert closed  # the fleet closed all the same
    (shutdown,) = [json.loads(line) for line in _lines(log)]
    assert (shutdown["why"], shutdown["in_flight"], shutdown["in_flight_cycle"]) == (
        "interrupted", "abandoned", 0
    )  # fmt: skip
    assert shutdown["plan_cycle"] is None and service.status()["cycles"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_logs_json_lines_that_agree_with_its_status(
    tiny_scenario_dir: Path, tmp_path: Path
) -> None:
    """A real serve (agents inline): cycles after the first keep its plan (a budget no
    solve meets); the log, /status and thermoroute status give the same reason."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    serve = subprocess.Popen(
        [sys.executable, "-m", "thermoroute.cli", "serve", str(tiny_scenario_dir),
         "--executor", "inline", "--horizon", "2", "--step-seconds", "2", "--cycle-budget",
         "0.001", "--port", str(port), "--log-format", "json"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        status = wait_for_serve(serve, port, 2)  # the first plan, then a kept cycle
        screen = thermoroute_in_process("status", "--address", f"127.0.0.1:{port}", cwd=tmp_path)
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 143, stderr
    # Every line of stderr is a JSON object: no closing "terminated" beside them.
    logged = [json.loads(line) for line in stderr.splitlines()]
    assert logged[0]["event"] == "start" and logged[-1]["event"] == "shutdown", logged
    assert logged[-1]["why"] == "SIGTERM"
    by_cycle = {line["cycle"]: line for line in logged if line["event"] == "cycle"}
    assert all(set(line) == CYCLE_KEYS for line in by_cycle.values())
    kept = status["last_cycles"][1]
    assert kept["outcome"] == KEPT_PREVIOUS
    assert kept["reason"].startswith("the solve ran out of the cycle's budget (0.001 s)")
    for cycle in status["last_cycles"]:
        line = by_cycle[cycle["cycle"]]
        assert (line["outcome"], line["reason"]) == (cycle["outcome"], cycle["reason"])
    # thermoroute status says why the last cycle kept the previous plan.
    assert screen.returncode == 0, screen.stderr
    assert "kept_previous — the solve ran out of the cycle's budget (0.001 s)" in screen.stdout
