"""``serve --state-dir``: the service's state is a data file (common/state_files.py), read back
exactly, and a state file that is not one is refused with one line, nothing in it run."""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from thermoroute.cluster import discover, serve_fleet
from thermoroute.common.state_files import StateFileError, read_state, state_bytes
from thermoroute.coordinator.actor import CHECKPOINT_KIND
from thermoroute.coordinator.methods import METHODS
from thermoroute.options import RunOptions
from thermoroute.service import (
    CHECKPOINT,
    PICKLED_STATE,
    PLANNED,
    STATE_KIND,
    STATE_VERSION,
    PlanningService,
    ServeSettings,
    _State,
)


def _service(directory: Path, method: str = "ipm", **serve: object) -> PlanningService:
    coordinator_dir, site_ids = discover(directory)
    settings = ServeSettings(**{"horizon": 2, "step_seconds": 3600.0, **serve})
    return PlanningService(
        coordinator_dir, site_ids, RunOptions(method=method).method_settings(), settings,
        serve_fleet(directory, site_ids, executor="inline"),
    )  # fmt: skip


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical: the same dtype, shape and bytes."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_same_state(ours: _State, back: _State) -> None:
    assert back.next_cycle == ours.next_cycle
    assert ours.plan is not None and back.plan is not None
    for name in ("cycle", "start", "times", "step_hours", "made_at", "site_ids", "region_ids",
                 "class_ids", "degraded"):  # fmt: skip
        assert getattr(back.plan, name) == getattr(ours.plan, name), name
    assert _same(back.plan.x, ours.plan.x)
    assert ours.backlog is not None and back.backlog is not None
    assert _same(back.backlog, ours.backlog)
    assert (back.windows.method, back.windows.step) == (ours.windows.method, ours.windows.step)
    assert ours.windows.structure is not None and back.windows.structure is not None
    ours_s, back_s = ours.windows.structure.to_arrays(), back.windows.structure.to_arrays()
    assert ours_s.keys() == back_s.keys()
    assert all(_same(back_s[k], ours_s[k]) for k in ours_s)
    assert list(back.history) == list(ours.history)
    assert back.history.maxlen == ours.history.maxlen
    assert back.cycles_by_outcome == ours.cycles_by_outcome


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_a_state_after_two_cycles_reads_back_exactly(
    tiny_scenario_dir: Path, tmp_path: Path, method: str
) -> None:
    service = _service(tiny_scenario_dir, method)
    service.cycle(0)
    service.cycle(1)
    ours = service._state
    # A record of every kind: sites stale and rejoining, an error, a reason.
    ours.history.append(
        replace(ours.history[-1], cycle=2, stale_sites=("a", "b"), rejoining_sites=("c",),
                error="the fleet was lost", converged=False, outcome="kept_previous",
                reason="the cycle failed: the fleet was lost")
    )  # fmt: skip
    ours.cycles_by_outcome["kept_previous"] = 1
    path = tmp_path / CHECKPOINT
    path.write_bytes(ours.file_bytes())
    back = _State.read(path)
    _assert_same_state(ours, back)
    # The method's state, through the method's own arrays.
    assert ours.windows.state is not None
    own = METHODS[method].state_arrays
    ours_m, back_m = own(ours.windows.state), own(back.windows.state)
    assert ours_m.keys() == back_m.keys() and all(_same(back_m[k], ours_m[k]) for k in ours_m)
    # Nothing but numbers and strings in the file: it reads without pickle.
    header, arrays = read_state(path, STATE_KIND, STATE_VERSION)
    assert header["format"] == STATE_KIND and header["version"] == 1
    assert not any(a.dtype.hasobject for a in arrays.values())


def test_a_state_from_before_reasons_reads_without_them(
    tiny_scenario_dir: Path, tmp_path: Path
) -> None:
    service = _service(tiny_scenario_dir)
    service.cycle(0)
    service.settings = replace(service.settings, time_limit_s=1e-9)
    assert service.cycle(1).reason is not None  # kept the plan, and says why
    path = tmp_path / CHECKPOINT
    path.write_bytes(service._state.file_bytes())
    header, arrays = read_state(path, STATE_KIND, STATE_VERSION)
    # The file as a thermoroute before cycles had reasons wrote it.
    del arrays["history.reason"], arrays["history.has_reason"]
    fields = {k: v for k, v in header.items() if k not in ("format", "version")}
    path.write_bytes(state_bytes(STATE_KIND, STATE_VERSION, fields, arrays))
    back = _State.read(path)
    assert list(back.history) == [replace(r, reason=None) for r in service._state.history]


def test_a_fresh_state_reads_back(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    path.write_bytes(_State().file_bytes())
    back = _State.read(path)
    assert (back.next_cycle, back.plan, back.backlog, back.windows.state) == (0, None, None, None)
    assert len(back.history) == 0 and back.cycles_by_outcome == {}


def test_a_restarted_service_goes_on_where_it_was(tiny_scenario_dir: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state" / "service"
    first = _service(tiny_scenario_dir, state_dir=state_dir)
    first.cycle(0)
    first.cycle(1)
    assert (state_dir.stat().st_mode & 0o777) == 0o700
    again = _service(tiny_scenario_dir, state_dir=state_dir)
    _assert_same_state(first._state, again._state)
    assert again.backlog.backlog.tobytes() == first.backlog.backlog.tobytes()
    # The same plan served (the clocks differ: the first never waited for its steps).
    served = [s.plan_at(s.time_of(2)) for s in (first, again)]
    for answer in served:
        assert answer is not None
        del answer["age_s"], answer["current_time"]
    assert served[0] == served[1] and served[0]["plan_cycle"] == 1
    # Its next cycle is the one after the last, warm-started from the carried state.
    assert again._state.next_cycle == 2
    assert again.cycle(2).outcome == PLANNED
    # A state directory removed meanwhile is created again, 0700.
    shutil.rmtree(state_dir)
    again.cycle(3)
    assert (state_dir.stat().st_mode & 0o777) == 0o700 and (state_dir / CHECKPOINT).is_file()


class _Planted:
    """An object whose unpickling runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _refused_at_start(tiny_scenario_dir: Path, state_dir: Path) -> str:
    with pytest.raises(StateFileError) as refused:
        _service(tiny_scenario_dir, state_dir=state_dir)
    line = str(refused.value)
    assert "\n" not in line and str(state_dir / CHECKPOINT) in line
    return line


def test_a_planted_pickle_is_refused_without_running(
    tiny_scenario_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / CHECKPOINT).write_bytes(pickle.dumps(_Planted(marker)))
    line = _refused_at_start(tiny_scenario_dir, state_dir)
    assert "not a thermoroute service state (a pickle, never read)" in line
    assert not marker.exists()
    # The file is live: unpickled, it runs its command.
    pickle.loads((state_dir / CHECKPOINT).read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x00garbage" * 100, "not a thermoroute service state"),
        (state_bytes(STATE_KIND, STATE_VERSION + 1, {}, {}), "version 2"),
        (state_bytes(CHECKPOINT_KIND, 1, {}, {}), "not a thermoroute service state"),
        (state_bytes(STATE_KIND, STATE_VERSION, {"next_cycle": 3, "plan": False}, {}),
         "not a whole thermoroute service state"),
    ],
    ids=["corrupt", "newer", "foreign", "partial"],
)  # fmt: skip
def test_a_state_file_that_is_not_one_is_one_line(
    tiny_scenario_dir: Path, tmp_path: Path, content: bytes, words: str
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / CHECKPOINT).write_bytes(content)
    assert words in _refused_at_start(tiny_scenario_dir, state_dir)


def test_a_truncated_state_file_is_one_line(tiny_scenario_dir: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    _service(tiny_scenario_dir, state_dir=state_dir).cycle(0)
    whole = (state_dir / CHECKPOINT).read_bytes()
    (state_dir / CHECKPOINT).write_bytes(whole[: len(whole) // 2])
    _refused_at_start(tiny_scenario_dir, state_dir)


def test_an_old_pickled_state_is_never_read(
    tiny_scenario_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "MARKER"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / PICKLED_STATE).write_bytes(pickle.dumps(_Planted(marker)))
    service = _service(tiny_scenario_dir, state_dir=state_dir)
    assert service._state.next_cycle == 0 and not marker.exists()
    assert "never read" in caplog.text


def test_a_state_file_it_cannot_write_is_logged_and_the_service_goes_on(
    tiny_scenario_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "state"
    service = _service(tiny_scenario_dir, state_dir=state_dir)
    state_dir.rmdir()
    state_dir.write_text("now a file\n")
    assert service.cycle(0).outcome == PLANNED
    assert "was not written" in caplog.text and str(state_dir) in caplog.text
    assert service.plan_at(service.time_of(0)) is not None
