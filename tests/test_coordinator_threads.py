"""The coordinator's linear algebra runs with the BLAS threads it is given (issue 24, item 4):
one by default, so no OpenBLAS thread spins on a core the site agents share."""

from __future__ import annotations

import os
from typing import Any

from threadpoolctl import threadpool_info

from thermoroute.coordinator.events import IterationRecord, NullObserver
from thermoroute.launch import solve_distributed


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


class BlasWatch(NullObserver):
    """Records the BLAS thread counts in force at every iteration of the run."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_iteration(self, record: IterationRecord) -> None:
        self.seen.append(_blas_threads())


def test_the_coordinator_runs_its_method_on_one_blas_thread_and_gives_the_rest_back() -> None:
    before = _blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    # A machine of one core has nothing to limit: the test means something on more.
    assert max(before) > 1 or os.cpu_count() == 1, before
    watch = BlasWatch()
    run = solve_distributed("australia", executor="inline", observers=[watch])
    assert run.converged and watch.seen
    assert all(counts == [1] * len(counts) for counts in watch.seen), watch.seen
    # Outside the method's run the process has its threads back (the driver's own work).
    assert _blas_threads() == before


def test_a_coordinator_given_no_limit_keeps_the_librarys_threads(monkeypatch: Any) -> None:
    from thermoroute.coordinator.actor import Coordinator

    monkeypatch.setattr(Coordinator, "blas_threads", None)
    before = _blas_threads()
    watch = BlasWatch()
    solve_distributed("australia", executor="inline", observers=[watch])
    assert watch.seen and all(counts == before for counts in watch.seen), (before, watch.seen)
