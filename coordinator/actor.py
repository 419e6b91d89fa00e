"""The coordinator: holds the demand view, the coupling layout and the duals; runs the loop.

:class:`Coordinator` is a plain class. In-process it is used as is (``executor="inline"``);
on Ray the composition root wraps it with ``ray.remote`` as a *threaded* actor
(``max_concurrency > 1``) so that :meth:`Coordinator.status` answers the driver's live
display while :meth:`Coordinator.run` is iterating in another thread.

The coordinator reaches the sites only through a :class:`coordinator.fleet.Fleet`; what it
receives from them is served demand per iteration and, at the end, their final reports.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.evaluate import objective_parts_aud
from common.report_protocol import GroupReport, ReportRequest
from common.scenario import DemandView
from common.secure_aggregation import MaskingSetup, neighbour_graph
from coordinator.admm import AdmmSettings, ExchangeStructure, build_structure
from coordinator.data import layout_of, row_scale_of
from coordinator.events import RunObserver
from coordinator.fleet import Fleet, RayFleet, Tap
from coordinator.methods import MethodRun, MethodSettings, method_for
from coordinator.metrics import linger as linger_metrics
from coordinator.metrics import notify_objective
from coordinator.results import RunOutputs, assemble, history_of


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
        """Iterations as the method counts them (ADMM: with its polishing solves)."""
        return int(getattr(self.run.result, "iterations", self.run.iterations))

    @property
    def objective_aud(self) -> float:
        return self.outputs.objective_aud


class Coordinator:
    """The coordinator of one fleet, for any registered distributed method.

    Parameters
    ----------
    view : DemandView
        Demand, batch volumes, regions and classes: everything the coordinator knows.
    settings : AdmmSettings or IpmSettings
        The method is the one whose settings these are (:func:`coordinator.methods.method_for`).
    observers : sequence of RunObserver
        Called each iteration (coordinator/events.py); on Ray they run inside the actor.
    run_id : str, optional
    share_site_details : bool
        Ask the sites to send their physics and totals with their decisions (the
        operator's ``--share-site-details``); by default they keep them.
    site_output : str, optional
        Where each site writes its own detail, ``<site_output>/<site_id>/`` (a node that
        sets ``THERMOROUTE_SITE_OUTPUT`` uses its own directory); ``None``: nowhere.
    """

    def __init__(
        self,
        view: DemandView,
        settings: MethodSettings | None = None,
        *,
        observers: Sequence[RunObserver] = (),
        run_id: str | None = None,
        share_site_details: bool = False,
        site_output: str | None = None,
    ) -> None:
        self.view = view
        self.share_site_details = share_site_details
        self.site_output = site_output
        self.settings = settings or AdmmSettings()
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
    ) -> None:
        """Reach site-group actors through a :class:`RayFleet` (called inside the actor)."""
        self.fleet = RayFleet(
            handles,
            group_site_ids,
            timeout_s=self.settings.solve_timeout_s if timeout_s is None else timeout_s,
            restarts=self.settings.agent_restarts,
            tap=tap,
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
        # The sites build their ADMM subproblem at registration whatever the method (an
        # interior point reads its problem data from it): ADMM's initial ρ, or the default.
        rho = self.settings.rho if isinstance(self.settings, AdmmSettings) else AdmmSettings.rho
        supports = fleet.register(self.layout, self.row_scale, rho)
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
                "method": method_for(self.settings).name,
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
        self, warm_start: Any = None, settings: MethodSettings | None = None
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
        """
        if self.structure is None:
            self.register()
        assert self.structure is not None
        fleet = self._fleet()
        cfg = settings or self.settings
        self._stop.clear()
        method_cls = method_for(cfg)
        with self._lock:
            self._status = {
                "state": "running",
                "run_id": self.run_id,
                "method": method_cls.name,
                "iteration": 0,
            }
        method = method_cls(self.structure, self.layout, cfg, warm_start, run_id=self.run_id)
        run = method.run(
            fleet, self.observers, on_status=self._on_status, should_stop=self._stop.is_set
        )
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

    def _final_reports(
        self, fleet: Fleet, run: MethodRun, history: tuple[int, ...]
    ) -> list[GroupReport]:
        """The groups' decisions and masked sums (common/report_protocol.py)."""
        keys = fleet.broadcast("report_keys", run.run_id)
        masking = None
        if len(keys) > 1:
            graph = neighbour_graph(len(keys), secrets.randbits(63))
            masking = {
                g: MaskingSetup(run.run_id, g, {j: keys[j] for j in graph[g]})
                for g in range(len(keys))
            }
        request = ReportRequest(
            run_id=run.run_id,
            iteration=run.report_iteration,
            history_iterations=history,
            masking=masking,
            output=self.site_output,
            share_details=self.share_site_details,
        )
        return fleet.broadcast("final_report", request, indexed=True)

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

    def ping_fleet(self, repeats: int = 20) -> float:
        """Median seconds of one minimal fan-out/fan-in over the fleet's actors."""
        fleet = self._fleet()
        if not isinstance(fleet, RayFleet):
            return 0.0
        return float(np.median([fleet.ping() for _ in range(repeats)]))
