"""The fleet: how the coordinator reaches the site groups.

A :class:`Fleet` hides where the sites run. :class:`InlineFleet` calls plain site-group
objects in this process; :class:`RayFleet` calls site-group actors, with a deadline on every
wait.

Both speak to *groups* (``thermoroute.site_agent.group.SiteGroup`` or anything following
:class:`SiteGroupLike`) in the generic calls of :mod:`thermoroute.common.method_protocol`,
whatever the method: ``register(layout, row_scale) -> {site_id: support_rows}``; a run's
``method_begin`` (:meth:`Fleet.begin`), ``method_start`` and ``method_round`` (one message to
all, :meth:`Fleet.broadcast`) and ``method_scatter`` (each group its own slices of a stacked
vector, late groups tolerated: :meth:`Fleet.scatter`); the end-of-run ``report_keys`` /
``final_report`` (:mod:`thermoroute.common.report_protocol`) and ``shift(steps, start)``.
Nothing else: a site's own telemetry stays on its node. The coordinator stacks every site's
support entries in one vector, sites in group order, so each group's share of the stacked
vector is one contiguous slice.

Messages stay small: in a scatter a group receives only its own sites' slices (one float per
support row) and answers only its sites' slices; the layout and row scales, the same for
everyone, are sent once at registration, inside the calls (an object in the store would
cost every remote site a fetch from the coordinator's node: several round trips across a
WAN). On Ray a round's message is pickled once for every group (and handed on as it is by
the relays) and each group answers through its ``packed_call``
(:class:`~thermoroute.common.method_protocol.PackedCalls`, which every group class reached
over Ray mixes in): Ray would serialise it again per call.

Bytes that do not grow with the fleet: a round whose answers are masked sums (the interior
point's :class:`~thermoroute.common.ipm_protocol.Aggregate`) goes through
:meth:`Fleet.aggregate`, which follows the fleet's
:class:`~thermoroute.common.aggregation_tree.AggregationTree`: each relay adds its children's
(masked) subtree sums to its own answer, so the coordinator takes in one answer per top node
of the tree (at most ``fan_in``), whatever the number of groups. Both fleets follow the same
tree; on Ray the relays call their children actor to actor.

This module never imports ``site_agent``; Ray is imported only by :class:`RayFleet`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from queue import Empty, SimpleQueue
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from thermoroute.common.aggregation_tree import (
    AggregationTree,
    RelayAnswer,
    RelayChild,
    RelayPlan,
    aggregate_of,
    sum_aggregates,
)
from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.ipm_protocol import Aggregate
from thermoroute.common.method_protocol import (
    EmptyRound,
    GroupCall,
    MethodBegin,
    PackedCall,
    ScatterAnswer,
    ScatterRequest,
    Sticky,
    unpack_answer,
)
from thermoroute.common.service_protocol import RefreshAnswer

log = logging.getLogger(__name__)

_Answer = TypeVar("_Answer")
#: A site group's Ray actor handle, and a Ray object reference: Ray builds the handles'
#: ``.remote`` methods at run time, so neither has a static type of any use here.
GroupHandle = Any
_Ref = Any

#: An audit hook: called with ``(kind, group index, message)`` for every message the
#: coordinator receives from a group — ``kind`` is ``"register"``, ``"method_scatter"`` or the
#: group call of a broadcast (``"method_round"``, ``"final_report"``, …). Used to prove what
#: crosses the boundary (tests/test_privacy.py).
Tap = Callable[[str, int, object], None]
#: An audit hook of the in-process fleet's relays: called with ``(relay, child, message)``
#: for every subtree sum a relay receives from a child (tests/test_aggregation_tree.py).
RelayTap = Callable[[int, int, Aggregate], None]


@runtime_checkable
class SiteGroupLike(Protocol):
    """The calls the coordinator makes on a site group (see the module docstring); a
    broadcast's :data:`~thermoroute.common.method_protocol.GroupCall` names the rest."""

    def register(
        self, layout: CouplingLayout, row_scale: np.ndarray
    ) -> Mapping[str, np.ndarray]: ...

    def method_begin(self, message: MethodBegin) -> bytes: ...

    def method_scatter(self, request: ScatterRequest) -> ScatterAnswer: ...

    def shift(self, steps: int, start: datetime | str | None = None) -> None: ...


@dataclass(frozen=True)
class FleetReply:
    """The fan-in of one iteration.

    Attributes
    ----------
    iteration : int
    served : ndarray (n,)
        Every site's answered slice, stacked (exchange ADMM: the served demand ``A_i x_i``
        on its support rows, scaled).
    late_sites : tuple of str
        Sites whose group missed the deadline (their previous proposal is in ``served``) or
        answered an older iteration.
    crashed_sites : tuple of str
        Sites whose group's actor crashed in this fan-in (a new crash; they are late too).
    fan_out_s, wait_s : float
        Time to submit the calls, and from the last submission to the last answer used.
    answer_s : dict
        Seconds each answering site's group took, as the coordinator saw it (from the end
        of the fan-out to its answer; ``thermoroute_site_solve_seconds``).
    """

    iteration: int
    served: np.ndarray
    late_sites: tuple[str, ...] = ()
    fan_out_s: float = 0.0
    wait_s: float = 0.0
    crashed_sites: tuple[str, ...] = ()
    answer_s: Mapping[str, float] = field(default_factory=dict)


class Fleet(Protocol):
    """What a distributed method's coordinator side needs of a fleet."""

    @property
    def site_ids(self) -> tuple[str, ...]: ...

    def register(self, layout: CouplingLayout, row_scale: np.ndarray) -> list[np.ndarray]: ...

    def begin(self, message: MethodBegin, *, rejoin: bool = False) -> list[bytes]: ...

    def scatter(self, request: ScatterRequest) -> FleetReply: ...

    def shift(self, steps: int, start: datetime | str | None = None) -> None: ...

    def broadcast(
        self, call: GroupCall, message: object, *, indexed: bool = False
    ) -> list[object]: ...

    def post(self, call: GroupCall, message: object) -> None: ...

    def aggregate(
        self, call: GroupCall, message: object, *, indexed: bool = False
    ) -> list[Aggregate]: ...

    def answer_seconds(self) -> dict[str, float]: ...

    def recover(self, groups: Sequence[int]) -> None: ...

    def refresh(self, start: datetime | str) -> list[RefreshAnswer]: ...

    def close(self) -> None: ...


#: The protocol of a packed call (in-band buffers: the bytes are the whole message).
PICKLE_PROTOCOL = 5
#: Ray passes an argument up to this size inside the call (its default
#: ``max_direct_call_object_size``, 100 KiB); above it, Ray puts it in the object store once per
#: call — a broadcast puts such a message once for all groups instead.
INLINE_ARGUMENT_BYTES = 100 * 1024


def answers_of(answers: Sequence[object], kind: type[_Answer]) -> list[_Answer]:
    """A broadcast's answers, each checked to be a ``kind`` (what the round's protocol says
    a group answers); a group that answered anything else is a defect, named here."""
    checked: list[_Answer] = []
    for g, answer in enumerate(answers):
        if not isinstance(answer, kind):
            raise TypeError(
                f"site group {g} answered a {type(answer).__name__}, not a {kind.__name__}"
            )
        checked.append(answer)
    return checked


def _stacked(request: ScatterRequest) -> np.ndarray:
    """A scatter request's targets, stacked over every site's support entries (what a
    method hands its fleet; a group receives them per site)."""
    if not isinstance(request.targets, np.ndarray):
        raise TypeError("a scatter request reaches the fleet with its targets stacked")
    return request.targets


@dataclass
class _Slots:
    """Where each group's sites sit in the stacked vector."""

    group_sites: list[tuple[str, ...]]
    site_slices: dict[str, slice] = field(default_factory=dict)
    group_slices: list[slice] = field(default_factory=list)
    n_entries: int = 0

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(s for group in self.group_sites for s in group)

    def set_supports(self, supports: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        offset = 0
        self.site_slices.clear()
        self.group_slices.clear()
        for group in self.group_sites:
            first = offset
            for sid in group:
                if sid not in supports:
                    raise RuntimeError(f"site {sid!r} did not register a support")
                rows = np.asarray(supports[sid], dtype=np.int64)
                self.site_slices[sid] = slice(offset, offset + rows.size)
                offset += rows.size
                out.append(rows)
            self.group_slices.append(slice(first, offset))
        self.n_entries = offset
        return out

    def pack(self, g: int, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Group ``g``'s targets: one array per site, each on that site's support."""
        return {sid: targets[self.site_slices[sid]] for sid in self.group_sites[g]}

    def unpack(self, g: int, served: Mapping[str, np.ndarray], out: np.ndarray) -> None:
        for sid in self.group_sites[g]:
            sl = self.site_slices[sid]
            value = np.asarray(served[sid], dtype=float)
            if value.shape != (sl.stop - sl.start,):
                raise RuntimeError(
                    f"site {sid!r} answered {value.shape} values for "
                    f"{sl.stop - sl.start} support rows"
                )
            out[sl] = value


class InlineFleet:
    """Site groups as plain objects in this process (quick runs and most tests).

    Parameters
    ----------
    groups : sequence of SiteGroupLike
    group_site_ids : sequence of sequence of str
        The site ids each group hosts, in the group's order.
    tap : Tap, optional
        Called with every answer the coordinator takes in.
    tree : AggregationTree, optional
        Which groups relay which in :meth:`aggregate` (by default
        :meth:`AggregationTree.k_ary`, flat up to its fan-in), as on Ray.
    relay_tap : RelayTap, optional
        Called with every subtree sum a relay takes in from a child.
    """

    def __init__(
        self,
        groups: Sequence[SiteGroupLike],
        group_site_ids: Sequence[Sequence[str]],
        *,
        tap: Tap | None = None,
        tree: AggregationTree | None = None,
        relay_tap: RelayTap | None = None,
    ) -> None:
        if len(groups) != len(group_site_ids):
            raise ValueError("one list of site ids per group")
        self.groups = list(groups)
        self._slots = _Slots([tuple(g) for g in group_site_ids])
        self.tap = tap
        self.tree = _tree_for(tree, len(self.groups))
        self.relay_tap = relay_tap
        #: Seconds each group's solve took in the last iteration (the inline floor).
        self.last_solve_s: list[float] = [0.0] * len(self.groups)

    def _seen(self, kind: str, g: int, message: _Answer) -> _Answer:
        if self.tap is not None:
            self.tap(kind, g, message)
        return message

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self._slots.site_ids

    def register(self, layout: CouplingLayout, row_scale: np.ndarray) -> list[np.ndarray]:
        supports: dict[str, np.ndarray] = {}
        for g, group in enumerate(self.groups):
            supports.update(self._seen("register", g, group.register(layout, row_scale)))
        return self._slots.set_supports(supports)

    def begin(self, message: MethodBegin, *, rejoin: bool = False) -> list[bytes]:
        """Set up a run on every group (``rejoin``: keeping the iterates groups hold); the
        groups' public keys."""
        return answers_of(
            self.broadcast("method_rejoin" if rejoin else "method_begin", message), bytes
        )

    def scatter(self, request: ScatterRequest) -> FleetReply:
        """One scatter round: each group gets its sites' slices (stacked in ``request``)."""
        served = np.empty(self._slots.n_entries)
        t0 = time.perf_counter()
        for g, group in enumerate(self.groups):
            tg = time.perf_counter()
            mine = request.for_group(self._slots.pack(g, _stacked(request)), request.sticky)
            answer = group.method_scatter(mine)
            self.last_solve_s[g] = time.perf_counter() - tg
            self._seen("method_scatter", g, answer)
            if answer.iteration != request.iteration:
                raise RuntimeError(
                    f"group {g} answered iteration {answer.iteration}, not {request.iteration}"
                )
            self._slots.unpack(g, answer.served, served)
        return FleetReply(
            request.iteration,
            served,
            (),
            0.0,
            time.perf_counter() - t0,
            answer_s=self.answer_seconds(),
        )

    def shift(self, steps: int, start: datetime | str | None = None) -> None:
        for group in self.groups:
            group.shift(steps, start)

    def refresh(self, start: datetime | str) -> list[RefreshAnswer]:
        """Move every group to the horizon from ``start``, re-reading the sites' data."""
        return answers_of(self.broadcast("refresh", start), RefreshAnswer)

    def broadcast(self, call: GroupCall, message: object, *, indexed: bool = False) -> list[object]:
        """Call ``call(message)`` (``call(message, g)`` when ``indexed``) on every group.

        One message to all, one answer each, in group order; every answer passes the tap
        as kind ``call``.
        """
        answers = []
        for g, group in enumerate(self.groups):
            bound = getattr(group, call)
            tg = time.perf_counter()
            answer = bound(message, g) if indexed else bound(message)
            self.last_solve_s[g] = time.perf_counter() - tg
            answers.append(self._seen(call, g, answer))
        return answers

    def post(self, call: GroupCall, message: object) -> None:
        """:meth:`broadcast` whose answers nobody waits for (here: done by the time it returns)."""
        self.broadcast(call, message)

    def aggregate(
        self, call: GroupCall, message: object, *, indexed: bool = False
    ) -> list[Aggregate]:
        """A round whose answers are sums, through the tree: one answer per top node, each
        the sum of its subtree's answers (every group still answers ``call`` itself)."""
        if self.tree.is_flat:
            return answers_of(self.broadcast(call, message, indexed=indexed), Aggregate)

        def subtree_sum(g: int) -> Aggregate:
            bound = getattr(self.groups[g], call)
            tg = time.perf_counter()
            own = bound(message, g) if indexed else bound(message)
            self.last_solve_s[g] = time.perf_counter() - tg
            parts = [aggregate_of(g, own)]
            for child in self.tree.children[g]:
                part = subtree_sum(child)
                if self.relay_tap is not None:
                    self.relay_tap(g, child, part)
                parts.append(part)
            return sum_aggregates(parts)

        return [self._seen(call, g, subtree_sum(g)) for g in self.tree.top]

    def answer_seconds(self) -> dict[str, float]:
        """Seconds each site's group took to answer the last call (:class:`FleetReply`)."""
        return {
            sid: self.last_solve_s[g]
            for g, sites in enumerate(self._slots.group_sites)
            for sid in sites
        }

    def recover(self, groups: Sequence[int]) -> None:
        """In process a group cannot crash and come back: there is nothing to recover."""
        raise SiteGroupLost(f"site groups {list(groups)} failed in process")

    def close(self) -> None:
        return None


def _tree_for(tree: AggregationTree | None, n_groups: int) -> AggregationTree:
    """``tree``, checked against the fleet; the default k-ary tree when ``None``."""
    if tree is None:
        return AggregationTree.k_ary(n_groups)
    if len(tree.children) != n_groups:
        raise ValueError(f"an aggregation tree of {len(tree.children)} groups for {n_groups}")
    return tree


def restart_failure(handle: GroupHandle, call_timeout_s: float, give_up_s: float) -> str | None:
    """Wait (bounded) until Ray has restarted the actor behind ``handle``.

    Returns
    -------
    str or None
        ``None`` once it answers again; else why not, to follow the actor's name: "is lost:
        …" (Ray will not restart it) or "has not come back within … s".
    """
    import ray

    give_up = time.perf_counter() + give_up_s
    while True:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=call_timeout_s)
            return None
        except ray.exceptions.ActorDiedError as error:
            return f"is lost: {str(error).strip().splitlines()[0]}"
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            if time.perf_counter() > give_up:
                return f"has not come back within {give_up_s:g} s"
            time.sleep(0.2)


def _packed_payload(call: GroupCall, message: object) -> bytes | _Ref:
    """``call(message)`` as every group's ``packed_call`` takes it: pickled once for all groups
    (:class:`~thermoroute.common.method_protocol.PackedCall`). A small message (every round's
    request) goes inside the calls — a ``ray.put`` costs a store round trip here and a fetch
    in every actor; a large one goes in the store once for all (Ray would put it once per
    call)."""
    import ray
    from ray import cloudpickle

    packed = cloudpickle.dumps(PackedCall(call, message), protocol=PICKLE_PROTOCOL)
    return ray.put(packed) if len(packed) > INLINE_ARGUMENT_BYTES else packed


#: Seconds a relay waits for its children beyond the setup deadline per level of relays
#: below it, so that a late group is named by the relay just above it, not by every relay
#: on its way to the coordinator.
RELAY_SLACK_S = 5.0


class FleetTimeout(RuntimeError):
    """A group gave no answer at all within the deadline (there is nothing to reuse)."""


class SiteGroupLost(RuntimeError):
    """A group's actor crashed more often than the fleet may recover it."""


class RoundFailed(RuntimeError):
    """A broadcast round in which some groups did not answer (crashed or late).

    Attributes
    ----------
    groups : list of int
        The groups that did not answer.
    sites : list of str
        Their sites.
    """

    def __init__(self, groups: list[int], sites: list[str], reason: str) -> None:
        super().__init__(f"site group(s) with sites {sites} did not answer: {reason}")
        self.groups = groups
        self.sites = sites


class RayFleet:
    """Site-group actors reached through Ray.

    Per scatter round: one ``method_scatter.remote`` per group whose previous call has
    finished, then one
    ``ray.wait`` for all outstanding calls with the deadline ``timeout_s``. A group that has
    not answered by then keeps its last proposal (counted as late); its call stays
    outstanding and its answer is used in a later iteration — a group is never sent a second
    call while one is running, so calls never pile up in its queue.

    Parameters
    ----------
    handles : sequence of ray actor handles
        One per group, each exposing the :class:`SiteGroupLike` methods.
    group_site_ids : sequence of sequence of str
    timeout_s : float
        Deadline of one iteration's wait.
    setup_timeout_s : float
        Deadline of registration and of the first iteration (sites build their QPs).
    restarts : int
        Crashes of one group the fleet recovers from (the actors' ``max_restarts``).
    tree : AggregationTree, optional
        Which groups relay which in :meth:`aggregate` (by default
        :meth:`AggregationTree.k_ary`, flat up to its fan-in).
    """

    def __init__(
        self,
        handles: Sequence[GroupHandle],
        group_site_ids: Sequence[Sequence[str]],
        *,
        timeout_s: float = 120.0,
        setup_timeout_s: float = 600.0,
        restarts: int = 0,
        tap: Tap | None = None,
        tree: AggregationTree | None = None,
    ) -> None:
        if len(handles) != len(group_site_ids):
            raise ValueError("one list of site ids per actor handle")
        self.tap = tap
        self.handles = list(handles)
        self.tree = _tree_for(tree, len(self.handles))
        #: Each top node's relay plan in the object store (``None``: a leaf at the top),
        #: put on the first relayed round.
        self._relay_plans: list[_Ref | None] | None = None
        self._slots = _Slots([tuple(g) for g in group_site_ids])
        self.timeout_s = float(timeout_s)
        self.setup_timeout_s = float(setup_timeout_s)
        self._pending: list[_Ref | None] = [None] * len(self.handles)
        self._last: np.ndarray | None = None
        self._has_answered = [False] * len(self.handles)
        self.late_count = 0
        # The scatter's sticky values in force (per row), with a token that changes when
        # they do, and the token (or scalar) each group was last sent.
        self._sticky: tuple[np.ndarray, object] | None = None
        self._sticky_sent: list[tuple[str, object] | None] = [None] * len(self.handles)
        if restarts < 0:
            raise ValueError("restarts must be >= 0")
        self.restarts = int(restarts)
        #: Crashes seen per group (over the fleet's life, as Ray counts ``max_restarts``).
        self.crashes = [0] * len(self.handles)
        self._lost_state = [False] * len(self.handles)
        self._failing_since: list[float | None] = [None] * len(self.handles)
        # What a restarted actor must be told again: the registration, the run's begin,
        # and where its horizon is — ``steps`` after ``anchor`` (None: the start it was
        # created with). The registration's scales are in the store only when large.
        self._registration: tuple[CouplingLayout, np.ndarray | _Ref] | None = None
        self._begun: MethodBegin | None = None
        self._window: tuple[int, datetime | str | None] = (0, None)
        #: Seconds each group took to answer the last call it answered in time.
        self._answer_s: dict[int, float] = {}
        #: Calls posted (:meth:`post`) whose answers the next broadcast checks.
        self._posted: tuple[str, list[_Ref]] | None = None

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self._slots.site_ids

    def _get(self, refs: list[_Ref], timeout: float) -> list[Any]:
        import ray

        return ray.get(refs, timeout=timeout)

    def _timed_get(
        self,
        refs: list[_Ref],
        timeout: float,
        decode: Callable[[Any], Any] | None = None,
        sent: float | None = None,
    ) -> tuple[list[Any], list[float]]:
        r"""``ray.get`` with the seconds each answer took to arrive after ``sent`` (the
        ``time.perf_counter()`` before the calls were submitted; default: this call).

        Answers are taken as they arrive: each call's future, on completion, queues its index
        with the time, and this thread reads the queue (not one ``ray.wait`` per answer, each
        a round trip into Ray's core worker) and ``decode``\ s the answer while the others
        are still coming.

        Raises ``GetTimeoutError`` when an answer is missing at the deadline, or a call's error
        as soon as it arrives, as ``ray.get`` would raise it.
        """
        import ray

        # A group may start (and finish) before this line: its seconds count from its call.
        t0 = time.perf_counter() if sent is None else sent
        arrivals: SimpleQueue[tuple[int, float]] = SimpleQueue()
        futures = [ref.future() for ref in refs]
        for index, future in enumerate(futures):
            future.add_done_callback(
                lambda _, index=index: arrivals.put((index, time.perf_counter()))
            )
        seconds = [math.nan] * len(refs)
        answers: list[Any] = [None] * len(refs)
        for _ in refs:
            try:
                index, at = arrivals.get(timeout=max(t0 + timeout - time.perf_counter(), 0.0))
            except Empty:
                raise ray.exceptions.GetTimeoutError(f"no answer within {timeout:g} s") from None
            seconds[index] = at - t0
            error = futures[index].exception()
            if error is not None:
                raise error
            answer = futures[index].result()
            answers[index] = answer if decode is None else decode(answer)
        return answers, seconds

    def answer_seconds(self) -> dict[str, float]:
        """Seconds each site's group took to answer the last call (:class:`FleetReply`)."""
        return {
            sid: seconds
            for g, seconds in self._answer_s.items()
            for sid in self._slots.group_sites[g]
        }

    def _sticky_arg(self, g: int, value: Sticky) -> Sticky:
        """What to send group ``g`` of a scatter's sticky part: ``None`` when it has it.

        Calls to one actor run in the order they were submitted, so a group that was sent a
        value applies it before any later call; per-row values change only every few
        rounds, and most calls carry nothing but the slices.
        """
        if value is None:
            return None
        key = ("scalar", float(value)) if np.ndim(value) == 0 else None
        sent = self._sticky_sent[g]
        if key is not None:
            if sent == key:
                return None
            self._sticky_sent[g] = key
            return float(value)
        if self._sticky is None or not np.array_equal(self._sticky[0], value):
            self._sticky = (np.array(value, dtype=float), object())
        token = ("rows", self._sticky[1])
        if sent == token:
            return None
        self._sticky_sent[g] = token
        return self._sticky[0]

    def register(self, layout: CouplingLayout, row_scale: np.ndarray) -> list[np.ndarray]:
        import ray

        scale = np.asarray(row_scale, dtype=float)
        # Small (a layout is a few numbers, the scales one float per coupling row): inside
        # each call. An object in the store would cost every remote site a fetch from the
        # driver's node — lookup, pull, transfer: ~0.4 s a cycle at 41 ms of RTT
        # (BENCHMARKS.md, issue 24) for 5 kB. Only scales too large to go inline go there,
        # once for all groups.
        scale_arg = ray.put(scale) if scale.nbytes > INLINE_ARGUMENT_BYTES else scale
        self._registration = (layout, scale_arg)
        self._begun = None
        self._lost_state = [False] * len(self.handles)
        refs = [h.register.remote(layout, scale_arg) for h in self.handles]
        try:
            registered = self._get(refs, self.setup_timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as error:
            # A group crashed (or restarts) between the last round and this registration:
            # the caller recovers it like one lost in a round (serve keeps its plan).
            raise self._round_failed("register", refs, error) from error
        supports: dict[str, np.ndarray] = {}
        for g, answer in enumerate(registered):
            if self.tap is not None:
                self.tap("register", g, answer)
            supports.update(answer)
        self._pending = [None] * len(self.handles)
        self._has_answered = [False] * len(self.handles)
        out = self._slots.set_supports(supports)
        self._last = np.zeros(self._slots.n_entries)
        return out

    def begin(self, message: MethodBegin, *, rejoin: bool = False) -> list[bytes]:
        """Set up a run on every group (``rejoin``: keeping the iterates groups hold); the
        groups' public keys. A group restarted later begins the run again
        (:meth:`_restore`)."""
        self._begun = message
        # The begin sets the sites' own starting values: the next scatter sends its sticky
        # part again rather than trust what an earlier run sent.
        self._sticky_sent = [None] * len(self.handles)
        return answers_of(
            self.broadcast("method_rejoin" if rejoin else "method_begin", message), bytes
        )

    def scatter(self, request: ScatterRequest) -> FleetReply:
        """One scatter round with the deadline: each group whose previous call finished gets
        its sites' slices; a group later than the deadline keeps its previous answer
        (counted late) and its call stays outstanding."""
        import ray

        iteration = request.iteration

        assert self._last is not None, "register the fleet first"
        t0 = time.perf_counter()
        for g, handle in enumerate(self.handles):
            if self._pending[g] is None:
                if self._lost_state[g]:
                    self._restore(g)
                self._pending[g] = handle.method_scatter.remote(
                    request.for_group(
                        self._slots.pack(g, _stacked(request)),
                        self._sticky_arg(g, request.sticky),
                    )
                )
        t1 = time.perf_counter()
        outstanding = [(g, ref) for g, ref in enumerate(self._pending) if ref is not None]
        # Until a group has answered once there is no proposal to reuse: wait longer.
        patient = not all(self._has_answered)
        timeout = self.setup_timeout_s if patient else self.timeout_s
        refs = [ref for _, ref in outstanding]
        crashed: list[tuple[int, Exception]] = []
        self._answer_s = {}
        try:
            # The usual case, all groups in time.
            answers, seconds = self._timed_get(refs, timeout)
            self._answer_s = {g: s for (g, _), s in zip(outstanding, seconds, strict=True)}
            done = outstanding
            ready_set = set(refs)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            # A group is late or its actor died: wait for the others until the deadline
            # (already passed after a timeout), then take the ready answers one by one.
            remaining = max(0.0, timeout - (time.perf_counter() - t1))
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=remaining)
            ready_set = set(ready)
            done, answers, crashed = self._fetch_each(outstanding, ready_set, timeout)
        t2 = time.perf_counter()
        served = self._last.copy()
        late: list[str] = []
        new_crashes: list[str] = []
        for g, error in crashed:
            if self._crashed(g, error):
                new_crashes.extend(self._slots.group_sites[g])
            late.extend(self._slots.group_sites[g])
        for (g, _), answer in zip(done, answers, strict=True):
            if self.tap is not None:
                self.tap("method_scatter", g, answer)
            self._pending[g] = None
            self._has_answered[g] = True
            self._failing_since[g] = None
            self._slots.unpack(g, answer.served, served)
            if answer.iteration != iteration:
                late.extend(self._slots.group_sites[g])
        lost = {g for g, _ in crashed}
        for g, ref in outstanding:
            if ref not in ready_set and g not in lost:
                if not self._has_answered[g]:
                    raise FleetTimeout(
                        f"site group {list(self._slots.group_sites[g])} gave no answer "
                        f"within {timeout:g} s"
                    )
                late.extend(self._slots.group_sites[g])
        self.late_count += len(late)
        self._last = served
        return FleetReply(
            iteration,
            served,
            tuple(late),
            t1 - t0,
            t2 - t1,
            tuple(new_crashes),
            answer_s=self.answer_seconds(),
        )

    def _fetch_each(
        self, outstanding: list[tuple[int, _Ref]], ready: set[_Ref], timeout: float
    ) -> tuple[list[tuple[int, _Ref]], list[Any], list[tuple[int, Exception]]]:
        """The ready answers one by one, separating the groups whose actor died."""
        import ray

        done: list[tuple[int, _Ref]] = []
        answers: list[Any] = []
        crashed: list[tuple[int, Exception]] = []
        for g, ref in outstanding:
            if ref not in ready:
                continue
            try:
                answers.append(self._get([ref], timeout)[0])
            except ray.exceptions.RayActorError as error:
                crashed.append((g, error))
                continue
            done.append((g, ref))
        return done, answers, crashed

    def _crashed(self, g: int, error: Exception) -> bool:
        """Book a failed call of group ``g``: recover the group before its next call, or give up.

        Returns whether this is a new crash (not a call refused while the actor restarts).

        A crash shows as ``ActorUnavailableError`` on the call that was running, and calls
        sent while Ray restarts the actor fail the same way: failures until the group's next
        answer count as one crash. ``ActorDiedError`` means Ray will not restart the actor
        (its ``max_restarts`` are used up). A group that is dead, stays unreachable longer
        than the setup deadline, or crashes more than :attr:`restarts` times, is lost.
        """
        import ray

        self._pending[g] = None
        now = time.perf_counter()
        since = self._failing_since[g]
        new = since is None
        if since is None:
            self.crashes[g] += 1
            self._failing_since[g] = since = now
        sites = list(self._slots.group_sites[g])
        if isinstance(error, ray.exceptions.ActorDiedError):
            raise SiteGroupLost(
                f"site group {sites} is lost: its actor died and Ray will not restart it "
                f"(restarts allowed: {self.restarts}): {error}"
            ) from error
        if self.crashes[g] > self.restarts:
            raise SiteGroupLost(
                f"site group {sites} crashed {self.crashes[g]} time(s); the fleet recovers "
                f"from {self.restarts}: {error}"
            ) from error
        if now - since > self.setup_timeout_s:
            raise SiteGroupLost(
                f"site group {sites} has not come back within {self.setup_timeout_s:g} s "
                f"of crashing: {error}"
            ) from error
        # One warning per crash; the calls that fail while Ray restarts the actor are routine.
        log.log(
            logging.WARNING if new else logging.DEBUG,
            "site group %s unreachable (crash %d of %d recoverable); reusing its last "
            "proposal and registering it again: %s",
            sites,
            self.crashes[g],
            self.restarts,
            error,
        )
        self._lost_state[g] = True
        return new

    def _restore(self, g: int) -> None:
        """Bring a restarted group back: its horizon, its registration, the run's begin.

        Only submitted; the group's next call runs after these.
        """
        assert self._registration is not None
        handle = self.handles[g]
        steps, anchor = self._window
        if anchor is not None:
            handle.shift.remote(0, anchor)
        if steps:
            handle.shift.remote(steps, None)
        layout, scale_arg = self._registration
        handle.register.remote(layout, scale_arg)
        if self._begun is not None:
            handle.method_begin.remote(self._begun)
        self._sticky_sent[g] = None
        self._lost_state[g] = False

    def drain(self) -> None:
        """Wait (bounded) for calls still running, so later calls find the groups idle."""
        import ray

        refs = [ref for ref in self._pending if ref is not None]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        self._pending = [None] * len(self.handles)

    def empty_round(self, request: EmptyRound) -> float:
        """Seconds of one empty round through :meth:`broadcast`: every group answers the zeros
        ``request`` asks for without computing — what a round costs beyond the computing of
        sites and coordinator."""
        t0 = time.perf_counter()
        self.broadcast("empty_round", request)
        return time.perf_counter() - t0

    def broadcast(self, call: GroupCall, message: object, *, indexed: bool = False) -> list[object]:
        """Call ``call`` on every group with one shared message; answers in group order.

        The message is pickled once (:class:`~thermoroute.common.method_protocol.PackedCall`)
        and goes inside the calls when small, else in the object store once
        (:data:`INLINE_ARGUMENT_BYTES`); each group answers through its ``packed_call``.

        A method with rounds of its own needs every group in every round: a group later than
        the deadline is waited for until the setup deadline, then restarted (``ray.kill``
        with restart) like a crashed one; the round then fails with :class:`RoundFailed`
        naming the groups to :meth:`recover`.
        """
        import ray

        self.drain()
        payload = _packed_payload(call, message)
        sent = time.perf_counter()
        refs = [
            h.packed_call.remote(payload, g) if indexed else h.packed_call.remote(payload)
            for g, h in enumerate(self.handles)
        ]
        try:
            answers, seconds = self._timed_get(refs, self.timeout_s, unpack_answer, sent)
            self._answer_s = dict(enumerate(seconds))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as error:
            raise self._round_failed(call, refs, error) from error
        self._check_posted()
        if self.tap is not None:
            for g, answer in enumerate(answers):
                self.tap(call, g, answer)
        return answers

    def post(self, call: GroupCall, message: object) -> None:
        """Call ``call(message)`` on every group without waiting for the answers.

        Calls from this process to one actor run in the order they were sent, so the next
        broadcast's calls run after these; it checks their answers once its own have come
        (a posted call costs no round trip of its own).
        """
        payload = _packed_payload(call, message)
        self._posted = (call, [h.packed_call.remote(payload) for h in self.handles])

    def _check_posted(self) -> None:
        """The answers of the last posted calls (done: later calls to each actor are), or
        the error of one that failed."""
        if self._posted is None:
            return
        call, refs = self._posted
        self._posted = None
        answers = [unpack_answer(a) for a in self._get(refs, self.timeout_s)]
        if self.tap is not None:
            for g, answer in enumerate(answers):
                self.tap(call, g, answer)

    def aggregate(
        self, call: GroupCall, message: object, *, indexed: bool = False
    ) -> list[Aggregate]:
        """A round whose answers are sums, through the tree: one answer per top node.

        The coordinator calls only the top nodes; a relay calls its children actor to actor
        (:func:`thermoroute.site_agent.relay.relay_round`) and answers its subtree's sum, or
        which of its groups crashed or missed its deadline. The round then fails with
        :class:`RoundFailed` naming them (late ones are restarted), so that the method
        recovers them and retries. A relay is as patient as :meth:`broadcast` is with a
        late group: it waits up to the setup deadline (plus :data:`RELAY_SLACK_S` per level
        of relays below it) before naming a child late.
        """
        if self.tree.is_flat:
            return answers_of(self.broadcast(call, message, indexed=indexed), Aggregate)
        import ray

        self.drain()
        plans = self._plans()
        # Boxed: every relay hands the packed call on as it is (the bytes, or their
        # reference when large), not its value.
        box = [_packed_payload(call, message)]
        top = self.tree.top
        refs = []
        for g, plan in zip(top, plans, strict=True):
            handle = self.handles[g]
            if plan is not None:
                refs.append(handle.relay.remote(box, plan, indexed))
            elif indexed:
                refs.append(handle.packed_call.remote(box[0], g))
            else:
                refs.append(handle.packed_call.remote(box[0]))
        wait_s = self.setup_timeout_s + max(self.tree.height(g) for g in top) * RELAY_SLACK_S
        t0 = time.perf_counter()
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
        seconds = time.perf_counter() - t0
        arrived = set(ready)
        answers: list[Aggregate] = []
        failed: list[int] = []
        late: list[int] = []
        reasons: list[str] = []
        for g, ref in zip(top, refs, strict=True):
            if ref not in arrived:
                late.append(g)
                reasons.append(f"relay {g} gave no answer within {wait_s:g} s")
                continue
            try:
                answer = self._get([ref], self.timeout_s)[0]
            except ray.exceptions.RayActorError as error:
                failed.append(g)
                reasons.append(str(error).strip().splitlines()[0])
                continue
            if isinstance(answer, RelayAnswer):
                if answer.answer is None:
                    failed.extend(answer.crashed)
                    late.extend(answer.late)
                    reasons.append(answer.reason)
                    continue
                answer = answer.answer
            else:  # a group without children: its packed answer
                answer = unpack_answer(answer)
            answers.append(aggregate_of(g, answer))
        if failed or late:
            for g in late:
                self._restart_late(g, f"relayed {call}")
            groups = sorted(failed + late)
            sites = [s for g in groups for s in self._slots.group_sites[g]]
            raise RoundFailed(groups, sites, reasons[0])
        self._answer_s = {g: seconds for t in top for g in self.tree.subtree(t)}
        if self.tap is not None:
            for g, answer in zip(top, answers, strict=True):
                self.tap(call, g, answer)
        return answers

    def _plans(self) -> list[_Ref | None]:
        """Each top node's :class:`RelayPlan` in the object store, put once (every plan
        below a relay is put once too and passed by reference)."""
        import ray

        def plan_of(g: int) -> _Ref | None:
            children = self.tree.children[g]
            if not children:
                return None
            wait_s = self.setup_timeout_s + (self.tree.height(g) - 1) * RELAY_SLACK_S
            kids = tuple(RelayChild(c, self.handles[c], plan_of(c)) for c in children)
            return ray.put(RelayPlan(g, kids, wait_s))

        if self._relay_plans is None:
            self._relay_plans = [plan_of(g) for g in self.tree.top]
        return self._relay_plans

    def _restart_late(self, g: int, round_kind: str) -> None:
        """Restart group ``g``, which missed a round's deadline (``ray.kill`` with restart:
        Ray brings the actor back, :meth:`recover` re-registers it)."""
        import ray

        log.warning(
            "site group %s missed the deadline of a %s round; restarting it",
            list(self._slots.group_sites[g]),
            round_kind,
        )
        ray.kill(self.handles[g], no_restart=False)

    def _round_failed(self, call: str, refs: list[_Ref], error: Exception) -> RoundFailed:
        """The failure of a round that did not complete: groups later than the setup
        deadline are restarted (``ray.kill`` with restart) like crashed ones; every group that
        crashed or was late is named, for :meth:`recover`."""
        import ray

        _, late = ray.wait(refs, num_returns=len(refs), timeout=self.setup_timeout_s)
        failed = []
        for g, r in enumerate(refs):
            if r in late:
                self._restart_late(g, call)
                failed.append(g)
                continue
            try:
                self._get([r], self.timeout_s)
            except ray.exceptions.RayActorError:
                failed.append(g)
        sites = [s for g in failed for s in self._slots.group_sites[g]]
        return RoundFailed(failed, sites, str(error).splitlines()[0])

    def recover(self, groups: Sequence[int]) -> None:
        """Bring back groups whose actor crashed in a broadcast round, before a retry.

        Each counts as a crash (at most :attr:`restarts` per group); the fleet waits until
        Ray has restarted the actor (within the setup deadline), then moves it to the
        current horizon and registers it again (:meth:`_restore`).

        Raises
        ------
        SiteGroupLost
            A group crashed more often than allowed, died for good, or did not come back.
        """

        for g in groups:
            self.crashes[g] += 1
            sites = list(self._slots.group_sites[g])
            if self.crashes[g] > self.restarts:
                raise SiteGroupLost(
                    f"site group {sites} crashed {self.crashes[g]} time(s); the fleet "
                    f"recovers from {self.restarts}"
                )
            log.warning(
                "site group %s crashed (crash %d of %d recoverable); waiting for it to restart",
                sites,
                self.crashes[g],
                self.restarts,
            )
            failure = restart_failure(self.handles[g], self.timeout_s, self.setup_timeout_s)
            if failure is not None:
                raise SiteGroupLost(f"site group {sites} {failure}")
            self._restore(g)
        self._pending = [None] * len(self.handles)

    def refresh(self, start: datetime | str) -> list[RefreshAnswer]:
        """Move every group to the horizon from ``start``, each site re-reading its data
        (``thermoroute serve``); a restarted group is later moved there too (:meth:`_restore`).

        Raises :class:`RoundFailed` naming the groups that did not answer (:meth:`recover`).
        """
        self._window = (0, start)
        return answers_of(self.broadcast("refresh", start), RefreshAnswer)

    def shift(self, steps: int, start: datetime | str | None = None) -> None:
        self.drain()
        moved, anchor = self._window
        self._window = (0, start) if start is not None else (moved + int(steps), anchor)
        refs = [h.shift.remote(steps, start) for h in self.handles]
        self._get(refs, self.setup_timeout_s)

    def close(self) -> None:
        self.drain()
