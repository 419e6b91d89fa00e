"""Writing, reading, windowing and splitting scenario directories (input format v1)."""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from scenario_factory import (
    CLASS_IDS,
    REGION_IDS,
    SITE_IDS,
    find_line,
    make_scenario_dir,
    set_cell,
    step_time,
)

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.demand_view import load_demand_view
from thermoroute.common.errors import ScenarioError
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenario_directories import DirectoryKind, check_directory
from thermoroute.common.scenario_format import COORDINATOR_FILES, SCENARIO_FILES, SITE_PRIVATE_FILES
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_split import split_scenario
from thermoroute.common.scenario_writing import write_scenario


@pytest.fixture
def scen(tmp_path: Path) -> Path:
    return make_scenario_dir(tmp_path / "scen")


def assert_same(a, b, *, skip: tuple[str, ...] = ("metadata",)) -> None:
    """Field-by-field exact equality of two scenario dataclasses (arrays bit for bit)."""
    assert type(a) is type(b)
    for f in fields(a):
        if f.name in skip:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if hasattr(x, "__dataclass_fields__"):
            assert_same(x, y, skip=skip)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype or x.dtype.kind == y.dtype.kind, f.name
            assert x.shape == y.shape, f.name
            assert np.array_equal(x, y), f"{f.name}: {x} != {y}"
        else:
            assert x == y, f"{f.name}: {x!r} != {y!r}"


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --------------------------------------------------------------------------------------------
# Round trip


def _awkward(sc: Scenario, seed: int = 3) -> Scenario:
    """``sc`` with every float replaced by one with a long decimal expansion."""
    rng = np.random.default_rng(seed)

    def jiggle(a: np.ndarray) -> np.ndarray:
        return a * (1.0 + rng.uniform(1e-9, 1e-3, a.shape))

    sites = replace(
        sc.sites,
        name=('Alpha, "the first" DC', "Bravo\nDC", "Charlie DC"),
        lat=jiggle(sc.sites.lat),
        lon=jiggle(sc.sites.lon),
        gpus=jiggle(sc.sites.gpus),
        idle_w=jiggle(sc.sites.idle_w),
        u_max=np.array([0.1 + 0.2, 2 / 3, 0.85]),  # 0.30000000000000004
        ppue_a=jiggle(sc.sites.ppue_a),
        ppue_b=jiggle(sc.sites.ppue_b),
        ppue_c=jiggle(sc.sites.ppue_c),
    )
    dry = jiggle(sc.dry_bulb_c)
    return replace(
        sc,
        name='tiny "quoted" \\ name',
        step_hours=np.float64(1.0),  # a NumPy scalar, as builders produce
        objective=replace(sc.objective, carbon_aud_per_kg=np.float64(1 / 3)),
        sites=sites,
        gpu_s=jiggle(sc.gpu_s),
        energy_j=jiggle(sc.energy_j),
        prefill_ms=jiggle(sc.prefill_ms),
        rtt_ms=jiggle(sc.rtt_ms),
        dry_bulb_c=dry,
        wet_bulb_c=dry - rng.uniform(0.1, 5.0, dry.shape),
        price_aud_per_mwh=sc.price_aud_per_mwh * np.pi - 1e-7,
        carbon_kg_per_kwh=jiggle(sc.carbon_kg_per_kwh),
        ewif_l_per_kwh=jiggle(sc.ewif_l_per_kwh),
        demand_rps=jiggle(sc.demand_rps),
        batch_requests=np.round(jiggle(sc.batch_requests) * 7.0) / 7.0,
    )


def test_round_trip_of_the_factory_scenario_is_exact(scen: Path, tmp_path: Path):
    sc = load_scenario(scen)
    write_scenario(sc, tmp_path / "again")
    assert files_in(tmp_path / "again") == set(SCENARIO_FILES)
    assert_same(sc, load_scenario(tmp_path / "again"))


def test_round_trip_keeps_every_float_bit_for_bit(scen: Path, tmp_path: Path):
    sc = _awkward(load_scenario(scen))
    write_scenario(sc, tmp_path / "out")
    back = load_scenario(tmp_path / "out")
    assert back.sites.u_max[0] == 0.1 + 0.2
    assert back.name == sc.name
    assert back.objective.carbon_aud_per_kg == 1 / 3
    assert back.sites.name[1] == "Bravo\nDC"
    assert_same(sc, back)
    # and writing what was read gives the very same files
    write_scenario(back, tmp_path / "out2")
    for name in SCENARIO_FILES:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()


def test_deferrable_slo_is_infinite_and_written_empty(scen: Path, tmp_path: Path):
    sc = load_scenario(scen)
    assert np.isinf(sc.classes.ttft_slo_ms[CLASS_IDS.index("batch")])
    write_scenario(sc, tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "classes.csv").read_text())))
    assert [r["ttft_slo_ms"] for r in rows] == ["1000", "2000", ""]


@pytest.mark.parametrize(
    "value",
    [0.1, 1 / 3, -2.5e-300, 1e16, 123456789012345.0, 5e-324, 1.7976931348623157e308, 42.0],
)
def test_csv_text_floats_read_back_exactly(value: float):
    text = csv_text(["v"], [[value], [np.float64(value)]])
    rows = list(csv.reader(io.StringIO(text)))
    assert float(rows[1][0]) == value
    assert float(rows[2][0]) == value


# --------------------------------------------------------------------------------------------
# Picking a window of a longer series


@pytest.fixture
def week(tmp_path: Path) -> Path:
    # 8 hourly steps of series and demand, a 4-step horizon in scenario.toml
    return make_scenario_dir(tmp_path / "week", series_steps=8, steps=4)


def test_start_and_steps_override_pick_a_window(week: Path):
    full = load_scenario(week, steps=8)
    assert full.steps == 8
    part = load_scenario(week, start=step_time(2), steps=3)
    assert part.times == tuple(step_time(t) for t in (2, 3, 4))
    assert part.start == step_time(2)
    np.testing.assert_array_equal(part.dry_bulb_c, full.dry_bulb_c[:, 2:5])
    np.testing.assert_array_equal(part.demand_rps, full.demand_rps[:, :, 2:5])
    assert_same(part, full.window(2, 3))
    # the default horizon comes from scenario.toml
    assert load_scenario(week).times == tuple(step_time(t) for t in range(4))


def test_available_steps_counts_the_series_from_the_start(week: Path):
    assert load_scenario(week).metadata["available_steps"] == 8
    assert load_scenario(week, start=step_time(5), steps=2).metadata["available_steps"] == 3


def test_window_past_the_series_is_refused(week: Path):
    with pytest.raises(ScenarioError) as info:
        load_scenario(week, start=step_time(6), steps=4)
    problems = info.value.problems
    assert problems
    assert all(p.column == "time" and "missing step" in p.reason for p in problems)
    assert all(step_time(8).isoformat() in p.reason for p in problems)


def test_scenario_window(week: Path):
    full = load_scenario(week, steps=8)
    w = full.window(5, 3)
    assert w.steps == 3
    assert w.start == full.times[5]
    assert w.times == full.times[5:8]
    for name in ("dry_bulb_c", "wet_bulb_c", "price_aud_per_mwh", "carbon_kg_per_kwh",
                 "ewif_l_per_kwh"):  # fmt: skip
        np.testing.assert_array_equal(getattr(w, name), getattr(full, name)[:, 5:8])
    np.testing.assert_array_equal(w.demand_rps, full.demand_rps[:, :, 5:8])
    # batch volumes are per horizon: kept as given
    np.testing.assert_array_equal(w.batch_requests, full.batch_requests)
    assert w.shape == (len(SITE_IDS), len(REGION_IDS), len(CLASS_IDS), 3)
    # the original is untouched
    assert full.steps == 8


@pytest.mark.parametrize(("first", "steps"), [(-1, 2), (6, 3), (0, 0), (8, 1), (2, -1)])
def test_scenario_window_outside_the_horizon(week: Path, first: int, steps: int):
    full = load_scenario(week, steps=8)
    with pytest.raises(ValueError, match="window"):
        full.window(first, steps)


def test_written_window_loads_as_that_window(week: Path, tmp_path: Path):
    w = load_scenario(week, steps=8).window(3, 4)
    write_scenario(w, tmp_path / "w")
    assert_same(load_scenario(tmp_path / "w"), w)


# --------------------------------------------------------------------------------------------
# Splitting into a coordinator directory and one directory per site


def test_split_scenario_layout(scen: Path, tmp_path: Path):
    paths = split_scenario(scen, tmp_path / "split")
    assert set(paths) == {"coordinator", *SITE_IDS}
    assert paths["coordinator"] == tmp_path / "split" / "coordinator"
    assert files_in(paths["coordinator"]) == set(COORDINATOR_FILES)
    for site in SITE_IDS:
        assert paths[site] == tmp_path / "split" / "sites" / site
        assert files_in(paths[site]) == set(SCENARIO_FILES)
    # the coordinator files are the originals
    for name in COORDINATOR_FILES:
        assert (paths["coordinator"] / name).read_bytes() == (scen / name).read_bytes()


def test_split_site_dirs_hold_only_their_own_rows(scen: Path, tmp_path: Path):
    paths = split_scenario(scen, tmp_path / "split")
    private_words = {"Alpha DC": "alpha", "Bravo DC": "bravo", "Charlie DC": "charlie"}
    for site in SITE_IDS:
        others = [s for s in SITE_IDS if s != site]
        for name in SCENARIO_FILES:
            text = (paths[site] / name).read_text()
            for other in others:
                assert other not in text, f"{other} in {site}/{name}"
            for word, owner in private_words.items():
                if owner != site:
                    assert word not in text
        # every private file keeps all of the site's own rows
        for name in SITE_PRIVATE_FILES:
            own = [
                r
                for r in csv.DictReader(io.StringIO((scen / name).read_text()))
                if r["site_id"] == site
            ]
            mine = list(csv.DictReader(io.StringIO((paths[site] / name).read_text())))
            assert mine == own
        # the coordinator's data stays with the coordinator: no demand or batch rows, no
        # populations
        assert (
            paths[site] / "demand.csv"
        ).read_text() == "time,region_id,class_id,requests_per_s\n"
        assert (paths[site] / "batch.csv").read_text() == "region_id,class_id,requests\n"
        regions = list(csv.DictReader(io.StringIO((paths[site] / "regions.csv").read_text())))
        assert {r["population"] for r in regions} == {"0"}
    for name in COORDINATOR_FILES:
        text = (paths["coordinator"] / name).read_text()
        assert not any(site in text for site in SITE_IDS), name


def test_each_site_dir_is_a_valid_one_site_scenario(scen: Path, tmp_path: Path):
    full = load_scenario(scen)
    paths = split_scenario(scen, tmp_path / "split")
    for i, site in enumerate(SITE_IDS):
        one = load_scenario(paths[site])
        assert one.sites.site_id == (site,)
        assert one.shape == (1, len(REGION_IDS), len(CLASS_IDS), full.steps)
        assert_same(one.sites, full.sites.take([i]))
        for name in ("gpu_s", "energy_j", "prefill_ms", "rtt_ms", "dry_bulb_c", "wet_bulb_c",
                     "price_aud_per_mwh", "carbon_kg_per_kwh", "ewif_l_per_kwh"):  # fmt: skip
            np.testing.assert_array_equal(getattr(one, name), getattr(full, name)[i : i + 1])
        assert one.regions.region_id == full.regions.region_id
        assert np.all(one.regions.population == 0)
        assert one.demand_rps.sum() == 0 and one.batch_requests.sum() == 0
        assert one.times == full.times
        assert one.objective == full.objective


def test_site_dirs_of_a_week_load_over_any_window_of_the_source(tmp_path: Path):
    week = make_scenario_dir(tmp_path / "week", series_steps=8, steps=4)
    paths = split_scenario(week, tmp_path / "split")
    full = load_scenario(week, start=step_time(3), steps=5)
    for i, site in enumerate(SITE_IDS):
        one = load_scenario(paths[site], start=step_time(3), steps=5)
        assert one.times == full.times
        np.testing.assert_array_equal(one.dry_bulb_c, full.dry_bulb_c[i : i + 1])
    view = load_demand_view(paths["coordinator"], start=step_time(3), steps=5)
    np.testing.assert_array_equal(view.demand_rps, full.demand_rps)


def test_split_refuses_an_invalid_source(scen: Path, tmp_path: Path):
    set_cell(scen, "sites.csv", find_line(scen, "sites.csv", site_id="bravo"), "gpus", "-1")
    with pytest.raises(ScenarioError):
        split_scenario(scen, tmp_path / "split")
    assert not (tmp_path / "split").exists()


def test_every_part_of_a_split_is_checked_as_its_kind(scen: Path, tmp_path: Path):
    paths = split_scenario(scen, tmp_path / "split")
    root = tmp_path / "split"
    assert check_directory(scen).kind is DirectoryKind.full
    checked = check_directory(root)
    assert checked.kind is DirectoryKind.split_root and checked.scenario is None
    assert checked.sites_here == tuple(sorted(SITE_IDS)) and checked.sites_elsewhere == ()
    assert_same(checked.view, DemandView.of(load_scenario(scen)))
    assert check_directory(paths["coordinator"]).kind is DirectoryKind.coordinator
    site = check_directory(paths[SITE_IDS[0]])
    assert site.kind is DirectoryKind.site and site.sites_here == (SITE_IDS[0],)


def test_a_head_nodes_split_root_checks_the_sites_it_holds(scen: Path, tmp_path: Path):
    # As deploy/GUIDE.md lays a split out on the head node: the coordinator's part and an
    # empty sites/<id>/ per site, whose data are on the site's own host.
    paths = split_scenario(scen, tmp_path / "split")
    first, *others = SITE_IDS
    for site in others:
        for file in paths[site].iterdir():
            file.unlink()
    checked = check_directory(tmp_path / "split")
    assert checked.sites_here == (first,) and checked.sites_elsewhere == tuple(sorted(others))


def test_a_split_roots_problems_are_named_by_their_part(scen: Path, tmp_path: Path):
    paths = split_scenario(scen, tmp_path / "split")
    alpha, bravo, *_ = SITE_IDS
    set_cell(paths[alpha], "sites.csv", 2, "gpus", "-1")
    for file in paths[alpha].iterdir():  # bravo's directory holds alpha's data
        (paths[bravo] / file.name).write_bytes(file.read_bytes())
    (paths["coordinator"] / "demand.csv").unlink()
    with pytest.raises(ScenarioError) as info:
        check_directory(tmp_path / "split")
    where = {(p.file, p.column) for p in info.value.problems}
    assert {("coordinator/demand.csv", None), (f"sites/{alpha}/sites.csv", "gpus"),
            (f"sites/{bravo}/sites.csv", "site_id")} <= where, where  # fmt: skip


def test_scenario_validate_names_the_kind_of_a_split_and_its_parts(
    scen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
):
    from thermoroute.cli import main

    paths = split_scenario(scen, tmp_path / "split")
    for directory, words in [
        (scen, "valid full scenario — scenario 'tiny', 3 sites,"),
        (tmp_path / "split", "valid split root — scenario 'tiny', 3 sites (3 checked here),"),
        (paths["coordinator"], "valid coordinator's part of a split — scenario 'tiny', "
                               "no site's data,"),
        (paths["alpha"], "valid single site's directory — scenario 'tiny', site alpha,"),
    ]:  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["thermoroute", "scenario", "validate", str(directory)])
        with pytest.raises(SystemExit) as ended:
            main()
        out, err = capfd.readouterr()
        assert ended.value.code == 0, err
        assert out.startswith(f"{directory}: {words}"), out


@pytest.mark.parametrize(
    "bad_id", ["../../../tmp/x", "a/b", ".", "..", ".hidden", "a b", "x" * 65, "né", "a\\b"]
)
@pytest.mark.parametrize(
    ("table", "column", "good"),
    [("sites.csv", "site_id", "charlie"), ("regions.csv", "region_id", None)],
)
def test_ids_outside_the_safe_set_are_refused_with_file_row_and_column(
    scen: Path, tmp_path: Path, bad_id: str, table: str, column: str, good: str | None
):
    good = good or next(iter(load_scenario(scen).regions.region_id))
    line = find_line(scen, table, **{column: good})
    for path in scen.glob("*.csv"):
        header, *rows = path.read_text().splitlines(keepends=True)
        path.write_text(header + "".join(r.replace(f"{good},", f"{bad_id},") for r in rows))
    with pytest.raises(ScenarioError) as info:
        load_scenario(scen)
    problem = info.value.problems[0]
    assert (problem.file, problem.row, problem.column) == (table, line, column)
    assert "not allowed" in problem.reason and "not starting with '.'" in problem.reason
    with pytest.raises(ScenarioError):
        split_scenario(scen, tmp_path / "out" / "split")
    assert not (tmp_path / "out").exists()


def test_ids_in_the_safe_set_are_accepted(scen: Path):
    for path in scen.glob("*.csv"):
        path.write_text(path.read_text().replace("charlie,", "Charlie_2.b-x,"))
    assert "Charlie_2.b-x" in load_scenario(scen).sites.site_id


# --------------------------------------------------------------------------------------------
# The coordinator's view


def test_load_demand_view_reads_the_coordinator_dir_alone(scen: Path, tmp_path: Path):
    full = load_scenario(scen)
    paths = split_scenario(scen, tmp_path / "split")
    view = load_demand_view(paths["coordinator"])
    assert_same(view, DemandView.of(full))


def test_load_demand_view_never_opens_site_files(scen: Path, monkeypatch):
    # Site files that would fail validation do not matter to the coordinator ...
    for name in SITE_PRIVATE_FILES:
        (scen / name).write_bytes(b"\xff\xfe garbage")
    opened: list[str] = []
    real_open = Path.open
    real_read_bytes = Path.read_bytes
    real_read_text = Path.read_text

    def spy(method):
        def wrapped(self, *args, **kwargs):
            opened.append(self.name)
            return method(self, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(Path, "open", spy(real_open))
    monkeypatch.setattr(Path, "read_bytes", spy(real_read_bytes))
    monkeypatch.setattr(Path, "read_text", spy(real_read_text))
    view = load_demand_view(scen)
    monkeypatch.undo()
    # ... because they are never opened.
    assert opened, "the spy saw no file at all"
    assert not set(opened) & set(SITE_PRIVATE_FILES)
    assert set(opened) <= set(COORDINATOR_FILES)
    assert view.demand_rps.shape == (len(REGION_IDS), len(CLASS_IDS), 4)


def test_load_demand_view_window_and_errors(tmp_path: Path):
    week = make_scenario_dir(tmp_path / "week", series_steps=8, steps=4)
    full = load_scenario(week, steps=8)
    view = load_demand_view(week, start=step_time(4), steps=4)
    np.testing.assert_array_equal(view.demand_rps, full.demand_rps[:, :, 4:])
    assert view.times == full.times[4:]
    with pytest.raises(ScenarioError) as info:
        load_demand_view(week, steps=0)
    assert info.value.problems[0].column == "steps"
    with pytest.raises(ScenarioError) as info:
        load_demand_view(week, start=step_time(0).replace(tzinfo=None))
    assert info.value.problems[0].column == "start"
    set_cell(week, "demand.csv", 2, "requests_per_s", "-1")
    with pytest.raises(ScenarioError) as info:
        load_demand_view(week)
    assert (info.value.problems[0].file, info.value.problems[0].row) == ("demand.csv", 2)


# --------------------------------------------------------------------------------------------
# Atomic writes


def _stray(directory: Path) -> list[str]:
    """Temporary files left behind (hidden ``.name.*.tmp``)."""
    return sorted(p.name for p in directory.rglob("*") if p.name.startswith(".") or
                  p.name.endswith(".tmp"))  # fmt: skip


class _Exploding(str):
    """Text whose encoding fails, as a broken producer would."""

    def encode(self, *args, **kwargs):  # type: ignore[override]
        raise RuntimeError("cannot encode")


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    write_directory_atomic(d, {"a.csv": "old a\n", "b.csv": "old b\n"})
    return d


def test_write_directory_atomic_writes_and_replaces(earlier: Path):
    assert (earlier / "a.csv").read_text() == "old a\n"
    write_directory_atomic(earlier, {"a.csv": "new a\n", "c.bin": b"\x00\x01", "sub/d.csv": "d"})
    assert (earlier / "a.csv").read_text() == "new a\n"
    assert (earlier / "b.csv").read_text() == "old b\n"
    assert (earlier / "c.bin").read_bytes() == b"\x00\x01"
    assert (earlier / "sub" / "d.csv").read_text() == "d"
    assert _stray(earlier) == []


def test_failed_encoding_leaves_earlier_files_and_no_temporaries(earlier: Path):
    with pytest.raises(RuntimeError, match="cannot encode"):
        write_directory_atomic(
            earlier, {"a.csv": "new a\n", "b.csv": _Exploding("x"), "c.csv": "new c\n"}
        )
    assert (earlier / "a.csv").read_text() == "old a\n"
    assert (earlier / "b.csv").read_text() == "old b\n"
    assert not (earlier / "c.csv").exists()
    assert files_in(earlier) == {"a.csv", "b.csv"}
    assert _stray(earlier) == []


def test_failure_removes_sub_directories_made_for_it(earlier: Path):
    with pytest.raises(RuntimeError):
        write_directory_atomic(earlier, {"new/deep/x.csv": "x", "b.csv": _Exploding("y")})
    assert files_in(earlier) == {"a.csv", "b.csv"}


def test_content_of_the_wrong_type_fails_cleanly(earlier: Path):
    with pytest.raises(TypeError):
        write_directory_atomic(earlier, {"a.csv": "new a\n", "b.csv": 12345})  # type: ignore[dict-item]
    assert (earlier / "a.csv").read_text() == "old a\n"
    assert _stray(earlier) == []


def test_a_name_that_cannot_be_created_leaves_earlier_files(earlier: Path):
    with pytest.raises(ValueError):
        write_directory_atomic(earlier, {"a.csv": "new a\n", "bad\x00name": "x"})
    assert (earlier / "a.csv").read_text() == "old a\n"
    assert files_in(earlier) == {"a.csv", "b.csv"}
    assert _stray(earlier) == []


def test_a_name_under_an_existing_file_leaves_earlier_files(earlier: Path):
    # "b.csv/inner" needs a directory where a file is.
    with pytest.raises(OSError):
        write_directory_atomic(earlier, {"a.csv": "new a\n", "b.csv/inner": "x"})
    assert (earlier / "a.csv").read_text() == "old a\n"
    assert (earlier / "b.csv").read_text() == "old b\n"
    assert _stray(earlier) == []


def test_a_target_that_is_a_directory_leaves_earlier_files(earlier: Path):
    # The failure would come only when renaming into place; the earlier rename of a.csv
    # must not have happened by then.
    (earlier / "c.csv").mkdir()
    with pytest.raises(OSError):
        write_directory_atomic(earlier, {"a.csv": "new a\n", "c.csv": "x"})
    assert (earlier / "a.csv").read_text() == "old a\n"
    assert (earlier / "c.csv").is_dir()
    assert _stray(earlier) == []


@pytest.mark.parametrize("name", ["../outside.csv", "ABSOLUTE", "sub/../../x"])
def test_names_outside_the_directory_are_refused(earlier: Path, name: str):
    if name == "ABSOLUTE":
        name = str(earlier.parent / "absolute.csv")
    before = set(os.listdir(earlier.parent))
    with pytest.raises(ValueError, match="outside"):
        write_directory_atomic(earlier, {"a.csv": "new a\n", name: "x"})
    assert set(os.listdir(earlier.parent)) == before
    assert (earlier / "a.csv").read_text() == "old a\n"
    assert files_in(earlier) == {"a.csv", "b.csv"}


def test_write_scenario_leaves_an_earlier_scenario_when_it_fails(scen: Path, tmp_path: Path):
    sc = load_scenario(scen)
    out = tmp_path / "out"
    write_scenario(sc, out)
    (out / "batch.csv").unlink()
    (out / "batch.csv").mkdir()  # the last file cannot be put in place
    before = {name: (out / name).read_bytes() for name in SCENARIO_FILES if name != "batch.csv"}
    with pytest.raises(OSError):
        write_scenario(replace(sc, demand_rps=sc.demand_rps * 0.5), out)
    for name, content in before.items():
        assert (out / name).read_bytes() == content, name
    assert _stray(out) == []
