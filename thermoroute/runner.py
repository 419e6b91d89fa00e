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

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.baselines import run_solver as run_central_solver
from common.central import CentralSolveError
from common.compare import METRICS, REFERENCE, percent_change
from common.evaluate import Evaluation
from common.outputs import write_run
from common.run_directory import RunDirectory
from common.scenario import Scenario
from coordinator.fleet import FleetTimeout, RoundFailed, SiteGroupLost
from thermoroute.launch import CoordinatorLost
from thermoroute.options import RunOptions
from thermoroute.ray_auth import ClusterAccessError

#: Solvers that run on the fleet's site agents (``admm`` names the distributed ADMM run).
DISTRIBUTED = ("distributed", "admm")


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
    details: dict[str, Any] = field(default_factory=dict)


def _totals_with_objective(evaluation: Evaluation) -> dict[str, float]:
    return {**evaluation.totals(), "objective_aud": evaluation.objective_aud}


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

    For ``distributed`` (``options.method`` ``ipm`` or ``admm``; ``admm`` as a solver is the
    same as ``distributed`` with ``method="admm"``) the sites are started from ``directory``
    (each agent loads only its own site); the other solvers work on the whole ``scenario``
    in this process. With ``compare`` the temperature-unaware plan is also computed, for the
    closing table. ``scenario`` is ``None`` for a split deployment directory (distributed
    only, no comparison: the driver cannot read the sites' data).
    """
    solver = options.solver
    t0 = time.perf_counter()
    with RunDirectory(out, command=f"run --solver {solver}") as run_dir:
        staging = run_dir.staging
        assert staging is not None
        if solver in DISTRIBUTED:
            from thermoroute.distributed_run import run_distributed

            try:
                converged, details = run_distributed(directory, scenario, staging, options, console)
            except (
                FleetTimeout, SiteGroupLost, RoundFailed, ClusterAccessError, CoordinatorLost
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
            write_run(
                staging,
                scenario,
                run.evaluation,
                solver,
                run.stats,
                shadow_prices=run.shadow_prices,
            )
            converged = bool(run.stats.converged)
            details = {}
        out = run_dir.commit()
    # Read back what was written, so the closing table shows exactly the file's figures.
    summary = json.loads((out / "summary.json").read_text())
    reference = None
    if compare and solver != REFERENCE and scenario is not None:
        ref = run_central_solver(REFERENCE, scenario)
        reference = _totals_with_objective(ref.evaluation)
    return RunResult(
        solver=options.effective_method if solver in DISTRIBUTED else solver,
        out=out,
        scenario=scenario,
        summary=summary,
        converged=converged,
        wall_s=time.perf_counter() - t0,
        reference=reference,
        details=details,
    )


def print_run(result: RunResult, console: Console, *, compare: bool = True) -> None:
    """The closing table of a run: its totals and, if computed, the change against
    the temperature-unaware plan."""
    s = result.summary
    stats = s.get("solver_stats", {})
    totals = {**s["totals"], "objective_aud": s["objective_aud"]}
    table = Table(
        title=f"{s['scenario']} · {result.solver} · {s.get('steps', '?')} steps "
        f"from {s.get('start', '?')}",
        title_justify="left",
    )
    table.add_column("quantity")
    table.add_column(result.solver, justify="right")
    if result.reference is not None and compare:
        table.add_column(REFERENCE, justify="right")
        table.add_column("change", justify="right")
    for key, name, unit, fmt in METRICS:
        row = [escape(f"{name} [{unit}]"), format(totals[key], fmt)]
        if result.reference is not None and compare:
            ref = result.reference[key]
            pct = percent_change(totals[key], ref)
            row += [format(ref, fmt), "n/a" if math.isnan(pct) else f"{pct:+.2f} %"]
        table.add_row(*row)
    console.print(table)
    line = (
        f"iterations {stats.get('iterations')}, converged {stats.get('converged')}, "
        f"wall {stats.get('wall_s', 0.0):.2f} s; outputs in {result.out}"
    )
    console.print(line, highlight=False)
