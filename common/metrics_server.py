"""One ``/metrics`` HTTP server for every process that exports Prometheus metrics.

The coordinator's observer (:mod:`thermoroute.coordinator.metrics`) and a site agent's own
metrics (:mod:`thermoroute.site_agent.metrics`) both serve their registry through
:func:`start_metrics_server`: plain HTTP from a daemon thread, bound to the address the caller
gives (loopback unless an operator chose otherwise), one thread per scrape and no access log.
:meth:`MetricsServer.linger` keeps the process alive after a run until Prometheus has scraped
the final values, or a deadline passes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

#: Histogram buckets (s) of one site's QP solve, the same wherever it is measured (the
#: coordinator's view and the site's own): a warm OSQP re-solve takes 0.05–0.3 ms, a cold
#: solve or a refactorisation after a ρ change tens of milliseconds.
SOLVE_SECONDS_BUCKETS: tuple[float, ...] = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip

__all__ = ["MetricsServer", "start_metrics_server"]


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
    def serving(self) -> bool:
        """Whether it still serves (False once :meth:`close` has stopped it)."""
        return self._thread.is_alive()

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


def start_metrics_server(port: int, addr: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` at ``http://addr:port/metrics``.

    Callers default ``addr`` to loopback: metrics reveal a run's progress and site names, so
    exposing them on other interfaces (``--metrics-addr 0.0.0.0``) is an explicit choice.

    Parameters
    ----------
    port : int
        TCP port; 0 picks a free one (read it back from :attr:`MetricsServer.port`).
    addr : str
        Bind address: an IPv4 or IPv6 literal or a host name (its first address).
    registry : CollectorRegistry
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
    family, host = _address_family(addr, port)
    app = make_wsgi_app(registry)
    holder: list[MetricsServer] = []

    def counting_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> _Body:
        body = _Body(app(environ, start_response))
        if environ.get("PATH_INFO", "/") in ("/", "/metrics"):
            body.on_close = holder[0]._record_scrape
        return body

    server_class = type("_FamilyServer", (_ThreadingWSGIServer,), {"address_family": family})
    httpd: WSGIServer = make_server(
        host, port, counting_app, server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=httpd.serve_forever, name=f"metrics-{host}:{port}", daemon=True
    )
    server = MetricsServer(
        host=host, port=int(httpd.server_address[1]), _httpd=httpd, _thread=thread
    )
    holder.append(server)
    thread.start()
    return server
