"""The coordinator: holds the demand view, the coupling layout and the duals; runs the loop.

:class:`Coordinator` is a plain class. In-process it is used as is (``executor="inline"``);
on Ray the composition root wraps it with ``ray.remote`` as a *threaded* actor
(``max_concurrency > 1``) so that :meth:`Coordinator.status` answers the driver's live
display while :meth:`Coordinator.run` is iterating in another thread.

The coordinator reaches the sites only through a :class:`thermoroute.coordinator.fleet.Fleet`; what
it receives from them is served demand per iteration and, at the end, their final reports.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.common.aggregation_tree import AggregationTree
from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.evaluate import objective_parts_aud
from thermoroute.common.method_protocol import EmptyRound
from thermoroute.common.report_protocol import (
    CLEAN_FIELDS,
    CleanFinish,
    CleanRequest,
    GroupReport,
    ReportRequest,
    repair_factors,
)
from thermoroute.common.scenario import DemandView
from thermoroute.common.secure_aggregation import MaskingSetup, masking_setups, unmask_sum
from thermoroute.common.state_files import HeaderValue, StateFileError, read_state, state_bytes
from thermoroute.coordinator.data import layout_of, row_scale_of
from thermoroute.coordinator.events import RunObserver
from thermoroute.coordinator.fleet import Fleet, RayFleet, Tap, answers_of
from thermoroute.coordinator.method_contract import DistributedMethod, MethodRun
from thermoroute.coordinator.methods import DEFAULT_METHOD, METHODS, MethodSettings, method_for
from thermoroute.coordinator.metrics import linger as linger_metrics
from thermoroute.coordinator.metrics import notify_objective
from thermoroute.coordinator.results import RunOutputs, assemble, history_of
from thermoroute.coordinator.structure import ExchangeStructure, build_structure

#: The coordinator's checkpoint file in its checkpoint directory.
CHECKPOINT_FILE = "coordinator.ckpt"
#: Iterations between two checkpoints: a resumed run repeats at most this many.
CHECKPOINT_EVERY = 5
#: What a checkpoint file is, and its layout's version (common/state_files.py).
CHECKPOINT_KIND = "thermoroute coordinator checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A run's state as the coordinator keeps it: its id, the iterations and coordinator
    restarts so far, and the method's own arrays (:meth:`DistributedMethod.checkpoint`)."""

    run_id: str
    iteration: int
    restarts: int
    state: dict[str, np.ndarray]


class CheckpointMissing(RuntimeError):
    """A coordinator asked to resume has no (usable) checkpoint."""


def _blas_limited(threads: int | None) -> contextlib.AbstractContextManager[object]:
    """Limit the BLAS threads of this process to ``threads`` while in the block (``None``:
    no limit)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


@dataclass
class CoordinatorOutcome:
    """What :meth:`Coordinator.run` returns (small: no site data beyond the reports).

    ``run`` is the method's outcome under the common contract; ``result`` the method's own
    result (``AdmmResult``, ``IpmResult``).
    """

    run: MethodRun
    outputs: RunOutputs
    structure: ExchangeStructure
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def result(self) -> Any:
        return self.run.result

    @property
    def method(self) -> str:
        return self.run.method

    @property
    def converged(self) -> bool:
        return self.run.converged

    @property
    def iterations(self) -> int:
        """The method's iterations proper, as the summary, the metrics and the live display
        count them (ADMM's polishing solves are its ``polish_iterations``)."""
        return self.run.iterations

    @property
    def objective_aud(self) -> float:
        return self.outputs.objective_aud


class Coordinator:
    """The coordinator of one fleet, for any registered distributed method.

    Parameters
    ----------
    view : DemandView
        Demand, batch volumes, regions and classes: everything the coordinator knows.
    settings : settings of a registered method, optional
        The method is the one whose settings these are
        (:func:`thermoroute.coordinator.methods.method_for`); by default the default
        method's (:data:`~thermoroute.coordinator.methods.DEFAULT_METHOD`).
    method : DistributedMethod class, optional
        The method, when the caller resolved it already (a method registered in the
        driver's process only, e.g. by a test, reaches a coordinator actor this way).
    observers : sequence of RunObserver
        Called each iteration (coordinator/events.py); on Ray they run inside the actor.
    run_id : str, optional
    share_site_details : bool
        Ask the sites to send their physics and totals with their decisions (the
        operator's ``--share-site-details``); by default they keep them.
    site_output : str, optional
        Where each site writes its own detail, ``<site_output>/<site_id>/`` (a node that
        sets ``THERMOROUTE_SITE_OUTPUT`` uses its own directory); ``None``: nowhere.
    checkpoint : str, optional
        A directory on the coordinator's node: every :data:`CHECKPOINT_EVERY` iterations
        the run's state (iteration, run id, the method's :meth:`checkpoint`) is written
        there, so a coordinator restarted by Ray can :meth:`run` on with ``resume=True``.

    Attributes
    ----------
    blas_threads : int or None
        Threads of the BLAS behind the coordinator's linear algebra while a method runs
        (``None``: the library's own choice, usually one per core). One by default: the
        coordinator's systems are small and its rounds wait on the sites, while an idle
        OpenBLAS thread spins after each factorisation and takes a core from site agents
        sharing the machine (a local fleet; measured in BENCHMARKS.md). A dedicated head
        with a thousand-site fleet may be given more.
    """

    blas_threads: int | None = 1

    def __init__(
        self,
        view: DemandView,
        settings: MethodSettings | None = None,
        *,
        method: type[DistributedMethod] | None = None,
        observers: Sequence[RunObserver] = (),
        run_id: str | None = None,
        share_site_details: bool = False,
        site_output: str | None = None,
        checkpoint: str | None = None,
    ) -> None:
        self.view = view
        self.checkpoint = None if checkpoint is None else Path(checkpoint) / CHECKPOINT_FILE
        self.share_site_details = share_site_details
        self.site_output = site_output
        self.settings = settings or METHODS[DEFAULT_METHOD].settings_type()
        self.method = method or method_for(self.settings)
        self.observers = list(observers)
        self.run_id = run_id
        self.layout = layout_of(view)
        self.row_scale = row_scale_of(view, self.layout)
        self.fleet: Fleet | None = None
        self.structure: ExchangeStructure | None = None
        self.state: Any = None  # last run's final method state (warm start source)
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"state": "idle", "iteration": 0}
        self._stop = threading.Event()

    # ----------------------------------------------------------------------------------
    # Wiring

    def attach(self, fleet: Fleet) -> None:
        """Use ``fleet`` (an in-process fleet, or one built by the caller)."""
        self.fleet = fleet

    def attach_actors(
        self,
        handles: Sequence[Any],
        group_site_ids: Sequence[Sequence[str]],
        *,
        timeout_s: float | None = None,
        tap: Tap | None = None,
        tree: AggregationTree | None = None,
    ) -> None:
        """Reach site-group actors through a :class:`RayFleet` (called inside the actor);
        ``tree``: how they relay the masked sums (the fleet's default without)."""
        self.fleet = RayFleet(
            handles,
            group_site_ids,
            timeout_s=self.settings.solve_timeout_s if timeout_s is None else timeout_s,
            restarts=self.settings.agent_restarts,
            tap=tap,
            tree=tree,
        )

    def register(self) -> dict[str, Any]:
        """Register every site; build the stacked coupling structure.

        Returns
        -------
        dict
            ``sites``, ``rows`` and ``entries`` (stacked support entries) and ``register_s``.
        """
        fleet = self._fleet()
        t0 = time.perf_counter()
        supports = fleet.register(self.layout, self.row_scale)
        self.structure = build_structure(
            self.view, self.layout, self.row_scale, fleet.site_ids, supports
        )
        return {
            "sites": len(fleet.site_ids),
            "rows": self.structure.n_rows,
            "entries": self.structure.n_entries,
            "register_s": time.perf_counter() - t0,
        }

    def _fleet(self) -> Fleet:
        if self.fleet is None:
            raise RuntimeError("attach a fleet first")
        return self.fleet

    # ----------------------------------------------------------------------------------
    # Running

    def _on_status(self, figures: dict[str, Any]) -> None:
        with self._lock:
            self._status = {
                "state": "running",
                "run_id": self.run_id,
                "method": self.method.name,
                "objective_aud": math.nan,  # unless the method knows it (the interior point)
                **figures,
            }

    def status(self) -> dict[str, Any]:
        """A snapshot of the run for a live display (cheap; callable while running)."""
        with self._lock:
            return dict(self._status)

    def stop(self) -> None:
        """Ask a running loop to end after its current iteration (not converged)."""
        self._stop.set()

    def run(
        self,
        warm_start: Any = None,
        settings: MethodSettings | None = None,
        *,
        resume: bool = False,
    ) -> CoordinatorOutcome:
        """Run the method to convergence (or a limit), collect the sites' reports, assemble
        the outputs.

        Parameters
        ----------
        warm_start : optional
            A previous run's method state shifted to this horizon (``Method.shift``); cold
            by default.
        settings : AdmmSettings or IpmSettings, optional
            Override the settings (and so possibly the method) for this run.
        resume : bool
            Go on from this coordinator's checkpoint (after Ray restarted it; the fleet was
            attached and registered again).

        Raises
        ------
        CheckpointMissing
            ``resume`` without a checkpoint to resume from.
        """
        if self.structure is None:
            self.register()
        assert self.structure is not None
        fleet = self._fleet()
        cfg = settings or self.settings
        self._stop.clear()
        method_cls = self.method if settings is None else method_for(cfg)
        with self._lock:
            self._status = {
                "state": "running",
                "run_id": self.run_id,
                "method": method_cls.name,
                "iteration": 0,
                "iterations": 0,
            }
        saved = self._read_checkpoint(method_cls.name) if resume else None
        # The id is fixed here so that a checkpoint carries it and a resumed run keeps it.
        self.run_id = saved.run_id if saved else (self.run_id or uuid.uuid4().hex[:12])
        method = method_cls(
            self.structure,
            self.layout,
            cfg,
            warm_start,
            run_id=self.run_id,
            resume=saved.state if saved else None,
        )

        def on_status(figures: dict[str, Any]) -> None:
            self._on_status(figures)
            self._write_checkpoint(method, int(figures.get("iteration", 0)), saved)

        with _blas_limited(self.blas_threads):
            run = method.run(
                fleet, self.observers, on_status=on_status, should_stop=self._stop.is_set
            )
        if saved:
            run.extra_stats["coordinator_restarts"] = saved.restarts + 1
            run.extra_stats["resumed_from_iteration"] = saved.iteration
        self.run_id = run.run_id
        t0 = time.perf_counter()
        history = history_of(run)
        reports = self._final_reports(fleet, run, history)
        t_reports = time.perf_counter() - t0
        outputs = assemble(self.view, self.layout, self.structure, run, reports, history)
        # The objective exists only now: the sites' sums arrive once, at the end.
        notify_objective(
            self.observers,
            self.run_id,
            outputs.objective_aud,
            objective_parts_aud(outputs.schedule.totals(), self.view.objective),
        )
        self.state = run.state
        with self._lock:
            self._status = {
                **self._status,
                "state": "converged" if run.converged else "stopped",
                "objective_aud": outputs.objective_aud,
            }
        return CoordinatorOutcome(
            run=run,
            outputs=outputs,
            structure=self.structure,
            timing={
                "iterations_s": run.wall_s,
                "final_reports_s": t_reports,
                "fleet_s": run.timing.get("fleet_s", 0.0),
                "update_s": run.timing.get("update_s", 0.0),
            },
        )

    def _write_checkpoint(
        self, method: DistributedMethod, iteration: int, saved: Checkpoint | None
    ) -> None:
        if self.checkpoint is None or iteration % CHECKPOINT_EVERY:
            return
        if not self.checkpoint.parent.is_dir():
            # The driver removed the directory: the run is being torn down. Re-creating it
            # would leave it behind (and with the umask's mode, not the driver's 0700).
            return
        header: dict[str, HeaderValue] = {
            "method": method.name,
            "run_id": self.run_id,
            "iteration": iteration + (saved.iteration if saved else 0),
            "restarts": saved.restarts + 1 if saved else 0,
        }
        content = state_bytes(CHECKPOINT_KIND, CHECKPOINT_VERSION, header, method.checkpoint())
        # Atomic but not flushed to disk: it must outlive the coordinator's process, and it
        # is rewritten every few iterations of the method's loop.
        write_directory_atomic(
            self.checkpoint.parent, {self.checkpoint.name: content}, durable=False
        )

    def _read_checkpoint(self, method: str) -> Checkpoint:
        if self.checkpoint is None or not self.checkpoint.is_file():
            raise CheckpointMissing("the coordinator was lost before its first checkpoint")
        try:
            header, arrays = read_state(self.checkpoint, CHECKPOINT_KIND, CHECKPOINT_VERSION)
        except StateFileError as error:
            raise CheckpointMissing(str(error)) from None
        if header.get("method") != method:
            raise CheckpointMissing(f"the checkpoint is of {header.get('method')}, not {method}")
        return Checkpoint(
            run_id=str(header["run_id"]),
            iteration=int(header["iteration"] or 0),
            restarts=int(header["restarts"] or 0),
            state=arrays,
        )

    def _final_reports(
        self, fleet: Fleet, run: MethodRun, history: tuple[int, ...]
    ) -> list[GroupReport]:
        """The groups' decisions and masked sums (common/report_protocol.py)."""
        keys = answers_of(fleet.broadcast("report_keys", run.run_id), bytes)
        masking = masking_setups(run.run_id, keys)
        if run.clean_share is not None:
            run.extra_stats.update(self._clean_report(fleet, run, masking))
        request = ReportRequest(
            run_id=run.run_id,
            iteration=run.report_iteration,
            history_iterations=history,
            masking=masking,
            output=self.site_output,
            share_details=self.share_site_details,
        )
        return answers_of(fleet.broadcast("final_report", request, indexed=True), GroupReport)

    def _clean_report(
        self, fleet: Fleet, run: MethodRun, masking: Mapping[int, MaskingSetup] | None
    ) -> dict[str, float | int]:
        """Clean the reported iterate of its residues at the sites (ADMM; the interior point
        cleans in its own rounds) and say what moved, for ``solver_stats``."""
        assert self.structure is not None and run.clean_share is not None
        b = self.structure.b
        request = CleanRequest(run.report_iteration, b, run.clean_share, masking)
        answers = answers_of(fleet.broadcast("clean_report", request, indexed=True), np.ndarray)
        flat = (
            unmask_sum(answers)
            if masking is not None
            else np.sum([np.asarray(a, dtype=float) for a in answers], axis=0)
        )
        served, dropped, absorb = flat.reshape(len(CLEAN_FIELDS), b.size)
        factors, restore = repair_factors(b, served, dropped, absorb)
        fleet.broadcast("finish_report", CleanFinish(factors, restore))
        return {
            "clean_share": run.clean_share,
            "rows_restored": int((restore & (dropped > 0)).sum()),
        }

    # ----------------------------------------------------------------------------------
    # Receding horizon and diagnostics

    def set_view(self, view: DemandView) -> None:
        """Take a new demand view (the next horizon); the fleet must be re-registered."""
        if (len(view.regions), len(view.classes), view.steps) != (
            self.layout.regions,
            self.layout.classes,
            self.layout.steps,
        ):
            raise ValueError("the new horizon must have the same regions, classes and steps")
        self.view = view
        self.row_scale = row_scale_of(view, self.layout)

    def shift_fleet(self, steps: int, start: Any = None) -> None:
        """Tell every site to move its horizon by ``steps`` (sites shift their ``x``)."""
        self._fleet().shift(steps, start)

    def linger_metrics(self, seconds: float) -> bool:
        """Keep this process's metrics servers up until scraped once more, or ``seconds``.

        Called by the driver at the end of a run (``--metrics-linger``) before it ends the
        actor, so that Prometheus records the final state and objective.
        """
        return linger_metrics(seconds)

    def ping_fleet(self, repeats: int = 20, request: EmptyRound | None = None) -> float:
        """Median seconds of an empty round over the fleet's actors (:meth:`RayFleet.empty_round`;
        by default each group answers nothing)."""
        fleet = self._fleet()
        if not isinstance(fleet, RayFleet):
            return 0.0
        request = EmptyRound(0, masked=False) if request is None else request
        return float(np.median([fleet.empty_round(request) for _ in range(repeats)]))
