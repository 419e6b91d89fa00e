"""What one planning cycle of ``thermoroute serve`` costs, in process and on Ray (issue 13).

    python -m bench.serve_bench [--scenario australia] [--cycles 12] [--json FILE]

Run by hand; nothing here is asserted. One invocation drives the same
:class:`~thermoroute.service.PlanningService` twice over the same cycles — the site agents in
this process, then as Ray actors on a local cluster — calling :meth:`cycle` back to back (no
clock), and prints per fleet the first (cold) cycle and the median warm cycle: wall seconds
and interior-point iterations, and the ratio Ray / in process measured in this run. A step
of the service's clock must be longer than a warm cycle on the fleet it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from thermoroute.cluster import discover, serve_fleet
from thermoroute.common.scenario_writing import copy_scenario_dir
from thermoroute.common.scenarios import embedded_path
from thermoroute.options import RunOptions
from thermoroute.service import PlanningService, ServeSettings


def measure(directory: Path, executor: str, cycles: int) -> dict[str, Any]:
    """Cycles ``0 … cycles-1`` back to back; their seconds, iterations and outcomes."""
    coordinator_dir, site_ids = discover(directory)
    service = PlanningService(
        coordinator_dir, site_ids, RunOptions().method_settings(),
        ServeSettings(step_seconds=3600.0, cycle_budget_s=600.0),
        serve_fleet(directory, site_ids, executor=executor),
    )  # fmt: skip
    rows = []
    try:
        for k in range(cycles):
            t0 = time.perf_counter()
            record = service.cycle(k)
            rows.append((time.perf_counter() - t0, record.iterations, record.outcome))
    finally:
        service.stop()
        service.run()  # returns at once and closes the fleet
    warm = rows[1:]
    return {
        "executor": executor,
        "first_s": rows[0][0],
        "first_iterations": rows[0][1],
        "warm_median_s": statistics.median(r[0] for r in warm),
        "warm_median_iterations": statistics.median(r[1] for r in warm),
        "outcomes": sorted({r[2] for r in rows}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="australia")
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        data = copy_scenario_dir(embedded_path(args.scenario), Path(tmp) / args.scenario)
        results = [measure(data, executor, args.cycles) for executor in ("inline", "ray")]
    inline, ray = results
    table = Table(title=f"{args.scenario}: {args.cycles} serve cycles back to back")
    for column in ("agents", "first cycle [s]", "its iterations", "warm cycle, median [s]",
                   "its iterations", "outcomes"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["executor"], f"{r['first_s']:.2f}", f"{r['first_iterations']}",
            f"{r['warm_median_s']:.2f}", f"{r['warm_median_iterations']:g}",
            ", ".join(r["outcomes"]),
        )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(
        f"warm cycle on Ray / in process: {ray['warm_median_s'] / inline['warm_median_s']:.1f}×"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
