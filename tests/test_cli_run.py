"""``thermoroute run --solver admm`` from the command line, in process (``--executor inline``).

The Ray path of the same command is exercised by tests/test_prometheus.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_admm import OBJECTIVE_RTOL
from thermoroute.common.central import solve_central

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]


def _thermoroute(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def _run_australia(tmp_path: Path, name: str, *options: str) -> dict:
    out = tmp_path / name
    done = _thermoroute(
        "run", "australia", "--executor", "inline", "--no-compare", "--quiet",
        "--out", str(out), *options,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads((out / "summary.json").read_text())


def test_interior_point_fallback_finishes_the_solves_osqp_leaves_approximate(
    tmp_path: Path,
) -> None:
    from tests.conftest import embedded_scenario

    central = solve_central(embedded_scenario("australia")).objective_aud
    plain = _run_australia(tmp_path, "plain", "--method", "admm")
    exact = _run_australia(
        tmp_path, "exact", "--method", "admm", "--inner-fallback", "--agent-restarts", "0"
    )
    for summary in (plain, exact):
        assert summary["solver_stats"]["converged"] is True
        assert summary["objective_aud"] == pytest.approx(central, rel=OBJECTIVE_RTOL)
    # OSQP alone leaves some solves at its iteration limit (approximate iterates); with the
    # fallback Clarabel finishes them and none is left approximate.
    assert plain["solver_stats"]["inner_approximate"] > 0
    assert plain["solver_stats"]["inner_fallbacks"] == 0
    assert exact["solver_stats"]["inner_fallbacks"] > 0
    assert exact["solver_stats"]["inner_approximate"] == 0
    assert exact["solver_stats"]["inner_failed"] == plain["solver_stats"]["inner_failed"] == 0


def test_negative_agent_restarts_are_refused(tmp_path: Path, tiny_scenario_dir: Path) -> None:
    out = tmp_path / "out"
    done = _thermoroute(
        "run", str(tiny_scenario_dir), "--executor", "inline", "--agent-restarts", "-1",
        "--quiet", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "agent-restarts" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_run_defaults_to_the_interior_point_and_admm_stays_selectable(tmp_path: Path) -> None:
    from tests.conftest import embedded_scenario

    central = solve_central(embedded_scenario("australia")).objective_aud
    default = _run_australia(tmp_path, "default")
    admm = _run_australia(tmp_path, "admm", "--method", "admm")
    alias = _run_australia(tmp_path, "alias", "--solver", "admm")
    assert default["solver"] == default["solver_stats"]["method"] == "ipm"
    assert default["solver_stats"]["secure_aggregation"] is True
    assert admm["solver"] == alias["solver"] == "admm"
    assert default["solver_stats"]["iterations"] <= 15 < admm["solver_stats"]["iterations"]
    assert alias["solver_stats"]["iterations"] == admm["solver_stats"]["iterations"]
    for summary in (default, admm):
        assert summary["objective_aud"] == pytest.approx(central, rel=OBJECTIVE_RTOL)
    header = (tmp_path / "default" / "convergence.csv").read_text().splitlines()[0]
    assert header.startswith("iteration,coupling_residual,mu,step")
