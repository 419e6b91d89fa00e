"""``thermoroute route haproxy``: the published plan made into an HAProxy's server weights.

The follower polls a running service's ``GET /plan`` (the current step) and ``GET /status``
(the fleet's sites and their state) with the service's bearer token, and sets the weights
of an HAProxy (2.6+) through its runtime API (the ``stats socket … level admin``, a UNIX
socket or ``host:port``): one backend per region and class, one server per site, each
server's weight the site's share of the region's requests of the class, rounded by
:func:`weights_from_shares` to integers summing to :data:`WEIGHT_TOTAL`.

What it never does (the first two said in a log line each time):

- apply a plan the service marks ``degraded`` (some site planned with a stale forecast or
  is rejoining) or ``stale`` (older than the service's maximum plan age): every server keeps
  its weight until a whole, fresh plan is published — the other sites' shares were decided
  together with the degraded site's, so the follower applies all of a plan or none of it;
- zero a whole backend: a backend whose weights would all be 0 (the plan has no demand of
  its region and class, or none of its sites is in the backend) keeps its weights;
- touch a server that stands for no site of the fleet (a backup, a maintenance page).

The mapping of regions, classes and sites to backend and server names is a small TOML file
(:func:`load_config`, docs/serve.md "Routing through HAProxy").

Every line it logs is an event of :mod:`thermoroute.service_log` (``start``, ``applied``,
``held``, ``no_plan``, ``no_server``, ``backend_kept``, ``refused``, ``unreachable``,
``shutdown``; their keys are in docs/serve.md), so ``--log-format json`` gives each as one
JSON object. Like ``serve``'s, a line names site ids and states, backends, counts and the
plan's cycle and step, never what a site holds.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from thermoroute.service_log import log_event
from thermoroute.signals import Terminated
from thermoroute.toml_files import read_toml

log = logging.getLogger("thermoroute.route")

#: What the weights of a backend's servers add up to. HAProxy's weights are integers 0–256
#: (``set weight``; 0 drains a server): the largest, so that one site serving all of a
#: backend gets the full 256 and the rounding is as fine as it can be.
WEIGHT_TOTAL = 256
#: A backend's or server's name as HAProxy accepts it (letters, digits, ``-_.:``).
_HAPROXY_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
#: Seconds a request to the service or a runtime API command may take.
TIMEOUT_S = 5.0
#: Which peer a line is about (the ``peer`` key of ``unreachable`` and ``refused``).
SERVICE, HAPROXY = "service", "haproxy"


class RouteConfigError(ValueError):
    """The mapping file is unusable; the message is one line naming the file and the key."""


class Unreachable(OSError):
    """The service or the HAProxy did not answer (the follower retries with back-off).

    Parameters
    ----------
    peer : str
        :data:`SERVICE` or :data:`HAPROXY`: which did not answer.
    address : str
        Where it was asked: the plan API's ``host:port``, the runtime API's socket.
    reason : str
        Why, in a few words (``Connection refused``).
    """

    def __init__(self, peer: str, address: str, reason: str) -> None:
        who = "the service" if peer == SERVICE else "HAProxy's runtime API"
        super().__init__(f"{who} at {address}: {reason}")
        self.peer, self.address, self.reason = peer, address, reason


class Refused(RuntimeError):
    """The service or the HAProxy answered, but not as asked (a wrong token, an unknown
    backend): retrying would not help.

    Parameters
    ----------
    message : str
        One line: who refused what, and its answer.
    peer : str
        :data:`SERVICE` or :data:`HAPROXY`.
    address : str
        The plan API's ``host:port`` or the runtime API's address.
    backend : str or None
        The backend HAProxy refused (``None``: the service refused).
    """

    def __init__(
        self, message: str, *, peer: str, address: str, backend: str | None = None
    ) -> None:
        super().__init__(message)
        self.peer, self.address, self.backend = peer, address, backend


@dataclass(frozen=True)
class RouteConfig:
    """Which HAProxy backend serves a region's class, and which server stands for a site.

    Attributes
    ----------
    backends : dict of (str, str) to str
        ``(region_id, class_id)`` → backend name; ``""`` leaves that region and class out
        (not routed by this HAProxy). Unnamed pairs: ``be_<region>_<class>``.
    servers : dict of str to str
        ``site_id`` → server name (the same in every backend). Unnamed sites: the site id.
    """

    backends: dict[tuple[str, str], str] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)

    def backend_of(self, region_id: str, class_id: str) -> str:
        """The backend of ``region_id``'s requests of ``class_id`` (``""``: not routed)."""
        return self.backends.get((region_id, class_id), f"be_{region_id}_{class_id}")

    def server_of(self, site_id: str) -> str:
        """The server standing for ``site_id`` in every backend."""
        return self.servers.get(site_id, site_id)


def load_config(path: Path) -> RouteConfig:
    """The mapping in the TOML file ``path``.

    The follower reads two tables (a third, ``[demand]``, is ``serve``'s:
    :func:`thermoroute.observed_demand.load_demand_config`): ``[backends]``, whose keys are
    ``"<region>/<class>"`` and whose values are backend names (``""``: not routed), and
    ``[servers]``, whose keys are site ids and whose values are server names; names are
    HAProxy's (letters, digits, ``-``, ``_``, ``.``, ``:``). Example::

        [backends]
        "sydney/chat" = "be_sydney_chat"
        "sydney/batch" = ""          # batch is not routed through this HAProxy

        [servers]
        syd = "dc-sydney-1"

    Raises
    ------
    RouteConfigError
        One line: the file, the key and what is allowed there.
    """
    table = read_toml(path, "--config", RouteConfigError)
    # [demand] is serve's (thermoroute.observed_demand): one file maps the fleet both ways.
    unknown = sorted(set(table) - {"backends", "servers", "demand"})
    if unknown:
        raise RouteConfigError(
            f"{path}: [{unknown[0]}]: unknown table; the tables are [backends], [servers] "
            "and [demand] (serve's)"
        )
    backends: dict[tuple[str, str], str] = {}
    for key, value in _table(path, table, "backends").items():
        region, slash, class_id = key.partition("/")
        if not (slash and region and class_id and "/" not in class_id):
            raise RouteConfigError(
                f'{path}: [backends] "{key}": a key is "<region>/<class>" (e.g. "sydney/chat")'
            )
        backends[(region, class_id)] = _name(path, "backends", key, value, empty=True)
    servers: dict[str, str] = {}
    for key, value in _table(path, table, "servers").items():
        name = _name(path, "servers", key, value, empty=False)
        # Two sites behind one server would share one weight: neither share could be set.
        twin = next((site for site, server in servers.items() if server == name), None)
        if twin is not None:
            raise RouteConfigError(
                f'{path}: [servers] "{key}" = {name!r}: already the server of site {twin}; '
                "one server per site"
            )
        servers[key] = name
    return RouteConfig(backends=backends, servers=servers)


def _table(path: Path, table: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = table.get(name, {})
    if not isinstance(value, dict):
        raise RouteConfigError(f"{path}: {name}: a table ([{name}]), not a {type(value).__name__}")
    return value


def _name(path: Path, table: str, key: str, value: object, *, empty: bool) -> str:
    """``value`` if it is a name HAProxy accepts (or ``""`` where ``empty``)."""
    if isinstance(value, str) and (_HAPROXY_NAME.fullmatch(value) or (empty and value == "")):
        return value
    allowed = "letters, digits, -, _, . and :" + (' (or "" for not routed)' if empty else "")
    raise RouteConfigError(f'{path}: [{table}] "{key}" = {value!r}: a name of {allowed}')


def weights_from_shares(shares: Sequence[float], total: int = WEIGHT_TOTAL) -> list[int]:
    """HAProxy weights for a backend's servers from their shares of its requests.

    Largest-remainder rounding: each server's quota is ``total · share / Σ shares``; every
    server gets the floor of its quota, and the units left go one each to the largest
    fractional parts (ties to the earlier server). Then every server with a share > 0 that
    rounded to 0 gets 1, taken from the largest weight, so a site the plan gives any traffic
    keeps receiving some (its share is then over-served by less than ``1 / total``). A share
    of 0 gives weight 0: HAProxy sends the server no new requests (it drains).

    Parameters
    ----------
    shares : sequence of float
        Each server's share of the backend's requests (fractions, or any non-negative
        numbers in proportion: requests per second serve as well) [1].
    total : int
        What the weights add up to (at most 256: HAProxy's largest weight).

    Returns
    -------
    list of int
        Weights in ``0 … total`` summing to ``total``, each within 1 of its quota; all 0
        when every share is 0 (the caller then leaves the backend alone).

    Raises
    ------
    ValueError
        A share is negative or not finite, or more servers have a share > 0 than ``total``.
    """
    if any(not math.isfinite(s) or s < 0 for s in shares):
        raise ValueError(f"shares must be finite and non-negative: {list(shares)}")
    whole = float(sum(shares))
    if whole <= 0:
        return [0] * len(shares)
    positive = sum(1 for s in shares if s > 0)
    if positive > total:
        raise ValueError(f"{positive} servers with a share cannot each get 1 of {total}")
    quotas = [total * s / whole for s in shares]
    weights = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(shares)), key=lambda i: (weights[i] - quotas[i], i))
    for i in by_remainder[: total - sum(weights)]:
        weights[i] += 1
    for i, share in enumerate(shares):
        if share > 0 and weights[i] == 0:
            largest = max(range(len(weights)), key=lambda j: (weights[j], -j))
            weights[largest] -= 1
            weights[i] = 1
    return weights


class RuntimeApi:
    """An HAProxy's runtime API (its ``stats socket``), one connection per command.

    Parameters
    ----------
    address : str
        A UNIX socket's path, or ``host:port`` of a TCP stats socket.
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def command(self, line: str) -> str:
        """Send one command, return HAProxy's whole answer.

        Raises
        ------
        Unreachable
            Nothing answers at :attr:`address`.
        """
        host, sep, port = self.address.rpartition(":")
        try:
            if sep and port.isdigit() and "/" not in self.address:
                # An IPv6 address comes bracketed ([::1]:9999), as in a URL.
                conn = socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S)
            else:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(TIMEOUT_S)
                conn.connect(self.address)
            with conn:
                conn.sendall(line.encode() + b"\n")
                # Without "prompt", HAProxy answers one command and closes the connection.
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise Unreachable(HAPROXY, self.address, _reason(exc)) from None
        return b"".join(chunks).decode("utf-8", "replace")

    def weights(self, backend: str) -> dict[str, int]:
        """Every server of ``backend`` and its current (user-set) weight.

        Raises
        ------
        Refused
            HAProxy has no backend ``backend``.
        """
        answer = self.command(f"show servers state {backend}")
        lines = answer.splitlines()
        header = next((ln for ln in lines if ln.startswith("# be_id")), None)
        if header is None:
            raise Refused(
                f"HAProxy at {self.address}: backend {backend}: {_first(answer)}",
                peer=HAPROXY, address=self.address, backend=backend,
            )  # fmt: skip
        columns = header[2:].split()
        name, weight = columns.index("srv_name"), columns.index("srv_uweight")
        out = {}
        for ln in lines[lines.index(header) + 1 :]:
            fields = ln.split()
            if len(fields) == len(columns):
                out[fields[name]] = int(fields[weight])
        return out

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        """Set ``backend/server``'s weight (0–256).

        Raises
        ------
        Refused
            HAProxy refused it (no such server; its answer is in the message).
        """
        answer = self.command(f"set weight {backend}/{server} {weight}").strip()
        if answer:
            raise Refused(
                f"HAProxy at {self.address}: set weight {backend}/{server}: {answer}",
                peer=HAPROXY, address=self.address, backend=backend,
            )  # fmt: skip


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip()


def _first(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "no answer")


class PlanSource:
    """A running service's plan API (``thermoroute serve``).

    Parameters
    ----------
    address : str
        ``host:port`` of the plan API.
    token : str or None
        The bearer token it asks for.
    """

    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        self.token = token

    def get(self, path: str) -> dict[str, Any] | None:
        """The JSON answer at ``path``; ``None`` when the service has no plan yet (503).

        Raises
        ------
        Unreachable
            Nothing answers, or the answer is not JSON.
        Refused
            The service refused the token (401) or the request.
        """
        request = urllib.request.Request(f"http://{self.address}{path}")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                body: dict[str, Any] = json.loads(answer.read())
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return None
            raise Refused(
                f"the service at {self.address} answered {exc.code} {exc.reason}",
                peer=SERVICE,
                address=self.address,
            ) from None
        # Refused, timed out, not HTTP (a stats socket's port given for the service's), not
        # JSON.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise Unreachable(SERVICE, self.address, _reason(exc)) from None


@dataclass(frozen=True)
class Applied:
    """What one poll did.

    Attributes
    ----------
    plan : tuple of (int, str) or None
        The plan's cycle and the step's time, ``None`` when the service had no plan.
    held : bool
        The plan was not applied (degraded or stale): every weight was kept.
    changed : int
        Servers whose weight was set.
    servers : int
        Servers of the fleet's sites in the backends the plan reached.
    problems : tuple of str
        Backends that could not be set (unknown to HAProxy, a server refused).
    """

    plan: tuple[int, str] | None
    held: bool = False
    changed: int = 0
    servers: int = 0
    problems: tuple[str, ...] = ()


class Follower:
    """Applies a service's current plan to an HAProxy (see the module docstring).

    Parameters
    ----------
    source : PlanSource
    haproxy : RuntimeApi
    config : RouteConfig

    Attributes
    ----------
    last_applied : tuple of (int, int) or None
        The cycle and step of the plan last applied (not held), ``None`` before the first:
        what the servers' weights came from when the follower stops.
    """

    def __init__(self, source: PlanSource, haproxy: RuntimeApi, config: RouteConfig) -> None:
        self.source = source
        self.haproxy = haproxy
        self.config = config
        self._last: tuple[int, str] | None = None
        self.last_applied: tuple[int, int] | None = None
        # Said once until a plan comes: a follower started before the first cycle would
        # otherwise log a line every period.
        self._said_no_plan = False

    def poll(self) -> Applied:
        """Fetch the plan for the current step and apply it; log a line when the plan or
        step is new, when a weight changed, or when the plan is held.

        Raises
        ------
        Unreachable
            The service or the HAProxy did not answer; nothing was left half-set beyond the
            servers set before (each ``set weight`` is one whole step).
        Refused
            The service refused the token.
        """
        plan = self.source.get("/plan")
        if plan is None:
            if not self._said_no_plan:
                log_event(log, logging.INFO, "no_plan",
                          "the service has no plan for this step yet: weights kept")  # fmt: skip
                self._said_no_plan = True
            return Applied(plan=None)
        self._said_no_plan = False
        status = self.source.get("/status") or {}
        key = (int(plan["plan_cycle"]), str(plan["time"]))
        # Remembered once applied (or held), so a plan whose applying an unreachable HAProxy
        # cut short still gets its line when it is applied.
        new = key != self._last
        step = round(
            (datetime.fromisoformat(key[1]) - datetime.fromisoformat(plan["plan_start"]))
            / timedelta(hours=float(plan["step_hours"]))
        )
        which = f"the plan of cycle {key[0]}, step {step} ({key[1]})"
        if plan.get("degraded") or plan.get("stale"):
            # A site's id and state are /status's: what the coordinator knows of it.
            unwell = [
                {"site_id": str(s["site_id"]), "state": str(s["state"])}
                for s in status.get("sites", [])
                if s.get("state") != "up"
            ]
            marks = [m for m in ("degraded", "stale") if plan.get(m)]
            why = " and ".join(marks)
            if new:
                named = ", ".join(f"{s['site_id']} ({s['state']})" for s in unwell)
                log_event(
                    log, logging.WARNING, "held",
                    f"{which} is {why}" + (f" (sites: {named})" if unwell else "")
                    + ": every server keeps its weight until a whole, fresh plan",
                    plan_cycle=key[0], plan_step=step, time=key[1],
                    degraded=bool(plan.get("degraded")), stale=bool(plan.get("stale")),
                    sites_not_up=unwell,
                )  # fmt: skip
            self._last = key
            return Applied(plan=key, held=True)
        site_ids = [s["site_id"] for s in status.get("sites", [])]
        routes = {(r["region_id"], r["class_id"]): r for r in plan["routes"]}
        pairs = list(dict.fromkeys([*routes, *self.config.backends]))
        changed = servers = 0
        problems: list[str] = []
        for region, class_id in pairs:
            backend = self.config.backend_of(region, class_id)
            if not backend:
                continue
            shares = {
                s["site_id"]: float(s["share"]) for s in routes.get((region, class_id), {}).get(
                    "sites", [])
            }  # fmt: skip
            try:
                done, count = self._apply_backend(backend, region, class_id, site_ids, shares,
                                                  say=new)  # fmt: skip
            except Refused as exc:
                problems.append(str(exc))
                if new:  # once per plan, not every period
                    log_event(log, logging.ERROR, "refused", str(exc), peer=exc.peer,
                              address=exc.address, backend=backend)  # fmt: skip
                continue
            changed += done
            servers += count
        if new or changed:
            log_event(
                log, logging.INFO, "applied",
                f"applied {which}: {changed} of {servers} servers changed weight"
                + (f"; {len(problems)} backend(s) not set" if problems else ""),
                plan_cycle=key[0], plan_step=step, time=key[1], changed=changed, servers=servers,
                backends_not_set=len(problems),
            )  # fmt: skip
        self._last = key
        self.last_applied = (key[0], step)
        return Applied(plan=key, changed=changed, servers=servers, problems=tuple(problems))

    def _apply_backend(
        self, backend: str, region: str, class_id: str, site_ids: Sequence[str],
        shares: Mapping[str, float], *, say: bool,
    ) -> tuple[int, int]:  # fmt: skip
        """Set ``backend``'s site servers from ``shares``; returns (servers changed, site
        servers in the backend)."""
        current = self.haproxy.weights(backend)
        sites = [s for s in site_ids if self.config.server_of(s) in current]
        missing = sorted(s for s in shares if shares[s] > 0 and s not in sites)
        if missing and say:
            # Its share is served by the other sites, in proportion: the rounding normalises.
            log_event(
                log, logging.WARNING, "no_server",
                f"backend {backend}: no server for site(s) {', '.join(missing)} of "
                f"{region}/{class_id}; their share goes to the others",
                backend=backend, region_id=region, class_id=class_id, sites=missing,
            )  # fmt: skip
        weights = weights_from_shares([shares.get(s, 0.0) for s in sites])
        if not any(weights):
            if say and sites:
                log_event(
                    log, logging.WARNING, "backend_kept",
                    f"backend {backend}: the plan sends none of {region}/{class_id}'s requests "
                    "to its servers (no demand, or no server for its sites): weights kept, "
                    "a backend is never zeroed",
                    backend=backend, region_id=region, class_id=class_id, servers=len(sites),
                )  # fmt: skip
            return 0, len(sites)
        changed = 0
        for site, weight in zip(sites, weights, strict=True):
            server = self.config.server_of(site)
            if current[server] != weight:
                self.haproxy.set_weight(backend, server, weight)
                changed += 1
        return changed, len(sites)


def follow(
    follower: Follower,
    *,
    period_s: float,
    max_backoff_s: float,
) -> NoReturn:
    """Poll every ``period_s`` until interrupted (``KeyboardInterrupt``, or SIGTERM through
    :mod:`thermoroute.signals`); on a service or an HAProxy that does not answer, wait 1 s,
    then twice as long each time, at most ``max_backoff_s``, until it answers again.

    Logs a ``start`` line first and a ``shutdown`` line when interrupted (the interrupt then
    goes on up: the command line exits 130, or 143 for SIGTERM).

    Raises
    ------
    Refused
        The service refused the token: retrying would not help.
    KeyboardInterrupt
        Ctrl-C or SIGTERM (:class:`thermoroute.signals.Terminated`).
    """
    source, haproxy = follower.source.address, follower.haproxy.address
    log_event(
        log, logging.INFO, "start",
        f"following the plan of the service at {source} every {period_s:g} s into the "
        f"weights of HAProxy's runtime API at {haproxy}",
        service=source, haproxy=haproxy, period_s=period_s, max_backoff_s=max_backoff_s,
    )  # fmt: skip
    failures = 0
    try:
        while True:
            try:
                follower.poll()
            except Unreachable as exc:
                # The exponent capped: a day-long outage must not overflow the float.
                wait = min(max_backoff_s, 2.0 ** min(failures, 30))
                failures += 1
                log_event(
                    log, logging.WARNING, "unreachable",
                    f"{exc}; retrying in {wait:g} s (attempt {failures}); weights kept",
                    peer=exc.peer, address=exc.address, reason=exc.reason, retry_in_s=wait,
                    attempt=failures,
                )  # fmt: skip
                time.sleep(wait)
                continue
            failures = 0
            time.sleep(period_s)
    except KeyboardInterrupt as exc:
        why = "SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        last = follower.last_applied
        log_event(
            log, logging.INFO, "shutdown",
            f"shutting down ({why}): every server keeps the weight last set"
            + (f" (the plan of cycle {last[0]}, step {last[1]})" if last else
               " (no plan was applied)"),
            why=why, plan_cycle=last[0] if last else None, plan_step=last[1] if last else None,
        )  # fmt: skip
        raise
