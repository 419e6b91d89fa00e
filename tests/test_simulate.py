"""``thermoroute simulate`` compares equal work (issue 18, item 5).

By default the simulation drains (coordinator/receding.py): after ``--days`` no deferrable
volume arrives and the horizons shorten to the last full one's end, so the temperature-aware
plan and the baseline end having served the same requests, and only then is the difference
of their totals shown. ``--no-drain`` stops with backlogs waiting: the summary says the work
is unequal and compares per served request only. Real solves on the embedded ``australia``
scenario, site agents in process (``--executor inline``), through the command line.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thermoroute.coordinator.receding import BatchBacklog, InteractiveLedger

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]
#: Served requests of the two plans agree to this (thermoroute.simulation.EQUAL_WORK_RTOL).
EQUAL = 1e-6
#: The ledger's sums: arrived = served + left to round-off.
BOOKS = 1e-12


def _simulate(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``simulate australia --executor inline --out sim`` with ``args``; the run and its
    ``simulation.json``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run(
        [*CLI, "simulate", "australia", "--executor", "inline", "--out", "sim", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done, json.loads((tmp_path / "sim" / "simulation.json").read_text())


def _books_balance(work: dict[str, float]) -> None:
    for kind in ("interactive", "deferrable"):
        arrived, served, left = (work[f"{kind}_{part}"] for part in ("arrived", "served", "left"))
        assert arrived > 0 and served >= 0 and left >= 0, work
        assert arrived == pytest.approx(served + left, rel=BOOKS), (kind, work)
    assert work["arrived"] == pytest.approx(work["served"] + work["left"], rel=BOOKS)


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The closing table's cells by quantity (rich draws ``│`` between them)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 4:
            rows[cells[0]] = cells[1:]
    return rows


def _drained_run_compares_equal_work(tmp_path: Path, *args: str) -> None:
    done, doc = _simulate(tmp_path, *args)
    work, base = doc["work"], doc["baseline_work"]
    for plan in (work, base):
        _books_balance(plan)
        # Drained: every deferrable request that arrived was served (to the solver's rows).
        assert plan["deferrable_left"] <= EQUAL * plan["deferrable_arrived"], plan
        # Both plans saw the same requests arrive: the same demand, the same daily volume.
        assert plan["interactive_arrived"] == pytest.approx(work["interactive_arrived"], rel=BOOKS)
        assert plan["deferrable_arrived"] == work["deferrable_arrived"]
    assert work["served"] == pytest.approx(base["served"], rel=EQUAL)
    assert doc["drain"] and doc["drained"] and doc["equal_work"]
    difference = doc["totals"]["objective_aud"] - doc["baseline_totals"]["objective_aud"]
    assert doc["objective_difference_aud"] == pytest.approx(difference, rel=1e-12)
    assert doc["aud_per_1000_served"] == pytest.approx(
        1000 * doc["totals"]["objective_aud"] / work["served"], rel=1e-12
    )
    # The drain: steps after the arrivals, at most horizon − 1 of them, marked in the log.
    horizon = doc["settings"]["horizon"]
    with (tmp_path / "sim" / "simulation.csv").open(newline="") as handle:
        steps = list(csv.DictReader(handle))
    drains = [row["drain"] == "True" for row in steps]
    assert drains == [False] * doc["arrival_steps"] + [True] * doc["drain_steps"]
    assert 1 <= doc["drain_steps"] <= horizon - 1
    # The summary shows the same figures and calls the difference what it is.
    rows = _table_rows(done.stdout)
    for kind in ("interactive", "deferrable"):
        for part in ("arrived", "served", "left"):
            shown = rows[f"{kind} requests {part}"]
            assert shown[0] == f"{work[f'{kind}_{part}']:,.0f}", (kind, part, shown)
            assert shown[1] == f"{base[f'{kind}_{part}']:,.0f}", (kind, part, shown)
    assert rows["objective_aud"][2].endswith("%")
    assert "objective AUD per 1,000 served" in rows
    assert "equal work: both plans served the same requests" in done.stdout
    assert "draining)" in done.stdout and "not comparable" not in done.stdout


@pytest.mark.slow
def test_a_day_drains_until_both_plans_served_the_same_requests(tmp_path: Path) -> None:
    """``simulate --days 1``: 24 steps with arrivals, then draining to the day's last
    horizon; both plans serve every request that arrived, and the saving is shown."""
    _drained_run_compares_equal_work(tmp_path, "--days", "1")


def test_a_quarter_day_drains_until_both_plans_served_the_same_requests(tmp_path: Path) -> None:
    """The same, fast: six hours over six-hour horizons (a day's volume arrives at once)."""
    _drained_run_compares_equal_work(tmp_path, "--days", "0.25", "--horizon", "6")


def test_without_the_drain_unequal_work_is_no_saving(tmp_path: Path) -> None:
    done, doc = _simulate(tmp_path, "--days", "0.25", "--horizon", "6", "--no-drain")
    work, base = doc["work"], doc["baseline_work"]
    _books_balance(work)
    _books_balance(base)
    assert doc["drain_steps"] == 0 and not doc["drained"]
    # Six hours cannot serve a day's volume: both plans leave some of it, unequally.
    assert work["deferrable_left"] > 0 and base["deferrable_left"] > 0
    assert work["served"] != pytest.approx(base["served"], rel=EQUAL)
    assert not doc["equal_work"] and doc["objective_difference_aud"] is None
    rows = _table_rows(done.stdout)
    for key in ("objective_aud", "energy_cost_aud", "cooling_kwh"):
        assert rows[key][2] == "not comparable", rows[key]
    assert rows["objective AUD per 1,000 served"][2].endswith("%")
    assert rows["deferrable requests left"][0] == f"{work['deferrable_left']:,.0f}"
    assert "unequal work: not comparable" in done.stdout
    assert "equal work: both" not in done.stdout


def test_the_backlog_counts_what_arrived_was_served_and_is_left() -> None:
    backlog = BatchBacklog(np.array([[0.0, 100.0], [0.0, 50.0]]), steps_per_day=2)
    backlog.arrive(0)
    backlog.serve(np.array([[0.0, 30.0], [0.0, 80.0]]))  # 30 beyond region 2's backlog
    backlog.arrive(1)  # not the start of a day: nothing arrives
    backlog.arrive(2)
    assert backlog.arrived == 300.0
    assert backlog.served == 80.0  # the excess is no work
    assert backlog.backlog.tolist() == [[0.0, 170.0], [0.0, 50.0]]
    assert backlog.arrived == backlog.served + backlog.backlog.sum()


def test_interactive_requests_not_served_in_their_hour_are_left() -> None:
    ledger = InteractiveLedger()
    ledger.record(np.array([[10.0, 20.0]]), np.array([[12.0, 15.0]]))
    assert (ledger.arrived, ledger.served, ledger.left) == (30.0, 25.0, 5.0)
