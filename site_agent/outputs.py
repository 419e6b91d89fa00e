"""What a site writes of a run on its own node: its physics, totals and costs.

These are the site's private results (hourly pPUE would give back its temperatures, its
totals its prices and carbon intensity), so they never travel to the coordinator unless the
operator shares them (``--share-site-details``); the site writes them into its own directory
of the run's output instead (docs/model.md §9):

``<root>/<site_id>/summary.json``
    the site's totals (the keys of ``summary.json``'s ``totals``), ``objective_aud`` and
    its four parts, the iterate reported and the site's objective after each iterate;
``<root>/<site_id>/site_steps.csv``
    its rows of output format v1's ``site_steps.csv``;
``<root>/<site_id>/schedule.csv``
    its rows of the schedule (what it was asked to serve).

``<root>`` is the run's ``OUT/sites`` as the coordinator asks, unless the node sets
``THERMOROUTE_SITE_OUTPUT``: on a site's own host that names the operator's directory for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.evaluate import objective_parts_aud
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.outputs import (
    SCHEDULE_COLUMNS,
    SITE_STEP_COLUMNS,
    RunLabels,
    json_numbers,
    schedule_rows,
    site_step_rows,
)
from thermoroute.common.scenario import Scenario

#: The node's own output root for its sites (overrides the coordinator's request).
OUTPUT_ENV = "THERMOROUTE_SITE_OUTPUT"
SITE_FORMAT = "thermoroute-site-output/1"


def output_root(requested: str | None) -> Path | None:
    """Where this node's sites write: the node's setting, else the coordinator's request."""
    own = os.environ.get(OUTPUT_ENV, "").strip()
    if own:
        return Path(own)
    return None if requested is None else Path(requested)


def site_files(report: Any, site: Scenario, run_id: str) -> dict[str, str]:
    """The files of one site's directory, from its
    :class:`~thermoroute.site_agent.agent.SiteReport` and its own (one-site) scenario, which
    names its steps, regions and classes."""
    labels = RunLabels.of(site)
    doc = {
        "format": SITE_FORMAT,
        "site_id": report.site_id,
        "run_id": run_id,
        "iteration": report.iteration,
        "best_iterate": report.best,
        "objective_aud": float(report.totals["objective_aud"]),
        "objective_parts_aud": objective_parts_aud(report.totals, site.objective),
        "totals": json_numbers(
            {k: float(v) for k, v in report.totals.items() if k != "objective_aud"}
        ),
        "objective_history": [
            [int(k), float(v)]
            for k, v in zip(report.history_iterations, report.objective_history, strict=True)
        ],
    }
    return {
        "summary.json": json.dumps(doc, indent=2, allow_nan=False) + "\n",
        "site_steps.csv": csv_text(SITE_STEP_COLUMNS, site_step_rows(labels, report.steps())),
        "schedule.csv": csv_text(SCHEDULE_COLUMNS, schedule_rows(labels, report.x[None])),
    }


def write_site_files(root: Path, site_id: str, files: Mapping[str, str]) -> Path:
    """Write one site's files into ``root/site_id`` (each file replaced whole)."""
    contents: dict[str, str | bytes] = dict(files)
    return write_directory_atomic(root / site_id, contents)
