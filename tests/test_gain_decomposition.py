"""The gain of temperature-awareness, decomposed (issue 18, items 3 and 4).

On every embedded scenario — whatever ``embedded_scenarios()`` lists, so scenarios added
later are covered without editing this file — the optimum is no worse than any baseline
charged under the true model that keeps within the sites' limits (a scenario with model v1.1
plant data: a baseline that breaks one may cost less; its v1 view, plant data dropped, is
held to every baseline), and the gain over temperature-unaware splits exactly into
site differences and hourly weather. Where every site has the same climate, the
mean-efficiency plan is the temperature-unaware plan. The multi-scenario ``compare`` prints
one table, and refuses a bad scenario name with one line.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from thermoroute.common.baselines import SOLVERS, fleet_mean_cooling, site_mean_cooling
from thermoroute.common.compare import (
    MEAN_EFFICIENCY,
    OPTIMUM,
    REFERENCE,
    TERM_KEYS,
    Comparison,
    GainDecomposition,
    compare,
    seasons_markdown,
    to_text,
)
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenarios import embedded_path, embedded_scenarios

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]
#: The optimum may come this close (relative) to a baseline: every plan is an interior-point
#: solution at a relative duality gap of 1e-9, and folding its residue flows moves it by at most
#: 1e-6 req/s per pair (thermoroute.common.evaluate.without_residues). On australia 1e-6 is 0.002
#: AUD — 500 times less than the smallest part of the gain measured there (1.18 AUD).
OPTIMALITY_REL = 1e-6


@functools.cache
def _compared(name: str, v1: bool = False) -> Comparison:
    """Every solver on embedded scenario ``name`` (its v1 view with ``v1``), solved once for
    the module."""
    scenario = load_scenario(embedded_path(name))
    return compare(scenario.v1_view() if v1 else scenario)


def _within_limits(row) -> bool:
    """Whether a compared plan keeps within every v1.1 limit (always, on v1 data)."""
    return all(o["site_hours"] <= 0 for o in row.overloads.values())


def _adds_up(d: GainDecomposition) -> None:
    """site + weather = gain, per term and in total, to one rounding of the plans' charges
    (each part is a difference of two charges, so the sum differs from the gain by at most
    a few ulps of the largest charge); the terms sum to the objective likewise."""
    for plan in (d.unaware_aud, d.mean_efficiency_aud, d.aware_aud):
        terms = sum(plan[k] for k in TERM_KEYS if k != "objective")
        assert terms == pytest.approx(plan["objective"], rel=1e-12, abs=0.0)
    gain, site, weather = d.gain_aud, d.site_aud, d.weather_aud
    for key in TERM_KEYS:
        scale = max(abs(d.unaware_aud[key]), abs(d.mean_efficiency_aud[key]), abs(d.aware_aud[key]))
        assert abs(site[key] + weather[key] - gain[key]) <= 4 * np.finfo(float).eps * scale, key
    site_share, weather_share = d.share(site), d.share(weather)
    assert site_share["objective"] + weather_share["objective"] == pytest.approx(1.0, abs=1e-12)


def _views() -> list[tuple[str, bool]]:
    """Every embedded scenario, and the v1 view of each that has plant data."""
    names = embedded_scenarios()
    plant = [n for n in names if load_scenario(embedded_path(n)).sites.plant_data()]
    return [(n, False) for n in names] + [(n, True) for n in plant]


VIEWS = _views()
VIEW_IDS = [f"{n}{'-v1-view' if v1 else ''}" for n, v1 in VIEWS]


@pytest.mark.parametrize(("name", "v1"), VIEWS, ids=VIEW_IDS)
def test_the_optimum_beats_every_baseline_within_the_limits(name: str, v1: bool) -> None:
    comparison = _compared(name, v1)
    assert [row.solver for row in comparison] == list(SOLVERS)
    by_name = {row.solver: row for row in comparison}
    assert _within_limits(by_name[OPTIMUM])
    best = by_name[OPTIMUM].values["objective_aud"]
    for row in comparison:
        if _within_limits(row):
            assert best <= row.values["objective_aud"] * (1 + OPTIMALITY_REL), row.solver


@pytest.mark.parametrize(("name", "v1"), VIEWS, ids=VIEW_IDS)
def test_the_gain_splits_exactly_into_sites_and_weather(name: str, v1: bool) -> None:
    comparison = _compared(name, v1)
    d = comparison.decomposition
    by_name = {row.solver: row for row in comparison}
    # The decomposition is made of the very charges the comparison's rows show.
    assert d.unaware_aud == by_name[REFERENCE].terms_aud
    assert d.mean_efficiency_aud == by_name[MEAN_EFFICIENCY].terms_aud
    assert d.aware_aud == by_name[OPTIMUM].terms_aud
    assert d.total_gain_aud == (
        by_name[REFERENCE].values["objective_aud"] - by_name[OPTIMUM].values["objective_aud"]
    )
    _adds_up(d)
    if not all(_within_limits(row) for row in comparison):
        return  # a cheaper baseline that breaks a limit may beat the optimum: no sign holds
    # Knowing the sites' means never costs in total: mean-efficiency optimises a belief
    # closer to the truth than the fleet mean, and the optimum the truth itself.
    objective = by_name[OPTIMUM].values["objective_aud"]
    assert d.site_aud["objective"] >= -OPTIMALITY_REL * objective
    assert d.weather_aud["objective"] >= -OPTIMALITY_REL * objective


def test_shares_are_of_the_total_gain_and_never_clipped() -> None:
    # Hand-made charges: energy cost rises by 2 AUD while water falls by 5 AUD.
    zero = {"carbon": 0.0, "latency": 0.0}
    d = GainDecomposition(
        unaware_aud={"energy_cost": 10.0, "water": 10.0, "objective": 20.0, **zero},
        mean_efficiency_aud={"energy_cost": 11.0, "water": 7.0, "objective": 18.0, **zero},
        aware_aud={"energy_cost": 12.0, "water": 5.0, "objective": 17.0, **zero},
    )
    assert d.gain_aud["energy_cost"] == -2.0 and d.gain_aud["objective"] == 3.0
    assert d.share(d.site_aud) == pytest.approx(
        {"energy_cost": -1 / 3, "water": 1.0, "objective": 2 / 3, "carbon": 0.0, "latency": 0.0}
    )
    assert d.share(d.weather_aud)["water"] == pytest.approx(2 / 3)
    doc = d.as_dict()
    assert doc["site_differences_aud"]["energy_cost"] == -1.0
    assert set(doc["plans_aud"]) == {REFERENCE, MEAN_EFFICIENCY, OPTIMUM}
    # No gain beyond solver noise: no shares (ratios of noise), written null in JSON.
    flat = GainDecomposition(d.aware_aud, d.aware_aud, d.aware_aud)
    assert all(math.isnan(v) for v in flat.share(flat.site_aud).values())
    assert json.loads(json.dumps(flat.as_dict()))["hourly_weather_share"]["objective"] is None


def test_one_climate_everywhere_makes_mean_efficiency_temperature_unaware(scenario_builder):
    """Every site with the same temperatures and cooling plant: each site's mean is the
    fleet's mean, so the two plans are one; all of the gain is hourly weather."""
    base = scenario_builder()
    S = len(base.sites)
    sites = replace(
        base.sites,
        wue_model=("tower",) * S,
        wue_p1=np.full(S, 6.0),
        wue_p2=np.zeros(S),
    )
    sc = replace(
        base,
        sites=sites,
        dry_bulb_c=np.tile(base.dry_bulb_c[0], (S, 1)),
        wet_bulb_c=np.tile(base.wet_bulb_c[0], (S, 1)),
    )
    pue, wue = site_mean_cooling(sc)
    fleet_pue, fleet_wue = fleet_mean_cooling(sc)
    np.testing.assert_allclose(pue, fleet_pue, rtol=1e-15)
    np.testing.assert_allclose(wue, fleet_wue, rtol=1e-15)
    comparison = compare(sc, [REFERENCE, MEAN_EFFICIENCY, OPTIMUM])
    by_name = {row.solver: row for row in comparison}
    # The same QP up to the rounding of a mean (~1e-16): equal to Clarabel's accuracy.
    for key, value in by_name[REFERENCE].terms_aud.items():
        assert by_name[MEAN_EFFICIENCY].terms_aud[key] == pytest.approx(value, rel=1e-8), key
    d = comparison.decomposition
    _adds_up(d)
    assert d.total_gain_aud > 0.0
    assert abs(d.site_aud["objective"]) <= 1e-8 * by_name[REFERENCE].values["objective_aud"]
    assert d.share(d.weather_aud)["objective"] == pytest.approx(1.0, abs=1e-6)


def test_texts_name_every_part(tiny_scenario):
    comparison = compare(tiny_scenario)
    text = to_text(comparison)
    assert "site differences" in text and "hourly weather" in text and "none is clipped" in text
    table = seasons_markdown([comparison])
    rows = [line for line in table.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == len(SOLVERS) + 3


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )


def test_compare_over_every_embedded_scenario_is_one_table() -> None:
    names = embedded_scenarios()
    args = [a for name in names for a in ("--scenario", name)]
    done = _cli("compare", *args)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("every plan, scenario by scenario") == 1
    assert out.count("┏") == 1 and out.count("┗") == 0 and out.count("└") == 1  # one table
    for name in names:
        assert f"│ {name} " in out, name
    assert out.count("│ from site differences") == len(names)
    assert out.count("│ from hourly weather") == len(names)


def test_compare_json_over_an_argument_and_an_option() -> None:
    done = _cli("compare", "australia", "--scenario", "australia-20", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [s["scenario"] for s in doc["scenarios"]] == ["australia", "australia-20"]
    for scenario in doc["scenarios"]:
        d = scenario["decomposition"]
        total = d["gain_aud"]["objective"]
        parts = d["site_differences_aud"]["objective"] + d["hourly_weather_aud"]["objective"]
        assert parts == pytest.approx(total, rel=1e-12)
        assert [r["solver"] for r in scenario["rows"]] == list(SOLVERS)


def test_compare_of_one_scenario_keeps_its_form() -> None:
    """``thermoroute compare SCENARIO --json``: the one-scenario document as before (its
    rows), with the decomposition beside them."""
    done = _cli("compare", "australia", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["scenario"] == "australia" and doc["reference"] == REFERENCE
    assert [r["solver"] for r in doc["rows"]] == list(SOLVERS)
    assert set(doc["decomposition"]["plans_aud"]) == {REFERENCE, MEAN_EFFICIENCY, OPTIMUM}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scenario", "australia", "--scenario", "no-such-season"], ["no-such-season"]),
        (["australia", "--scenario", "australia"], ["--scenario australia", "more than once"]),
    ],
)
def test_a_bad_scenario_is_one_line_and_exit_2(args: list[str], words: list[str]) -> None:
    done = _cli("compare", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout == ""  # refused before any solve: nothing half printed
    for word in words:
        assert word in lines[0]


def test_bench_writes_decisions_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import decisions

    out = tmp_path / "DECISIONS.md"
    decisions.main(["--scenarios", "australia", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert f"python -m bench.decisions --scenarios australia --out {out}" in text
    assert "[docs/data.md](docs/data.md)" in text
    assert "(common/scenarios/australia/PROVENANCE.md)" in text
    assert str(REPO) not in text  # data pointed to by repository paths only
    assert text.count("| australia | from hourly weather |") == 1
    assert "Machine: " in text and "commit " in text
    # A bad name: one line, exit 2, the previous document untouched.
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        decisions.main(["--scenarios", "australia,winter-1901", "--out", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "winter-1901" in err[0]
    assert out.read_text(encoding="utf-8") == text


def test_a_run_and_its_report_carry_the_decomposition(tiny_scenario) -> None:
    import thermoroute
    from thermoroute.report import build_report

    expected = compare(tiny_scenario, [OPTIMUM]).decomposition
    solution = thermoroute.solve(tiny_scenario, solver="central", compare=True)
    d = solution.decomposition
    assert d is not None and d.aware == OPTIMUM
    _adds_up(d)
    for key in TERM_KEYS:
        # The run's own charges are read back from summary.json: the same to its digits.
        assert d.site_aud[key] == pytest.approx(expected.site_aud[key], rel=1e-9, abs=1e-9)
        assert d.weather_aud[key] == pytest.approx(expected.weather_aud[key], rel=1e-9, abs=1e-9)
    # A baseline's run is not split: it does not plan with the hourly temperatures.
    assert thermoroute.solve(tiny_scenario, solver="price-only", compare=True).decomposition is None
    page = build_report(solution, tiny_scenario)
    assert "Where the gain comes from" in page
    objective_row = page[page.index(">objective</td>") :].split("</tr>")[0]
    assert f"{expected.weather_aud['objective']:+,.3f}" in objective_row
