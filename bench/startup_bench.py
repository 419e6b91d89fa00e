"""How long the command line takes to start, and what a local Ray run costs over one in process.

    python -m bench.startup_bench [--scenario australia] [--repeats 3] [--kept-up] [--fleet]

Run by hand; nothing is asserted. Measures, on this machine, in one invocation:

* ``thermoroute --help`` and ``--version`` (wall of the process, median of ``--repeats``);
* ``thermoroute run SCENARIO --no-compare --quiet`` with ``--executor inline`` and with the
  default local Ray cluster, alternated so that a drift of the machine's load hits both
  alike; the medians and their ratio; and the CPU the machine was busy with meanwhile
  (``/proc/stat``: every process, so run it on an otherwise idle machine), divided by the
  cores — the wall no ordering of the run's work can beat;
* with ``--fleet``, the same run on a ``thermoroute fleet`` kept up for all runs: Ray and
  the site agents started once (only the run's coordinator actor is new);
* with ``--kept-up``, the same run joining a local cluster started once beforehand (as
  ``ray start --head`` then ``run --address …`` would; stopped at the end): what a run costs
  without Ray's own start and stop;
* the phases of a Ray run in process (:func:`thermoroute.launch.solve_distributed`'s
  timings: Ray's start, the agents' until ready, registration, iterations, reports) and
  Ray's shutdown, against the same phases in process.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CLI = [sys.executable, "-m", "thermoroute"]


def _busy_cpu_s() -> float:
    """Seconds every core of this machine spent busy since boot (``/proc/stat``'s user,
    nice, system, irq and softirq ticks)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _wall(command: list[str]) -> float:
    return _measured(command)[0]


def _measured(command: list[str]) -> tuple[float, float]:
    """The command's wall, and the CPU seconds the whole machine was busy meanwhile."""
    busy, t0 = _busy_cpu_s(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0, _busy_cpu_s() - busy


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


class _KeptUp:
    """A process kept up for the runs that join it, started before them: ``command``
    prints the address to join on its first line (``address_of`` reads it) and stops
    everything it started on SIGTERM. Yields the address (``""`` without a command)."""

    def __init__(self, command: list[str] | None, address_of: Callable[[str], str]) -> None:
        self.command, self.address_of = command, address_of
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        if self.command is None:
            return ""
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        try:
            return self.address_of(line)
        except (IndexError, ValueError):
            self.process.kill()
            raise RuntimeError(f"{self.command[-1]} did not come up: {line!r}") from None

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)


#: A local Ray cluster alone, with the product's own start (:func:`thermoroute.cluster.
#: ensure_ray`: token, options); SIGTERM stops it, and only it.
RAY_ALONE = (
    "import signal\n"
    "import ray\n"
    "from thermoroute.cluster import ensure_ray, stop_ray\n"
    "ensure_ray()\n"
    "signal.signal(signal.SIGTERM, lambda *_: None)  # wakes the pause below\n"
    "print(ray.get_runtime_context().gcs_address, flush=True)\n"
    "signal.pause()\n"
    "stop_ray()\n"
)


def _printed_address(line: str) -> str:
    """The address :data:`RAY_ALONE` prints."""
    if not line.strip():
        raise ValueError(line)
    return line.strip()


def _fleet_address(line: str) -> str:
    """The address in ``thermoroute fleet``'s line."""
    return line.split("is up at ")[1].split(": ")[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup_bench", description=__doc__)
    parser.add_argument("--scenario", default="australia")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kept-up",
        action="store_true",
        help="also run joining a local cluster started once for all the runs",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="also run on a `thermoroute fleet` kept up for all the runs (its agents too)",
    )
    args = parser.parse_args(argv)
    n = max(1, args.repeats)
    print(f"help:    {_median([_wall([*CLI, '--help']) for _ in range(n)])}")
    print(f"version: {_median([_wall([*CLI, '--version']) for _ in range(n)])}")
    variants = [
        "inline", "ray", *(["kept-up"] if args.kept_up else []), *(["fleet"] if args.fleet else [])
    ]  # fmt: skip
    walls: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    with (
        tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch,
        _KeptUp(
            [sys.executable, "-c", RAY_ALONE] if args.kept_up else None, _printed_address
        ) as address,
        _KeptUp([*CLI, "fleet", args.scenario] if args.fleet else None, _fleet_address) as (
            fleet_address
        ),
    ):
        for k in range(n):
            for variant in variants:
                where = {"kept-up": ["--address", address],
                         "fleet": ["--address", fleet_address]}.get(variant, [])  # fmt: skip
                executor = "inline" if variant == "inline" else "ray"
                out = Path(scratch) / f"{variant}-{k}"
                command = [*CLI, "run", args.scenario, "--no-compare", "--quiet",
                           "--executor", executor, *where, "--out", str(out)]  # fmt: skip
                wall, cpu = _measured(command)
                walls[variant].append(wall)
                cpus[variant].append(cpu)
    cores = os.cpu_count() or 1
    inline = statistics.median(walls["inline"])
    labels = {"inline": "run --executor inline", "ray": "run (local Ray)",
              "kept-up": "run --address (kept up)",
              "fleet": "run --address (a fleet)"}  # fmt: skip
    print(f"variant | wall [s] (runs) | ÷ inline | busy CPU [s] | CPU ÷ {cores} cores [s]")
    for variant in variants:
        cpu = statistics.median(cpus[variant])
        print(f"{labels[variant]} | {_median(walls[variant])} | "
              f"{statistics.median(walls[variant]) / inline:.2f} | {cpu:.2f} | "
              f"{cpu / cores:.2f}")  # fmt: skip
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
