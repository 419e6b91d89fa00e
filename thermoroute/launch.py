"""One distributed run: :func:`solve_distributed` wires the site agents and the coordinator
for one horizon and drives the method to the end.

It loads the coordinator's demand view, creates the site agents (plain objects, or Ray actors —
one per site, or groups of ``sites_per_agent`` sites, placed by :mod:`thermoroute.cluster`),
creates the coordinator (a Ray actor, or a plain object) and runs the method to convergence;
on Ray a lost coordinator is restarted and resumes from its checkpoint. The receding horizon
(``thermoroute simulate``) is :mod:`thermoroute.simulation`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from thermoroute.cluster import (
    AgentSetup,
    create_group_actors,
    create_inline_groups,
    discover,
    ensure_ray,
    plan_groups,
    resolve_directory,
    site_resources,
    stop_ray,
    wait_ready,
)
from thermoroute.common.aggregation_tree import DEFAULT_FAN_IN, AggregationTree
from thermoroute.common.method_protocol import EmptyRound
from thermoroute.common.scenario import DemandView
from thermoroute.coordinator.actor import CheckpointMissing, Coordinator, CoordinatorOutcome
from thermoroute.coordinator.data import load_view
from thermoroute.coordinator.events import IterationRecord, NullObserver, RunObserver
from thermoroute.coordinator.fleet import InlineFleet, Tap, restart_failure
from thermoroute.coordinator.methods import DEFAULT_METHOD, METHODS, MethodSettings, method_for
from thermoroute.coordinator.results import RunOutputs
from thermoroute.local_fleet import find_fleet
from thermoroute.site_agent.cost_privacy import CostPrivacy
from thermoroute.site_agent.subproblem import InnerSettings

log = logging.getLogger(__name__)

#: Seconds between two status polls of the driver's live display.
STATUS_POLL_S = 0.25


@dataclass
class DistributedRun:
    """The outcome of :func:`solve_distributed`.

    Attributes
    ----------
    outcome : CoordinatorOutcome
        The method's run and the outputs (write them with ``run.outputs.write(directory)``).
    executor : str
    groups : list of tuple of str
        The site ids of each agent.
    timings : dict
        ``load_s`` (demand view), ``start_s`` (Ray and actors; on Ray split into ``ray_s``
        and ``agents_s``), ``register_s``,
        ``solve_s`` (the iterations), ``reports_s``, ``total_s`` and, when measured,
        ``ping_s`` (the median empty round through the fleet, answering
        :attr:`DistributedRunSpec.ping_answer`).
    """

    outcome: CoordinatorOutcome
    executor: str
    groups: list[tuple[str, ...]]
    timings: dict[str, float] = field(default_factory=dict)
    #: Whether the run used a kept fleet's agents (:mod:`thermoroute.local_fleet`).
    kept_agents: bool = False

    @property
    def converged(self) -> bool:
        return self.outcome.converged

    @property
    def iterations(self) -> int:
        return self.outcome.iterations

    @property
    def objective_aud(self) -> float:
        return self.outcome.objective_aud

    @property
    def outputs(self) -> RunOutputs:
        return self.outcome.outputs

    @property
    def seconds_per_iteration(self) -> float:
        return self.timings.get("solve_s", math.nan) / max(self.iterations, 1)


@dataclass(frozen=True)
class DistributedRunSpec:
    """How one distributed solve is launched: everything but the scenario, travelling whole
    from the command line (:meth:`thermoroute.options.RunOptions.launch_spec`) to the drivers.

    Attributes
    ----------
    executor : {"ray", "inline"}
        Ray actors (site groups and the coordinator), or plain objects in this process.
    address : str, optional
        Ray cluster to join (``"auto"``, ``"host:6379"``); a local Ray is started otherwise.
    sites_per_agent : int
        Sites hosted by one agent.
    start, steps : optional
        The horizon; the scenario's by default.
    settings : a registered method's settings, optional
        Selects the method (:func:`thermoroute.coordinator.methods.method_for`); the default
        method's defaults if omitted.
    observers : sequence of RunObserver
        Called each iteration (inside the coordinator actor on Ray: must be picklable).
    inner : InnerSettings, optional
        The sites' OSQP settings.
    threads : int
        Solver threads per agent.
    num_cpus : int, optional
        CPUs of a locally started Ray.
    progress : callable, optional
        Called with the coordinator's :meth:`~Coordinator.status` while the run goes.
    measure_ping : bool
        Also time an empty round through the fleet after the run (Ray), for the overhead floor.
    ping_answer : EmptyRound, optional
        What each group answers in that empty round (default nothing; a benchmark asks for
        the size of the run's average answer).
    shutdown : bool
        Shut down a Ray this call started, at the end.
    tap : callable, optional
        Audit hook called with every message the coordinator receives from a site group
        (:data:`thermoroute.coordinator.fleet.Tap`; on Ray it runs inside the coordinator
        actor).
    metrics_linger_s : float
        After the run, keep the observers' metrics servers up until scraped once more or
        this many seconds, so Prometheus sees the final state and objective.
    share_site_details : bool
        The sites send their physics and totals with their decisions (the outputs then
        hold ``site_steps.csv`` and per-site totals); by default they keep them.
    site_output : path, optional
        Each site writes its own detail into ``<site_output>/<site_id>/`` on its node (a
        node setting ``THERMOROUTE_SITE_OUTPUT`` writes there instead).
    coordinator_restarts : int
        Ray: how often a lost coordinator actor is restarted and resumes from its
        checkpoint before the run fails (:class:`CoordinatorLost`).
    cost_privacy : CostPrivacy, optional
        The sites plan with private noise on their cost of IT energy
        (:mod:`thermoroute.site_agent.cost_privacy`).
    aggregation_fan_in : int
        The interior point's masked sums travel up a k-ary tree of relays with this fan-in
        (:class:`~thermoroute.common.aggregation_tree.AggregationTree`): the coordinator
        takes in at most this many answers a round; flat up to this many agents.
    """

    executor: str = "ray"
    address: str | None = None
    sites_per_agent: int = 1
    start: datetime | None = None
    steps: int | None = None
    settings: MethodSettings | None = None
    observers: Sequence[RunObserver] = ()
    inner: InnerSettings | None = None
    threads: int = 1
    num_cpus: int | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    measure_ping: bool = False
    ping_answer: EmptyRound | None = None
    shutdown: bool = False
    tap: Tap | None = None
    metrics_linger_s: float = 0.0
    share_site_details: bool = False
    site_output: str | os.PathLike[str] | None = None
    coordinator_restarts: int = 2
    cost_privacy: CostPrivacy | None = None
    aggregation_fan_in: int = DEFAULT_FAN_IN

    def __post_init__(self) -> None:
        if self.executor not in ("ray", "inline"):
            raise ValueError(f"unknown executor {self.executor!r}")

    @property
    def method_settings(self) -> MethodSettings:
        return self.settings or METHODS[DEFAULT_METHOD].settings_type()

    @property
    def agent_setup(self) -> AgentSetup:
        """What every site group of the run is started with."""
        return AgentSetup(
            start=self.start,
            steps=self.steps,
            inner=self.inner,
            threads=self.threads,
            cost_privacy=self.cost_privacy,
            max_restarts=self.method_settings.agent_restarts,
        )

    @property
    def reporting(self) -> dict[str, Any]:
        """What the coordinator is told of the sites' detail (its keyword arguments)."""
        output = self.site_output
        return {
            "share_site_details": self.share_site_details,
            "site_output": None if output is None else str(Path(output).resolve()),
        }


@dataclass(frozen=True)
class _Loaded:
    """What the drivers start from: the coordinator's view and where the sites' data are."""

    source: str | os.PathLike[str]
    view: DemandView
    site_ids: tuple[str, ...]
    t0: float
    t_load: float


def solve_distributed(
    source: str | os.PathLike[str], spec: DistributedRunSpec | None = None, **fields: Any
) -> DistributedRun:
    """Solve one horizon of a scenario with a distributed method (interior point or ADMM).

    Parameters
    ----------
    source : str or path
        Embedded scenario name, scenario directory, or ``split_scenario`` output root.
    spec : DistributedRunSpec, optional
        How to launch it; or its fields as keywords (``executor="inline"``,
        ``settings=AdmmSettings()``, …), a convenience for library callers.

    Returns
    -------
    DistributedRun
    """
    if spec is not None and fields:
        raise TypeError("give a DistributedRunSpec or its fields, not both")
    spec = spec if spec is not None else DistributedRunSpec(**fields)
    t0 = time.perf_counter()
    coordinator_dir, site_ids = discover(source)
    view = load_view(coordinator_dir, start=spec.start, steps=spec.steps)
    loaded = _Loaded(resolve_directory(source), view, tuple(site_ids), t0, time.perf_counter())
    if spec.executor == "inline":
        return _solve_inline(loaded, spec)
    return _solve_ray(loaded, spec)


class _ProgressObserver(NullObserver):
    """Forwards the coordinator's status to a progress callback (in-process runs)."""

    def __init__(self, coordinator: Coordinator, progress: Callable[[dict[str, Any]], None]):
        self.coordinator = coordinator
        self.progress = progress

    def on_iteration(self, record: IterationRecord) -> None:
        self.progress(self.coordinator.status())


def _solve_inline(loaded: _Loaded, spec: DistributedRunSpec) -> DistributedRun:
    settings = spec.method_settings
    groups = plan_groups(loaded.site_ids, spec.sites_per_agent)
    agents = create_inline_groups(loaded.source, groups, spec.agent_setup)
    watchers = list(spec.observers)
    coordinator = Coordinator(loaded.view, settings, observers=watchers, **spec.reporting)
    if spec.progress is not None:
        watchers.append(_ProgressObserver(coordinator, spec.progress))
        coordinator.observers = watchers
    tree = AggregationTree.k_ary(len(groups), spec.aggregation_fan_in)
    coordinator.attach(InlineFleet(agents, groups, tap=spec.tap, tree=tree))
    t_start = time.perf_counter()
    coordinator.register()
    t_reg = time.perf_counter()
    outcome = coordinator.run()
    if spec.progress is not None:
        # The last status has what the sites reported (the objective), as on Ray.
        spec.progress(coordinator.status())
    t_end = time.perf_counter()
    if spec.metrics_linger_s > 0:
        coordinator.linger_metrics(spec.metrics_linger_s)
    for agent in agents:
        agent.close()
    return DistributedRun(
        outcome=outcome,
        executor="inline",
        groups=groups,
        timings={
            "load_s": loaded.t_load - loaded.t0,
            "start_s": t_start - loaded.t_load,
            "register_s": t_reg - t_start,
            "solve_s": outcome.timing["iterations_s"],
            "reports_s": outcome.timing["final_reports_s"],
            "total_s": t_end - loaded.t0,
        },
    )


def _solve_ray(loaded: _Loaded, spec: DistributedRunSpec) -> DistributedRun:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    settings, restarts, progress = spec.method_settings, spec.coordinator_restarts, spec.progress
    started = ensure_ray(spec.address, spec.num_cpus)
    t_ray = time.perf_counter()
    leases = contextlib.ExitStack()
    try:
        pinned = site_resources() & set(loaded.site_ids)
        groups = plan_groups(loaded.site_ids, spec.sites_per_agent, pinned)
        # A fleet kept up on the joined cluster for this very scenario and setup
        # (`thermoroute fleet`): its agents, leased for the run; else the run's own.
        kept = find_fleet(Path(loaded.source), groups, spec.agent_setup) if spec.address else None
        if kept is not None:
            leases.enter_context(kept.leased())
            handles = list(kept.handles)
        else:
            handles = create_group_actors(loaded.source, groups, pinned, spec.agent_setup)
        # The coordinator runs on the driver's node (the head in a deployment), never on a
        # site's host: that host must hold only its own site's data and role.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # Ray restarts a lost coordinator (its constructor runs again, in a new process on
        # this node); it then resumes from the checkpoint it keeps in this directory.
        checkpoints = tempfile.TemporaryDirectory(prefix="thermoroute-coordinator-")
        remote_coordinator = ray.remote(Coordinator).options(
            num_cpus=0,
            max_concurrency=4,
            scheduling_strategy=here,
            max_restarts=restarts,
        )
        # Ray's stubs type an actor's methods as the class's own, without ``.remote``: the
        # handle is untyped from here on, as in ``_connect`` and ``_drive``.
        coordinator: Any = remote_coordinator.remote(
            loaded.view, settings, method=method_for(settings), observers=list(spec.observers),
            checkpoint=checkpoints.name, **spec.reporting,
        )  # fmt: skip
        if kept is not None:
            # On any way out, the coordinator stops before the lease ends (the exit stack
            # unwinds last in, first out): no next run shares the agents with it.
            leases.callback(ray.kill, coordinator)
        deadline = settings.solve_timeout_s
        wait_ready(handles, groups)
        t_start = time.perf_counter()
        tree = AggregationTree.k_ary(len(groups), spec.aggregation_fan_in)
        _connect(coordinator, handles, groups, spec.tap, tree, deadline)
        t_reg = time.perf_counter()
        outcome: CoordinatorOutcome | None = None
        resume = False
        for attempt in range(restarts + 1):
            try:
                outcome = _drive(coordinator, settings, progress, resume=resume)
                break
            except CheckpointMissing as error:
                raise CoordinatorLost(
                    f"the coordinator was lost and cannot resume: {error.args[0]}; no outputs "
                    "written"
                ) from None
            except ray.exceptions.RayActorError as error:
                if attempt == restarts:
                    raise CoordinatorLost(
                        f"the coordinator was lost {attempt + 1} time(s) and may restart "
                        f"{restarts}; no outputs written"
                    ) from None
                log.warning("the coordinator was lost (%s); resuming from its checkpoint",
                            str(error).splitlines()[0])  # fmt: skip
                failure = restart_failure(coordinator, deadline, deadline)
                if failure is not None:
                    lost = f"the coordinator {failure}; no outputs written"
                    raise CoordinatorLost(lost) from None
                _connect(coordinator, handles, groups, spec.tap, tree, deadline)
                resume = True
        assert outcome is not None
        checkpoints.cleanup()
        if progress is not None:
            progress(ray.get(coordinator.status.remote(), timeout=deadline))
        t_end = time.perf_counter()
        timings = {
            "load_s": loaded.t_load - loaded.t0,
            "start_s": t_start - loaded.t_load,
            # ... of which Ray's own start (or joining), then the actors' until all are ready.
            "ray_s": t_ray - loaded.t_load,
            "agents_s": t_start - t_ray,
            "register_s": t_reg - t_start,
            "solve_s": outcome.timing["iterations_s"],
            "reports_s": outcome.timing["final_reports_s"],
            "total_s": t_end - loaded.t0,
        }
        if spec.measure_ping:
            timings["ping_s"] = ray.get(
                coordinator.ping_fleet.remote(request=spec.ping_answer), timeout=deadline
            )
        if spec.metrics_linger_s > 0:
            ray.get(
                coordinator.linger_metrics.remote(spec.metrics_linger_s),
                timeout=spec.metrics_linger_s + deadline,
            )
        if kept is None:  # a fleet's agents stay; its lease's exit stack stops the coordinator
            for handle in [*handles, coordinator]:
                ray.kill(handle)
        return DistributedRun(
            outcome=outcome, executor="ray", groups=groups, timings=timings,
            kept_agents=kept is not None,
        )  # fmt: skip
    finally:
        leases.close()
        if spec.shutdown and started:
            stop_ray()


class CoordinatorLost(RuntimeError):
    """The coordinator actor died more often than it may restart, or could not resume."""


def _connect(
    coordinator: Any,
    handles: list[Any],
    groups: list[tuple[str, ...]],
    tap: Any,
    tree: AggregationTree,
    deadline: float,
) -> None:
    """Give the coordinator actor its fleet and register the sites."""
    import ray

    attached = coordinator.attach_actors.remote(handles, groups, tap=tap, tree=tree)
    ray.get(attached, timeout=deadline)
    ray.get(coordinator.register.remote(), timeout=600.0)


def _drive(
    coordinator: Any,
    settings: MethodSettings,
    progress: Callable[[dict[str, Any]], None] | None,
    *,
    resume: bool,
) -> CoordinatorOutcome:
    """Run the coordinator actor to the end, relaying its status to ``progress``."""
    import ray

    deadline = settings.solve_timeout_s
    run_ref = coordinator.run.remote(resume=resume)
    limit = settings.time_limit_s
    give_up = None if limit is None else time.perf_counter() + limit + 600.0
    while True:
        ready, _ = ray.wait([run_ref], timeout=STATUS_POLL_S)
        if ready:
            break
        if progress is not None:
            progress(ray.get(coordinator.status.remote(), timeout=deadline))
        if give_up is not None and time.perf_counter() > give_up:
            ray.get(coordinator.stop.remote(), timeout=deadline)
            give_up = None
    return ray.get(run_ref, timeout=deadline)
