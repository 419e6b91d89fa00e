"""The contract between the coordinator and a distributed method, and the registry.

A method (in the spirit of cvxpy's solver interface) is a class with a settings type, built from the
fleet's coupling structure, that runs over a :class:`~thermoroute.coordinator.fleet.Fleet` and hands
back a :class:`MethodRun`: whatever the method, the coordinator then collects the sites' final
reports and assembles the same outputs (:mod:`thermoroute.coordinator.results`).

Adding a method: one coordinator module implementing :class:`DistributedMethod`, its line in
:data:`METHODS`; if its sites do more than ADMM's subproblem solve, one site module with a handler
for the fleet's generic rounds and its line in ``thermoroute.site_agent.methods.SITE_METHODS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.outputs import CONVERGENCE_COLUMNS
from thermoroute.coordinator.admm import (
    AdmmSettings,
    AdmmState,
    ExchangeAdmm,
    ExchangeStructure,
    IterationLog,
    shift_state,
)
from thermoroute.coordinator.events import RunObserver
from thermoroute.coordinator.fleet import Fleet
from thermoroute.coordinator.ipm import (
    DistributedInteriorPoint,
    IpmLog,
    IpmResult,
    IpmSettings,
    shift_prices,
)

#: A method's progress for the coordinator's status (live display): plain figures.
StatusHook = Callable[[dict[str, Any]], None]


@dataclass
class MethodRun:
    """What a distributed method hands back, whatever the method.

    Attributes
    ----------
    method : str
        The registry name.
    run_id : str
    converged : bool
    iterations : int
        Iterations of the method proper (ADMM's polishing solves not counted).
    report_iteration : int or None
        The iteration whose iterate the sites report (``None``: their current one).
    wall_s : float
    scaled_prices : ndarray (m,)
        Prices of the scaled coupling rows: one more scaled unit of demand on row ``r``
        costs ``−scaled_prices[r]`` at the solution.
    primal_residual, dual_residual, rho : float
        The summary's figures (their meaning per method: docs/model.md §9).
    extra_stats : dict
        The method's own figures for ``summary.json``'s ``solver_stats``.
    convergence_columns : tuple of str
        Columns of ``convergence.csv``; ``iteration`` first; an ``objective_aud`` column is
        filled from the sites' objective histories where they keep them.
    convergence : list of list of float
    state : object
        The method's state for a warm start of the next horizon (:meth:`shift`).
    clean_share : float or None
        The end of the run cleans the reported iterate of flows below this share of their row's
        demand (:class:`thermoroute.common.report_protocol.CleanRequest`); ``None``: the method
        cleaned it already, or keeps every flow.
    result : object
        The method's own result (``AdmmResult``, ``IpmResult``) for diagnostics.
    timing : dict
    """

    method: str
    run_id: str
    converged: bool
    iterations: int
    report_iteration: int | None
    wall_s: float
    scaled_prices: np.ndarray
    primal_residual: float
    dual_residual: float
    rho: float
    extra_stats: dict[str, Any]
    convergence_columns: tuple[str, ...]
    convergence: list[list[float]]
    state: Any
    result: Any
    timing: dict[str, float] = field(default_factory=dict)
    clean_share: float | None = None


class DistributedMethod(Protocol):
    """A distributed method the coordinator can run.

    Parameters (of the constructor)
    -------------------------------
    structure : ExchangeStructure
    layout : CouplingLayout
    settings
        An instance of :attr:`settings_type`.
    warm_start : optional
        A previous :attr:`MethodRun.state`, already shifted (:meth:`shift`).
    run_id : str, optional
    resume : optional
        A :meth:`checkpoint` of this run, taken before its coordinator was lost: the run
        goes on from there (the sites were registered again, so they start afresh).
    """

    name: ClassVar[str]
    settings_type: ClassVar[type]

    def checkpoint(self) -> Any:
        """The coordinator's state now, small and picklable, to :attr:`resume` from."""
        ...

    def run(
        self,
        fleet: Fleet,
        observers: Sequence[RunObserver],
        *,
        on_status: StatusHook | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MethodRun: ...

    @staticmethod
    def shift(
        state: Any,
        old: ExchangeStructure,
        new: ExchangeStructure,
        layout: CouplingLayout,
        steps: int,
    ) -> Any: ...


# ------------------------------------------------------------------------------------------


class AdmmMethod:
    """Exchange ADMM (:mod:`thermoroute.coordinator.admm`) behind the method contract, unchanged."""

    name: ClassVar[str] = "admm"
    settings_type: ClassVar[type] = AdmmSettings

    def __init__(
        self,
        structure: ExchangeStructure,
        layout: CouplingLayout,
        settings: AdmmSettings,
        warm_start: AdmmState | None = None,
        run_id: str | None = None,
        resume: AdmmState | None = None,
    ) -> None:
        del layout
        # ADMM's state is the coordinator's (z, u, ρ): resuming is starting from it.
        self.loop = ExchangeAdmm(structure, settings, resume or warm_start, run_id=run_id)

    def checkpoint(self) -> AdmmState:
        return self.loop.state.copy()

    @staticmethod
    def _status(row: IterationLog) -> dict[str, Any]:
        res = row.residuals
        return {
            "iteration": row.iteration,
            "primal_residual": res.primal,
            "dual_residual": res.dual,
            "eps_primal": res.eps_primal,
            "eps_dual": res.eps_dual,
            "coupling_max_rel": res.coupling_max,
            "rho": row.rho,
            "accelerated": row.accelerated,
            "elapsed_s": row.elapsed_s,
            "late_sites": list(row.late_sites),
        }

    def run(
        self,
        fleet: Fleet,
        observers: Sequence[RunObserver],
        *,
        on_status: StatusHook | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MethodRun:
        hook = None if on_status is None else (lambda row: on_status(self._status(row)))
        result = self.loop.run(fleet, observers, on_iteration=hook, should_stop=should_stop)
        # ``converged``, the residuals and their tolerances all describe the iterate the
        # stopping test saw; the polished iterate that is reported has its own figures
        # (its dual residual is measured at κρ and says nothing about convergence).
        res = next(
            (h.residuals for h in result.history if h.iteration == result.decided_iteration),
            result.residuals,
        )
        polished = result.residuals
        penalties = np.atleast_1d(result.state.rho_rows)
        return MethodRun(
            method=self.name,
            run_id=result.run_id,
            converged=result.converged,
            iterations=result.loop_iterations,
            report_iteration=result.report_iteration,
            clean_share=self.loop.settings.clean_share or None,
            wall_s=result.wall_s,
            scaled_prices=result.state.prices(),
            primal_residual=res.primal,
            dual_residual=res.dual,
            rho=result.final_rho,
            extra_stats={
                "eps_primal": res.eps_primal,
                "eps_dual": res.eps_dual,
                "coupling_residual": res.coupling,
                "coupling_max_rel": res.coupling_max,
                "report_iteration": result.report_iteration,
                "polish_iterations": result.polish_iterations,
                "reported_coupling_max_rel": polished.coupling_max,
                "rho_row_range": [float(penalties.min()), float(penalties.max())],
                "rho_changes": result.rho_changes,
                "anderson_steps": result.anderson_accepted,
                "late_site_answers": result.late_total,
                "site_crashes": sum(len(h.crashed_sites) for h in result.history),
            },
            convergence_columns=CONVERGENCE_COLUMNS,
            convergence=[
                [
                    int(h.iteration),
                    float(h.residuals.primal),
                    float(h.residuals.dual),
                    float(h.rho),
                    math.nan,
                    float(h.elapsed_s),
                ]
                for h in result.history
            ],
            state=result.state,
            result=result,
            timing=dict(result.timing),
        )

    @staticmethod
    def shift(
        state: AdmmState,
        old: ExchangeStructure,
        new: ExchangeStructure,
        layout: CouplingLayout,
        steps: int,
    ) -> AdmmState:
        return shift_state(state, old, new, layout, steps)


class InteriorPointMethod:
    """The distributed interior-point method (:mod:`thermoroute.coordinator.ipm`)."""

    name: ClassVar[str] = "ipm"
    settings_type: ClassVar[type] = IpmSettings

    def __init__(
        self,
        structure: ExchangeStructure,
        layout: CouplingLayout,
        settings: IpmSettings,
        warm_start: np.ndarray | None = None,
        run_id: str | None = None,
        resume: np.ndarray | None = None,
    ) -> None:
        # Resuming, the prices are the checkpoint's and the sites (registered again) start
        # from their default point: only a warm start has kept site iterates to use.
        self.loop = DistributedInteriorPoint(
            structure,
            layout,
            settings,
            prices=resume if resume is not None else warm_start,
            run_id=run_id,
            warm=warm_start is not None and resume is None,
        )

    def checkpoint(self) -> np.ndarray:
        return self.loop.prices.copy()

    @staticmethod
    def _status(row: IpmLog) -> dict[str, Any]:
        return {
            "iteration": row.iteration,
            "primal_residual": row.coupling,
            "eps_primal": row.eps_coupling,
            "coupling_max_rel": row.coupling_max,
            "mu": row.mu,
            "dual_pending": row.dual_pending,
            "step": row.step,
            "objective_aud": row.objective,
            "elapsed_s": row.elapsed_s,
        }

    def run(
        self,
        fleet: Fleet,
        observers: Sequence[RunObserver],
        *,
        on_status: StatusHook | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MethodRun:
        hook = None if on_status is None else (lambda row: on_status(self._status(row)))
        result: IpmResult = self.loop.run(
            fleet, observers, on_iteration=hook, should_stop=should_stop
        )
        last = result.last
        return MethodRun(
            method=self.name,
            run_id=result.run_id,
            converged=result.converged,
            iterations=result.iterations,
            report_iteration=None,
            wall_s=result.wall_s,
            scaled_prices=result.prices,
            primal_residual=last.coupling,
            dual_residual=float(last.dual_pending),
            rho=math.nan,
            extra_stats={
                "eps_primal": last.eps_coupling,
                "coupling_residual": last.coupling,
                "coupling_max_rel": last.coupling_max,
                "mu": last.mu,
                "sites_dual_pending": last.dual_pending,
                "secure_aggregation": result.masked,
                "site_crashes": sum(len(h.crashed_sites) for h in result.history),
                "rejoins": result.rejoins,
                "schur_across_steps": result.across_steps,
                "rounds": result.rounds,
                "bytes_per_group_per_iteration": round(result.bytes_per_group_iteration),
                **result.cleaning,
            },
            convergence_columns=(
                "iteration",
                "coupling_residual",
                "mu",
                "step",
                "sites_dual_pending",
                "objective_aud",
                "elapsed_s",
            ),
            convergence=[
                [
                    int(h.iteration),
                    float(h.coupling),
                    float(h.mu),
                    float(h.step),
                    int(h.dual_pending),
                    float(h.objective),
                    float(h.elapsed_s),
                ]
                for h in result.history
            ],
            state=result.warm_prices,
            result=result,
            timing=dict(result.timing),
        )

    @staticmethod
    def shift(
        state: np.ndarray,
        old: ExchangeStructure,
        new: ExchangeStructure,
        layout: CouplingLayout,
        steps: int,
    ) -> np.ndarray:
        return shift_prices(state, old, new, layout, steps)


#: The distributed methods by name (``--method``).
METHODS: dict[str, type[DistributedMethod]] = {
    AdmmMethod.name: AdmmMethod,
    InteriorPointMethod.name: InteriorPointMethod,
}

#: Settings of any registered method.
MethodSettings = AdmmSettings | IpmSettings


def method_for(settings: Any) -> type[DistributedMethod]:
    """The registered method whose settings type ``settings`` is."""
    for method in METHODS.values():
        if isinstance(settings, method.settings_type):
            return method
    raise TypeError(f"no distributed method takes settings of type {type(settings).__name__}")
