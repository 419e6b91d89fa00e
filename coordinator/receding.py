"""Receding-horizon operation: the coordinator's side (demand forecasts, batch backlog).

Every step (an hour) the fleet re-solves the next horizon of ``T`` steps with a forecast,
applies only the first step, and moves on; ADMM is warm-started from the previous solution
shifted by one step (:func:`thermoroute.coordinator.admm.shift_state` for ``z`` and ``u``; the sites
shift their own ``x``).

Demand forecast (the coordinator's data, so its noise is applied here)
---------------------------------------------------------------------
The first step of each horizon is the current hour, whose demand is known (a nowcast: the
schedule that is applied must meet the real demand). Step ``t ≥ 1`` is the real demand times
an independent log-normal factor ``exp(σ_t ε − σ_t²/2)``, ``ε ~ N(0, 1)``, with
``σ_t = σ · sqrt(t / (T − 1))``: unbiased, and growing with the lead time to ``σ`` at the end of
the horizon (default ``σ = 0.10``, a typical day-ahead error of aggregate request rates).
The site-side signals (weather, prices, carbon) are each site's own data; their forecast
noise belongs to the site agent (:mod:`thermoroute.site_agent.forecast`).

Batch volume in a rolling horizon
---------------------------------
``batch.csv`` gives one volume per region and deferrable class *per horizon* (a day of
24 hourly steps in the shipped scenarios). In operation each day's volume arrives at the
start of its day (every ``steps_per_day`` steps from the start) and is added to a backlog;
each horizon must serve the whole current backlog within its ``T`` steps (the right-hand
side of a deferrable row is the backlog); what the applied first step serves is taken off
the backlog, and the remainder rolls forward to the next hour.

Draining
--------
A rolling horizon defers forever: at the end of the simulated days most of the last day's
volume is still planned for hours beyond them. Two plans compared over those days have then
served different work, and the difference of their costs is no saving. The simulation
therefore drains (:func:`thermoroute.simulation.simulate`): after the simulated days no volume
arrives, and the horizons shrink to end where the last full horizon ended, so the backlog is
due by that deadline, at most ``T − 1`` steps later, within the data the days already
needed. Interactive demand goes on as usual while draining, for both plans alike.
:class:`InteractiveLedger` and :class:`BatchBacklog` count what arrived, was served and was
left, in requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from thermoroute.common.scenario import DemandView

#: Default relative error (1 σ) of the demand forecast at the end of the horizon.
DEMAND_NOISE_SIGMA = 0.10


@dataclass
class DemandForecaster:
    """Noisy forecasts of interactive demand (see the module docstring).

    Parameters
    ----------
    sigma : float
        Log-normal σ at the last step of the horizon; 0 gives perfect forecasts.
    seed : int
    """

    sigma: float = DEMAND_NOISE_SIGMA
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ValueError("sigma must be >= 0")
        self.rng = np.random.default_rng(self.seed)

    def forecast(self, demand_rps: np.ndarray, lead_steps: int | None = None) -> np.ndarray:
        """A forecast of ``demand_rps`` (R, C, T) whose first step is exact.

        ``lead_steps`` is the lead time [steps] at which the error reaches ``sigma``; ``T − 1``
        by default. A shortened horizon (draining) passes the full one's, so that its error
        still grows with the lead time, not with the window's length.
        """
        demand = np.asarray(demand_rps, dtype=float)
        T = demand.shape[-1]
        lead = T - 1 if lead_steps is None else lead_steps
        if self.sigma == 0 or T == 1 or lead < 1:
            return demand.copy()
        sig = self.sigma * np.sqrt(np.arange(T) / lead)
        eps = self.rng.standard_normal(demand.shape)
        return demand * np.exp(sig * eps - 0.5 * sig * sig)


@dataclass
class InteractiveLedger:
    """Interactive requests of the applied steps: arrived, served and left unserved.

    An applied step serves the real demand of its hour (the nowcast is exact); what a plan
    would serve beyond the demand is no extra work, and what it misses is left (it cannot
    wait). All three are in requests.
    """

    arrived: float = 0.0
    served: float = 0.0
    left: float = 0.0

    def record(self, demand_requests: np.ndarray, served_requests: np.ndarray) -> None:
        """Count one applied step: its demand and what the plan served, per (region, class)
        of the interactive classes [requests]."""
        demand = np.asarray(demand_requests, dtype=float)
        met = np.minimum(np.asarray(served_requests, dtype=float), demand)
        self.arrived += float(demand.sum())
        self.served += float(met.sum())
        self.left += float((demand - met).sum())


@dataclass
class BatchBacklog:
    """Deferrable volume that has arrived and is not yet served, per (region, class).

    Parameters
    ----------
    daily : ndarray (R, C)
        Volume arriving at the start of each day [requests].
    steps_per_day : int

    Attributes
    ----------
    backlog : ndarray (R, C)
        Arrived and not yet served [requests].
    arrived, served : float
        Totals since the start [requests]; ``arrived = served + backlog.sum()``.
    """

    daily: np.ndarray
    steps_per_day: int
    backlog: np.ndarray = field(init=False)
    arrived: float = field(init=False, default=0.0)
    served: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.daily = np.asarray(self.daily, dtype=float)
        self.backlog = np.zeros_like(self.daily)

    def arrive(self, step: int) -> None:
        """Add the day's volume when ``step`` (from the simulation start) begins a day."""
        if step % self.steps_per_day == 0:
            self.backlog = self.backlog + self.daily
            self.arrived += float(self.daily.sum())

    def serve(self, served_requests: np.ndarray) -> None:
        """Take the applied step's served deferrable requests (R, C) off the backlog; what a
        plan serves beyond the backlog (solver round-off) is no work and not counted."""
        met = np.minimum(np.asarray(served_requests, dtype=float), self.backlog)
        self.backlog = self.backlog - met
        self.served += float(met.sum())


def horizon_view(
    window: DemandView,
    forecaster: DemandForecaster,
    backlog: BatchBacklog,
    lead_steps: int | None = None,
) -> DemandView:
    """The coordinator's view of one receding horizon: forecast demand, backlog as volume.

    ``lead_steps``: see :meth:`DemandForecaster.forecast`.
    """
    demand = forecaster.forecast(window.demand_rps, lead_steps)
    deferrable = np.asarray(window.classes.deferrable, dtype=bool)
    batch = np.where(deferrable[None, :], backlog.backlog, 0.0)
    return replace(window, demand_rps=demand, batch_requests=batch)
