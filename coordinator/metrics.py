"""Prometheus metrics of the coordinator: an observer of a distributed run and a ``/metrics``
server.

:class:`CoordinatorMetrics` implements :class:`thermoroute.coordinator.events.RunObserver` and keeps
the product's metric families in a registry of their own (:data:`REGISTRY`, not
``prometheus_client``'s global one, so nothing else in the process leaks into the product's scrape).
:func:`start_metrics_server` serves a registry over HTTP from a daemon thread; its
:meth:`MetricsServer.linger` keeps the process alive after a run until Prometheus has scraped the
final values, or a deadline passes.

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

To bound label cardinality over a long receding-horizon simulation (one run per step), an
observer keeps the series of its last ``keep_runs`` runs and removes older ones.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, make_wsgi_app

from thermoroute.coordinator.events import IterationRecord, RunObserver, RunState
from thermoroute.coordinator.ipm import NAME as INTERIOR_POINT

log = logging.getLogger(__name__)

__all__ = [
    "OBJECTIVE_PARTS",
    "REGISTRY",
    "SOLVE_SECONDS_BUCKETS",
    "CoordinatorMetrics",
    "MetricsEndpoint",
    "MetricsServer",
    "linger",
    "notify_objective",
    "start_metrics_server",
]

#: The product's registry; the coordinator's metrics live here, never in the global one.
REGISTRY = CollectorRegistry(auto_describe=True)

#: Objective parts reported by :class:`thermoroute.coordinator.events.IterationRecord` (AUD).
OBJECTIVE_PARTS: tuple[str, ...] = ("energy_cost", "carbon", "water", "latency")

#: Histogram buckets (s) of one site's QP solve: a raw OSQP re-solve takes 0.05–0.3 ms and a
#: cold solve or a refactorisation after a ρ change tens of milliseconds.
SOLVE_SECONDS_BUCKETS: tuple[float, ...] = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip

# --------------------------------------------------------------------------------------------
# HTTP server


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape; daemon threads so a stuck scraper never blocks exit."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every few seconds would drown the progress display."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint (see :func:`start_metrics_server`).

    Attributes
    ----------
    host : str
        The address it is bound to.
    port : int
        The bound TCP port (the real one when port 0 was asked for).
    """

    host: str
    port: int
    _httpd: WSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _scrapes: list[float] = field(default_factory=list, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def scrapes(self) -> int:
        """Number of completed ``/metrics`` responses so far."""
        with self._cond:
            return len(self._scrapes)

    def _record_scrape(self) -> None:
        with self._cond:
            self._scrapes.append(time.monotonic())
            # Keep the list short: only the latest times matter to linger().
            del self._scrapes[:-64]
            self._cond.notify_all()

    def linger(self, seconds: float, *, scrapes: int = 1) -> bool:
        """Keep serving until ``scrapes`` more scrapes complete, for at most ``seconds``.

        Call it after a run's final values are set and before the process exits, so a
        Prometheus server polling every few seconds still sees the final residuals and
        objective (the ``--metrics-linger`` option of ``thermoroute run``).

        Parameters
        ----------
        seconds : float
            Deadline in seconds; 0 returns at once.
        scrapes : int
            Scrapes to wait for after the call.

        Returns
        -------
        bool
            Whether that many scrapes completed before the deadline.
        """
        deadline = time.monotonic() + max(seconds, 0.0)
        since = time.monotonic()
        with self._cond:
            while sum(1 for t in self._scrapes if t >= since) < scrapes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 1.0))
            return True

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5.0)
        self._httpd.server_close()


class _Body:
    """A WSGI response body that calls ``on_close`` once the server has sent it.

    WSGI servers call ``close()`` after the last byte is written, so a scrape is counted
    only when Prometheus has really received it (what :meth:`MetricsServer.linger` needs).
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.on_close: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()
        if self.on_close is not None:
            self.on_close()


def _address_family(addr: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and literal address of ``addr`` (IPv4, IPv6 or a host name)."""
    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default :data:`REGISTRY`) at ``http://addr:port/metrics``.

    The default address is loopback: metrics reveal the run's progress and site names, so
    exposing them on other interfaces (``--metrics-addr 0.0.0.0``) is an explicit choice.

    Parameters
    ----------
    port : int
        TCP port; 0 picks a free one (read it back from :attr:`MetricsServer.port`).
    addr : str
        Bind address.
    registry : CollectorRegistry, optional
        What to serve.

    Returns
    -------
    MetricsServer
        Serving from a daemon thread until :meth:`MetricsServer.close` or process exit.

    Raises
    ------
    OSError
        When the port is taken or the address is not local.
    """
    registry = REGISTRY if registry is None else registry
    family, host = _address_family(addr, port)
    app = make_wsgi_app(registry)
    holder: list[MetricsServer] = []

    def counting_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> _Body:
        body = _Body(app(environ, start_response))
        if environ.get("PATH_INFO", "/") in ("/", "/metrics"):
            body.on_close = holder[0]._record_scrape
        return body

    server_class = type("_FamilyServer", (_ThreadingWSGIServer,), {"address_family": family})
    httpd = make_server(host, port, counting_app, server_class, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=httpd.serve_forever, name=f"metrics-{host}:{port}", daemon=True
    )
    server = MetricsServer(
        host=host, port=int(httpd.server_address[1]), _httpd=httpd, _thread=thread
    )
    holder.append(server)
    thread.start()
    return server


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
        if server is None or not server._thread.is_alive():
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


# --------------------------------------------------------------------------------------------
# Metric families


@dataclass(frozen=True)
class _Families:
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


def _make_families(registry: CollectorRegistry) -> _Families:
    run, run_site = ("run",), ("run", "site")
    kw: dict[str, Any] = {"registry": registry}
    return _Families(
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
                               "Interior-point iterates evaluated.", run, **kw),
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
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_FAMILIES_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    with _FAMILIES_LOCK:
        fam = _FAMILIES.get(registry)
        if fam is None:
            fam = _make_families(registry)
            _FAMILIES[registry] = fam
        return fam


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# --------------------------------------------------------------------------------------------
# The observer


class CoordinatorMetrics:
    """A :class:`~thermoroute.coordinator.events.RunObserver` that exports a run as Prometheus
    metrics.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where the families live; default :data:`REGISTRY`.
    endpoint : MetricsEndpoint, optional
        If given, the observer starts (or reuses) a ``/metrics`` server on it the first time
        it receives an event, in whatever process it then lives in — so the observer can be
        handed to a coordinator running as a Ray actor.
    keep_runs : int
        Series of this many most recent runs are kept; older runs' series are removed.

    Notes
    -----
    The observer pickles to its configuration only (endpoint, ``keep_runs``); in the
    receiving process it registers with that process's :data:`REGISTRY`. Every method is
    cheap (a few dictionary updates) and never raises on odd values: NaN residuals are
    exported as NaN (a visible failure), NaN objective parts are left absent (sites report
    their objectives only at the end of a run).
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
        self._fam = _families(self.registry)
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
        fam.ipm_iterations.labels(run).inc()
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
