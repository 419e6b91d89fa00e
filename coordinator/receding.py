"""Receding-horizon operation: the coordinator's side (demand forecasts, batch backlog).

Every step (an hour) the fleet re-solves the next horizon of ``T`` steps with a forecast,
applies only the first step, and moves on; ADMM is warm-started from the previous solution
shifted by one step (:func:`coordinator.admm.shift_state` for ``z`` and ``u``; the sites
shift their own ``x``).

Demand forecast (the coordinator's data, so its noise is applied here)
---------------------------------------------------------------------
The first step of each horizon is the current hour, whose demand is known (a nowcast: the
schedule that is applied must meet the real demand). Step ``t ≥ 1`` is the real demand times
an independent log-normal factor ``exp(σ_t ε − σ_t²/2)``, ``ε ~ N(0, 1)``, with
``σ_t = σ · sqrt(t / (T − 1))``: unbiased, and growing with the lead time to ``σ`` at the end of
the horizon (default ``σ = 0.10``, a typical day-ahead error of aggregate request rates).
The site-side signals (weather, prices, carbon) are each site's own data; their forecast
noise belongs to the site agent (:mod:`site_agent.forecast`).

Batch volume in a rolling horizon
---------------------------------
``batch.csv`` gives one volume per region and deferrable class *per horizon* (a day of
24 hourly steps in the shipped scenarios). In operation each day's volume arrives at the
start of its day (every ``steps_per_day`` steps from the start) and is added to a backlog;
each horizon must serve the whole current backlog within its ``T`` steps (the right-hand
side of a deferrable row is the backlog); what the applied first step serves is taken off
the backlog, and the remainder rolls forward to the next hour.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from common.scenario import DemandView

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

    def forecast(self, demand_rps: np.ndarray) -> np.ndarray:
        """A forecast of ``demand_rps`` (R, C, T) whose first step is exact."""
        demand = np.asarray(demand_rps, dtype=float)
        T = demand.shape[-1]
        if self.sigma == 0 or T == 1:
            return demand.copy()
        sig = self.sigma * np.sqrt(np.arange(T) / (T - 1))
        eps = self.rng.standard_normal(demand.shape)
        return demand * np.exp(sig * eps - 0.5 * sig * sig)


@dataclass
class BatchBacklog:
    """Deferrable volume that has arrived and is not yet served, per (region, class).

    Parameters
    ----------
    daily : ndarray (R, C)
        Volume arriving at the start of each day [requests].
    steps_per_day : int
    """

    daily: np.ndarray
    steps_per_day: int
    backlog: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.daily = np.asarray(self.daily, dtype=float)
        self.backlog = np.zeros_like(self.daily)

    def arrive(self, step: int) -> None:
        """Add the day's volume when ``step`` (from the simulation start) begins a day."""
        if step % self.steps_per_day == 0:
            self.backlog = self.backlog + self.daily

    def serve(self, served_requests: np.ndarray) -> None:
        """Take the applied step's served deferrable requests (R, C) off the backlog."""
        self.backlog = np.maximum(self.backlog - np.asarray(served_requests, dtype=float), 0.0)


def horizon_view(
    window: DemandView, forecaster: DemandForecaster, backlog: BatchBacklog
) -> DemandView:
    """The coordinator's view of one receding horizon: forecast demand, backlog as volume."""
    demand = forecaster.forecast(window.demand_rps)
    deferrable = np.asarray(window.classes.deferrable, dtype=bool)
    batch = np.where(deferrable[None, :], backlog.backlog, 0.0)
    return replace(window, demand_rps=demand, batch_requests=batch)
