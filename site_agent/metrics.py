"""A site agent's own Prometheus metrics, served on the site's node.

What a site knows about its own subproblem — how long its QP solves take, how many OSQP
iterations they need, its local objective and the parts of it — is exported here, from the
node that holds the site's private data, never through the coordinator. A site group
serves them only where its node sets ``THERMOROUTE_AGENT_METRICS_PORT``, bound to loopback
unless ``THERMOROUTE_AGENT_METRICS_ADDR`` says otherwise (the site's own Prometheus scrapes
them there), and exports the local objective and its parts — the site's costs, private
figures — only with ``THERMOROUTE_AGENT_METRICS_ECONOMICS=1``: each an explicit choice of
the site's operator.

Usage inside a site agent (one process may host a group of sites; the ``site`` label
tells them apart)::

    from thermoroute.site_agent.metrics import SiteAgentMetrics

    metrics = SiteAgentMetrics()        # families in AGENT_REGISTRY (one per process)
    metrics.serve_from_env()            # serves only if the node sets
                                        # THERMOROUTE_AGENT_METRICS_PORT (and _ADDR)
    ...
    served = agent.solve(k, rho, target, eps, best)        # after each solve:
    metrics.record_telemetry(run_id, agent.telemetry())    # SiteAgent.telemetry() snapshot

or, without a telemetry snapshot, ``metrics.observe_solve(run_id, site_id, seconds=…,
iteration=k, osqp_iterations=…, solved=…, refactorized=…)`` and
``metrics.set_objective(run_id, site_id, {"energy_cost": …, "carbon": …, "water": …,
"latency": …})``. ``metrics.serve(port, addr)`` starts a server explicitly.

Exported families (labels ``run`` and ``site``, plus ``part``):

==============================================  =========  ==================
name                                            type       labels
==============================================  =========  ==================
``thermoroute_agent_solve_seconds``             histogram  run, site
``thermoroute_agent_last_solve_seconds``        gauge      run, site
``thermoroute_agent_last_osqp_iterations``      gauge      run, site
``thermoroute_agent_osqp_iterations_total``     counter    run, site
``thermoroute_agent_solve_failures_total``      counter    run, site
``thermoroute_agent_refactorizations_total``    counter    run, site
``thermoroute_agent_admm_iteration``            gauge      run, site
``thermoroute_agent_objective_aud``             gauge      run, site
``thermoroute_agent_objective_part_aud``        gauge      run, site, part
==============================================  =========  ==================

The ``thermoroute_agent_`` prefix keeps these apart from the coordinator's
``thermoroute_site_*`` families (the same solve seen from the two ends), so a Prometheus
scraping both never adds one to the other.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from thermoroute.common.metrics_server import (
    SOLVE_SECONDS_BUCKETS,
    MetricsServer,
    start_metrics_server,
)

__all__ = [
    "ADDR_ENV",
    "AGENT_REGISTRY",
    "DEFAULT_AGENT_METRICS_PORT",
    "ECONOMICS_ENV",
    "PORT_ENV",
    "SiteAgentMetrics",
    "start_agent_metrics_server",
]

#: The site agent's registry (not prometheus_client's global one).
AGENT_REGISTRY = CollectorRegistry(auto_describe=True)

#: Default port of a site agent's ``/metrics`` (the coordinator's is usually 9464).
DEFAULT_AGENT_METRICS_PORT = 9465

#: Environment of a site VM (inherited by ``ray start``'s workers) that turns the agent's
#: metrics server on: the port, and the bind address (default loopback).
PORT_ENV = "THERMOROUTE_AGENT_METRICS_PORT"
ADDR_ENV = "THERMOROUTE_AGENT_METRICS_ADDR"
#: ``1`` exports the sites' objective and its parts too (their costs: private figures).
ECONOMICS_ENV = "THERMOROUTE_AGENT_METRICS_ECONOMICS"


# This process's servers by (address, port), so that the agents it hosts share one endpoint.
_SERVERS: dict[tuple[str, int], MetricsServer] = {}
_SERVERS_LOCK = threading.Lock()


def start_agent_metrics_server(
    port: int = DEFAULT_AGENT_METRICS_PORT,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve the agent registry at ``http://addr:port/metrics`` (once per process and port).

    A second call with the same address and port returns the running server (until it is
    closed), so several agents hosted by one process share one endpoint. Port 0 always starts
    a new server on a free port. The server is :mod:`thermoroute.common.metrics_server`'s, the
    coordinator's too.

    Raises
    ------
    OSError
        When the port is taken by another process.
    """
    registry = AGENT_REGISTRY if registry is None else registry
    with _SERVERS_LOCK:
        running = _SERVERS.get((addr, port)) if port != 0 else None
        if running is not None and running.serving:
            return running
        server = start_metrics_server(port, addr, registry)
        _SERVERS[(addr, server.port)] = server
        return server


@dataclass(frozen=True)
class _Families:
    solve: Histogram
    last_solve: Gauge
    osqp_iter: Gauge
    osqp_iter_total: Counter
    failures: Counter
    refactor: Counter
    admm_iteration: Gauge
    objective: Gauge
    objective_part: Gauge

    def per_site(self) -> tuple[Any, ...]:
        return (
            self.solve, self.last_solve, self.osqp_iter, self.osqp_iter_total, self.failures,
            self.refactor, self.admm_iteration, self.objective,
        )  # fmt: skip


def _make_families(registry: CollectorRegistry) -> _Families:
    rs = ("run", "site")
    kw: dict[str, Any] = {"registry": registry}
    return _Families(
        solve=Histogram("thermoroute_agent_solve_seconds",
                        "Wall time of one local QP solve.", rs,
                        buckets=SOLVE_SECONDS_BUCKETS, **kw),
        last_solve=Gauge("thermoroute_agent_last_solve_seconds",
                         "Wall time of the last local QP solve.", rs, **kw),
        osqp_iter=Gauge("thermoroute_agent_last_osqp_iterations",
                        "OSQP iterations of the last local solve.", rs, **kw),
        osqp_iter_total=Counter("thermoroute_agent_osqp_iterations",
                                "OSQP iterations summed over the run's local solves.", rs, **kw),
        failures=Counter("thermoroute_agent_solve_failures",
                         "Local solves that did not reach OSQP's 'solved' status.", rs, **kw),
        refactor=Counter("thermoroute_agent_refactorizations",
                         "QP refactorisations (after a change of rho).", rs, **kw),
        admm_iteration=Gauge("thermoroute_agent_admm_iteration",
                             "Last ADMM iteration this site answered.", rs, **kw),
        objective=Gauge("thermoroute_agent_objective_aud",
                        "The site's local objective (AUD) at its last reported solution.",
                        rs, **kw),
        objective_part=Gauge("thermoroute_agent_objective_part_aud",
                             "The site's local objective by part (AUD).",
                             ("run", "site", "part"), **kw),
    )  # fmt: skip


_FAMILIES: dict[int, tuple[CollectorRegistry, _Families]] = {}
_FAMILIES_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    # Keyed by id but holding the registry, so the id cannot be reused while cached.
    with _FAMILIES_LOCK:
        entry = _FAMILIES.get(id(registry))
        if entry is None:
            entry = (registry, _make_families(registry))
            _FAMILIES[id(registry)] = entry
        return entry[1]


class SiteAgentMetrics:
    """Local metrics of the sites hosted by one agent process.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Default :data:`AGENT_REGISTRY`.
    keep_runs : int
        Series of this many most recent runs are kept; older ones are removed (bounded
        cardinality over a receding-horizon simulation).

    Notes
    -----
    Methods are cheap and thread-safe (an agent may solve its sites in threads). Non-finite
    or negative timings and non-finite objective values are ignored rather than exported.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        keep_runs: int = 2,
        economics: bool = False,
    ) -> None:
        if keep_runs < 1:
            raise ValueError("keep_runs must be >= 1")
        #: Whether the sites' costs are exported (the operator's opt-in).
        self.economics = economics
        self.registry = AGENT_REGISTRY if registry is None else registry
        self.keep_runs = keep_runs
        self._fam = _families(self.registry)
        self._lock = threading.Lock()
        self._runs: deque[str] = deque()
        self._sites: dict[str, set[str]] = {}
        self._parts: dict[str, set[tuple[str, str]]] = {}
        self.server: MetricsServer | None = None
        self._seen: dict[tuple[str, str], tuple[int | None, int]] = {}

    def serve(
        self, port: int = DEFAULT_AGENT_METRICS_PORT, addr: str = "127.0.0.1"
    ) -> MetricsServer:
        """Start (or reuse) this process's ``/metrics`` server; see
        :func:`start_agent_metrics_server`."""
        self.server = start_agent_metrics_server(port, addr, self.registry)
        return self.server

    def serve_from_env(self, environ: Mapping[str, str] | None = None) -> MetricsServer | None:
        """Serve if the node asks for it: ``THERMOROUTE_AGENT_METRICS_PORT`` (and ``_ADDR``).

        The site operator sets these in the environment of ``ray start`` on the site's VM;
        Ray's worker processes inherit it, so the agent placed there serves its metrics
        where its operator chose, without the coordinator knowing. Unset: no server.

        Raises
        ------
        ValueError
            If the port is not an integer in 0–65535.
        """
        env = os.environ if environ is None else environ
        raw = env.get(PORT_ENV, "").strip()
        if not raw:
            return None
        try:
            port = int(raw)
        except ValueError:
            raise ValueError(f"{PORT_ENV}={raw!r} is not a port number") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"{PORT_ENV}={port} is outside 0-65535")
        return self.serve(port, env.get(ADDR_ENV, "").strip() or "127.0.0.1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SiteAgentMetrics | None:
        """The node's metrics if its operator asked for them (:meth:`serve_from_env`), with
        the sites' costs only if ``THERMOROUTE_AGENT_METRICS_ECONOMICS=1``; else None."""
        env = os.environ if environ is None else environ
        metrics = cls(economics=env.get(ECONOMICS_ENV, "").strip() == "1")
        return metrics if metrics.serve_from_env(env) is not None else None

    def _touch(self, run_id: str, site_id: str) -> None:
        if run_id not in self._sites:
            self._runs.append(run_id)
            self._sites[run_id] = set()
            self._parts[run_id] = set()
            while len(self._runs) > self.keep_runs:
                old = self._runs.popleft()
                self._seen = {k: v for k, v in self._seen.items() if k[0] != old}
                for site in self._sites.pop(old, set()):
                    for fam in self._fam.per_site():
                        fam.remove(old, site)
                for site, part in self._parts.pop(old, set()):
                    self._fam.objective_part.remove(old, site, part)
        self._sites[run_id].add(site_id)

    def observe_solve(
        self,
        run_id: str,
        site_id: str,
        *,
        seconds: float,
        iteration: int | None = None,
        osqp_iterations: int | None = None,
        solved: bool = True,
        refactorized: bool = False,
    ) -> None:
        """Record one local solve.

        Parameters
        ----------
        run_id, site_id : str
            Labels.
        seconds : float
            Wall time of the solve (s).
        iteration : int, optional
            The ADMM iteration it answered.
        osqp_iterations : int, optional
            OSQP's iteration count (``info.iter``); omit for a closed-form solve.
        solved : bool
            Whether OSQP reported ``solved`` (otherwise counted as a failure).
        refactorized : bool
            Whether the QP matrix was refactorised for this solve (ρ changed).
        """
        fam = self._fam
        with self._lock:
            self._touch(run_id, site_id)
            if math.isfinite(seconds) and seconds >= 0:
                fam.solve.labels(run_id, site_id).observe(seconds)
                fam.last_solve.labels(run_id, site_id).set(seconds)
            if osqp_iterations is not None and osqp_iterations >= 0:
                fam.osqp_iter.labels(run_id, site_id).set(osqp_iterations)
                fam.osqp_iter_total.labels(run_id, site_id).inc(osqp_iterations)
            failures = fam.failures.labels(run_id, site_id)
            if not solved:
                failures.inc()
            refactor = fam.refactor.labels(run_id, site_id)
            if refactorized:
                refactor.inc()
            if iteration is not None:
                fam.admm_iteration.labels(run_id, site_id).set(iteration)

    def set_objective(
        self,
        run_id: str,
        site_id: str,
        parts: Mapping[str, float],
        total: float | None = None,
    ) -> None:
        """Export the site's local objective parts (AUD) and total (default: their sum)."""
        fam = self._fam
        with self._lock:
            self._touch(run_id, site_id)
            finite = {k: float(v) for k, v in parts.items() if math.isfinite(float(v))}
            for part, value in finite.items():
                self._parts[run_id].add((site_id, part))
                fam.objective_part.labels(run_id, site_id, part).set(value)
            value = sum(finite.values()) if total is None else float(total)
            if math.isfinite(value) and (total is not None or finite):
                fam.objective.labels(run_id, site_id).set(value)

    def record_telemetry(self, run_id: str, telemetry: Mapping[str, Any]) -> None:
        """Export a :meth:`thermoroute.site_agent.agent.SiteAgent.telemetry` snapshot.

        Call it after each solve (or periodically): a snapshot whose ``iteration`` was
        already recorded is ignored, so repeated calls never double-count; the cumulative
        ``refactorizations`` count is turned into increments.

        Parameters
        ----------
        run_id : str
        telemetry : mapping
            With ``site_id``, ``iteration``, ``solve_s``, ``osqp_iterations``, ``solved``,
            ``refactorizations`` and ``objective`` (parts in AUD, optionally with their
            ``total``); an unregistered agent's
            snapshot (``registered`` false) is ignored.
        """
        if not telemetry.get("registered", True) or telemetry.get("iteration") is None:
            return
        site = str(telemetry["site_id"])
        iteration = int(telemetry["iteration"])
        refactor_now = int(telemetry.get("refactorizations") or 0)
        with self._lock:
            last_iteration, refactor_before = self._seen.get((run_id, site), (None, 0))
            if last_iteration == iteration:
                return
            self._seen[(run_id, site)] = (iteration, refactor_now)
        osqp = telemetry.get("osqp_iterations")
        self.observe_solve(
            run_id,
            site,
            seconds=float(telemetry.get("solve_s", math.nan)),
            iteration=iteration,
            osqp_iterations=int(osqp) if osqp is not None else None,
            solved=bool(telemetry.get("solved", True)),
            refactorized=False,
        )
        if refactor_now > refactor_before:
            with self._lock:
                self._fam.refactor.labels(run_id, site).inc(refactor_now - refactor_before)
        parts = telemetry.get("objective")
        if self.economics and isinstance(parts, Mapping) and parts:
            values = {str(k): float(v) for k, v in parts.items()}
            total = values.pop("total", None)  # local_objective() adds the sum as "total"
            self.set_objective(run_id, site, values, total)
