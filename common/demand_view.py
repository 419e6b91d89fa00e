"""Read only the coordinator's files of a scenario directory into a
:class:`~thermoroute.common.scenario.DemandView`; no site's file is opened.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.scenario import DemandView, step_times
from thermoroute.common.scenario_readers import (
    apply_overrides,
    read_batch,
    read_classes,
    read_demand,
    read_regions,
    read_toml,
)
from thermoroute.common.scenario_validation import ProblemCollector, ids_sound

__all__ = [
    "load_demand_view",
]


def load_demand_view(
    directory: str | os.PathLike[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> DemandView:
    """Read only the coordinator's files of a scenario directory.

    Reads ``scenario.toml``, ``regions.csv``, ``classes.csv``, ``demand.csv`` and
    ``batch.csv``; no site file is opened, so this works on a coordinator-only directory
    (see :func:`~thermoroute.common.scenario_split.split_scenario`).

    Raises
    ------
    ScenarioError
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError(Problem(str(directory), "not a directory"), str(directory))
    sink = ProblemCollector()
    meta = apply_overrides(read_toml(directory, sink), start, steps, sink)
    regions, region_index = read_regions(directory, sink)
    classes, class_index = read_classes(directory, sink)
    keys_ok = ids_sound(sink, "regions.csv", "region_id") and ids_sound(
        sink, "classes.csv", "class_id", "deferrable"
    )
    times = step_times(meta["start"], meta["step_hours"], meta["steps"]) if meta else ()
    step_of = {t: k for k, t in enumerate(times)}
    if meta is not None and keys_ok:
        demand = read_demand(
            directory, region_index, class_index, classes, step_of, sink,
            populated=bool(np.any(regions.population > 0)), step_hours=meta["step_hours"],
        )  # fmt: skip
    if keys_ok:
        batch = read_batch(directory, region_index, class_index, classes, sink)
    if sink.problems or meta is None:
        raise ScenarioError(sink.problems, str(directory))
    return DemandView(
        name=meta["name"],
        start=times[0],
        step_hours=meta["step_hours"],
        objective=meta["objective"],
        regions=regions,
        classes=classes,
        times=times,
        demand_rps=demand,
        batch_requests=batch,
    )
