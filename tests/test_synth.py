"""Synthetic scenarios: valid for every size, deterministic, and exact through the file format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.servability import check_servable
from thermoroute.common.synth import TARGET_PEAK_UTILISATION, synthesize


def assert_same_scenario(a: Scenario, b: Scenario) -> None:
    """Field-by-field equality (arrays exactly, NaN-free), ignoring metadata."""
    for f in dataclasses.fields(Scenario):
        if not f.compare:
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(va):
            for g in dataclasses.fields(va):
                xa, xb = getattr(va, g.name), getattr(vb, g.name)
                if isinstance(xa, np.ndarray):
                    np.testing.assert_array_equal(xa, xb, err_msg=f"{f.name}.{g.name}")
                else:
                    assert xa == xb, f"{f.name}.{g.name}"
        elif isinstance(va, np.ndarray):
            assert va.shape == vb.shape, f.name
            np.testing.assert_array_equal(va, vb, err_msg=f.name)
        else:
            assert va == vb, f.name


def peak_utilisation(sc: Scenario) -> float:
    """(Interactive peak load + mean batch load) / Σ u_max·G, with the cheapest allowed gpu_s."""
    allowed = sc.allowed()
    min_g = np.where(allowed, sc.gpu_s[:, None, :], np.inf).min(axis=0)
    inter = sc.classes.interactive
    load = np.einsum("jct,jc->t", sc.demand_rps[:, inter], min_g[:, inter])
    batch = (sc.batch_requests[:, ~inter] * min_g[:, ~inter]).sum() / (sc.steps * 3600.0)
    return float((load.max() + batch) / (sc.sites.u_max * sc.sites.gpus).sum())


def test_round_trip_through_files(tmp_path):
    sc = synthesize(12, 6, seed=7)
    write_scenario(sc, tmp_path / "s")
    back = load_scenario(tmp_path / "s")
    assert_same_scenario(sc, back)


def test_deterministic_per_seed():
    a, b = synthesize(30, 9, seed=3), synthesize(30, 9, seed=3)
    assert_same_scenario(a, b)
    c = synthesize(30, 9, seed=4)
    assert not np.array_equal(a.sites.lat, c.sites.lat)


@pytest.mark.parametrize(("sites", "regions"), [(1, 1), (1, 5), (2, 1), (8, 8), (50, 20)])
def test_valid_for_several_sizes(tmp_path, sites, regions):
    sc = synthesize(sites, regions, seed=11, steps=6)
    assert sc.shape == (sites, regions, 3, 6)
    assert check_servable(sc) == []
    write_scenario(sc, tmp_path / "s")
    load_scenario(tmp_path / "s")  # raises if invalid
    # every region reaches at least one site for every interactive class
    assert sc.allowed().any(axis=0).all()


def test_many_seeds_are_servable():
    for seed in range(25):
        sc = synthesize(3, 4, seed=seed, steps=24)
        assert check_servable(sc) == [], seed


def test_physical_plausibility():
    sc = synthesize(200, 16, seed=5)
    assert sc.demand_rps.min() >= 0 and sc.batch_requests.sum() > 0
    assert np.all(sc.wet_bulb_c <= sc.dry_bulb_c + 1e-9)
    assert sc.dry_bulb_c.min() > 5.0 and sc.dry_bulb_c.max() < 48.0
    # tropical sites are warmer than southern ones on average
    lat = sc.sites.lat
    north, south = lat > -20, lat < -37
    assert north.any() and south.any()
    assert sc.dry_bulb_c[north].mean() > sc.dry_bulb_c[south].mean() + 5
    assert set(sc.sites.wue_model) == {"tower", "economizer", "dry"}
    assert np.all((sc.carbon_kg_per_kwh > 0) & (sc.carbon_kg_per_kwh < 1.2))
    assert set(sc.sites.grid_region) <= {"NSW1", "VIC1", "QLD1", "SA1", "TAS1", "WEM", "NT-DKIS"}
    # forbidden pairs exist (the SLO rule matters) but every region is servable
    assert not sc.allowed()[:, :, ~sc.classes.deferrable].all()


def test_fleet_busy_but_not_saturated_at_peak():
    sc = synthesize(100, 20, seed=2)
    u = peak_utilisation(sc)
    assert u == pytest.approx(TARGET_PEAK_UTILISATION, abs=0.01)
    assert 0.55 <= u <= 0.70


def test_large_fleet_has_the_requested_shape():
    sc = synthesize(1000, 50, seed=1)
    assert sc.shape == (1000, 50, 3, 24)


def test_start_and_steps():
    from datetime import datetime, timedelta, timezone

    start = datetime(2024, 7, 1, 6, 0, tzinfo=timezone(timedelta(hours=10)))
    sc = synthesize(4, 3, seed=0, steps=48, start=start)
    assert sc.steps == 48 and sc.times[0] == start
    assert sc.times[-1] - sc.times[0] == timedelta(hours=47)
    with pytest.raises(ValueError):
        synthesize(0, 1, seed=0)
