"""Prometheus metrics of ``thermoroute serve``: one series per cycle's figures, over days.

All on a registry of their own, served at the HTTP API's ``/metrics``. The plan's age and the
sites' states are read when Prometheus scrapes, so they are never older than the scrape.
Alert rules on them: ``deploy/thermoroute-alerts.yml``.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from thermoroute.observed_demand import REASONS

PREFIX = "thermoroute_service"


class ServiceMetrics:
    """The service's metrics (:class:`thermoroute.service.PlanningService` feeds them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycles = Counter(
            f"{PREFIX}_cycles", "Planning cycles run, by outcome (planned, kept_previous)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.cycle = Gauge(f"{PREFIX}_cycle", "The last cycle's number", registry=r)
        self.iterations = Gauge(
            f"{PREFIX}_last_cycle_iterations", "Iterations of the last cycle's method", registry=r
        )
        self.duration = Gauge(
            f"{PREFIX}_last_cycle_seconds", "Wall time of the last cycle [s]", registry=r
        )
        self.converged = Gauge(
            f"{PREFIX}_last_cycle_converged", "1 if the last cycle's method converged", registry=r
        )
        self.kept_previous = Gauge(
            f"{PREFIX}_last_cycle_kept_previous",
            "1 if the last cycle kept the previous plan (did not converge in time, or failed)",
            registry=r,
        )
        self.plan_age = Gauge(
            f"{PREFIX}_plan_age_seconds", "Age of the published plan [s] (NaN: none yet)",
            registry=r,
        )  # fmt: skip
        self.plan_stale = Gauge(
            f"{PREFIX}_plan_stale", "1 if the published plan is older than the maximum age",
            registry=r,
        )  # fmt: skip
        self.sites_up = Gauge(f"{PREFIX}_sites_up", "Sites planning with fresh data", registry=r)
        self.sites = Gauge(f"{PREFIX}_sites", "Sites of the fleet", registry=r)
        self.stale = Gauge(
            f"{PREFIX}_stale_forecasts",
            "Sites whose latest data failed validation (planning with their previous forecast)",
            registry=r,
        )
        self.rejoining = Gauge(
            f"{PREFIX}_sites_rejoining", "Sites whose agent restarted and is rejoining",
            registry=r,
        )  # fmt: skip
        self.observed_fallbacks = Counter(
            f"{PREFIX}_observed_demand_fallbacks",
            "Regions and classes of a cycle planned with the forecast where an observed rate "
            "was asked for, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.observed_rate = Gauge(
            f"{PREFIX}_observed_demand_requests_per_second",
            "The rate observed in Prometheus at the last cycle and planned for [1/s] (NaN: "
            "the forecast was kept)",
            ["region", "class"], registry=r,
        )  # fmt: skip
        for outcome in ("planned", "kept_previous"):
            self.cycles.labels(outcome)  # present from the start, at 0
        for reason in REASONS:
            self.observed_fallbacks.labels(reason)

    def bind(self, service: Any) -> None:
        """Read the live figures from ``service`` at every scrape."""
        self.sites.set(len(service.site_ids))
        self.plan_age.set_function(service.plan_age_s)
        self.plan_stale.set_function(lambda: float(service.plan_age_s() > service.max_plan_age_s))
        self.sites_up.set_function(lambda: float(service.site_counts()[0]))
        self.stale.set_function(lambda: float(service.site_counts()[1]))
        self.rejoining.set_function(lambda: float(service.site_counts()[2]))

    def on_cycle(self, record: Any) -> None:
        self.cycles.labels(record.outcome).inc()
        self.cycle.set(record.cycle)
        self.iterations.set(record.iterations)
        self.duration.set(record.duration_s)
        self.converged.set(float(record.converged))
        self.kept_previous.set(float(record.outcome != "planned"))

    def on_observed(self, observed: Any) -> None:
        """Count a cycle's observed demand
        (:class:`thermoroute.observed_demand.Observed`)."""
        for reason in observed.fallbacks.values():
            self.observed_fallbacks.labels(reason).inc()
        for (region, class_id), value in observed.rates.items():
            self.observed_rate.labels(region, class_id).set(value)
        for region, class_id in observed.fallbacks:
            self.observed_rate.labels(region, class_id).set(math.nan)
