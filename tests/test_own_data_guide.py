"""docs/own-data.md: its worked example builds a scenario that validates, solves and
simulates for exactly as long as the guide says the data allow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thermoroute.common.scenario_loading import load_scenario

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"


def _thermoroute(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(GUIDE.parents[1])},
    )


@pytest.mark.slow
def test_the_guides_example_builds_a_fleet_that_solves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = "\n".join(re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S))
    monkeypatch.chdir(tmp_path)
    exec(compile(program, str(GUIDE), "exec"), {})
    scenario = load_scenario(tmp_path / "my-fleet")
    assert scenario.sites.site_id == ("syd1", "mel1", "bne1")
    # The fitted plant meets its specification points (section 3).
    a, b, c = scenario.sites.ppue_a[0], scenario.sites.ppue_b[0], scenario.sites.ppue_c[0]
    for t, p in {12.0: 1.06, 25.0: 1.15, 35.0: 1.28}.items():
        assert a + b * t + c * t * t == pytest.approx(p, abs=2e-3)
    done = _thermoroute(tmp_path, "scenario", "validate", "my-fleet")
    assert done.returncode == 0 and "valid" in done.stdout, done.stderr
    done = _thermoroute(tmp_path, "run", "my-fleet", "--solver", "central", "--no-compare")
    assert done.returncode == 0, done.stderr
    # Section 5: eight days of data carry a week of re-planning over day-long horizons …
    done = _thermoroute(
        tmp_path, "simulate", "my-fleet", "--days", "7", "--executor", "inline", "--out", "sim"
    )
    assert done.returncode == 0, done.stderr
    # … and not one day more: the missing steps are named.
    done = _thermoroute(tmp_path, "simulate", "my-fleet", "--days", "8", "--executor", "inline")
    assert done.returncode == 2 and "missing step" in done.stderr
