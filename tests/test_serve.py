"""``thermoroute serve`` on a real local Ray cluster, watched through its HTTP API.

One service over a copy of ``australia`` whose Perth site holds only its first 30 hours of
data: while it runs the test appends Perth's next hours at an extreme energy price (the plan
must move Perth's load away from those hours), kills one site agent's process (the service
must keep publishing and the site rejoin), and writes a bad value into Hobart's new data
(refused at Hobart, flagged, the plan still valid). Every plan fetched must meet the
demand file at every step of its horizon, and /status and /metrics must count the same
cycles.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from thermoroute.common.scenario_writing import copy_scenario_dir
from thermoroute.common.scenarios import embedded_path

# The service starts its own Ray in its own process, not the session's cluster: the test
# kills one of its agents' processes and stops it with Ctrl-C.
pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: The checkout under test, for the commands' processes: the service's child in its private
#: network imports nothing from the working directory, so without it the installed
#: thermoroute would serve while Ray's workers load this checkout's modules.
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
PER_HOURS = 30  # Perth's data at the start
CYCLES = 20
STEP_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5.0) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _json(port: int, path: str) -> dict:
    code, body = _get(port, path)
    assert code == 200, (path, code, body[:300])
    return json.loads(body)


def _site_series(directory: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (directory / "site_series.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(directory: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    """Rewrite the file whole (a pipeline's atomic replace: a reader never sees half)."""
    target = directory / "site_series.csv"
    tmp = directory / ".site_series.csv.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, target)


def _demand(directory: Path) -> dict[tuple[str, str, str], float]:
    with (directory / "demand.csv").open(newline="") as handle:
        return {
            (r["time"], r["region_id"], r["class_id"]): float(r["requests_per_s"])
            for r in csv.DictReader(handle)
        }


def _descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = defaultdict(set)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children[int(fields[1])].add(int(entry.name))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.add(child)
            todo.append(child)
    return out


def _agent_pids(serve_pid: int) -> list[int]:
    pids = []
    for pid in _descendants(serve_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::SiteGroup"):
            pids.append(pid)
    return sorted(pids)


def _check_plan_meets_demand(plan: dict, demand: dict) -> None:
    for route in plan["routes"]:
        key = (plan["time"], route["region_id"], route["class_id"])
        if key not in demand:  # a deferrable class: its volume is the horizon's
            continue
        served = sum(s["requests_per_s"] for s in route["sites"])
        assert served == pytest.approx(demand[key], rel=2e-3), key
        assert sum(s["share"] for s in route["sites"]) == pytest.approx(1.0, abs=1e-9)


def _site_rate(plan: dict, site_id: str) -> float:
    return sum(
        share["requests_per_s"]
        for route in plan["routes"]
        for share in route["sites"]
        if share["site_id"] == site_id
    )


def test_serve_replans_follows_data_and_survives_faults(tmp_path: Path) -> None:
    data = copy_scenario_dir(embedded_path("australia"), tmp_path / "fleet")
    header, rows = _site_series(data)
    start = tomllib.loads((data / "scenario.toml").read_text())["scenario"]["start"]
    everything = sorted({r["time"] for r in rows})
    times = everything[everything.index(start) :]  # the clock's hours from its start
    kept = [r for r in rows if r["site_id"] != "per" or r["time"] < times[PER_HOURS]]
    assert all(r["time"][:4] == "2023" for r in rows)  # one offset: text order is time order
    # Perth's next hours as its pipeline will append them: at the NEM's price cap.
    later_per = [
        {**r, "price_aud_per_mwh": "19000"}
        for r in rows
        if r["site_id"] == "per" and times[PER_HOURS] <= r["time"] < times[PER_HOURS + 40]
    ]
    _write_rows(data, header, kept)
    demand = _demand(data)
    port = _free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "thermoroute.cli", "serve", str(data), "--port", str(port),
         "--step-seconds", str(STEP_SECONDS), "--cycles", str(CYCLES)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    plans: dict[int, dict] = {}
    events: dict[str, object] = {}
    last: dict = {}
    try:
        deadline = time.monotonic() + 180.0
        while _get_quiet(port, "/healthz") != 200:
            assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
            assert time.monotonic() < deadline, "the service never answered"
            time.sleep(0.5)
        while serve.poll() is None:
            status = _json_quiet(port, "/status")
            plan = _json_quiet(port, "/plan")
            if status is None or plan is None:
                continue
            last, done = status, status["cycles"]
            if plan["plan_cycle"] not in plans:
                plans[plan["plan_cycle"]] = plan
                _check_plan_meets_demand(plan, demand)
                horizon = times[plan["plan_cycle"] : plan["plan_cycle"] + 24]
                # Every step of the horizon for two plans; Perth's hours for the late ones.
                checks = horizon if len(plans) in (3, 9) else []
                if plan["plan_cycle"] >= 11:  # its horizon holds both hours below
                    checks = [*checks, times[17], times[34]]
                for step_time in checks:
                    later = _json_quiet(port, f"/plan?time={step_time.replace('+', '%2B')}")
                    if later is not None and later["plan_cycle"] == plan["plan_cycle"]:
                        _check_plan_meets_demand(later, demand)
                        if step_time in (times[17], times[34]):
                            events[f"per at {step_time}"] = _site_rate(later, "per")
            if "killed" in events and "corrupted" not in events and plan["degraded"]:
                events["degraded while rejoining"] = plan["plan_cycle"]
            for cycle in status["last_cycles"]:
                if cycle["rejoining_sites"]:
                    events["rejoined"] = cycle["cycle"]
            if done >= 2 and "appended" not in events:
                _write_rows(data, header, [*kept, *later_per])
                events["appended"] = done
            if done >= 4 and "killed" not in events:
                pids = _agent_pids(serve.pid)
                assert len(pids) == 8, pids
                os.kill(pids[0], signal.SIGKILL)
                events["killed"] = done
            if done >= 9 and "corrupted" not in events and "rejoined" in events:
                # Hobart's pipeline writes a bad value into its next hours.
                _, now_rows = _site_series(data)
                bad = [
                    {**r, "dry_bulb_c": "hot"} if r["site_id"] == "hba" and r["time"] == times[40]
                    else r
                    for r in now_rows
                ]  # fmt: skip
                _write_rows(data, header, bad)
                events["corrupted"] = done
            if "corrupted" in events and {"hba"} == {
                s["site_id"] for s in status["sites"] if s["state"] == "stale forecast"
            }:
                events["flagged"] = done
            if done >= 6 and "status screen" not in events:
                screen = subprocess.run(
                    [sys.executable, "-m", "thermoroute.cli", "status", "--address",
                     f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, env=ENV,
                )  # fmt: skip
                assert screen.returncode == 0, screen.stderr
                assert "agents" in screen.stdout and "last cycles" in screen.stdout
                assert all(site in screen.stdout for site in ("syd", "per", "hba"))
                events["status screen"] = done
            if done >= 11 and "counted" not in events:
                metrics = _metrics_quiet(port)
                again = _json_quiet(port, "/status")
                if metrics is not None and again is not None and again["cycles"] == done:
                    assert metrics == done
                    events["counted"] = done
            time.sleep(0.3)
        assert serve.wait(timeout=60) == 0, serve.stderr.read() if serve.stderr else ""
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            serve.wait(timeout=60)
    # Ten cycles and more; the plan advanced through them, faults included. (On this
    # 2-core machine a warm cycle on Ray takes 1.2-1.9 s against a 1.6 s budget, and after
    # the kill some cycles keep the previous plan, as designed: BENCHMARKS.md.)
    history = [(c["cycle"], c["outcome"], c["iterations"], round(c["duration_s"], 2),
                c["rejoining_sites"], c["error"]) for c in last["last_cycles"]]  # fmt: skip
    assert last["cycles"] >= 10, (sorted(plans), events, history)
    assert len(plans) >= 6 and max(plans) >= CYCLES - 6, (sorted(plans), events, history)
    # The plan follows Perth's appended hours: it serves at 17:00 on the first day, at the
    # normal price, and nothing at 10:00 on the second, at the price cap (a time it serves
    # at the normal price: 10:00 on the first day).
    assert events[f"per at {times[17]}"] > 1.0, events
    assert events[f"per at {times[34]}"] < 1e-3, events
    # The killed agent was restarted and its sites rejoined; meanwhile the API kept serving
    # a plan, marked degraded; all sites but Hobart are up at the end.
    assert "rejoined" in events and "degraded while rejoining" in events, events
    states = {s["site_id"]: s["state"] for s in last["sites"]}
    assert states.pop("hba") == "stale forecast", states
    assert set(states.values()) == {"up"}, states
    # Hobart's bad hour was refused at Hobart and flagged; the plans stayed valid (checked
    # against the demand above) and degraded.
    assert {"flagged", "counted", "status screen"} <= set(events), events
    assert any(c["stale_sites"] == ["hba"] for c in last["last_cycles"])


def _get_quiet(port: int, path: str) -> int | None:
    try:
        return _get(port, path)[0]
    except OSError:
        return None


def _json_quiet(port: int, path: str) -> dict | None:
    try:
        code, body = _get(port, path)
    except OSError:
        return None
    return json.loads(body) if code == 200 else None


def _metrics_quiet(port: int) -> int | None:
    try:
        code, body = _get(port, "/metrics")
    except OSError:
        return None
    if code != 200:
        return None
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("thermoroute_service_cycles_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
