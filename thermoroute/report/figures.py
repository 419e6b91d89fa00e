"""The report's figures: one function per figure, data in, a matplotlib ``Figure`` out.

Nothing here reads files or knows where the numbers came from (:mod:`thermoroute.report`
gathers them); every function draws what it is given and labels its units. Figures are
made with matplotlib's object API, not pyplot: no display, no global figure registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter

from thermoroute.report.australia import MAINLAND, TASMANIA

#: The run's colour beside the baselines' grey.
RUN_COLOUR = "#c0392b"
BASELINE_COLOUR = "#95a5a6"
#: Baselines told apart by colour where each has its own line (matplotlib's tab10 without
#: its red, which is the run's).
PLAN_COLOURS = ("#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
                "#e377c2", "#bcbd22", "#17becf")  # fmt: skip


def served_heatmap(matrix: pd.DataFrame, class_id: str) -> Figure:
    """Requests of one class served over the horizon, regions (rows) × sites (columns)."""
    values = matrix.to_numpy(dtype=float) / 1e3
    fig, ax = _subplots(figsize=(1.0 + 0.75 * max(matrix.shape[1], 3), 0.9 + 0.42 * len(matrix)))
    image = ax.imshow(values, cmap="Blues", aspect="auto", vmin=0.0)
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=45)
    ax.set_yticks(range(len(matrix)), [str(r) for r in matrix.index])
    ax.set_xlabel("site")
    ax.set_ylabel("region")
    peak = float(values.max(initial=0.0))
    for (row, col), value in np.ndenumerate(values):
        if value >= 0.5:
            colour = "white" if value > 0.6 * peak else "black"
            ax.text(col, row, f"{value:,.0f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label="thousand requests")
    ax.set_title(f"{class_id}: requests served over the horizon")
    fig.tight_layout()
    return fig


def flow_map(sites: pd.DataFrame, regions: pd.DataFrame, flows: pd.DataFrame, title: str) -> Figure:
    """Sites and regions at their coordinates, a line per region → site flow.

    Parameters
    ----------
    sites : DataFrame
        ``site_id, lat, lon, requests`` (requests served, sizes the marker).
    regions : DataFrame
        ``region_id, lat, lon``.
    flows : DataFrame
        ``region_id, site_id, requests`` (line width ∝ requests).
    """
    fig, ax = _subplots(figsize=(8.0, 6.6))
    for outline in (MAINLAND, TASMANIA):
        lon, lat = zip(*outline, strict=True)
        ax.fill(lon, lat, color="#f2efe6", edgecolor="#b8b2a0", linewidth=0.8, zorder=0)
    site_at = sites.set_index("site_id")
    region_at = regions.set_index("region_id")
    peak = float(flows["requests"].max()) if len(flows) else 1.0
    for region_id, site_id, requests in zip(
        flows["region_id"], flows["site_id"], flows["requests"].to_numpy(dtype=float), strict=True
    ):
        if requests < 1e-3 * peak:
            continue
        r, s = region_at.loc[region_id], site_at.loc[site_id]
        ax.plot(
            [r.lon, s.lon],
            [r.lat, s.lat],
            color="#2c7fb8",
            alpha=0.55,
            linewidth=0.4 + 7.0 * requests / peak,
            solid_capstyle="round",
            zorder=1,
        )
    size = 40 + 500 * sites["requests"] / max(float(sites["requests"].max()), 1.0)
    ax.scatter(sites["lon"], sites["lat"], s=size, color=RUN_COLOUR, zorder=3, label="site")
    ax.scatter(
        regions["lon"], regions["lat"], s=30, marker="s", color="#253494", zorder=2, label="region"
    )
    for site in sites.itertuples():
        ax.annotate(str(site.site_id), (site.lon, site.lat), xytext=(6, 4),
                    textcoords="offset points", fontsize=8, zorder=4)  # fmt: skip
    ax.set_xlabel("longitude [°E]")
    ax.set_ylabel("latitude [°N]")
    ax.set_aspect(1.0 / np.cos(np.deg2rad(-27.0)))  # equal distances at the mean latitude
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class SiteHours:
    """One site's series over the horizon, for :func:`site_hours`; ``None`` where not at hand.

    Attributes
    ----------
    load_gpus : ndarray
        Busy GPUs per step.
    capacity_gpus : float, optional
        ``u_max · G``.
    dry_bulb_c, pue : ndarray, optional
        Dry bulb [°C] and the pPUE the plan paid.
    cooling_kw, water_l : ndarray, optional
        Cooling power [kW] and on-site water [L/h] (kept on the site's node unless shared).
    usable_gpus : ndarray, optional
        Model v1.1, a site whose cooling is derated above its design dry bulb: the usable
        capacity ``u_max · f_t · G`` of each step, drawn where it differs from
        ``capacity_gpus``.
    """

    load_gpus: np.ndarray
    capacity_gpus: float | None = None
    dry_bulb_c: np.ndarray | None = None
    pue: np.ndarray | None = None
    cooling_kw: np.ndarray | None = None
    water_l: np.ndarray | None = None
    usable_gpus: np.ndarray | None = None


def site_hours(site_id: str, times: Sequence[pd.Timestamp], series: SiteHours) -> Figure:
    """One site hour by hour: busy GPUs against usable capacity; dry-bulb temperature and
    pPUE; cooling power and on-site water. Panels whose data are missing say so."""
    load_gpus, capacity_gpus, usable_gpus = (
        series.load_gpus, series.capacity_gpus, series.usable_gpus
    )  # fmt: skip
    dry_bulb_c, pue, cooling_kw, water_l = (
        series.dry_bulb_c, series.pue, series.cooling_kw, series.water_l
    )  # fmt: skip
    fig, (ax_load, ax_temp, ax_cool) = _subplots(1, 3, figsize=(12.0, 2.7))
    hours = np.arange(len(times))
    ax_load.step(hours, load_gpus, where="post", color=RUN_COLOUR, label="busy GPUs")
    if capacity_gpus is not None:
        ax_load.axhline(capacity_gpus, color="black", linestyle="--", linewidth=1,
                        label="u_max × GPUs")  # fmt: skip
    if usable_gpus is not None:
        ax_load.step(hours, usable_gpus, where="post", color="#1f4e9c", linestyle=":",
                     linewidth=1.6, label="u_max × f_t × GPUs (cooling derated)")  # fmt: skip
    ax_load.set_ylim(bottom=0)
    ax_load.set_ylabel("GPUs")
    # Below the lines where a derated capacity dips from the top of the chart.
    ax_load.legend(fontsize=7, loc="upper left" if usable_gpus is None else "lower left")
    ax_load.set_title(f"{site_id}: load", fontsize=9)
    if dry_bulb_c is not None:
        ax_temp.plot(hours, dry_bulb_c, color="#e67e22", label="dry bulb")
        ax_temp.set_ylabel("dry bulb [°C]", color="#e67e22")
    if pue is not None:
        twin = ax_temp.twinx()
        twin.plot(hours, pue, color="#8e44ad", linestyle="--", label="pPUE")
        twin.set_ylabel("pPUE [–]", color="#8e44ad")
    if dry_bulb_c is None and pue is None:
        _missing(ax_temp, "temperature and pPUE\nnot at hand")
    ax_temp.set_title(f"{site_id}: temperature and pPUE", fontsize=9)
    if cooling_kw is not None and water_l is not None:
        ax_cool.plot(hours, cooling_kw, color="#16a085", label="cooling")
        ax_cool.set_ylabel("cooling [kW]", color="#16a085")
        twin = ax_cool.twinx()
        twin.plot(hours, water_l, color="#2980b9", linestyle="--", label="water")
        twin.set_ylabel("on-site water [L/h]", color="#2980b9")
    else:
        _missing(ax_cool, "cooling and water kept\non the site's node")
    ax_cool.set_title(f"{site_id}: cooling and water", fontsize=9)
    for ax in (ax_load, ax_temp, ax_cool):
        ax.set_xlabel("hour of the horizon")
    fig.tight_layout()
    return fig


def against_baselines(
    rows: Mapping[str, Mapping[str, float | None]],
    run_label: str,
    metrics: Sequence[tuple[str, str, str]],
) -> Figure:
    """One bar chart per quantity, four to a row: the run and every baseline.

    Parameters
    ----------
    rows : mapping
        ``{label: {metric key: value}}`` in display order.
    run_label : str
        The label drawn in the run's colour.
    metrics : sequence
        ``(key, title, unit)``.
    """
    columns = min(len(metrics), 4)
    lines = -(-len(metrics) // columns)
    fig, grid = _subplots(lines, columns, figsize=(3.0 * columns, 3.4 * lines), squeeze=False)
    axes = grid.ravel()
    for spare in axes[len(metrics) :]:
        spare.remove()
    labels = list(rows)
    for ax, (key, title, unit) in zip(axes, metrics, strict=False):
        values = [np.nan if (v := rows[lab].get(key)) is None else float(v) for lab in labels]
        colours = [RUN_COLOUR if lab == run_label else BASELINE_COLOUR for lab in labels]
        ax.bar(range(len(labels)), values, color=colours)
        finite = [v for v in values if np.isfinite(v)]
        if finite:  # start near the smallest bar: the differences are a few percent
            low, high = min(finite), max(finite)
            ax.set_ylim(max(0.0, low - 0.6 * (high - low + 1e-9 * high)), high * 1.01 + 1e-12)
            if high >= 1e5:  # "14 M" on the ticks, not an offset "1e7" over the title
                ax.yaxis.set_major_formatter(EngFormatter())
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{title} [{unit}]", fontsize=9)
    fig.tight_layout()
    return fig


def shadow_price_heatmaps(prices: pd.DataFrame, regions: Sequence[str]) -> Figure:
    """The marginal cost of one more request per region × hour, one panel per class
    [AUD per thousand requests]."""
    classes = list(dict.fromkeys(prices["class_id"]))
    fig, axes = _subplots(
        len(classes), 1, figsize=(10.0, 0.8 + (0.32 * len(regions) + 0.6) * len(classes)),
        squeeze=False,
    )  # fmt: skip
    times = list(dict.fromkeys(prices["time"]))
    for ax, class_id in zip(axes[:, 0], classes, strict=True):
        one = prices[prices["class_id"] == class_id]
        grid = one.pivot_table(index="region_id", columns="time", values="aud_per_request")
        grid = grid.reindex(index=list(regions), columns=times) * 1e3
        values = grid.to_numpy(dtype=float)
        low, high = np.nanmin(values), np.nanmax(values)
        title = f"{class_id}: shadow price of demand"
        if high - low <= 1e-3 * max(abs(high), 1e-12):  # one price: don't paint round-off
            title += f" — one price everywhere (within 0.1 %), {high:.4g} AUD per 1,000"
            low, high = 0.99 * low, 1.01 * high
        image = ax.imshow(values, aspect="auto", cmap="magma_r", vmin=low, vmax=high)
        ax.set_yticks(range(len(grid)), list(grid.index), fontsize=7)
        ax.set_xticks(range(0, len(times), max(1, len(times) // 12)))
        ax.set_xlabel("hour of the horizon")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, label="AUD per 1,000 requests")
    fig.tight_layout()
    return fig


def convergence(
    iterations: np.ndarray,
    series: Mapping[str, np.ndarray],
    tolerances: Mapping[str, float],
    title: str,
    polish_from: int | None = None,
) -> Figure:
    """Residuals on a log scale against the iteration, with their tolerances dashed and
    the polishing steps after iteration ``polish_from`` (ADMM) shaded."""
    fig, ax = _subplots(figsize=(8.0, 3.6))
    if polish_from is not None and iterations.size and iterations.max() > polish_from:
        ax.axvspan(polish_from, iterations.max(), color="#eeeeee", label="polishing")
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, values), colour in zip(series.items(), colours, strict=False):
        positive = np.where(np.asarray(values, dtype=float) > 0, values, np.nan)
        ax.semilogy(iterations, positive, color=colour, label=name)
        if name in tolerances:
            ax.axhline(tolerances[name], color=colour, linestyle="--", linewidth=1,
                       label=f"{name} tolerance")  # fmt: skip
    ax.set_xlabel("iteration")
    ax.set_ylabel("residual")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _subplots(
    *grid: int, figsize: tuple[float, float], squeeze: bool = True, sharex: bool = False
) -> tuple[Figure, Any]:
    """A figure and its axes: one Axes, or an array of them (matplotlib types either as Any)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, squeeze=squeeze, sharex=sharex)


def _missing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def pareto_panels(
    points: pd.DataFrame,
    panels: Sequence[tuple[str, str, str]],
    weight_label: str,
    title: str,
    optimum: str = "central",
) -> Figure:
    """Every quantity against the swept weight, one panel each (small multiples): the
    optimum and every baseline on the same axes, the scenario's default weight dashed.

    Parameters
    ----------
    points : DataFrame
        :func:`thermoroute.pareto.sweep`'s rows (``weight, default, solver`` and the
        columns of ``panels``).
    panels : sequence
        ``(column, title, unit)`` per panel, in reading order.
    weight_label : str
        The swept weight with its unit (the shared log x axis).
    title : str
        Above the panels.
    optimum : str
        The solver drawn in the run's colour, on top.
    """
    columns = 4
    rows = len(panels) // columns + 1  # at least one free slot, for the legend
    fig, grid = _subplots(rows, columns, figsize=(4.0 * columns, 3.0 * rows + 0.6),
                          squeeze=False, sharex=True)  # fmt: skip
    axes = grid.ravel()
    for spare in axes[len(panels) :]:
        spare.remove()
    solvers = list(dict.fromkeys(points["solver"]))
    style = {optimum: (RUN_COLOUR, "o", 3)}  # colour, marker, drawn on top
    others = [s for s in solvers if s != optimum]
    for k, solver in enumerate(others):
        style[solver] = (PLAN_COLOURS[k % len(PLAN_COLOURS)], "s^vDPX<>"[k % 8], 2)
    default = points.loc[points["default"].astype(bool), "weight"]
    for ax, (column, name, unit) in zip(axes, panels, strict=False):
        for solver in solvers:
            one = points[points["solver"] == solver].sort_values("weight")
            colour, marker, order = style[solver]
            # Unclipped on the percent panel, whose floor is the optimum's own zero line.
            ax.plot(one["weight"], one[column], color=colour, marker=marker, markersize=4,
                    linewidth=1.4, label=solver, zorder=order,
                    clip_on=column != "objective_above_optimum_pct")  # fmt: skip
        for weight in default.unique():
            ax.axvline(weight, color="black", linestyle="--", linewidth=0.8, zorder=1)
        ax.set_xscale("log")
        if column == "objective_above_optimum_pct":
            # A decade per gridline: temperature-unaware is a tenth of a percent above the
            # optimum where the greedy plans are tens; the optimum is the zero line.
            ax.set_yscale("symlog", linthresh=1e-3)
            # Nothing is below the optimum beyond its solver's tolerance: no negative half.
            ax.set_ylim(bottom=0.0)
        ax.set_title(f"{name} [{unit}]", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", color="#e5e5e5", linewidth=0.6)
        ax.tick_params(axis="x", labelbottom=True)  # sharex hid them: each panel reads alone
    for ax in axes[len(panels) - columns : len(panels)]:
        ax.set_xlabel(weight_label, fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8))
    labels.append("the scenario's default weight")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    box = axes[len(panels)].get_subplotspec().get_position(fig)  # the first free slot
    centre = (box.x0 + box.width / 2, box.y0 + box.height / 2)
    fig.legend(handles, labels, loc="center", bbox_to_anchor=centre, fontsize=8,
               title="plan", title_fontsize=8)  # fmt: skip
    return fig
