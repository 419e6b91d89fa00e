"""The coordinator never receives a site's private data.

Every message that reaches the coordinator from a site group is intercepted at the fleet
boundary (:data:`coordinator.fleet.Tap`) on the real paths — site agents in process, and
site-group actors on Ray — and checked: at registration only support rows, per iteration
only ``(iteration, served demand)``, at the end only results. Changing a site's private
data in a way that leaves its served demand unchanged leaves every message byte-identical.
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

from common.scenario import Scenario
from common.scenario_io import write_scenario
from coordinator.admm import AdmmSettings
from site_agent.agent import SiteReport
from site_agent.subproblem import InnerSettings
from thermoroute.launch import solve_distributed

#: What a final report may carry: the site's schedule and its results, nothing of its data.
REPORT_FIELDS = {
    "site_id", "iteration", "best", "times", "x", "n", "active_gpus", "load_gpus", "it_kw",
    "pue", "cooling_kw", "wue", "totals", "objective_history", "history_iterations",
    "inner_approximate", "inner_failed", "inner_fallbacks",
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


def _check_messages(messages: list[tuple[str, int, bytes]], site_ids: set[str]) -> None:
    kinds = {k for k, _, _ in messages}
    assert kinds == {"register", "solve", "final_report"}
    supports: dict[str, int] = {}
    for kind, _, raw in messages:
        msg = pickle.loads(raw)
        if kind == "register":
            assert isinstance(msg, dict) and set(msg) <= site_ids
            for sid, rows in msg.items():
                assert isinstance(rows, np.ndarray) and rows.dtype == np.int64 and rows.ndim == 1
                assert np.all(np.diff(rows) > 0)
                supports[sid] = rows.size
        elif kind == "solve":
            # Exactly (iteration, {site: served}) and nothing else: rebuilding the message
            # from the served arrays alone gives the same bytes.
            iteration, served = msg
            assert isinstance(iteration, int) and isinstance(served, dict)
            assert set(served) <= site_ids
            for sid, values in served.items():
                assert isinstance(values, np.ndarray) and values.dtype == np.float64
                assert values.shape == (supports[sid],)
            rebuilt = (iteration, {sid: _fresh(v) for sid, v in served.items()})
            assert pickle.dumps(rebuilt, protocol=5) == raw
        else:
            assert isinstance(msg, list)
            for report in msg:
                assert isinstance(report, SiteReport)
                assert {f.name for f in dataclasses.fields(report)} == REPORT_FIELDS
                assert report.site_id in site_ids


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


def _run_inline(scenario: Scenario, root: Path) -> list[tuple[str, int, bytes]]:
    data = write_scenario(scenario, root / "scenario")
    taps = root / "taps"
    taps.mkdir()
    tap = FileTap(taps)
    solve_distributed(data, executor="inline", settings=SETTINGS, inner=INNER, tap=tap)
    return tap.messages()


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
    iterative = [(k, g, raw) for k, g, raw in first if k != "final_report"]
    assert iterative == [(k, g, raw) for k, g, raw in second if k != "final_report"]
    # The final reports are the sites' results, sent once; they may legitimately differ
    # (a report carries no temperatures, but its totals are computed from them).


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    import sys

    from ray import cloudpickle

    # The tap is defined in this test module, which Ray's workers cannot import: ship it.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_messages_hold_only_served_demand(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    data = write_scenario(tiny_scenario, tmp_path / "scenario")
    taps = tmp_path / "taps"
    taps.mkdir()
    tap = FileTap(taps)
    run = solve_distributed(data, executor="ray", settings=SETTINGS, inner=INNER, tap=tap)
    assert run.iterations > 0
    _check_messages(tap.messages(), set(tiny_scenario.sites.site_id))
