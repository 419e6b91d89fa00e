"""The sites tables' pPUE: what the plan paid (weighted by the IT energy it placed) beside
the climate's mean (every step alike), so the column moves with the plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import thermoroute
from thermoroute.common.scenario import Scenario
from thermoroute.results import PUE_COLUMNS, Solution, site_pue
from thermoroute.runner import print_decision


def test_site_pue_weights_each_step_by_its_it_energy() -> None:
    # One site, two steps: 3 kW at pPUE 1.1 then 1 kW at 1.3 pay (3.3 + 1.3) / 4 = 1.15;
    # the climate's mean is (1.1 + 1.3) / 2 = 1.2. A site the plan left idle has no
    # weighted mean.
    steps = pd.DataFrame(
        {
            "site_id": ["a", "a", "b", "b"],
            "it_kw": [3.0, 1.0, 0.0, 0.0],
            "pue": [1.1, 1.3, 1.05, 1.25],
        }
    )
    pue = site_pue(steps)
    assert pue.loc["a", "pue_plan"] == pytest.approx(1.15, rel=1e-12)
    assert pue.loc["a", "pue_climate"] == pytest.approx(1.2, rel=1e-12)
    assert np.isnan(pue.loc["b", "pue_plan"])
    assert pue.loc["b", "pue_climate"] == pytest.approx(1.15, rel=1e-12)


def _hand_pue(scenario: Scenario, solution: Solution) -> tuple[np.ndarray, np.ndarray]:
    """Per site, by the model's formulas: pPUE = max(1, a + b·T + c·T²) at each step's
    dry bulb; IT power (idle_w · n + Σ energy_j · x) / 1000; the IT-energy-weighted mean
    and the plain mean over the steps."""
    s = scenario.sites
    t_c = scenario.dry_bulb_c
    pue = np.maximum(1.0, s.ppue_a[:, None] + s.ppue_b[:, None] * t_c + s.ppue_c[:, None] * t_c**2)
    steps = solution.site_steps
    assert steps is not None
    n = steps.pivot(index="site_id", columns="time", values="active_gpus")
    n = n.reindex(index=list(s.site_id)).to_numpy()
    dynamic_w = np.einsum("ijct,ic->it", solution.x(scenario), scenario.energy_j)
    it_kw = (s.idle_w[:, None] * n + dynamic_w) / 1e3
    return (pue * it_kw).sum(axis=1) / it_kw.sum(axis=1), pue.mean(axis=1)


def test_paid_ppue_moves_with_the_plan_and_the_climate_mean_does_not(
    tmp_path: Path, tiny_scenario: Scenario
) -> None:
    runs = {
        solver: thermoroute.solve(tiny_scenario, solver=solver, out=tmp_path / solver)
        for solver in ("central", "nearest")
    }
    tables = {solver: run.site_load(tiny_scenario) for solver, run in runs.items()}
    for solver, run in runs.items():
        paid, climate = _hand_pue(tiny_scenario, run)
        table = tables[solver]
        assert np.allclose(table["pue_plan"], paid, rtol=1e-9), solver
        assert np.allclose(table["pue_climate"], climate, rtol=1e-12), solver
        # What the plan paid is facility ÷ IT energy, the run's own per-site totals.
        sites = run.summary["sites"]
        ratio = [sites[i]["facility_kwh"] / sites[i]["it_kwh"] for i in table.index]
        assert np.allclose(table["pue_plan"], ratio, rtol=1e-6), solver
    central, nearest = tables["central"], tables["nearest"]
    assert np.array_equal(central["pue_climate"], nearest["pue_climate"])
    assert np.abs(central["pue_plan"] - nearest["pue_plan"]).max() > 1e-3
    # The terminal's sites table shows both, labelled, with the note that tells them apart.
    console = Console(record=True, width=100)
    print_decision(runs["central"], console, tiny_scenario)
    text = console.export_text()
    for header in PUE_COLUMNS.values():
        assert header in text
    assert "weighted by the IT energy" in text and "the same under every plan" in text
    sites_table = text.split("\nsites")[1].splitlines()  # region ids repeat site ids above
    for site_id, row in central.iterrows():
        line = next(x for x in sites_table if x.startswith(f"│ {site_id} "))
        assert f"{row['pue_plan']:.3f}" in line and f"{row['pue_climate']:.3f}" in line


def test_sites_table_shows_no_ppue_without_the_sites_detail(
    tmp_path: Path, tiny_scenario: Scenario
) -> None:
    run = thermoroute.solve(tiny_scenario, solver="central", out=tmp_path / "run")
    assert run.directory is not None
    # As when the sites keep their detail on their nodes: no site_steps.csv at hand.
    (run.directory / "site_steps.csv").unlink()
    private = Solution.read(run.directory)
    assert private.site_detail == "missing"
    assert not set(PUE_COLUMNS) & set(private.site_load(tiny_scenario).columns)
    console = Console(record=True, width=100)
    print_decision(private, console, tiny_scenario)
    text = console.export_text()
    rows = [x for x in text.splitlines() if x.startswith("│ ")][-len(tiny_scenario.sites.site_id) :]
    assert all(row.rstrip(" │").endswith("—") for row in rows)
    assert all(row.count("—") == 2 for row in rows), rows
    assert "keep their detail" in text and "weighted by the IT energy" not in text
