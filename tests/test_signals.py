"""SIGTERM ends a run like Ctrl-C: exit 143, one line, nothing written, nothing left running
(issue 21, item 1) — on a real local Ray run, at three phases of it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The console script's own entry point (it takes SIGTERM before importing the rest).
CLI = [sys.executable, "-c", "from thermoroute.console import main; main()"]

#: Ray's daemons and workers, by the name they run under.
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "default_worker", "dashboard")


def _ray_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(name in cmdline for name in RAY_PROCESSES):
            pids.add(int(entry.name))
    return pids


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _when_started(seconds: float) -> Callable[[str, set[int]], bool]:
    t0 = time.monotonic()
    return lambda _out, _new: time.monotonic() - t0 >= seconds


def _when_ray_runs(_out: str, new: set[int]) -> bool:
    return bool(new)


def _when_solving(out: str, _new: set[int]) -> bool:
    return "iteration 0" in out


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize(
    "phase", ["starting", "ray", "solving"], ids=["while-starting", "ray-up", "solving"]
)
def test_sigterm_stops_a_run_and_leaves_nothing(tmp_path: Path, phase: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    out = tmp_path / "out"
    first = subprocess.run(
        [*CLI, "run", "australia", "--solver", "central", "--no-compare", "--quiet",
         "--out", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = _digest(out)
    ray_before = _ray_pids()
    when = {
        "starting": _when_started(1.0),
        "ray": _when_ray_runs,
        "solving": _when_solving,
    }[phase]
    log = tmp_path / "stdout"
    with log.open("w") as sink:
        run = subprocess.Popen(
            [*CLI, "run", "australia", "--no-compare", "--out", str(out)],
            env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while run.poll() is None and not when(log.read_text(), _ray_pids() - ray_before):
            assert time.monotonic() < deadline, f"the run never reached phase {phase!r}"
            time.sleep(0.05)
        assert run.poll() is None, f"the run ended before phase {phase!r}: {run.stderr}"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == "terminated" and "Traceback" not in stderr, stderr
    # Nothing written: the earlier output as it was, no staging directory, no lock.
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "stdout"]
    # Nothing of the run keeps running (Ray's processes die with its driver).
    deadline = time.monotonic() + 30
    while _ray_pids() - ray_before:
        assert time.monotonic() < deadline, f"left running: {_ray_pids() - ray_before}"
        time.sleep(0.2)


def test_sigterm_ends_serve_after_its_cycle(tmp_path: Path, tiny_scenario_dir: Path) -> None:
    """serve on SIGTERM: the cycle ends (or is abandoned), the fleet closes, exit 143; its
    log says it started, what its cycle did and that it shuts down."""
    import json
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    serve = subprocess.Popen(
        [*CLI, "serve", str(tiny_scenario_dir), "--executor", "inline", "--horizon", "2",
         "--step-seconds", "3600", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:  # until the first cycle's plan is served
            assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
            assert time.monotonic() < deadline, "serve never published a plan"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                    if json.loads(r.read())["cycles"] >= 1:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 143, stderr
    assert stderr.splitlines()[-1] == "terminated" and "Traceback" not in stderr, stderr
    # Each line: the UTC time, the level, the message.
    start, cycle, shutdown = (line.split(maxsplit=2) for line in stderr.splitlines()[:3])
    assert start[1] == "INFO" and start[2].startswith("serving the plan of 3 sites"), stderr
    assert cycle[1] == "INFO" and cycle[2].startswith(
        "cycle 0 at 2023-01-16T00:00:00+10:00: planned, "
    ), stderr
    # Signalled between cycles (the next is an hour away): none was in flight.
    assert shutdown[1:] == [
        "INFO",
        "shutting down (SIGTERM): no cycle was in flight; the plan of cycle 0 stays; "
        "closing the site agents",
    ], stderr
