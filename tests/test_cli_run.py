"""``thermoroute run`` from the command line with site agents in process (``--executor inline``).

The runs of ``australia`` go through the command line's Typer app in this process (a new
process would only add seconds of imports); the run with ADMM's defaults is shared by the
tests that read it. The Ray path of the same command is exercised by tests/test_prometheus.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_admm import OBJECTIVE_RTOL
from thermoroute.cli import app
from thermoroute.common.central import solve_central

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]


def _thermoroute(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def run_australia(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``thermoroute run australia --executor inline`` with options: its output directory.

    Each distinct command runs once for the module."""
    root = tmp_path_factory.mktemp("runs")
    runs: dict[tuple[str, ...], Path] = {}

    def run(*options: str) -> Path:
        if options not in runs:
            out = root / f"run{len(runs)}"
            done = CliRunner().invoke(
                app,
                ["run", "australia", "--executor", "inline", "--no-compare", "--quiet",
                 "--out", str(out), *options],
            )  # fmt: skip
            assert done.exit_code == 0, (done.output, done.exception)
            runs[options] = out
        return runs[options]

    return run


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def central_australia() -> float:
    from tests.conftest import embedded_scenario

    return solve_central(embedded_scenario("australia")).objective_aud


def test_interior_point_fallback_finishes_the_solves_osqp_leaves_approximate(
    run_australia: Callable[..., Path], central_australia: float
) -> None:
    plain = _summary(run_australia("--method", "admm"))
    exact = _summary(run_australia("--method", "admm", "--inner-fallback", "--agent-restarts", "0"))
    for summary in (plain, exact):
        assert summary["solver_stats"]["converged"] is True
        assert summary["objective_aud"] == pytest.approx(central_australia, rel=OBJECTIVE_RTOL)
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


def test_run_defaults_to_the_interior_point_and_admm_stays_selectable(
    run_australia: Callable[..., Path], central_australia: float
) -> None:
    default = _summary(run_australia())
    admm = _summary(run_australia("--method", "admm"))
    alias = _summary(run_australia("--solver", "admm"))
    assert default["solver"] == default["solver_stats"]["method"] == "ipm"
    assert default["solver_stats"]["secure_aggregation"] is True
    assert admm["solver"] == alias["solver"] == "admm"
    assert default["solver_stats"]["iterations"] <= 15 < admm["solver_stats"]["iterations"]
    assert alias["solver_stats"]["iterations"] == admm["solver_stats"]["iterations"]
    for summary in (default, admm):
        assert summary["objective_aud"] == pytest.approx(central_australia, rel=OBJECTIVE_RTOL)
    header = (run_australia() / "convergence.csv").read_text().splitlines()[0]
    assert header.startswith("iteration,coupling_residual,mu,step")
