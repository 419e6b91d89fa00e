"""Model v1.1 (docs/model.md §12): cooling-limited capacity, measured pPUE curves, grid
connection limits and on-site water allowances — physics, input format, validation, the
centralised reference and the overload report of plans charged under the truth.

Every solve is real (Clarabel through cvxpy); the small scenario is ``make_scenario``'s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
from conftest import make_scenario, thermoroute_in_process
from scenario_factory import (
    PLANT_VALUES,
    SITE_IDS,
    add_plant_data,
    find_line,
    make_scenario_dir,
    read_rows,
    set_cell,
    step_time,
    toml_text,
    write_rows,
)

from thermoroute.common.baselines import temperature_unaware
from thermoroute.common.central import CentralSolveError, _plant_constraints, solve_central
from thermoroute.common.compare import compare, to_json, to_text
from thermoroute.common.errors import ScenarioError
from thermoroute.common.evaluate import (
    evaluate,
    load_gpus,
    overloads,
    plant_limits,
    true_pue,
    true_wue,
)
from thermoroute.common.physics.cooling import derated_capacity_fraction, ppue_curve
from thermoroute.common.physics.water import daily_windows
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_split import split_scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.scenarios import scenario_directory
from thermoroute.common.servability import check_servable
from thermoroute.site_agent.data import load_site

#: Relative tolerance to which the optimum must respect every limit (the issue's 1e-6).
LIMIT_RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Physics


def test_derated_fraction_is_one_up_to_the_design_ambient_then_falls_to_its_floor():
    t = np.array([20.0, 35.0, 40.0, 60.0])
    f = derated_capacity_fraction(t, 35.0, 0.02, 0.7)
    np.testing.assert_allclose(f, [1.0, 1.0, 0.9, 0.7])
    assert np.isnan(derated_capacity_fraction(40.0, np.nan, np.nan, np.nan))


def test_ppue_curve_interpolates_and_is_constant_beyond_its_ends():
    points_c, points = np.array([10.0, 20.0, 30.0]), np.array([1.05, 1.05, 1.35])
    got = ppue_curve([-5.0, 10.0, 25.0, 30.0, 45.0], points_c, points)
    np.testing.assert_allclose(got, [1.05, 1.05, 1.2, 1.35, 1.35])


def test_daily_windows_pro_rate_the_last_short_window():
    window, share = daily_windows(30, 1.0)
    assert window[23] == 0 and window[24] == 1
    np.testing.assert_allclose(share, [1.0, 0.25])
    window, share = daily_windows(3, 12.0)
    np.testing.assert_array_equal(window, [0, 0, 1])
    np.testing.assert_allclose(share, [1.0, 0.5])
    with pytest.raises(ValueError, match="does not divide a day"):
        daily_windows(4, 5.0)


# --------------------------------------------------------------------------------------------
# Input format and validation


def test_v1_scenarios_carry_no_plant_data(tmp_path: Path):
    sc = load_scenario(make_scenario_dir(tmp_path / "v1"))
    assert sc.sites.plant_data() == ()
    assert sc.sites.grid_limit_kw is None and sc.sites.ppue_curve is None
    write_scenario(sc, tmp_path / "out")
    assert not (tmp_path / "out" / "ppue_curve.csv").exists()
    header = read_rows(tmp_path / "out", "sites.csv")[0]
    assert not set(header) & set(PLANT_VALUES)


def test_plant_columns_and_curve_round_trip_exactly(tmp_path: Path):
    src = add_plant_data(make_scenario_dir(tmp_path / "src"))
    # A site with a curve may leave its quadratic empty; another site may give no limits.
    line = find_line(src, "sites.csv", site_id="alpha")
    for column in ("ppue_a", "ppue_b", "ppue_c"):
        set_cell(src, "sites.csv", line, column, "")
    line = find_line(src, "sites.csv", site_id="charlie")
    for column in PLANT_VALUES:
        set_cell(src, "sites.csv", line, column, "")
    sc = load_scenario(src)
    s = sc.sites
    assert set(s.plant_data()) == {*PLANT_VALUES, "ppue_curve.csv"}
    np.testing.assert_array_equal(s.grid_limit_kw[:2], [1000.0, 1000.0])
    assert np.isnan(s.grid_limit_kw[2]) and np.isnan(s.ppue_a[0])
    np.testing.assert_array_equal(s.ppue_curve[0], [[10.0, 1.05], [30.0, 1.25]])
    assert s.ppue_curve[1] is None and s.ppue_curve[2] is None
    # The curve replaces alpha's quadratic in the true model.
    np.testing.assert_allclose(
        true_pue(sc)[0], ppue_curve(sc.dry_bulb_c[0], [10.0, 30.0], [1.05, 1.25])
    )
    write_scenario(sc, tmp_path / "a")
    write_scenario(load_scenario(tmp_path / "a"), tmp_path / "b")
    for name in ("sites.csv", "ppue_curve.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read_rows(tmp_path / "a", "sites.csv")[3][-5:] == [""] * 5
    again = load_scenario(tmp_path / "a").sites
    np.testing.assert_array_equal(again.water_cap_l_per_day, s.water_cap_l_per_day)
    np.testing.assert_array_equal(again.ppue_curve[0], s.ppue_curve[0])


def only_problem(directory: Path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(directory)
    problems = info.value.problems
    assert len(problems) == 1, "\n".join(map(str, problems))
    text = str(problems[0])
    assert "\n" not in text
    return text


@pytest.fixture
def plant(tmp_path: Path) -> Path:
    return add_plant_data(make_scenario_dir(tmp_path / "plant"))


def test_a_partial_cooling_triple_names_the_missing_column(plant: Path):
    line = find_line(plant, "sites.csv", site_id="bravo")
    set_cell(plant, "sites.csv", line, "cooling_min_fraction", "")
    text = only_problem(plant)
    assert text.startswith(f"sites.csv, row {line}, column 'cooling_min_fraction': empty")
    assert "all three" in text


def test_a_header_with_part_of_the_cooling_triple_is_refused(plant: Path):
    rows = read_rows(plant, "sites.csv")
    k = rows[0].index("cooling_derate_per_c")
    write_rows(plant, "sites.csv", [r[:k] + r[k + 1 :] for r in rows])
    text = only_problem(plant)
    assert text.startswith("sites.csv, row 1, column 'cooling_derate_per_c':")


def test_empty_quadratic_without_a_curve_is_refused(plant: Path):
    line = find_line(plant, "sites.csv", site_id="bravo")
    set_cell(plant, "sites.csv", line, "ppue_b", "")
    text = only_problem(plant)
    assert text.startswith(f"sites.csv, row {line}, column 'ppue_b': empty value")
    assert "ppue_curve.csv" in text


@pytest.mark.parametrize(
    ("rows", "where", "what"),
    [
        ([["alpha", "10", "1.05"]], "row 2, column 'site_id'", "at least two points"),
        (
            [["alpha", "10", "1.05"], ["alpha", "10", "1.2"]],
            "row 3, column 'dry_bulb_c'",
            "increase strictly",
        ),
        (
            [["alpha", "10", "1.05"], ["alpha", "20", "1.1"], ["zulu", "5", "1.1"]],
            "row 4, column 'site_id'",
            "unknown site_id 'zulu'",
        ),
        (
            [["alpha", "10", "0.9"], ["alpha", "20", "1.1"]],
            "row 2, column 'ppue'",
            "outside the allowed range [1, 3]",
        ),
    ],
)
def test_bad_curves_are_refused_one_line_each(
    plant: Path, rows: list[list[str]], where: str, what: str
):
    write_rows(plant, "ppue_curve.csv", [["site_id", "dry_bulb_c", "ppue"], *rows])
    text = only_problem(plant)
    assert text.startswith(f"ppue_curve.csv, {where}:") and what in text


def test_a_water_allowance_needs_steps_that_divide_a_day(tmp_path: Path):
    # Hourly series over 16 h, kept at the four 5-hour steps' times (rows between the
    # steps are refused, docs/model.md §8).
    plant = add_plant_data(make_scenario_dir(tmp_path / "five", series_steps=16))
    for file in ("site_series.csv", "demand.csv"):
        rows = read_rows(plant, file)
        steps = {step_time(h).isoformat() for h in (0, 5, 10, 15)}
        write_rows(plant, file, [rows[0], *(r for r in rows[1:] if r[0] in steps)])
    (plant / "scenario.toml").write_text(toml_text(step_hours=5.0, steps=4))
    text = only_problem(plant)
    assert text.startswith("scenario.toml, column 'step_hours':") and "24 h" in text


def test_a_grid_limit_of_zero_is_refused(plant: Path):
    line = find_line(plant, "sites.csv", site_id=SITE_IDS[1])
    set_cell(plant, "sites.csv", line, "grid_limit_kw", "0")
    text = only_problem(plant)
    assert text.startswith(f"sites.csv, row {line}, column 'grid_limit_kw':")


# --------------------------------------------------------------------------------------------
# The centralised reference and charging under the truth


def with_plant(sc: Scenario, **columns: dict[str, object]) -> Scenario:
    """``sc`` with v1.1 data given per site id (``ppue_curve``: a (K, 2) array of points);
    the sites not named give none."""
    values: dict[str, object] = {}
    for name, per_site in columns.items():
        ids = sc.sites.site_id
        if name == "ppue_curve":
            values[name] = tuple(
                np.asarray(per_site[i], dtype=float) if i in per_site else None for i in ids
            )
        else:
            values[name] = np.array([per_site.get(i, np.nan) for i in ids], dtype=float)
    return replace(sc, sites=replace(sc.sites, **values))


#: Melbourne's chillers lose 2 %/°C above 25 °C: 84 % of its GPUs at 33 °C (step 2), where
#: the v1 optimum runs all 30.
DERATED = {
    "cooling_design_c": {"mel": 25.0},
    "cooling_derate_per_c": {"mel": 0.02},
    "cooling_min_fraction": {"mel": 0.3},
}


def onsite_by_window(sc: Scenario, x: np.ndarray, n: np.ndarray) -> np.ndarray:
    lim = plant_limits(sc)
    used = true_wue(sc) * evaluate(sc, x, n).per_site_step["it_kwh"]
    out = np.zeros(lim.water_l.shape)
    np.add.at(out, (slice(None), lim.window), used)
    return out


def assert_within_limits(sc: Scenario, x: np.ndarray, n: np.ndarray) -> None:
    """Every v1.1 limit met to :data:`LIMIT_RTOL` relative, and the report agrees."""
    lim = plant_limits(sc)
    assert np.all(n <= lim.max_gpus * (1 + LIMIT_RTOL) + 1e-9)
    assert np.all(load_gpus(sc, x) <= sc.sites.u_max[:, None] * lim.max_gpus * (1 + LIMIT_RTOL))
    facility_kw = true_pue(sc) * evaluate(sc, x, n).steps.it_kw
    assert np.all(facility_kw <= lim.grid_kw[:, None] * (1 + LIMIT_RTOL))
    assert np.all(onsite_by_window(sc, x, n) <= lim.water_l * (1 + LIMIT_RTOL) + 1e-9)
    assert not any(o.any for o in overloads(sc, evaluate(sc, x, n)).values())


@pytest.fixture(scope="module")
def v1() -> tuple[Scenario, object]:
    sc = make_scenario()
    return sc, solve_central(sc)


def test_v1_data_add_no_constraint_and_report_no_overload(v1):
    sc, result = v1
    S, T = len(sc.sites), sc.steps
    n = cp.Variable((S, T))
    assert _plant_constraints(sc, n, n) == []
    assert not any(o.any for o in overloads(sc, evaluate(sc, result.x, result.n)).values())
    lim = plant_limits(sc)
    assert not (lim.derated.any() or lim.grid.any() or lim.water.any())


def test_australia_objective_is_unchanged_by_model_v1_1():
    # Measured on this branch's parent (05602e3) before model v1.1 existed.
    sc = load_scenario(scenario_directory("australia"))
    assert sc.sites.plant_data() == ()
    assert solve_central(sc).objective_aud == pytest.approx(2237.60322688188, rel=1e-9)


def test_derated_capacity_binds_moves_load_and_is_respected(v1):
    base_sc, base = v1
    sc = with_plant(base_sc, **DERATED)
    lim = plant_limits(sc)
    np.testing.assert_allclose(lim.max_gpus[1], [30.0, 30.0, 25.2, 30.0])
    result = solve_central(sc)
    assert_within_limits(sc, result.x, result.n)
    assert result.objective_aud > base.objective_aud * (1 + 1e-4)
    assert result.n[1, 2] == pytest.approx(25.2, rel=1e-6)  # the derated site is full
    # the load it sheds goes to Sydney
    assert load_gpus(sc, result.x)[0, 2] > load_gpus(sc, base.x)[0, 2] + 1.0


def test_a_plan_blind_to_the_heat_overloads_the_derated_site_and_the_optimum_does_not(v1):
    sc = with_plant(v1[0], **DERATED)
    blind = temperature_unaware(sc)
    report = overloads(sc, evaluate(sc, blind.x, blind.n))
    assert report["capacity"].site_hours == pytest.approx(1.0)  # Melbourne at 33 °C
    assert report["capacity"].it_kwh > 0 and report["capacity"].requests > 0
    assert not report["grid"].any and not report["water"].any
    best = solve_central(sc)
    assert not any(o.any for o in overloads(sc, evaluate(sc, best.x, best.n)).values())


def test_grid_connection_limit_binds_and_is_respected(v1):
    base_sc, base = v1
    facility_kw = true_pue(base_sc) * evaluate(base_sc, base.x, base.n).steps.it_kw
    limit = 0.8 * facility_kw[1].max()
    sc = with_plant(base_sc, grid_limit_kw={"mel": limit})
    result = solve_central(sc)
    assert_within_limits(sc, result.x, result.n)
    assert result.objective_aud > base.objective_aud * (1 + 1e-4)
    after = true_pue(sc) * evaluate(sc, result.x, result.n).steps.it_kw
    assert after[1].max() == pytest.approx(limit, rel=1e-6)  # at its connection limit
    report = overloads(sc, evaluate(sc, base.x, base.n))
    assert report["grid"].any and report["grid"].it_kwh > 0


def test_water_allowance_binds_and_is_respected(v1):
    base_sc, base = v1
    # The horizon is 4 h: its one window gets 4/24 of the daily allowance.
    used = onsite_by_window(base_sc, base.x, base.n)[1, 0]
    cap_per_day = 0.5 * used * 24 / 4
    sc = with_plant(base_sc, water_cap_l_per_day={"mel": cap_per_day})
    result = solve_central(sc)
    assert_within_limits(sc, result.x, result.n)
    assert result.objective_aud > base.objective_aud * (1 + 1e-5)
    assert onsite_by_window(sc, result.x, result.n)[1, 0] == pytest.approx(
        cap_per_day * 4 / 24, rel=1e-6
    )
    report = overloads(sc, evaluate(sc, base.x, base.n))
    assert report["water"].site_hours == pytest.approx(4.0)
    assert report["water"].requests > 0


def test_a_measured_curve_replaces_the_quadratic_in_plan_and_charge(v1):
    base_sc, base = v1
    # Sydney's plant goes mechanical above 24 °C: far dearer than its quadratic there.
    sc = with_plant(base_sc, ppue_curve={"syd": [[20.0, 1.1], [24.0, 1.1], [28.0, 1.9]]})
    assert sc.sites.plant_data() == ("ppue_curve.csv",)
    np.testing.assert_allclose(true_pue(sc)[0], [1.1, 1.3, 1.9, 1.7])
    np.testing.assert_array_equal(true_pue(sc)[1:], true_pue(base_sc)[1:])
    result = solve_central(sc)
    assert evaluate(sc, result.x, result.n).objective_aud == pytest.approx(
        result.objective_aud, rel=1e-6
    )
    # Load leaves Sydney where its curve is dearer than the quadratic (27 °C: 1.7 against
    # 1.24) and comes back where it is cheaper (22 °C: 1.1 against 1.20).
    after, before = load_gpus(sc, result.x)[0], load_gpus(base_sc, base.x)[0]
    assert after[3] < before[3] - 1.0 and after[0] > before[0] + 1.0
    assert result.objective_aud > base.objective_aud


def test_all_limits_together_are_respected_and_each_binds(v1):
    base_sc, base = v1
    facility_kw = true_pue(base_sc) * evaluate(base_sc, base.x, base.n).steps.it_kw
    used = onsite_by_window(base_sc, base.x, base.n)
    grid_kw = facility_kw[0].max()  # Sydney's v1 peak: the derated Melbourne's load comes
    water_l = 0.7 * used[1, 0]  # Melbourne's towers get 70 % of their v1 water
    sc = with_plant(
        base_sc,
        **DERATED,
        grid_limit_kw={"syd": grid_kw},
        water_cap_l_per_day={"mel": water_l * 24 / 4, "per": 1.0},
        ppue_curve={"per": [[25.0, 1.05], [40.0, 1.3]]},
    )
    result = solve_central(sc)
    assert_within_limits(sc, result.x, result.n)
    after_kw = true_pue(sc) * evaluate(sc, result.x, result.n).steps.it_kw
    assert after_kw[0].max() == pytest.approx(grid_kw, rel=1e-6)
    assert onsite_by_window(sc, result.x, result.n)[1, 0] == pytest.approx(water_l, rel=1e-6)
    assert result.n[1, 2] == pytest.approx(25.2, rel=1e-6)
    alone = solve_central(with_plant(base_sc, **DERATED))
    assert result.objective_aud > alone.objective_aud


# --------------------------------------------------------------------------------------------
# compare and the command line


def thermoroute(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return thermoroute_in_process(*args, cwd=cwd)


@pytest.fixture(scope="module")
def derated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("derated") / "scenario"
    write_scenario(with_plant(make_scenario(), **DERATED), directory)
    return directory


def test_compare_reports_each_plans_overload_and_none_for_the_optimum(derated_dir: Path):
    comparison = compare(load_scenario(derated_dir))
    rows = {row.solver: row for row in comparison}
    assert rows["central"].overloads["capacity"]["site_hours"] == 0
    assert rows["temperature-unaware"].overloads["capacity"]["site_hours"] == pytest.approx(1.0)
    assert rows["temperature-unaware"].overloads["capacity"]["requests"] > 0
    assert set(rows["nearest"].overloads) == {"capacity", "grid", "water"}
    document = json.loads(to_json(comparison))
    assert document["rows"][0]["overloads"]["capacity"]["site_hours"] == 0
    text = to_text(comparison)
    assert "above derated capacity" in text and "1 h," in text


def test_compare_on_v1_data_has_no_overload_table(tmp_path: Path):
    comparison = compare(make_scenario(), ["central", "temperature-unaware"])
    assert all(not row.overloads for row in comparison)
    assert "overloads" not in to_json(comparison) and "above derated" not in to_text(comparison)


def test_the_compare_command_shows_the_overload_table(derated_dir: Path, tmp_path: Path):
    done = thermoroute("compare", str(derated_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "above the sites' limits" in done.stdout
    assert "above derated capacity" in done.stdout
    # The caption says the gain leaves out what the overloads would cost (rich may wrap it).
    assert "did not do the work it is charged for" in " ".join(done.stdout.split())


# --------------------------------------------------------------------------------------------
# The distributed methods on the command line (their accuracy: tests/test_plant_methods.py)


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_distributed_methods_solve_plant_data_from_the_command_line(
    derated_dir: Path, tmp_path: Path, method: str
):
    out = tmp_path / "out"
    done = thermoroute(
        "run", str(derated_dir), "--method", method, "--executor", "inline", "--no-compare",
        "--quiet", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    reference = solve_central(with_plant(make_scenario(), **DERATED)).objective_aud
    assert summary["objective_aud"] == pytest.approx(reference, rel=1e-4)


def test_simulate_plans_within_plant_limits(tmp_path: Path):
    source = scenario_directory("australia")
    directory = tmp_path / "australia"
    shutil.copytree(source, directory)
    rows = read_rows(directory, "sites.csv")
    # Every site's cooling loses 2 %/°C above 25 °C (Perth, Adelaide and Brisbane reach it).
    extra = {
        "cooling_design_c": "25",
        "cooling_derate_per_c": "0.02",
        "cooling_min_fraction": "0.5",
    }
    rows = [[*rows[0], *extra], *([*r, *extra.values()] for r in rows[1:])]
    write_rows(directory, "sites.csv", rows)
    out = tmp_path / "sim"
    done = thermoroute(
        "simulate", str(directory), "--executor", "inline", "--days", "0.25", "--horizon", "6",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "simulation.json").read_text())
    assert doc["equal_work"] and doc["drained"]


def test_a_sites_own_slice_carries_its_curve(tmp_path: Path):
    src = add_plant_data(make_scenario_dir(tmp_path / "src"))
    paths = split_scenario(src, tmp_path / "split")
    assert (paths["alpha"] / "ppue_curve.csv").read_text().count("\n") == 3
    assert (paths["bravo"] / "ppue_curve.csv").read_text().count("\n") == 1
    alpha = load_site(paths["alpha"], "alpha")
    assert "ppue_curve.csv" in alpha.sites.plant_data()
    bravo = load_site(src, "bravo")
    assert set(bravo.sites.plant_data()) == set(PLANT_VALUES)


def test_demand_above_the_derated_fleet_is_refused_before_any_solve(v1):
    # Every site loses 5 %/°C above 20 °C, down to a fifth: the hot step cannot be served.
    everywhere = {i: 20.0 for i in v1[0].sites.site_id}
    sc = with_plant(
        v1[0],
        cooling_design_c=everywhere,
        cooling_derate_per_c={i: 0.05 for i in everywhere},
        cooling_min_fraction={i: 0.2 for i in everywhere},
    )
    problems = check_servable(sc)
    assert problems and all("derated by the cooling" in str(p) for p in problems)
    assert check_servable(with_plant(v1[0], **DERATED)) == []


def test_an_infeasible_v1_1_problem_names_its_limits(v1):
    sc = with_plant(v1[0], grid_limit_kw={i: 1.0 for i in v1[0].sites.site_id})
    with pytest.raises(CentralSolveError, match=r"with model v1\.1 limits \(grid_limit_kw\)"):
        solve_central(sc)


@pytest.mark.parametrize(("solver", "overloaded"), [("central", 0.0), ("temperature-unaware", 1.0)])
def test_a_runs_summary_reports_its_overload(
    derated_dir: Path, tmp_path: Path, solver: str, overloaded: float
):
    out = tmp_path / solver
    done = thermoroute(
        "run", str(derated_dir), "--solver", solver, "--no-compare", "--quiet", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overloads"]["capacity"]["site_hours"] == pytest.approx(overloaded)
    assert set(summary["overloads"]) == {"capacity", "grid", "water"}


def test_taking_sites_keeps_their_plant_data(plant: Path):
    sites = load_scenario(plant).sites
    two = sites.take([2, 0])
    assert two.site_id == ("charlie", "alpha")
    np.testing.assert_array_equal(two.grid_limit_kw, [1000.0, 1000.0])
    assert two.ppue_curve[0] is None and two.ppue_curve[1] is sites.ppue_curve[0]
    v1_sites = make_scenario().sites.take([1])
    assert v1_sites.grid_limit_kw is None and v1_sites.ppue_curve is None
