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

from common.admm_protocol import AdmmAnswer
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
    messages = _tapped(tiny_scenario, tmp_path, executor="ray", settings=SETTINGS, inner=INNER)
    _check_messages(messages, set(tiny_scenario.sites.site_id))


# ------------------------------------------------------------------------------------------
# The interior point: every per-site message is masked; only fleet sums can be read.


def _ipm_messages(scenario: Scenario, root: Path, *, secure: bool) -> list[tuple[str, int, bytes]]:
    from coordinator.ipm import IpmSettings

    settings = replace(IpmSettings(), secure_aggregation=secure)
    return _tapped(scenario, root, executor="inline", settings=settings)


def _check_ipm_messages(messages: list[tuple[str, int, bytes]], site_ids: set[str]) -> list:
    """Every message's type and shape; returns the round answers as (group, Aggregate)."""
    from common.ipm_protocol import Aggregate

    kinds = {k for k, _, _ in messages}
    assert kinds == {"register", "method_begin", "method_start", "method_round", "final_report"}
    rounds = []
    for kind, group, raw in messages:
        msg = pickle.loads(raw)
        if kind == "method_begin":
            assert isinstance(msg, bytes) and len(msg) == 32  # an X25519 public key
        elif kind == "method_start":
            assert msg is None
        elif kind == "method_round":
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
    """The first round of a run starts from the same point whatever the keys: its masked
    answers sum to exactly the correctly rounded sum of the plain ones."""
    import math

    from common.secure_aggregation import unmask_sum

    (tmp_path / "masked").mkdir()
    (tmp_path / "plain").mkdir()
    site_ids = set(tiny_scenario.sites.site_id)
    masked = _check_ipm_messages(
        _ipm_messages(tiny_scenario, tmp_path / "masked", secure=True), site_ids
    )
    plain = _check_ipm_messages(
        _ipm_messages(tiny_scenario, tmp_path / "plain", secure=False), site_ids
    )
    first_masked = [m.values for _, m in masked if m.phase == "newton" and m.iteration == 0]
    first_plain = [m.values for _, m in plain if m.phase == "newton" and m.iteration == 0]
    assert len(first_masked) == len(first_plain) == len(tiny_scenario.sites)
    assert not any(m.masked for _, m in plain)
    exact = np.array([math.fsum(col) for col in zip(*first_plain, strict=True)])
    got = unmask_sum(first_masked)
    assert np.allclose(got, exact, rtol=1e-12, atol=1e-15)
    assert np.max(np.abs(got - exact) / np.maximum(np.abs(exact), 1e-3)) <= 1e-12


@pytest.mark.ray
def test_ray_interior_point_messages_are_masked(
    ray_cluster: Any, tiny_scenario: Scenario, tmp_path: Path
) -> None:
    from coordinator.ipm import IpmSettings

    messages = _tapped(tiny_scenario, tmp_path, executor="ray", settings=IpmSettings())
    rounds = _check_ipm_messages(messages, set(tiny_scenario.sites.site_id))
    assert all(m.masked for _, m in rounds if m.phase != "finish")
