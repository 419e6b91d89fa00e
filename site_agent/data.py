"""A site's own data: load one site (and nothing of the others) as a one-site scenario.

A site agent reads either its per-site directory (written by
:func:`thermoroute.common.scenario_split.split_scenario`, shipped to the node where the site
runs) or, in local emulation, its own rows of a full scenario directory. Either way it reads
through :func:`thermoroute.common.site_view.load_site_view` — the readers and checks of
``scenario validate`` — and the result is a one-site
:class:`~thermoroute.common.scenario.Scenario` without the coordinator's data: demand and
batch volumes are zero and region populations 0; region ids and coordinates, classes and
the objective weights are public and kept.

Other sites' rows are skipped while each file streams by, so they are never held in memory
(:func:`load_sites` reads a whole group of sites in one pass).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_validation import id_problem
from thermoroute.common.scenarios import scenario_directory
from thermoroute.common.site_view import load_site_view

__all__ = [
    "PRELOAD_STEPS",
    "load_horizons",
    "load_site",
    "load_sites",
    "resolve_source",
]

#: Steps beyond the horizon preloaded for receding-horizon shifts (a week of hourly steps).
PRELOAD_STEPS = 168


def resolve_source(source: str | os.PathLike[str]) -> Path:
    """The directory behind ``source``: a path, or the name of an embedded scenario.

    Parameters
    ----------
    source : str or path
        A scenario directory (full, per-site, or the output root of
        :func:`thermoroute.common.scenario_split.split_scenario`), or an embedded scenario
        name such as ``"australia"``.

    Raises
    ------
    ScenarioError
        If ``source`` is neither an existing directory nor a known embedded scenario.
    """
    return scenario_directory(source)


def _site_directory(directory: Path, site_id: str) -> Path:
    """Where ``site_id``'s data are: its own directory in the output root of
    :func:`~thermoroute.common.scenario_split.split_scenario`, else ``directory`` itself
    (a full scenario directory, or the site's own)."""
    nested = directory / "sites" / site_id
    if nested.is_dir() and not (directory / "sites.csv").is_file():
        return nested
    return directory


def _parse_start(start: datetime | str | None) -> datetime | None:
    if start is None or isinstance(start, datetime):
        return start
    return datetime.fromisoformat(start)


def _require_ids(site_ids: Iterable[str]) -> None:
    """Refuse ids outside the safe set before they name any path (docs/model.md §8)."""
    problems = [
        Problem("sites.csv", reason, None, "site_id")
        for sid in site_ids
        if (reason := id_problem(sid)) is not None
    ]
    if problems:
        raise ScenarioError(problems)


def load_site(
    source: str | os.PathLike[str],
    site_id: str,
    *,
    start: datetime | str | None = None,
    steps: int | None = None,
) -> Scenario:
    """Load one site's data as a one-site scenario.

    Parameters
    ----------
    source : str or path
        The site's per-site directory, the output root of
        :func:`~thermoroute.common.scenario_split.split_scenario`, a full scenario directory
        (only this site's rows are read into memory), or an embedded scenario name.
    site_id : str
        The site.
    start : datetime or ISO-8601 str, optional
        First step of the horizon; the scenario's start by default.
    steps : int, optional
        Steps of the horizon; the scenario's by default.

    Returns
    -------
    Scenario
        One site; demand and batch zero, region populations 0. ``metadata`` holds
        ``source``, ``site_id`` and ``available_steps`` (consecutive steps of the site's
        series from ``start``).

    Raises
    ------
    ScenarioError
        If the data are invalid, the site is unknown, or the directory belongs to another
        site.
    """
    return load_sites(source, [site_id], start=start, steps=steps)[site_id]


def load_sites(
    source: str | os.PathLike[str],
    site_ids: Iterable[str],
    *,
    start: datetime | str | None = None,
    steps: int | None = None,
) -> dict[str, Scenario]:
    """Load several sites, each as its own one-site scenario (for a group of sites).

    Like :func:`load_site` for every id, but each directory is read only once for all the
    group's sites in it (a full scenario directory once for the whole group).

    Returns
    -------
    dict
        ``{site_id: Scenario}`` in the order of ``site_ids``.

    Raises
    ------
    ScenarioError
        With every problem of the sites' data in a directory (the first that has any).
    """
    ids = list(dict.fromkeys(site_ids))
    _require_ids(ids)
    directory = resolve_source(source)
    start_dt = _parse_start(start)
    by_directory: dict[Path, list[str]] = {}
    for sid in ids:
        by_directory.setdefault(_site_directory(directory, sid), []).append(sid)
    out: dict[str, Scenario] = {}
    for where, group in by_directory.items():
        out.update(load_site_view(where, group, start=start_dt, steps=steps))
    return {sid: out[sid] for sid in ids}


def load_horizons(
    source: str | os.PathLike[str],
    site_ids: Iterable[str],
    *,
    start: datetime | str | None = None,
    steps: int | None = None,
    preload: int = PRELOAD_STEPS,
) -> tuple[dict[str, Scenario], int]:
    """Sites' data from ``start`` over the horizon and up to ``preload`` steps beyond it.

    A receding horizon then moves by windowing (:meth:`Scenario.window`) without reading
    the files again; the extra steps are only those every site's series covers.

    Returns
    -------
    dict
        ``{site_id: Scenario}``, each with at least the horizon's steps.
    int
        The horizon ``T`` (``steps``, or the scenario's).
    """
    ids = list(dict.fromkeys(site_ids))
    window = load_sites(source, ids, start=start, steps=steps)
    horizon = next(iter(window.values())).steps
    available = min(int(s.metadata.get("available_steps") or horizon) for s in window.values())
    longer = min(available, horizon + max(int(preload), 0))
    if longer <= horizon:
        return window, horizon
    return load_sites(source, ids, start=start, steps=longer), horizon
