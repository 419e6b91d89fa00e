"""Every validation error of ``load_scenario``: the file, row and column it names and why.

Each test starts from the valid tiny scenario of :mod:`scenario_factory`, breaks one thing
and checks the :class:`ScenarioError` problem that comes back. Row numbers are line numbers
of the file with the header on line 1; they are looked up in the file, not assumed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from scenario_factory import (
    CLASS_IDS,
    REGION_IDS,
    SITE_IDS,
    START,
    add_plant_data,
    append_row,
    delete_line,
    drop_column,
    find_line,
    make_scenario_dir,
    read_rows,
    set_cell,
    step_time,
    toml_text,
    write_rows,
)

from thermoroute.common.bounds import BOUNDS, markdown_table
from thermoroute.common.demand_view import load_demand_view
from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.scenario_format import SCENARIO_FILES
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.servability import check_servable
from thermoroute.common.site_view import load_site_view

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def scen(tmp_path: Path) -> Path:
    return make_scenario_dir(tmp_path / "scen")


def problems_of(directory: Path, **kwargs) -> list[Problem]:
    with pytest.raises(ScenarioError) as info:
        load_scenario(directory, **kwargs)
    assert info.value.problems, "a ScenarioError must list its problems"
    return info.value.problems


def the_problem(directory: Path, **kwargs) -> Problem:
    """The single problem of a directory with exactly one thing wrong."""
    problems = problems_of(directory, **kwargs)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def check(problem: Problem, file: str, row: int | None, column: str | None, *words: str) -> None:
    assert (problem.file, problem.row, problem.column) == (file, row, column), str(problem)
    for word in words:
        assert word.lower() in problem.reason.lower(), f"{word!r} not in {problem.reason!r}"


def series_line(directory: Path, site: str, t: int) -> int:
    return find_line(directory, "site_series.csv", time=step_time(t).isoformat(), site_id=site)


def demand_line(directory: Path, region: str, klass: str, t: int) -> int:
    return find_line(
        directory, "demand.csv", time=step_time(t).isoformat(), region_id=region, class_id=klass
    )


def test_the_factory_scenario_is_valid(scen: Path):
    sc = load_scenario(scen)
    assert sc.shape == (len(SITE_IDS), len(REGION_IDS), len(CLASS_IDS), 4)
    assert sc.allowed().all()
    assert check_servable(sc) == []


# --------------------------------------------------------------------------------------------
# Files and CSV structure


@pytest.mark.parametrize("file", SCENARIO_FILES)
def test_missing_file(scen: Path, file: str):
    (scen / file).unlink()
    check(the_problem(scen), file, None, None, "missing")


@pytest.mark.parametrize("file", [f for f in SCENARIO_FILES if f.endswith(".csv")])
def test_empty_file(scen: Path, file: str):
    (scen / file).write_text("", encoding="utf-8")
    check(the_problem(scen), file, 1, None, "empty", "header")


@pytest.mark.parametrize(
    ("file", "what"), [("sites.csv", "no sites"), ("regions.csv", "no regions"),
                       ("classes.csv", "no classes")]
)  # fmt: skip
def test_header_only_table_of_entities(scen: Path, file: str, what: str):
    header = (scen / file).read_text().splitlines()[0]
    (scen / file).write_text(header + "\n")
    problems = problems_of(scen)
    check(problems[0], file, None, None, what)
    assert len(problems) == 1


def test_not_a_directory(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    check(the_problem(tmp_path / "file"), str(tmp_path / "file"), None, None, "directory")
    check(the_problem(tmp_path / "absent"), str(tmp_path / "absent"), None, None, "directory")


@pytest.mark.parametrize(
    ("file", "column"),
    [
        ("sites.csv", "gpus"),
        ("regions.csv", "lat"),
        ("classes.csv", "deferrable"),
        ("profiles.csv", "gpu_s"),
        ("network.csv", "rtt_ms"),
        ("site_series.csv", "wet_bulb_c"),
        ("demand.csv", "requests_per_s"),
        ("batch.csv", "requests"),
    ],
)
def test_missing_column(scen: Path, file: str, column: str):
    drop_column(scen, file, column)
    check(the_problem(scen), file, 1, column, "missing", "header")


def test_wrong_field_count(scen: Path):
    line = find_line(scen, "network.csv", site_id="bravo", region_id="west")
    text = (scen / "network.csv").read_text().splitlines()
    text[line - 1] += ",7"
    (scen / "network.csv").write_text("\n".join(text) + "\n")
    problems = problems_of(scen)
    check(problems[0], "network.csv", line, None, "4 fields", "header has 3")
    # The malformed row is not read, so its pair is reported missing as well.
    assert len(problems) == 2
    check(problems[1], "network.csv", None, None, "missing row", "site_id=bravo", "region_id=west")


def test_too_few_fields(scen: Path):
    line = find_line(scen, "regions.csv", region_id="west")
    text = (scen / "regions.csv").read_text().splitlines()
    text[line - 1] = "west,West coast,-31.95"
    (scen / "regions.csv").write_text("\n".join(text) + "\n")
    check(problems_of(scen)[0], "regions.csv", line, None, "3 fields", "header has 5")


def test_blank_lines_keep_line_numbers(scen: Path):
    # A blank line is skipped, but later rows keep their true line numbers.
    text = (scen / "sites.csv").read_text().splitlines()
    text.insert(1, "")
    (scen / "sites.csv").write_text("\n".join(text) + "\n")
    line = find_line(scen, "sites.csv", site_id="charlie")
    assert line == 5  # header, blank, alpha, bravo, charlie
    set_cell(scen, "sites.csv", line, "gpus", "-1")
    check(the_problem(scen), "sites.csv", 5, "gpus", "outside the allowed range")


def test_quoted_newline_keeps_line_numbers(scen: Path):
    # A quoted name spanning two lines: the row after it starts one line further down.
    rows = read_rows(scen, "sites.csv")
    rows[1][1] = "Alpha\nDC"
    write_rows(scen, "sites.csv", rows)
    set_cell(scen, "sites.csv", 3, "gpus", "-1")  # record 3 is bravo...
    text = (scen / "sites.csv").read_text().splitlines()
    bravo_line = next(k for k, t in enumerate(text, start=1) if t.startswith("bravo,"))
    assert bravo_line == 4
    check(the_problem(scen), "sites.csv", bravo_line, "gpus", "outside the allowed range")


def test_not_utf8_is_reported_not_raised(scen: Path):
    (scen / "regions.csv").write_bytes(b"region_id,name,lat,lon,population\neast,\xff\xfe,1,2,3\n")
    problem = the_problem(scen)
    assert problem.file == "regions.csv"
    assert "utf-8" in problem.reason.lower()


def test_utf8_bom_header_is_accepted(scen: Path):
    # Spreadsheet programs write a byte-order mark; the first column must still be found.
    raw = (scen / "sites.csv").read_bytes()
    (scen / "sites.csv").write_bytes(b"\xef\xbb\xbf" + raw)
    assert load_scenario(scen).sites.site_id == SITE_IDS


# --------------------------------------------------------------------------------------------
# Cell values


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("gpus", "abc", ("not a number", "abc")),
        ("gpus", "nan", ("finite",)),
        ("gpus", "NaN", ("finite",)),
        ("idle_w", "inf", ("finite",)),
        ("max_wait_ms", "-inf", ("finite",)),
        ("ppue_a", "1e999", ("finite",)),
        ("gpus", "-8", ("outside the allowed range", "-8")),
        ("gpus", "0", ("outside the allowed range",)),
        ("u_max", "1.2", ("outside the allowed range", "1.2")),
        ("u_max", "0", ("outside the allowed range",)),
        ("u_max", "-0.5", ("outside the allowed range",)),
        ("idle_w", "-75", ("outside the allowed range", "-75")),
        ("max_wait_ms", "-1", ("outside the allowed range",)),
        ("ref_gpu_s", "0", ("outside the allowed range",)),
        ("ref_gpu_s", "-0.5", ("outside the allowed range",)),
        ("lat", "-91", ("outside the allowed range",)),
        ("lat", "95.5", ("outside the allowed range",)),
        ("lon", "181", ("outside the allowed range",)),
        ("gpus", "", ("empty",)),
        ("wue_model", "swamp", ("unknown wue_model", "swamp", "tower")),
    ],
)
def test_bad_site_cell(scen: Path, column: str, value: str, words: tuple[str, ...]):
    line = find_line(scen, "sites.csv", site_id="bravo")
    set_cell(scen, "sites.csv", line, column, value)
    check(the_problem(scen), "sites.csv", line, column, *words)


@pytest.mark.parametrize("cycles", ["1", "0.5", "0"])
def test_tower_cycles_must_exceed_one(scen: Path, cycles: str):
    line = find_line(scen, "sites.csv", site_id="alpha")  # the tower site
    set_cell(scen, "sites.csv", line, "wue_p1", cycles)
    check(the_problem(scen), "sites.csv", line, "wue_p1", "cycles", "> 1")


def test_tower_cycles_rule_only_applies_to_towers(scen: Path):
    # charlie is dry: its p1 of 0 is fine, and so is 1.
    set_cell(scen, "sites.csv", find_line(scen, "sites.csv", site_id="charlie"), "wue_p1", "1")
    load_scenario(scen)


def test_economizer_threshold_may_be_below_zero(scen: Path):
    # p1 of an economizer is a wet-bulb threshold in °C: −2 °C is a legitimate threshold.
    line = find_line(scen, "sites.csv", site_id="bravo")
    set_cell(scen, "sites.csv", line, "wue_p1", "-2")
    assert load_scenario(scen).sites.wue_p1[1] == -2.0


@pytest.mark.parametrize(
    ("file", "match", "column", "value", "words"),
    [
        ("regions.csv", {"region_id": "west"}, "lat", "-120", ("outside the allowed range",)),
        ("regions.csv", {"region_id": "west"}, "population", "-3", ("outside the allowed range",)),
        ("regions.csv", {"region_id": "east"}, "population", "many", ("not a number",)),
        ("classes.csv", {"class_id": "code"}, "ttft_slo_ms", "0", ("outside the allowed range",)),
        ("classes.csv", {"class_id": "code"}, "ttft_slo_ms", "inf", ("finite",)),
        ("classes.csv", {"class_id": "code"}, "deferrable", "maybe", ("boolean",)),
        (
            "classes.csv",
            {"class_id": "chat"},
            "prompt_tokens",
            "-1",
            ("outside the allowed range",),
        ),
        (
            "profiles.csv",
            {"site_id": "bravo", "class_id": "code"},
            "gpu_s",
            "0",
            ("outside the allowed range",),
        ),
        ("profiles.csv", {"site_id": "bravo", "class_id": "code"}, "energy_j", "nan", ("finite",)),
        (
            "profiles.csv",
            {"site_id": "alpha", "class_id": "chat"},
            "prefill_ms",
            "-5",
            ("outside the allowed range",),
        ),
        (
            "network.csv",
            {"site_id": "alpha", "region_id": "west"},
            "rtt_ms",
            "-1",
            ("outside the allowed range",),
        ),
        ("network.csv", {"site_id": "alpha", "region_id": "west"}, "rtt_ms", "x", ("number",)),
        ("batch.csv", {"region_id": "east"}, "requests", "-10", ("outside the allowed range",)),
        ("batch.csv", {"region_id": "east"}, "requests", "inf", ("finite",)),
    ],
)
def test_bad_cell_in_other_tables(scen, file, match, column, value, words):
    line = find_line(scen, file, **match)
    set_cell(scen, file, line, column, value)
    check(the_problem(scen), file, line, column, *words)


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("dry_bulb_c", "nan", ("finite",)),
        ("dry_bulb_c", "hot", ("not a number",)),
        ("wet_bulb_c", "inf", ("finite",)),
        ("price_aud_per_mwh", "-inf", ("finite",)),
        ("carbon_kg_per_kwh", "-0.1", ("outside the allowed range",)),
        ("ewif_l_per_kwh", "", ("empty",)),
        ("dry_bulb_c", "95", ("outside the allowed range",)),
    ],
)
def test_bad_series_cell(scen: Path, column: str, value: str, words: tuple[str, ...]):
    line = series_line(scen, "charlie", 2)
    set_cell(scen, "site_series.csv", line, column, value)
    check(the_problem(scen), "site_series.csv", line, column, *words)


def test_negative_price_is_valid(scen: Path):
    line = series_line(scen, "bravo", 1)
    set_cell(scen, "site_series.csv", line, "price_aud_per_mwh", "-1000")
    assert load_scenario(scen).price_aud_per_mwh[1, 1] == -1000.0


@pytest.mark.parametrize("value", ["nan", "inf", "-2", "lots"])
def test_bad_demand_cell_is_one_problem(scen: Path, value: str):
    # The row is present, so the step is not also reported as missing.
    line = demand_line(scen, "west", "code", 3)
    set_cell(scen, "demand.csv", line, "requests_per_s", value)
    check(the_problem(scen), "demand.csv", line, "requests_per_s")


def test_wet_bulb_above_dry_bulb(scen: Path):
    line = series_line(scen, "alpha", 1)  # dry bulb 21.5 °C
    set_cell(scen, "site_series.csv", line, "wet_bulb_c", "23")
    check(the_problem(scen), "site_series.csv", line, "wet_bulb_c", "wet bulb", "above", "21.5")


def test_wet_bulb_slightly_above_dry_bulb_is_rounding(scen: Path):
    line = series_line(scen, "alpha", 1)
    set_cell(scen, "site_series.csv", line, "wet_bulb_c", "21.7")
    load_scenario(scen)


# --------------------------------------------------------------------------------------------
# Ids


@pytest.mark.parametrize(
    ("file", "column", "keep"),
    [("sites.csv", "site_id", "bravo"), ("regions.csv", "region_id", "west"),
     ("classes.csv", "class_id", "code")],
)  # fmt: skip
def test_duplicate_id(scen: Path, file: str, column: str, keep: str):
    rows = read_rows(scen, file)
    first = find_line(scen, file, **{column: keep})
    copy = list(rows[first - 1])
    line = append_row(scen, file, copy)
    check(the_problem(scen), file, line, column, "duplicate", keep, f"row {first}")


def test_a_huge_cell_is_quoted_short(scen: Path):
    """A 100,000-character id (a pasted file, a fuzzer) is named, not echoed whole."""
    line = find_line(scen, "classes.csv", class_id="code")
    set_cell(scen, "classes.csv", line, "class_id", "x" * 100_000)
    problems = [p for p in problems_of(scen) if p.file == "classes.csv"]
    assert problems and all(len(str(p)) < 300 for p in problems)
    check(problems[0], "classes.csv", line, "class_id", "100,000 characters", "not allowed")


@pytest.mark.parametrize(
    ("file", "match", "column"),
    [
        ("profiles.csv", {"site_id": "bravo", "class_id": "chat"}, "site_id"),
        ("profiles.csv", {"site_id": "bravo", "class_id": "chat"}, "class_id"),
        ("network.csv", {"site_id": "charlie", "region_id": "east"}, "site_id"),
        ("network.csv", {"site_id": "charlie", "region_id": "east"}, "region_id"),
        ("batch.csv", {"region_id": "west"}, "region_id"),
    ],
)
def test_unknown_id_in_keyed_table(scen: Path, file: str, match: dict, column: str):
    # An extra row with an unknown id (the original rows stay, so nothing goes missing).
    rows = read_rows(scen, file)
    row = list(rows[find_line(scen, file, **match) - 1])
    row[rows[0].index(column)] = "zulu"
    line = append_row(scen, file, row)
    check(the_problem(scen), file, line, column, "unknown", column, "zulu")


def test_unknown_class_in_batch(scen: Path):
    line = append_row(scen, "batch.csv", ["east", "zulu", "5"])
    check(the_problem(scen), "batch.csv", line, "class_id", "unknown", "zulu")


def test_unknown_site_in_series(scen: Path):
    line = append_row(
        scen, "site_series.csv", [START.isoformat(), "zulu", "20", "15", "50", "0.5", "1"]
    )
    check(the_problem(scen), "site_series.csv", line, "site_id", "unknown", "zulu")


@pytest.mark.parametrize("column", ["region_id", "class_id"])
def test_unknown_id_in_demand(scen: Path, column: str):
    row = ["2023-01-16T01:00:00+10:00", "east", "chat", "1"]
    row[1 if column == "region_id" else 2] = "zulu"
    line = append_row(scen, "demand.csv", row)
    check(the_problem(scen), "demand.csv", line, column, "unknown", "zulu")


def test_renamed_id_is_unknown_and_leaves_a_missing_pair(scen: Path):
    line = find_line(scen, "profiles.csv", site_id="charlie", class_id="code")
    set_cell(scen, "profiles.csv", line, "class_id", "cod")
    problems = problems_of(scen)
    check(problems[0], "profiles.csv", line, "class_id", "unknown", "cod")
    check(problems[1], "profiles.csv", None, None, "missing row", "charlie", "code")
    assert len(problems) == 2


@pytest.mark.parametrize(
    ("file", "match"),
    [
        ("profiles.csv", {"site_id": "bravo", "class_id": "batch"}),
        ("network.csv", {"site_id": "alpha", "region_id": "west"}),
    ],
)
def test_duplicate_pair_row(scen: Path, file: str, match: dict):
    first = find_line(scen, file, **match)
    line = append_row(scen, file, read_rows(scen, file)[first - 1])
    problem = the_problem(scen)
    check(problem, file, line, None, "duplicate", *match.values(), f"row {first}")


def test_duplicate_series_row(scen: Path):
    first = series_line(scen, "bravo", 2)
    line = append_row(scen, "site_series.csv", read_rows(scen, "site_series.csv")[first - 1])
    check(the_problem(scen), "site_series.csv", line, None, "duplicate", "bravo", f"row {first}")


def test_duplicate_demand_and_batch_rows(scen: Path):
    first_d = demand_line(scen, "east", "code", 0)
    line_d = append_row(scen, "demand.csv", read_rows(scen, "demand.csv")[first_d - 1])
    first_b = find_line(scen, "batch.csv", region_id="west")
    line_b = append_row(scen, "batch.csv", read_rows(scen, "batch.csv")[first_b - 1])
    problems = problems_of(scen)
    assert len(problems) == 2
    check(problems[0], "demand.csv", line_d, None, "duplicate", f"row {first_d}")
    check(problems[1], "batch.csv", line_b, None, "duplicate", f"row {first_b}")


@pytest.mark.parametrize(
    ("file", "match", "words"),
    [
        ("profiles.csv", {"site_id": "charlie", "class_id": "chat"}, ("site_id=charlie",
                                                                      "class_id=chat")),
        ("network.csv", {"site_id": "bravo", "region_id": "east"}, ("site_id=bravo",
                                                                    "region_id=east")),
    ],
)  # fmt: skip
def test_missing_pair(scen: Path, file: str, match: dict, words: tuple[str, ...]):
    delete_line(scen, file, find_line(scen, file, **match))
    check(the_problem(scen), file, None, None, "missing row", *words)


# --------------------------------------------------------------------------------------------
# Time


def test_missing_step_in_site_series(scen: Path):
    delete_line(scen, "site_series.csv", series_line(scen, "bravo", 2))
    problem = the_problem(scen)
    check(problem, "site_series.csv", None, "time", "missing step", "bravo")
    assert step_time(2).isoformat() in problem.reason


def test_missing_steps_in_demand(scen: Path):
    delete_line(scen, "demand.csv", demand_line(scen, "west", "chat", 1))
    delete_line(scen, "demand.csv", demand_line(scen, "west", "chat", 3))
    problem = the_problem(scen)
    check(problem, "demand.csv", None, "time", "missing step", "west", "chat", "1 more")
    assert step_time(1).isoformat() in problem.reason


def test_series_shorter_than_the_horizon(scen: Path):
    problems = problems_of(scen, steps=6)
    assert {p.file for p in problems} == {"site_series.csv", "demand.csv"}
    for p in problems:
        assert p.column == "time"
        assert step_time(4).isoformat() in p.reason
    # Each of the three sites and each interactive region/class lacks steps 4 and 5.
    assert sum(p.file == "site_series.csv" for p in problems) == len(SITE_IDS)
    assert sum(p.file == "demand.csv" for p in problems) == len(REGION_IDS) * 2


# Series resolution (docs/model.md §8): rows between the step times are refused, never
# sampled.


def test_hourly_series_with_longer_steps_are_refused_in_one_line_per_file(scen: Path):
    (scen / "scenario.toml").write_text(toml_text(step_hours=2.0, steps=2), encoding="utf-8")
    problems = problems_of(scen)
    assert [p.file for p in problems] == ["site_series.csv", "demand.csv"]
    for problem in problems:
        check(problem, problem.file, None, "time", "rows between step times", "2 h apart")
        assert step_time(1).isoformat() in problem.reason  # the first row between steps
    # Each side reads its files through the same readers and says the same.
    with pytest.raises(ScenarioError) as site:
        load_site_view(scen, [SITE_IDS[1]])
    with pytest.raises(ScenarioError) as coordinator:
        load_demand_view(scen)
    assert site.value.problems == problems[:1]
    assert coordinator.value.problems == problems[1:]


def test_a_row_off_the_step_times_is_refused(scen: Path):
    line = series_line(scen, "charlie", 2)
    set_cell(scen, "site_series.csv", line, "time", "2023-01-16T02:30:00+10:00")
    problem = the_problem(scen)
    check(problem, "site_series.csv", None, "time", "rows between step times", "02:30")


def test_series_at_the_steps_resolution_are_valid(scen: Path):
    # Two-hourly rows for two-hour steps; rows beyond the horizon, on the step times, too.
    for file in ("site_series.csv", "demand.csv"):
        rows = read_rows(scen, file)
        odd = {step_time(t).isoformat() for t in (1, 3)}
        write_rows(scen, file, [rows[0], *(r for r in rows[1:] if r[0] not in odd)])
    (scen / "scenario.toml").write_text(toml_text(step_hours=2.0, steps=1), encoding="utf-8")
    assert load_scenario(scen).times == (START,)
    assert load_scenario(scen, start=step_time(2)).times == (step_time(2),)


@pytest.mark.parametrize(
    ("file", "line_of"),
    [
        ("site_series.csv", lambda d: series_line(d, "alpha", 3)),
        ("demand.csv", lambda d: demand_line(d, "east", "chat", 3)),
    ],
)
def test_time_without_utc_offset(scen: Path, file: str, line_of):
    line = line_of(scen)
    set_cell(scen, file, line, "time", "2023-01-16T03:00:00")
    problems = problems_of(scen)
    check(problems[0], file, line, "time", "no utc offset")
    # The step it should have filled is then missing.
    assert len(problems) == 2
    check(problems[1], file, None, "time", "missing step")


@pytest.mark.parametrize("value", ["yesterday", "2023-13-01T00:00:00+10:00", ""])
def test_bad_time_text(scen: Path, value: str):
    line = series_line(scen, "charlie", 0)
    set_cell(scen, "site_series.csv", line, "time", value)
    problems = problems_of(scen)
    check(problems[0], "site_series.csv", line, "time")
    assert ("iso-8601" in problems[0].reason.lower()) or ("empty" in problems[0].reason)


def test_same_instant_in_another_offset_is_the_same_step(scen: Path):
    # 02:00+10:00 written as 16:00Z the day before: the same instant, so the same step.
    line = series_line(scen, "charlie", 2)
    set_cell(scen, "site_series.csv", line, "time", "2023-01-15T16:00:00+00:00")
    load_scenario(scen)


def test_start_override_without_offset_is_reported(scen: Path):
    problems = problems_of(scen, start=START.replace(tzinfo=None))
    assert any(p.file == "scenario.toml" and p.column == "start" for p in problems)


# --------------------------------------------------------------------------------------------
# Interactive versus deferrable


def test_demand_for_a_deferrable_class(scen: Path):
    line = append_row(scen, "demand.csv", [START.isoformat(), "east", "batch", "3"])
    check(the_problem(scen), "demand.csv", line, "class_id", "deferrable", "batch.csv")


def test_batch_for_an_interactive_class(scen: Path):
    line = append_row(scen, "batch.csv", ["west", "code", "300"])
    check(the_problem(scen), "batch.csv", line, "class_id", "interactive", "demand.csv")


def test_header_only_demand_file_is_refused_where_regions_have_people(scen: Path):
    """A header-only demand.csv would silently drop all interactive demand: refused, unless
    every region has population 0 (a site's own directory, as split_scenario writes it)."""
    (scen / "demand.csv").write_text("time,region_id,class_id,requests_per_s\n")
    check(the_problem(scen), "demand.csv", None, None, "no rows")
    regions = (scen / "regions.csv").read_text().splitlines()
    header = regions[0].split(",")
    at = header.index("population")
    rows = [r.split(",") for r in regions[1:]]
    for r in rows:
        r[at] = "0"
    (scen / "regions.csv").write_text("\n".join([regions[0], *(",".join(r) for r in rows)]) + "\n")
    sc = load_scenario(scen)
    assert sc.demand_rps.shape == (len(REGION_IDS), len(CLASS_IDS), 4)
    assert not sc.demand_rps.any()
    # One row is enough to make every other step of every interactive pair required.
    append_row(scen, "demand.csv", [START.isoformat(), "east", "chat", "1"])
    problems = problems_of(scen)
    assert len(problems) == len(REGION_IDS) * 2
    assert all(p.column == "time" and "missing step" in p.reason for p in problems)


def test_empty_batch_file_is_valid(scen: Path):
    (scen / "batch.csv").write_text("region_id,class_id,requests\n")
    assert load_scenario(scen).batch_requests.sum() == 0.0


# --------------------------------------------------------------------------------------------
# scenario.toml


def test_bad_toml(scen: Path):
    (scen / "scenario.toml").write_text('[scenario\nname = "x"\n')
    check(the_problem(scen), "scenario.toml", None, None, "not valid toml", "line 1")


def test_missing_tables(scen: Path):
    (scen / "scenario.toml").write_text('title = "nothing here"\n')
    problems = problems_of(scen)
    reasons = " | ".join(p.reason for p in problems)
    assert "missing table [scenario]" in reasons
    assert "missing table [objective]" in reasons
    assert all(p.file == "scenario.toml" for p in problems)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("scenario", "name"),
        ("scenario", "start"),
        ("scenario", "step_hours"),
        ("scenario", "steps"),
        ("objective", "carbon_aud_per_kg"),
        ("objective", "water_aud_per_l"),
        ("objective", "latency_aud_per_req_s"),
    ],
)
def test_missing_toml_key(scen: Path, table: str, key: str):
    text = "\n".join(line for line in toml_text().splitlines() if not line.startswith(f"{key} ="))
    (scen / "scenario.toml").write_text(text + "\n")
    check(the_problem(scen), "scenario.toml", None, key, f"[{table}]", "missing", key)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("carbon_aud_per_kg", "-0.07", ("outside the allowed range",)),
        ("water_aud_per_l", "nan", ("a number",)),
        ("latency_aud_per_req_s", '"cheap"', ("number",)),
        ("steps", "0", ("outside the allowed range",)),
        ("steps", "-3", ("outside the allowed range",)),
        ("steps", "2.5", ("integer",)),
        ("step_hours", "0", ("outside the allowed range",)),
        ("start", '"tomorrow"', ("iso-8601",)),
        ("start", '"2023-01-16T00:00:00"', ("utc offset",)),
        ("name", '""', ("name",)),
    ],
)
def test_bad_toml_value(scen: Path, key: str, value: str, words: tuple[str, ...]):
    lines = toml_text().splitlines()
    lines = [f"{key} = {value}" if line.startswith(f"{key} =") else line for line in lines]
    (scen / "scenario.toml").write_text("\n".join(lines) + "\n")
    check(the_problem(scen), "scenario.toml", None, key, *words)


@pytest.mark.parametrize("steps", [0, -1, 8785, 100_000_000])
def test_steps_override_must_be_within_bounds(scen: Path, steps: int):
    check(the_problem(scen, steps=steps), "scenario.toml", None, "steps", "[1, 8,784]")


def test_toml_datetime_start_is_accepted(scen: Path):
    lines = [
        "start = 2023-01-16T01:00:00+10:00" if line.startswith("start =") else line
        for line in toml_text().splitlines()
    ]
    (scen / "scenario.toml").write_text("\n".join(lines) + "\n")
    sc = load_scenario(scen, steps=3)
    assert sc.times[0] == step_time(1)


# --------------------------------------------------------------------------------------------
# Servability


def test_class_no_site_can_serve_within_slo(scen: Path):
    # Best possible TTFT of chat is 5 + 200 + 100 = 305 ms (alpha -> east): a 300 ms SLO
    # leaves every site out.
    line = find_line(scen, "classes.csv", class_id="chat")
    set_cell(scen, "classes.csv", line, "ttft_slo_ms", "300")
    check(the_problem(scen), "classes.csv", line, "ttft_slo_ms", "chat", "no site", "slo")


def test_class_row_is_its_line_even_after_blank_lines(scen: Path):
    text = (scen / "classes.csv").read_text().splitlines()
    text.insert(1, "")
    text.insert(1, "")
    (scen / "classes.csv").write_text("\n".join(text) + "\n")
    line = find_line(scen, "classes.csv", class_id="code")
    assert line == 5
    # code: best TTFT 5 + 400 + 100 = 505 ms.
    set_cell(scen, "classes.csv", line, "ttft_slo_ms", "500")
    check(the_problem(scen), "classes.csv", line, "ttft_slo_ms", "code", "no site")


def test_region_no_site_reaches_within_slo(scen: Path):
    # With a 310 ms chat SLO east is reached only by alpha (5 + 200 + 100 = 305 ms) and west
    # only by charlie (5 + 300 = 305 ms). Charlie -> west at 11 ms (311 ms) leaves west with
    # no site while chat as a class is still servable (by alpha, in the east).
    set_cell(scen, "classes.csv", find_line(scen, "classes.csv", class_id="chat"),
             "ttft_slo_ms", "310")  # fmt: skip
    line = find_line(scen, "network.csv", site_id="charlie", region_id="west")
    set_cell(scen, "network.csv", line, "rtt_ms", "11")
    problem = the_problem(scen)
    check(problem, "demand.csv", None, "requests_per_s", "west", "chat", "no site", "310")


def test_demand_above_what_sites_within_slo_can_serve(scen: Path):
    # chat SLO 310 ms: only alpha (5 + 200 + 100 = 305) reaches east; alpha can serve
    # u_max·G / gpu_s = 0.8 · 8 / 0.5 = 12.8 req/s. 13 req/s at step 2 is too much, while the
    # fleet (15.2 busy GPUs) still has room for 13 · 0.5 = 6.5 GPUs plus the rest.
    set_cell(scen, "classes.csv", find_line(scen, "classes.csv", class_id="chat"),
             "ttft_slo_ms", "310")  # fmt: skip
    line = demand_line(scen, "east", "chat", 2)
    set_cell(scen, "demand.csv", line, "requests_per_s", "13")
    problem = the_problem(scen)
    check(problem, "demand.csv", line, "requests_per_s", "13 req/s", "east", "chat", "12.8")
    assert step_time(2).isoformat() in problem.reason


def test_step_demand_above_the_fleet(scen: Path):
    # 25 req/s of chat in each region at step 1: each alone fits the sites within SLO
    # (15.2 / 0.5 = 30.4 req/s), but together they need 50 · 0.5 = 25 busy GPUs (plus
    # code: (1.0 + 1.75) · 0.3 = 0.825) against a fleet of 6.4 + 5.4 + 3.4 = 15.2.
    set_cell(scen, "demand.csv", demand_line(scen, "east", "chat", 1), "requests_per_s", "25")
    set_cell(scen, "demand.csv", demand_line(scen, "west", "chat", 1), "requests_per_s", "25")
    problem = the_problem(scen)
    check(problem, "demand.csv", None, "requests_per_s", "fleet", "15.2")
    assert step_time(1).isoformat() in problem.reason


def test_batch_volume_above_spare_capacity(scen: Path):
    # Interactive load per step (see the next test): 3.675, 4.075, 4.475, 4.875 busy GPUs,
    # so the spare is (4 · 15.2 − 17.1) · 3600 = 43.7 · 3600 = 157320 GPU-s; the batch of
    # 2000 (east) + 200000 (west) requests needs 202000 · 2 = 404000 GPU-s.
    set_cell(scen, "batch.csv", find_line(scen, "batch.csv", region_id="west"), "requests",
             "200000")  # fmt: skip
    check(the_problem(scen), "batch.csv", None, "requests", "batch volume", "404000", "157320")


def test_batch_just_within_spare_capacity_is_valid(scen: Path):
    # The spare capacity computed by hand: load per step = Σ demand · gpu_s, demand from the
    # factory: chat (2 + 0.25t) east, (4 + 0.25t) west at 0.5 GPU-s; code (0.75 + 0.25t)
    # east, (1.5 + 0.25t) west at 0.3 GPU-s.
    load = [0.5 * (6 + 0.5 * t) + 0.3 * (2.25 + 0.5 * t) for t in range(4)]
    spare_gpu_s = sum(15.2 - x for x in load) * 3600
    fits = int(spare_gpu_s / 2.0) - 10  # batch needs 2 GPU-s per request
    set_cell(scen, "batch.csv", find_line(scen, "batch.csv", region_id="east"), "requests",
             "0")  # fmt: skip
    set_cell(scen, "batch.csv", find_line(scen, "batch.csv", region_id="west"), "requests",
             str(fits))  # fmt: skip
    load_scenario(scen)
    set_cell(scen, "batch.csv", find_line(scen, "batch.csv", region_id="west"), "requests",
             str(int(spare_gpu_s / 2.0) + 10))  # fmt: skip
    check(the_problem(scen), "batch.csv", None, "requests", "batch volume")


# --------------------------------------------------------------------------------------------
# Collecting and reporting


def test_all_problems_of_a_file_are_collected(scen: Path):
    lines = {site: find_line(scen, "sites.csv", site_id=site) for site in SITE_IDS}
    set_cell(scen, "sites.csv", lines["alpha"], "gpus", "-1")
    set_cell(scen, "sites.csv", lines["alpha"], "u_max", "2")
    set_cell(scen, "sites.csv", lines["bravo"], "idle_w", "nan")
    set_cell(scen, "sites.csv", lines["charlie"], "lat", "north")
    problems = problems_of(scen)
    got = {(p.file, p.row, p.column) for p in problems}
    assert got == {
        ("sites.csv", lines["alpha"], "gpus"),
        ("sites.csv", lines["alpha"], "u_max"),
        ("sites.csv", lines["bravo"], "idle_w"),
        ("sites.csv", lines["charlie"], "lat"),
    }


def test_problems_of_several_files_are_collected_together(scen: Path):
    set_cell(scen, "regions.csv", find_line(scen, "regions.csv", region_id="east"), "lon", "999")
    set_cell(scen, "classes.csv", find_line(scen, "classes.csv", class_id="chat"),
             "deferrable", "perhaps")  # fmt: skip
    set_cell(scen, "sites.csv", find_line(scen, "sites.csv", site_id="charlie"), "gpus", "0")
    files = {p.file for p in problems_of(scen)}
    assert files == {"regions.csv", "classes.csv", "sites.csv"}


def test_problems_of_every_file_are_reported_in_one_run(scen: Path):
    # A bad site cell does not hide problems in the tables that refer to sites.
    set_cell(scen, "sites.csv", 3, "u_max", "1.5")
    d_line = demand_line(scen, "east", "code", 1)
    set_cell(scen, "demand.csv", d_line, "requests_per_s", "nan")
    n_line = find_line(scen, "network.csv", site_id="alpha", region_id="east")
    set_cell(scen, "network.csv", n_line, "rtt_ms", "-3")
    s_line = series_line(scen, "charlie", 3)
    set_cell(scen, "site_series.csv", s_line, "carbon_kg_per_kwh", "x")
    b_line = find_line(scen, "batch.csv", region_id="east")
    set_cell(scen, "batch.csv", b_line, "requests", "-1")
    got = [(p.file, p.row, p.column) for p in problems_of(scen)]
    assert got == [
        ("sites.csv", 3, "u_max"),
        ("network.csv", n_line, "rtt_ms"),
        ("site_series.csv", s_line, "carbon_kg_per_kwh"),
        ("demand.csv", d_line, "requests_per_s"),
        ("batch.csv", b_line, "requests"),
    ]


def test_bad_toml_does_not_hide_problems_of_tables_without_times(scen: Path):
    (scen / "scenario.toml").write_text(toml_text().replace("steps = 4", "steps = 0"))
    line = find_line(scen, "profiles.csv", site_id="bravo", class_id="code")
    set_cell(scen, "profiles.csv", line, "gpu_s", "-1")
    got = [(p.file, p.row, p.column) for p in problems_of(scen)]
    assert got == [("scenario.toml", None, "steps"), ("profiles.csv", line, "gpu_s")]


@pytest.mark.parametrize(
    ("break_ids", "blocked"),
    [
        (lambda d: (d / "sites.csv").unlink(), {"profiles.csv", "network.csv",
                                                "site_series.csv"}),
        (lambda d: set_cell(d, "sites.csv", 3, "site_id", "alpha"), {"profiles.csv",
                                                                    "network.csv",
                                                                    "site_series.csv"}),
        (lambda d: set_cell(d, "classes.csv", 2, "deferrable", "?"), {"profiles.csv",
                                                                     "demand.csv",
                                                                     "batch.csv"}),
        (lambda d: drop_column(d, "regions.csv", "region_id"), {"network.csv", "demand.csv",
                                                               "batch.csv"}),
    ],
)  # fmt: skip
def test_tables_keyed_by_unsound_ids_are_not_checked(scen: Path, break_ids, blocked):
    # Their rows would all look wrong; one problem about the ids is what the user needs.
    break_ids(scen)
    files = {p.file for p in problems_of(scen)}
    assert len(files) == 1
    assert not files & blocked


def test_error_message_is_one_readable_line_per_problem(scen: Path):
    set_cell(scen, "sites.csv", find_line(scen, "sites.csv", site_id="alpha"), "gpus", "-1")
    bad_line = series_line(scen, "bravo", 1)
    set_cell(scen, "site_series.csv", bad_line, "wet_bulb_c", "nan\nnan")
    with pytest.raises(ScenarioError) as info:
        load_scenario(scen)
    lines = str(info.value).splitlines()
    assert len(lines) == 1 + len(info.value.problems)
    assert str(scen) in lines[0]
    assert f"{len(info.value.problems)} problem" in lines[0]
    for problem, line in zip(info.value.problems, lines[1:], strict=True):
        assert str(problem) in line
        assert problem.file in line and problem.reason in line
    assert any("sites.csv, row 2, column 'gpus'" in line for line in lines)


def test_problem_text_is_one_line_even_for_a_multiline_reason():
    text = str(Problem("scenario.toml", "not valid TOML: first\nsecond\r\nthird"))
    assert text == "scenario.toml: not valid TOML: first second third"
    err = ScenarioError([Problem("a.csv", "x\ny", 2, "c"), Problem("b.csv", "z")], "dir")
    assert str(err).splitlines() == [
        "invalid scenario dir: 2 problem(s)",
        "  - a.csv, row 2, column 'c': x y",
        "  - b.csv: z",
    ]


def test_utf8_bom_in_scenario_toml_is_accepted(scen: Path):
    raw = (scen / "scenario.toml").read_bytes()
    (scen / "scenario.toml").write_bytes(b"\xef\xbb\xbf" + raw)
    assert load_scenario(scen).name == "tiny"


def test_problem_text_names_file_row_and_column():
    assert str(Problem("sites.csv", "must be > 0 (got -1)", 3, "gpus")) == (
        "sites.csv, row 3, column 'gpus': must be > 0 (got -1)"
    )
    assert str(Problem("demand.csv", "missing step", None, "time")) == (
        "demand.csv, column 'time': missing step"
    )
    assert str(Problem("batch.csv", "file is missing")) == "batch.csv: file is missing"


def test_very_many_problems_are_summarised(scen: Path):
    rows = read_rows(scen, "site_series.csv")
    k = rows[0].index("price_aud_per_mwh")
    for row in rows[1:]:
        row[k] = "x"
    write_rows(scen, "site_series.csv", rows)
    with pytest.raises(ScenarioError) as info:
        load_scenario(scen)
    n = len(info.value.problems)
    assert n == len(rows) - 1 == 12
    assert len(str(info.value).splitlines()) == 1 + n
    # Every problem is a single line even when a cell holds a newline.
    assert all("\n" not in str(p) for p in info.value.problems)


def test_check_servable_works_on_a_scenario_in_memory(scen: Path):
    sc = load_scenario(scen)
    # 100 × demand: west chat at step 3 is 100 · 4.75 = 475 req/s, far above the fleet's
    # 15.2 / 0.5 = 30.4 req/s.
    heavy = replace(sc, demand_rps=sc.demand_rps * 100)
    problems = check_servable(heavy)
    assert problems
    assert {p.file for p in problems} <= {"demand.csv", "batch.csv"}
    assert any(p.file == "demand.csv" and "fleet" in p.reason for p in problems)
    # An in-memory scenario has no file lines to point at.
    assert all(p.row is None for p in problems)


# --------------------------------------------------------------------------------------------
# The command line


CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]


def test_cli_validate_refuses_a_bad_directory(scen: Path, tmp_path: Path):
    line = find_line(scen, "sites.csv", site_id="bravo")
    set_cell(scen, "sites.csv", line, "u_max", "1.5")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    bad = subprocess.run(
        [*CLI, "scenario", "validate", str(scen)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr + bad.stdout
    assert "sites.csv" in bad.stderr
    assert f"row {line}" in bad.stderr
    assert "u_max" in bad.stderr
    # and a good directory passes
    good = make_scenario_dir(tmp_path / "good")
    ok = subprocess.run(
        [*CLI, "scenario", "validate", str(good)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    shutil.rmtree(good)


# --------------------------------------------------------------------------------------------
# Physical bounds (common/bounds.py, docs/model.md §8)


def _outside(bound) -> list[float]:
    """Values just outside ``bound``, on each side that is finite."""
    span = max(abs(bound.high), abs(bound.low), 1.0)
    out = [bound.high + 0.01 * span]
    if bound.low_open:
        out.append(bound.low)
    elif bound.low > -1e300:
        out.append(bound.low - 0.01 * span)
    return out


_CSV_BOUNDS = [(f, c) for (f, c) in BOUNDS if f != "scenario.toml"]


@pytest.mark.parametrize(("file", "column"), _CSV_BOUNDS, ids=[f"{f}:{c}" for f, c in _CSV_BOUNDS])
def test_every_csv_bound_is_enforced_with_file_row_column_and_range(
    scen: Path, file: str, column: str
) -> None:
    bound = BOUNDS[(file, column)]
    add_plant_data(scen)  # the optional v1.1 columns and file (model.md §12)
    original = scen / file
    kept = original.read_text()
    for value in _outside(bound):
        original.write_text(kept)
        set_cell(scen, file, 2, column, f"{value:.12g}")
        problems = [p for p in problems_of(scen) if p.row == 2 and p.column == column]
        assert problems, f"{file}:{column} = {value} accepted"
        assert "outside the allowed range" in problems[0].reason
        assert bound.describe() in problems[0].reason


_TOML_BOUNDS = [c for (f, c) in BOUNDS if f == "scenario.toml"]


@pytest.mark.parametrize("key", _TOML_BOUNDS)
def test_every_toml_bound_is_enforced(scen: Path, key: str) -> None:
    bound = BOUNDS[("scenario.toml", key)]
    text = (scen / "scenario.toml").read_text()
    for value in _outside(bound):
        literal = str(int(value)) if key == "steps" else repr(float(value))
        lines = [f"{key} = {literal}" if ln.startswith(f"{key} =") else ln
                 for ln in text.splitlines()]  # fmt: skip
        (scen / "scenario.toml").write_text("\n".join(lines) + "\n")
        problems = [p for p in problems_of(scen) if p.column == key]
        assert problems and "outside the allowed range" in problems[0].reason, (key, value)


@pytest.mark.parametrize("raw", ["1_000", "0x10", "1e999", "infinity", "1,5", "--1", "1e", "١٢"])
def test_numbers_are_parsed_strictly(scen: Path, raw: str) -> None:
    set_cell(scen, "sites.csv", 2, "idle_w", raw)
    problem = the_problem(scen)
    assert (problem.file, problem.row, problem.column) == ("sites.csv", 2, "idle_w")


def test_a_huge_horizon_is_refused_before_any_memory_is_spent(scen: Path) -> None:
    import resource

    text = (scen / "scenario.toml").read_text()
    lines = ["steps = 100000000" if ln.startswith("steps =") else ln for ln in text.splitlines()]
    (scen / "scenario.toml").write_text("\n".join(lines) + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    check(the_problem(scen), "scenario.toml", None, "steps", "outside the allowed range")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50_000  # not the 1.8 GB of a 10⁸-step time axis


def test_the_model_documents_every_bound() -> None:
    text = (REPO / "docs" / "model.md").read_text(encoding="utf-8")
    assert markdown_table() in text
