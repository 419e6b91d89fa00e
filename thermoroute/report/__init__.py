"""``thermoroute report``: one self-contained HTML page from a run directory.

The page is built from what the run directory holds (:class:`thermoroute.results.Solution`)
and, where given, the run's scenario (coordinates, temperatures, capacities, and the
baselines it is compared with). Every figure is a PNG embedded in the page, so it opens
anywhere without a network. A section whose data are not at hand says what is missing and
how to get it instead of failing — a run whose sites kept their detail on their own nodes
still gets its schedule, map, prices and convergence.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from thermoroute.common.baselines import SOLVERS, run_solver
from thermoroute.common.compare import (
    MEAN_EFFICIENCY,
    METRICS,
    OPTIMUM,
    OVERLOAD_NOTE,
    OVERLOAD_TITLES,
    REFERENCE,
    GainDecomposition,
    decomposition_cells,
    decomposition_note,
)
from thermoroute.common.evaluate import (
    OVERLOAD_KINDS,
    OVERLOAD_REL_TOL,
    Evaluation,
    cooling_max_gpus,
    evaluate,
    load_gpus,
    overload_report,
    plant_limits,
    true_pue,
    true_wue,
)
from thermoroute.common.scenario import Scenario
from thermoroute.report import figures
from thermoroute.report.narrative import choice_note, explain, moved_requests
from thermoroute.results import PUE_COLUMNS, PUE_NOTE, Solution, dash_nan

#: The quantities drawn against the baselines: (key, title, unit). The objective, then
#: every term it charges in the unit it charges it (energy cost, carbon, water, latency as
#: summed time to first token), then the mean TTFT and the cooling energy inside them.
BAR_METRICS: tuple[tuple[str, str, str], ...] = (
    ("objective_aud", "objective", "AUD"),
    ("energy_cost_aud", "energy cost", "AUD"),
    ("carbon_kg", "carbon", "kg CO2-e"),
    ("water_l", "water", "L"),
    ("latency_req_s", "latency (summed TTFT)", "request·s"),
    ("ttft_mean_ms", "mean TTFT", "ms"),
    ("cooling_kwh", "cooling energy", "kWh"),
)


#: A plan whose objective is within this share of the optimum's is at the optimum: the
#: distributed methods stop on their residuals (ε_rel 1e-4, ADMM 5e-5), a few 1e-5 of the
#: objective from it on the shipped scenarios.
AT_OPTIMUM_REL = 1e-4
#: Plans whose objectives differ by less than this share are equally good (the centralised
#: solve's own tolerance is 1e-8 of the gap).
EQUAL_REL = 1e-6
#: A run that moves this share more than an equally good plan has chosen among equal plans.
CHOICE_SHARE = 0.05


@dataclass
class Section:
    """One part of the page: a title, paragraphs, tables (HTML) and figures."""

    title: str
    anchor: str
    paragraphs: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def build_report(
    solution: Solution, scenario: Scenario | None, timings: dict[str, float] | None = None
) -> str:
    """The report's HTML for ``solution``; ``scenario`` is the run's (``None``: not at
    hand — the sections that need it say so). ``timings``, if given, receives the seconds
    each part took (the baselines' solves, then each section by its title)."""
    spent = timings if timings is not None else {}
    t0 = time.perf_counter()
    baselines = _baselines(scenario) if scenario is not None else None
    spent["baselines"] = time.perf_counter() - t0
    parts: list[Callable[[], Section]] = [
        lambda: _overview(solution, scenario),
        lambda: _who_serves_whom(solution, scenario),
        lambda: _sites_by_hour(solution, scenario),
        lambda: _against_baselines(solution, baselines),
        lambda: _shadow_prices(solution, scenario),
        lambda: _convergence(solution),
        lambda: _what_moved(solution, scenario, baselines),
    ]
    sections = []
    for part in parts:
        t0 = time.perf_counter()
        section = part()
        spent[section.title] = time.perf_counter() - t0
        sections.append(section)
    return _page(solution, sections)


# --------------------------------------------------------------------------------------
# Sections


def _overview(solution: Solution, scenario: Scenario | None) -> Section:
    section = Section("Overview", "overview")
    s = solution.summary
    detail = {
        "run": "per-site detail written by the run",
        "site directories": "per-site detail read from the sites' own directories (sites/<id>/)",
        "missing": "per-site detail kept by the sites on their own nodes (not at hand here)",
    }[solution.site_detail]
    section.paragraphs.append(
        f"Scenario <b>{_e(solution.scenario_name)}</b>, solved by <b>{_e(solution.solver)}</b>: "
        f"{_e(s.get('steps', '?'))} steps of {_e(s.get('step_hours', '?'))} h from "
        f"{_e(s.get('start', '?'))}; converged {_e(solution.converged)} after "
        f"{_e(solution.iterations)} iterations; {_e(detail)}."
    )
    totals = solution.totals_with_objective
    rows = [
        (f"{name} [{unit}]", "—" if totals.get(key) is None else format(totals[key], fmt))
        for key, name, unit, fmt in METRICS
    ]
    section.blocks.append(_table(("quantity", "value"), rows, numeric=(1,)))
    if scenario is None:
        section.missing.append(
            "the run's scenario is not at hand: pass --scenario NAME|DIR for the map, the "
            "temperatures, the baselines and the explanation"
        )
    return section


def _who_serves_whom(solution: Solution, scenario: Scenario | None) -> Section:
    section = Section("Who serves whom", "who-serves-whom")
    section.paragraphs.append(
        "Requests served over the horizon by each site (columns) for each region (rows), "
        "per class, from schedule.csv."
    )
    classes = list(dict.fromkeys(solution.schedule["class_id"]))
    if scenario is not None:
        classes = [c for c in scenario.classes.class_id if c in classes]
    for class_id in classes:
        matrix = solution.served_matrix(class_id)
        if scenario is not None:
            matrix = matrix.reindex(
                index=[r for r in scenario.regions.region_id if r in matrix.index],
                columns=[s for s in scenario.sites.site_id if s in matrix.columns],
            )
        section.blocks.append(f"<h3>{_e(class_id)}</h3>")
        section.blocks.append(_served_table(class_id, matrix))
        section.blocks.append(_figure(figures.served_heatmap(matrix, class_id), class_id))
    if scenario is None:
        section.missing.append("the map needs the scenario's coordinates (--scenario)")
        return section
    served = solution.served_requests()
    flows = served.groupby(["region_id", "site_id"], sort=False)["requests"].sum().reset_index()
    per_site = served.groupby("site_id")["requests"].sum()
    s, r = scenario.sites, scenario.regions
    sites = pd.DataFrame({"site_id": s.site_id, "lat": s.lat, "lon": s.lon})
    sites["requests"] = sites["site_id"].map(per_site).fillna(0.0)
    regions = pd.DataFrame({"region_id": r.region_id, "lat": r.lat, "lon": r.lon})
    title = "every class: line width ∝ requests served over the horizon"
    section.blocks.append(_figure(figures.flow_map(sites, regions, flows, title), "map"))
    return section


def _sites_by_hour(solution: Solution, scenario: Scenario | None) -> Section:
    section = Section("Sites hour by hour", "sites")
    section.paragraphs.append(
        "Load against usable capacity, outdoor dry-bulb temperature against the cooling "
        "plant's partial PUE, cooling power and on-site water: where the plan used the "
        "sites' temperature differences."
    )
    steps = solution.site_steps
    if steps is None:
        section.missing.append(
            "pPUE, cooling and water per site: the sites kept their detail on their own nodes "
            "(OUT/sites/<id>/ there; --share-site-details sends it to the coordinator)"
        )
    if scenario is None and steps is None:
        section.missing.append("load and temperature need the scenario (--scenario)")
        return section
    section.blocks.append(_sites_table(solution, scenario))
    section.paragraphs.append(_e(PUE_NOTE) + ".")
    times = list(dict.fromkeys(solution.schedule["time"]))
    site_ids = list(scenario.sites.site_id) if scenario is not None else solution.site_ids
    load_from_schedule = load_gpus(scenario, solution.x(scenario)) if scenario is not None else None
    usable = _derated_usable(scenario) if scenario is not None else None
    if scenario is not None and usable is not None:
        section.paragraphs.append(_e(_derated_note(scenario, usable)))
    for i, site_id in enumerate(site_ids):
        own = None if steps is None else steps[steps["site_id"] == site_id]
        if own is not None and len(own) == 0:
            own = None
        if own is not None:
            load = own["load_gpus"].to_numpy(dtype=float)
        elif load_from_schedule is not None:
            load = load_from_schedule[i]
        else:
            continue
        capacity = dry = None
        if scenario is not None:
            capacity = float(scenario.sites.u_max[i] * scenario.sites.gpus[i])
            dry = scenario.dry_bulb_c[i]
            times = [t.isoformat() for t in scenario.times]
        pue = cooling = water = None
        if own is not None:
            pue = own["pue"].to_numpy(dtype=float)
            cooling = own["cooling_kw"].to_numpy(dtype=float)
            water = (own["it_kw"] * own["wue_l_per_kwh"]).to_numpy(dtype=float)
        derated = None if usable is None or usable[i] is None else usable[i]
        series = figures.SiteHours(
            load_gpus=load, capacity_gpus=capacity, dry_bulb_c=dry, pue=pue,
            cooling_kw=cooling, water_l=water, usable_gpus=derated,
        )  # fmt: skip
        fig = figures.site_hours(site_id, times, series)
        alt = f"site {site_id}" + ("" if derated is None else ", usable capacity derated")
        section.blocks.append(_figure(fig, alt))
    return section


def _derated_usable(scenario: Scenario) -> list[np.ndarray | None] | None:
    """Per site, its usable capacity ``u_max · f_t · G`` per step where its cooling is
    derated below ``u_max · G`` in some step of the horizon (model v1.1), else None; None
    altogether when no site is derated (every v1 scenario)."""
    s = scenario.sites
    full = s.u_max[:, None] * s.gpus[:, None]
    usable = s.u_max[:, None] * cooling_max_gpus(scenario)
    out = [u if np.any(u < f - 1e-9) else None for u, f in zip(usable, full, strict=True)]
    return out if any(u is not None for u in out) else None


def _clock(scenario: Scenario, t: int) -> str:
    """Step ``t``'s start on the scenario's clock, ``HH:MM``."""
    return scenario.times[t].strftime("%H:%M")


def _hours(scenario: Scenario, steps: np.ndarray) -> str:
    """Steps as runs of hours on the scenario's clock: ``12:00–17:00, 19:00–20:00``."""
    runs: list[list[int]] = []
    for t in sorted(int(k) for k in steps):
        if runs and t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    step = timedelta(hours=scenario.step_hours)
    return ", ".join(
        f"{_clock(scenario, r[0])}–{(scenario.times[r[-1]] + step).strftime('%H:%M')}" for r in runs
    )


def _offset(scenario: Scenario) -> str:
    """The scenario clock's UTC offset, as ``UTC+10:00``."""
    return "UTC" + scenario.times[0].strftime("%z")[:3] + ":" + scenario.times[0].strftime("%z")[3:]


def _derated_note(scenario: Scenario, usable: list[np.ndarray | None]) -> str:
    s = scenario.sites
    parts = []
    for i, u in enumerate(usable):
        if u is None:
            continue
        below = np.flatnonzero(u < s.u_max[i] * s.gpus[i] - 1e-9)
        parts.append(
            f"{s.name[i]} ({s.site_id[i]}) {_hours(scenario, below)}, down to "
            f"{u.min():,.1f} of {s.u_max[i] * s.gpus[i]:,.1f} busy GPUs at "
            f"{scenario.dry_bulb_c[i, below].max():.1f} °C"
        )
    return (
        "Dotted blue: a site's usable capacity u_max × f_t × GPUs where its cooling is derated "
        "above its design dry bulb (model v1.1, docs/model.md §12): "
        + "; ".join(parts)
        + f" (hours on the scenario's clock, {_offset(scenario)})."
    )


def _sites_table(solution: Solution, scenario: Scenario | None) -> str:
    """Per site: requests, utilisation (with the scenario) and the two pPUE means (where
    the site's detail is at hand; "—" otherwise), as the terminal's sites table."""
    header, rows = solution.sites_table(scenario)
    return _table(header, rows, numeric=tuple(range(1, len(header))))


def _against_baselines(solution: Solution, baselines: dict[str, _Baseline] | None) -> Section:
    section = Section("Against the baselines", "baselines")
    if baselines is None:
        section.missing.append("the baselines are solved on the scenario (--scenario)")
        return section
    section.paragraphs.append(
        "The run beside the centralised optimum and every baseline, each charged under the "
        "true model (as <code>thermoroute compare</code>): the objective and every term it "
        "charges — energy cost, carbon, water and latency — with the mean TTFT and the "
        "cooling energy inside them. A plan can be lower in one term and still lose the "
        "objective. Bars start near the smallest value: the differences are a few percent."
    )
    label = f"this run ({solution.solver})"
    rows: dict[str, Mapping[str, float | None]] = {label: solution.totals_with_objective}
    rows.update({name: run.totals for name, run in baselines.items()})
    section.blocks.append(_figure(figures.against_baselines(rows, label, BAR_METRICS), "bars"))
    header = ("plan", *(f"{t} [{u}]" for _, t, u in BAR_METRICS))
    table = [
        (name, *("—" if v.get(k) is None else f"{v[k]:,.2f}" for k, _, _ in BAR_METRICS))
        for name, v in rows.items()
    ]
    section.blocks.append(_table(header, table, numeric=tuple(range(1, len(header)))))
    return section


def _shadow_prices(solution: Solution, scenario: Scenario | None) -> Section:
    section = Section("Shadow prices of demand", "prices")
    prices = solution.shadow_prices
    if prices is None:
        section.missing.append("this run wrote no shadow_prices.csv")
        return section
    section.paragraphs.append(
        "What one more request of each region and hour would cost the fleet at the optimum "
        "(the prices of the demand rows, shadow_prices.csv)."
    )
    regions = (
        list(scenario.regions.region_id)
        if scenario is not None
        else list(dict.fromkeys(prices["region_id"]))
    )
    section.blocks.append(_figure(figures.shadow_price_heatmaps(prices, regions), "prices"))
    return section


def _convergence(solution: Solution) -> Section:
    section = Section("Convergence", "convergence")
    frame = solution.convergence
    if frame is None:
        section.paragraphs.append(
            f"{_e(solution.solver)} solves the whole problem at once: there are no "
            "iterations of a distributed method to show."
        )
        return section
    stats = solution.stats
    if "primal_residual" in frame.columns:  # ADMM
        series = {
            "primal": frame["primal_residual"].to_numpy(),
            "dual": frame["dual_residual"].to_numpy(),
        }
        stated = {"primal": stats.get("eps_primal"), "dual": stats.get("eps_dual")}
    else:  # the interior point
        series = {"coupling": frame["coupling_residual"].to_numpy(), "μ": frame["mu"].to_numpy()}
        stated = {"coupling": stats.get("eps_primal")}
    tolerances = {k: float(v) for k, v in stated.items() if v is not None}
    section.paragraphs.append(
        "Residuals of the distributed method per iteration; dashed: the tolerances of its "
        "stopping test at the end of the run."
    )
    iterations = solution.iterations
    polishing = int(stats.get("polish_iterations") or 0)
    # Polishing is kept only if it meets demand better (docs/model.md §9); a kept step is
    # reported, and numbered after the loop's iterates.
    kept = iterations is not None and int(stats.get("report_iteration") or 0) >= iterations
    title = f"{solution.solver}: {iterations} iterations" + (
        f" and {polishing} polishing step{'s' * (polishing != 1)}{'' if kept else ' (not kept)'}"
        if polishing
        else ""
    )
    if "tolerances_met" in stats:
        met = ", ".join(stats["tolerances_met"]) or "none"
        said = (
            f"{'Converged' if solution.converged else 'Not converged'}: the iterate the "
            f"stopping test saw met these of its tolerances: {_e(met)}."
        )
        if kept and polishing and "reported_tolerances_met" in stats:
            polished = ", ".join(stats["reported_tolerances_met"]) or "none"
            said += (
                f" The reported iterate is the last polishing step's, which meets demand "
                f"better and these tolerances: {_e(polished)} (its dual residual is measured "
                f"at the polishing penalty)."
            )
        section.paragraphs.append(said)
    fig = figures.convergence(
        frame["iteration"].to_numpy(),
        series,
        tolerances,
        title,
        # The loop's iterates are numbered from 0; polishing continues the numbering.
        polish_from=iterations - 1 if polishing and iterations else None,
    )
    section.blocks.append(_figure(fig, "convergence"))
    return section


def _what_moved(
    solution: Solution, scenario: Scenario | None, baselines: dict[str, _Baseline] | None
) -> Section:
    section = Section("What temperature-awareness changed", "explanation")
    if scenario is None or baselines is None:
        section.missing.append("the comparison with temperature-unaware needs the scenario")
        return section
    run_x = solution.x(scenario)
    story = explain(scenario, run_x, baselines[REFERENCE].x)
    section.paragraphs.extend(_e(p) for p in story.paragraphs)
    note = _choice(scenario, run_x, story.moved_requests, baselines)
    if note is not None:  # next to the volume it qualifies
        section.paragraphs.insert(1, _e(note))
    paid = solution.site_load(scenario).get("pue_plan")  # None: the sites kept their detail
    rows = [
        (
            f"{sh.name} ({sh.site_id})",
            f"{sh.run_requests / 1e6:,.2f}",
            f"{sh.change / 1e6:+,.2f}",
            f"{sh.dry_bulb_c:.1f}",
            "—" if paid is None else dash_nan(paid[sh.site_id], ".3f"),
            f"{sh.pue:.3f}",
            *(f"{sh.drivers[k]:+,.1f}" for k in ("cooling", "price", "carbon", "water")),
        )
        for sh in sorted(story.shifts, key=lambda sh: -sh.change)
    ]
    header = (
        "site", "requests [M]", "vs unaware [M]", "mean °C", *PUE_COLUMNS.values(),
        "cooling", "price", "carbon", "water",
    )  # fmt: skip
    section.blocks.append(_table(header, rows, numeric=tuple(range(1, len(header)))))
    section.paragraphs.append(
        f"{_e(PUE_NOTE)}. Last four columns: how the site's conditions differ from the "
        "fleet's, valued in AUD per MWh of IT energy (positive favours the site)."
    )
    section.blocks.extend(_where_the_gain_comes_from(scenario, baselines))
    if scenario.sites.plant_data():
        run = evaluate(scenario, run_x)
        section.paragraphs.append(_e(_plant_story(scenario, run, baselines[REFERENCE])))
        section.blocks.extend(_overload_table(scenario, run, baselines))
    return section


def _choice(
    scenario: Scenario, run_x: np.ndarray, moved: float, baselines: dict[str, _Baseline]
) -> str | None:
    """Words saying the run's moves are one of many equally good plans', or ``None``.

    Said only for a plan at the optimum (:data:`AT_OPTIMUM_REL`) that moves more than
    :data:`CHOICE_SHARE` above the optimum's least-moving plan
    (:func:`~thermoroute.common.central.least_moving_optimum`), and only if that plan's
    objective equals the optimum's (:data:`EQUAL_REL`): then both are optimal and differ.
    """
    from thermoroute.common.central import least_moving_optimum

    optimum = baselines[OPTIMUM].totals["objective_aud"]
    run_aud = evaluate(scenario, run_x).totals_with_objective()["objective_aud"]
    if moved <= 0.0 or run_aud - optimum > AT_OPTIMUM_REL * abs(optimum):
        return None  # not at the optimum: its moves are its own, not one of equal plans'
    reference = baselines[REFERENCE].x
    least_x, penalty = least_moving_optimum(scenario, reference)
    gap = evaluate(scenario, least_x).totals_with_objective()["objective_aud"] - optimum
    least = moved_requests(scenario, least_x, reference)
    if gap > EQUAL_REL * abs(optimum) or moved - least <= CHOICE_SHARE * moved:
        return None
    return choice_note(moved, least, gap, optimum, penalty)


def _at_limits(scenario: Scenario, ev: Evaluation) -> dict[str, np.ndarray]:
    """Per kind of v1.1 limit, bool (S, T): where ``ev``'s plan is at the limit or above it
    (within :data:`OVERLOAD_REL_TOL` of it); a water allowance marks its whole window."""
    limits = plant_limits(scenario)
    s, steps = scenario.sites, ev.steps
    tol = 1.0 - OVERLOAD_REL_TOL
    derated = limits.max_gpus < s.gpus[:, None]
    capacity = derated & (steps.load_gpus >= tol * s.u_max[:, None] * limits.max_gpus)
    facility = true_pue(scenario) * steps.it_kw
    grid = limits.grid[:, None] & (facility >= tol * limits.grid_kw[:, None])
    water = np.zeros_like(capacity)
    if limits.water.any():
        used = true_wue(scenario) * ev.per_site_step["it_kwh"]
        per_window = limits.per_window(used)
        full = per_window >= tol * limits.water_l
        water = full[:, limits.window] & limits.water[:, None]
    return {"capacity": capacity, "grid": grid, "water": water}


def _over_limits(scenario: Scenario, ev: Evaluation) -> dict[str, np.ndarray]:
    """Per kind of v1.1 limit, bool (S, T): where ``ev``'s plan is above it (beyond
    :data:`OVERLOAD_REL_TOL`, as ``thermoroute.common.evaluate.overloads`` counts)."""
    limits = plant_limits(scenario)
    s, steps = scenario.sites, ev.steps
    capacity = steps.active_gpus - limits.max_gpus > OVERLOAD_REL_TOL * s.gpus[:, None]
    limit = limits.grid_kw[:, None]
    grid = true_pue(scenario) * steps.it_kw - limit > OVERLOAD_REL_TOL * limit
    water = np.zeros_like(capacity)
    if limits.water.any():
        used = true_wue(scenario) * ev.per_site_step["it_kwh"]
        per_window = limits.per_window(used)
        over = per_window - limits.water_l > OVERLOAD_REL_TOL * np.maximum(limits.water_l, 1.0)
        water = over[:, limits.window]
    return {"capacity": capacity, "grid": grid, "water": water}


#: How the plant story names each kind of limit.
LIMIT_WORDS = {
    "capacity": "at its derated cooling capacity",
    "grid": "at its grid connection",
    "water": "at its daily water allowance",
}


def _plant_story(scenario: Scenario, run: Evaluation, unaware: _Baseline) -> str:
    """Plain words: the hours where the plan moved load because a site was derated, at its
    connection limit or at its water allowance (model v1.1) — where the plan is at a limit
    or temperature-unaware is above it — and how much less load the plan put there."""
    s = scenario.sites
    at = _at_limits(scenario, run)
    over = _over_limits(scenario, unaware.evaluation)
    usable = s.u_max[:, None] * cooling_max_gpus(scenario)
    sentences = []
    for kind in OVERLOAD_KINDS:
        hit = at[kind] | over[kind]
        for i in np.flatnonzero(hit.any(axis=1)):
            steps = np.flatnonzero(hit[i])
            fewer = unaware.evaluation.steps.load_gpus[i, steps] - run.steps.load_gpus[i, steps]
            words = (
                f"{s.name[i]} ({s.site_id[i]}), {_hours(scenario, steps)}: "
                f"{'the plan ran it ' + LIMIT_WORDS[kind] if at[kind][i].any() else 'within'}"
            )
            if kind == "capacity":
                words += (
                    f" ({usable[i, steps].min():,.1f}–{usable[i, steps].max():,.1f} of "
                    f"{s.u_max[i] * s.gpus[i]:,.1f} busy GPUs usable at "
                    f"{scenario.dry_bulb_c[i, steps].min():.1f}–"
                    f"{scenario.dry_bulb_c[i, steps].max():.1f} °C)"
                )
            n_over = int(over[kind][i].sum())
            words += (
                f" and carried {fewer.mean():,.1f} fewer busy GPUs an hour there than "
                f"temperature-unaware, which "
                + (
                    f"is above that limit in {n_over} of these hours"
                    if n_over
                    else "stays within it"
                )
            )
            sentences.append(words)
    clock = f"Hours on the scenario's clock ({_offset(scenario)})."
    if not sentences:
        return (
            "Plant limits (model v1.1): no site reached its derated cooling capacity, grid "
            f"connection or water allowance in this plan or in temperature-unaware's. {clock}"
        )
    reached = {k for k in OVERLOAD_KINDS if at[k].any() or over[k].any()}
    untouched = [OVERLOAD_TITLES[k] for k in OVERLOAD_KINDS if k not in reached]
    tail = f" No site reached its {' or '.join(untouched)} in either plan." if untouched else ""
    return (
        "Where the heat bound (model v1.1 plant limits): "
        + "; ".join(sentences)
        + f".{tail} {clock}"
    )


def _overload_table(
    scenario: Scenario, run: Evaluation, baselines: dict[str, _Baseline]
) -> list[str]:
    """Per plan — this run and every registered solver — what it puts above each kind of
    v1.1 limit (as ``thermoroute compare``)."""
    header = ("plan", *(f"above {OVERLOAD_TITLES[k]}" for k in OVERLOAD_KINDS))

    def cell(o: dict[str, float]) -> str:
        if o["site_hours"] <= 0:
            return "–"
        return f"{o['site_hours']:g} h, {o['it_kwh']:,.1f} kWh, {o['requests']:,.0f} req"

    plans = {"this run": overload_report(scenario, run)}
    plans |= {name: b.overloads for name, b in baselines.items()}
    rows = [(name, *(cell(o[k]) for k in OVERLOAD_KINDS)) for name, o in plans.items()]
    return [
        "<h3>Above the sites' limits</h3>",
        _table(header, rows, numeric=tuple(range(1, len(header)))),
        f"<p>{_e(OVERLOAD_NOTE)}.</p>",
    ]


def _where_the_gain_comes_from(scenario: Scenario, baselines: dict[str, _Baseline]) -> list[str]:
    """The optimum's gain over temperature-unaware, per term, split into the sites'
    differences and the hourly weather (as ``thermoroute compare``)."""
    d = GainDecomposition.of(
        baselines[REFERENCE].totals,
        baselines[MEAN_EFFICIENCY].totals,
        baselines[OPTIMUM].totals,
        scenario.objective,
    )
    header, rows = decomposition_cells(d)
    intro = (
        f"The optimum ({OPTIMUM}) against {REFERENCE}, and {MEAN_EFFICIENCY} between them: "
        "a plan that knows each site's own mean pPUE and WUE over the horizon but not the "
        "weather hour by hour. "
    )
    return [
        "<h3>Where the gain comes from</h3>",
        f"<p>{_e(intro + decomposition_note(d))}.</p>",
        _table(tuple(header), [tuple(r) for r in rows], numeric=tuple(range(1, len(header)))),
    ]


# --------------------------------------------------------------------------------------
# Data helpers


@dataclass(frozen=True)
class _Baseline:
    """A plan the run is compared with (the centralised optimum or a baseline), charged
    under the true model."""

    totals: dict[str, float]
    x: np.ndarray
    evaluation: Evaluation
    overloads: dict[str, dict[str, float]]


def _baselines(scenario: Scenario) -> dict[str, _Baseline]:
    """The centralised optimum and every baseline, by solver name."""
    out = {}
    for name in SOLVERS:
        run = run_solver(name, scenario)
        out[name] = _Baseline(
            totals=run.evaluation.totals_with_objective(),
            x=run.schedule.x,
            evaluation=run.evaluation,
            overloads=overload_report(scenario, run.evaluation),
        )
    return out


# --------------------------------------------------------------------------------------
# HTML


def _e(value: object) -> str:
    return html.escape(str(value))


def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes (100 dpi)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _figure(fig: Figure, alt: str) -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(
    header: tuple[str, ...], rows: Sequence[tuple[object, ...]], numeric: tuple[int, ...] = ()
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if k in numeric else ""}">{_e(cell)}</td>'
            for k, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _served_table(class_id: str, matrix: pd.DataFrame) -> str:
    """Requests served, region × site, each cell carrying its exact value (for checks)."""
    head = "<th>region \\ site</th>" + "".join(f"<th>{_e(c)}</th>" for c in matrix.columns)
    rows = []
    for region_id, values in matrix.iterrows():
        cells = "".join(
            f'<td class="num" data-class="{_e(class_id)}" data-region="{_e(region_id)}" '
            f'data-site="{_e(site_id)}" data-requests="{float(value)!r}">'
            f"{_requests_text(value)}</td>"
            for site_id, value in values.items()
        )
        rows.append(f"<tr><th>{_e(region_id)}</th>{cells}</tr>")
    return (
        f'<table class="served" data-class="{_e(class_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _requests_text(value: float) -> str:
    if value == 0:
        return ""
    return "&lt;1" if value < 0.5 else f"{value:,.0f}"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.5em 0 1.5em; } img { max-width: 100%; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: 0.4em 0.8em; border-radius: 4px; }
nav a { margin-right: 1em; }
"""


def _page(solution: Solution, sections: list[Section]) -> str:
    title = f"thermoroute · {solution.scenario_name} · {solution.solver}"
    nav = "".join(f'<a href="#{s.anchor}">{_e(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{_e(s.title)}</h2>')
        parts.extend(f"<p>{p}</p>" for p in s.paragraphs)
        parts.extend(f'<p class="missing">Missing: {_e(m)}.</p>' for m in s.missing)
        parts.extend(s.blocks)
        parts.append("</section>")
    made = datetime.now().astimezone().isoformat(timespec="seconds")
    source = solution.directory if solution.directory is not None else "(in memory)"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1><p>Report of the run in <code>{_e(source)}</code>, made "
        f"{_e(made)}.</p><nav>{nav}</nav>{''.join(parts)}</body></html>\n"
    )
