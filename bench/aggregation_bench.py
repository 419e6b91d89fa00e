"""The coordinator's inbound bytes per interior-point iteration, flat and through the tree of
relays (issue 24, item 3), and the wall per iteration on Ray with and without it.

    python -m bench.aggregation_bench [--sites 100,1000] [--bytes-iterations 3]
                                      [--ray-sites 100] [--ray-agents 20] [--ray-fan-in 4]
                                      [--repeats 3] [--json FILE]

Run by hand; nothing here is asserted. Synthetic fleets as ``bench.methods_bench`` builds
them (``synthesize(N, 20 regions, seed 0)``).

* **Bytes**, in process, one site group per site (a real deployment: one site per VM), secure
  aggregation on: an interior-point run with a tap on every answer the coordinator takes in;
  the bytes of the pickled answers of the rounds that answer sums (``method_start``,
  ``method_round``), per iteration, once with every group answering the coordinator (flat)
  and once through the default tree (:class:`~thermoroute.common.aggregation_tree.
  AggregationTree`, fan-in 16). The runs stop after ``--bytes-iterations`` iterations: the
  bytes of an iteration do not depend on which one it is beyond how many corrector rounds it
  holds, and a whole run of 1,000 one-site groups in one process takes hours here (every group
  masks its own messages). The start and cleaning rounds are counted in (per run, not per
  iteration), which puts the figures on the high side.
* **Wall**, on Ray: the same fleet of ``--ray-sites`` sites in ``--ray-agents`` actors, a whole
  run flat and through a tree of ``--ray-fan-in``, alternated ``--repeats`` times; the median
  seconds per iteration of each and their ratio, measured in one invocation.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.admm_bench import SYNTH_REGIONS, SYNTH_SEED, machine_info
from thermoroute.cluster import ensure_ray, stop_ray
from thermoroute.common.aggregation_tree import DEFAULT_FAN_IN, AggregationTree
from thermoroute.common.ipm_protocol import Aggregate
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.synth import synthesize
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.launch import solve_distributed

#: The group calls whose answers are sums (what the tree relays).
SUMMED = ("method_start", "method_round")
#: Fan-in that stands for "no tree": larger than any fleet here.
FLAT = 1_000_000


def inbound_bytes(source: str, sites: int, fan_in: int, iterations: int) -> dict[str, Any]:
    """One in-process run of one-site groups; the summed answers' bytes it took in.

    Per iteration: the answers of the iterations the run completed (every round from one
    ``newton`` to the next), divided by their number; ``bytes_run``: every summed answer
    of the run, with the start, the last ``newton`` and the cleaning round.
    """
    taken: list[tuple[str, int, int]] = []  # (phase, iteration, bytes)

    def tap(kind: str, group: int, message: object) -> None:
        if kind in SUMMED and isinstance(message, Aggregate):
            raw = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            taken.append((message.phase, message.iteration, len(raw)))

    t0 = time.perf_counter()
    run = solve_distributed(
        source,
        executor="inline",
        sites_per_agent=1,
        settings=replace(IpmSettings(), max_iter=iterations),
        aggregation_fan_in=fan_in,
        tap=tap,
    )
    done = run.iterations  # iterations 0 … done − 1 took their step; done only its newton
    in_iterations = [b for phase, k, b in taken if phase != "start" and k < done]
    tree = AggregationTree.k_ary(len(run.groups), fan_in)
    return {
        "sites": sites,
        "groups": len(run.groups),
        "fan_in": None if fan_in == FLAT else fan_in,
        "answering_the_coordinator": len(tree.top),
        "iterations": run.iterations,
        "rounds": run.outcome.result.rounds,
        "answers": len(taken),
        "bytes_run": sum(b for _, _, b in taken),
        "bytes_per_iteration": sum(in_iterations) / max(done, 1),
        "wall_s": time.perf_counter() - t0,
    }


def ray_walls(source: str, agents: int, sites: int, fan_in: int, repeats: int) -> dict[str, Any]:
    """Whole Ray runs, flat and through the tree alternated; seconds per iteration."""
    per_agent = -(-sites // agents)
    actors = -(-sites // per_agent)
    walls: dict[str, list[float]] = {"flat": [], "tree": []}
    iterations: dict[str, list[int]] = {"flat": [], "tree": []}
    for _ in range(repeats):
        for name, fan in (("flat", FLAT), ("tree", fan_in)):
            run = solve_distributed(
                source,
                executor="ray",
                sites_per_agent=per_agent,
                settings=IpmSettings(),
                aggregation_fan_in=fan,
            )
            walls[name].append(run.seconds_per_iteration)
            iterations[name].append(run.iterations)
    flat, tree = statistics.median(walls["flat"]), statistics.median(walls["tree"])
    return {
        "sites": sites,
        "agents": actors,
        "fan_in": fan_in,
        "answering_the_coordinator": len(AggregationTree.k_ary(actors, fan_in).top),
        "s_per_iteration": {"flat": flat, "tree": tree},
        "all_s_per_iteration": walls,
        "iterations": iterations,
        "tree_over_flat": tree / flat,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="100,1000")
    parser.add_argument("--bytes-iterations", type=int, default=3)
    parser.add_argument("--ray-sites", type=int, default=100)
    parser.add_argument("--ray-agents", type=int, default=20)
    parser.add_argument("--ray-fan-in", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine_info(), "bytes": [], "ray": None}
    with tempfile.TemporaryDirectory(prefix="aggregation-bench-") as work:
        sources = {}
        for n in sorted({int(s) for s in args.sites.split(",")} | {args.ray_sites}):
            scenario = synthesize(n, SYNTH_REGIONS, SYNTH_SEED)
            sources[n] = str(write_scenario(scenario, Path(work) / f"synth{n}"))
        for n in (int(s) for s in args.sites.split(",")):
            for fan in (FLAT, DEFAULT_FAN_IN):
                row = inbound_bytes(sources[n], n, fan, args.bytes_iterations)
                out["bytes"].append(row)
                print(
                    f"synth{n}: {row['groups']} one-site groups, "
                    f"{'flat' if row['fan_in'] is None else f'tree fan-in {fan}'}: "
                    f"{row['answering_the_coordinator']} answer the coordinator; "
                    f"{row['bytes_per_iteration'] / 1e6:.2f} MB per iteration "
                    f"({row['iterations']} iterations, {row['rounds']} rounds, "
                    f"{row['wall_s']:.0f} s)",
                    flush=True,
                )
        if args.repeats > 0:
            started = ensure_ray()
            try:
                ray = ray_walls(
                    sources[args.ray_sites],
                    args.ray_agents,
                    args.ray_sites,
                    args.ray_fan_in,
                    args.repeats,
                )
            finally:
                if started:
                    stop_ray()
            out["ray"] = ray
            spi = ray["s_per_iteration"]
            print(
                f"Ray, synth{args.ray_sites} in {ray['agents']} actors: flat "
                f"{spi['flat']:.3f} s/iteration, tree (fan-in {args.ray_fan_in}, "
                f"{ray['answering_the_coordinator']} answer the coordinator) "
                f"{spi['tree']:.3f} s/iteration: ×{ray['tree_over_flat']:.2f} "
                f"(median of {args.repeats}; iterations {ray['iterations']})",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
