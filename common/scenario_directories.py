"""What kind of scenario directory a path is, checked as that kind (``scenario validate``).

``thermoroute run`` takes a full scenario directory and the output root of ``thermoroute
scenario split`` (:func:`~thermoroute.common.scenario_split.split_scenario`); a site's own
directory of a split is a valid one-site scenario without demand, so ``run`` takes it too.
:func:`check_directory` accepts each of them, and the coordinator's part of a split, checked
by the readers the run itself uses for it: the whole scenario
(:func:`~thermoroute.common.scenario_loading.load_scenario`), the coordinator's files
(:func:`~thermoroute.common.demand_view.load_demand_view`), a site's rows in its
``sites/<id>/`` (:func:`~thermoroute.common.site_view.load_site_view`, as the site's agent
reads them: :func:`thermoroute.site_agent.data.load_site`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from thermoroute.common.demand_view import load_demand_view
from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_split import is_split_root
from thermoroute.common.scenario_validation import id_problem
from thermoroute.common.site_view import load_site_view

__all__ = [
    "CheckedDirectory",
    "DirectoryKind",
    "check_directory",
]


class DirectoryKind(StrEnum):
    """The kinds of directory ``scenario validate`` tells apart (the words it prints)."""

    full = "full scenario"
    split_root = "split root"
    site = "single site's directory"
    coordinator = "coordinator's part of a split"


@dataclass(frozen=True)
class CheckedDirectory:
    """A directory found valid as its :attr:`kind`.

    Attributes
    ----------
    kind : DirectoryKind
    view : DemandView
        The public side read: name, horizon, regions, classes (and the demand, if any).
    scenario : Scenario or None
        The whole scenario read (a full scenario, a site's directory); ``None`` for a split
        root and the coordinator's part, which no process reads whole.
    sites_here : tuple of str
        The sites whose data were checked here.
    sites_elsewhere : tuple of str
        A split root's sites whose directory is empty here: on a deployment's head node
        each site's data are on the site's own host (deploy/GUIDE.md), checked there.
    """

    kind: DirectoryKind
    view: DemandView
    scenario: Scenario | None = None
    sites_here: tuple[str, ...] = ()
    sites_elsewhere: tuple[str, ...] = ()


def check_directory(
    directory: str | os.PathLike[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> CheckedDirectory:
    """Tell which kind of scenario directory ``directory`` is and check it as that kind.

    A split root (``coordinator/`` and ``sites/``) is checked part by part: the
    coordinator's files, and every site directory that holds data; an empty one is a site
    whose data live on its own host. ``coordinator/`` beside ``sites/`` is the coordinator's
    part. Any other directory must be a whole scenario; one of a single site and no demand
    is a site's directory as ``scenario split`` writes it.

    Raises
    ------
    ScenarioError
        With every problem found, a split's named by their part (``sites/syd/sites.csv``).
    """
    directory = Path(directory)
    if is_split_root(directory):
        return _check_split_root(directory, start, steps)
    if directory.name == "coordinator" and is_split_root(directory.parent):
        view = load_demand_view(directory, start=start, steps=steps)
        return CheckedDirectory(DirectoryKind.coordinator, view)
    scenario = load_scenario(directory, start=start, steps=steps)
    alone = len(scenario.sites.site_id) == 1
    if alone and not scenario.demand_rps.any() and not scenario.batch_requests.any():
        kind = DirectoryKind.site
    else:
        kind = DirectoryKind.full
    view = DemandView.of(scenario)
    return CheckedDirectory(kind, view, scenario, sites_here=scenario.sites.site_id)


def _check_split_root(root: Path, start: datetime | None, steps: int | None) -> CheckedDirectory:
    problems: list[Problem] = []
    view: DemandView | None = None
    try:
        view = load_demand_view(root / "coordinator", start=start, steps=steps)
    except ScenarioError as exc:
        problems += _within("coordinator", exc)
    # The sites as the run finds them (thermoroute.cluster.discover): sites/<id>/.
    ids = sorted(p.name for p in (root / "sites").iterdir() if p.is_dir())
    if not ids:
        problems.append(Problem("sites", "no site directory (sites/<site_id>/)"))
    here: list[str] = []
    elsewhere: list[str] = []
    for site in ids:
        if (reason := id_problem(site)) is not None:
            problems.append(Problem(f"sites/{site}", reason))
        elif not any((root / "sites" / site).iterdir()):
            elsewhere.append(site)
        else:
            try:
                load_site_view(root / "sites" / site, [site], start=start, steps=steps)
                here.append(site)
            except ScenarioError as exc:
                problems += _within(f"sites/{site}", exc)
    if problems or view is None:
        raise ScenarioError(problems, str(root))
    return CheckedDirectory(
        DirectoryKind.split_root, view, sites_here=tuple(here), sites_elsewhere=tuple(elsewhere)
    )


def _within(part: str, error: ScenarioError) -> list[Problem]:
    """``error``'s problems, each file named within the split root (``coordinator/...``)."""
    return [
        Problem(f"{part}/{p.file}" if not Path(p.file).is_absolute() else p.file,
                p.reason, p.row, p.column)
        for p in error.problems
    ]  # fmt: skip
