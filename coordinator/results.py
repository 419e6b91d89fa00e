"""Assemble a distributed run's outputs (docs/model.md §9) from what the sites reported.

The coordinator never charges a schedule itself — it has no site data. At the end each site
group answers one :class:`~thermoroute.common.report_protocol.GroupReport`: per site its flows (the
decision) and, masked by secure aggregation, the group's sums of the totals and of the
objective per iterate. This module stacks the flows into ``schedule.csv``, unmasks the fleet
sums for ``summary.json`` and ``convergence.csv``, and turns the duals into
``shadow_prices.csv``. Per-site physics and totals (``site_steps.csv``, ``summary.json``'s
``sites``) appear only when the operator shared them (``share_details``); otherwise each site
wrote its own under ``OUT/sites/<site_id>/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.evaluate import TOTAL_KEYS, SiteSteps
from thermoroute.common.outputs import ConvergenceTable, RunLabels, SolverStats, write_run
from thermoroute.common.physics.latency import mean_ttft_ms
from thermoroute.common.report_protocol import GroupReport, SiteDecision, unpack_report
from thermoroute.common.scenario import DemandView
from thermoroute.common.secure_aggregation import unmask_sum
from thermoroute.coordinator.method_contract import MethodRun
from thermoroute.coordinator.structure import ExchangeStructure


@dataclass
class SiteDetail:
    """Per-site physics and totals, present only when the sites shared them.

    Attributes
    ----------
    n : ndarray (S, T)
        Active GPUs.
    steps : SiteSteps
    site_results : list of dict
        Each site's totals (every key of :data:`thermoroute.common.evaluate.TOTAL_KEYS`, plus
        ``interactive_requests`` and ``objective_aud``).
    """

    n: np.ndarray
    steps: SiteSteps
    site_results: list[dict[str, float]]


@dataclass
class ReportedSchedule:
    """The fleet's schedule and totals as the sites reported them.

    Provides what :func:`thermoroute.common.outputs.write_run` reads of an ``Evaluation``.

    Attributes
    ----------
    x : ndarray (S, R, C, T)
        The schedule (the decision).
    fleet : dict
        The fleet's sums (:data:`thermoroute.common.report_protocol.SUMMED_KEYS`), by secure
        aggregation.
    detail : SiteDetail, optional
        Per-site physics and totals (``share_details`` only).
    """

    x: np.ndarray
    fleet: dict[str, float]
    detail: SiteDetail | None = None

    @property
    def has_site_detail(self) -> bool:
        return self.detail is not None

    @property
    def steps(self) -> SiteSteps | None:
        return None if self.detail is None else self.detail.steps

    @property
    def n(self) -> np.ndarray | None:
        return None if self.detail is None else self.detail.n

    @property
    def objective_aud(self) -> float:
        return float(self.fleet["objective_aud"])

    def site_totals(self, i: int) -> dict[str, float]:
        if self.detail is None:
            raise LookupError("the sites kept their totals private (share_details is off)")
        return {k: float(self.detail.site_results[i][k]) for k in TOTAL_KEYS}

    def totals(self) -> dict[str, float]:
        out = {k: float(self.fleet[k]) for k in TOTAL_KEYS if k != "ttft_mean_ms"}
        out["ttft_mean_ms"] = float(
            mean_ttft_ms(self.fleet["latency_req_s"], self.fleet["interactive_requests"])
        )
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


def _ordered(site_ids: Sequence[str], decisions: Sequence[SiteDecision]) -> list[SiteDecision]:
    by_site: dict[str, SiteDecision] = {}
    for d in decisions:
        if d.site_id in by_site:
            raise ValueError(f"two reports for site {d.site_id!r}")
        by_site[d.site_id] = d
    missing = [s for s in site_ids if s not in by_site]
    if missing:
        raise ValueError(f"no final report from sites {missing}")
    return [by_site[s] for s in site_ids]


def fleet_sums(groups: Sequence[GroupReport], history: int) -> dict[str, np.ndarray]:
    """The fleet's sums from the groups' (masked) answers."""
    if any(g.masked for g in groups):
        if not all(g.masked for g in groups):
            raise ValueError("some groups masked their sums and some did not")
        flat = unmask_sum([g.sums for g in groups])
    else:
        flat = np.sum([np.asarray(g.sums, dtype=float) for g in groups], axis=0)
    return unpack_report(flat, history)


def stack_reports(
    site_ids: Sequence[str], groups: Sequence[GroupReport], history: tuple[int, ...]
) -> tuple[ReportedSchedule, dict[int, float]]:
    """The schedule in ``site_ids`` order, the fleet's totals, and the fleet objective at
    each of ``history``'s iterations that every site solved.

    Raises
    ------
    ValueError
        When a site's report is missing or duplicated.
    """
    ordered = _ordered(site_ids, [d for g in groups for d in g.decisions])
    x = np.stack([np.asarray(d.x, dtype=float) for d in ordered])
    sums = fleet_sums(groups, len(history))
    fleet = {k: float(v[0]) for k, v in sums.items() if v.size == 1}
    everyone = len(site_ids)
    objective = {
        int(k): float(value)
        for k, value, count in zip(history, sums["objective_at"], sums["solved_at"], strict=True)
        if round(float(count)) == everyone
    }
    detail = None
    if all(d.detail is not None for d in ordered):
        reports = [d.detail for d in ordered]
        per_site = [r.steps() for r in reports]  # SiteReport.steps(): (1, T) each
        detail = SiteDetail(
            n=np.stack([np.asarray(r.n, dtype=float) for r in reports]),
            steps=SiteSteps(
                **{
                    name: np.concatenate([getattr(st, name) for st in per_site])
                    for name in SiteSteps.__dataclass_fields__
                }
            ),
            site_results=[dict(r.totals) for r in reports],
        )
    return ReportedSchedule(x=x, fleet=fleet, detail=detail), objective


def convergence_rows(run: MethodRun, objective: dict[int, float]) -> list[list[float]]:
    """Rows of ``convergence.csv``: the method's columns, the objective filled in from the
    fleet sums of the sites' histories where they keep one (ADMM; the interior point has the
    fleet sum already)."""
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

    ``scaled_prices`` are the duals of the scaled rows (:attr:`MethodRun.scaled_prices`); one more
    scaled unit of row ``r`` costs ``−scaled_prices[r]``, one raw unit that divided by ``s_r``.
    Interactive rows: the row price per (req/s over one step) divided by ``3600Δ``; deferrable rows:
    the volume price, repeated at every step. NaN where no site serves the row — the same convention
    as ``thermoroute.common.central.CentralResult.shadow_prices``.
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

    def write(self, directory: str | os.PathLike[str], solver: str | None = None) -> Path:
        """Write docs/model.md §9's files into ``directory`` atomically; ``solver`` is the
        summary's solver (the run's method by default)."""
        return write_run(
            directory,
            self.labels,
            self.schedule,
            solver or str(self.stats.extra["method"]),
            self.stats,
            convergence=ConvergenceTable(self.convergence, self.convergence_columns),
            shadow_prices=np.nan_to_num(self.shadow_prices, nan=0.0),
            extra_summary=self.extra_summary,
        )


def history_of(run: MethodRun) -> tuple[int, ...]:
    """The iterations whose fleet objective the sites are asked for: those the method has
    no fleet objective of (ADMM's rows; the interior point sums it every iteration)."""
    at = run.convergence_columns.index("objective_aud")
    return tuple(int(row[0]) for row in run.convergence if not np.isfinite(row[at]))


def assemble(
    view: DemandView,
    layout: CouplingLayout,
    structure: ExchangeStructure,
    run: MethodRun,
    groups: Sequence[GroupReport],
    history: tuple[int, ...],
    *,
    extra_stats: dict[str, Any] | None = None,
) -> RunOutputs:
    """Build the run's outputs from a method's run and the groups' final reports."""
    schedule, objective = stack_reports(structure.site_ids, groups, history)
    decisions = [d for g in groups for d in g.decisions]
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
            # The sites' inner solves, summed (counts only).
            **{
                f"inner_{kind}": sum(int(getattr(d, f"inner_{kind}", 0)) for d in decisions)
                for kind in ("approximate", "failed", "fallbacks")
            },
            **(extra_stats or {}),
        },
    )
    written = sorted(s for g in groups for s in g.written)
    return RunOutputs(
        labels=labels_of(view, structure.site_ids),
        schedule=schedule,
        stats=stats,
        convergence_columns=run.convergence_columns,
        convergence=convergence_rows(run, objective),
        shadow_prices=shadow_prices_per_request(
            structure, run.scaled_prices, layout, view.step_seconds
        ),
        extra_summary={
            "site_details": "shared" if schedule.has_site_detail else "private",
            "site_outputs": written,
        },
    )
