"""``thermoroute run`` (distributed) and ``thermoroute simulate``: the distributed runs as the
command line drives them (live display, metrics endpoint, outputs, closing report)."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from thermoroute.common.compare import METRIC_KEYS
from thermoroute.common.run_directory import RunDirectory
from thermoroute.common.scenario import Scenario
from thermoroute.options import RunOptions
from thermoroute.progress import LiveProgress
from thermoroute.simulation import (
    EQUAL_WORK_RTOL,
    SimulationResult,
    SimulationSpec,
    SimulationStep,
    Work,
    simulate,
)


def _metrics_observers(port: int | None, addr: str) -> list[Any]:
    if port is None:
        return []
    from thermoroute.coordinator.metrics import CoordinatorMetrics, MetricsEndpoint

    return [CoordinatorMetrics(endpoint=MetricsEndpoint(port=port, addr=addr))]


def run_distributed(
    directory: Path,
    scenario: Scenario | None,
    staging: Path,
    options: RunOptions,
    console: Console | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Run a distributed method on ``directory`` and write its outputs into ``staging`` (a
    :class:`~thermoroute.common.run_directory.RunDirectory`'s); each site writes its own detail into
    ``staging/sites/<site_id>/`` (or shares it, with ``options.share_site_details``).

    ``scenario`` (when the driver can read the whole scenario, i.e. local emulation) only
    fixes the horizon; the sites read their own data, the coordinator only the demand.

    Returns
    -------
    converged, details
    """
    from thermoroute.coordinator.methods import METHODS
    from thermoroute.launch import solve_distributed

    console = console or Console()
    method = options.effective_method
    if options.metrics_port is not None:
        url = f"http://{options.metrics_addr}:{options.metrics_port}/metrics"
        console.print(f"metrics: {url}", highlight=False)
    launch = options.launch_spec(scenario)
    title = f"{METHODS[method].title(launch.method_settings)} on {options.executor}"
    display = LiveProgress(console, title, METHODS[method].status_columns) if options.live else None
    spec = replace(
        launch,
        observers=_metrics_observers(options.metrics_port, options.metrics_addr),
        metrics_linger_s=options.metrics_linger if options.metrics_port is not None else 0.0,
        # Each site writes its own detail here, on its node (its directory under the run's).
        site_output=staging / "sites",
    )
    if display is not None:
        with display:
            run = solve_distributed(directory, replace(spec, progress=display.update))
    else:
        run = solve_distributed(directory, spec)
    outputs = run.outputs
    if launch.cost_privacy is not None:
        # What the run asked of every site (a site's node may ask for more noise: §11).
        privacy = {
            "epsilon": launch.cost_privacy.epsilon,
            "sensitivity_aud_per_mwh": launch.cost_privacy.sensitivity_aud_per_mwh,
        }
        outputs = replace(outputs, extra_summary={**outputs.extra_summary, "cost_privacy": privacy})
    if run.kept_agents:
        # The agents of a fleet kept up for this scenario (`thermoroute fleet`).
        outputs = replace(outputs, extra_summary={**outputs.extra_summary, "kept_agents": True})
    outputs.write(staging, solver=method)
    details = {
        "iterations": run.iterations,
        "timings": run.timings,
        "groups": len(run.groups),
        "seconds_per_iteration": run.seconds_per_iteration,
    }
    return run.converged, details


def run_receding(
    directory: Path,
    options: RunOptions,
    spec: SimulationSpec,
    *,
    out: Path | None,
    console: Console,
) -> SimulationResult:
    """Receding-horizon operation with a closing table against temperature-unaware: the
    totals, the requests each plan saw arrive, served and left, and the objective per 1,000
    served requests; the totals' changes only when both plans served the same requests."""
    method, horizon = options.effective_method, spec.horizon

    def show(step: SimulationStep) -> None:
        console.print(
            f"step {step.step:>3} {step.time.isoformat()}: {step.iterations:>4} iterations"
            f"{'' if step.converged else ' (not converged)'}, applied objective "
            f"{step.objective_aud:,.2f} AUD vs {step.baseline_objective_aud:,.2f}, "
            f"{step.solve_s:.1f} s{', draining' if step.drain else ''}",
            highlight=False,
        )

    # The output directory is checked (and locked) before the simulation, not after it.
    run_dir = None if out is None else RunDirectory(out, command="simulate")
    with run_dir if run_dir is not None else contextlib.nullcontext():
        result = simulate(directory, spec, options.launch_spec(), progress=show)
        _print_simulation(result, method, horizon, console)
        if run_dir is not None:
            _write_simulation(result, run_dir, console)
    return result


def _print_simulation(
    result: SimulationResult, method: str, horizon: int, console: Console
) -> None:
    """The closing table and the verdict line: a saving only for equal work."""
    drained = f", {result.drain_steps} draining" if result.drain else ", no drain"
    table = Table(
        title=f"receding horizon: {len(result.steps)} steps applied ({result.arrival_steps} "
        f"with arrivals{drained}), horizon {horizon}",
        title_justify="left",
    )
    table.add_column("quantity")
    table.add_column(f"{method} (temperature-aware)", justify="right")
    table.add_column(result.baseline, justify="right")
    table.add_column("change", justify="right")

    def change(a: float, b: float) -> str:
        pct = math.nan if not b else 100.0 * (a - b) / abs(b)
        return "n/a" if math.isnan(pct) else f"{pct:+.2f} %"

    for key in METRIC_KEYS:  # the quantities compare shows, in its order
        a, b = result.totals.get(key, math.nan), result.baseline_totals.get(key, math.nan)
        # Totals over different work differ by the work: no change is shown for them.
        shown = change(a, b) if result.equal_work else "not comparable"
        table.add_row(key, f"{a:,.2f}", f"{b:,.2f}", shown)
    work, base = result.work, result.baseline_work
    for kind in ("interactive", "deferrable"):
        for part in ("arrived", "served", "left"):
            name = f"{kind}_{part}"
            b_value = "" if base is None else f"{getattr(base, name):,.0f}"
            table.add_row(f"{kind} requests {part}", f"{getattr(work, name):,.0f}", b_value, "")
    a, b = result.aud_per_1000_served, result.baseline_aud_per_1000_served
    table.add_row("objective AUD per 1,000 served", f"{a:,.5f}", f"{b:,.5f}", change(a, b))
    console.print(table)
    its = result.iterations
    if its:
        ordered = sorted(its)
        # A drain step's horizon is shorter than the last one's: nothing to warm-start from.
        cold = (
            "first step and drain steps cold, the rest warm"
            if result.drain_steps
            else "first step cold, then warm"
        )
        console.print(
            f"{method} iterations per step: median {ordered[len(its) // 2]}, "
            f"min {ordered[0]}, max {ordered[-1]} ({cold})",
            highlight=False,
        )
    if base is None:
        return
    if result.equal_work:
        diff = result.objective_difference_aud
        assert diff is not None  # equal work
        console.print(
            f"equal work: both plans served the same requests, to {EQUAL_WORK_RTOL:g} "
            f"({work.served:,.0f} and {base.served:,.0f}; {work.left:,.0f} and "
            f"{base.left:,.0f} left); objective {diff:+,.2f} AUD "
            f"({change(result.totals['objective_aud'], result.baseline_totals['objective_aud'])}"
            f") against {result.baseline}",
            highlight=False,
        )
    else:
        console.print(
            f"unequal work: not comparable — {method} served {work.served:,.0f} requests "
            f"and left {work.left:,.0f}, {result.baseline} served {base.served:,.0f} and left "
            f"{base.left:,.0f}; only the objective per 1,000 served requests compares them",
            highlight=False,
        )


def _write_simulation(result: SimulationResult, run_dir: RunDirectory, console: Console) -> None:
    """``simulation.csv`` (one row per applied step) and ``simulation.json`` (totals, work,
    verdict) into ``run_dir``."""
    from thermoroute.common.exact_csv import csv_text

    columns = tuple(f.name for f in fields(SimulationStep))
    rows = [[getattr(s, name) for name in columns] for s in result.steps]
    doc = {
        "totals": result.totals,
        "baseline": result.baseline,
        "baseline_totals": result.baseline_totals,
        "work": _work_doc(result.work),
        "baseline_work": None if result.baseline_work is None else _work_doc(result.baseline_work),
        "arrival_steps": result.arrival_steps,
        "drain": result.drain,
        "drain_steps": result.drain_steps,
        "drained": result.drained,
        "equal_work": result.equal_work,
        "objective_difference_aud": result.objective_difference_aud,
        "aud_per_1000_served": result.aud_per_1000_served,
        "baseline_aud_per_1000_served": result.baseline_aud_per_1000_served,
        "settings": result.settings,
    }
    run_dir.write(
        {
            "simulation.csv": csv_text(columns, rows),
            "simulation.json": json.dumps(doc, indent=2, default=str) + "\n",
        },
    )
    written = run_dir.commit()
    console.print(f"wrote {written}/simulation.csv and simulation.json", highlight=False)


def _work_doc(work: Work) -> dict[str, float]:
    """A :class:`Work` with its sums, for JSON [requests]."""
    return {**asdict(work), "arrived": work.arrived, "served": work.served, "left": work.left}
