"""Assemble a distributed run's outputs (MODEL.md §9) from what the sites reported.

The coordinator never charges a schedule itself — it has no site data. At the end each site
sends one report (its schedule, per-step physical state, totals and objective history; see
``site_agent.agent.SiteReport``), and this module stacks those into the output files:
``summary.json`` (totals summed over sites), ``schedule.csv``, ``site_steps.csv``,
``convergence.csv`` (residuals from the coordinator, objective from the sites' histories)
and ``shadow_prices.csv`` (from the coordinator's duals).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.coupling import CouplingLayout
from common.evaluate import TOTAL_KEYS, SiteSteps
from common.outputs import RunLabels, SolverStats, write_run
from common.physics.latency import mean_ttft_ms
from common.scenario import DemandView
from coordinator.admm import ExchangeStructure
from coordinator.methods import MethodRun

#: The per-step arrays a site report carries, and the SiteSteps field each one fills.
_STEP_FIELDS = {
    "active_gpus": "active_gpus",
    "load_gpus": "load_gpus",
    "it_kw": "it_kw",
    "pue": "pue",
    "cooling_kw": "cooling_kw",
    "wue_l_per_kwh": "wue",
}


@dataclass
class ReportedSchedule:
    """The fleet's schedule and results as the sites reported them.

    Provides what :func:`common.outputs.write_run` reads of an ``Evaluation``.

    Attributes
    ----------
    x : ndarray (S, R, C, T)
    n : ndarray (S, T)
    steps : SiteSteps
    site_results : list of dict
        Each site's totals (every key of :data:`common.evaluate.TOTAL_KEYS`, plus
        ``interactive_requests`` and ``objective_aud``).
    """

    x: np.ndarray
    n: np.ndarray
    steps: SiteSteps
    site_results: list[dict[str, float]]

    @property
    def objective_aud(self) -> float:
        return float(sum(r["objective_aud"] for r in self.site_results))

    def site_totals(self, i: int) -> dict[str, float]:
        return {k: float(self.site_results[i][k]) for k in TOTAL_KEYS}

    def totals(self) -> dict[str, float]:
        out = {
            k: float(sum(r[k] for r in self.site_results))
            for k in TOTAL_KEYS
            if k != "ttft_mean_ms"
        }
        interactive = float(sum(r["interactive_requests"] for r in self.site_results))
        out["ttft_mean_ms"] = float(mean_ttft_ms(out["latency_req_s"], interactive))
        return {k: out[k] for k in TOTAL_KEYS}


def labels_of(view: DemandView, site_ids: Sequence[str]) -> RunLabels:
    """Output labels from the coordinator's view and the fleet's site ids."""
    return RunLabels(
        name=view.name,
        start=view.start,
        step_hours=view.step_hours,
        times=view.times,
        site_ids=tuple(site_ids),
        region_ids=view.regions.region_id,
        class_ids=view.classes.class_id,
    )


def stack_reports(site_ids: Sequence[str], reports: Sequence[Any]) -> ReportedSchedule:
    """Stack per-site reports into fleet arrays, in ``site_ids`` order.

    Raises
    ------
    ValueError
        When a site's report is missing or duplicated.
    """
    by_site: dict[str, Any] = {}
    for r in reports:
        if r.site_id in by_site:
            raise ValueError(f"two reports for site {r.site_id!r}")
        by_site[r.site_id] = r
    missing = [s for s in site_ids if s not in by_site]
    if missing:
        raise ValueError(f"no final report from sites {missing}")
    ordered = [by_site[s] for s in site_ids]
    x = np.stack([np.asarray(r.x, dtype=float) for r in ordered])
    n = np.stack([np.asarray(r.n, dtype=float) for r in ordered])
    steps = SiteSteps(
        **{
            name: np.stack([np.asarray(getattr(r, attr), dtype=float) for r in ordered])
            for name, attr in _STEP_FIELDS.items()
        }
    )
    return ReportedSchedule(x=x, n=n, steps=steps, site_results=[dict(r.totals) for r in ordered])


def objective_by_iteration(reports: Sequence[Any]) -> dict[int, float]:
    """Fleet objective [AUD] per iteration: the sum of the sites' histories.

    Only iterations every site reported are included (a late site has a gap).
    """
    total: dict[int, float] = {}
    seen: dict[int, int] = {}
    for r in reports:
        for k, value in zip(r.history_iterations, r.objective_history, strict=True):
            total[int(k)] = total.get(int(k), 0.0) + float(value)
            seen[int(k)] = seen.get(int(k), 0) + 1
    return {k: v for k, v in total.items() if seen[k] == len(reports)}


def convergence_rows(run: MethodRun, objective: dict[int, float]) -> list[list[float]]:
    """Rows of ``convergence.csv``: the method's columns, the objective filled in from the
    sites' histories where they keep one (ADMM; the interior point has the fleet sum)."""
    at = run.convergence_columns.index("objective_aud")
    rows = []
    for row in run.convergence:
        row = list(row)
        row[at] = float(objective.get(int(row[0]), row[at]))
        rows.append(row)
    return rows


def shadow_prices_per_request(
    structure: ExchangeStructure,
    scaled_prices: np.ndarray,
    layout: CouplingLayout,
    step_seconds: float,
) -> np.ndarray:
    """(R, C, T) marginal cost of one more request [AUD/request] (``shadow_prices.csv``).

    ``scaled_prices`` are the duals of the scaled rows (:attr:`MethodRun.scaled_prices`);
    one more scaled unit of row ``r`` costs ``−scaled_prices[r]``, one raw unit that divided
    by ``s_r``. Interactive rows: the row price per (req/s over one step) divided by
    ``3600Δ``; deferrable rows: the volume price, repeated at every step. NaN where no site
    serves the row — the same convention as ``common.central.CentralResult.shadow_prices``.
    """
    per_step, per_volume = layout.unpack(-scaled_prices / structure.row_scale)
    served = structure.counts > 0
    inter_served, defer_served = layout.unpack(served.astype(float))
    out = per_step / step_seconds
    defer = layout.deferrable_classes
    out[:, defer, :] = per_volume[:, defer, None]
    mask = inter_served > 0
    mask[:, defer, :] = (defer_served[:, defer] > 0)[:, :, None]
    return np.where(mask, out, np.nan)


@dataclass
class RunOutputs:
    """Everything written for a distributed run."""

    labels: RunLabels
    schedule: ReportedSchedule
    stats: SolverStats
    convergence_columns: tuple[str, ...]
    convergence: list[list[float]]
    shadow_prices: np.ndarray
    extra_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def objective_aud(self) -> float:
        return self.schedule.objective_aud

    def write(self, directory: str | os.PathLike[str], solver: str = "admm") -> Path:
        """Write MODEL.md §9's files into ``directory`` atomically."""
        return write_run(
            directory,
            self.labels,
            self.schedule,
            solver,
            self.stats,
            convergence=self.convergence,
            convergence_columns=self.convergence_columns,
            shadow_prices=np.nan_to_num(self.shadow_prices, nan=0.0),
            extra_summary=self.extra_summary,
        )


def assemble(
    view: DemandView,
    layout: CouplingLayout,
    structure: ExchangeStructure,
    run: MethodRun,
    reports: Sequence[Any],
    *,
    extra_stats: dict[str, Any] | None = None,
) -> RunOutputs:
    """Build the run's outputs from a method's run and the sites' final reports."""
    schedule = stack_reports(structure.site_ids, reports)
    objective = objective_by_iteration(reports)
    stats = SolverStats(
        iterations=run.iterations,
        converged=run.converged,
        primal_residual=run.primal_residual,
        dual_residual=run.dual_residual,
        rho=run.rho,
        wall_s=run.wall_s,
        extra={
            "method": run.method,
            **run.extra_stats,
            # The sites' inner solves, summed (counts only; each site's own figures stay
            # in its telemetry).
            **{
                f"inner_{kind}": sum(int(getattr(r, f"inner_{kind}", 0)) for r in reports)
                for kind in ("approximate", "failed", "fallbacks")
            },
            **(extra_stats or {}),
        },
    )
    return RunOutputs(
        labels=labels_of(view, structure.site_ids),
        schedule=schedule,
        stats=stats,
        convergence_columns=run.convergence_columns,
        convergence=convergence_rows(run, objective),
        shadow_prices=shadow_prices_per_request(
            structure, run.scaled_prices, layout, view.step_seconds
        ),
    )
