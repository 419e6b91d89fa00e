"""What ``thermoroute run`` and ``simulate`` do, apart from parsing arguments.

Kept out of :mod:`thermoroute.cli` so tests and notebooks can call it directly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thermoroute.common.baselines import run_solver as run_central_solver
from thermoroute.common.central import CentralSolveError
from thermoroute.common.compare import (
    MEAN_EFFICIENCY,
    METRICS,
    OPTIMUM,
    REFERENCE,
    GainDecomposition,
    percent_change,
    render_decomposition,
)
from thermoroute.common.evaluate import overload_report
from thermoroute.common.outputs import write_run
from thermoroute.common.run_directory import RunDirectory
from thermoroute.common.scenario import Scenario
from thermoroute.coordinator.fleet import FleetTimeout, RoundFailed, SiteGroupLost
from thermoroute.launch import CoordinatorLost
from thermoroute.local_fleet import FleetBusy
from thermoroute.options import RunOptions
from thermoroute.ray_auth import ClusterAccessError
from thermoroute.results import PUE_NOTE, Solution

#: Central solvers that plan with every site's temperature hour by hour (a distributed run
#: does too): their gain over temperature-unaware is split into site differences and hourly
#: weather.
HOURLY_AWARE = (OPTIMUM,)


class SolveError(RuntimeError):
    """A solver failed for a reason other than bad input."""


@dataclass
class RunResult:
    """What a run produced and where it wrote it."""

    solver: str
    out: Path
    scenario: Scenario | None
    summary: dict[str, Any]
    converged: bool
    wall_s: float
    reference: dict[str, float] | None = None
    decomposition: GainDecomposition | None = None
    details: dict[str, Any] = field(default_factory=dict)


def run_solver(
    directory: Path,
    scenario: Scenario | None,
    out: Path,
    options: RunOptions,
    *,
    console: Console | None = None,
    compare: bool = True,
) -> RunResult:
    """Solve ``scenario`` with ``options.solver`` and write its outputs into ``out``.

    For a distributed run (``options.distributed``: its method's name as a solver is the
    same as ``distributed`` with that method) the sites are started from ``directory``
    (each agent loads only its own site); the other solvers work on the whole ``scenario``
    in this process. With ``compare`` the temperature-unaware plan is also computed, for the
    closing table, and for a plan that knows the hourly temperatures (a distributed run, or
    :data:`HOURLY_AWARE`) the mean-efficiency plan, to split the run's gain into site
    differences and weather.
    ``scenario`` is ``None`` for a split deployment directory (distributed only, no
    comparison: the driver cannot read the sites' data).
    """
    solver = options.solver
    t0 = time.perf_counter()
    with RunDirectory(out, command=f"run --solver {solver}") as run_dir:
        staging = run_dir.staging
        assert staging is not None
        if options.distributed:
            from thermoroute.distributed_run import run_distributed

            try:
                converged, details = run_distributed(directory, scenario, staging, options, console)
            except (
                FleetTimeout, SiteGroupLost, RoundFailed, ClusterAccessError, CoordinatorLost,
                FleetBusy,
            ) as exc:  # fmt: skip
                # On Ray the coordinator actor's exception arrives wrapped; say what it was.
                cause = getattr(exc, "cause", None) or exc
                raise SolveError(str(cause).splitlines()[0]) from None
        else:
            assert scenario is not None, "only a distributed method solves a split directory"
            try:
                run = run_central_solver(solver, scenario)
            except CentralSolveError as exc:
                raise SolveError(str(exc)) from None
            # Model v1.1: what the plan puts above the sites' limits, never clipped (absent
            # for v1 data, whose summary stays as it was).
            report = overload_report(scenario, run.evaluation)
            over = {"overloads": report} if report else None
            write_run(
                staging,
                scenario,
                run.evaluation,
                solver,
                run.stats,
                shadow_prices=run.shadow_prices,
                extra_summary=over,
            )
            converged = bool(run.stats.converged)
            details = {}
        out = run_dir.commit()
    # Read back what was written, so the closing table shows exactly the file's figures.
    summary = json.loads((out / "summary.json").read_text())
    reference = decomposition = None
    label = options.effective_method if options.distributed else solver
    if compare and solver != REFERENCE and scenario is not None:
        reference = run_central_solver(REFERENCE, scenario).evaluation.totals_with_objective()
        if options.distributed or solver in HOURLY_AWARE:
            mean = run_central_solver(MEAN_EFFICIENCY, scenario).evaluation
            decomposition = GainDecomposition.of(
                reference,
                mean.totals_with_objective(),
                {**summary["totals"], "objective_aud": summary["objective_aud"]},
                scenario.objective,
                aware_name=label,
            )
    return RunResult(
        solver=label,
        out=out,
        scenario=scenario,
        summary=summary,
        converged=converged,
        wall_s=time.perf_counter() - t0,
        reference=reference,
        decomposition=decomposition,
        details=details,
    )


def print_run(solution: Solution, console: Console, *, compare: bool = True) -> None:
    """The closing table of a run: its totals and, if computed, the change against
    the temperature-unaware plan and where the run's gain over it comes from."""
    s = solution.summary
    stats = solution.stats
    totals = solution.totals_with_objective
    reference = solution.reference if compare else None
    table = Table(
        title=f"{s['scenario']} · {solution.solver} · {s.get('steps', '?')} steps "
        f"from {s.get('start', '?')}",
        title_justify="left",
    )
    table.add_column("quantity")
    table.add_column(solution.solver, justify="right")
    if reference is not None:
        table.add_column(REFERENCE, justify="right")
        table.add_column("change", justify="right")
    for key, name, unit, fmt in METRICS:
        value = totals[key]
        row = [escape(f"{name} [{unit}]"), "—" if value is None else format(value, fmt)]
        if reference is not None:
            ref = reference[key]
            pct = math.nan if value is None else percent_change(value, ref)
            row += [format(ref, fmt), "n/a" if math.isnan(pct) else f"{pct:+.2f} %"]
        table.add_row(*row)
    console.print(table)
    if compare and solution.decomposition is not None:
        console.print(
            render_decomposition(solution.decomposition, title="where the gain comes from")
        )
    wall = stats.get("wall_s", 0.0)
    where = solution.directory if solution.directory is not None else "(not kept)"
    line = (
        f"iterations {stats.get('iterations')}, converged {stats.get('converged')}, "
        f"wall {wall:.2f} s; outputs in {where}"
    )
    console.print(line, highlight=False)


#: Sites named in a row of the "who serves what" table; the rest are summed as "others".
SHOWN_SITES = 3


def print_decision(solution: Solution, console: Console, scenario: Scenario | None) -> None:
    """The decision in two compact tables (80 columns): per region and class the share
    served by each site, largest first; per site its requests, utilisation of its GPUs and,
    where the site's detail is at hand, the pPUE the plan paid (weighted by the IT energy
    it placed there) beside the climate's (every hour alike)."""
    shares = solution.shares()
    who = Table(
        title="who serves what (share of each region's requests over the horizon)",
        title_justify="left",
    )
    for column in ("region", "class", "served by"):
        who.add_column(column)
    regions = list(dict.fromkeys(shares["region_id"]))
    classes = list(dict.fromkeys(shares["class_id"]))
    if scenario is not None:  # the scenario's own order, not the schedule's
        regions, classes = list(scenario.regions.region_id), list(scenario.classes.class_id)
    shares = shares.assign(
        region_id=pd.Categorical(shares["region_id"], categories=regions, ordered=True),
        class_id=pd.Categorical(shares["class_id"], categories=classes, ordered=True),
    )
    for (region_id, class_id), rows in shares.groupby(
        ["region_id", "class_id"], sort=True, observed=True
    ):
        ranked = rows.sort_values("share", ascending=False)
        shown = ranked[ranked["share"] >= 0.005].head(SHOWN_SITES)
        parts = [f"{r.site_id} {r.share:.0%}" for r in shown.itertuples()]
        rest = 1.0 - float(shown["share"].sum())
        if rest >= 0.005:
            parts.append(f"others {rest:.0%}")
        who.add_row(escape(str(region_id)), escape(str(class_id)), escape(", ".join(parts)))
    console.print(who)
    header, site_rows = solution.sites_table(scenario)
    sites = Table(title="sites", title_justify="left")
    for k, name in enumerate(header):
        sites.add_column(name, justify="left" if k == 0 else "right")
    for cells in site_rows:
        sites.add_row(*(escape(c) for c in cells))
    console.print(sites)
    if solution.site_detail == "missing":
        console.print(
            "pPUE: the sites keep their detail in their own sites/<id>/ on their nodes "
            "(--share-site-details sends it)",
            highlight=False,
        )
    else:
        console.print(PUE_NOTE, highlight=False)
