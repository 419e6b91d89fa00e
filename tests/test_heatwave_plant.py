"""The heatwave's sourced plant data (model v1.1): which limits bind, and where.

``australia-heatwave-2020`` gives its sites plant limits (docs/data.md §4a); the other
embedded scenarios stay model v1. On its default day (31 Jan 2020) only one limit binds:
Hobart's derated cooling capacity in the afternoon (37.9–40.3 °C against its 35 °C design
dry bulb). The temperature-unaware plan keeps Hobart's 128 GPUs powered through those five
hours and is reported above that limit, by ``thermoroute.common.evaluate.overloads`` and by
``thermoroute compare`` alike; the centralised optimum keeps within every limit. No grid
connection or water allowance is reached by any plan.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from tests.conftest import embedded_scenario
from thermoroute.common.baselines import run_solver
from thermoroute.common.compare import OPTIMUM, REFERENCE, compare, overload_cells, to_json, to_text
from thermoroute.common.evaluate import OVERLOAD_KINDS, overloads, plant_limits
from thermoroute.common.scenario import Scenario

NAME = "australia-heatwave-2020"


@functools.cache
def _heatwave() -> Scenario:
    return embedded_scenario(NAME)


@functools.cache
def _run(solver: str):
    return run_solver(solver, _heatwave())


def _over_capacity(solver: str) -> list[tuple[str, str]]:
    """(site, AEST start of the step) where ``solver``'s plan powers more GPUs than the
    derated cooling allows."""
    sc, ev = _heatwave(), _run(solver).evaluation
    excess = ev.steps.active_gpus - plant_limits(sc).max_gpus
    i, t = np.nonzero(excess > 1e-6 * sc.sites.gpus[:, None])
    return [(sc.sites.site_id[a], sc.times[b].strftime("%H:%M")) for a, b in zip(i, t, strict=True)]


HOBART_HOURS = [("hba", f"{h}:00") for h in range(12, 17)]


def test_unaware_plan_breaks_hobarts_derated_capacity_and_only_that() -> None:
    assert _over_capacity(REFERENCE) == HOBART_HOURS
    over = overloads(_heatwave(), _run(REFERENCE).evaluation)
    assert over["capacity"].site_hours == 5.0
    assert over["capacity"].it_kwh > 0 and over["capacity"].requests > 0
    assert not over["grid"].any and not over["water"].any


def test_the_optimum_keeps_within_every_limit_and_holds_hobart_at_its_derated_capacity() -> None:
    sc = _heatwave()
    over = overloads(sc, _run(OPTIMUM).evaluation)
    assert all(not over[kind].any for kind in OVERLOAD_KINDS), over
    # It binds: Hobart runs at its derated capacity in the five hot hours.
    hba = sc.sites.site_id.index("hba")
    limits = plant_limits(sc).max_gpus[hba]
    n = _run(OPTIMUM).evaluation.steps.active_gpus[hba]
    for _, start in HOBART_HOURS:
        t = [x.strftime("%H:%M") for x in sc.times].index(start)
        assert limits[t] < sc.sites.gpus[hba]
        assert n[t] == pytest.approx(limits[t], rel=1e-6)


def test_compare_prints_what_overloads_reports() -> None:
    sc = _heatwave()
    comparison = compare(sc, [OPTIMUM, REFERENCE])
    rows = {row.solver: row for row in comparison}
    for solver in (OPTIMUM, REFERENCE):
        reported = overloads(sc, _run(solver).evaluation)
        for kind in OVERLOAD_KINDS:
            for key, value in vars(reported[kind]).items():
                assert math.isclose(rows[solver].overloads[kind][key], value, rel_tol=1e-6), (
                    solver,
                    kind,
                    key,
                )
    _, body = overload_cells(comparison)
    cells = {row[0]: row[1:] for row in body}
    o = overloads(sc, _run(REFERENCE).evaluation)["capacity"]
    printed = f"5 h, {o.it_kwh:,.1f} kWh, {o.requests:,.0f} req"
    assert cells[REFERENCE] == [printed, "–", "–"] and cells[OPTIMUM] == ["–", "–", "–"]
    assert printed in to_text(comparison)  # what `thermoroute compare` prints
    doc = json.loads(to_json(comparison))
    by_solver = {row["solver"]: row for row in doc["rows"]}
    assert by_solver[REFERENCE]["overloads"]["capacity"]["site_hours"] == 5.0


def test_the_v1_view_is_the_scenario_without_its_plant() -> None:
    sc = _heatwave()
    v1 = sc.v1_view()
    assert v1.sites.plant_data() == () and v1.v1_view() is v1
    assert sc.sites.plant_data() == (
        "cooling_design_c",
        "cooling_derate_per_c",
        "cooling_min_fraction",
        "grid_limit_kw",
        "water_cap_l_per_day",
    )
    assert not overloads(v1, _run(REFERENCE).evaluation)["capacity"].any
