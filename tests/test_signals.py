"""SIGTERM ends a run like Ctrl-C: exit 143, one line, nothing written, nothing left running
(issue 21, item 1) — on a real local Ray run, at three phases of it."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import wait_for_serve

REPO = Path(__file__).resolve().parents[1]
# The console script's own entry point (it takes SIGTERM before importing the rest).
CLI = [sys.executable, "-c", "from thermoroute.console import main; main()"]

#: Ray's daemons and workers, by the name they run under.
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "default_worker", "dashboard")


def _pids_of(scratch: Path, *, ray_only: bool = False) -> set[int]:
    """Processes of the run under test: those with its ``TMPDIR`` in their environment (Ray's
    daemons and workers inherit it), so other Ray clusters on the machine do not count."""
    marker = f"TMPDIR={scratch}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if not ray_only or any(name in cmdline for name in RAY_PROCESSES):
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
    # Through a pipe the live display prints a line on the first status: "iter 0  …".
    return any(line.startswith("iter ") for line in out.splitlines())


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize(
    "phase", ["starting", "ray", "solving"], ids=["while-starting", "ray-up", "solving"]
)
def test_sigterm_stops_a_run_and_leaves_nothing(tmp_path: Path, phase: str) -> None:
    # The run's own temporary directory (short: Ray's socket paths must fit in 107 bytes),
    # so that whatever it leaves there — Ray's session directory, thermoroute-* scratch — shows.
    scratch = Path(tempfile.mkdtemp(prefix="trs-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "TMPDIR": str(scratch)}
    out = tmp_path / "out"
    first = subprocess.run(
        [*CLI, "run", "australia", "--solver", "central", "--no-compare", "--quiet",
         "--out", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = _digest(out)
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
        while run.poll() is None and not when(log.read_text(), _pids_of(scratch, ray_only=True)):
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
    while _pids_of(scratch):
        assert time.monotonic() < deadline, f"left running: {_pids_of(scratch)}"
        time.sleep(0.2)
    # Nor any file: no Ray session directory, no scratch directory.
    left = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*") if not p.is_dir())
    assert left == [], left
    shutil.rmtree(scratch)


def test_sigterm_ends_serve_after_its_cycle(tmp_path: Path, tiny_scenario_dir: Path) -> None:
    """serve on SIGTERM: the cycle ends (or is abandoned), the fleet closes, exit 143; its
    log says it started, what its cycle did and that it shuts down."""
    import socket

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
        wait_for_serve(serve, port, 1)  # the first cycle's plan is served
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


@pytest.mark.slow
@pytest.mark.ray
def test_a_simulation_on_its_own_ray_leaves_no_session_behind(
    tmp_path: Path, tiny_scenario_dir: Path
) -> None:
    """The local Ray a command starts stops with it, its session directory removed
    (issue 21, item 6) — here ``simulate``, whose fleets start Ray outside ``run``'s launcher."""
    scratch = Path(tempfile.mkdtemp(prefix="trs-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    done = subprocess.run(
        [*CLI, "simulate", str(tiny_scenario_dir), "--days", "0.04", "--horizon", "2",
         "--no-drain", "--out", str(tmp_path / "sim")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (scratch / "ray").is_dir()  # the simulation did run on a local Ray of its own
    left = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*") if not p.is_dir())
    assert left == [], left
    deadline = time.monotonic() + 30
    while _pids_of(scratch):
        assert time.monotonic() < deadline, f"left running: {_pids_of(scratch)}"
        time.sleep(0.2)
    shutil.rmtree(scratch)
