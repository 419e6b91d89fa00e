"""Read only some sites' rows of a scenario directory, each into a one-site
:class:`~thermoroute.common.scenario.Scenario`; and list a fleet's site ids.

The sites' side of the format, beside the coordinator's
(:func:`~thermoroute.common.demand_view.load_demand_view`): the same readers and checks as
:func:`~thermoroute.common.scenario_loading.load_scenario`, so a file that one accepts
(byte-order mark, CRLF line ends, quoted cells) the other accepts too, and a problem is
reported in the same words, at the same row. Other sites' rows are passed over while the
files stream by, before any of their cells is parsed: a site never holds them, nor judges
them. Demand and batch volumes, the coordinator's data, are not read: a one-site scenario
has zero demand and batch and region populations 0; region ids and coordinates, classes and
the objective weights are public and kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.scenario import Regions, Scenario, step_times
from thermoroute.common.scenario_format import SITE_COLUMNS
from thermoroute.common.scenario_readers import (
    apply_overrides,
    read_classes,
    read_network,
    read_plant,
    read_profiles,
    read_regions,
    read_series,
    read_sites,
    read_toml,
)
from thermoroute.common.scenario_validation import (
    ProblemCollector,
    ids_sound,
    read_csv_rows,
    unique_ids,
)

__all__ = [
    "list_site_ids",
    "load_site_view",
]


def list_site_ids(directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """The site ids of ``directory``'s ``sites.csv``, in the file's order.

    Only what names the sites is checked — the file, its header and the ``site_id``
    column, as validation checks them; the sites' other cells are their own to check
    (:func:`load_site_view`).

    Raises
    ------
    ScenarioError
        With those problems of ``sites.csv``.
    """
    directory = Path(directory)
    sink = ProblemCollector()
    rows = read_csv_rows(directory, "sites.csv", SITE_COLUMNS, sink)
    index = unique_ids(rows, "site_id", sink)
    if not index and not any(p.file == "sites.csv" for p in sink.problems):
        sink.add("sites.csv", "no sites")
    if sink.problems:
        raise ScenarioError(sink.problems, str(directory))
    return tuple(index)


def _other_sites(directory: Path, wanted: set[str]) -> frozenset[str]:
    """The ids in ``sites.csv`` of sites other than ``wanted``, whose rows are skipped.

    A row whose site is none of the fleet's (an empty, malformed or unknown id) is no other
    site's, so every site reads and refuses it, as validation does. This pass's problems
    are dropped: the main pass over ``sites.csv`` reports them.
    """
    scratch = ProblemCollector()
    ids = {
        (row.cells.get("site_id") or "").strip()
        for row in read_csv_rows(directory, "sites.csv", SITE_COLUMNS, scratch)
    }
    return frozenset(ids - wanted - {""})


def _absent_sites(
    absent: list[str],
    others: frozenset[str],
    regions: Regions,
    regions_ok: bool,
    sink: ProblemCollector,
) -> None:
    """Report the wanted sites ``sites.csv`` does not hold, naming the per-site directory of
    another site as such (one site, no region populated: what ``scenario split`` writes)."""
    per_site = len(others) == 1 and regions_ok and not np.any(regions.population > 0)
    for sid in absent:
        if per_site:
            (other,) = others
            reason = f"this is the per-site directory of {other!r}, not {sid!r}"
            sink.add("sites.csv", reason, 2, "site_id")
        else:
            sink.add("sites.csv", f"no site with site_id {sid!r}", None, "site_id")


def load_site_view(
    directory: str | os.PathLike[str],
    site_ids: Iterable[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> dict[str, Scenario]:
    """Read and validate only ``site_ids``' rows of a scenario directory, in one pass.

    Reads ``scenario.toml``, ``regions.csv``, ``classes.csv`` and, of ``sites.csv``,
    ``profiles.csv``, ``network.csv``, ``site_series.csv`` and ``ppue_curve.csv`` (where
    present), the rows of these sites and of none of the fleet's; ``demand.csv`` and
    ``batch.csv`` are not opened. A full scenario directory and a site's own directory
    (:func:`~thermoroute.common.scenario_split.split_scenario`) are read alike.

    Parameters
    ----------
    directory : path
        A scenario directory in input format v1.
    site_ids : iterable of str
        The sites to read.
    start, steps : optional
        Override ``[scenario] start`` and ``steps`` of ``scenario.toml``, as in
        :func:`~thermoroute.common.scenario_loading.load_scenario`.

    Returns
    -------
    dict
        ``{site_id: Scenario}`` in the order of ``site_ids``, each of one site, with zero
        demand and batch volumes and region populations 0. ``metadata`` holds ``source``
        (``directory``), ``site_id`` and ``available_steps`` (consecutive steps of the
        site's series from the start).

    Raises
    ------
    ScenarioError
        With every problem found in what was read, each naming the file, row and column as
        validation does; or if a site is not in ``sites.csv``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError(Problem(str(directory), "not a directory"), str(directory))
    wanted = list(dict.fromkeys(site_ids))
    sink = ProblemCollector()
    meta = apply_overrides(read_toml(directory, sink), start, steps, sink)
    others = _other_sites(directory, set(wanted))

    sites, site_index, ppue_empty = read_sites(directory, sink, skip_sites=others)
    regions, region_index = read_regions(directory, sink)
    classes, class_index = read_classes(directory, sink)
    # As load_scenario: tables keyed by ids whose file could not be trusted wait for the
    # next run.
    sites_ok = ids_sound(sink, "sites.csv", "site_id")
    regions_ok = ids_sound(sink, "regions.csv", "region_id")
    classes_ok = ids_sound(sink, "classes.csv", "class_id", "deferrable")
    if sites_ok and (absent := [s for s in wanted if s not in site_index]):
        _absent_sites(absent, others, regions, regions_ok, sink)
    times = step_times(meta["start"], meta["step_hours"], meta["steps"]) if meta else ()
    step_of = {t: k for k, t in enumerate(times)}

    if sites_ok:
        sites = read_plant(directory, sites, site_index, ppue_empty, meta, sink, skip_sites=others)
    if sites_ok and classes_ok:
        gpu_s, energy_j, prefill_ms = read_profiles(
            directory, site_index, class_index, sink, skip_sites=others
        )
    if sites_ok and regions_ok:
        rtt_ms = read_network(directory, site_index, region_index, sink, skip_sites=others)
    if meta is not None and sites_ok:
        series = read_series(
            directory, site_index, step_of, sink, step_hours=meta["step_hours"], skip_sites=others
        )
    if sink.problems or meta is None:
        raise ScenarioError(sink.problems, str(directory))

    # Without demand there is nothing for check_servable to check: whether the fleet can
    # serve the demand is the whole scenario's question, which no one site can answer.
    R, C, T = len(regions), len(classes), len(times)
    public = replace(regions, population=np.zeros(R))
    views: dict[str, Scenario] = {}
    for sid in wanted:
        i = site_index[sid]
        # Copies: each site's scenario owns its arrays, as if read alone.
        own = slice(i, i + 1)
        views[sid] = Scenario(
            name=meta["name"],
            start=times[0],
            step_hours=meta["step_hours"],
            objective=meta["objective"],
            sites=sites.take([i]),
            regions=public,
            classes=classes,
            gpu_s=gpu_s[own].copy(),
            energy_j=energy_j[own].copy(),
            prefill_ms=prefill_ms[own].copy(),
            rtt_ms=rtt_ms[own].copy(),
            times=times,
            dry_bulb_c=series[0][own].copy(),
            wet_bulb_c=series[1][own].copy(),
            price_aud_per_mwh=series[2][own].copy(),
            carbon_kg_per_kwh=series[3][own].copy(),
            ewif_l_per_kwh=series[4][own].copy(),
            demand_rps=np.zeros((R, C, T)),
            batch_requests=np.zeros((R, C)),
            metadata={
                "source": str(directory),
                "site_id": sid,
                "available_steps": series[5][i],
            },
        )
    return views
