"""State files hold data, never code: the coordinator's checkpoint (issue 21, item 3)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.state_files import StateFileError, read_state, state_bytes
from thermoroute.coordinator.actor import (
    CHECKPOINT_FILE,
    CHECKPOINT_KIND,
    CHECKPOINT_VERSION,
    CheckpointMissing,
    Coordinator,
)
from thermoroute.coordinator.admm import AdmmMethod, AdmmSettings, AdmmState

KIND = "thermoroute test state"


class _Planted:
    """Unpickling this runs a command: what a planted pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_header_and_arrays_read_back_exactly(tmp_path: Path) -> None:
    arrays = {"z": np.array([0.1, 1e-300, -2.5]), "rho": np.array(8.0), "k": np.arange(3)}
    path = tmp_path / "state.npz"
    path.write_bytes(state_bytes(KIND, 1, {"run_id": "abc", "iteration": 7}, arrays))
    header, back = read_state(path, KIND, 1)
    assert header == {"format": KIND, "version": 1, "run_id": "abc", "iteration": 7}
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype


def test_object_arrays_are_not_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Python objects"):
        state_bytes(KIND, 1, {}, {"x": np.array([{"a": 1}], dtype=object)})


def _refusal(path: Path, version: int = 1) -> str:
    with pytest.raises(StateFileError) as caught:
        read_state(path, KIND, version)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_a_planted_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "state.npz"
    path.write_bytes(pickle.dumps({"state": _Planted(marker)}))
    assert "not a" in _refusal(path)
    # The same payload as an array inside an .npz (an object array needs pickle to load).
    buffer = io.BytesIO()
    np.savez(buffer, __header__=np.array("{}"), x=np.array([_Planted(marker)], dtype=object))
    path.write_bytes(buffer.getvalue())
    assert "not a" in _refusal(path)
    assert not marker.exists()


def test_corrupt_foreign_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    path.write_bytes(b"\x00garbage")
    assert "not a" in _refusal(path)
    path.write_bytes(state_bytes("something else", 1, {}, {}))
    assert _refusal(path).endswith(f"not a {KIND}")
    path.write_bytes(state_bytes(KIND, 2, {}, {}))
    assert "version 2" in _refusal(path) and "versions 1–1" in _refusal(path)
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))  # one .npy, not an archive
    path.write_bytes(buffer.getvalue())
    assert "not a" in _refusal(path)
    assert "no such file" in _refusal(tmp_path / "missing.npz")


def test_admm_state_round_trips_through_a_checkpoint() -> None:
    state = AdmmState(np.arange(4.0), np.ones(2), 3.5, iteration=12, weights=np.array([1.0, 2]))
    back = AdmmState.from_arrays(state.to_arrays())
    np.testing.assert_array_equal(back.z, state.z)
    np.testing.assert_array_equal(back.u, state.u)
    np.testing.assert_array_equal(back.weights, state.weights)
    assert (back.rho, back.iteration, back.p) == (3.5, 12, None)


def _coordinator(scenario: Scenario, directory: Path) -> Coordinator:
    return Coordinator(DemandView.of(scenario), AdmmSettings(), checkpoint=str(directory))


def test_the_coordinator_refuses_a_planted_checkpoint(
    tiny_scenario: Scenario, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    directory = tmp_path / "ckpt"
    directory.mkdir(mode=0o700)
    (directory / CHECKPOINT_FILE).write_bytes(pickle.dumps({"method": _Planted(marker)}))
    coordinator = _coordinator(tiny_scenario, directory)
    with pytest.raises(CheckpointMissing) as caught:
        coordinator._read_checkpoint(AdmmMethod.name)
    assert str(caught.value).startswith(str(directory / CHECKPOINT_FILE))
    assert "\n" not in str(caught.value) and not marker.exists()
    # A checkpoint of another method is refused too, by name.
    content = state_bytes(CHECKPOINT_KIND, CHECKPOINT_VERSION, {"method": "other"}, {})
    (directory / CHECKPOINT_FILE).write_bytes(content)
    with pytest.raises(CheckpointMissing, match="of other, not"):
        coordinator._read_checkpoint(AdmmMethod.name)


def test_a_removed_checkpoint_directory_is_not_recreated(
    tiny_scenario: Scenario, tmp_path: Path
) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir(mode=0o700)
    coordinator = _coordinator(tiny_scenario, directory)

    class Method:  # what the coordinator asks of a method to checkpoint it
        name = AdmmMethod.name

        def checkpoint(self) -> dict[str, np.ndarray]:
            return AdmmState(np.zeros(2), np.zeros(1), 8.0).to_arrays()

    method = Method()
    coordinator._write_checkpoint(method, 0, None)
    written = directory / CHECKPOINT_FILE
    header, arrays = read_state(written, CHECKPOINT_KIND, CHECKPOINT_VERSION)
    assert header["method"] == AdmmMethod.name and set(arrays) == {"z", "u", "rho", "iteration"}
    assert directory.stat().st_mode & 0o777 == 0o700
    # The driver tears the run down: the directory goes, and a late checkpoint must not
    # bring it back.
    written.unlink()
    directory.rmdir()
    coordinator._write_checkpoint(method, 5, None)
    assert not directory.exists()
