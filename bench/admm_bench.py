"""Benchmark of the distributed exchange-ADMM runtime (issue 3, item 7). Run by hand.

    python -m bench.admm_bench [--scenarios australia,australia-20,synth100,synth1000]
                               [--modes per-row,scalar,per-row+anderson]
                               [--repeats N] [--executor ray] [--json FILE]

For every scenario it prints, from one invocation:

* iterations to ``ε_rel = 1e-4`` of each ADMM mode (:data:`MODES`; by default the product's
  per-row penalties, plain ADMM with one ρ, and per-row penalties with Anderson
  acceleration), and whether the run converged;
* wall time of the iterations (``solve_s``) and of the whole call, and mean seconds per
  iteration (``solve_s`` / fan-outs, polishing included in both);
* the per-iteration floor measured in the same invocation — the slowest site's median solve
  plus one minimal Ray fan-out/fan-in over the same actors — and the ratio to it;
* the centralised solve (:func:`thermoroute.common.central.solve_central`) of the same scenario, in
  a child process with a time and memory budget, and the relative objective gap ADMM vs central.

How the floor is measured
-------------------------
The runtime kills its actors when :func:`thermoroute.launch.solve_distributed` returns, so the
sites' telemetry is not reachable afterwards. The per-site solve seconds are therefore timed in this
process on the same data and the same ADMM iterates: the same
:class:`~thermoroute.site_agent.group.SiteGroup` and
:class:`~thermoroute.coordinator.actor.Coordinator` code is run inline (one solver thread, so one
site's solve is not slowed by another's), with every site's ``SiteAgent.solve`` call timed. That
call is what a site does per iteration (update ``q``, OSQP solve, bookkeeping); the bare OSQP solve
(``SolveInfo.solve_s``) is shown too. The Ray round trip is ``timings["ping_s"]`` of each Ray run
(``measure_ping=True``): the median of 20 empty rounds through the fleet's broadcast from the
coordinator actor over the same site actors (each answering nothing), taken right after the run.

Two floors are reported:

``site floor``
    max over sites of the median site solve, plus the ping (the brief's floor: every site
    on its own core).
``machine floor``
    the same with the compute term replaced by what this machine must do at least: the
    slowest group's serial sum of its sites' medians (a group solves its sites one after
    the other with ``threads=1``), or the sum over all sites divided by the cores,
    whichever is larger. With 20 single-site actors on 2 cores, or 250 sites per actor,
    this is the bound that can actually be approached here.

Ray is started once for the whole invocation (``num_cpus`` = the machine's cores) and shut
down at the end with ``ray.shutdown()``; ``ray stop`` is never used.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from thermoroute.cluster import discover, ensure_ray, plan_groups
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.data import load_view
from thermoroute.coordinator.events import NullObserver
from thermoroute.coordinator.fleet import InlineFleet
from thermoroute.launch import DistributedRun, solve_distributed
from thermoroute.site_agent.group import SiteGroup
from thermoroute.site_agent.subproblem import InnerSettings

#: The target relative tolerance of the benchmark (issue 3, item 7).
EPS_REL = 1e-4
#: Regions of the synthetic fleets (as in tests/test_admm.py's 100-site fleet).
SYNTH_REGIONS = 20
SYNTH_SEED = 0
#: Default budget of one centralised solve [s], and its address-space cap [GB].
CENTRAL_BUDGET_S = 300.0
CENTRAL_MEMORY_GB = 10.0
#: The ADMM variants compared, by name: changes to the default :class:`AdmmSettings`, and
#: under ``"inner"`` to the sites' :class:`InnerSettings`.
MODES: dict[str, dict[str, Any]] = {
    "per-row": {},
    "scalar": {"per_row": False},
    "per-row+anderson": {"acceleration": "anderson"},
    "per-row+nesterov": {"acceleration": "nesterov"},
    "scalar+anderson": {"per_row": False, "acceleration": "anderson"},
    "per-row+fallback": {"inner": {"fallback": True}},
}
#: Compared by default: the product's default, plain ADMM with one ρ, and Anderson.
DEFAULT_MODES: tuple[str, ...] = ("per-row", "scalar", "per-row+anderson")

console = Console(width=160)


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Spec:
    """One benchmarked scenario.

    Attributes
    ----------
    name : str
        ``australia``, ``australia-20`` or ``synth<N>``.
    sites_per_agent : int
        Sites hosted by one Ray actor.
    repeats : int
        ADMM runs per mode (medians are quoted).
    time_limit_s : float or None
        Wall-time limit of one ADMM run (``AdmmSettings.time_limit_s``); ``None``: none.
    profile_iters : int or None
        Iteration cap of the in-process profiling run (``None``: to convergence).
    source : str
        Embedded name or scenario directory (set by :func:`prepare`).
    """

    name: str
    sites_per_agent: int
    repeats: int
    time_limit_s: float | None = None
    profile_iters: int | None = None
    modes: tuple[str, ...] = DEFAULT_MODES
    source: str = ""


#: Defaults per scenario: sites per agent, repeats, ADMM time limit, profiling cap. The
#: synthetic fleets are grouped so that they run on four actors (two per core).
DEFAULTS: dict[str, tuple[int, int, float | None, int | None]] = {
    "australia": (1, 3, None, None),
    "australia-20": (1, 1, None, None),
    "synth100": (25, 1, 600.0, 300),
    "synth1000": (250, 1, 4200.0, 3),
}
#: Modes per scenario where not every default mode is affordable: a 1000-site run takes
#: most of an hour on two cores, so only the product's default runs there.
DEFAULT_MODES_OF: dict[str, tuple[str, ...]] = {"synth1000": ("per-row",)}


def make_spec(
    name: str,
    repeats: int | None,
    sites_per_agent: dict[str, int],
    time_limit_s: float | None,
    modes: tuple[str, ...] | None = None,
) -> Spec:
    """The :class:`Spec` of ``name`` with command-line overrides applied."""
    if name in DEFAULTS:
        spa, rep, limit, cap = DEFAULTS[name]
    elif name.startswith("synth") and name[5:].isdigit():
        n = int(name[5:])
        spa, rep, limit, cap = max(1, math.ceil(n / 4)), 1, 900.0, None
    else:
        spa, rep, limit, cap = 1, 3, None, None
    return Spec(
        name=name,
        sites_per_agent=sites_per_agent.get(name, spa),
        repeats=repeats if repeats is not None else rep,
        time_limit_s=time_limit_s if time_limit_s is not None else limit,
        profile_iters=cap,
        modes=modes or DEFAULT_MODES_OF.get(name, DEFAULT_MODES),
    )


def prepare(spec: Spec, workdir: Path) -> float:
    """Set ``spec.source``; write a synthetic fleet to ``workdir``. Returns seconds spent."""
    t0 = time.perf_counter()
    if spec.name.startswith("synth") and spec.name[5:].isdigit():
        from thermoroute.common.scenario_writing import write_scenario
        from thermoroute.common.synth import synthesize

        scenario = synthesize(int(spec.name[5:]), SYNTH_REGIONS, SYNTH_SEED)
        spec.source = str(write_scenario(scenario, workdir / spec.name))
    else:
        spec.source = spec.name
    return time.perf_counter() - t0


def settings_for(mode: str, time_limit_s: float | None) -> AdmmSettings:
    """The benchmark's ADMM settings: the defaults, ``ε_rel = 1e-4``, the given mode."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    changes = {k: v for k, v in MODES[mode].items() if k != "inner"}
    return dataclasses.replace(AdmmSettings(eps_rel=EPS_REL, time_limit_s=time_limit_s), **changes)


def inner_for(mode: str) -> InnerSettings:
    """The sites' inner settings of ``mode`` (the defaults unless it names changes)."""
    return InnerSettings(**MODES[mode].get("inner", {}))


# --------------------------------------------------------------------------------------------
# The per-site solve profile (in process)


class _Counter(NullObserver):
    """Counts loop iterations of the profiling run (polishing is not observed)."""

    def __init__(self) -> None:
        self.iterations = 0

    def on_iteration(self, record: Any) -> None:
        self.iterations += 1


@dataclass
class SiteProfile:
    """Per-site solve seconds of one inline run.

    Attributes
    ----------
    call_median_s : dict
        ``{site_id: median seconds of SiteAgent.solve}``.
    osqp_median_s : dict
        ``{site_id: median seconds of the OSQP solve alone}``.
    groups : list of tuple of str
        The Ray run's groups (for the machine floor).
    iterations : int
        Fan-outs of the profiling run (polishing included).
    converged : bool
    capped : bool
        Whether the run was cut at ``profile_iters``.
    solve_s : float
        Wall time of the inline iterations.
    """

    call_median_s: dict[str, float]
    osqp_median_s: dict[str, float]
    groups: list[tuple[str, ...]]
    iterations: int
    converged: bool
    capped: bool
    solve_s: float

    @property
    def slowest_site(self) -> tuple[str, float]:
        sid = max(self.call_median_s, key=self.call_median_s.__getitem__)
        return sid, self.call_median_s[sid]

    @property
    def slowest_osqp_s(self) -> float:
        return max(self.osqp_median_s.values())

    def machine_compute_s(self, cores: int) -> float:
        """max(slowest group's serial sum, all sites' sum / cores) [s]."""
        group_sums = [sum(self.call_median_s[s] for s in g) for g in self.groups]
        return max(max(group_sums), sum(self.call_median_s.values()) / max(cores, 1))

    @property
    def seconds_per_iteration(self) -> float:
        return self.solve_s / max(self.iterations, 1)


def _timed(
    sid: str, agent: Any, samples: dict[str, list[float]], osqp: dict[str, list[float]]
) -> Callable[..., Any]:
    inner = agent.solve

    def solve(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        samples[sid].append(time.perf_counter() - t0)
        osqp[sid].append(agent.subproblem.info.solve_s)
        return out

    return solve


def profile_sites(spec: Spec, settings: AdmmSettings) -> SiteProfile:
    """Run the same coordinator and site code inline, timing every site's solve call.

    Parameters
    ----------
    spec : Spec
    settings : AdmmSettings
        The plain-ADMM settings of the Ray runs (so the sites see the same iterates);
        ``max_iter`` is capped at ``spec.profile_iters`` when set (then without polishing).

    Returns
    -------
    SiteProfile
    """
    coordinator_dir, site_ids = discover(spec.source)
    from thermoroute.cluster import resolve_directory

    data_source = resolve_directory(spec.source)
    ray_groups = plan_groups(site_ids, spec.sites_per_agent)
    if spec.profile_iters is not None:
        # A capped profile samples the early iterations only; its polishing solves (tight
        # inner tolerance) would dominate it and are skipped.
        settings = dataclasses.replace(settings, max_iter=spec.profile_iters, polish_factor=None)
    # One solver thread: a site's solve is timed alone, not against its group's others.
    agents = [SiteGroup(data_source, list(g), threads=1) for g in ray_groups]
    samples: dict[str, list[float]] = defaultdict(list)
    osqp: dict[str, list[float]] = defaultdict(list)
    for group in agents:
        for sid, agent in group.agents.items():
            # An instance attribute shadows the method: this process's objects only.
            agent.solve = _timed(sid, agent, samples, osqp)
    counter = _Counter()
    coordinator = Coordinator(load_view(coordinator_dir), settings, observers=[counter])
    coordinator.attach(InlineFleet(agents, ray_groups))
    coordinator.register()
    outcome = coordinator.run()
    for group in agents:
        group.close()
    return SiteProfile(
        call_median_s={s: float(np.median(v)) for s, v in samples.items()},
        osqp_median_s={s: float(np.median(v)) for s, v in osqp.items()},
        groups=ray_groups,
        # Fan-outs: ADMM's own count, its polishing solves included.
        iterations=outcome.result.iterations,
        converged=outcome.converged,
        capped=spec.profile_iters is not None and not outcome.converged,
        solve_s=outcome.timing["iterations_s"],
    )


# --------------------------------------------------------------------------------------------
# ADMM runs


def run_record(run: DistributedRun, mode: str, repeat: int) -> dict[str, Any]:
    """The figures of one :func:`solve_distributed` call."""
    result = run.outcome.result
    loop = [h for h in result.history if not h.polish]
    last = loop[-1].residuals if loop else None
    fans = max(result.iterations, 1)
    n_loop = max(len(loop), 1)
    timing = {**result.timing, **run.outcome.timing}
    return {
        "mode": mode,
        "repeat": repeat,
        "converged": bool(run.converged),
        "loop_iterations": len(loop),
        # Fan-outs: the loop's iterations plus polishing solves (kept or not).
        "fan_outs": int(result.iterations),
        "polish_iterations": int(result.polish_iterations),
        "anderson_accepted": int(result.anderson_accepted),
        "rho_changes": int(result.rho_changes),
        "final_rho": float(result.final_rho),
        "late_total": int(result.late_total),
        "primal": None if last is None else last.primal,
        "eps_primal": None if last is None else last.eps_primal,
        "dual": None if last is None else last.dual,
        "eps_dual": None if last is None else last.eps_dual,
        "objective_aud": float(run.objective_aud),
        "solve_s": float(run.timings["solve_s"]),
        "total_s": float(run.timings["total_s"]),
        "start_s": float(run.timings.get("start_s", math.nan)),
        "register_s": float(run.timings.get("register_s", math.nan)),
        "reports_s": float(run.timings.get("reports_s", math.nan)),
        "ping_s": float(run.timings.get("ping_s", 0.0)),
        "s_per_iter": float(run.timings["solve_s"]) / fans,
        # Per loop iteration: fan-out + wait for the sites, and the coordinator's own update.
        "fleet_per_iter_s": timing.get("fleet_s", math.nan) / n_loop,
        "fan_out_per_iter_s": timing.get("fan_out_s", math.nan) / n_loop,
        "update_per_iter_s": timing.get("update_s", math.nan) / n_loop,
    }


def run_admm(spec: Spec, executor: str, mode: str, repeat: int) -> dict[str, Any]:
    """One ADMM run of ``spec`` (a fresh set of actors on the already started Ray)."""
    run = solve_distributed(
        spec.source,
        executor=executor,
        sites_per_agent=spec.sites_per_agent,
        settings=settings_for(mode, spec.time_limit_s),
        inner=inner_for(mode),
        measure_ping=executor == "ray",
        num_cpus=os.cpu_count(),
        shutdown=False,
    )
    record = run_record(run, mode, repeat)
    record["agents"] = len(run.groups)
    return record


# --------------------------------------------------------------------------------------------
# The centralised reference, in a child process with a budget


def _central_child(source: str, out: Any, memory_gb: float) -> None:
    """Child process: load the scenario and solve it centrally; put a dict on ``out``."""
    try:
        import resource

        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, ValueError, OSError):
        pass
    try:
        from thermoroute.cluster import resolve_directory
        from thermoroute.common.central import solve_central
        from thermoroute.common.scenario_loading import load_scenario

        scenario = load_scenario(resolve_directory(source))
        result = solve_central(scenario)
        out.put(
            {
                "ok": True,
                "objective_aud": result.objective_aud,
                "wall_s": result.wall_s,
                "build_s": result.build_s,
                "solve_s": result.solve_s,
                "status": result.status,
                "solver": result.solver,
                "iterations": result.iterations,
                "variables": result.variables,
            }
        )
    except MemoryError:
        out.put({"ok": False, "reason": f"out of memory (cap {memory_gb:g} GB)"})
    except Exception as exc:  # report any failure as a skipped reference, not a crash
        out.put({"ok": False, "reason": f"{type(exc).__name__}: {exc}"[:200]})


def central_with_budget(source: str, budget_s: float, memory_gb: float) -> dict[str, Any]:
    """:func:`solve_central` of ``source`` in a spawned child, killed after ``budget_s``.

    Returns
    -------
    dict
        ``ok`` and the solve's figures, or ``ok=False`` and ``reason``.
    """
    ctx = mp.get_context("spawn")  # never fork a process that holds a Ray driver
    out = ctx.Queue()
    child = ctx.Process(target=_central_child, args=(source, out, memory_gb), daemon=True)
    t0 = time.perf_counter()
    child.start()
    try:
        answer = out.get(timeout=budget_s)
    except queue.Empty:
        answer = {"ok": False, "reason": f"did not finish within the {budget_s:g} s budget"}
    finally:
        if child.is_alive():
            child.terminate()  # only the child started here
        child.join(10.0)
    answer["elapsed_s"] = time.perf_counter() - t0
    return answer


# --------------------------------------------------------------------------------------------
# Summaries


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


@dataclass
class ScenarioResult:
    """Everything measured on one scenario."""

    spec: Spec
    sites: int
    prepare_s: float
    profile: SiteProfile | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    central: list[dict[str, Any]] = field(default_factory=list)
    load_before: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    load_after: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    def mode(self, mode: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["mode"] == mode]

    @property
    def central_objective(self) -> float:
        return _median([c["objective_aud"] for c in self.central if c.get("ok")])

    @property
    def central_s(self) -> float:
        return _median([c["wall_s"] for c in self.central if c.get("ok")])

    def floors(self, ping_s: float, cores: int) -> tuple[float, float]:
        """(site floor, machine floor) [s] for a run whose round trip was ``ping_s``."""
        if self.profile is None:
            return math.nan, math.nan
        return (
            self.profile.slowest_site[1] + ping_s,
            self.profile.machine_compute_s(cores) + ping_s,
        )

    def summaries(self, cores: int) -> dict[str, dict[str, Any]]:
        """:meth:`summary` of every mode that ran, in the spec's order."""
        return {m: self.summary(m, cores) for m in self.spec.modes if self.mode(m)}

    def summary(self, mode: str, cores: int) -> dict[str, Any]:
        """Medians over the repeats of one mode; ratios are per run, then the median."""
        runs = self.mode(mode)
        site_ratio, machine_ratio = [], []
        for r in runs:
            site_floor, machine_floor = self.floors(r["ping_s"], cores)
            site_ratio.append(r["s_per_iter"] / site_floor)
            machine_ratio.append(r["s_per_iter"] / machine_floor)
        ping = _median([r["ping_s"] for r in runs])
        site_floor, machine_floor = self.floors(ping, cores)
        central = self.central_objective
        objective = _median([r["objective_aud"] for r in runs])
        return {
            "runs": len(runs),
            "converged": f"{sum(r['converged'] for r in runs)}/{len(runs)}",
            "loop_iterations": _median([r["loop_iterations"] for r in runs]),
            "fan_outs": _median([r["fan_outs"] for r in runs]),
            "anderson_accepted": _median([r["anderson_accepted"] for r in runs]),
            "solve_s": _median([r["solve_s"] for r in runs]),
            "total_s": _median([r["total_s"] for r in runs]),
            "s_per_iter": _median([r["s_per_iter"] for r in runs]),
            "fleet_per_iter_s": _median([r["fleet_per_iter_s"] for r in runs]),
            "update_per_iter_s": _median([r["update_per_iter_s"] for r in runs]),
            "ping_s": ping,
            "site_floor_s": site_floor,
            "machine_floor_s": machine_floor,
            "ratio_site": _median(site_ratio),
            "ratio_machine": _median(machine_ratio),
            "objective_aud": objective,
            "gap_rel": (objective - central) / abs(central) if math.isfinite(central) else math.nan,
        }


def _ms(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


def _s(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    return f"{seconds:.3g}" if seconds < 100 else f"{seconds:,.0f}"


def _num(value: float, fmt: str = "{:.0f}") -> str:
    return "—" if value is None or not math.isfinite(value) else fmt.format(value)


def convergence_table(results: Sequence[ScenarioResult], cores: int) -> Table:
    """Iterations, convergence, objective gap and the centralised solve."""
    table = Table(title=f"Convergence to ε_rel = {EPS_REL:g} (medians over repeats)")
    for col in (
        "scenario",
        "sites",
        "agents",
        "ADMM",
        "runs",
        "converged",
        "iterations",
        "+polish",
        "AA steps",
        "wall iter. [s]",
        "wall call [s]",
        "objective [AUD]",
        "gap vs central",
        "central [s]",
    ):
        table.add_column(col, justify="left" if col in ("scenario", "ADMM") else "right")
    for res in results:
        central = _central_text(res)
        agents = len(res.profile.groups) if res.profile else "—"
        for mode, s in res.summaries(cores).items():
            table.add_row(
                res.spec.name,
                str(res.sites),
                str(agents),
                _mode_name(mode),
                str(s["runs"]),
                s["converged"],
                _num(s["loop_iterations"]),
                _num(s["fan_outs"] - s["loop_iterations"]),
                _num(s["anderson_accepted"]) if "+" in mode else "",
                _s(s["solve_s"]),
                _s(s["total_s"]),
                _num(s["objective_aud"], "{:,.2f}"),
                _num(s["gap_rel"] * 100, "{:+.4f} %"),
                central,
            )
        table.add_section()
    return table


def _mode_name(mode: str) -> str:
    return mode


def _central_text(res: ScenarioResult) -> str:
    ok = [c for c in res.central if c.get("ok")]
    if ok:
        return _s(res.central_s)
    if res.central:
        return f"skipped ({res.central[0]['reason']})"
    return "not run"


def timing_table(results: Sequence[ScenarioResult], cores: int) -> Table:
    """Seconds per iteration against the floor measured in the same run."""
    table = Table(title="Per-iteration time against the floor (ms; medians; ratios per run)")
    for col in (
        "scenario",
        "ADMM",
        "s/iter",
        "fleet",
        "update",
        "ping",
        "slowest site",
        "site floor",
        "ratio",
        "machine floor",
        "ratio ",
        "inline s/iter",
    ):
        table.add_column(col, justify="left" if col in ("scenario", "ADMM") else "right")
    for res in results:
        for mode, s in res.summaries(cores).items():
            slowest = res.profile.slowest_site[1] if res.profile else math.nan
            inline = (
                res.profile.seconds_per_iteration
                if res.profile and mode == res.spec.modes[0]
                else math.nan
            )
            table.add_row(
                res.spec.name,
                _mode_name(mode),
                _ms(s["s_per_iter"]),
                _ms(s["fleet_per_iter_s"]),
                _ms(s["update_per_iter_s"]),
                _ms(s["ping_s"]),
                _ms(slowest),
                _ms(s["site_floor_s"]),
                _num(s["ratio_site"], "{:.1f}×"),
                _ms(s["machine_floor_s"]),
                _num(s["ratio_machine"], "{:.1f}×"),
                _ms(inline),
            )
        table.add_section()
    return table


def profile_table(results: Sequence[ScenarioResult], cores: int) -> Table:
    """The in-process site profile behind the floors."""
    table = Table(title="Site solves, timed in process on the same iterates (ms)")
    for col in (
        "scenario",
        "iterations",
        "slowest site",
        "its median call",
        "max OSQP median",
        "median site",
        "Σ sites",
        f"Σ sites / {cores} cores",
        "slowest group Σ",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for res in results:
        p = res.profile
        if p is None:
            continue
        calls = list(p.call_median_s.values())
        group_sums = [sum(p.call_median_s[s] for s in g) for g in p.groups]
        sid, slowest = p.slowest_site
        iters = f"{p.iterations}" + (" (capped)" if p.capped else "")
        table.add_row(
            res.spec.name,
            iters,
            sid,
            _ms(slowest),
            _ms(p.slowest_osqp_s),
            _ms(float(np.median(calls))),
            _ms(sum(calls)),
            _ms(sum(calls) / cores),
            _ms(max(group_sums)),
        )
    return table


def central_table(results: Sequence[ScenarioResult]) -> Table:
    """The centralised reference solves."""
    table = Table(title="Centralised reference (solve_central, Clarabel; child process)")
    for col in (
        "scenario",
        "variables",
        "solver",
        "status",
        "IPM iter.",
        "build [s]",
        "solve [s]",
        "wall [s]",
        "objective [AUD]",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for res in results:
        ok = [c for c in res.central if c.get("ok")]
        if not ok:
            table.add_row(res.spec.name, "", "", _central_text(res), "", "", "", "", "")
            continue
        c = ok[0]
        table.add_row(
            res.spec.name,
            f"{c['variables']:,}",
            c["solver"],
            c["status"],
            str(c["iterations"]),
            _s(_median([o["build_s"] for o in ok])),
            _s(_median([o["solve_s"] for o in ok])),
            _s(res.central_s),
            f"{res.central_objective:,.2f}",
        )
    return table


# --------------------------------------------------------------------------------------------
# The machine


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, versions and load."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = math.nan
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 2**20
                break
    versions = {}
    for pkg in ("ray", "osqp", "numpy", "cvxpy", "clarabel"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_total_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg": os.getloadavg(),
    }


# --------------------------------------------------------------------------------------------


def bench_scenario(
    spec: Spec,
    workdir: Path,
    executor: str,
    central_budget_s: float,
    central_memory_gb: float,
    do_central: bool,
) -> ScenarioResult:
    """Profile, run (both modes, ``spec.repeats`` times each) and solve centrally."""
    load_before = os.getloadavg()
    prepare_s = prepare(spec, workdir)
    _, site_ids = discover(spec.source)
    console.log(
        f"[bold]{spec.name}[/]: {len(site_ids)} sites, {spec.sites_per_agent} per agent, "
        f"{spec.repeats} repeat(s); load {load_before[0]:.2f}"
    )
    t0 = time.perf_counter()
    profile = profile_sites(spec, settings_for(spec.modes[0], spec.time_limit_s))
    console.log(
        f"  in-process profile: {profile.iterations} iterations in {time.perf_counter() - t0:.1f}"
        f" s; slowest site {profile.slowest_site[0]} {_ms(profile.slowest_site[1])} ms"
    )
    res = ScenarioResult(spec=spec, sites=len(site_ids), prepare_s=prepare_s, profile=profile)
    for repeat in range(spec.repeats):
        for mode in spec.modes:  # interleaved, so drifting load hits every mode alike
            record = run_admm(spec, executor, mode, repeat)
            res.runs.append(record)
            console.log(
                f"  {_mode_name(mode):8s} #{repeat}: {record['loop_iterations']} it "
                f"(+{record['polish_iterations']} polish), converged={record['converged']}, "
                f"{record['solve_s']:.2f} s, {_ms(record['s_per_iter'])} ms/it, "
                f"ping {_ms(record['ping_s'])} ms"
            )
    if do_central:
        for repeat in range(spec.repeats):
            answer = central_with_budget(spec.source, central_budget_s, central_memory_gb)
            res.central.append(answer)
            if not answer.get("ok"):
                console.log(f"  central: skipped ({answer['reason']})")
                break
            console.log(f"  central #{repeat}: {answer['wall_s']:.2f} s")
            if answer["wall_s"] > 30.0:  # one long reference solve is enough
                break
    res.load_before, res.load_after = load_before, os.getloadavg()
    return res


def _parse_groups(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if item.strip():
            name, _, k = item.partition("=")
            out[name.strip()] = int(k)
    return out


def print_tables(
    results: Sequence[ScenarioResult], cores: int, central: bool, legend: bool = True
) -> None:
    """Print every table of ``results``."""
    console.print(convergence_table(results, cores))
    console.print(timing_table(results, cores))
    console.print(profile_table(results, cores))
    if central:
        console.print(central_table(results))
    if legend:
        console.print(
            "s/iter = iteration wall time / fan-outs (polishing included); fleet = fan-out and "
            "wait per loop iteration; update = the coordinator's own work per loop iteration; "
            "ping = median minimal fan-out/fan-in over the same actors (20 calls, after the "
            "run); site floor = slowest site's median solve call + ping; machine floor = "
            f"max(slowest group's serial Σ, Σ all sites / {cores} cores) + ping; inline s/iter "
            "= the same code without Ray, one thread."
        )


def write_json(
    path: Path,
    argv: Sequence[str] | None,
    machine: dict[str, Any],
    results: Sequence[ScenarioResult],
    cores: int,
    wall: float,
) -> None:
    """Write every figure of ``results`` (and the raw runs) to ``path``."""
    args = list(argv) if argv is not None else sys.argv[1:]
    payload = {
        "command": " ".join(["python", "-m", "bench.admm_bench", *args]),
        "machine": machine,
        "eps_rel": EPS_REL,
        "wall_s": wall,
        "scenarios": [
            {
                "name": r.spec.name,
                "spec": dataclasses.asdict(r.spec),
                "sites": r.sites,
                "load_before": r.load_before,
                "load_after": r.load_after,
                "summary": r.summaries(cores),
                "runs": r.runs,
                "central": r.central,
                "profile": None
                if r.profile is None
                else {
                    **dataclasses.asdict(r.profile),
                    "slowest_site": r.profile.slowest_site,
                    "machine_compute_s": r.profile.machine_compute_s(cores),
                },
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m bench.admm_bench``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.admm_bench", description=__doc__)
    parser.add_argument("--scenarios", default="australia,australia-20,synth100,synth1000")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per mode (default: 3 for australia, 1 for the others)",
    )
    parser.add_argument("--executor", choices=("ray", "inline"), default="ray")
    parser.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated ADMM modes of {', '.join(MODES)} (default: "
        f"{','.join(DEFAULT_MODES)}; per-row only for synth1000)",
    )
    parser.add_argument(
        "--sites-per-agent", default=None, help="overrides, e.g. synth1000=250,synth100=25"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="wall-time limit of one ADMM run [s] (default: none for australia*, "
        "600 for synth100, 300 for synth1000)",
    )
    parser.add_argument(
        "--central-budget",
        type=float,
        default=CENTRAL_BUDGET_S,
        help="seconds allowed to one centralised solve",
    )
    parser.add_argument("--central-memory-gb", type=float, default=CENTRAL_MEMORY_GB)
    parser.add_argument("--no-central", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored:
    # restore KeyboardInterrupt so `kill -INT` ends a long run with the tables printed.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    machine = machine_info()
    cores = int(machine["nproc"] or 1)
    console.log(
        f"{machine['cpu']}, {cores} cores, {machine['mem_total_gb']} GB; Python "
        f"{machine['python']}, ray {machine['versions']['ray']}, osqp "
        f"{machine['versions']['osqp']}; load {machine['loadavg']}"
    )
    groups = _parse_groups(args.sites_per_agent)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip()) if args.modes else None
    for mode in modes or ():
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    specs = [
        make_spec(name.strip(), args.repeats, groups, args.time_limit, modes)
        for name in args.scenarios.split(",")
        if name.strip()
    ]
    results: list[ScenarioResult] = []
    started = False
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thermoroute-bench-") as tmp:
        try:
            if args.executor == "ray":
                import ray

                # One Ray for the whole benchmark; our own, shut down below (never `ray stop`).
                started = ensure_ray(None, cores)
                if not started:
                    console.log("[yellow]joined an already initialised Ray in this process")
            for spec in specs:
                try:
                    results.append(
                        bench_scenario(
                            spec,
                            Path(tmp),
                            args.executor,
                            args.central_budget,
                            args.central_memory_gb,
                            not args.no_central,
                        )
                    )
                    # What is done survives an interrupted or killed benchmark.
                    print_tables(results[-1:], cores, not args.no_central, legend=False)
                    if args.json is not None:
                        write_json(args.json, argv, machine, results, cores, math.nan)
                except KeyboardInterrupt:
                    console.log(f"[red]{spec.name} interrupted: reporting what was measured")
                    break
        finally:
            if started:
                ray.shutdown()
    wall = time.perf_counter() - t_all
    print_tables(results, cores, not args.no_central)
    console.log(f"benchmark wall time {wall:.0f} s; load now {os.getloadavg()}")
    if args.json is not None:
        write_json(args.json, argv, machine, results, cores, wall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
