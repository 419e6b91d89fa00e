"""A third distributed method, defined here and nowhere in the product: proximal dual ascent.

It proves the method contract: a coordinator class following
:class:`~thermoroute.coordinator.method_contract.DistributedMethod`, a site handler factory
following :class:`~thermoroute.site_agent.methods.SiteHandlerFactory`, and one call to
:func:`~thermoroute.coordinator.methods.register_method` — no product file changes.

The method (a textbook one, deliberately naive): the coordinator holds one price ``y_r`` per
coupling row of ``Σ_i A_i x_i = b``; each round every site solves
``min f_i(x_i) + y·A_i x_i + ρ/2 ‖A_i x_i − p_i‖²`` (``p_i`` its previous answer, so the step
stays small) with its own proximal subproblem, and each group answers the sum of its sites'
``A_i x_i`` over all rows; the coordinator moves the prices by the coupling residual,
``y ← y + α (Σ_i A_i x_i − b)``, ``α_r = ρ / (2 |S_r|)``. It runs a fixed number of rounds:
not converged, but the coupling residual shrinks, which is what the test checks.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.method_protocol import MethodBegin
from thermoroute.coordinator.events import RunObserver
from thermoroute.coordinator.fleet import Fleet
from thermoroute.coordinator.method_contract import MethodRun, StatusHook
from thermoroute.coordinator.structure import ExchangeStructure
from thermoroute.site_agent.agent import SiteAgent
from thermoroute.site_agent.methods import HostedSites, SiteHandler


@dataclass(frozen=True)
class ToySettings:
    rounds: int = 12
    rho: float = 8.0
    # What every method's settings carry (RunSettings): the fleet's deadline, restarts and
    # the run's time limit.
    solve_timeout_s: float = 120.0
    agent_restarts: int = 0
    time_limit_s: float | None = None


@dataclass(frozen=True)
class ToyRound:
    """Coordinator → group: round ``iteration`` at prices ``prices`` (scaled rows)."""

    iteration: int
    prices: np.ndarray


class ToyDualAscent:
    """The coordinator side."""

    name: ClassVar[str] = "toy-dual-ascent"
    settings_type: ClassVar[type] = ToySettings

    def __init__(
        self,
        structure: ExchangeStructure,
        layout: CouplingLayout,
        settings: ToySettings,
        warm_start: np.ndarray | None = None,
        run_id: str | None = None,
        resume: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        del layout
        self.structure = structure
        self.settings = settings
        start = resume["prices"] if resume is not None else warm_start
        self.prices = np.zeros(structure.n_rows) if start is None else start.copy()
        self.run_id = run_id or uuid.uuid4().hex[:12]

    def checkpoint(self) -> dict[str, np.ndarray]:
        return {"prices": self.prices.copy()}

    @staticmethod
    def state_arrays(state: np.ndarray) -> dict[str, np.ndarray]:
        return {"prices": state.copy()}

    @staticmethod
    def state_from_arrays(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array(arrays["prices"], dtype=float)

    def run(
        self,
        fleet: Fleet,
        observers: Sequence[RunObserver],
        *,
        on_status: StatusHook | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MethodRun:
        s, cfg = self.structure, self.settings
        t0 = time.perf_counter()
        keys = fleet.begin(MethodBegin(self.name, begin_toy, cfg.rho))
        assert all(key == b"" for key in keys)  # nothing masked
        step = cfg.rho / (2.0 * np.maximum(s.counts, 1))
        rows: list[list[float]] = []
        for k in range(cfg.rounds):
            answers = fleet.broadcast("method_round", ToyRound(k, self.prices.copy()))
            residual = np.sum(answers, axis=0) - s.b
            self.prices = self.prices + step * residual
            norm = float(np.linalg.norm(residual))
            rows.append([k, norm, time.perf_counter() - t0])
            if on_status is not None:
                on_status({"iteration": k, "primal_residual": norm})
            if should_stop is not None and should_stop():
                break
        return MethodRun(
            method=self.name,
            run_id=self.run_id,
            converged=False,
            iterations=len(rows),
            report_iteration=None,
            wall_s=time.perf_counter() - t0,
            scaled_prices=self.prices.copy(),
            primal_residual=rows[-1][1],
            dual_residual=math.nan,
            rho=cfg.rho,
            extra_stats={},
            convergence_columns=("iteration", "coupling_residual", "objective_aud", "elapsed_s"),
            convergence=[[k, r, math.nan, t] for k, r, t in rows],
            state=self.prices.copy(),
            result=None,
        )

    @staticmethod
    def shift(
        state: np.ndarray,
        old: ExchangeStructure,
        new: ExchangeStructure,
        layout: CouplingLayout,
        steps: int,
    ) -> None:
        return None  # a cold start


class ToySite:
    """The site side: each hosted site's proximal response to the prices."""

    def __init__(self, sites: HostedSites, rho: float) -> None:
        self.agents: tuple[SiteAgent, ...] = sites.agents
        self.n_rows = sites.layout.n_rows
        self.rho = rho
        self.previous = {a.site_id: np.zeros(a.subproblem.support.size) for a in self.agents}

    @property
    def started(self) -> bool:
        return True

    def new_key(self) -> bytes:
        return b""

    def start(self, message: object, group_index: int) -> object:
        raise TypeError("no start round")

    def handle(self, request: Any) -> np.ndarray:
        assert isinstance(request, ToyRound)
        total = np.zeros(self.n_rows)
        for agent in self.agents:
            support = agent.subproblem.support
            target = self.previous[agent.site_id] - request.prices[support] / self.rho
            _, served = agent.solve(request.iteration, self.rho, target)
            self.previous[agent.site_id] = served
            total[support] += served
        return total

    def shift(self, steps: int) -> None:
        return None


def begin_toy(sites: HostedSites, previous: SiteHandler | None, settings: object) -> ToySite:
    assert isinstance(settings, float)
    return ToySite(sites, settings)
