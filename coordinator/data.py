"""The coordinator's data: the demand side of a scenario, and nothing of the sites.

The coordinator reads only ``scenario.toml``, ``regions.csv``, ``classes.csv``,
``demand.csv`` and ``batch.csv`` (:func:`thermoroute.common.demand_view.load_demand_view`); it never
opens a site's files, so it runs from a coordinator-only directory
(``thermoroute scenario split``).
"""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.demand_view import load_demand_view
from thermoroute.common.scenario import DemandView


def load_view(
    directory: str | os.PathLike[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> DemandView:
    """The coordinator's view of a scenario directory (see the module docstring).

    Raises
    ------
    thermoroute.common.errors.ScenarioError
    """
    return load_demand_view(directory, start=start, steps=steps)


def layout_of(view: DemandView) -> CouplingLayout:
    """The coupling rows of a demand view."""
    return CouplingLayout(
        regions=len(view.regions),
        deferrable=tuple(bool(d) for d in view.classes.deferrable),
        steps=view.steps,
    )


def row_scale_of(view: DemandView, layout: CouplingLayout | None = None) -> np.ndarray:
    """``s_r`` of every coupling row of ``view``."""
    layout = layout or layout_of(view)
    return layout.row_scale(view.demand_rps, view.batch_requests)
