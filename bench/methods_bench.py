"""Both distributed methods side by side, and the centralised solve (issue 9, item 7; floors
issue 24, item 4).

    python -m bench.methods_bench [--scenarios australia,australia-20,synth100,synth1000]
                                  [--methods ipm,admm] [--repeats 3] [--no-central]
                                  [--json FILE]

Run by hand; nothing here is asserted. For every scenario, from one invocation, on Ray
(site groups as in ``bench.admm_bench``: one actor per site on the embedded fleets, four
actors on the synthetic ones) and in process, each run ``--repeats`` times in turn (in
process, on Ray; masked, then in the clear for the interior point) and reported as medians:

* iterations to the ``ε_rel = 1e-4`` test, converged or not, wall time of the iterations and
  seconds per iteration, on Ray and in process (the coordinator and every site in one
  process, one after the other, on one core), and their ratio;
* the per-iteration floor on Ray: the rounds of one iteration times an *empty round* through
  the same fleet (``RayFleet.broadcast`` of ``EmptyRound``: every group answers, without
  computing, as many values as the run's groups sent per round on average, masked when the
  run masks), plus the sites' and coordinator's own computing per iteration — the in-process
  time per iteration divided by the cores, since on this machine the sites share two;
* bytes each site group sends per iteration (the interior point: its masked sums, 16 bytes
  per value; ADMM: its served demand, 8 bytes per support row);
* the objective's gap to the centralised optimum (cvxpy + Clarabel in a child process with
  a time and memory budget) and that solve's wall time;
* for the interior point, what masking costs: the same runs with secure aggregation off (in
  process and on Ray), and the median time for one party to encode and mask the largest
  message (the ``newton`` round) with the neighbours of a fleet of that size (on real hosts
  every site masks in parallel; here the emulation pays it once per group).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.admm_bench import (
    DEFAULTS,
    central_with_budget,
    machine_info,
    make_spec,
    prepare,
)
from thermoroute.cluster import discover, ensure_ray
from thermoroute.common.ipm_protocol import round_fields
from thermoroute.common.method_protocol import EmptyRound
from thermoroute.common.scenarios import embedded_scenarios
from thermoroute.common.schur_pattern import SchurPattern
from thermoroute.common.secure_aggregation import (
    MaskingSetup,
    PairwiseMasker,
    mask_degree,
    neighbour_graph,
)
from thermoroute.coordinator.admm import NAME as ADMM
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.data import layout_of, load_view
from thermoroute.coordinator.ipm import NAME as INTERIOR_POINT
from thermoroute.coordinator.ipm import IpmSettings
from thermoroute.launch import DistributedRun, solve_distributed

EPS_REL = 1e-4
#: Central solves beyond this are reported as not finished (the 1000-site one takes ~12 min
#: and needs more than 10 GB: its address space is capped at 20 GB of the machine's 24).
CENTRAL_BUDGET_S = 1800.0
CENTRAL_MEMORY_GB = 20.0
#: ADMM wall-time limit per scenario (the 1000-site fleet needs ~33 min).
ADMM_LIMIT_S = {"australia": None, "australia-20": None, "synth100": 900.0, "synth1000": 4200.0}


#: The in-process run that measures the sites' computing per iteration stops after this long
#: (ADMM on 1,000 sites would take half an hour; its early iterations are its dearest, so
#: the floor it gives is on the high side there).
FLOOR_RUN_LIMIT_S = 120.0


def settings_of(
    method: str, scenario: str, secure: bool = True, limit_s: float | None = None
) -> AdmmSettings | IpmSettings:
    if method == INTERIOR_POINT:
        return IpmSettings(eps_rel=EPS_REL, secure_aggregation=secure, time_limit_s=limit_s)
    limit = ADMM_LIMIT_S.get(scenario) if limit_s is None else limit_s
    return AdmmSettings(eps_rel=EPS_REL, time_limit_s=limit)


def rounds_per_iteration(method: str, run: DistributedRun) -> float:
    if method == ADMM:
        return 1.0
    result = run.outcome.result
    return result.rounds / max(result.iterations, 1)


def bytes_per_group(method: str, run: DistributedRun) -> float:
    if method == INTERIOR_POINT:
        return float(run.outcome.result.bytes_per_group_iteration)
    structure = run.outcome.structure
    return 8.0 * structure.n_entries / len(run.groups)


def masking_cost(
    source: str, groups: int, across_steps: bool, repeats: int = 7
) -> dict[str, float]:
    """Median seconds for one party to encode and mask a ``newton`` message (on the Schur
    pattern the run used)."""
    directory, _ = discover(source)
    layout = layout_of(load_view(directory))
    pattern = SchurPattern(layout, across_steps=across_steps)
    size = sum(n for _, n in round_fields("newton", layout.n_rows, pattern.size))
    parties = max(groups, 2)
    maskers = [PairwiseMasker() for _ in range(parties)]
    keys = [m.public_key for m in maskers]
    graph = neighbour_graph(parties, seed=1)
    maskers[0].configure(MaskingSetup("bench", 0, {j: keys[j] for j in graph[0]}))
    values = np.random.default_rng(0).standard_normal(size)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        maskers[0].mask(values, r, 0)
        times.append(time.perf_counter() - t0)
    return {
        "values": float(size),
        "neighbours": float(len(graph[0])),
        "mask_s": float(statistics.median(times)),
        "degree_at_1000": float(mask_degree(1000)),
    }


def one_run(
    spec: Any,
    method: str,
    executor: str,
    *,
    secure: bool = True,
    floor: EmptyRound | None = None,
    limit_s: float | None = None,
) -> dict[str, Any]:
    """One run; on Ray with ``floor``, also the median empty round answering it."""
    settings = settings_of(method, spec.name, secure, limit_s)
    t0 = time.perf_counter()
    run = solve_distributed(
        spec.source,
        executor=executor,
        sites_per_agent=spec.sites_per_agent,
        settings=settings,
        measure_ping=floor is not None and executor == "ray",
        ping_answer=floor,
    )
    total = time.perf_counter() - t0
    iterations = run.outcome.run.iterations
    record = {
        "method": method,
        "executor": executor,
        "secure_aggregation": secure,
        "converged": run.converged,
        "iterations": iterations,
        "solve_s": run.timings["solve_s"],
        "total_s": total,
        "s_per_iteration": run.timings["solve_s"] / max(iterations, 1),
        "objective_aud": run.objective_aud,
        "groups": len(run.groups),
        "sites": sum(len(g) for g in run.groups),
        "rounds_per_iteration": rounds_per_iteration(method, run),
        "bytes_per_group_per_iteration": bytes_per_group(method, run),
        "empty_round_s": run.timings.get("ping_s", math.nan),
        "empty_round_values": floor.values if floor is not None else 0,
        "schur_across_steps": bool(getattr(run.outcome.result, "across_steps", False)),
    }
    return record


def floor_round(method: str, secure: bool, record: dict[str, Any]) -> EmptyRound:
    """The empty round that stands for one of ``record``'s rounds: each group answers the
    values it sent per round on average (masked as the run was)."""
    per_round = record["bytes_per_group_per_iteration"] / record["rounds_per_iteration"]
    masked = method == INTERIOR_POINT and secure
    return EmptyRound(round(per_round / (16 if masked else 8)), masked)


def medians(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first record with every number replaced by its median over ``records`` (a
    count by its lower median, to stay a count)."""
    out = dict(records[0])
    for key, value in out.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[key] = statistics.median_low(r[key] for r in records)
        elif isinstance(value, float):
            out[key] = statistics.median(r[key] for r in records)
    out["converged"] = all(r["converged"] for r in records)
    return out


def compare(
    spec: Any, method: str, secure: bool, repeats: int, console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``repeats`` pairs of runs, in process then on Ray; the Ray run's medians with the
    in-process figures, the ratio and the floor, and the in-process medians."""
    inline_runs, ray_runs = [], []
    clear = "" if secure else " without secure aggregation"
    for r in range(repeats):
        console.print(f"[{spec.name}] {method}{clear}, repeat {r + 1}/{repeats}: in process …")
        inline = one_run(spec, method, "inline", secure=secure, limit_s=FLOOR_RUN_LIMIT_S)
        console.print(f"[{spec.name}] {method}{clear}, repeat {r + 1}/{repeats}: on Ray …")
        floor = floor_round(method, secure, inline)
        ray_run = one_run(spec, method, "ray", secure=secure, floor=floor)
        ray_run["ratio_to_inline"] = ray_run["s_per_iteration"] / inline["s_per_iteration"]
        inline_runs.append(inline)
        ray_runs.append(ray_run)
    inline, out = medians(inline_runs), medians(ray_runs)
    cores = 2
    out["inline_s_per_iteration"] = inline["s_per_iteration"]
    out["floor_s_per_iteration"] = (
        out["rounds_per_iteration"] * out["empty_round_s"] + inline["s_per_iteration"] / cores
    )
    out["ratio_to_floor"] = out["s_per_iteration"] / out["floor_s_per_iteration"]
    out["ratios_to_inline"] = [r["ratio_to_inline"] for r in ray_runs]
    out["repeats"] = ray_runs
    inline["repeats"] = inline_runs
    return out, inline


def bench(
    spec: Any, methods: Sequence[str], central: bool, repeats: int, console: Console
) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": spec.name, "sites_per_agent": spec.sites_per_agent}
    for method in methods:
        out[method], out[f"{method}_inline"] = compare(spec, method, True, repeats, console)
        if method == INTERIOR_POINT:
            out["clear"], out["clear_inline"] = compare(spec, method, False, repeats, console)
            out["masking"] = masking_cost(
                spec.source, out[method]["groups"], out[method]["schur_across_steps"]
            )
    if central:
        console.print(f"[{spec.name}] centralised solve …")
        out["central"] = central_with_budget(spec.source, CENTRAL_BUDGET_S, CENTRAL_MEMORY_GB)
        if out["central"].get("ok"):
            for method in methods:
                ref = out["central"]["objective_aud"]
                out[method]["gap_pct"] = 100.0 * (out[method]["objective_aud"] - ref) / abs(ref)
    return out


def table(results: Sequence[dict[str, Any]], methods: Sequence[str]) -> Table:
    t = Table(
        title="distributed methods side by side (ε_rel = 1e-4; medians of the repeats)",
        title_justify="left",
    )
    for col in ("scenario", "method", "iterations", "Ray wall s", "Ray s/it", "in-process s/it",
                "Ray ÷ in-process", "empty round ms", "floor s/it", "× floor", "rounds/it",
                "kB/group/it", "gap %", "central s"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("scenario", "method") else "right")
    for res in results:
        central = res.get("central", {})
        central_s = f"{central['wall_s']:.1f}" if central.get("ok") else "—"
        for method in methods:
            r = res[method]
            conv = "" if r["converged"] else " (not conv.)"
            t.add_row(
                res["scenario"], method, f"{r['iterations']:.0f}{conv}", f"{r['solve_s']:.2f}",
                f"{r['s_per_iteration']:.3f}", f"{r['inline_s_per_iteration']:.3f}",
                f"{r['s_per_iteration'] / r['inline_s_per_iteration']:.2f}",
                f"{1000 * r['empty_round_s']:.1f}", f"{r['floor_s_per_iteration']:.3f}",
                f"{r['ratio_to_floor']:.2f}", f"{r['rounds_per_iteration']:.1f}",
                f"{r['bytes_per_group_per_iteration'] / 1000:.1f}",
                f"{r.get('gap_pct', math.nan):+.4f}", central_s,
            )  # fmt: skip
    return t


def masking_table(results: Sequence[dict[str, Any]]) -> Table:
    t = Table(
        title="secure aggregation (interior point; medians of the repeats)", title_justify="left"
    )
    for col in ("scenario", "groups", "values/msg", "neighbours", "mask ms/site/round",
                "Ray s/it masked", "clear", "ratio", "in-process s/it masked", "clear",
                "ratio"):  # fmt: skip
        t.add_column(col, justify="left" if col == "scenario" else "right")
    for res in results:
        if "masking" not in res:
            continue
        m, on, off = res["masking"], res[INTERIOR_POINT], res["clear"]
        on_in, off_in = res[f"{INTERIOR_POINT}_inline"], res["clear_inline"]
        t.add_row(
            res["scenario"], str(on["groups"]), f"{m['values']:.0f}", f"{m['neighbours']:.0f}",
            f"{1000 * m['mask_s']:.2f}", f"{on['s_per_iteration']:.3f}",
            f"{off['s_per_iteration']:.3f}",
            f"{on['s_per_iteration'] / off['s_per_iteration']:.2f}",
            f"{on_in['s_per_iteration']:.3f}", f"{off_in['s_per_iteration']:.3f}",
            f"{on_in['s_per_iteration'] / off_in['s_per_iteration']:.2f}",
        )  # fmt: skip
    return t


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="australia,australia-20,synth100,synth1000")
    parser.add_argument("--methods", default=f"{INTERIOR_POINT},{ADMM}")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (medians)")
    parser.add_argument("--no-central", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(width=150)
    # ADMM's sites warn of every inexact inner solve; the counts are in the outputs.
    logging.getLogger("thermoroute.site_agent").setLevel(logging.ERROR)
    methods = [m for m in args.methods.split(",") if m]
    info = machine_info()
    console.print(f"machine: {info['nproc']} cores, {info['cpu']}, load {info['loadavg']}")
    ensure_ray(num_cpus=info["nproc"])
    results = []
    embedded = set(embedded_scenarios())
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenarios.split(","):
            spec = make_spec(name, 1, {}, None)
            if not (name in DEFAULTS or name.startswith("synth") or name in embedded):
                raise SystemExit(f"error: unknown scenario {name!r} (embedded or synthN)")
            prepare(spec, Path(tmp))
            results.append(bench(spec, methods, not args.no_central, args.repeats, console))
            console.print(table(results, methods))
    console.print(table(results, methods))
    console.print(masking_table(results))
    if args.json is not None:
        doc = {"machine": info, "results": results, "eps_rel": EPS_REL}
        args.json.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
