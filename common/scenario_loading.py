"""Read and validate a whole scenario directory into a
:class:`~thermoroute.common.scenario.Scenario`, or raise with every problem found.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.scenario import Scenario, step_times
from thermoroute.common.scenario_readers import (
    apply_overrides,
    read_batch,
    read_classes,
    read_demand,
    read_network,
    read_plant,
    read_profiles,
    read_regions,
    read_series,
    read_sites,
    read_toml,
)
from thermoroute.common.scenario_validation import ProblemCollector, ids_sound
from thermoroute.common.servability import check_servable

__all__ = [
    "load_scenario",
]


def load_scenario(
    directory: str | os.PathLike[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> Scenario:
    """Read and validate a scenario directory.

    Parameters
    ----------
    directory : path
        A scenario directory in input format v1.
    start, steps : optional
        Override ``[scenario] start`` and ``steps`` of ``scenario.toml``, e.g. to pick another
        day of a week-long series. The series must cover every step of the horizon.

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        With every problem found, each naming the file, row and column.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError(Problem(str(directory), "not a directory"), str(directory))
    sink = ProblemCollector()
    meta = apply_overrides(read_toml(directory, sink), start, steps, sink)

    sites, site_index, ppue_empty = read_sites(directory, sink)
    regions, region_index = read_regions(directory, sink)
    classes, class_index = read_classes(directory, sink)
    # Go on to the tables keyed by these ids even when some of their cells are bad, so one
    # run reports the problems of every file; only a table whose keys cannot be trusted
    # (ids missing, unreadable, empty or repeated) is left for the next run, as checking it
    # would only echo the first problem.
    sites_ok = ids_sound(sink, "sites.csv", "site_id")
    regions_ok = ids_sound(sink, "regions.csv", "region_id")
    classes_ok = ids_sound(sink, "classes.csv", "class_id", "deferrable")
    times = step_times(meta["start"], meta["step_hours"], meta["steps"]) if meta else ()
    step_of = {t: k for k, t in enumerate(times)}
    S, R, C, T = len(sites), len(regions), len(classes), len(times)

    if sites_ok:
        sites = read_plant(directory, sites, site_index, ppue_empty, meta, sink)
    if sites_ok and classes_ok:
        gpu_s, energy_j, prefill_ms = read_profiles(directory, site_index, class_index, sink)
    if sites_ok and regions_ok:
        rtt_ms = read_network(directory, site_index, region_index, sink)
    if meta is not None and sites_ok:
        series = read_series(directory, site_index, step_of, sink, step_hours=meta["step_hours"])
    if meta is not None and regions_ok and classes_ok:
        demand = read_demand(
            directory, region_index, class_index, classes, step_of, sink,
            populated=bool(np.any(regions.population > 0)), step_hours=meta["step_hours"],
        )  # fmt: skip
    if regions_ok and classes_ok:
        batch = read_batch(directory, region_index, class_index, classes, sink)
    if sink.problems or meta is None:
        raise ScenarioError(sink.problems, str(directory))

    scenario = Scenario(
        name=meta["name"],
        start=times[0],
        step_hours=meta["step_hours"],
        objective=meta["objective"],
        sites=sites,
        regions=regions,
        classes=classes,
        gpu_s=gpu_s,
        energy_j=energy_j,
        prefill_ms=prefill_ms,
        rtt_ms=rtt_ms,
        times=times,
        dry_bulb_c=series[0],
        wet_bulb_c=series[1],
        price_aud_per_mwh=series[2],
        carbon_kg_per_kwh=series[3],
        ewif_l_per_kwh=series[4],
        demand_rps=demand,
        batch_requests=batch,
        metadata={"directory": str(directory), "available_steps": min(series[5], default=0)},
    )
    assert scenario.shape == (S, R, C, T)
    check_servable(scenario, sink)
    if sink.problems:
        raise ScenarioError(sink.problems, str(directory))
    return scenario
