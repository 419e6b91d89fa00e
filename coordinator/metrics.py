"""Prometheus metrics of a distributed run, from the coordinator's process.

:class:`CoordinatorMetrics` implements :class:`thermoroute.coordinator.events.RunObserver` and
sets the families of :mod:`thermoroute.coordinator.metric_families` (names, labels, units); given
a :class:`MetricsEndpoint`, it serves them over the one ``/metrics`` server implementation,
:mod:`thermoroute.common.metrics_server`, from whatever process it runs in (the coordinator
actor on Ray). :func:`linger` keeps that process's servers up after a run until Prometheus has
scraped the final values, or a deadline passes.

To bound label cardinality over a long receding-horizon simulation (one run per step), an
observer keeps the series of its last ``keep_runs`` runs and removes older ones.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from thermoroute.common.metrics_server import MetricsServer, start_metrics_server
from thermoroute.coordinator.events import IterationRecord, RunObserver, RunState
from thermoroute.coordinator.ipm import NAME as INTERIOR_POINT
from thermoroute.coordinator.metric_families import REGISTRY, families

log = logging.getLogger(__name__)

__all__ = ["CoordinatorMetrics", "MetricsEndpoint", "linger", "notify_objective"]


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where an observer should serve its metrics once it runs (picklable, e.g. for a Ray actor).

    Attributes
    ----------
    port : int
        TCP port (``--metrics-port``); 0 picks a free one.
    addr : str
        Bind address (``--metrics-addr``), loopback by default.
    """

    port: int
    addr: str = "127.0.0.1"


# Servers started by observers in this process, so that repeated runs (receding horizon)
# share one port instead of failing on "address in use".
_SERVERS: dict[MetricsEndpoint, MetricsServer] = {}
_SERVERS_LOCK = threading.Lock()


def _shared_server(endpoint: MetricsEndpoint, registry: CollectorRegistry) -> MetricsServer:
    with _SERVERS_LOCK:
        server = _SERVERS.get(endpoint)
        if server is None or not server.serving:
            server = start_metrics_server(endpoint.port, endpoint.addr, registry)
            _SERVERS[endpoint] = server
        return server


def linger(seconds: float, *, scrapes: int = 1) -> bool:
    """Keep this process's observer-started servers up until each is scraped, or ``seconds``.

    For the end of a run (``--metrics-linger``): call it in the process where the
    observers live — inside the coordinator actor on Ray — before that process exits.

    Returns
    -------
    bool
        Whether every server saw ``scrapes`` scrapes before the deadline (``True`` when
        there is no server).
    """
    deadline = time.monotonic() + max(seconds, 0.0)
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
    ok = True
    for server in servers:
        ok = server.linger(max(deadline - time.monotonic(), 0.0), scrapes=scrapes) and ok
    return ok


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class CoordinatorMetrics:
    """A :class:`~thermoroute.coordinator.events.RunObserver` that exports a run as Prometheus
    metrics.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where the families live; default :data:`~thermoroute.coordinator.metric_families.REGISTRY`.
    endpoint : MetricsEndpoint, optional
        If given, the observer starts (or reuses) a ``/metrics`` server on it the first time
        it receives an event, in whatever process it then lives in — so the observer can be
        handed to a coordinator running as a Ray actor.
    keep_runs : int
        Series of this many most recent runs are kept; older runs' series are removed.

    Notes
    -----
    The observer pickles to its configuration only (endpoint, ``keep_runs``); in the
    receiving process it registers with that process's
    :data:`~thermoroute.coordinator.metric_families.REGISTRY`. Every method is cheap (a few
    dictionary updates) and never raises on odd values: NaN residuals are exported as NaN (a
    visible failure), NaN objective parts are left absent (sites report their objectives only
    at the end of a run).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        endpoint: MetricsEndpoint | None = None,
        keep_runs: int = 2,
    ) -> None:
        if keep_runs < 1:
            raise ValueError("keep_runs must be >= 1")
        self.registry = REGISTRY if registry is None else registry
        self.endpoint = endpoint
        self.keep_runs = keep_runs
        self._fam = families(self.registry)
        self._lock = threading.Lock()
        self._runs: deque[str] = deque()
        self._sites: dict[str, set[str]] = {}
        self._parts: dict[str, set[str]] = {}
        self._server: MetricsServer | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Metric objects hold locks and cannot cross processes; rebuild from configuration.
        return (_rebuild, (self.endpoint, self.keep_runs))

    # -- serving -----------------------------------------------------------------------------

    @property
    def server(self) -> MetricsServer | None:
        """The server this observer started (after its first event), if it has an endpoint."""
        return self._server

    def ensure_serving(self) -> MetricsServer | None:
        """Start (or reuse) the endpoint's server now; ``None`` when there is no endpoint."""
        if self.endpoint is not None and self._server is None:
            self._server = _shared_server(self.endpoint, self.registry)
        return self._server

    # -- bookkeeping -------------------------------------------------------------------------

    def _touch(self, run_id: str) -> None:
        """Register ``run_id``; drop the series of runs beyond ``keep_runs``."""
        if run_id in self._sites:
            return
        self._runs.append(run_id)
        self._sites[run_id] = set()
        self._parts[run_id] = set()
        while len(self._runs) > self.keep_runs:
            self._forget(self._runs.popleft())

    def _forget(self, run_id: str) -> None:
        for fam in self._fam.run_only():
            _remove(fam, run_id)
        for site in self._sites.pop(run_id, set()):
            for fam in self._fam.per_site():
                _remove(fam, run_id, site)
        for part in self._parts.pop(run_id, set()):
            _remove(self._fam.objective_part, run_id, part)

    def forget(self, run_id: str) -> None:
        """Remove every series of ``run_id`` now."""
        with self._lock:
            if run_id in self._sites:
                self._runs.remove(run_id)
                self._forget(run_id)

    def _site(self, run_id: str, site: str) -> None:
        self._sites[run_id].add(site)

    # -- RunObserver -------------------------------------------------------------------------

    def on_state(self, run_id: str, state: RunState) -> None:
        """Export the run's lifecycle state (``thermoroute_run_state``)."""
        self.ensure_serving()
        with self._lock:
            self._touch(run_id)
            self._fam.state.labels(run_id).state(RunState(state).value)
            if state == RunState.STARTING:
                # Present from the start so rate()/increase() see the first increment.
                self._fam.iterations.labels(run_id)
                self._fam.accelerated.labels(run_id)
                self._fam.late_now.labels(run_id).set(0)

    def _ipm_iteration(self, record: IterationRecord) -> None:
        fam, run = self._fam, record.run_id
        fam.ipm_iteration.labels(run).set(record.iteration)
        # Iterate 0 is the start, not an iteration: the counter agrees with the summary's
        # ``iterations`` (convergence.csv has one row more).
        iterations = fam.ipm_iterations.labels(run)
        if record.iteration > 0:
            iterations.inc()
        fam.ipm_mu.labels(run).set(record.mu)
        fam.ipm_coupling.labels(run).set(record.primal_residual)
        fam.ipm_eps_coupling.labels(run).set(record.eps_primal)
        if _finite(record.step):  # the last iterate takes no step
            fam.ipm_step.labels(run).set(record.step)
        fam.ipm_pending.labels(run).set(record.dual_residual)
        fam.ipm_elapsed.labels(run).set(record.elapsed_s)
        fam.ipm_last_ts.labels(run).set(time.time())

    def on_iteration(self, record: IterationRecord) -> None:
        """Export one iteration: its method's figures (residuals, tolerances, ρ; or μ, the
        coupling residual and the step), objective, site solve times, late and crashed
        sites."""
        self.ensure_serving()
        fam, run = self._fam, record.run_id
        with self._lock:
            self._touch(run)
            if record.method == INTERIOR_POINT:
                self._ipm_iteration(record)
            else:
                fam.iteration.labels(run).set(record.iteration)
                fam.iterations.labels(run).inc()
                acc = fam.accelerated.labels(run)
                if record.accelerated:
                    acc.inc()
                fam.primal.labels(run).set(record.primal_residual)
                fam.dual.labels(run).set(record.dual_residual)
                fam.eps_primal.labels(run).set(record.eps_primal)
                fam.eps_dual.labels(run).set(record.eps_dual)
                fam.rho.labels(run).set(record.rho)
                fam.elapsed.labels(run).set(record.elapsed_s)
                fam.last_ts.labels(run).set(time.time())
            self._set_objective(run, record.objective_aud, record.objective_parts)
            for site, seconds in record.site_solve_s.items():
                if not _finite(seconds) or seconds < 0:
                    continue
                self._site(run, site)
                fam.solve.labels(run, site).observe(seconds)
                fam.last_solve.labels(run, site).set(seconds)
            fam.late_now.labels(run).set(len(record.late_sites))
            for site in record.late_sites:
                self._site(run, site)
                fam.late.labels(run, site).inc()
            for site in record.crashed_sites:
                self._site(run, site)
                fam.crashes.labels(run, site).inc()

    def on_site_timeout(self, run_id: str, site_id: str) -> None:
        """Count a site timeout (``thermoroute_site_timeouts_total``)."""
        self.ensure_serving()
        with self._lock:
            self._touch(run_id)
            self._site(run_id, site_id)
            self._fam.timeouts.labels(run_id, site_id).inc()

    # -- beyond the RunObserver protocol -----------------------------------------------------

    def on_objective(
        self, run_id: str, objective_aud: float, parts: Mapping[str, float] | None = None
    ) -> None:
        """Export a run's objective and its parts once known (at the end, from site totals).

        The ADMM loop reports ``objective_aud = NaN`` while it runs (a site sends only its
        served demand); the runner calls this after collecting the sites' totals.
        """
        with self._lock:
            self._touch(run_id)
            self._set_objective(run_id, objective_aud, parts or {})

    def _set_objective(self, run: str, total: float, parts: Mapping[str, float]) -> None:
        if _finite(total):
            self._fam.objective.labels(run).set(total)
        for part, value in parts.items():
            if _finite(value):
                self._parts[run].add(part)
                self._fam.objective_part.labels(run, part).set(value)


def _rebuild(endpoint: MetricsEndpoint | None, keep_runs: int) -> CoordinatorMetrics:
    return CoordinatorMetrics(endpoint=endpoint, keep_runs=keep_runs)


def _remove(family: Any, *labels: str) -> None:
    """Remove one label set (a no-op when it was never created)."""
    family.remove(*labels)


def notify_objective(
    observers: Iterable[RunObserver],
    run_id: str,
    objective_aud: float,
    parts: Mapping[str, float] | None = None,
) -> None:
    """Call ``on_objective`` on every observer that has it; never raises.

    The :class:`~thermoroute.coordinator.events.RunObserver` protocol has no end-of-run objective
    event (sites report totals only at the end); observers that want it, like
    :class:`CoordinatorMetrics`, implement ``on_objective(run_id, objective_aud, parts)``.
    """
    for observer in observers:
        method = getattr(observer, "on_objective", None)
        if not callable(method):
            continue
        try:
            method(run_id, objective_aud, parts or {})
        except Exception:  # an observer must never break a run (events.py contract)
            log.exception("observer %r failed in on_objective", observer)
