"""The contract between the coordinator and a distributed method.

A method (in the spirit of cvxpy's solver interface) is a class with a name and a settings type,
built from the fleet's coupling structure, that runs over a
:class:`~thermoroute.coordinator.fleet.Fleet` and hands back a :class:`MethodRun`: whatever the
method, the coordinator then collects the sites' final reports and assembles the same outputs
(:mod:`thermoroute.coordinator.results`). Its site side is named in the
:class:`~thermoroute.common.method_protocol.MethodBegin` the method sends the fleet
(:mod:`thermoroute.site_agent.methods`).

Adding a method: one coordinator module with a class following :class:`DistributedMethod`, one
site module with its handler factory, and one line registering the class
(:func:`thermoroute.coordinator.methods.register_method`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.coordinator.events import RunObserver
from thermoroute.coordinator.fleet import Fleet
from thermoroute.coordinator.structure import ExchangeStructure

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


@dataclass(frozen=True)
class MethodFlags:
    """The command line's method options (``thermoroute run --help``), whatever the method:
    each method takes the ones that apply to it (:meth:`DistributedMethod.settings_for`).

    ``eps_rel`` and ``max_iter`` ``None`` keep the method's own tolerance and limit;
    ``penalty`` and ``acceleration`` are exchange ADMM's, ``secure_aggregation`` the
    interior point's.
    """

    eps_rel: float | None = None
    max_iter: int | None = None
    agent_restarts: int = 3
    secure_aggregation: bool = True
    penalty: str = "per-row"
    acceleration: str = "none"


@dataclass(frozen=True)
class StatusColumn:
    """One column of a method's live display: ``label`` shows ``status[key]``.

    ``fmt`` is a format spec for numbers; ``"yes/no"`` shows a flag, ``"count"`` the length
    of a list. Where the terminal is too narrow for every column, those with the highest
    ``priority`` are left out first (0: always shown; the objective has 2, the time 1).
    """

    label: str
    key: str
    fmt: str = ".3e"
    priority: int = 1


class RunSettings(Protocol):
    """What every method's settings carry beside the method's own: how long the fleet waits
    for a group, how often a crashed one is restarted (Ray runs), and the run's wall-time
    limit (``None``: none)."""

    @property
    def solve_timeout_s(self) -> float: ...

    @property
    def time_limit_s(self) -> float | None: ...

    @property
    def agent_restarts(self) -> int: ...


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
    resume : mapping of str to ndarray, optional
        A :meth:`checkpoint` of this run, taken before its coordinator was lost: the run
        goes on from there (the sites were registered again, so they start afresh).
    """

    name: ClassVar[str]
    settings_type: ClassVar[type]
    #: The figures of its status (``on_status``) a live display shows, between the
    #: iteration and the objective.
    status_columns: ClassVar[tuple[StatusColumn, ...]]

    @staticmethod
    def settings_for(flags: MethodFlags) -> RunSettings:
        """The method's settings for the command line's options."""
        ...

    @staticmethod
    def title(settings: Any) -> str:
        """A few words naming the method and its main settings, for a display."""
        ...

    def __init__(
        self,
        structure: ExchangeStructure,
        layout: CouplingLayout,
        settings: Any,
        warm_start: Any = None,
        run_id: str | None = None,
        resume: Mapping[str, np.ndarray] | None = None,
    ) -> None: ...

    def checkpoint(self) -> dict[str, np.ndarray]:
        """The coordinator's state now, as named numeric arrays (kept in a data file, never
        pickled: common/state_files.py), to :attr:`resume` from."""
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
    def state_arrays(state: Any) -> dict[str, np.ndarray]:
        """A :attr:`MethodRun.state` (not ``None``) as named numeric arrays, for a state file
        (common/state_files.py): :meth:`state_from_arrays` gives it back exactly."""
        ...

    @staticmethod
    def state_from_arrays(arrays: Mapping[str, np.ndarray]) -> Any:
        """The state :meth:`state_arrays` gave.

        Raises
        ------
        KeyError, ValueError
            ``arrays`` are not such a state.
        """
        ...

    @staticmethod
    def shift(
        state: Any,
        old: ExchangeStructure,
        new: ExchangeStructure,
        layout: CouplingLayout,
        steps: int,
    ) -> Any: ...
