"""Run outputs (docs/model.md §9) recomputed independently of the solver and evaluation code.

A run is solved and written with :func:`thermoroute.common.outputs.write_run`; then every total of
``summary.json`` is recomputed from nothing but ``schedule.csv``, ``site_steps.csv`` and the
scenario's own input CSV files, read with the ``csv`` module, with the formulas of docs/model.md
§3–6 written out again below (no import of ``common`` in the recomputation). Also: writing
is all-or-nothing — a failing write leaves an earlier output intact.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import subprocess
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from thermoroute.common.baselines import run_solver
from thermoroute.common.outputs import SolverStats, write_run
from thermoroute.common.scenario_loading import load_scenario

REL = 1e-6


# ------------------------------------------------------------------------------------------
# Independent recomputation: csv + docs/model.md formulas only.


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def _wue(model: str, wet_bulb_c: float, p1: float, p2: float) -> float:
    """On-site WUE of docs/model.md §4 [L/kWh]."""
    if model == "tower":
        f = wet_bulb_c * 9 / 5 + 32
        return max(0.05, p1 / (p1 - 1) * (6e-5 * f**3 - 0.01 * f**2 + 0.61 * f - 10.4))
    if model == "economizer":
        return max(0.0, p2 * (wet_bulb_c - p1))
    assert model == "dry", model
    return 0.0


def recompute(scenario_dir: Path, run_dir: Path) -> dict:
    """Totals, per-site totals, objective and site-step values from the CSV files alone."""
    meta = tomllib.loads((scenario_dir / "scenario.toml").read_text(encoding="utf-8"))
    dt_h = float(meta["scenario"]["step_hours"])
    dt_s = 3600.0 * dt_h
    weights = meta["objective"]
    sites = {r["site_id"]: r for r in _rows(scenario_dir / "sites.csv")}
    deferrable = {
        r["class_id"]: r["deferrable"].strip().lower() in ("true", "1", "yes")
        for r in _rows(scenario_dir / "classes.csv")
    }
    slo = {r["class_id"]: r["ttft_slo_ms"] for r in _rows(scenario_dir / "classes.csv")}
    prof = {(r["site_id"], r["class_id"]): r for r in _rows(scenario_dir / "profiles.csv")}
    rtt = {
        (r["site_id"], r["region_id"]): float(r["rtt_ms"])
        for r in _rows(scenario_dir / "network.csv")
    }
    series = {(_when(r["time"]), r["site_id"]): r for r in _rows(scenario_dir / "site_series.csv")}
    steps = {(_when(r["time"]), r["site_id"]): r for r in _rows(run_dir / "site_steps.csv")}
    schedule = _rows(run_dir / "schedule.csv")

    # Σ over the schedule, per (time, site): load, dynamic power, path latency, requests.
    acc: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    served: dict[tuple, float] = defaultdict(float)
    for r in schedule:
        when, site, region, klass = _when(r["time"]), r["site_id"], r["region_id"], r["class_id"]
        x = float(r["requests_per_s"])
        p = prof[(site, klass)]
        a = acc[(when, site)]
        a["load"] += float(p["gpu_s"]) * x
        a["dynamic_w"] += float(p["energy_j"]) * x
        a["requests"] += x * dt_s
        if not deferrable[klass]:
            a["path_req_s"] += x * (rtt[(site, region)] + float(p["prefill_ms"])) / 1000 * dt_s
            a["interactive_requests"] += x * dt_s
            served[(when, region, klass)] += x
            worst = rtt[(site, region)] + float(p["prefill_ms"]) + float(sites[site]["max_wait_ms"])
            assert worst <= float(slo[klass]), f"forbidden pair served: {r}"
        else:
            served[(region, klass)] += x * dt_s

    keys = ("energy_cost_aud", "carbon_kg", "water_onsite_l", "water_offsite_l", "it_kwh")
    keys += ("cooling_kwh", "facility_kwh", "latency_req_s", "requests", "interactive_requests")
    per_site: dict[str, dict[str, float]] = {s: dict.fromkeys(keys, 0.0) for s in sites}
    for (when, site), out in steps.items():
        s, ser, a = sites[site], series[(when, site)], acc[(when, site)]
        n = float(out["active_gpus"])
        load = a["load"]
        gpus, u_max = float(s["gpus"]), float(s["u_max"])
        assert load <= u_max * n * (1 + 1e-6) + 1e-6, ("capacity", when, site)
        assert n <= gpus * (1 + 1e-9), ("gpus", when, site)
        t_dry = float(ser["dry_bulb_c"])
        pue = max(
            1.0, float(s["ppue_a"]) + float(s["ppue_b"]) * t_dry + float(s["ppue_c"]) * t_dry**2
        )
        wue = _wue(s["wue_model"], float(ser["wet_bulb_c"]), float(s["wue_p1"]), float(s["wue_p2"]))
        it_kw = (float(s["idle_w"]) * n + a["dynamic_w"]) / 1000
        # The site-step file must agree with the physics too.
        for column, value in (
            ("load_gpus", load),
            ("it_kw", it_kw),
            ("pue", pue),
            ("cooling_kw", (pue - 1) * it_kw),
            ("wue_l_per_kwh", wue),
        ):
            assert float(out[column]) == pytest.approx(value, rel=REL, abs=1e-9), (column, site)
        it_kwh = it_kw * dt_h
        fac = pue * it_kwh
        queue = (
            float(s["max_wait_ms"]) / 1000 * load**2 / (float(s["ref_gpu_s"]) * gpus * u_max) * dt_s
        )
        t = per_site[site]
        t["it_kwh"] += it_kwh
        t["facility_kwh"] += fac
        t["cooling_kwh"] += (pue - 1) * it_kwh
        t["water_onsite_l"] += wue * it_kwh
        t["water_offsite_l"] += float(ser["ewif_l_per_kwh"]) * fac
        t["energy_cost_aud"] += float(ser["price_aud_per_mwh"]) / 1000 * fac
        t["carbon_kg"] += float(ser["carbon_kg_per_kwh"]) * fac
        t["latency_req_s"] += a["path_req_s"] + queue
        t["requests"] += a["requests"]
        t["interactive_requests"] += a["interactive_requests"]

    def finish(t: dict[str, float]) -> dict[str, float]:
        out = {k: v for k, v in t.items() if k != "interactive_requests"}
        out["water_l"] = t["water_onsite_l"] + t["water_offsite_l"]
        inter = t["interactive_requests"]
        out["ttft_mean_ms"] = 1000 * t["latency_req_s"] / inter if inter >= 1.0 else None
        return out

    total = {k: sum(per_site[s][k] for s in sites) for k in keys}
    objective = (
        total["energy_cost_aud"]
        + float(weights["carbon_aud_per_kg"]) * total["carbon_kg"]
        + float(weights["water_aud_per_l"]) * (total["water_onsite_l"] + total["water_offsite_l"])
        + float(weights["latency_aud_per_req_s"]) * total["latency_req_s"]
    )

    # Demand met, from the coordinator's files (only the steps of this run's horizon).
    horizon = {when for when, _ in steps}
    for r in _rows(scenario_dir / "demand.csv"):
        when = _when(r["time"])
        if when in horizon:
            want = float(r["requests_per_s"])
            got = served[(when, r["region_id"], r["class_id"])]
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6), ("demand", r)
    for r in _rows(scenario_dir / "batch.csv"):
        got = served[(r["region_id"], r["class_id"])]
        assert got == pytest.approx(float(r["requests"]), rel=1e-6, abs=1e-6), ("batch", r)

    return {
        "objective_aud": objective,
        "totals": finish(total),
        "sites": {s: finish(per_site[s]) for s in sites},
    }


def assert_summary_matches(scenario_dir: Path, run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    mine = recompute(scenario_dir, run_dir)
    assert summary["objective_aud"] == pytest.approx(mine["objective_aud"], rel=REL)
    for key, value in mine["totals"].items():
        assert summary["totals"][key] == pytest.approx(value, rel=REL, abs=1e-9), key
    for site, totals in mine["sites"].items():
        for key, value in totals.items():
            got = summary["sites"][site][key]
            if value is None:  # no interactive request served: no mean TTFT (null)
                assert got is None, (site, key, got)
            else:
                assert got == pytest.approx(value, rel=REL, abs=1e-9), (site, key)
    return summary


# ------------------------------------------------------------------------------------------
# Tests


def _write(name: str, scenario_dir: Path, out: Path) -> Path:
    scenario = load_scenario(scenario_dir)
    run = run_solver(name, scenario)
    return write_run(
        out,
        scenario,
        run.evaluation,
        name,
        run.stats,
        shadow_prices=run.shadow_prices,
    )


@pytest.mark.parametrize("solver", ["central", "nearest"])
def test_summary_totals_recomputed_from_csv(tmp_path, tiny_scenario_dir, solver):
    run_dir = _write(solver, tiny_scenario_dir, tmp_path / "run")
    summary = assert_summary_matches(tiny_scenario_dir, run_dir)
    assert summary["solver"] == solver
    assert summary["solver_stats"]["converged"] is True
    if solver == "central":
        prices = _rows(run_dir / "shadow_prices.csv")
        assert len(prices) == 2 * 3 * 4
        assert all(math.isfinite(float(r["aud_per_request"])) for r in prices)


def test_australia_summary_recomputed_from_csv(tmp_path, australia):
    from thermoroute.common.scenarios import embedded_path

    run_dir = _write("central", embedded_path("australia"), tmp_path / "run")
    summary = assert_summary_matches(embedded_path("australia"), run_dir)
    # Brisbane and Hobart serve only batch: they have no mean TTFT (null), not a number.
    assert summary["sites"]["bne"]["ttft_mean_ms"] is None
    assert summary["sites"]["hba"]["ttft_mean_ms"] is None
    assert 150 < summary["totals"]["ttft_mean_ms"] < 400
    # Solver residues are folded away: the interior-point solver leaves ~1e-10 requests/s
    # on most allowed pairs; what is written keeps them only where every site of the row is
    # full (measured: 478 flows on 73 rows, with up to five of the eight sites full in the
    # afternoon of the real 2023-01-18 weather), and the recomputation above shows the files
    # still agree with each other and with the model.
    from thermoroute.common.evaluate import RESIDUE_RPS

    rates = [float(r["requests_per_s"]) for r in _rows(run_dir / "schedule.csv")]
    assert sum(rate < RESIDUE_RPS for rate in rates) <= 550 and len(rates) < 1700


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def earlier_run(tmp_path, tiny_scenario_dir):
    """A complete earlier output, and what is needed to try to overwrite it."""
    scenario = load_scenario(tiny_scenario_dir)
    run = run_solver("nearest", scenario)
    out = write_run(tmp_path / "run", scenario, run.evaluation, "nearest", run.stats)
    return out, scenario, run


@pytest.mark.parametrize(
    ("extra", "error"),
    [({"bad": object()}, TypeError), ({"bad": float("nan")}, ValueError)],
    ids=["not-serialisable", "nan"],
)
def test_failed_write_leaves_earlier_output_intact(earlier_run, extra, error):
    out, scenario, run = earlier_run
    before = _snapshot(out)
    with pytest.raises(error):
        write_run(out, scenario, run.evaluation, "other", SolverStats(), extra_summary=extra)
    assert _snapshot(out) == before


def test_disk_failure_mid_write_leaves_earlier_output_intact(earlier_run, monkeypatch):
    out, scenario, run = earlier_run
    before = _snapshot(out)
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd: int) -> None:
        # The second file fails to reach the disk (e.g. the disk is full).
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        write_run(out, scenario, run.evaluation, "other", SolverStats())
    monkeypatch.undo()
    assert _snapshot(out) == before  # no half-written file, no temporary left behind


@contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """``directory`` unwritable for this process: its permissions for a user, a read-only
    bind mount of it for root (whom permissions do not stop)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(directory), str(directory)], check=True
        )
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_read_only_directory_leaves_earlier_output_intact(earlier_run):
    out, scenario, run = earlier_run
    before = _snapshot(out)
    with _read_only(out), pytest.raises(OSError) as refused:
        write_run(out, scenario, run.evaluation, "other", SolverStats())
    assert refused.value.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    assert _snapshot(out) == before
