"""What a run reports while it goes: the observer contract between the ADMM loop and
whatever watches it (progress display, Prometheus metrics, convergence log).

The loop calls every registered observer synchronously; observers must be cheap and must
not raise (an exception is logged and the observer dropped, never the run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class RunState(StrEnum):
    """Lifecycle of a run, exported as a state-set metric."""

    STARTING = "starting"
    RUNNING = "running"
    CONVERGED = "converged"
    STOPPED = "stopped"  # iteration limit or deadline reached without convergence
    FAILED = "failed"


@dataclass(frozen=True)
class IterationRecord:
    """One iteration of a distributed method as the coordinator saw it.

    Residuals are in the scaled coupling units of the run; ``objective_parts`` holds the
    objective in AUD split into ``energy_cost``, ``carbon``, ``water`` and ``latency`` when
    the sites report them (they may be NaN mid-run: sites only report served demand).
    """

    run_id: str
    iteration: int
    primal_residual: float
    dual_residual: float
    eps_primal: float
    eps_dual: float
    rho: float
    objective_aud: float
    elapsed_s: float
    accelerated: bool = False
    objective_parts: dict[str, float] = field(default_factory=dict)
    site_solve_s: dict[str, float] = field(default_factory=dict)
    late_sites: tuple[str, ...] = ()
    #: Sites whose agent crashed in this iteration (Ray restarts it; the run goes on).
    crashed_sites: tuple[str, ...] = ()
    #: The distributed method's registry name. The interior point's records have ``rho``
    #: NaN, the coupling residual as ``primal_residual`` and the count of sites whose dual
    #: residual is not yet small as ``dual_residual``.
    method: str = ""
    #: Interior point only: mean complementarity and the step taken from this iterate.
    mu: float = float("nan")
    step: float = float("nan")


class RunObserver(Protocol):
    """Receives a run's events. Every method is optional in practice; implement all."""

    def on_state(self, run_id: str, state: RunState) -> None: ...

    def on_iteration(self, record: IterationRecord) -> None: ...

    def on_site_timeout(self, run_id: str, site_id: str) -> None: ...

    def on_objective(
        self, run_id: str, objective_aud: float, parts: dict[str, float] | None = None
    ) -> None:
        """The run's objective, once the sites have reported their totals at the end."""


class NullObserver:
    """An observer that ignores everything (a base class for partial observers)."""

    def on_state(self, run_id: str, state: RunState) -> None:
        return None

    def on_iteration(self, record: IterationRecord) -> None:
        return None

    def on_site_timeout(self, run_id: str, site_id: str) -> None:
        return None

    def on_objective(
        self, run_id: str, objective_aud: float, parts: dict[str, float] | None = None
    ) -> None:
        return None


log = logging.getLogger(__name__)


def notify_all(
    observers: list[RunObserver], call: Callable[[RunObserver], None], dropped: set[int]
) -> None:
    """Call every observer not yet dropped; one that raises is logged and dropped, never
    the run (the coordinator/events.py contract)."""
    for k, obs in enumerate(observers):
        if k in dropped:
            continue
        try:
            call(obs)
        except Exception:  # an observer must never break a run
            log.exception("observer %r failed and was dropped", obs)
            dropped.add(k)
