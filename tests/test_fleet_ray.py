"""RayFleet's broadcast round on real actors: answers kept in group order and timed per group
whatever order they arrive in, messages passed by value or put once, late and failing
groups (issue 24, item 2).

The actors here answer a broadcast without computing anything (the fleet's contract is the
call and its answer), on the session's Ray cluster (tests/conftest.py).
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np
import pytest

from thermoroute.common.method_protocol import (
    PACKED_ANSWER_BYTES,
    EmptyRound,
    LargeAnswer,
    PackedCall,
    PackedCalls,
    unpack_answer,
)
from thermoroute.common.report_protocol import ReportRequest
from thermoroute.coordinator.fleet import INLINE_ARGUMENT_BYTES, RayFleet, RoundFailed

pytestmark = pytest.mark.ray

GROUPS = [["syd"], ["mel"], ["per"]]


class Answering(PackedCalls):
    """A group that answers a round after ``delay_s`` with its index and what it received;
    the group ``failing`` raises instead."""

    def __init__(self, index: int, delay_s: float, failing: bool = False) -> None:
        self.index = index
        self.delay_s = delay_s
        self.failing = failing

    def method_round(self, message: object) -> tuple[int, object]:
        time.sleep(self.delay_s)
        if self.failing:
            raise ValueError(f"group {self.index} cannot answer")
        return self.index, message

    def final_report(self, message: object, group_index: int) -> tuple[int, int]:
        return self.index, group_index

    def empty_round(self, request: EmptyRound) -> np.ndarray:
        return request.answer()


def _fleet(ray: Any, delays: list[float], **options: Any) -> tuple[RayFleet, list[Any]]:
    failing = options.pop("failing", None)
    actor = ray.remote(Answering).options(num_cpus=0, max_restarts=0)
    handles = [actor.remote(g, d, g == failing) for g, d in enumerate(delays)]
    ray.get([h.__ray_ready__.remote() for h in handles])
    return RayFleet(handles, GROUPS, **options), handles


def test_answers_arriving_in_reverse_keep_their_group_and_their_seconds(
    ray_cluster: Any,
) -> None:
    """The first group answers last: the answers stay in group order and each group's
    seconds are its own (the slowest group's are the longest)."""
    fleet, handles = _fleet(ray_cluster, [2.0, 1.0, 0.0])
    small = {"prices": np.arange(5.0)}
    answers = fleet.broadcast("method_round", small)
    assert [a[0] for a in answers] == [0, 1, 2]  # type: ignore[index]
    assert all(np.array_equal(a[1]["prices"], small["prices"]) for a in answers)  # type: ignore[index]
    seconds = fleet.answer_seconds()
    assert seconds["syd"] >= 2.0 and seconds["mel"] >= 1.0
    assert seconds["per"] < seconds["mel"] < seconds["syd"]
    assert fleet.broadcast("final_report", ReportRequest("r", 0), indexed=True) == [
        (0, 0),
        (1, 1),
        (2, 2),
    ]
    for h in handles:
        ray_cluster.kill(h)


def test_a_large_message_reaches_every_group_whole(ray_cluster: Any) -> None:
    """A message above Ray's inline limit is put in the store once and read by all."""
    fleet, handles = _fleet(ray_cluster, [0.0, 0.0, 0.0])
    large = {"schur": np.random.default_rng(0).standard_normal(INLINE_ARGUMENT_BYTES // 8 + 1)}
    assert len(pickle.dumps(PackedCall("method_round", large))) > INLINE_ARGUMENT_BYTES
    for _, received in fleet.broadcast("method_round", large):  # type: ignore[misc]
        assert np.array_equal(received["schur"], large["schur"])
    zeros = fleet.broadcast("empty_round", EmptyRound(7160))
    assert all(z.shape == (2, 7160) and z.dtype == np.uint64 for z in zeros)  # type: ignore[attr-defined]
    for h in handles:
        ray_cluster.kill(h)


def test_a_late_group_fails_the_round_by_name(ray_cluster: Any) -> None:
    fleet, handles = _fleet(ray_cluster, [0.0, 5.0, 0.0], timeout_s=0.5, setup_timeout_s=1.0)
    with pytest.raises(RoundFailed, match=r"\['mel'\]") as failed:
        fleet.broadcast("method_round", {"x": np.zeros(3)})
    assert failed.value.groups == [1]
    for h in handles:
        ray_cluster.kill(h)


def test_a_group_that_raises_raises_its_error(ray_cluster: Any) -> None:
    """A site's error is not a late group: it reaches the coordinator as raised."""
    fleet, handles = _fleet(ray_cluster, [1.0, 0.0, 0.0], failing=1)
    with pytest.raises(ValueError, match="group 1 cannot answer"):
        fleet.broadcast("method_round", {"x": np.zeros(3)})
    for h in handles:
        ray_cluster.kill(h)


def test_a_packed_call_answers_group_calls_only() -> None:
    """A group answers a packed broadcast call as the call itself, pickled (a large answer
    as it is); a packet naming any other method of its class is refused."""
    group = Answering(0, 0.0)
    answer = group.packed_call(pickle.dumps(PackedCall("method_round", 7)))
    assert pickle.loads(answer) == group.method_round(7) == (0, 7)
    large = np.zeros(PACKED_ANSWER_BYTES // 8 + 1)
    big = group.packed_call(pickle.dumps(PackedCall("method_round", large)))
    assert isinstance(big, LargeAnswer)
    index, echoed = unpack_answer(big)  # type: ignore[misc]
    assert index == 0 and np.array_equal(echoed, large)
    with pytest.raises(TypeError, match="not a packed group call"):
        group.packed_call(pickle.dumps(PackedCall("__init__", 7)))  # type: ignore[arg-type]
