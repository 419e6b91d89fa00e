"""The plan API's answers, defined once: the service builds them
(:meth:`thermoroute.service.PlanningService.plan_at`, ``status``), the HTTP layer publishes
their schemas (:mod:`thermoroute.http_api`, ``/openapi.json``) and ``thermoroute status``
reads them back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class SiteShare(BaseModel):
    site_id: str
    share: float = Field(description="Share of the region's requests of this class, 0–1")
    requests_per_s: float = Field(description="Requests per second routed to the site")


class Route(BaseModel):
    region_id: str
    class_id: str
    requests_per_s: float = Field(description="The region's planned demand of the class")
    sites: list[SiteShare] = Field(description="Serving sites, largest share first")


class PlanResponse(BaseModel):
    time: datetime = Field(description="The step this answer is for")
    current_time: datetime = Field(description="The service clock's current step")
    step_hours: float
    plan_cycle: int = Field(description="The cycle that produced the plan")
    plan_start: datetime = Field(description="The first step of the plan's horizon")
    plan_made_at: datetime
    age_s: float = Field(description="Seconds since the plan was published")
    stale: bool = Field(description="Older than the service's maximum plan age")
    kept_previous: bool = Field(
        description="The last cycle did not produce a plan; this is the one before, shifted"
    )
    degraded: bool = Field(description="Some site planned with a stale forecast or rejoined")
    routes: list[Route]


class SiteStatus(BaseModel):
    site_id: str
    state: str = Field(description="up, stale forecast, or rejoining")


class CycleStatus(BaseModel):
    cycle: int
    time: datetime
    outcome: str = Field(description="planned, or kept_previous")
    converged: bool
    iterations: int
    duration_s: float
    degraded: bool = Field(description="Some site planned with a stale forecast or rejoined")
    stale_sites: list[str]
    rejoining_sites: list[str]
    error: str | None
    reason: str | None = Field(
        description="Why the cycle kept the previous plan or planned degraded, and which "
        "regions and classes kept the forecast where an observed rate was asked for (null: "
        "it planned with every site up and every rate observed); names sites, regions, "
        "classes and counts, never a site's data"
    )


class PlanSummary(BaseModel):
    cycle: int
    start: datetime
    age_s: float
    stale: bool
    degraded: bool


class ObservedRate(BaseModel):
    region_id: str
    class_id: str
    requests_per_s: float | None = Field(
        default=None, description="The observed rate planned for at the current step [1/s]"
    )
    reason: str | None = Field(
        default=None,
        description="Why the forecast was kept: unreachable, bad_answer, no_series, "
        "not_finite, negative or above_bound",
    )


class ObservedDemandStatus(BaseModel):
    query: str = Field(description="The PromQL asked every cycle (--demand-query)")
    cycle: int | None = Field(description="The cycle that last asked (null: none yet)")
    observed: list[ObservedRate] = Field(
        default_factory=list,
        description="Interactive regions and classes planned with the observed rate",
    )
    forecast_kept: list[ObservedRate] = Field(
        default_factory=list,
        description="Interactive regions and classes planned with demand.csv's forecast, and why",
    )
    detail: str | None = Field(
        default=None, description="What failed when Prometheus gave no usable answer"
    )


class StatusResponse(BaseModel):
    method: str
    cycles: int = Field(description="Cycles run since the service started (or resumed)")
    cycles_by_outcome: dict[str, int]
    current_cycle: int
    clock_time: datetime
    step_seconds: float
    horizon_steps: int
    max_plan_age_s: float
    plan: PlanSummary | None
    sites: list[SiteStatus]
    last_cycles: list[CycleStatus]
    cluster: dict[str, Any] | None
    uptime_s: float
    observed_demand: ObservedDemandStatus | None = Field(
        default=None,
        description="The demand observed in Prometheus at the last cycle (null: serve runs "
        "without --demand-from-prometheus)",
    )
