"""bench/loop_bench.py's machinery runs: one warm-up and one measured step of 8 s through a
real HAProxy, Prometheus, ``serve`` and follower give a row of finite figures, and nothing is
left running (the figures themselves are BENCHMARKS.md's, not checked here)."""

from __future__ import annotations

import math
import shutil

import pytest

from bench.loop_bench import measure, parse

pytestmark = [pytest.mark.prometheus]


def test_one_measured_step_gives_finite_figures() -> None:
    for exe in ("haproxy", "prometheus"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed")
    # 8 s steps: the plan (under a second idle) and the follower's poll (1 s) come well
    # before the step ends even on a loaded machine.
    steps = measure(parse(["--steps", "1", "--step-seconds", "8", "--requests", "200"]))
    assert [s.k for s in steps] == [0, 1]
    step = steps[1]
    assert sum(step.sent.values()) > 100
    assert 0 < step.cycle_s < 8 and 0 < step.to_haproxy_s < 8
    assert step.figures["settled"] > 0
    for key in ("tvd", "floor", "tvd_all"):
        assert 0 <= step.figures[key] <= 1 and math.isfinite(step.figures[key]), key
    # Step 1's cycle planned for what Prometheus saw of step 0's traffic.
    assert step.observed["cycle"] == 1 and step.observed["observed"]
    assert math.isfinite(step.figures["demand"])
