"""Receding-horizon simulation (``thermoroute simulate``): the fleet re-solves a forecast
horizon every step, applies its first step, and is charged under the true model beside a
baseline (:mod:`thermoroute.coordinator.receding` for the model).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

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
from thermoroute.common.evaluate import TOTAL_KEYS, evaluate
from thermoroute.common.physics.latency import mean_ttft_ms
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.data import load_view
from thermoroute.coordinator.fleet import InlineFleet
from thermoroute.coordinator.receding import DEMAND_NOISE_SIGMA, BatchBacklog, InteractiveLedger
from thermoroute.launch import DistributedRunSpec
from thermoroute.receding import RecedingWindows, serve_first_step
from thermoroute.site_agent.forecast import SiteForecast

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
        served = serve_first_step(self.backlog, x, step_truth.step_seconds, deferrable)
        self.interactive.record(demand_requests, served[:, ~deferrable])
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
    launch: DistributedRunSpec,
    forecast: SiteForecast,
) -> tuple[Coordinator, Callable[[], None]]:
    """A coordinator in this process and its site agents for the horizon of ``view``
    (inline objects or Ray actors, as ``launch`` says), and the function that closes the
    agents."""
    # The harness charges the applied steps itself (it reads every site's data anyway): the
    # sites share their active GPUs with it.
    settings = launch.method_settings
    coordinator = Coordinator(view, settings, share_site_details=True)
    setup = AgentSetup(
        start=view.start, steps=view.steps, forecast=forecast,
        cost_privacy=launch.cost_privacy, max_restarts=settings.agent_restarts,
    )  # fmt: skip
    if launch.executor == "inline":
        groups = plan_groups(site_ids, launch.sites_per_agent)
        agents = create_inline_groups(source, groups, setup)
        coordinator.attach(InlineFleet(agents, groups))

        def close_inline() -> None:
            for agent in agents:
                agent.close()

        return coordinator, close_inline
    import ray

    ensure_ray(launch.address)
    pinned = site_resources() & set(site_ids)
    groups = plan_groups(site_ids, launch.sites_per_agent, pinned)
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

    from thermoroute.common import baselines
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.coordinator.receding import DemandForecaster, horizon_view

    launch = launch or DistributedRunSpec(executor="inline")
    days, horizon, start, seed, demand_sigma = (
        spec.days, spec.horizon, spec.start, spec.seed, spec.demand_sigma
    )  # fmt: skip
    baseline, warm, drain = spec.baseline, spec.warm, spec.drain
    site_forecast = spec.site_forecast or SiteForecast(seed=seed)
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
        return replace(
            view, start=view.times[h], times=view.times[sl], demand_rps=view.demand_rps[:, :, sl]
        )

    def open_fleet(h: int, steps: int) -> tuple[Coordinator, Callable[[], None]]:
        return _simulation_fleet(data_source, site_ids, window(h, steps), launch, site_forecast)

    # A local Ray this simulation starts stops with it (``launch.shutdown``, as for ``run``).
    started_ray = launch.executor == "ray" and ensure_ray(launch.address)
    try:
        coordinator, close = open_fleet(0, horizon)
        windows = RecedingWindows()
        log: list[SimulationStep] = []
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
                # A drain step's fleet is new and its horizon shorter: it starts cold.
                start_from = windows.open(coordinator, view_h, h, warm=warm and not draining)
                t0 = time.perf_counter()
                outcome = coordinator.run(warm_start=start_from)
                solve_s = time.perf_counter() - t0
                windows.remember(outcome, h)
                step_truth = truth.window(h, 1)
                demand = view.demand_rps[:, ~defer, h] * view.step_seconds
                sched = outcome.outputs.schedule
                if sched.n is None:
                    raise RuntimeError(
                        "the sites did not share their active GPUs, which the simulation charges"
                    )
                objective = plan.apply(step_truth, sched.x, sched.n, demand, defer)
                base_objective = math.nan
                if baseline is not None:
                    plan_scenario = replace(
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
    finally:
        if started_ray and launch.shutdown:
            stop_ray()
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
