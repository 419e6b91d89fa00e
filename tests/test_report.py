"""``thermoroute report`` opened in a real headless Chromium.

Three runs of ``australia``: central (the run writes every site's detail), ADMM in process
(each site writes its own detail under ``sites/<id>/``), and the interior point with those
directories removed (the sites kept their detail on their nodes). For each the report must
load every figure, show who serves whom with the numbers ``schedule.csv`` gives, and say
what it could not show instead of failing.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import thermoroute
from thermoroute.common.baselines import SOLVERS
from thermoroute.report import BAR_METRICS
from thermoroute.results import PUE_COLUMNS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    thermoroute.solve("australia", solver="central", out=root / "central")
    thermoroute.solve("australia", method="admm", executor="inline", out=root / "admm")
    thermoroute.solve("australia", method="ipm", executor="inline", out=root / "private")
    shutil.rmtree(root / "private" / "sites")  # as on a fleet: each site's detail is on its VM
    return {name: root / name for name in ("central", "admm", "private")}


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail("Debian's chromium and chromium-driver are needed (the README installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1280,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _served_from_schedule(run: Path) -> dict[tuple[str, str, str], float]:
    """Requests per (class, region, site) over the horizon, straight from the CSV."""
    step_hours = 1.0  # australia's step (scenario.toml)
    out: dict[tuple[str, str, str], float] = defaultdict(float)
    with (run / "schedule.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["class_id"], row["region_id"], row["site_id"])
            out[key] += float(row["requests_per_s"]) * step_hours * 3600.0
    return out


def _report(run: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "report", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    page = run / "report.html"
    # One line: the page, the seconds, and where they went (the slowest part first).
    line = done.stdout.strip()
    assert "\n" not in line, line
    match = re.fullmatch(rf"wrote {re.escape(str(page))} in ([0-9.]+) s \((.+)\)", line)
    assert match is not None, line
    parts = [re.fullmatch(r"(.+) ([0-9.]+) s", part) for part in match[2].split(", ")]
    assert all(parts), line
    seconds = [float(p[2]) for p in parts if p]
    # Each figure is rounded to 0.1 s: the parts' sum may pass the total by their roundings.
    rounding = 0.05 * (len(seconds) + 1)
    assert seconds == sorted(seconds, reverse=True)
    assert sum(seconds) <= float(match[1]) + rounding, line
    assert any(p[1] == "sites hour by hour" for p in parts if p), line
    return page


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["central", "admm", "private"])
def test_report_opens_whole_in_a_browser(kind: str, runs: dict[str, Path], browser) -> None:
    from selenium.webdriver.common.by import By

    page = _report(runs[kind])
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch (figures are data: URIs).
    assert "http://" not in text and "https://" not in text
    browser.get(page.as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    # 3 classes' matrices, the map, 8 sites, the baselines, the prices (+ convergence).
    assert len(images) >= 14 + (kind != "central")
    for image in images:
        loaded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", image
        )
        assert loaded, image.get_attribute("alt")
    # Who serves whom: every cell equals the schedule's sum; every flow has its cell.
    expected = _served_from_schedule(runs[kind])
    cells = browser.find_elements(By.CSS_SELECTOR, "td[data-requests]")
    seen = {}
    for cell in cells:
        key = tuple(cell.get_attribute(f"data-{k}") for k in ("class", "region", "site"))
        seen[key] = float(cell.get_attribute("data-requests"))
    for key, value in expected.items():
        assert seen[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key
    assert all(v == 0.0 for k, v in seen.items() if k not in expected)
    # What is missing is said, and only then.
    missing = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.missing")]
    if kind == "private":
        assert any("kept their detail on their own nodes" in m for m in missing), missing
    else:
        assert missing == [], missing
    sections = {s.get_attribute("id") for s in browser.find_elements(By.TAG_NAME, "section")}
    assert sections == {
        "overview", "who-serves-whom", "sites", "baselines", "prices", "convergence",
        "explanation",
    }  # fmt: skip
    # The convergence section says what the reported iterate met (docs/model.md §9).
    if kind != "central":
        met = {"admm": "primal, dual", "private": "primal, dual, gap"}[kind]
        assert (
            f"Converged: the iterate the stopping test saw met these of its tolerances: {met}."
            in browser.find_element(By.ID, "convergence").text
        )
    story = browser.find_element(By.ID, "explanation").text
    assert "Against temperature-unaware" in story and "pPUE" in story
    # Sites: the pPUE each plan paid beside the climate's, where the sites' detail is at
    # hand; a private run's page shows neither (nothing of the sites' detail leaks).
    sites = browser.find_element(By.CSS_SELECTOR, "section#sites table")
    header = [th.text for th in sites.find_elements(By.TAG_NAME, "th")]
    assert header[-2:] == list(PUE_COLUMNS.values())
    pue = [
        [td.text for td in row.find_elements(By.TAG_NAME, "td")][-2:]
        for row in sites.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    assert len(pue) == 8
    if kind == "private":
        assert all(cell == "—" for row in pue for cell in row), pue
    else:
        assert all(1.0 <= float(cell) < 2.0 for row in pue for cell in row), pue
        assert any(paid != climate for paid, climate in pue)
    # Against the baselines: the objective and the latency term beside the other terms, in
    # the bars and in the table, for the run and every registered solver.
    section = browser.find_element(By.ID, "baselines")
    assert section.find_elements(By.CSS_SELECTOR, 'img[alt="bars"]')
    header = [th.text for th in section.find_elements(By.TAG_NAME, "th")]
    assert header == ["plan", *(f"{title} [{unit}]" for _, title, unit in BAR_METRICS)]
    assert {"objective_aud", "latency_req_s"} <= {key for key, _, _ in BAR_METRICS}
    table = {
        cells[0]: cells[1:]
        for row in section.find_elements(By.CSS_SELECTOR, "tbody tr")
        for cells in [[td.text for td in row.find_elements(By.TAG_NAME, "td")]]
    }
    summary = json.loads((runs[kind] / "summary.json").read_text())
    label = f"this run ({summary['solver']})"
    assert set(table) == {label, *SOLVERS}
    run = table[label]
    assert float(run[0].replace(",", "")) == pytest.approx(summary["objective_aud"], abs=0.006)
    latency = summary["totals"]["latency_req_s"]
    assert float(run[4].replace(",", "")) == pytest.approx(latency, abs=0.006)
    for name in SOLVERS:  # the optimum's objective is the least of the registered plans
        assert float(table["central"][0].replace(",", "")) <= float(table[name][0].replace(",", ""))


def _explanation(page: str) -> str:
    """The words of the report's "What temperature-awareness changed", tags stripped."""
    section = page[page.index('<section id="explanation">') :].split("</section>")[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", section)).split())


def test_the_report_says_where_the_optimum_is_not_unique(runs: dict[str, Path]) -> None:
    # The report's own machinery, without a browser. On australia the methods stop at the
    # same optimum (to a few 1e-5 of the objective) with plans that move different volumes
    # against temperature-unaware: each report says the optimum is not unique and how
    # little an equally good plan moves — one figure for all, below each run's own.
    from thermoroute.common.baselines import run_solver
    from thermoroute.common.central import least_moving_optimum
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenarios import scenario_directory
    from thermoroute.report import build_report
    from thermoroute.report.narrative import moved_requests
    from thermoroute.results import Solution

    scenario = load_scenario(scenario_directory("australia"))
    unaware = run_solver("temperature-unaware", scenario).schedule.x
    least = moved_requests(scenario, least_moving_optimum(scenario, unaware)[0], unaware)
    moves = {}
    for kind, run in runs.items():
        story = _explanation(build_report(Solution.read(run), scenario))
        moved = moved_requests(scenario, Solution.read(run).x(scenario), unaware)
        moves[kind] = moved
        assert f"this plan moves {moved / 1e6:,.2f} M requests" in story
        if moved - least > 0.05 * moved:
            assert "The optimum is not unique" in story, story
            assert f"moves {least / 1e6:,.2f} M requests, " in story, story
            assert f"{(moved - least) / 1e6:,.2f} M fewer than this one" in story, story
        else:
            assert "not unique" not in story, story
    # The case: two methods at one optimum, moves a factor apart.
    assert max(moves.values()) > 1.5 * min(moves.values()) > 1.5 * least


def test_a_plan_off_the_optimum_is_not_called_one_of_equal_plans(tiny_scenario) -> None:
    import thermoroute
    from thermoroute.report import build_report

    solution = thermoroute.solve(tiny_scenario, solver="nearest")
    story = _explanation(build_report(solution, tiny_scenario))
    assert "this plan moves" in story and "not unique" not in story


def test_report_refuses_a_directory_that_is_no_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a run\n")
    done = subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "summary.json" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "report.html").exists()
