"""An hourly decision across an emulated Australian WAN: rounds × the slowest round trip.

    python -m bench.wan_bench [--scenario australia] [--head-city sydney] [--cycles 3]
                              [--methods ipm admm] [--admm-budget-s 60] [--all-at-head]
                              [--json FILE]

Run by hand as root; nothing here is asserted. It brings up the multi-host deployment of
tests/test_multihost.py (one network namespace and one Ray node per site, at the site's
city, the head with the coordinator at ``--head-city``; the guide's commands, token and
TLS) on the emulated WAN of tests/wan.py — every packet between two hosts held for half the
two cities' round-trip time of the one table, ``tests.wan.RTT_MS``. For each method the
head runs ``--cycles`` planning cycles of ``thermoroute serve``'s loop back to back
(:class:`~thermoroute.service.PlanningService`: a cold first cycle, then warm
receding-horizon steps) and the bench prints, cold and warm (median): the method's
coordinator↔site rounds, its iterations, the cycle's wall seconds, and the wall predicted
from the rounds alone — rounds × the slowest site's RTT to the coordinator — side by side;
then where a warm cycle's wall goes: every kind of exchange with the sites, its count, its
seconds and its seconds per exchange in round trips.

Rounds are the interior point's own count (``rounds`` in its stats); ADMM exchanges once
per iteration, so its rounds are its iterations. A cycle's wall also holds one more round
(the sites move to the horizon) and the computation. ADMM needs hundreds of rounds: its
cycles are capped at ``--admm-budget-s`` (the service's cycle budget; a capped cycle ends
unconverged and says so).

``python -m bench.wan_bench cycles …`` is the part that runs on the head (the test
tests/test_multihost.py runs it too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def method_rounds(stats: dict[str, Any], iterations: int) -> int:
    """Coordinator↔site rounds of one run: the interior point counts them (``rounds``);
    ADMM exchanges once per iteration."""
    return int(stats.get("rounds", iterations))


def measure_cycles(
    split_root: Path,
    address: str,
    method: str,
    cycles: int,
    budget_s: float,
    horizon: int | None = None,
) -> list[dict[str, Any]]:
    """Planning cycles ``0 … cycles-1`` back to back on the Ray cluster at ``address``, as
    ``thermoroute serve`` runs them (``horizon`` steps each; default the scenario's); per
    cycle its wall [s], rounds, iterations, outcome, and its exchanges with the sites by kind
    (:func:`timed_exchanges`)."""
    from thermoroute.cluster import discover, serve_fleet
    from thermoroute.options import RunOptions
    from thermoroute.service import PlanningService, ServeSettings

    coordinator_dir, site_ids = discover(split_root)
    service = PlanningService(
        coordinator_dir, site_ids, RunOptions(method=method).method_settings(),
        ServeSettings(horizon=horizon, step_seconds=3600.0, cycle_budget_s=budget_s),
        serve_fleet(split_root, site_ids, executor="ray", address=address),
    )  # fmt: skip
    # The service keeps each run's outcome to itself; record them to read their rounds.
    outcomes: list[Any] = []
    run = service.coordinator.run

    def recording_run(**kwargs: Any) -> Any:
        outcome = run(**kwargs)
        outcomes.append(outcome)
        return outcome

    service.coordinator.run = recording_run  # type: ignore[method-assign]
    rows: list[dict[str, Any]] = []
    exchanges: dict[str, list[float]] = {}
    try:
        for k in range(cycles):
            first = len(outcomes)
            exchanges.clear()
            t0 = time.perf_counter()
            with timed_exchanges(exchanges):
                record = service.cycle(k)
            wall_s = time.perf_counter() - t0
            runs = [o.run for o in outcomes[first:]]
            rows.append({
                "cycle": k,
                "wall_s": wall_s,
                "method_wall_s": sum(r.wall_s for r in runs),
                "iterations": record.iterations,
                "rounds": sum(method_rounds(r.extra_stats, r.iterations) for r in runs),
                # What one site group sends per iteration (the interior point counts it).
                "bytes_per_group_per_iteration": max(
                    (r.extra_stats.get("bytes_per_group_per_iteration", 0) for r in runs),
                    default=0,
                ),
                "converged": record.converged,
                "outcome": record.outcome,
                # Every exchange of the cycle with the sites, by kind: [count, seconds].
                "exchanges": {kind: list(v) for kind, v in exchanges.items()},
            })  # fmt: skip
    finally:
        service.stop()
        service.run()  # returns at once and closes the fleet
    return rows


@contextlib.contextmanager
def timed_exchanges(into: dict[str, list[float]]) -> Iterator[None]:
    """Count and time every exchange the Ray fleet makes with the sites meanwhile, by kind
    (the group call, or ``register``), into ``{kind: [count, seconds]}``.

    A flat tree's ``aggregate`` is a ``broadcast`` (timed there); a posted call waits for
    nothing (counted, with the seconds of its submission). This found the registration
    costing ten round trips a cycle across the WAN (BENCHMARKS.md, issue 24).
    """
    from thermoroute.coordinator.fleet import RayFleet

    def timed(name: str) -> Any:
        method = getattr(RayFleet, name)

        def wrapper(self: RayFleet, *args: Any, **kwargs: Any) -> Any:
            if name == "aggregate" and self.tree.is_flat:
                return method(self, *args, **kwargs)
            kind = args[0] if args and isinstance(args[0], str) else name
            t0 = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                count, seconds = into.get(kind, [0.0, 0.0])
                into[kind] = [count + 1, seconds + time.perf_counter() - t0]

        return wrapper

    names = ("broadcast", "aggregate", "post", "scatter", "register")
    originals = {name: getattr(RayFleet, name) for name in names}
    for name in names:
        setattr(RayFleet, name, timed(name))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(RayFleet, name, method)


def exchange_table(method: str, rows: list[dict[str, Any]], max_rtt_ms: float) -> Any:
    """Where a warm cycle's wall goes: each kind of exchange, its count and seconds (the
    median over the warm cycles), and the seconds per exchange in round trips."""
    from rich.table import Table

    warm = rows[1:] or rows
    table = Table(title=f"{method}: a warm cycle's exchanges (median of {len(warm)})")
    for column in ("exchange", "count", "seconds", "per exchange ÷ RTT"):
        table.add_column(column, justify="right")
    kinds = sorted({kind for r in warm for kind in r["exchanges"]})
    for kind in kinds:
        count = statistics.median(r["exchanges"].get(kind, [0, 0.0])[0] for r in warm)
        seconds = statistics.median(r["exchanges"].get(kind, [0, 0.0])[1] for r in warm)
        per = seconds / count / (max_rtt_ms / 1000.0) if count else float("nan")
        table.add_row(kind, f"{count:g}", f"{seconds:.3f}", f"{per:.2f}")
    return table


def summarise(rows: list[dict[str, Any]], max_rtt_ms: float) -> dict[str, dict[str, float]]:
    """The cold (first) cycle and the median warm cycle, each with its predicted wall."""
    warm = rows[1:] or rows

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in warm))

    kinds = {
        "cold": {k: float(rows[0][k]) for k in ("rounds", "iterations", "wall_s")},
        "warm": {k: median(k) for k in ("rounds", "iterations", "wall_s")},
    }
    for figures in kinds.values():
        figures["predicted_s"] = figures["rounds"] * max_rtt_ms / 1000.0
    kinds["warm"]["converged"] = float(sum(r["converged"] for r in warm)) / len(warm)
    kinds["cold"]["converged"] = float(rows[0]["converged"])
    return kinds


def _cycles_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.wan_bench cycles")
    parser.add_argument("split_root", type=Path)
    parser.add_argument("address")
    parser.add_argument("method")
    parser.add_argument("cycles", type=int)
    parser.add_argument("budget_s", type=float)
    parser.add_argument("out", type=Path)
    parser.add_argument("--horizon", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = measure_cycles(
        args.split_root, args.address, args.method, args.cycles, args.budget_s, args.horizon
    )
    args.out.write_text(json.dumps(rows))


def main() -> None:
    if sys.argv[1:2] == ["cycles"]:
        _cycles_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="australia")
    parser.add_argument("--head-city", default="sydney")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["ipm", "admm"])
    parser.add_argument("--ipm-budget-s", type=float, default=120.0)
    parser.add_argument("--admm-budget-s", type=float, default=60.0)
    parser.add_argument(
        "--all-at-head",
        action="store_true",
        help="every site's host in the head's city (1 ms apart): the same deployment, "
        "forwarder included, without the country's distances, for comparison",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from rich.console import Console
    from rich.table import Table
    from test_multihost import GCS_PORT, running_cluster
    from wan import city_of, rtt_ms

    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenario_writing import copy_scenario_dir
    from thermoroute.common.scenarios import embedded_path

    console = Console(width=160)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        full = copy_scenario_dir(embedded_path(args.scenario), Path(tmp) / args.scenario)
        sites = load_scenario(full).sites
        cities = dict(zip(sites.site_id, map(city_of, sites.name), strict=True))
        if args.all_at_head:
            cities = dict.fromkeys(cities, args.head_city)
        max_rtt_ms = max(rtt_ms(args.head_city, city) for city in cities.values())
        t0 = time.perf_counter()
        with running_cluster(full, cities, head_city=args.head_city, prometheus=False) as c:
            console.print(
                f"{len(cities)} site hosts + head in {args.head_city}: cluster up in "
                f"{time.perf_counter() - t0:.0f} s; slowest RTT to the head {max_rtt_ms} ms"
            )
            for method in args.methods:
                budget = args.admm_budget_s if method == "admm" else args.ipm_budget_s
                out = c.root / "out" / f"wan-{method}.json"
                c.sh(
                    c.head,
                    f"thermoroute_ray_env && python3 -m bench.wan_bench cycles {c.split} "
                    f"{c.head.ip}:{GCS_PORT} {method} {args.cycles} {budget} {out}",
                    timeout=args.cycles * budget * 2 + 600,
                )  # fmt: skip
                rows = json.loads(out.read_text())
                results[method] = {"cycles": rows, **summarise(rows, max_rtt_ms)}
                console.print(f"{method}: {rows}")
    table = Table(
        title=f"{args.scenario} across the emulated WAN (coordinator in {args.head_city}, "
        f"slowest site RTT {max_rtt_ms} ms)"
    )
    for column in ("method", "cycle", "rounds", "iterations", "wall per decision [s]",
                   "rounds × RTT [s]", "wall ÷ predicted", "converged"):  # fmt: skip
        table.add_column(column, justify="right")
    for method, result in results.items():
        for kind in ("cold", "warm"):
            f = result[kind]
            table.add_row(
                method, kind if kind == "cold" else f"warm (median of {args.cycles - 1})",
                f"{f['rounds']:g}", f"{f['iterations']:g}", f"{f['wall_s']:.2f}",
                f"{f['predicted_s']:.2f}", f"{f['wall_s'] / f['predicted_s']:.2f}",
                f"{f['converged']:.0%}",
            )  # fmt: skip
    console.print(table)
    for method, result in results.items():
        console.print(exchange_table(method, result["cycles"], max_rtt_ms))
    if args.json:
        args.json.write_text(json.dumps({"max_rtt_ms": max_rtt_ms, **results}, indent=2))


if __name__ == "__main__":
    main()
