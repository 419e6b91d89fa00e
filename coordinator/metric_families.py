"""The coordinator's Prometheus metric families, in a registry of the product's own.

:data:`REGISTRY` is not ``prometheus_client``'s global one, so nothing else in the process
leaks into the product's scrape. :func:`families` registers the families once per registry;
:class:`thermoroute.coordinator.metrics.CoordinatorMetrics` sets them from a run's events.

Exported families (labels ``run`` and ``site`` only, plus ``part`` for the four objective
parts and the state-set label of ``thermoroute_run_state``; never per request):

===============================================  =========  ==========================
name                                             type       labels
===============================================  =========  ==========================
``thermoroute_admm_iteration``                   gauge      run
``thermoroute_admm_iterations_total``            counter    run
``thermoroute_admm_accelerated_iterations_total``  counter  run
``thermoroute_admm_primal_residual``             gauge      run
``thermoroute_admm_dual_residual``               gauge      run
``thermoroute_admm_primal_tolerance``            gauge      run
``thermoroute_admm_dual_tolerance``              gauge      run
``thermoroute_admm_rho``                         gauge      run
``thermoroute_admm_elapsed_seconds``             gauge      run
``thermoroute_admm_last_iteration_timestamp_seconds``  gauge  run
``thermoroute_objective_aud``                    gauge      run
``thermoroute_objective_part_aud``               gauge      run, part
``thermoroute_site_solve_seconds``               histogram  run, site
``thermoroute_site_last_solve_seconds``          gauge      run, site
``thermoroute_admm_late_sites``                  gauge      run
``thermoroute_late_sites_total``                 counter    run, site
``thermoroute_site_timeouts_total``              counter    run, site
``thermoroute_site_crashes_total``               counter    run, site
``thermoroute_run_state``                        stateset   run
``thermoroute_ipm_iteration``                    gauge      run
``thermoroute_ipm_iterations_total``             counter    run
``thermoroute_ipm_mu``                           gauge      run
``thermoroute_ipm_coupling_residual``            gauge      run
``thermoroute_ipm_coupling_tolerance``           gauge      run
``thermoroute_ipm_step``                         gauge      run
``thermoroute_ipm_sites_dual_pending``           gauge      run
``thermoroute_ipm_elapsed_seconds``              gauge      run
``thermoroute_ipm_last_iteration_timestamp_seconds``  gauge  run
===============================================  =========  ==========================

A run exports the families of its method (``thermoroute_admm_*`` or ``thermoroute_ipm_*``)
and the shared ones (objective, site solve times, late sites, crashes, state).

Residuals, tolerances and ρ are in the run's scaled coupling units (dimensionless), so they
carry no unit suffix. The objective total and its parts are separate families so that
``sum(thermoroute_objective_part_aud)`` is meaningful and never double-counts the total.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from thermoroute.common.metrics_server import SOLVE_SECONDS_BUCKETS
from thermoroute.coordinator.events import RunState

__all__ = ["REGISTRY", "Families", "families"]

#: The product's registry; the coordinator's metrics live here, never in the global one.
REGISTRY = CollectorRegistry(auto_describe=True)


@dataclass(frozen=True)
class Families:
    """The coordinator's metric families in one registry (names and labels: module docstring)."""

    iteration: Gauge
    iterations: Counter
    accelerated: Counter
    primal: Gauge
    dual: Gauge
    eps_primal: Gauge
    eps_dual: Gauge
    rho: Gauge
    elapsed: Gauge
    last_ts: Gauge
    objective: Gauge
    objective_part: Gauge
    solve: Histogram
    last_solve: Gauge
    late_now: Gauge
    late: Counter
    timeouts: Counter
    crashes: Counter
    state: Enum
    ipm_iteration: Gauge
    ipm_iterations: Counter
    ipm_mu: Gauge
    ipm_coupling: Gauge
    ipm_eps_coupling: Gauge
    ipm_step: Gauge
    ipm_pending: Gauge
    ipm_elapsed: Gauge
    ipm_last_ts: Gauge

    def run_only(self) -> tuple[Any, ...]:
        """Families labelled by ``run`` alone."""
        return (
            self.iteration, self.iterations, self.accelerated, self.primal, self.dual,
            self.eps_primal, self.eps_dual, self.rho, self.elapsed, self.last_ts,
            self.objective, self.late_now, self.state, self.ipm_iteration, self.ipm_iterations,
            self.ipm_mu, self.ipm_coupling, self.ipm_eps_coupling, self.ipm_step,
            self.ipm_pending, self.ipm_elapsed, self.ipm_last_ts,
        )  # fmt: skip

    def per_site(self) -> tuple[Any, ...]:
        """Families labelled by ``run`` and ``site``."""
        return (self.solve, self.last_solve, self.late, self.timeouts, self.crashes)


def _make_families(registry: CollectorRegistry) -> Families:
    run, run_site = ("run",), ("run", "site")
    kw: dict[str, Any] = {"registry": registry}
    return Families(
        iteration=Gauge("thermoroute_admm_iteration",
                        "Index of the last completed ADMM iteration (0-based).", run, **kw),
        iterations=Counter("thermoroute_admm_iterations",
                           "ADMM iterations completed.", run, **kw),
        accelerated=Counter("thermoroute_admm_accelerated_iterations",
                            "ADMM iterations whose accelerated (Anderson) step was accepted.",
                            run, **kw),
        primal=Gauge("thermoroute_admm_primal_residual",
                     "Primal residual ||p - z|| of the last iteration (scaled coupling units).",
                     run, **kw),
        dual=Gauge("thermoroute_admm_dual_residual",
                   "Dual residual rho*||z - z_prev|| of the last iteration (scaled units).",
                   run, **kw),
        eps_primal=Gauge("thermoroute_admm_primal_tolerance",
                         "Stopping tolerance of the primal residual (Boyd eps_abs/eps_rel).",
                         run, **kw),
        eps_dual=Gauge("thermoroute_admm_dual_tolerance",
                       "Stopping tolerance of the dual residual (Boyd eps_abs/eps_rel).",
                       run, **kw),
        rho=Gauge("thermoroute_admm_rho", "ADMM penalty rho (scaled coupling units).", run,
                  **kw),
        elapsed=Gauge("thermoroute_admm_elapsed_seconds",
                      "Wall time since the run's first iteration started.", run, **kw),
        last_ts=Gauge("thermoroute_admm_last_iteration_timestamp_seconds",
                      "Unix time of the last completed iteration (staleness alerts).", run,
                      **kw),
        objective=Gauge("thermoroute_objective_aud",
                        "Objective J of the run (AUD); absent until the sites report totals.",
                        run, **kw),
        objective_part=Gauge("thermoroute_objective_part_aud",
                             "Objective by part (AUD): energy_cost, carbon, water, latency.",
                             ("run", "part"), **kw),
        solve=Histogram("thermoroute_site_solve_seconds",
                        "Seconds a site took to answer an iteration, as the coordinator saw it.",
                        run_site, buckets=SOLVE_SECONDS_BUCKETS, **kw),
        last_solve=Gauge("thermoroute_site_last_solve_seconds",
                         "Seconds a site took to answer its last iteration (coordinator view).",
                         run_site, **kw),
        late_now=Gauge("thermoroute_admm_late_sites",
                       "Sites that missed the last iteration's deadline.", run, **kw),
        late=Counter("thermoroute_late_sites",
                     "Iterations in which a site missed the deadline and its last proposal "
                     "was reused.", run_site, **kw),
        timeouts=Counter("thermoroute_site_timeouts",
                         "Site timeouts reported by the coordinator.", run_site, **kw),
        crashes=Counter("thermoroute_site_crashes",
                        "Crashes of a site's agent process (restarted by Ray and registered "
                        "again).", run_site, **kw),
        state=Enum("thermoroute_run_state", "Lifecycle state of a run.", run,
                   states=[s.value for s in RunState], **kw),
        ipm_iteration=Gauge("thermoroute_ipm_iteration",
                            "Index of the interior point's last iterate (0: the start).", run,
                            **kw),
        ipm_iterations=Counter("thermoroute_ipm_iterations",
                               "Interior-point iterations done (steps taken from the start, "
                               "iterate 0).", run, **kw),
        ipm_mu=Gauge("thermoroute_ipm_mu",
                     "Mean complementarity mu of the last iterate (scaled units).", run, **kw),
        ipm_coupling=Gauge("thermoroute_ipm_coupling_residual",
                           "Coupling (primal) residual ||sum A x - b|| (scaled units).", run,
                           **kw),
        ipm_eps_coupling=Gauge("thermoroute_ipm_coupling_tolerance",
                               "Stopping tolerance of the coupling residual.", run, **kw),
        ipm_step=Gauge("thermoroute_ipm_step",
                       "Step length taken from the last iterate (0-1).", run, **kw),
        ipm_pending=Gauge("thermoroute_ipm_sites_dual_pending",
                          "Sites whose dual residual is not yet within tolerance.", run, **kw),
        ipm_elapsed=Gauge("thermoroute_ipm_elapsed_seconds",
                          "Wall time since the run's first round started.", run, **kw),
        ipm_last_ts=Gauge("thermoroute_ipm_last_iteration_timestamp_seconds",
                          "Unix time of the last iterate (staleness alerts).", run, **kw),
    )  # fmt: skip


# One set of families per registry: prometheus_client refuses to register a name twice.
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, Families] = weakref.WeakKeyDictionary()
_FAMILIES_LOCK = threading.Lock()


def families(registry: CollectorRegistry) -> Families:
    """The families registered in ``registry``, registering them on the first call."""
    with _FAMILIES_LOCK:
        fam = _FAMILIES.get(registry)
        if fam is None:
            fam = _make_families(registry)
            _FAMILIES[registry] = fam
        return fam
