"""A site's own data: load one site (and nothing of the others) as a one-site scenario.

A site agent reads either its per-site directory (written by
:func:`thermoroute.common.scenario_split.split_scenario`, shipped to the node where the site
runs) or, in local emulation, its own slice of a full scenario directory. Either way the result
is a one-site :class:`~thermoroute.common.scenario.Scenario` without the coordinator's data:
demand and batch volumes are zero and region populations 0; region ids and coordinates, classes
and the objective weights are public and kept.

Slicing streams each private file once and keeps only the wanted sites' rows, so other
sites' data are never held in memory (:func:`load_sites` does it for a whole group of sites
in one pass).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario import Scenario, step_times
from thermoroute.common.scenario_format import (
    BATCH_COLUMNS,
    DEMAND_COLUMNS,
    REGION_COLUMNS,
    SCENARIO_FILES,
    SITE_OPTIONAL_FILES,
)
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_split import site_sliced_files
from thermoroute.common.scenario_validation import id_problem
from thermoroute.common.scenarios import scenario_directory

__all__ = [
    "PRELOAD_STEPS",
    "load_horizons",
    "load_site",
    "load_sites",
    "resolve_source",
    "site_directory",
    "site_slices",
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


def _column(path: Path, column: str) -> list[str]:
    """Stripped values of one column of a CSV file (streamed)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return []
        if column not in header:
            return []
        k = header.index(column)
        return [r[k].strip() for r in reader if r and any(v.strip() for v in r) and len(r) > k]


def _has_rows(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        return any(r and any(v.strip() for v in r) for r in reader)


def site_directory(directory: Path, site_id: str) -> Path | None:
    """``directory`` itself if it is ``site_id``'s per-site directory, else ``None``.

    A per-site directory holds exactly this site in ``sites.csv`` and no demand or batch
    rows. The output root of :func:`~thermoroute.common.scenario_split.split_scenario` is
    accepted too (``directory/sites/<site_id>``).

    Raises
    ------
    ScenarioError
        If the directory holds exactly one, different, site and no demand: the per-site
        directory of another site.
    """
    nested = directory / "sites" / site_id
    if nested.is_dir() and not (directory / "sites.csv").is_file():
        return nested
    sites_csv = directory / "sites.csv"
    if not sites_csv.is_file():
        return None
    ids = _column(sites_csv, "site_id")
    demand_free = not _has_rows(directory / "demand.csv") and not _has_rows(directory / "batch.csv")
    if len(ids) == 1 and demand_free:
        if ids[0] != site_id:
            raise ScenarioError(
                Problem(
                    "sites.csv",
                    f"this is the per-site directory of {ids[0]!r}, not {site_id!r}",
                    2,
                    "site_id",
                ),
                str(directory),
            )
        return directory
    return None


def site_slices(
    directory: str | os.PathLike[str], site_ids: Iterable[str]
) -> dict[str, dict[str, str]]:
    """One-site directory files for each of ``site_ids``, reading every file once.

    The same files as :func:`thermoroute.common.scenario_split.site_slice_files` gives for
    each site, in a single pass over the full directory: only the wanted sites' rows are kept.

    Returns
    -------
    dict
        ``{site_id: {file name: text}}``.

    Raises
    ------
    ScenarioError
        If a file is missing or a site is not in ``sites.csv``.
    """
    directory = Path(directory)
    wanted = list(dict.fromkeys(site_ids))
    keep = set(wanted)
    private: dict[str, dict[str, str]] = {s: {} for s in wanted}
    for name in site_sliced_files(directory):
        path = directory / name
        if not path.is_file():
            raise ScenarioError(Problem(name, "file is missing"), str(directory))
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            k = header.index("site_id") if "site_id" in header else None
            buckets: dict[str, list[list[str]]] = {s: [] for s in wanted}
            for row in reader:
                if not row or k is None or len(row) <= k:
                    continue
                sid = row[k].strip()
                if sid in keep:
                    buckets[sid].append(row)
        for sid in wanted:
            private[sid][name] = csv_text(header, buckets[sid])
    missing = [s for s in wanted if private[s]["sites.csv"].count("\n") < 2]
    if missing:
        raise ScenarioError(
            [Problem("sites.csv", f"no site with site_id {s!r}", None, "site_id") for s in missing],
            str(directory),
        )
    public = {
        n: (directory / n).read_text(encoding="utf-8") for n in ("scenario.toml", "classes.csv")
    }
    with (directory / "regions.csv").open(newline="", encoding="utf-8") as handle:
        rows = [
            [r["region_id"], r.get("name", ""), r["lat"], r["lon"], 0]
            for r in csv.DictReader(handle)
        ]
    public["regions.csv"] = csv_text(REGION_COLUMNS, rows)
    public["demand.csv"] = csv_text(DEMAND_COLUMNS, [])
    public["batch.csv"] = csv_text(BATCH_COLUMNS, [])
    return {sid: {**private[sid], **public} for sid in wanted}


def _parse_start(start: datetime | str | None) -> datetime | None:
    if start is None or isinstance(start, datetime):
        return start
    return datetime.fromisoformat(start)


def _site_only(scenario: Scenario, site_id: str, source: Path) -> Scenario:
    """Check a loaded scenario is ``site_id`` alone and strip what is not the site's."""
    if scenario.sites.site_id != (site_id,):
        raise ScenarioError(
            Problem("sites.csv", f"expected only site {site_id!r}, found {scenario.sites.site_id}"),
            str(source),
        )
    regions = replace(scenario.regions, population=np.zeros(len(scenario.regions)))
    return replace(
        scenario,
        regions=regions,
        demand_rps=np.zeros_like(scenario.demand_rps),
        batch_requests=np.zeros_like(scenario.batch_requests),
        metadata={
            "source": str(source),
            "site_id": site_id,
            "available_steps": scenario.metadata.get("available_steps"),
        },
    )


def _zero_demand(files: dict[str, str], start: datetime | None, steps: int | None) -> str:
    """A ``demand.csv`` of zeros over the window, for every region and interactive class.

    ``load_scenario`` requires a demand row for every interactive (region, class, step),
    while a site's directory carries no demand (it is the coordinator's). Zeros over the
    window satisfy the validation without inventing any demand.
    """
    try:
        meta = tomllib.loads(files["scenario.toml"]).get("scenario", {})
        first = start or datetime.fromisoformat(str(meta["start"]))
        times = step_times(first, float(meta["step_hours"]), int(steps or meta["steps"]))
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError):
        # Leave the file as it is: load_scenario reports what is wrong with scenario.toml.
        return files["demand.csv"]
    regions = [r["region_id"].strip() for r in csv.DictReader(io.StringIO(files["regions.csv"]))]
    interactive = [
        r["class_id"].strip()
        for r in csv.DictReader(io.StringIO(files["classes.csv"]))
        if r.get("deferrable", "").strip().lower() not in ("true", "1", "yes")
    ]
    rows = [[t.isoformat(), j, c, 0] for t in times for j in regions for c in interactive]
    return csv_text(DEMAND_COLUMNS, rows)


def _load_files(
    files: dict[str, str], site_id: str, source: Path, start: datetime | None, steps: int | None
) -> Scenario:
    contents: dict[str, str | bytes] = {**files, "demand.csv": _zero_demand(files, start, steps)}
    with tempfile.TemporaryDirectory(prefix="thermoroute-site-") as tmp:
        write_directory_atomic(tmp, contents)
        scenario = load_scenario(tmp, start=start, steps=steps)
    return _site_only(scenario, site_id, source)


def _read_site_directory(directory: Path) -> dict[str, str]:
    """The files of a per-site directory (all of them the site's own): the v1 files and
    model v1.1's optional ones where present."""
    files = {}
    for name in SCENARIO_FILES:
        path = directory / name
        if not path.is_file():
            raise ScenarioError(Problem(name, "file is missing"), str(directory))
        files[name] = path.read_text(encoding="utf-8")
    for name in SITE_OPTIONAL_FILES:
        if (directory / name).is_file():
            files[name] = (directory / name).read_text(encoding="utf-8")
    return files


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
    _require_ids([site_id])
    directory = resolve_source(source)
    start_dt = _parse_start(start)
    own = site_directory(directory, site_id)
    if own is not None:
        return _load_files(_read_site_directory(own), site_id, own, start_dt, steps)
    files = site_slices(directory, [site_id])[site_id]
    return _load_files(files, site_id, directory, start_dt, steps)


def load_sites(
    source: str | os.PathLike[str],
    site_ids: Iterable[str],
    *,
    start: datetime | str | None = None,
    steps: int | None = None,
) -> dict[str, Scenario]:
    """Load several sites, each as its own one-site scenario (for a group of sites).

    Like :func:`load_site` for every id, but a full scenario directory is read only once
    for the whole group.

    Returns
    -------
    dict
        ``{site_id: Scenario}`` in the order of ``site_ids``.
    """
    ids = list(dict.fromkeys(site_ids))
    _require_ids(ids)
    directory = resolve_source(source)
    start_dt = _parse_start(start)
    out: dict[str, Scenario] = {}
    sliced: list[str] = []
    for sid in ids:
        own = site_directory(directory, sid)
        if own is not None:
            out[sid] = _load_files(_read_site_directory(own), sid, own, start_dt, steps)
        else:
            sliced.append(sid)
    if sliced:
        for sid, files in site_slices(directory, sliced).items():
            out[sid] = _load_files(files, sid, directory, start_dt, steps)
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
