"""``thermoroute pareto``: the fronts are what the model implies, every term drawn, written
whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from thermoroute.common.baselines import BASELINES
from thermoroute.common.baselines import SOLVERS as REGISTERED
from thermoroute.common.evaluate import objective_parts_aud
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenarios import embedded_path
from thermoroute.pareto import PANELS, SOLVERS, TERMS, front_figure, weights_for


def _pareto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "pareto", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_carbon_front_draws_the_objective_and_every_term_of_every_plan(tmp_path: Path) -> None:
    out = tmp_path / "front"
    done = _pareto("australia", "--vary", "carbon", "--points", "7", "--out", str(out))
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "pareto.csv")
    # The optimum and every registered baseline, at every weight, with every term.
    assert list(dict.fromkeys(frame["solver"])) == list(REGISTERED) == list(SOLVERS)
    assert set(BASELINES) < set(frame["solver"])
    assert len(frame) == 7 * len(SOLVERS)
    assert frame.groupby("weight")["solver"].nunique().eq(len(SOLVERS)).all()
    assert not frame[[c for c, _, _ in PANELS] + list(TERMS)].isna().any().any()
    # The terms are all the objective charges: energy cost + carbon + water + latency at
    # each row's weights give its objective.
    scenario = load_scenario(embedded_path("australia"))
    o = scenario.objective
    rebuilt = (
        frame["energy_cost_aud"] + frame["weight"] * frame["carbon_kg"]
        + o.water_aud_per_l * frame["water_l"] + o.latency_aud_per_req_s * frame["latency_req_s"]
    )  # fmt: skip
    assert np.allclose(rebuilt, frame["objective_aud"], rtol=1e-9)
    optimum = frame[frame["solver"] == "central"].sort_values("weight")
    assert len(optimum) == 7
    # The scenario's own price is one of the points, in the middle of the sweep.
    default = optimum[optimum["default"]]
    assert len(default) == 1 and float(default["factor"].iloc[0]) == pytest.approx(1.0)
    assert float(default["weight"].iloc[0]) == 0.075
    # A higher carbon price never buys more carbon, nor a cheaper rest of the objective
    # (energy + water + latency: minimising f + w·c, c falls and f rises with w; energy cost
    # alone may dip when water or latency give way instead), up to the solver's tolerance,
    # 1e-6 of the values.
    carbon = optimum["carbon_kg"].to_numpy()
    rest = (optimum["objective_aud"] - optimum["weight"] * optimum["carbon_kg"]).to_numpy()
    cost = optimum["energy_cost_aud"].to_numpy()
    assert np.all(np.diff(carbon) <= 1e-6 * carbon[:-1])
    assert np.all(np.diff(rest) >= -1e-6 * rest[:-1])
    assert carbon[-1] < carbon[0] and cost[-1] > cost[0]
    # At every price the optimum wins the objective against every plan, to the interior
    # point's tolerance (1e-6 of the objective) — even where a baseline is cheaper in
    # energy (price-only) or lower in carbon (carbon-only).
    best = optimum.set_index("weight")["objective_aud"]
    for solver, rows in frame.groupby("solver"):
        theirs = rows.set_index("weight")["objective_aud"]
        assert np.all(best <= theirs * (1 + 1e-6)), solver
        assert np.all(rows["objective_above_optimum_pct"] >= -1e-4), solver
    # The picture: one panel per quantity, each drawing every plan with the CSV's values on
    # a log axis of the weight.
    figure = front_figure(frame, scenario.name)
    axes = figure.get_axes()
    assert len(axes) == len(PANELS)
    for ax, (column, name, unit) in zip(axes, PANELS, strict=True):
        assert ax.get_title() == f"{name} [{unit}]" and ax.get_xscale() == "log"
        lines = {line.get_label(): line for line in ax.get_lines() if line.get_label()[0] != "_"}
        assert set(lines) == set(SOLVERS), column
        for solver, line in lines.items():
            rows = frame[frame["solver"] == solver].sort_values("weight")
            assert np.array_equal(line.get_xdata(), rows["weight"].to_numpy())
            assert np.array_equal(line.get_ydata(), rows[column].to_numpy()), (column, solver)
    covered = {"energy_cost": "energy_cost_aud", "carbon": "carbon_kg", "water": "water_l",
               "latency": "ttft_mean_ms"}  # fmt: skip
    assert set(covered) == set(objective_parts_aud(frame.iloc[0], o))
    assert set(covered.values()) | {"objective_aud"} <= {c for c, _, _ in PANELS}
    image = matplotlib.image.imread(out / "pareto.png")
    assert image.shape[0] > 500 and image.shape[1] > 1200
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
