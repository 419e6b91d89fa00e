"""Can the fleet serve a scenario's demand at all? Necessary conditions, checked before any
solver runs, each failure reported as a problem with a precise message.
"""

from __future__ import annotations

import numpy as np

from thermoroute.common.errors import Problem
from thermoroute.common.evaluate import cooling_max_gpus
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_validation import ProblemCollector

__all__ = [
    "check_servable",
]


def check_servable(scenario: Scenario, sink: ProblemCollector | None = None) -> list[Problem]:
    """Report demand that the fleet cannot serve.

    Checks, in turn: a class with demand that no site can serve within its TTFT SLO; a
    region/class whose demand at some step exceeds the capacity of every site allowed to
    serve it; a step whose interactive load exceeds the whole fleet; batch volume beyond what
    is left over the horizon. These are necessary conditions; they catch the usual mistakes
    with a precise message before any solver runs.

    Problems name a row only when the scenario was read from files (``sink`` of
    :func:`~thermoroute.common.scenario_loading.load_scenario` knows their line numbers); for
    a scenario built in memory the row is ``None``.
    """
    own = sink is None
    sink = sink or ProblemCollector()
    allowed = scenario.allowed()
    sites, classes, regions = scenario.sites, scenario.classes, scenario.regions
    # Busy GPUs per site and step: u_max · gpus, derated by the cooling (model v1.1).
    capacity = sites.u_max[:, None] * cooling_max_gpus(scenario)
    derated = "cooling_design_c" in sites.plant_data()
    what, note = (" derated by the cooling,", " (derated by the cooling)") if derated else ("", "")
    demand = scenario.demand_rps
    for c in range(len(classes)):
        volume = demand[:, c].sum() + scenario.batch_requests[:, c].sum()
        if volume > 0 and not allowed[:, :, c].any():
            where = "demand.csv" if not classes.deferrable[c] else "batch.csv"
            sink.add(
                "classes.csv",
                f"class {classes.class_id[c]!r} has demand in {where} but "
                "no site can serve it within its TTFT SLO (rtt + prefill + max_wait > "
                "ttft_slo_ms for every site)",
                sink.lines.get(("classes.csv", c)),
                "ttft_slo_ms",
            )
            continue
        for j in range(len(regions)):
            if classes.deferrable[c]:
                continue
            load = demand[j, c]
            if not load.any():
                continue
            ok_sites = allowed[:, j, c]
            if not ok_sites.any():
                sink.add(
                    "demand.csv",
                    f"region {regions.region_id[j]!r} has demand for class "
                    f"{classes.class_id[c]!r} but no site reaches it within the "
                    f"{classes.ttft_slo_ms[c]:g} ms TTFT SLO",
                    None,
                    "requests_per_s",
                )
                continue
            per_site = scenario.gpu_s[ok_sites, c]
            best = (capacity[ok_sites] / per_site[:, None]).sum(axis=0)
            over = np.flatnonzero(load > best * (1 + 1e-9))
            if over.size:
                t = over[0]
                best = best[t]
                more = f" (and {over.size - 1} more steps)" if over.size > 1 else ""
                sink.add(
                    "demand.csv",
                    f"demand {load[t]:g} req/s of region "
                    f"{regions.region_id[j]!r}, class {classes.class_id[c]!r} at "
                    f"{scenario.times[t].isoformat()} is above the {best:g} req/s the "
                    f"sites within its SLO can serve{more}{note}",
                    sink.lines.get(("demand.csv", j, c, t)),
                    "requests_per_s",
                )
    interactive = classes.interactive
    # Lightest possible load: every request at the site where it costs the fewest GPU-s.
    min_gpu_s = np.where(allowed, scenario.gpu_s[:, None, :], np.inf).min(axis=0)  # (R, C)
    min_gpu_s = np.where(np.isfinite(min_gpu_s), min_gpu_s, 0.0)
    step_load = np.einsum("jct,jc->t", demand[:, interactive], min_gpu_s[:, interactive])
    fleet = capacity.sum(axis=0)
    over = np.flatnonzero(step_load > fleet * (1 + 1e-9))
    if over.size:
        t = over[0]
        sink.add(
            "demand.csv",
            f"interactive demand at {scenario.times[t].isoformat()} needs at "
            f"least {step_load[t]:g} busy GPUs, above the fleet's "
            f"{fleet[t]:g} "
            f"(u_max · gpus{what} summed over sites)",
            None,
            "requests_per_s",
        )
    batch_gpu_s = float((scenario.batch_requests * min_gpu_s).sum())
    spare_gpu_s = float((fleet - step_load).clip(min=0).sum() * scenario.step_seconds)
    if batch_gpu_s > spare_gpu_s * (1 + 1e-9):
        sink.add(
            "batch.csv",
            f"batch volume needs {batch_gpu_s:g} GPU-seconds, above the "
            f"{spare_gpu_s:g} left by interactive demand over the horizon",
            None,
            "requests",
        )
    return sink.problems if own else []
