"""How long the command line takes to start, and what a local Ray run costs over one in process.

    python -m bench.startup_bench [--scenario australia] [--repeats 3]

Run by hand; nothing is asserted. Measures, on this machine, in one invocation:

* ``thermoroute --help`` and ``--version`` (wall of the process, median of ``--repeats``);
* ``thermoroute run SCENARIO --no-compare --quiet`` with ``--executor inline`` and with the
  default local Ray cluster, alternated so that a drift of the machine's load hits both
  alike; the medians and their ratio;
* the phases of a Ray run in process (:func:`thermoroute.launch.solve_distributed`'s
  timings: Ray's start, the agents' until ready, registration, iterations, reports) and
  Ray's shutdown, against the same phases in process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

CLI = [sys.executable, "-m", "thermoroute"]


def _wall(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


def _phases(scenario: str, executor: str) -> dict[str, float]:
    """A run's phases in a fresh process (Ray started and stopped by it)."""
    code = (
        "import json, time\n"
        "t0 = time.perf_counter()\n"
        "from thermoroute import launch\n"
        "from thermoroute.cluster import stop_ray\n"
        "t1 = time.perf_counter()\n"
        f"run = launch.solve_distributed({scenario!r}, executor={executor!r})\n"
        "t2 = time.perf_counter()\n"
        "stop_ray()\n"
        "t3 = time.perf_counter()\n"
        "print(json.dumps({'import_s': t1 - t0, **run.timings, 'stop_s': t3 - t2}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    import json

    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup_bench", description=__doc__)
    parser.add_argument("--scenario", default="australia")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    n = max(1, args.repeats)
    print(f"help:    {_median([_wall([*CLI, '--help']) for _ in range(n)])}")
    print(f"version: {_median([_wall([*CLI, '--version']) for _ in range(n)])}")
    walls: dict[str, list[float]] = {"inline": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch:
        for k in range(n):
            for executor in ("inline", "ray"):
                out = Path(scratch) / f"{executor}-{k}"
                command = [*CLI, "run", args.scenario, "--no-compare", "--quiet",
                           "--executor", executor, "--out", str(out)]  # fmt: skip
                walls[executor].append(_wall(command))
    inline, ray = (statistics.median(walls[e]) for e in ("inline", "ray"))
    print(f"run --executor inline: {_median(walls['inline'])}")
    print(f"run (local Ray):       {_median(walls['ray'])}")
    print(f"ratio Ray / inline:    {ray / inline:.2f}")
    keys = ("import_s", "load_s", "ray_s", "agents_s", "register_s", "solve_s", "reports_s",
            "stop_s", "total_s")  # fmt: skip
    rows = {e: [_phases(args.scenario, e) for _ in range(n)] for e in ("inline", "ray")}
    print("phase | inline [s] | Ray [s]")
    for key in keys:
        cells = []
        for executor in ("inline", "ray"):
            values = [r[key] for r in rows[executor] if key in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "—")
        print(f"{key} | {cells[0]} | {cells[1]}")


if __name__ == "__main__":
    main()
