"""The coordinator never receives a site's private data.

Every message that reaches the coordinator from a site group is intercepted at the fleet
boundary (:data:`thermoroute.coordinator.fleet.Tap`) on the real paths — site agents in process, and
site-group actors on Ray — and checked: at registration only support rows, per iteration
only ``(iteration, served demand)`` (ADMM) or masked sums (interior point), at the end only
the decisions and masked sums. Changing a site's private data in a way that leaves its
served demand unchanged leaves every per-iteration message byte-identical. A local Ray run
is then checked on every channel that reaches the coordinator's side — messages, output
files, metrics and errors — for the sites' hourly physics, totals and cells.
"""

from __future__ import annotations

import dataclasses
import pickle
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thermoroute.common.admm_protocol import AdmmAnswer
from thermoroute.common.report_protocol import GroupReport, SiteDecision
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.launch import solve_distributed
from thermoroute.site_agent.subproblem import InnerSettings

#: What a site's part of the final report may carry: its flows (the decision), which iterate
#: they are, counts of inner-solve trouble — and ``detail`` only when shared.
DECISION_FIELDS = {
    "site_id", "iteration", "best", "x", "inner_approximate", "inner_failed", "inner_fallbacks",
    "detail",
}  # fmt: skip
#: Deterministic inner solves (OSQP's adaptive step size is timed), so reruns are comparable.
INNER = InnerSettings(adaptive_rho=False)
SETTINGS = AdmmSettings(max_iter=60)


class FileTap:
    """Pickles every intercepted message into a directory (works inside a Ray actor)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.count = 0

    def __call__(self, kind: str, group: int, message: Any) -> None:
        self.count += 1
        name = f"{self.count:06d}-{kind}-{group}-{uuid.uuid4().hex[:6]}.pkl"
        (self.directory / name).write_bytes(pickle.dumps(message, protocol=5))

    def messages(self) -> list[tuple[str, int, bytes]]:
        out = []
        for path in sorted(self.directory.glob("*.pkl")):
            _, kind, group, _ = path.stem.split("-")
            out.append((kind, int(group), path.read_bytes()))
        return out


def _fresh(values: np.ndarray) -> np.ndarray:
    """A new array with the same numbers (and the same writeable flag: Ray hands out
    read-only zero-copy arrays, which pickle differently)."""
    out = np.array(values, dtype=np.float64)
    out.flags.writeable = bool(values.flags.writeable)
    return out


def _check_report(kind: str, msg: Any, site_ids: set[str]) -> bool:
    """Check an end-of-run message; False if ``kind`` is not one."""
    if kind == "report_keys":
        assert isinstance(msg, bytes) and len(msg) == 32  # an X25519 public key
    elif kind == "clean_report":
        # ADMM's cleaning of the reported iterate: served, dropped and spare room per row,
        # summed over the group and masked like the report's sums.
        assert isinstance(msg, np.ndarray) and msg.dtype == np.uint64 and msg.shape[0] == 2
    elif kind == "finish_report":
        assert msg is None
    elif kind == "final_report":
        assert isinstance(msg, GroupReport)
        for decision in msg.decisions:
            assert isinstance(decision, SiteDecision)
            assert {f.name for f in dataclasses.fields(decision)} == DECISION_FIELDS
            assert decision.site_id in site_ids and decision.detail is None
            assert isinstance(decision.x, np.ndarray) and decision.x.ndim == 3
        # More than one group: the sums are masked 128-bit words, readable only summed.
        assert msg.masked and msg.sums.dtype == np.uint64 and msg.sums.shape[0] == 2
    else:
        return False
    return True


def _check_messages(messages: list[tuple[str, int, bytes]], site_ids: set[str]) -> None:
    kinds = {k for k, _, _ in messages}
    assert kinds == {
        "register",
        "method_begin",
        "method_scatter",
        "report_keys",
        "clean_report",
        "finish_report",
        "final_report",
    }
    supports: dict[str, int] = {}
    for kind, _, raw in messages:
        msg = pickle.loads(raw)
        if kind == "register":
            assert isinstance(msg, dict) and set(msg) <= site_ids
            for sid, rows in msg.items():
                assert isinstance(rows, np.ndarray) and rows.dtype == np.int64 and rows.ndim == 1
                assert np.all(np.diff(rows) > 0)
                supports[sid] = rows.size
        elif kind == "method_begin":
            assert msg == b""  # ADMM masks nothing: no key, and nothing else
        elif kind == "method_scatter":
            # Exactly AdmmAnswer(iteration, {site: served}) and nothing else: rebuilding the
            # message from the served arrays alone gives the same bytes.
            assert isinstance(msg, AdmmAnswer)
            iteration, served = msg.iteration, msg.served
            assert isinstance(iteration, int) and isinstance(served, dict)
            assert set(served) <= site_ids
            for sid, values in served.items():
                assert isinstance(values, np.ndarray) and values.dtype == np.float64
                assert values.shape == (supports[sid],)
            rebuilt = AdmmAnswer(iteration, {sid: _fresh(v) for sid, v in served.items()})
            assert pickle.dumps(rebuilt, protocol=5) == raw
        else:
            assert _check_report(kind, msg, site_ids), kind


def _variant(scenario: Scenario) -> Scenario:
    """Other private data of site ``per`` (dry coolers) that cannot change its decisions:
    wet-bulb temperatures (a dry plant uses no water at any wet bulb), its name and its
    position; and the same served demand follows."""
    i = scenario.sites.site_id.index("per")
    assert scenario.sites.wue_model[i] == "dry"
    wet = scenario.wet_bulb_c.copy()
    wet[i] = wet[i] - 7.5
    names = list(scenario.sites.name)
    names[i] = "Somewhere else"
    lat = scenario.sites.lat.copy()
    lat[i] += 1.0
    sites = replace(scenario.sites, name=tuple(names), lat=lat)
    return replace(scenario, wet_bulb_c=wet, sites=sites)


def _tapped(scenario: Scenario, root: Path, **solve: Any) -> list[tuple[str, int, bytes]]:
    """Every message the coordinator received in a run of ``scenario`` (``solve`` goes to
    :func:`solve_distributed`)."""
    data = write_scenario(scenario, root / "scenario")
    taps = root / "taps"
    taps.mkdir()
    tap = FileTap(taps)
    run = solve_distributed(data, tap=tap, **solve)
    assert run.iterations > 0
    return tap.messages()


def _run_inline(scenario: Scenario, root: Path) -> list[tuple[str, int, bytes]]:
    return _tapped(scenario, root, executor="inline", settings=SETTINGS, inner=INNER)


def test_inline_messages_hold_only_served_demand(tiny_scenario: Scenario, tmp_path: Path) -> None:
    messages = _run_inline(tiny_scenario, tmp_path)
    _check_messages(messages, set(tiny_scenario.sites.site_id))


def test_private_changes_leave_messages_byte_identical(
    tiny_scenario: Scenario, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _run_inline(tiny_scenario, tmp_path / "a")
    second = _run_inline(_variant(tiny_scenario), tmp_path / "b")
    ending = ("report_keys", "clean_report", "finish_report", "final_report")
    iterative = [(k, g, raw) for k, g, raw in first if k not in ending]
    assert iterative == [(k, g, raw) for k, g, raw in second if k not in ending]
    # The end-of-run messages carry fresh keys and masked sums: different every run.


@pytest.mark.ray
def test_ray_messages_hold_only_served_demand(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    messages = _tapped(tiny_scenario, tmp_path, executor="ray", settings=SETTINGS, inner=INNER)
    _check_messages(messages, set(tiny_scenario.sites.site_id))


# ------------------------------------------------------------------------------------------
# The interior point: every per-site message is masked; only fleet sums can be read.


def _ipm_messages(scenario: Scenario, root: Path, *, secure: bool) -> list[tuple[str, int, bytes]]:
    from thermoroute.coordinator.ipm import IpmSettings

    settings = replace(IpmSettings(), secure_aggregation=secure)
    return _tapped(scenario, root, executor="inline", settings=settings)


def _check_ipm_messages(messages: list[tuple[str, int, bytes]], site_ids: set[str]) -> list:
    """Every message's type and shape; returns the round answers as (group, Aggregate)."""
    from thermoroute.common.ipm_protocol import Aggregate

    kinds = {k for k, _, _ in messages}
    assert kinds == {
        "register", "method_begin", "method_start", "method_round", "report_keys", "final_report"
    }  # fmt: skip
    rounds = []
    for kind, group, raw in messages:
        msg = pickle.loads(raw)
        if _check_report(kind, msg, site_ids):
            continue
        if kind == "method_begin":
            assert isinstance(msg, bytes) and len(msg) == 32  # an X25519 public key
        elif kind in ("method_start", "method_round"):
            assert isinstance(msg, Aggregate)
            assert {f.name for f in dataclasses.fields(msg)} == {
                "iteration", "phase", "values", "masked"
            }  # fmt: skip
            rounds.append((group, msg))
        elif kind == "register":
            assert set(msg) <= site_ids
    return rounds


def test_interior_point_messages_are_masked_and_look_uniform(
    tiny_scenario: Scenario, tmp_path: Path
) -> None:
    import math

    (tmp_path / "masked").mkdir()
    rounds = _check_ipm_messages(
        _ipm_messages(tiny_scenario, tmp_path / "masked", secure=True),
        set(tiny_scenario.sites.site_id),
    )
    answered = [(g, m) for g, m in rounds if m.phase != "finish"]
    assert answered and all(m.masked for _, m in answered)
    for _, m in answered:
        assert m.values.dtype == np.uint64 and m.values.ndim == 2 and m.values.shape[0] == 2
    # Pooled over the run, every bit of every masked 128-bit word is a fair coin, for each
    # group: nothing of a site's values shows through its masks.
    for group in {g for g, _ in answered}:
        words = np.concatenate([m.values for g, m in answered if g == group], axis=1)
        bits = np.unpackbits(words.T.copy().view(np.uint8), axis=1)
        sigma = math.sqrt(0.25 / bits.shape[0])
        assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 5.5 * sigma)
    # The finish round carries nothing back.
    assert all(m.values.size == 0 for _, m in rounds if m.phase == "finish")


def test_masked_sums_equal_the_plain_sums(tiny_scenario: Scenario, tmp_path: Path) -> None:
    """The first round of a run (``open``: the start and the first ``newton`` round) starts
    from the same point whatever the keys: its masked answers sum to exactly the correctly
    rounded sum of the plain ones."""
    import math

    from thermoroute.common.secure_aggregation import unmask_sum

    (tmp_path / "masked").mkdir()
    (tmp_path / "plain").mkdir()
    site_ids = set(tiny_scenario.sites.site_id)
    masked = _check_ipm_messages(
        _ipm_messages(tiny_scenario, tmp_path / "masked", secure=True), site_ids
    )
    plain = _check_ipm_messages(
        _ipm_messages(tiny_scenario, tmp_path / "plain", secure=False), site_ids
    )
    first_masked = [m.values for _, m in masked if m.phase == "open"]
    first_plain = [m.values for _, m in plain if m.phase == "open"]
    assert len(first_masked) == len(first_plain) == len(tiny_scenario.sites)
    assert not any(m.masked for _, m in plain)
    exact = np.array([math.fsum(col) for col in zip(*first_plain, strict=True)])
    got = unmask_sum(first_masked)
    assert np.allclose(got, exact, rtol=1e-12, atol=1e-15)
    assert np.max(np.abs(got - exact) / np.maximum(np.abs(exact), 1e-3)) <= 1e-12


def test_plant_limits_leave_their_sites_only_as_a_masked_count(
    tiny_scenario: Scenario, tmp_path: Path
) -> None:
    """Model v1.1: a site's derating, grid limit and water allowance shape its masked sums
    and nothing else; the coordinator learns only how many sites' limits span steps (the
    first field of the opening answer, a fleet sum) and whether the run uses the pattern
    across steps."""
    from thermoroute.common.secure_aggregation import unmask_sum

    limits = {"grid_limit_kw": 4321.0625, "water_cap_l_per_day": 98765.4375}
    plant = replace(
        tiny_scenario,
        sites=replace(
            tiny_scenario.sites,
            cooling_design_c=np.array([30.0, 24.5, np.nan]),
            cooling_derate_per_c=np.array([0.015, 0.02, np.nan]),
            cooling_min_fraction=np.array([0.5, 0.4, np.nan]),
            grid_limit_kw=np.array([limits["grid_limit_kw"], np.nan, np.nan]),
            water_cap_l_per_day=np.array([np.nan, limits["water_cap_l_per_day"], np.nan]),
        ),
    )
    site_ids = set(plant.sites.site_id)
    for secure in (True, False):
        root = tmp_path / ("masked" if secure else "plain")
        root.mkdir()
        messages = _ipm_messages(plant, root, secure=secure)
        rounds = _check_ipm_messages(messages, site_ids)
        starts = [m for _, m in rounds if m.phase == "open"]
        assert len(starts) == len(plant.sites)
        if secure:
            assert all(m.masked for _, m in rounds if m.phase != "finish")
            assert unmask_sum([m.values for m in starts])[0] == 1.0
        else:
            # In the clear each group (one site here) says whether its limits span steps.
            assert sorted(float(m.values[0]) for m in starts) == [0.0, 0.0, 1.0]
        # No limit's value appears in any message, as a float or as text.
        for kind, _, raw in messages:
            for value in limits.values():
                assert np.float64(value).tobytes() not in raw, kind
                assert repr(value).encode() not in raw, kind


@pytest.mark.ray
def test_ray_interior_point_messages_are_masked(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    from thermoroute.coordinator.ipm import IpmSettings

    messages = _tapped(tiny_scenario, tmp_path, executor="ray", settings=IpmSettings())
    rounds = _check_ipm_messages(messages, set(tiny_scenario.sites.site_id))
    assert all(m.masked for _, m in rounds if m.phase != "finish")


# ------------------------------------------------------------------------------------------
# A local Ray run, every channel: messages, the coordinator's files, metrics, errors.


def _private_numbers(scenario: Scenario, x: np.ndarray, n: np.ndarray) -> dict[str, set[str]]:
    """What must not appear on the coordinator's side, as text at 7 significant digits: the
    sites' hourly physics and totals for this schedule, and their private cells."""
    from thermoroute.common.evaluate import evaluate

    ev = evaluate(scenario, x, n)
    text = {
        "hourly physics": {
            f"{v:.7g}"
            for arr in (ev.steps.pue, ev.steps.it_kw, ev.steps.cooling_kw, ev.steps.active_gpus)
            for v in np.ravel(arr)
            if abs(v) > 1e-3 and v != 1.0
        },
        "site totals": {
            f"{v:.7g}"
            for i in range(len(scenario.sites))
            for k, v in ev.site_totals(i).items()
            if abs(v) > 1e-3
        },
        "cells": {
            f"{v:.7g}"
            for arr in (scenario.dry_bulb_c, scenario.price_aud_per_mwh)
            for v in np.ravel(arr)
        },
    }
    return text


def _leaks(text: str, private: dict[str, set[str]]) -> dict[str, list[str]]:
    import re

    # Every number in the text, re-printed at 7 significant digits.
    numbers = {f"{float(m):.7g}" for m in re.findall(r"-?\d+\.\d+(?:[eE][-+]?\d+)?", text)}
    return {
        kind: sorted(values & numbers)[:5] for kind, values in private.items() if values & numbers
    }


@pytest.mark.ray
def test_ray_run_keeps_each_sites_detail_on_the_site(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    import threading

    # Cells with digits of their own, so that finding one anywhere is no coincidence.
    rng = np.random.default_rng(7)
    tiny_scenario = replace(
        tiny_scenario,
        dry_bulb_c=tiny_scenario.dry_bulb_c
        + rng.uniform(0.01, 0.99, tiny_scenario.dry_bulb_c.shape),
        price_aud_per_mwh=tiny_scenario.price_aud_per_mwh
        + rng.uniform(0.01, 0.99, tiny_scenario.price_aud_per_mwh.shape),
    )
    import urllib.request

    from tests.test_prometheus import free_port
    from thermoroute.coordinator.ipm import IpmSettings
    from thermoroute.coordinator.metrics import CoordinatorMetrics, MetricsEndpoint

    port = free_port()
    scraped: list[str] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    scraped.append(r.read().decode())
            except OSError:
                pass
            done.wait(0.2)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    out = tmp_path / "out"
    try:
        data = write_scenario(tiny_scenario, tmp_path / "scenario")
        (tmp_path / "taps").mkdir()
        tap = FileTap(tmp_path / "taps")
        run = solve_distributed(
            data, executor="ray", settings=IpmSettings(), tap=tap, site_output=out / "sites",
            observers=[CoordinatorMetrics(endpoint=MetricsEndpoint(port=port))],
            metrics_linger_s=10.0,
        )  # fmt: skip
    finally:
        done.set()
        scraper.join()
    run.outputs.write(out, solver="ipm")
    site_ids = set(tiny_scenario.sites.site_id)
    # Messages: structure (masked sums, decisions without detail).
    for kind, _, raw in tap.messages():
        msg = pickle.loads(raw)
        if kind in ("report_keys", "final_report"):
            _check_report(kind, msg, site_ids)
    # The sites' own directories hold their detail, and it is what the model charges.
    from thermoroute.common.evaluate import evaluate

    x = run.outputs.schedule.x
    n = np.zeros((len(site_ids), tiny_scenario.steps))
    for i, sid in enumerate(tiny_scenario.sites.site_id):
        own = out / "sites" / sid
        rows = (own / "site_steps.csv").read_text().splitlines()[1:]
        n[i] = [float(r.split(",")[2]) for r in rows]
    ev = evaluate(tiny_scenario, x, n)
    import json

    for i, sid in enumerate(tiny_scenario.sites.site_id):
        doc = json.loads((out / "sites" / sid / "summary.json").read_text())
        assert doc["site_id"] == sid
        assert doc["totals"]["energy_cost_aud"] == pytest.approx(
            ev.site_totals(i)["energy_cost_aud"], rel=1e-9
        )
        pue = [float(r.split(",")[5]) for r in (out / "sites" / sid / "site_steps.csv")
               .read_text().splitlines()[1:]]  # fmt: skip
        np.testing.assert_allclose(pue, ev.steps.pue[i], rtol=1e-12)
    # The fleet totals are right (unmasked sums of the sites' totals).
    assert run.objective_aud == pytest.approx(ev.objective_aud, rel=1e-9)
    # The coordinator's side: files, metrics, messages hold none of the private numbers.
    private = _private_numbers(tiny_scenario, x, n)
    assert all(private.values())
    summary = json.loads((out / "summary.json").read_text())
    assert "sites" not in summary and summary["site_details"] == "private"
    assert not (out / "site_steps.csv").exists()
    for name in ("summary.json", "schedule.csv", "convergence.csv", "shadow_prices.csv"):
        assert _leaks((out / name).read_text(), private) == {}, name
    assert scraped and "thermoroute_objective_aud" in scraped[-1]
    assert _leaks(scraped[-1], private) == {}
    for kind, _, raw in tap.messages():
        msg = pickle.loads(raw)
        floats = [
            f"{v:.7g}"
            for value in _arrays_of(msg)
            if value.dtype == np.float64
            for v in value.ravel()
        ]
        found = {k: sorted(set(floats) & v)[:5] for k, v in private.items() if set(floats) & v}
        # A decision's flows are the schedule, which is public; nothing else may match.
        if kind != "final_report":
            assert found == {}, kind
        else:
            assert "site totals" not in found and "hourly physics" not in found, found


def _arrays_of(message: Any) -> list[np.ndarray]:
    """Every float array inside a message (dataclasses, dicts, lists), the flows excepted
    for decisions (they are the published schedule)."""
    if isinstance(message, np.ndarray):
        return [message]
    if isinstance(message, SiteDecision):
        return []
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return [
            a for f in dataclasses.fields(message) for a in _arrays_of(getattr(message, f.name))
        ]
    if isinstance(message, dict):
        return [a for v in message.values() for a in _arrays_of(v)]
    if isinstance(message, list | tuple):
        return [a for v in message for a in _arrays_of(v)]
    return []


@pytest.mark.ray
def test_shared_detail_is_the_operators_choice_and_named(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    import json

    from thermoroute.coordinator.ipm import IpmSettings

    data = write_scenario(tiny_scenario, tmp_path / "scenario")
    run = solve_distributed(
        data, executor="ray", settings=IpmSettings(), share_site_details=True,
        site_output=tmp_path / "out" / "sites",
    )  # fmt: skip
    out = run.outputs.write(tmp_path / "out", solver="ipm")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["site_details"] == "shared" and set(summary["sites"]) == set(
        tiny_scenario.sites.site_id
    )
    assert (out / "site_steps.csv").is_file()


@pytest.mark.ray
def test_a_sites_bad_data_reach_the_driver_as_a_count_only(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    from thermoroute.common.errors import SiteDataInvalid
    from thermoroute.common.scenario_split import split_scenario

    data = write_scenario(tiny_scenario, tmp_path / "scenario")
    split = tmp_path / "split"
    split_scenario(data, split)
    series = split / "sites" / "mel" / "site_series.csv"
    secret = "123.456789"
    lines = series.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("price_aud_per_mwh")] = f"{secret}x"
    lines[2] = ",".join(cells)
    series.write_text("\n".join(lines) + "\n")
    with pytest.raises(SiteDataInvalid) as info:
        solve_distributed(split, executor="ray")
    message = str(info.value)
    assert message == "site mel: its data failed validation (1 problem(s), see the site's log)"
    assert secret not in message and "price" not in message
    # The detail is in the site's own log (its Ray worker's, on its node).
    import time

    logs = Path(ray_cluster._private.worker._global_node.get_logs_dir_path())
    deadline = time.monotonic() + 10.0
    while not any(secret in p.read_text(errors="replace") for p in logs.glob("worker-*.err")):
        assert time.monotonic() < deadline, "the site did not log its validation problems"
        time.sleep(0.2)


def test_site_metrics_stay_on_the_node_and_hold_costs_only_on_opt_in(
    tiny_scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import urllib.request

    from tests.test_prometheus import free_port
    from thermoroute.site_agent.metrics import ADDR_ENV, ECONOMICS_ENV, PORT_ENV

    data = write_scenario(tiny_scenario, tmp_path / "scenario")

    def scrape(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    def samples(text: str, family: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(family)]

    # By default the node serves nothing at all.
    monkeypatch.delenv(PORT_ENV, raising=False)
    monkeypatch.delenv(ADDR_ENV, raising=False)
    port = free_port()
    solve_distributed(data, executor="inline", settings=SETTINGS, inner=INNER)
    with pytest.raises(OSError):
        scrape(port)
    # The operator turns metrics on: solver figures on loopback, no costs.
    monkeypatch.setenv(PORT_ENV, str(port))
    monkeypatch.delenv(ECONOMICS_ENV, raising=False)
    solve_distributed(data, executor="inline", settings=SETTINGS, inner=INNER)
    text = scrape(port)
    assert samples(text, "thermoroute_agent_solve_seconds_count")
    assert samples(text, "thermoroute_agent_objective") == []
    outward = socket.gethostbyname(socket.gethostname())
    if not outward.startswith("127."):
        with pytest.raises(OSError), socket.create_connection((outward, port), timeout=2):
            pass
    # And, explicitly, the costs.
    other = free_port()
    monkeypatch.setenv(PORT_ENV, str(other))
    monkeypatch.setenv(ECONOMICS_ENV, "1")
    solve_distributed(data, executor="inline", settings=SETTINGS, inner=INNER)
    assert samples(scrape(other), "thermoroute_agent_objective_part_aud")
