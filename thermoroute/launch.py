"""The composition root of a distributed run: wires site agents and the coordinator.

:func:`solve_distributed` loads the coordinator's demand view, creates the site agents (plain
objects, or Ray actors — one per site, or groups of ``sites_per_agent`` sites), creates the
coordinator (a Ray actor, or a plain object) and runs exchange ADMM to convergence.
:func:`simulate` runs the same fleet in receding horizon (:mod:`thermoroute.coordinator.receding`).

This is the only place that imports both ``site_agent`` and ``coordinator``.

Placement on Ray
----------------
When the cluster offers a custom resource named ``site:<site_id>`` (``ray start --resources
'{"site:syd": 1}'`` on the node that holds the site's data), that site's agent is created
with ``resources={"site:<site_id>": 0.01}`` and so runs on that node, alone in its actor;
sites without such a resource are grouped ``sites_per_agent`` to an actor and placed by Ray.
"""

from __future__ import annotations

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

import numpy as np

from thermoroute.common.errors import SiteDataInvalid
from thermoroute.common.evaluate import TOTAL_KEYS, evaluate
from thermoroute.common.physics.latency import mean_ttft_ms
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenario_split import is_split_root
from thermoroute.common.scenarios import scenario_directory
from thermoroute.common.site_view import list_site_ids
from thermoroute.coordinator.actor import CheckpointMissing, Coordinator, CoordinatorOutcome
from thermoroute.coordinator.data import load_view
from thermoroute.coordinator.events import IterationRecord, NullObserver, RunObserver
from thermoroute.coordinator.fleet import InlineFleet, SiteGroupLost, Tap, restart_failure
from thermoroute.coordinator.methods import DEFAULT_METHOD, METHODS, MethodSettings, method_for
from thermoroute.coordinator.receding import DEMAND_NOISE_SIGMA, BatchBacklog, InteractiveLedger
from thermoroute.coordinator.results import RunOutputs
from thermoroute.isolation import in_private_network
from thermoroute.ray_auth import (
    ClusterAccessError,
    check_access,
    enable_token_mode,
    ensure_local_token,
    token_source,
)
from thermoroute.site_agent.forecast import SiteForecast
from thermoroute.site_agent.group import SiteGroup
from thermoroute.site_agent.subproblem import InnerSettings

log = logging.getLogger(__name__)

#: Fraction of a ``site:<id>`` resource an agent asks for (any positive amount pins it).
PIN_AMOUNT = 0.01
#: Seconds between two status polls of the driver's live display.
STATUS_POLL_S = 0.25


@dataclass
class DistributedRun:
    """The outcome of :func:`solve_distributed`.

    Attributes
    ----------
    outcome : CoordinatorOutcome
        ADMM result, outputs (write them with ``run.outputs.write(directory)``).
    executor : str
    groups : list of tuple of str
        The site ids of each agent.
    timings : dict
        ``load_s`` (demand view), ``start_s`` (Ray and actors), ``register_s``,
        ``solve_s`` (the iterations), ``reports_s``, ``total_s`` and, when measured,
        ``ping_s`` (one minimal fan-out/fan-in over the agents).
    """

    outcome: CoordinatorOutcome
    executor: str
    groups: list[tuple[str, ...]]
    timings: dict[str, float] = field(default_factory=dict)

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


# --------------------------------------------------------------------------------------------
# Where the data are


def resolve_directory(source: str | os.PathLike[str]) -> Path:
    """A scenario directory, a ``split_scenario`` output root, or an embedded name."""
    return scenario_directory(source)


def discover(source: str | os.PathLike[str]) -> tuple[Path, tuple[str, ...]]:
    """The coordinator's directory and the fleet's site ids behind ``source``.

    A full scenario directory holds both (its ``sites.csv`` lists the ids; only that one
    column is read here, by :func:`~thermoroute.common.site_view.list_site_ids` — the
    sites' data are read by their agents). The output root of ``thermoroute scenario
    split`` has ``coordinator/`` and one ``sites/<site_id>/`` each.

    Raises
    ------
    ScenarioError
        If ``sites.csv`` cannot name the sites (missing, bad header, bad or repeated ids).
    """
    directory = resolve_directory(source)
    if is_split_root(directory):
        ids = tuple(sorted(p.name for p in (directory / "sites").iterdir() if p.is_dir()))
        return directory / "coordinator", ids
    return directory, list_site_ids(directory)


def plan_groups(
    site_ids: Sequence[str], sites_per_agent: int, pinned: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, ...]]:
    """Agents' site lists: each pinned site alone, the others ``sites_per_agent`` at a time."""
    if sites_per_agent < 1:
        raise ValueError("sites_per_agent must be >= 1")
    groups: list[tuple[str, ...]] = [(s,) for s in site_ids if s in pinned]
    free = [s for s in site_ids if s not in pinned]
    groups += [tuple(free[k : k + sites_per_agent]) for k in range(0, len(free), sites_per_agent)]
    return groups


# --------------------------------------------------------------------------------------------
# Ray plumbing


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join ``address`` or start a local Ray; returns whether this call started it.

    Joining, the cluster is first asked whether it accepts this process's token
    (:func:`thermoroute.ray_auth.check_access`); a local Ray gets token authentication with
    an owner-only token file.

    Raises
    ------
    ClusterAccessError
        The cluster refused this driver or did not answer.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        if token_source()[0] is not None and "RAY_AUTH_MODE" not in os.environ:
            # A joining driver sends its token only in token mode, which Ray never turns
            # on by itself for a driver.
            enable_token_mode()
        if address != "auto":
            check_access(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as error:
            first = str(error).strip().splitlines()[0]
            raise ClusterAccessError(f"cannot join the Ray cluster at {address}: {first}") from None
    else:
        ensure_local_token()
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,  # not Ray's "Started a local Ray instance"
            # In a run's private network only loopback exists: say so rather than let Ray
            # probe for a route out and warn that there is none.
            **({"_node_ip_address": "127.0.0.1"} if in_private_network() else {}),
        )
    return True


def site_resources() -> set[str]:
    """Site ids for which the cluster offers a ``site:<id>`` custom resource."""
    import ray

    return {key.split(":", 1)[1] for key in ray.cluster_resources() if key.startswith("site:")}


@dataclass(frozen=True)
class AgentSetup:
    """What every site group actor of a fleet is started with.

    Attributes
    ----------
    start, steps : optional
        The horizon its sites load (the scenario's by default).
    inner : InnerSettings, optional
        The sites' OSQP settings.
    threads : int
        Solver threads per agent.
    forecast : SiteForecast, optional
        The sites plan with forecasts of their own series (real series without).
    max_restarts : int
        How often Ray restarts a crashed agent (its constructor runs again and reloads the
        sites' data; :class:`~thermoroute.coordinator.fleet.RayFleet` registers it again);
        ``-1`` without limit.
    """

    start: datetime | None = None
    steps: int | None = None
    inner: InnerSettings | None = None
    threads: int = 1
    forecast: SiteForecast | None = None
    max_restarts: int = 0


def create_group_actors(
    source: str | os.PathLike[str],
    groups: Sequence[tuple[str, ...]],
    pinned: set[str],
    setup: AgentSetup,
) -> list[Any]:
    """One ``SiteGroup`` actor per group, started with ``setup``; pinned to ``site:<id>``
    where offered."""
    import ray

    remote_group = ray.remote(SiteGroup)
    handles = []
    for group in groups:
        options: dict[str, Any] = {
            # The agents' solves are short and mostly wait for the coordinator: they need no
            # reserved CPU, so many agents share a small machine.
            "num_cpus": 0,
            "max_restarts": setup.max_restarts,
            "max_concurrency": 1,
        }
        if len(group) == 1 and group[0] in pinned:
            options["resources"] = {f"site:{group[0]}": PIN_AMOUNT}
        handles.append(
            remote_group.options(**options).remote(
                str(source),
                list(group),
                start=setup.start,
                steps=setup.steps,
                settings=setup.inner,
                threads=setup.threads,
                forecast=setup.forecast,
            )
        )
    return handles


def wait_ready(handles: Sequence[Any], groups: Sequence[tuple[str, ...]]) -> None:
    """Wait until every group actor has loaded its sites' data (in its constructor).

    Raises
    ------
    SiteDataInvalid
        A site's data failed validation on the site (only the count of problems arrives).
    SiteGroupLost
        A group failed to start for another reason (its first line).
    """
    import ray

    for handle, group in zip(handles, groups, strict=True):
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=600.0)
        except ray.exceptions.ActorDiedError as error:
            # Ray carries a failed constructor's exception as text; its last line is ours.
            last = str(error).strip().splitlines()[-1]
            kind, _, message = last.partition(": ")
            if kind.endswith("SiteDataInvalid") and (
                invalid := SiteDataInvalid.from_message(message)
            ):
                raise invalid from None
            raise SiteGroupLost(f"site group {list(group)} failed to start: {last}") from None


# --------------------------------------------------------------------------------------------


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
        Also time one minimal fan-out/fan-in over the agents (Ray), for the overhead floor.
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
    shutdown: bool = False
    tap: Tap | None = None
    metrics_linger_s: float = 0.0
    share_site_details: bool = False
    site_output: str | os.PathLike[str] | None = None
    coordinator_restarts: int = 2

    def __post_init__(self) -> None:
        if self.executor not in ("ray", "inline"):
            raise ValueError(f"unknown executor {self.executor!r}")

    @property
    def method_settings(self) -> MethodSettings:
        return self.settings or METHODS[DEFAULT_METHOD].settings_type()

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
    agents = [
        SiteGroup(
            loaded.source, list(g), start=spec.start, steps=spec.steps, settings=spec.inner,
            threads=spec.threads,
        )
        for g in groups
    ]  # fmt: skip
    watchers = list(spec.observers)
    coordinator = Coordinator(loaded.view, settings, observers=watchers, **spec.reporting)
    if spec.progress is not None:
        watchers.append(_ProgressObserver(coordinator, spec.progress))
        coordinator.observers = watchers
    coordinator.attach(InlineFleet(agents, groups, tap=spec.tap))
    t_start = time.perf_counter()
    coordinator.register()
    t_reg = time.perf_counter()
    outcome = coordinator.run()
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
    try:
        pinned = site_resources() & set(loaded.site_ids)
        groups = plan_groups(loaded.site_ids, spec.sites_per_agent, pinned)
        setup = AgentSetup(
            start=spec.start, steps=spec.steps, inner=spec.inner, threads=spec.threads,
            max_restarts=settings.agent_restarts,
        )  # fmt: skip
        handles = create_group_actors(loaded.source, groups, pinned, setup)
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
        coordinator = remote_coordinator.remote(
            loaded.view, settings, method=method_for(settings), observers=list(spec.observers),
            checkpoint=checkpoints.name, **spec.reporting,
        )  # fmt: skip
        deadline = settings.solve_timeout_s
        wait_ready(handles, groups)
        t_start = time.perf_counter()
        _connect(coordinator, handles, groups, spec.tap, deadline)
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
                _connect(coordinator, handles, groups, spec.tap, deadline)
                resume = True
        assert outcome is not None
        checkpoints.cleanup()
        if progress is not None:
            progress(ray.get(coordinator.status.remote(), timeout=deadline))
        t_end = time.perf_counter()
        timings = {
            "load_s": loaded.t_load - loaded.t0,
            "start_s": t_start - loaded.t_load,
            "register_s": t_reg - t_start,
            "solve_s": outcome.timing["iterations_s"],
            "reports_s": outcome.timing["final_reports_s"],
            "total_s": t_end - loaded.t0,
        }
        if spec.measure_ping:
            timings["ping_s"] = ray.get(coordinator.ping_fleet.remote(), timeout=deadline)
        if spec.metrics_linger_s > 0:
            ray.get(
                coordinator.linger_metrics.remote(spec.metrics_linger_s),
                timeout=spec.metrics_linger_s + deadline,
            )
        for handle in [*handles, coordinator]:
            ray.kill(handle)
        return DistributedRun(outcome=outcome, executor="ray", groups=groups, timings=timings)
    finally:
        if spec.shutdown and started:
            ray.shutdown()


class CoordinatorLost(RuntimeError):
    """The coordinator actor died more often than it may restart, or could not resume."""


def _connect(
    coordinator: Any, handles: list[Any], groups: list[tuple[str, ...]], tap: Any, deadline: float
) -> None:
    """Give the coordinator actor its fleet and register the sites."""
    import ray

    ray.get(coordinator.attach_actors.remote(handles, groups, tap=tap), timeout=deadline)
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


# --------------------------------------------------------------------------------------------
# Receding horizon


#: Relative difference [–] within which two plans' served requests count as equal work
#: (their totals may then be compared as a saving).
EQUAL_WORK_RTOL = 1e-6
#: Deferrable requests left [share of those arrived] below which a backlog is empty and the
#: drain may stop early: a plan meeting its rows to round-off leaves about 1e-15 of it.
EMPTY_RTOL = 1e-9


@dataclass
class SimulationStep:
    """One applied step of a receding-horizon simulation.

    ``objective_aud`` and ``baseline_objective_aud`` [AUD] charge the applied step under the
    true model; ``drain`` marks the steps after the simulated days (no new deferrable volume,
    the horizon shortened to the deadline); ``solve_s`` [s] is the distributed solve.
    """

    step: int
    time: datetime
    iterations: int
    converged: bool
    objective_aud: float
    baseline_objective_aud: float
    solve_s: float
    drain: bool = False


@dataclass(frozen=True)
class Work:
    """The requests one plan met over a simulation [requests].

    Interactive requests arrive with the demand of each applied step and are served or left
    (they cannot wait); deferrable ones arrive with each day's volume and are served or left
    waiting in the backlog at the end. ``arrived = served + left`` for each.
    """

    interactive_arrived: float
    interactive_served: float
    interactive_left: float
    deferrable_arrived: float
    deferrable_served: float
    deferrable_left: float

    @property
    def arrived(self) -> float:
        return self.interactive_arrived + self.deferrable_arrived

    @property
    def served(self) -> float:
        return self.interactive_served + self.deferrable_served

    @property
    def left(self) -> float:
        return self.interactive_left + self.deferrable_left

    @property
    def drained(self) -> bool:
        """Whether the deferrable backlog is empty to :data:`EQUAL_WORK_RTOL` of the arrived
        volume: a distributed solve may miss its rows by that much where capacity binds."""
        return self.deferrable_left <= EQUAL_WORK_RTOL * max(self.deferrable_arrived, 1.0)

    def aud_per_1000(self, objective_aud: float) -> float:
        """``objective_aud`` [AUD] per 1,000 served requests [AUD]."""
        return 1000.0 * objective_aud / self.served if self.served > 0 else math.nan


@dataclass
class _PlanBook:
    """What one plan of a simulation has applied: its totals under the true model, the
    interactive requests it met and its deferrable backlog."""

    backlog: BatchBacklog
    interactive: InteractiveLedger = field(default_factory=InteractiveLedger)
    totals: dict[str, float] = field(default_factory=dict)

    def apply(
        self,
        step_truth: Scenario,
        x: np.ndarray,
        n: np.ndarray,
        demand_requests: np.ndarray,
        deferrable: np.ndarray,
    ) -> float:
        """Charge the first step of the plan ``(x, n)`` under ``step_truth`` and count what it
        served against the step's interactive ``demand_requests`` and the backlog; returns
        the step's objective [AUD]."""
        applied = evaluate(step_truth, x[..., :1], n[:, :1])
        _accumulate(self.totals, applied)
        served = x[:, :, :, 0].sum(axis=0) * step_truth.step_seconds
        self.interactive.record(demand_requests, served[:, ~deferrable])
        self.backlog.serve(served * deferrable[None, :])
        return applied.objective_aud

    def empty(self) -> bool:
        """Whether the backlog is empty to :data:`EMPTY_RTOL` of the arrived volume."""
        return self.backlog.backlog.sum() <= EMPTY_RTOL * max(self.backlog.arrived, 1.0)

    def work(self) -> Work:
        return Work(
            interactive_arrived=self.interactive.arrived,
            interactive_served=self.interactive.served,
            interactive_left=self.interactive.left,
            deferrable_arrived=self.backlog.arrived,
            deferrable_served=self.backlog.served,
            deferrable_left=float(self.backlog.backlog.sum()),
        )


@dataclass
class SimulationResult:
    """Per-step log, cumulative totals of the applied steps and the work each plan did.

    Attributes
    ----------
    steps : list of SimulationStep
    totals, baseline_totals : dict
        Sums over the applied steps (:data:`thermoroute.common.evaluate.TOTAL_KEYS`,
        ``objective_aud`` [AUD], ``interactive_requests``; ``ttft_mean_ms`` a mean [ms]).
    baseline : str
        The baseline's name (empty without one).
    work, baseline_work : Work
        What each plan served; ``baseline_work`` is ``None`` without a baseline.
    arrival_steps : int
        Steps with deferrable arrivals (the simulated days); the rest are drain steps.
    drain : bool
        Whether the simulation was asked to drain the backlogs.
    settings : dict
        Horizon, forecast errors and seed.
    """

    steps: list[SimulationStep]
    totals: dict[str, float]
    baseline_totals: dict[str, float]
    baseline: str
    work: Work
    baseline_work: Work | None
    arrival_steps: int
    drain: bool
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> list[int]:
        return [s.iterations for s in self.steps]

    @property
    def drain_steps(self) -> int:
        return sum(s.drain for s in self.steps)

    @property
    def drained(self) -> bool:
        """Whether every plan ended with its deferrable backlog empty."""
        return self.work.drained and (self.baseline_work is None or self.baseline_work.drained)

    @property
    def equal_work(self) -> bool:
        """Whether both plans served the same requests (to :data:`EQUAL_WORK_RTOL`): only
        then is the difference of their totals a saving. ``False`` without a baseline."""
        if self.baseline_work is None:
            return False
        a, b = self.work.served, self.baseline_work.served
        return abs(a - b) <= EQUAL_WORK_RTOL * max(abs(a), abs(b))

    @property
    def objective_difference_aud(self) -> float | None:
        """The plan's objective minus the baseline's [AUD]; ``None`` unless equal work."""
        if not self.equal_work:
            return None
        return self.totals["objective_aud"] - self.baseline_totals["objective_aud"]

    @property
    def aud_per_1000_served(self) -> float:
        """The plan's objective per 1,000 served requests [AUD]."""
        return self.work.aud_per_1000(self.totals.get("objective_aud", math.nan))

    @property
    def baseline_aud_per_1000_served(self) -> float:
        """The baseline's objective per 1,000 served requests [AUD] (NaN without one)."""
        if self.baseline_work is None:
            return math.nan
        return self.baseline_work.aud_per_1000(self.baseline_totals.get("objective_aud", math.nan))


def _accumulate(total: dict[str, float], evaluation: Any) -> None:
    part = evaluation.per_site_step
    for key in (*TOTAL_KEYS, "interactive_requests", "objective_aud"):
        if key != "ttft_mean_ms":
            total[key] = total.get(key, 0.0) + float(np.sum(part[key]))
    total["ttft_mean_ms"] = float(
        mean_ttft_ms(total.get("latency_req_s", 0.0), total.get("interactive_requests", 0.0))
    )


def _simulation_fleet(
    source: Path,
    site_ids: Sequence[str],
    view: DemandView,
    *,
    executor: str,
    address: str | None,
    sites_per_agent: int,
    settings: MethodSettings,
    forecast: SiteForecast,
) -> tuple[Coordinator, Callable[[], None]]:
    """A coordinator in this process and its site agents for the horizon of ``view``
    (inline objects or Ray actors), and the function that closes the agents."""
    # The harness charges the applied steps itself (it reads every site's data anyway): the
    # sites share their active GPUs with it.
    coordinator = Coordinator(view, settings, share_site_details=True)
    if executor == "inline":
        groups = plan_groups(site_ids, sites_per_agent)
        agents = [
            SiteGroup(source, list(g), start=view.start, steps=view.steps, forecast=forecast)
            for g in groups
        ]
        coordinator.attach(InlineFleet(agents, groups))

        def close_inline() -> None:
            for agent in agents:
                agent.close()

        return coordinator, close_inline
    import ray

    ensure_ray(address)
    pinned = site_resources() & set(site_ids)
    groups = plan_groups(site_ids, sites_per_agent, pinned)
    setup = AgentSetup(
        start=view.start, steps=view.steps, forecast=forecast,
        max_restarts=settings.agent_restarts,
    )  # fmt: skip
    handles = create_group_actors(source, groups, pinned, setup)
    wait_ready(handles, groups)
    coordinator.attach_actors(handles, groups)

    def close_ray() -> None:
        for handle in handles:
            ray.kill(handle)

    return coordinator, close_ray


@dataclass(frozen=True)
class SimulationSpec:
    """What a receding-horizon simulation operates (:func:`simulate`).

    Attributes
    ----------
    days : float
        Days with arrivals.
    horizon : int
        Steps per re-solve.
    start : datetime, optional
        The first step (the scenario's default horizon's by default).
    seed : int
        Seed of the forecast noise (the coordinator's demand, the sites' own series).
    demand_sigma : float
        The coordinator's demand forecast error (:class:`DemandForecaster`).
    site_forecast : SiteForecast, optional
        How each site forecasts its own series; noisy with ``seed`` by default,
        ``SiteForecast.perfect()`` plans with the real series.
    baseline : str or None
        The plan compared against (``temperature-unaware``), or none.
    warm : bool
        Warm-start each step from the last (``False``: every step cold, to measure what the
        warm starts save).
    drain : bool
        Drain both backlogs after ``days`` (docs/model.md §10).
    """

    days: float
    horizon: int = 24
    start: datetime | None = None
    seed: int = 0
    demand_sigma: float = DEMAND_NOISE_SIGMA
    site_forecast: SiteForecast | None = None
    baseline: str | None = "temperature-unaware"
    warm: bool = True
    drain: bool = True


def simulate(
    source: str | os.PathLike[str],
    spec: SimulationSpec,
    launch: DistributedRunSpec | None = None,
    progress: Callable[[SimulationStep], None] | None = None,
) -> SimulationResult:
    """Receding-horizon operation (:mod:`thermoroute.coordinator.receding`): each step
    re-solves the next ``spec.horizon`` steps with a forecast, applies the first and
    warm-starts the next solve.

    The coordinator runs in this process; the site agents are plain objects or Ray actors
    (``launch.executor``, ``"inline"`` by default), solving with ``launch.settings`` (the
    interior point by default). The baseline (``temperature-unaware``, planned by
    :func:`thermoroute.common.baselines.temperature_unaware` on each window with the same
    demand forecasts and its own batch backlog) is run the same way. Both applied schedules
    are charged under the true model; charging needs every site's data, so the simulation
    harness (not the coordinator) reads the whole scenario for that.

    Forecasts: the coordinator forecasts demand
    (:class:`thermoroute.coordinator.receding.DemandForecaster`, ``spec.demand_sigma``); each
    site agent forecasts its own weather, price and carbon
    (:class:`thermoroute.site_agent.forecast.SiteForecast`, default errors unless
    ``spec.site_forecast`` is given; ``SiteForecast.perfect()`` plans with the real series).
    The baseline plans with the real site series (it has no site agents), which favours it
    slightly.

    Draining (``spec.drain``, the default; :mod:`thermoroute.coordinator.receding`): after
    ``spec.days`` no deferrable volume arrives and each further step plans a horizon shortened
    to end where the last full one ended, so both plans must serve their backlogs by then;
    interactive demand goes on as usual meanwhile, for both. The drain stops once both
    backlogs are empty, after at most ``horizon − 1`` steps, and needs no data beyond the
    days' last horizon. Its horizons change length every step, so they are solved cold (a new
    fleet each). Without it the simulation stops after the days, backlogs and all: the plans
    have then served different work (:attr:`SimulationResult.equal_work`).

    ``spec.warm = False`` solves every step cold (to measure what the warm starts save).
    """
    from dataclasses import replace as _replace

    from thermoroute.common import baselines
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.coordinator.receding import DemandForecaster, horizon_view

    launch = launch or DistributedRunSpec(executor="inline")
    days, horizon, start, seed, demand_sigma = (
        spec.days, spec.horizon, spec.start, spec.seed, spec.demand_sigma
    )  # fmt: skip
    baseline, warm, drain = spec.baseline, spec.warm, spec.drain
    site_forecast = spec.site_forecast or SiteForecast(seed=seed)
    executor, address, sites_per_agent = launch.executor, launch.address, launch.sites_per_agent
    settings = launch.method_settings
    coordinator_dir, site_ids = discover(source)
    data_source = resolve_directory(source)
    first = load_view(coordinator_dir, start=start)
    per_day = round(24.0 / first.step_hours)
    n_steps = max(1, round(days * per_day))
    # The last full horizon ends at ``span``: the data the days need, and the drain's deadline.
    span = n_steps + horizon - 1
    view = load_view(coordinator_dir, start=first.start, steps=span)
    truth = load_scenario(data_source, start=first.start, steps=span)
    daily = view.batch_requests  # volume per horizon of the file: one day (module docs)
    forecaster = DemandForecaster(demand_sigma, seed)
    plan, base = _PlanBook(BatchBacklog(daily, per_day)), _PlanBook(BatchBacklog(daily, per_day))
    books = (plan, base) if baseline is not None else (plan,)
    defer = np.asarray(view.classes.deferrable, dtype=bool)

    def window(h: int, steps: int) -> DemandView:
        sl = slice(h, h + steps)
        return _replace(
            view, start=view.times[h], times=view.times[sl], demand_rps=view.demand_rps[:, :, sl]
        )

    def open_fleet(h: int, steps: int) -> tuple[Coordinator, Callable[[], None]]:
        return _simulation_fleet(
            data_source, site_ids, window(h, steps), executor=executor, address=address,
            sites_per_agent=sites_per_agent, settings=settings, forecast=site_forecast,
        )  # fmt: skip

    coordinator, close = open_fleet(0, horizon)
    layout = coordinator.layout
    log: list[SimulationStep] = []
    prev_state = prev_structure = None
    try:
        for h in range(span if drain else n_steps):
            draining = h >= n_steps
            if draining and all(book.empty() for book in books):
                break
            # Draining, the horizon ends at the deadline; before, it is a full one.
            steps_h = span - h if draining else horizon
            if not draining:
                for book in (plan, base):
                    book.backlog.arrive(h)
            view_h = horizon_view(window(h, steps_h), forecaster, plan.backlog, horizon - 1)
            if draining:
                close()
                coordinator, close = open_fleet(h, steps_h)
            elif h:
                coordinator.shift_fleet(1)
            coordinator.set_view(view_h)
            coordinator.register()
            start_from = None
            if warm and prev_state is not None and not draining:
                shift = method_for(settings).shift
                start_from = shift(prev_state, prev_structure, coordinator.structure, layout, 1)
            t0 = time.perf_counter()
            outcome = coordinator.run(warm_start=start_from)
            solve_s = time.perf_counter() - t0
            prev_state, prev_structure = outcome.run.state, outcome.structure
            step_truth = truth.window(h, 1)
            demand = view.demand_rps[:, ~defer, h] * view.step_seconds
            sched = outcome.outputs.schedule
            objective = plan.apply(step_truth, sched.x, sched.n, demand, defer)
            base_objective = math.nan
            if baseline is not None:
                plan_scenario = _replace(
                    truth.window(h, steps_h),
                    demand_rps=view_h.demand_rps,
                    batch_requests=np.where(defer[None, :], base.backlog.backlog, 0.0),
                )
                planned = baselines.temperature_unaware(plan_scenario)
                base_objective = base.apply(step_truth, planned.x, planned.n, demand, defer)
            row = SimulationStep(
                step=h,
                time=view.times[h],
                iterations=outcome.iterations,
                converged=outcome.converged,
                objective_aud=objective,
                baseline_objective_aud=base_objective,
                solve_s=solve_s,
                drain=draining,
            )
            log.append(row)
            if progress is not None:
                progress(row)
    finally:
        close()
    return SimulationResult(
        steps=log,
        totals=plan.totals,
        baseline_totals=base.totals,
        baseline=baseline or "",
        work=plan.work(),
        baseline_work=None if baseline is None else base.work(),
        arrival_steps=n_steps,
        drain=drain,
        settings={
            "horizon": horizon,
            "demand_sigma": demand_sigma,
            "dry_bulb_sigma_c": site_forecast.dry_bulb_sigma_c,
            "price_sigma": site_forecast.price_sigma,
            "carbon_sigma": site_forecast.carbon_sigma,
            "seed": seed,
        },
    )


# --------------------------------------------------------------------------------------------
# thermoroute serve: long-lived agents


#: A service's agents are restarted as often as they crash (over days, not one run).
SERVE_RESTARTS = 1_000_000


def serve_fleet(
    source: str | os.PathLike[str],
    site_ids: Sequence[str],
    *,
    executor: str = "ray",
    address: str | None = None,
    sites_per_agent: int = 1,
    timeout_s: float = 120.0,
) -> Callable[[datetime, int], tuple[Any, Callable[[], None]]]:
    """A ``fleet_factory`` for :class:`thermoroute.service.PlanningService`: the site agents
    as Ray actors placed as ``run`` places them (``site:<id>`` resources pin a site to its
    VM), restarted by Ray whenever they crash, or in this process (``executor="inline"``).
    """

    def build(start: datetime, horizon: int) -> tuple[Any, Callable[[], None]]:
        if executor == "inline":
            groups = plan_groups(site_ids, sites_per_agent)
            agents = [
                SiteGroup(source, list(g), start=start, steps=horizon, threads=1) for g in groups
            ]

            def close_inline() -> None:
                for agent in agents:
                    agent.close()

            return InlineFleet(agents, groups), close_inline
        import ray

        from thermoroute.coordinator.fleet import RayFleet

        started = ensure_ray(address)
        pinned = site_resources() & set(site_ids)
        groups = plan_groups(site_ids, sites_per_agent, pinned)
        setup = AgentSetup(start=start, steps=horizon, max_restarts=-1)
        handles = create_group_actors(source, groups, pinned, setup)
        wait_ready(handles, groups)
        fleet = RayFleet(handles, groups, timeout_s=timeout_s, restarts=SERVE_RESTARTS)

        def close_ray() -> None:
            fleet.close()
            for handle in handles:
                ray.kill(handle)
            if started:
                ray.shutdown()

        return fleet, close_ray

    return build


def cluster_summary() -> dict[str, Any] | None:
    """The Ray cluster as ``thermoroute status`` shows it (``None`` without Ray)."""
    import ray

    if not ray.is_initialized():
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    return {
        "nodes": len(nodes),
        "cpus": float(total.get("CPU", 0.0)),
        "site_resources": sorted(k.split(":", 1)[1] for k in total if k.startswith("site:")),
    }
