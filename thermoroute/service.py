"""``thermoroute serve``: long-lived site agents, a planning cycle every step, a published plan.

The service keeps one site agent per site up (Ray actors placed as ``run`` places them, or
in process) and a coordinator in this process. Every step of its clock it runs one cycle:

1. the coordinator reads the latest demand forecast from its own directory and, with an
   observer, the current step's demand observed in Prometheus
   (:mod:`thermoroute.observed_demand`);
2. every site moves to the new horizon re-reading its own data directory — the operator's
   pipeline appends weather, price and carbon forecasts there, and they never leave the
   site; a site whose new data fail validation keeps planning with what it held and is
   flagged (:meth:`thermoroute.site_agent.group.SiteGroup.refresh`);
3. the method runs warm-started from the previous cycle, within a time budget;
4. a converged answer becomes the published :class:`Plan`; otherwise the previous plan
   stays published — it covers the new step too, one step further into its horizon — and
   the cycle says so (status, metric, alert).

A crashed agent is restarted by Ray and rejoins at the next cycle (its sites show as
``rejoining`` meanwhile, and the plan as degraded). The service checkpoints its state after
every cycle (``state_dir``) and a restarted service resumes from it. Nothing here knows of
HTTP: :mod:`thermoroute.http_api` publishes what :meth:`PlanningService.plan_at` and
:meth:`PlanningService.status` answer.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, is_dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.errors import ScenarioError
from thermoroute.common.scenario import DemandView
from thermoroute.common.state_files import HeaderValue, StateFileError, read_state, state_bytes
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.data import load_view
from thermoroute.coordinator.fleet import RoundFailed, SiteGroupLost
from thermoroute.coordinator.methods import MethodSettings, method_for
from thermoroute.coordinator.receding import BatchBacklog, DemandForecaster, horizon_view
from thermoroute.observed_demand import Observed, PrometheusDemand, apply_observed
from thermoroute.plan_api import (
    CycleStatus,
    ObservedDemandStatus,
    ObservedRate,
    PlanResponse,
    PlanSummary,
    Route,
    SiteShare,
    SiteStatus,
    StatusResponse,
)
from thermoroute.receding import RecedingWindows, serve_first_step
from thermoroute.service_log import log_event

log = logging.getLogger(__name__)

#: Outcomes of a cycle.
PLANNED, KEPT_PREVIOUS = "planned", "kept_previous"
#: Site states in :meth:`PlanningService.status`.
SITE_UP, SITE_STALE, SITE_REJOINING = "up", "stale forecast", "rejoining"
#: Cycles kept for the status.
HISTORY = 50
#: The service's state file in its state directory (:class:`_State`), and what it is: its
#: kind and the layout's version (common/state_files.py).
CHECKPOINT = "service-state.npz"
STATE_KIND = "thermoroute service state"
STATE_VERSION = 1
#: The state file of a thermoroute before the data format: a pickle, never read.
PICKLED_STATE = "service-state.pkl"
#: The least time the first cycle's method gets (cold, and no plan to fall back on).
FIRST_CYCLE_BUDGET_S = 60.0
#: The demand file holds the operator's forecasts: the service adds no error of its own.
OPERATOR_FORECASTS = DemandForecaster(sigma=0.0)


def _with_time_limit(settings: MethodSettings, seconds: float) -> MethodSettings:
    """``settings`` with the run's wall-time limit ``seconds``.

    :class:`~thermoroute.coordinator.method_contract.RunSettings` promises the limit, not how
    to set it: the registered methods' settings are frozen dataclasses, copied with the new
    limit.

    Raises
    ------
    TypeError
        ``settings`` is not a dataclass instance.
    """
    if not is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"method settings must be a dataclass instance, not {settings!r}")
    return replace(settings, time_limit_s=seconds)


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs.

    Attributes
    ----------
    horizon : int or None
        Steps planned each cycle (default: the scenario's).
    step_seconds : float or None
        Wall seconds per step of the clock (default: the step's real length).
    cycles : int or None
        Stop after this many cycles (``None``: until stopped).
    max_plan_age_s : float or None
        A plan older than this is served marked stale (default: two steps of wall time).
    cycle_budget_s : float or None
        A cycle's method stops after this long, not converged (default: 0.8 of a step).
    state_dir : Path or None
        Where the service checkpoints after every cycle and resumes from.
    """

    horizon: int | None = None
    step_seconds: float | None = None
    cycles: int | None = None
    max_plan_age_s: float | None = None
    cycle_budget_s: float | None = None
    state_dir: Path | None = None


@dataclass(frozen=True)
class Plan:
    """One cycle's decision over its horizon.

    Attributes
    ----------
    cycle : int
    start : datetime
        The first step's time (the clock's time of the cycle).
    times : tuple of datetime
    step_hours : float
    made_at : float
        Wall time (``time.time()``) when it was published.
    x : ndarray (S, R, C, T)
        Requests per second from region ``r``, class ``c`` to site ``s`` at step ``t``.
    site_ids, region_ids, class_ids : tuple of str
    degraded : bool
        Some site planned with a stale forecast or was rejoining.
    """

    cycle: int
    start: datetime
    times: tuple[datetime, ...]
    step_hours: float
    made_at: float
    x: np.ndarray
    site_ids: tuple[str, ...]
    region_ids: tuple[str, ...]
    class_ids: tuple[str, ...]
    degraded: bool

    def to_arrays(self) -> tuple[dict[str, HeaderValue], dict[str, np.ndarray]]:
        """The plan as plain fields (``cycle``, ``start``, ``step_hours``, ``made_at``,
        ``degraded``) and arrays (``x``, ``times``, ``site_ids``, ``region_ids``,
        ``class_ids``; times as ISO 8601 strings), for a state file; :meth:`from_arrays`
        gives it back exactly."""
        fields: dict[str, HeaderValue] = {
            "cycle": self.cycle,
            "start": self.start.isoformat(),
            "step_hours": self.step_hours,
            "made_at": self.made_at,
            "degraded": self.degraded,
        }
        arrays = {
            "x": self.x,
            "times": _strings(t.isoformat() for t in self.times),
            "site_ids": _strings(self.site_ids),
            "region_ids": _strings(self.region_ids),
            "class_ids": _strings(self.class_ids),
        }
        return fields, arrays

    @classmethod
    def from_arrays(
        cls, fields: Mapping[str, HeaderValue], arrays: Mapping[str, np.ndarray]
    ) -> Plan:
        """The plan :meth:`to_arrays` gave.

        Raises
        ------
        KeyError, ValueError
            A field or an array is missing or of the wrong type.
        """
        return cls(
            cycle=_integer(fields, "cycle"),
            start=datetime.fromisoformat(_text(fields, "start")),
            times=tuple(datetime.fromisoformat(str(t)) for t in arrays["times"]),
            step_hours=_number(fields, "step_hours"),
            made_at=_number(fields, "made_at"),
            x=_floats(arrays["x"]),
            site_ids=_texts(arrays["site_ids"]),
            region_ids=_texts(arrays["region_ids"]),
            class_ids=_texts(arrays["class_ids"]),
            degraded=_flag(fields, "degraded"),
        )

    def step_of(self, when: datetime) -> int | None:
        """The index of the step containing ``when``, or ``None`` outside the horizon."""
        offset = (when - self.start) / timedelta(hours=self.step_hours)
        k = math.floor(offset + 1e-9)
        return k if 0 <= k < len(self.times) else None

    def routes(self, step: int) -> list[Route]:
        """Per region and class at ``step``: the demand and each serving site's share."""
        out = []
        flows = self.x[:, :, :, step]
        for j, region in enumerate(self.region_ids):
            for c, class_id in enumerate(self.class_ids):
                rates = flows[:, j, c]
                total = float(rates.sum())
                if total <= 0:
                    continue
                sites = [
                    SiteShare(
                        site_id=self.site_ids[i],
                        share=float(rates[i] / total),
                        requests_per_s=float(rates[i]),
                    )
                    for i in np.argsort(-rates)
                    if rates[i] > 0
                ]
                out.append(
                    Route(region_id=region, class_id=class_id, requests_per_s=total, sites=sites)
                )
        return out


@dataclass(frozen=True)
class CycleRecord:
    """What one cycle did.

    ``reason`` says why a cycle kept the previous plan or planned degraded, and which regions
    and classes kept the forecast where an observed rate was asked for (``None``: it planned
    with every site fresh and every rate observed); like every field, it names sites, regions,
    classes and counts, never a site's data.
    """

    cycle: int
    time: datetime
    started_at: float
    outcome: str
    converged: bool
    iterations: int
    duration_s: float
    stale_sites: tuple[str, ...] = ()
    rejoining_sites: tuple[str, ...] = ()
    error: str | None = None
    reason: str | None = None

    @property
    def degraded(self) -> bool:
        """Some site planned with a stale forecast or was rejoining."""
        return bool(self.stale_sites or self.rejoining_sites)


#: The columns of the history in a state file: CycleRecord's plain fields, by array type.
_HISTORY_INTEGERS = ("cycle", "iterations")
_HISTORY_FLOATS = ("started_at", "duration_s")
_HISTORY_SITES = ("stale_sites", "rejoining_sites")


@dataclass
class _State:
    """What a restarted service resumes from: its state file, written after every cycle.

    The file (:data:`CHECKPOINT`) is data, never code: a JSON header and named arrays in one
    ``.npz`` (common/state_files.py, kind :data:`STATE_KIND`, version :data:`STATE_VERSION`),
    read without pickle. :meth:`file_bytes` writes it and :meth:`read` reads it back exactly.
    """

    next_cycle: int = 0
    plan: Plan | None = None
    backlog: np.ndarray | None = None
    windows: RecedingWindows = field(default_factory=RecedingWindows)
    history: deque[CycleRecord] = field(default_factory=lambda: deque(maxlen=HISTORY))
    cycles_by_outcome: dict[str, int] = field(default_factory=dict)

    def file_bytes(self) -> bytes:
        """The state file's bytes.

        Its header holds ``next_cycle``, ``plan`` (whether a plan is published), the plan's
        fields as ``plan.<name>`` (:meth:`Plan.to_arrays`) and the receding windows' as
        ``windows.<name>`` (:meth:`~thermoroute.receding.RecedingWindows.to_arrays`). Its
        arrays: ``backlog`` (when there is one), ``plan.<name>``, ``windows.<name>``, the
        history column by column as ``history.<field>`` (a record's sites flattened, with
        ``history.<field>_counts`` per record; ``history.error`` with ``history.has_error``,
        ``history.reason`` with ``history.has_reason``)
        and ``cycles_by_outcome.outcomes`` with ``cycles_by_outcome.counts``.
        """
        header: dict[str, HeaderValue] = {"next_cycle": self.next_cycle, "plan": False}
        arrays: dict[str, np.ndarray] = {}
        if self.backlog is not None:
            arrays["backlog"] = self.backlog
        if self.plan is not None:
            plan_fields, plan_arrays = self.plan.to_arrays()
            header["plan"] = True
            header.update({f"plan.{k}": v for k, v in plan_fields.items()})
            arrays.update({f"plan.{k}": v for k, v in plan_arrays.items()})
        window_fields, window_arrays = self.windows.to_arrays()
        header.update({f"windows.{k}": v for k, v in window_fields.items()})
        arrays.update({f"windows.{k}": v for k, v in window_arrays.items()})
        records = list(self.history)
        for name in _HISTORY_INTEGERS:
            arrays[f"history.{name}"] = np.array([getattr(r, name) for r in records], np.int64)
        for name in _HISTORY_FLOATS:
            arrays[f"history.{name}"] = np.array([getattr(r, name) for r in records], float)
        for name in _HISTORY_SITES:
            arrays[f"history.{name}"] = _strings(s for r in records for s in getattr(r, name))
            counts = [len(getattr(r, name)) for r in records]
            arrays[f"history.{name}_counts"] = np.array(counts, np.int64)
        arrays["history.time"] = _strings(r.time.isoformat() for r in records)
        arrays["history.outcome"] = _strings(r.outcome for r in records)
        arrays["history.converged"] = np.array([r.converged for r in records], bool)
        arrays["history.error"] = _strings(r.error or "" for r in records)
        arrays["history.has_error"] = np.array([r.error is not None for r in records], bool)
        arrays["history.reason"] = _strings(r.reason or "" for r in records)
        arrays["history.has_reason"] = np.array([r.reason is not None for r in records], bool)
        arrays["cycles_by_outcome.outcomes"] = _strings(self.cycles_by_outcome)
        arrays["cycles_by_outcome.counts"] = np.array(
            list(self.cycles_by_outcome.values()), np.int64
        )
        return state_bytes(STATE_KIND, STATE_VERSION, header, arrays)

    @classmethod
    def read(cls, path: Path) -> _State:
        """The state in the file ``path`` (written by :meth:`file_bytes`).

        Raises
        ------
        StateFileError
            One line naming the file: unreadable, corrupt, not a service state (a pickle, a
            coordinator checkpoint, anything else), of a newer version, or lacking a part.
            Nothing in the file is run.
        """
        header, arrays = read_state(path, STATE_KIND, STATE_VERSION)

        def part(prefix: str) -> tuple[dict[str, HeaderValue], dict[str, np.ndarray]]:
            n = len(prefix)
            return (
                {k[n:]: v for k, v in header.items() if k.startswith(prefix)},
                {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)},
            )

        try:
            plan = Plan.from_arrays(*part("plan.")) if _flag(header, "plan") else None
            columns = part("history.")[1]
            sites = {name: _split(columns, name) for name in _HISTORY_SITES}
            # A state file written before cycles had reasons has none: its cycles read
            # without one.
            reasons: list[str | None] = [None] * len(columns["cycle"])
            if "reason" in columns:
                given = zip(columns["reason"], columns["has_reason"], strict=True)
                reasons = [str(text) if has else None for text, has in given]
            records = [
                CycleRecord(
                    cycle=int(columns["cycle"][i]),
                    time=datetime.fromisoformat(str(columns["time"][i])),
                    started_at=float(columns["started_at"][i]),
                    outcome=str(columns["outcome"][i]),
                    converged=bool(columns["converged"][i]),
                    iterations=int(columns["iterations"][i]),
                    duration_s=float(columns["duration_s"][i]),
                    stale_sites=sites["stale_sites"][i],
                    rejoining_sites=sites["rejoining_sites"][i],
                    error=str(columns["error"][i]) if columns["has_error"][i] else None,
                    reason=reasons[i],
                )
                for i in range(len(columns["cycle"]))
            ]
            outcomes = arrays["cycles_by_outcome.outcomes"]
            counts = arrays["cycles_by_outcome.counts"]
            if len(outcomes) != len(counts):
                raise ValueError("cycles_by_outcome's outcomes and counts differ in length")
            return cls(
                next_cycle=_integer(header, "next_cycle"),
                plan=plan,
                backlog=_floats(arrays["backlog"]) if "backlog" in arrays else None,
                windows=RecedingWindows.from_arrays(*part("windows.")),
                history=deque(records, maxlen=HISTORY),
                cycles_by_outcome={str(o): int(c) for o, c in zip(outcomes, counts, strict=True)},
            )
        except KeyError as missing:
            raise StateFileError(path, f"not a whole {STATE_KIND} (no {missing})") from None
        except (ValueError, TypeError, IndexError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise StateFileError(path, f"not a usable {STATE_KIND} ({reason})") from None


def _sites(site_ids: Iterable[str]) -> str:
    """``3 sites (a, b, c)``: how a reason names sites."""
    ids = list(site_ids)
    return f"{len(ids)} site{'' if len(ids) == 1 else 's'} ({', '.join(ids)})"


def _why_unconverged(
    run: Any, settings: MethodSettings, limit: float | None, iterations: int, retried: bool
) -> str:
    """Why a cycle's method stopped unconverged: out of its budget, at its iteration limit,
    or of its own accord (the interior point stalls).

    ``run`` is the last run's :class:`~thermoroute.coordinator.method_contract.MethodRun`,
    ``limit`` the time it was given, ``iterations`` the cycle's in all, ``retried`` whether
    a cold start followed a warm one.
    """
    budget = settings.time_limit_s
    max_iter = getattr(settings, "max_iter", None)
    done = f"after {iterations} iterations"
    if retried:
        done += " (a warm start, then a cold one)"
    if limit is not None and budget is not None and run.wall_s >= limit:
        return f"the solve ran out of the cycle's budget ({budget:.3g} s) {done}"
    if max_iter is not None and run.iterations >= max_iter:
        return f"not converged {done}: the method's limit is {max_iter} a run"
    return f"the method stopped unconverged {done}"


def _strings(values: Iterable[str]) -> np.ndarray:
    """A 1-D array of strings (a data type, unlike an object array)."""
    return np.array(list(values), dtype=str)


def _texts(array: np.ndarray) -> tuple[str, ...]:
    return tuple(str(v) for v in array)


def _floats(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.float64:
        raise ValueError(f"an array of {array.dtype}, not float64")
    return array


def _split(columns: Mapping[str, np.ndarray], name: str) -> list[tuple[str, ...]]:
    """The history's ``name`` per record, from its flattened column and counts."""
    flat, counts = columns[name], columns[f"{name}_counts"]
    if counts.sum() != len(flat) or (counts < 0).any():
        raise ValueError(f"history.{name} does not match its counts")
    ends = np.cumsum(counts)
    return [_texts(flat[end - n : end]) for n, end in zip(counts, ends, strict=True)]


def _integer(fields: Mapping[str, HeaderValue], name: str) -> int:
    value = fields[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is not an integer")
    return value


def _number(fields: Mapping[str, HeaderValue], name: str) -> float:
    value = fields[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} is not a number")
    return float(value)


def _text(fields: Mapping[str, HeaderValue], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return value


def _flag(fields: Mapping[str, HeaderValue], name: str) -> bool:
    value = fields[name]
    if not isinstance(value, bool):
        raise ValueError(f"{name} is not true or false")
    return value


def prepare_state_dir(directory: Path) -> Path:
    """Create the service's state directory, mode 0700 (only its owner reads the state), or
    check the existing one (whose mode is the operator's and stays); returns it.

    The service calls it before every write of its state file too: a directory removed
    meanwhile is created again 0700, never looser.

    Raises
    ------
    StateFileError
        ``directory`` is a file, cannot be created or is not writable (one line naming it).
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise StateFileError(directory, "exists and is not a directory") from None
    except OSError as error:
        raise StateFileError(directory, f"cannot create it ({error.strerror or error})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateFileError(directory, "not writable")
    return directory


class PlanningService:
    """The planning loop over an attached fleet.

    Parameters
    ----------
    coordinator_dir : Path
        The coordinator's data (demand, regions, classes; its forecasts appended there).
    site_ids : tuple of str
    settings : MethodSettings
        The method (its ``time_limit_s`` is set to the cycle budget).
    serve : ServeSettings
    fleet_factory : callable
        ``fleet_factory(start, horizon) -> (fleet, closer)`` builds the site agents with
        their horizon at ``start``.
    metrics : ServiceMetrics, optional
    cluster : callable, optional
        Answers the Ray cluster's summary for ``/status``.
    observer : PrometheusDemand, optional
        Reads the current step's demand from Prometheus every cycle
        (:mod:`thermoroute.observed_demand`); without it the forecast alone is planned for.
    """

    def __init__(
        self,
        coordinator_dir: Path,
        site_ids: tuple[str, ...],
        settings: MethodSettings,
        serve: ServeSettings,
        fleet_factory: Any,
        metrics: Any = None,
        cluster: Any = None,
        observer: PrometheusDemand | None = None,
    ) -> None:
        first = load_view(coordinator_dir, steps=serve.horizon)
        self.coordinator_dir = coordinator_dir
        self.site_ids = site_ids
        self.first: DemandView = first
        self.horizon = first.steps
        self.step = timedelta(hours=first.step_hours)
        self.step_seconds = serve.step_seconds or first.step_hours * 3600.0
        self.max_plan_age_s = serve.max_plan_age_s or 2.0 * self.step_seconds
        budget = serve.cycle_budget_s or 0.8 * self.step_seconds
        self.settings = _with_time_limit(settings, budget)
        self._first_settings = _with_time_limit(settings, max(budget, FIRST_CYCLE_BUDGET_S))
        self.serve = serve
        self.metrics = metrics
        self.cluster = cluster
        self.observer = observer
        #: The last cycle's observed demand (not checkpointed: the next cycle asks again).
        self._observed: tuple[int, Observed] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = self._resume()
        self.per_day = max(1, round(24.0 / first.step_hours))
        self.backlog = BatchBacklog(first.batch_requests, self.per_day)
        if self._state.backlog is not None:
            self.backlog.backlog = self._state.backlog
        self.coordinator = Coordinator(first, self.settings)
        self.fleet, self._close_fleet = fleet_factory(self.time_of(self._state.next_cycle),
                                                      self.horizon)  # fmt: skip
        self.coordinator.attach(self.fleet)
        self._site_state = dict.fromkeys(site_ids, SITE_UP)
        #: Each group's incarnation at the last cycle (a new one: the group restarted).
        self._incarnations: dict[int, str] = {}
        self._clock_origin = time.time() - self._state.next_cycle * self.step_seconds
        #: The cycle running in :meth:`run` now, the one in flight when :meth:`stop` was
        #: called, and what stopped the service (for the shutdown line).
        self._in_flight: int | None = None
        self._stopped_during: int | None = None
        self._why_stopped = "stopped"
        self.started_at = time.time()
        if self.metrics is not None:
            self.metrics.bind(self)

    # ----------------------------------------------------------------------------------
    # The clock

    def time_of(self, cycle: int) -> datetime:
        """The clock's time at ``cycle`` (the scenario's start plus that many steps)."""
        return self.first.start + cycle * self.step

    def clock_step(self, now: float | None = None) -> int:
        """The clock's current step (cycles advance one per ``step_seconds``)."""
        elapsed = (time.time() if now is None else now) - self._clock_origin
        return max(0, math.floor(elapsed / self.step_seconds))

    # ----------------------------------------------------------------------------------
    # The loop

    def run(self) -> None:
        """Run cycles until :meth:`stop` or ``serve.cycles`` cycles; log the shutdown
        (why, and what became of a cycle in flight) and close the fleet.

        An exception in a cycle (a ``KeyboardInterrupt``: Ctrl-C) abandons it, and is
        raised again once the shutdown is logged.
        """
        running: int | None = None
        try:
            while not self._stop.is_set():
                k = self._state.next_cycle
                if self.serve.cycles is not None and k >= self.serve.cycles:
                    self._why_stopped = f"{self.serve.cycles} cycles run (--cycles)"
                    break
                due = self._clock_origin + k * self.step_seconds
                if self._stop.wait(max(0.0, due - time.time())):
                    break
                # A cycle that overran: plan for the clock's step now, skipping the missed.
                skipped = self.clock_step() - k
                if skipped > 0:
                    k += skipped
                    log.warning("cycle %d starts late: %d step(s) of the clock skipped (the "
                                "cycle before overran its step)", k, skipped)  # fmt: skip
                running = self._in_flight = k
                self.cycle(k)
                running = self._in_flight = None
        except BaseException as error:
            failed = not isinstance(error, KeyboardInterrupt)
            why = f"failed: {type(error).__name__}" if failed else "interrupted"
            self._log_shutdown(why, abandoned=running, level=logging.ERROR if failed else None)
            raise
        else:
            self._log_shutdown(self._why_stopped, abandoned=None)
        finally:
            self._close_fleet()

    def stop(self, why: str = "stopped") -> None:
        """Stop after the cycle in flight, if any (``why``: what the shutdown line says
        stopped the service, e.g. ``SIGTERM``).

        Safe from a signal handler: it only notes which cycle is in flight and sets a flag.
        """
        if not self._stop.is_set():
            self._why_stopped = why
            self._stopped_during = self._in_flight
        self._stop.set()

    def _log_shutdown(self, why: str, abandoned: int | None, level: int | None = None) -> None:
        """The shutdown line: ``why``, what became of a cycle in flight (``abandoned``: the
        cycle an exception ended), which plan stays published."""
        with self._lock:
            last = self._state.history[-1] if self._state.history else None
            plan = self._state.plan
        in_flight, outcome = "none", None
        cycle = abandoned if abandoned is not None else self._stopped_during
        if cycle is not None and last is not None and last.cycle == cycle:
            # Recorded (and its plan published) before the stop took effect.
            in_flight, outcome = "finished", last.outcome
            what = f"cycle {cycle} was in flight and was finished first ({outcome})"
        elif abandoned is not None:
            in_flight = "abandoned"
            what = f"cycle {abandoned} was in flight and was abandoned (nothing of it published)"
        else:
            what = "no cycle was in flight"
        served = f"the plan of cycle {plan.cycle} stays" if plan else "no plan was published"
        log_event(
            log, level or logging.INFO, "shutdown",
            f"shutting down ({why}): {what}; {served}; closing the site agents",
            why=why, in_flight=in_flight, in_flight_cycle=cycle, in_flight_outcome=outcome,
            plan_cycle=None if plan is None else plan.cycle,
        )  # fmt: skip

    def cycle(self, k: int) -> CycleRecord:
        """Plan for the clock's step ``k`` (see the module docstring); log one line for it."""
        t0, wall0 = time.perf_counter(), time.time()
        when = self.time_of(k)
        state = self._state
        rejoining: list[str] = []
        try:
            view = load_view(self.coordinator_dir, start=when, steps=self.horizon)
            if self.backlog.daily.shape == view.batch_requests.shape:
                self.backlog.daily = view.batch_requests
            self.backlog.arrive(k)
            view = horizon_view(view, OPERATOR_FORECASTS, self.backlog)
            observed = self._observe(k, view)
            if observed is not None:
                view, _ = observed
            fresh, rejoining = self._refresh(when)
            warm = state.windows.open(self.coordinator, view, k)
            # Until a first plan exists, a late plan beats none: the cold first cycle may
            # take longer than the budget.
            settings = self.settings if state.plan is not None else self._first_settings
            limit = settings.time_limit_s
            outcome = self.coordinator.run(warm_start=warm, settings=settings)
            iterations = int(outcome.iterations)
            left = (limit or math.inf) - (time.perf_counter() - t0)
            retried = not outcome.converged and warm is not None and left > 0
            if retried:
                # A warm start can leave the interior point too close to the boundary to
                # finish (it stalls); a cold start from the centre usually does.
                log.warning("cycle %d: the warm-started method stopped unconverged; "
                            "solving again from a cold start", k)  # fmt: skip
                limit = left
                outcome = self.coordinator.run(
                    warm_start=None, settings=_with_time_limit(settings, left)
                )
                iterations += int(outcome.iterations)
        except (ScenarioError, RoundFailed, SiteGroupLost, RuntimeError) as error:
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            if isinstance(error, RoundFailed):
                why = f"{_sites(error.sites)} unreachable (their agents did not answer)"
            else:
                why = f"the cycle failed: {first}"
            record = CycleRecord(k, when, wall0, KEPT_PREVIOUS, False, 0,
                                 time.perf_counter() - t0, error=first, reason=why)  # fmt: skip
            self._finish(record, None)
            return record
        stale = tuple(s for s, ok in fresh.items() if not ok)
        converged = bool(outcome.converged)
        unconverged = None
        if not converged:
            unconverged = _why_unconverged(outcome.run, settings, limit, iterations, retried)
        reasons = [
            unconverged,
            f"stale forecast at {_sites(stale)}" if stale else None,
            f"{_sites(rejoining)} rejoining after a restart" if rejoining else None,
            None if observed is None else observed[1].reason(),
        ]
        record = CycleRecord(
            cycle=k,
            time=when,
            started_at=wall0,
            outcome=PLANNED if converged else KEPT_PREVIOUS,
            converged=converged,
            iterations=iterations,
            duration_s=time.perf_counter() - t0,
            stale_sites=stale,
            rejoining_sites=tuple(rejoining),
            reason="; ".join(r for r in reasons if r) or None,
        )
        plan = None
        if converged:
            x = outcome.outputs.schedule.x
            plan = Plan(
                cycle=k, start=when, times=tuple(view.times), step_hours=view.step_hours,
                made_at=time.time(), x=x, site_ids=tuple(outcome.structure.site_ids),
                region_ids=tuple(view.regions.region_id), class_ids=tuple(view.classes.class_id),
                degraded=bool(stale or rejoining),
            )  # fmt: skip
            deferrable = np.asarray(view.classes.deferrable, dtype=bool)
            serve_first_step(self.backlog, x, view.step_seconds, deferrable)
        state.windows.remember(outcome, k)
        self._finish(record, plan)
        return record

    def _observe(self, k: int, view: DemandView) -> tuple[DemandView, Observed] | None:
        """``view`` with the demand observed in Prometheus for its current step and its
        forecast continued from it (:func:`~thermoroute.observed_demand.apply_observed`),
        remembered for ``/status`` and counted in the metrics; ``None`` without an observer."""
        if self.observer is None:
            return None
        demand, observed = apply_observed(
            view.demand_rps, self.observer.read(), view.regions.region_id,
            view.classes.class_id, [bool(d) for d in view.classes.deferrable], view.step_hours,
        )  # fmt: skip
        with self._lock:
            self._observed = (k, observed)
        if self.metrics is not None:
            self.metrics.on_observed(observed)
        return replace(view, demand_rps=demand), observed

    def _refresh(self, when: datetime) -> tuple[dict[str, bool], list[str]]:
        """Move the sites to ``when``; bring back a group that crashed. Returns each site's
        freshness and the sites whose group restarted since the last cycle (they rejoin:
        registered again, planning from a cold start)."""
        rejoining: list[str] = []
        for _ in range(3):
            try:
                answers = self.fleet.refresh(when)
                break
            except RoundFailed as failed:
                rejoining.extend(failed.sites)
                with self._lock:
                    for sid in failed.sites:
                        self._site_state[sid] = SITE_REJOINING
                self.fleet.recover(failed.groups)
        else:
            raise RoundFailed([], rejoining, "site groups kept failing to move to the horizon")
        fresh: dict[str, bool] = {}
        for g, answer in enumerate(answers):
            fresh.update(answer.fresh)
            known = self._incarnations.get(g)
            if known is not None and known != answer.incarnation:
                rejoining.extend(s for s in answer.fresh if s not in rejoining)
            self._incarnations[g] = answer.incarnation
        with self._lock:
            for sid in self.site_ids:
                self._site_state[sid] = SITE_UP if fresh.get(sid, True) else SITE_STALE
        return fresh, rejoining

    def _finish(self, record: CycleRecord, plan: Plan | None) -> None:
        with self._lock:
            state = self._state
            state.history.append(record)
            state.cycles_by_outcome[record.outcome] = (
                state.cycles_by_outcome.get(record.outcome, 0) + 1
            )
            if plan is not None:
                state.plan = plan
            state.next_cycle = record.cycle + 1
            state.backlog = self.backlog.backlog.copy()
        if self.metrics is not None:
            self.metrics.on_cycle(record)
        self._log_cycle(record)
        self._checkpoint()

    def _log_cycle(self, record: CycleRecord) -> None:
        """The cycle's line: its step and time, outcome, iterations, seconds, the reason
        it kept the previous plan or planned degraded, and the plan served now."""
        with self._lock:
            plan = self._state.plan
        step = None if plan is None else plan.step_of(record.time)
        if plan is None:
            served = "no plan is published yet"
        elif step is None:
            served = f"the plan of cycle {plan.cycle} no longer covers this step"
        else:
            served = f"serving step {step} of the plan of cycle {plan.cycle}"
        outcome = record.outcome + (" (degraded)" if record.degraded else "")
        message = (
            f"cycle {record.cycle} at {record.time.isoformat()}: {outcome}, "
            f"{record.iterations} iterations, {record.duration_s:.2f} s"
            + (f" — {record.reason}" if record.reason else "")
            + (f"; {served}" if record.outcome != PLANNED else "")
        )
        if record.error is not None:
            level = logging.ERROR
        elif record.outcome != PLANNED or record.reason is not None:
            # A reason: degraded, or some region and class planned with the forecast
            # where an observed rate was asked for.
            level = logging.WARNING
        else:
            level = logging.INFO
        log_event(
            log, level, "cycle", message,
            cycle=record.cycle, time=record.time.isoformat(), outcome=record.outcome,
            converged=record.converged, degraded=record.degraded,
            iterations=record.iterations, seconds=round(record.duration_s, 3),
            reason=record.reason, stale_sites=list(record.stale_sites),
            rejoining_sites=list(record.rejoining_sites),
            plan_cycle=None if plan is None else plan.cycle, plan_step=step,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------
    # Checkpoint

    def _checkpoint(self) -> None:
        """Write the state file; a failure is logged, and the service goes on serving."""
        directory = self.serve.state_dir
        if directory is None:
            return
        with self._lock:
            content = self._state.file_bytes()
        try:
            write_directory_atomic(prepare_state_dir(directory), {CHECKPOINT: content},
                                   durable=False)  # fmt: skip
        except (OSError, StateFileError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.error("the state file in %s was not written: %s", directory, reason)

    def _resume(self) -> _State:
        """The state to start from: a fresh one without a state file, else the file's.

        Only a state file of this data format is read. A file that is corrupt, of another
        kind or of a newer version is refused (nothing in it is run); version 1 is the
        format's first, so no older version is read. A ``service-state.pkl`` (the pickle
        of a thermoroute before the format) is never read: the service starts afresh and
        says so.

        Raises
        ------
        StateFileError
            The state directory cannot be used, or its state file is refused (one line
            naming it).
        """
        directory = self.serve.state_dir
        if directory is None:
            return _State()
        prepare_state_dir(directory)
        path = directory / CHECKPOINT
        if not path.exists():
            if (directory / PICKLED_STATE).exists():
                log.warning("%s: the state of an older thermoroute (a pickle) is never read; "
                            "starting afresh", directory / PICKLED_STATE)  # fmt: skip
            return _State()
        state = _State.read(path)
        log.warning("resuming from the state of cycle %d", state.next_cycle - 1)
        return state

    # ----------------------------------------------------------------------------------
    # What the API publishes

    def plan_at(self, when: datetime | None = None) -> dict[str, Any] | None:
        """The published plan for ``when`` (default: the clock's current step), or ``None``
        when no plan covers it."""
        with self._lock:
            plan = self._state.plan
            history = list(self._state.history)
        if plan is None:
            return None
        now = time.time()
        current = self.time_of(self.clock_step(now))
        when = current if when is None else when
        step = plan.step_of(when)
        if step is None:
            return None
        age = now - plan.made_at
        last = history[-1] if history else None
        with self._lock:
            sites_ok = all(v == SITE_UP for v in self._site_state.values())
        # Degraded: planned with a stale forecast or a rejoining site, or the fleet is not
        # whole now (the plan served meanwhile is older than the fleet's state).
        degraded = (
            plan.degraded
            or not sites_ok
            or (last is not None and bool(last.stale_sites or last.rejoining_sites))
        )
        answer = PlanResponse(
            time=plan.times[step],
            current_time=current,
            step_hours=plan.step_hours,
            plan_cycle=plan.cycle,
            plan_start=plan.start,
            plan_made_at=datetime.fromtimestamp(plan.made_at).astimezone(),
            age_s=age,
            stale=age > self.max_plan_age_s,
            kept_previous=last is not None and last.outcome != PLANNED,
            degraded=degraded,
            routes=plan.routes(step),
        )
        return answer.model_dump(mode="json")

    def status(self) -> dict[str, Any]:
        """The service at a glance: clock, last cycles, sites, plan and cluster."""
        with self._lock:
            state = self._state
            history = list(state.history)
            sites = dict(self._site_state)
            plan = state.plan
            counts = dict(state.cycles_by_outcome)
        now = time.time()
        age = None if plan is None else now - plan.made_at
        summary = None
        if plan is not None and age is not None:
            summary = PlanSummary(
                cycle=plan.cycle,
                start=plan.start,
                age_s=age,
                stale=age > self.max_plan_age_s,
                degraded=plan.degraded,
            )
        answer = StatusResponse(
            method=method_for(self.settings).name,
            cycles=sum(counts.values()),
            cycles_by_outcome=counts,
            current_cycle=self.clock_step(now),
            clock_time=self.time_of(self.clock_step(now)),
            step_seconds=self.step_seconds,
            horizon_steps=self.horizon,
            max_plan_age_s=self.max_plan_age_s,
            plan=summary,
            sites=[SiteStatus(site_id=s, state=sites[s]) for s in self.site_ids],
            last_cycles=[
                CycleStatus.model_validate(record, from_attributes=True) for record in history[-10:]
            ],
            cluster=self.cluster() if callable(self.cluster) else None,
            uptime_s=now - self.started_at,
            observed_demand=self._observed_status(),
        )
        return answer.model_dump(mode="json")

    def _observed_status(self) -> ObservedDemandStatus | None:
        """The last cycle's observed demand for ``/status`` (``None``: not asked for)."""
        if self.observer is None:
            return None
        with self._lock:
            last = self._observed
        if last is None:
            return ObservedDemandStatus(query=self.observer.query, cycle=None)
        cycle, observed = last
        return ObservedDemandStatus(
            query=self.observer.query,
            cycle=cycle,
            observed=[
                ObservedRate(region_id=r, class_id=c, requests_per_s=v)
                for (r, c), v in observed.rates.items()
            ],
            forecast_kept=[
                ObservedRate(region_id=r, class_id=c, reason=why)
                for (r, c), why in observed.fallbacks.items()
            ],
            detail=observed.detail,
        )

    def site_counts(self) -> tuple[int, int, int]:
        """``(up, stale, rejoining)`` sites now."""
        with self._lock:
            states = list(self._site_state.values())
        return (
            states.count(SITE_UP),
            states.count(SITE_STALE),
            states.count(SITE_REJOINING),
        )

    def plan_age_s(self) -> float:
        with self._lock:
            plan = self._state.plan
        return math.nan if plan is None else time.time() - plan.made_at
