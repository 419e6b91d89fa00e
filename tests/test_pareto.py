"""``thermoroute pareto``: the fronts are what the model implies, written whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from common.scenario_io import load_scenario
from common.scenarios import embedded_path
from thermoroute.pareto import weights_for


def _pareto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "pareto", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_carbon_front_trades_energy_cost_for_carbon(tmp_path: Path) -> None:
    out = tmp_path / "front"
    done = _pareto("australia", "--vary", "carbon", "--points", "7", "--out", str(out))
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "pareto.csv")
    assert sorted(frame["solver"].unique()) == ["central", "temperature-unaware"]
    optimum = frame[frame["solver"] == "central"].sort_values("weight")
    assert len(optimum) == 7
    # The scenario's own price is one of the points, in the middle of the sweep.
    default = optimum[optimum["default"]]
    assert len(default) == 1 and float(default["factor"].iloc[0]) == pytest.approx(1.0)
    assert float(default["weight"].iloc[0]) == 0.075
    # A higher carbon price never buys more carbon, nor cheaper energy (up to the solver's
    # tolerance, 1e-6 of the values).
    carbon, cost = optimum["carbon_kg"].to_numpy(), optimum["energy_cost_aud"].to_numpy()
    assert np.all(np.diff(carbon) <= 1e-6 * carbon[:-1])
    assert np.all(np.diff(cost) >= -1e-6 * cost[:-1])
    assert carbon[-1] < carbon[0] and cost[-1] > cost[0]
    # At every price temperature-awareness is no worse in the objective it optimises.
    unaware = frame[frame["solver"] == "temperature-unaware"].sort_values("weight")
    assert np.all(optimum["objective_aud"].to_numpy() <= unaware["objective_aud"].to_numpy())
    image = matplotlib.image.imread(out / "pareto.png")
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert (out / ".thermoroute-run").is_file()


def test_weights_span_two_decades_around_the_default() -> None:
    scenario = load_scenario(embedded_path("australia"))
    weights = weights_for(scenario, "latency", 6)  # even: the nearest point moves onto it
    default = scenario.objective.latency_aud_per_req_s
    assert default in weights and len(weights) == 6
    assert weights[0] == pytest.approx(default / 10) and weights[-1] == pytest.approx(default * 10)
    assert np.all(np.diff(weights) > 0)


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--points", "1"], "--points 1"), (["--vary", "noise"], "--vary")],
)
def test_bad_sweep_flags_are_one_line(tmp_path: Path, args: list[str], flag: str) -> None:
    out = tmp_path / "never"
    done = _pareto("australia", *args, "--out", str(out))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in done.stderr
    assert not out.exists()
