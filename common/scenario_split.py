"""Split a scenario directory into the coordinator's files and one directory per site
holding only that site's rows, so that each can be shipped to its own host.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario_format import (
    BATCH_COLUMNS,
    COORDINATOR_FILES,
    DEMAND_COLUMNS,
    REGION_COLUMNS,
    SITE_OPTIONAL_FILES,
    SITE_PRIVATE_FILES,
)
from thermoroute.common.scenario_loading import load_scenario

__all__ = [
    "is_split_root",
    "site_slice_files",
    "site_sliced_files",
    "split_scenario",
]


def site_sliced_files(directory: Path) -> tuple[str, ...]:
    """The files of ``directory`` sliced into each site's own: the v1 private files and
    model v1.1's optional ones where present."""
    return (*SITE_PRIVATE_FILES, *(n for n in SITE_OPTIONAL_FILES if (directory / n).is_file()))


def _csv_records(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file that has already been validated."""
    text = path.read_bytes().decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    rows = [dict(zip(header, r, strict=False)) for r in reader if r and any(v.strip() for v in r)]
    return header, rows


def _filtered_csv(path: Path, keep: Callable[[dict[str, str]], bool]) -> str:
    header, rows = _csv_records(path)
    return csv_text(header, [[r.get(h, "") for h in header] for r in rows if keep(r)])


def site_slice_files(directory: str | os.PathLike[str], site_id: str) -> dict[str, str]:
    """The files of a one-site scenario directory holding only ``site_id``'s rows.

    The site keeps its own rows of ``sites.csv``, ``profiles.csv``, ``network.csv`` and
    ``site_series.csv``, the public ``scenario.toml`` and ``classes.csv``, and the region
    ids and coordinates; region populations, demand and batch volumes (the coordinator's
    data) are left out: ``population`` is 0, and ``demand.csv`` and ``batch.csv`` hold a
    header and no rows, which :func:`~thermoroute.common.scenario_loading.load_scenario`
    reads as no demand, so the directory loads as a valid one-site scenario over any horizon
    its series covers.
    """
    directory = Path(directory)
    files: dict[str, str] = {}
    for name in (*SITE_PRIVATE_FILES, "scenario.toml", "classes.csv", "regions.csv"):
        if not (directory / name).is_file():
            raise ScenarioError(Problem(name, "file is missing"), str(directory))
    for name in site_sliced_files(directory):
        files[name] = _filtered_csv(
            directory / name, lambda row: row.get("site_id", "").strip() == site_id
        )
    if files["sites.csv"].count("\n") < 2:
        raise ScenarioError(
            Problem("sites.csv", f"no site with site_id {site_id!r}", None, "site_id"),
            str(directory),
        )
    for name in ("scenario.toml", "classes.csv"):
        files[name] = (directory / name).read_text(encoding="utf-8")
    _, regions = _csv_records(directory / "regions.csv")
    files["regions.csv"] = csv_text(
        REGION_COLUMNS,
        [[r["region_id"], r.get("name", ""), r["lat"], r["lon"], 0] for r in regions],
    )
    files["demand.csv"] = csv_text(DEMAND_COLUMNS, [])
    files["batch.csv"] = csv_text(BATCH_COLUMNS, [])
    return files


def is_split_root(directory: str | os.PathLike[str]) -> bool:
    """Is ``directory`` the output root of :func:`split_scenario`?"""
    directory = Path(directory)
    return (directory / "coordinator").is_dir() and (directory / "sites").is_dir()


def split_scenario(
    directory: str | os.PathLike[str], out: str | os.PathLike[str]
) -> dict[str, Path]:
    """Split a scenario into a coordinator directory and one directory per site.

    Writes ``out/coordinator/`` (the demand side) and ``out/sites/<site_id>/`` (each a
    valid one-site scenario directory holding only that site's private rows), so each can
    be shipped to its own host. The source is validated first.

    Returns
    -------
    dict
        ``{"coordinator": path, site_id: path, ...}``.

    Raises
    ------
    ScenarioError
        If the source is invalid (ids that could not name a directory are refused by
        validation, :data:`~thermoroute.common.scenario_format.ID_PATTERN`). Nothing is
        written then.
    """
    scenario = load_scenario(directory)
    directory, out = Path(directory), Path(out)
    slices = {site: site_slice_files(directory, site) for site in scenario.sites.site_id}
    paths: dict[str, Path] = {}
    coordinator = {name: (directory / name).read_bytes() for name in COORDINATOR_FILES}
    paths["coordinator"] = write_directory_atomic(out / "coordinator", coordinator)
    for site, files in slices.items():
        paths[site] = write_directory_atomic(out / "sites" / site, files)
    return paths
