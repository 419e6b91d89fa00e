"""Write run outputs (output format v1, docs/model.md §9), atomically."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.evaluate import Evaluation, SiteSteps
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario import Scenario

SCHEDULE_COLUMNS = ("time", "site_id", "region_id", "class_id", "requests_per_s")
SITE_STEP_COLUMNS = (
    "time",
    "site_id",
    "active_gpus",
    "load_gpus",
    "it_kw",
    "pue",
    "cooling_kw",
    "wue_l_per_kwh",
)
CONVERGENCE_COLUMNS = (
    "iteration",
    "primal_residual",
    "dual_residual",
    "rho",
    "objective_aud",
    "elapsed_s",
)
SHADOW_PRICE_COLUMNS = ("time", "region_id", "class_id", "aud_per_request")

# Rows of schedule.csv below this rate are omitted (docs/model.md §9 allows omitting zeros).
SCHEDULE_ZERO_RPS = 0.0


@dataclass(frozen=True)
class RunLabels:
    """The names and times a run's files are labelled with — all a writer needs of a
    scenario. A distributed run has no :class:`Scenario` (the coordinator never sees the
    sites' data) and builds these from its demand view and the sites' ids."""

    name: str
    start: datetime
    step_hours: float
    times: tuple[datetime, ...]
    site_ids: tuple[str, ...]
    region_ids: tuple[str, ...]
    class_ids: tuple[str, ...]

    @property
    def steps(self) -> int:
        return len(self.times)

    @classmethod
    def of(cls, scenario: Scenario) -> RunLabels:
        return cls(
            name=scenario.name,
            start=scenario.start,
            step_hours=scenario.step_hours,
            times=scenario.times,
            site_ids=scenario.sites.site_id,
            region_ids=scenario.regions.region_id,
            class_ids=scenario.classes.class_id,
        )


class ChargedSchedule(Protocol):
    """What the writers read of an :class:`Evaluation`; the results reported by the sites
    themselves (a distributed run) provide the same — without ``steps`` and per-site totals
    when the sites kept those private (``has_site_detail`` false)."""

    x: np.ndarray

    @property
    def steps(self) -> SiteSteps | None: ...

    @property
    def has_site_detail(self) -> bool: ...

    @property
    def objective_aud(self) -> float: ...

    def totals(self) -> dict[str, float]: ...

    def site_totals(self, i: int) -> dict[str, float]: ...


def _labels(scenario: Scenario | RunLabels) -> RunLabels:
    return scenario if isinstance(scenario, RunLabels) else RunLabels.of(scenario)


@dataclass
class SolverStats:
    """What ``summary.json`` reports of the solve itself."""

    iterations: int = 0
    converged: bool = True
    primal_residual: float = 0.0
    dual_residual: float = 0.0
    rho: float = math.nan
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "iterations": int(self.iterations),
            "converged": bool(self.converged),
            "primal_residual": float(self.primal_residual),
            "dual_residual": float(self.dual_residual),
            "rho": None if math.isnan(self.rho) else float(self.rho),
            "wall_s": float(self.wall_s),
        }
        out.update(self.extra)
        return out


def json_numbers(values: dict[str, float]) -> dict[str, float | None]:
    """``values`` with NaN as ``None`` (JSON null): a quantity that does not exist, such as
    the mean TTFT of a site that served no interactive request."""
    return {k: (None if math.isnan(v) else v) for k, v in values.items()}


def summary(
    scenario: Scenario | RunLabels,
    evaluation: Evaluation | ChargedSchedule,
    solver: str,
    stats: SolverStats,
) -> dict[str, Any]:
    """The ``summary.json`` document of a run (``sites`` only where per-site totals exist)."""
    sc = _labels(scenario)
    doc = {
        "format": "thermoroute-output/1",
        "scenario": sc.name,
        "solver": solver,
        "start": sc.start.isoformat(),
        "steps": sc.steps,
        "step_hours": sc.step_hours,
        "objective_aud": evaluation.objective_aud,
        "totals": json_numbers(evaluation.totals()),
    }
    if evaluation.has_site_detail:
        doc["sites"] = {
            site: json_numbers(evaluation.site_totals(i)) for i, site in enumerate(sc.site_ids)
        }
    doc["solver_stats"] = stats.as_dict()
    return doc


def schedule_rows(scenario: Scenario | RunLabels, x: np.ndarray) -> list[list[Any]]:
    sc = _labels(scenario)
    idx = np.argwhere(x > SCHEDULE_ZERO_RPS)
    # Order by time, then site, region, class: the natural reading order.
    order = np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0], idx[:, 3]))
    rows = []
    for i, j, c, t in idx[order]:
        rows.append(
            [
                sc.times[t].isoformat(),
                sc.site_ids[i],
                sc.region_ids[j],
                sc.class_ids[c],
                float(x[i, j, c, t]),
            ]
        )
    return rows


def site_step_rows(scenario: Scenario | RunLabels, st: SiteSteps) -> list[list[Any]]:
    sc = _labels(scenario)
    rows = []
    for t, when in enumerate(sc.times):
        for i, site in enumerate(sc.site_ids):
            rows.append(
                [
                    when.isoformat(),
                    site,
                    float(st.active_gpus[i, t]),
                    float(st.load_gpus[i, t]),
                    float(st.it_kw[i, t]),
                    float(st.pue[i, t]),
                    float(st.cooling_kw[i, t]),
                    float(st.wue_l_per_kwh[i, t]),
                ]
            )
    return rows


@dataclass(frozen=True)
class ConvergenceTable:
    """``convergence.csv`` of a distributed run: its columns (``iteration`` first) and one
    row per iteration."""

    rows: Sequence[Sequence[float]]
    columns: Sequence[str] = CONVERGENCE_COLUMNS


def write_run(
    directory: str | os.PathLike[str],
    scenario: Scenario | RunLabels,
    evaluation: Evaluation | ChargedSchedule,
    solver: str,
    stats: SolverStats,
    *,
    convergence: ConvergenceTable | None = None,
    shadow_prices: np.ndarray | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> Path:
    """Write ``summary.json``, ``schedule.csv``, ``site_steps.csv`` (where the per-site detail
    is at hand) and, for distributed runs, ``convergence.csv`` and ``shadow_prices.csv`` into
    ``directory``, all or nothing.

    Parameters
    ----------
    scenario : Scenario or RunLabels
        Only its names and times are written.
    evaluation : Evaluation or ChargedSchedule
        The charged schedule (a distributed run passes the totals its sites reported).
    shadow_prices : ndarray (R, C, T), optional
        Marginal cost of one more request [AUD per request]: of interactive demand in
        region/class/step, and (for deferrable classes, the same value at every t) of
        deferrable volume — the ``aud_per_request`` column (``CentralResult.shadow_prices``).
    """
    labels = _labels(scenario)
    doc = summary(labels, evaluation, solver, stats)
    if extra_summary:
        doc.update(extra_summary)
    files: dict[str, str | bytes] = {
        "summary.json": json.dumps(doc, indent=2, allow_nan=False) + "\n",
        "schedule.csv": csv_text(SCHEDULE_COLUMNS, schedule_rows(labels, evaluation.x)),
    }
    steps = evaluation.steps  # None exactly when the sites kept their detail private
    if steps is not None:
        files["site_steps.csv"] = csv_text(SITE_STEP_COLUMNS, site_step_rows(labels, steps))
    if convergence is not None:
        files["convergence.csv"] = csv_text(
            tuple(convergence.columns), [list(r) for r in convergence.rows]
        )
    if shadow_prices is not None:
        rows = []
        for t, when in enumerate(labels.times):
            for j, region in enumerate(labels.region_ids):
                for c, klass in enumerate(labels.class_ids):
                    rows.append([when.isoformat(), region, klass, float(shadow_prices[j, c, t])])
        files["shadow_prices.csv"] = csv_text(SHADOW_PRICE_COLUMNS, rows)
    return write_directory_atomic(directory, files)
