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
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from matplotlib.figure import Figure

from common.baselines import SOLVERS, run_solver
from common.compare import (
    MEAN_EFFICIENCY,
    METRICS,
    OPTIMUM,
    REFERENCE,
    GainDecomposition,
    decomposition_cells,
    decomposition_note,
)
from common.evaluate import load_gpus
from common.scenario import Scenario
from thermoroute.report import figures
from thermoroute.report.narrative import explain
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


@dataclass
class Section:
    """One part of the page: a title, paragraphs, tables (HTML) and figures."""

    title: str
    anchor: str
    paragraphs: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def build_report(solution: Solution, scenario: Scenario | None) -> str:
    """The report's HTML for ``solution``; ``scenario`` is the run's (``None``: not at
    hand — the sections that need it say so)."""
    baselines = _baselines(scenario) if scenario is not None else None
    sections = [
        _overview(solution, scenario),
        _who_serves_whom(solution, scenario),
        _sites_by_hour(solution, scenario),
        _against_baselines(solution, baselines),
        _shadow_prices(solution, scenario),
        _convergence(solution),
        _what_moved(solution, scenario, baselines),
    ]
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
        fig = figures.site_hours(
            site_id, times, load, capacity, dry, pue, cooling, water
        )  # fmt: skip
        section.blocks.append(_figure(fig, f"site {site_id}"))
    return section


def _sites_table(solution: Solution, scenario: Scenario | None) -> str:
    """Per site: requests, utilisation (with the scenario) and the two pPUE means (where
    the site's detail is at hand; "—" otherwise), as the terminal's sites table."""
    header, rows = solution.sites_table(scenario)
    return _table(header, rows, numeric=tuple(range(1, len(header))))


def _against_baselines(solution: Solution, baselines: dict[str, dict] | None) -> Section:
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
    rows = {label: solution.totals_with_objective}
    rows.update({name: run["totals"] for name, run in baselines.items()})
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
        tolerances = {"primal": stats.get("eps_primal"), "dual": stats.get("eps_dual")}
    else:  # the interior point
        series = {"coupling": frame["coupling_residual"].to_numpy(), "μ": frame["mu"].to_numpy()}
        tolerances = {"coupling": stats.get("eps_primal")}
    tolerances = {k: float(v) for k, v in tolerances.items() if v is not None}
    section.paragraphs.append(
        "Residuals of the distributed method per iteration; dashed: the tolerances of its "
        "stopping test at the end of the run."
    )
    iterations = solution.iterations
    polishing = int(stats.get("polish_iterations") or 0)
    title = f"{solution.solver}: {iterations} iterations" + (
        f" and {polishing} polishing steps" if polishing else ""
    )
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
    solution: Solution, scenario: Scenario | None, baselines: dict[str, dict] | None
) -> Section:
    section = Section("What temperature-awareness changed", "explanation")
    if scenario is None or baselines is None:
        section.missing.append("the comparison with temperature-unaware needs the scenario")
        return section
    run_x = solution.x(scenario)
    story = explain(scenario, run_x, baselines[REFERENCE]["x"])
    section.paragraphs.extend(_e(p) for p in story.paragraphs)
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
    return section


def _where_the_gain_comes_from(scenario: Scenario, baselines: dict[str, dict]) -> list[str]:
    """The optimum's gain over temperature-unaware, per term, split into the sites'
    differences and the hourly weather (as ``thermoroute compare``)."""
    d = GainDecomposition.of(
        baselines[REFERENCE]["totals"],
        baselines[MEAN_EFFICIENCY]["totals"],
        baselines[OPTIMUM]["totals"],
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


def _baselines(scenario: Scenario) -> dict[str, dict]:
    """``{solver: {"totals": …, "x": …}}`` for the centralised optimum and every baseline."""
    out = {}
    for name in SOLVERS:
        run = run_solver(name, scenario)
        out[name] = {"totals": run.evaluation.totals_with_objective(), "x": run.schedule.x}
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


def _table(header: tuple[str, ...], rows: list[tuple], numeric: tuple[int, ...] = ()) -> str:
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
