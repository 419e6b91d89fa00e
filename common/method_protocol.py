"""What every distributed method's messages have in common, coordinator ↔ site group.

A method is one coordinator module and one site module (``thermoroute.coordinator.methods``
registers the coordinator side by name; the coordinator side names its site side in
:class:`MethodBegin`). Between them the fleet carries messages of a few generic kinds — the
calls a site group answers (:data:`GroupCall`):

* ``method_begin`` (:class:`MethodBegin`) — set up a run: the group builds the method's site
  handler from its hosted sites and answers a fresh public key (empty when the method does
  not mask its answers);
* ``method_rejoin`` — the same after another group crashed, keeping this group's iterate;
* ``method_start`` — the run's starting point, one message to all, indexed by group;
* ``method_round`` — one round: one message to all, one (masked) sum back per group;
* ``method_scatter`` (:class:`ScatterRequest`) — one round in which each group gets its own
  slice of a stacked vector and answers its own sites' slices; a group that misses the
  deadline keeps its previous answer (the fleet tolerates late groups here, as exchange ADMM
  does);
* the end of the run (``report_keys``, ``final_report``, ``clean_report``,
  ``finish_report``: :mod:`thermoroute.common.report_protocol`) and ``refresh``
  (:mod:`thermoroute.common.service_protocol`), the same for every method;
* ``empty_round`` (:class:`EmptyRound`) — a round without computing: the group answers zeros
  of a given size (the benchmarks' floor of a round).

Over Ray a broadcast's call travels packed (:class:`PackedCall`, answered by
:meth:`PackedCalls.packed_call`): the message pickled once for every group, the answer pickled
by the group.

Nothing here knows a particular method or Ray.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, Self, get_args

import numpy as np

#: The calls a coordinator's fleet makes on every site group with one message
#: (:meth:`thermoroute.coordinator.fleet.Fleet.broadcast`).
GroupCall = Literal[
    "method_begin",
    "method_rejoin",
    "method_start",
    "method_round",
    "report_keys",
    "final_report",
    "clean_report",
    "finish_report",
    "refresh",
    "empty_round",
]


@dataclass(frozen=True)
class MethodBegin:
    """Coordinator → group: set up a run of a method.

    Attributes
    ----------
    method : str
        The method's registry name (for messages and logs).
    site_handler : str or callable
        ``"module:factory"``: the method's site side, imported by the group from its own
        installation (a product method sends a name, not code); or, for a method defined
        outside the product (a script, a test), the factory itself, pickled with the
        message. The factory follows ``thermoroute.site_agent.methods.SiteHandlerFactory``.
    settings : object, optional
        What the method's sites need to know before the first round (exchange ADMM: the
        initial penalty); ``None`` when nothing.
    """

    method: str
    site_handler: str | Callable[..., object]
    settings: object = None


@dataclass(frozen=True)
class EmptyRound:
    """Coordinator → groups: answer ``values`` zeros as a round's sum would carry them
    (``uint64 (2, values)`` masked, ``float64 (values,)`` in the clear), computing nothing.

    What one round costs beyond the computing of sites and coordinator: the floor the
    benchmarks compare a round with (``bench/methods_bench.py``).
    """

    values: int
    masked: bool = True

    def answer(self) -> np.ndarray:
        """The zeros a group answers."""
        if self.masked:
            return np.zeros((2, self.values), dtype=np.uint64)
        return np.zeros(self.values)


@dataclass(frozen=True)
class PackedCall:
    """A broadcast's call as the fleet sends it over Ray: pickled once, the same bytes to every
    group (by the fleet, with Ray's cloudpickle: a :class:`MethodBegin` may carry a factory
    defined outside the product, pickled by value).

    Ray serialises each call's argument again for every group, with a serialiser that costs
    more than ``pickle`` for a small message holding arrays, and likewise each answer: about
    2 ms of an 8-group round on the 2-core machine (BENCHMARKS.md, issue 24).
    """

    call: GroupCall
    message: object


#: Answers whose pickle is larger go back as they are (:class:`LargeAnswer`): Ray hands
#: their arrays over with fewer copies than ``pickle`` (an 8-group round answering 657 kB each
#: took 23 ms pickled against 17 ms; at 115 kB, 9.1 ms against 10.3 ms).
PACKED_ANSWER_BYTES = 256 * 1024


@dataclass(frozen=True)
class LargeAnswer:
    """A packed call's answer too large to pickle (:data:`PACKED_ANSWER_BYTES`), as is."""

    answer: object


def unpack_answer(answer: bytes | LargeAnswer) -> object:
    """What a group answered a :class:`PackedCall`."""
    return answer.answer if isinstance(answer, LargeAnswer) else pickle.loads(answer)


class PackedCalls:
    """A site group's entry for packed calls (mixed into every group class the fleet reaches
    over Ray)."""

    def packed_call(self, payload: bytes, *group_index: int) -> bytes | LargeAnswer:
        """Answer the :class:`PackedCall` in ``payload`` (with the group's index for an
        indexed broadcast); the answer pickled, or as is when large (:func:`unpack_answer`)."""
        packet = pickle.loads(payload)
        if not isinstance(packet, PackedCall) or packet.call not in get_args(GroupCall):
            raise TypeError(f"not a packed group call: {type(packet).__name__}")
        answer = getattr(self, packet.call)(packet.message, *group_index)
        packed = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        return packed if len(packed) <= PACKED_ANSWER_BYTES else LargeAnswer(answer)


#: What the fleet sends a group only when it changed since the last scatter (one value
#: for every row, or one per row).
Sticky = float | np.ndarray | None


class ScatterRequest(Protocol):
    """One scatter round: a stacked vector, each group receiving only its sites' slices.

    ``targets`` is stacked over every site's support entries (sites in group order) when the
    method hands it to its fleet; :meth:`for_group` gives the message one group receives.
    ``sticky`` is sent to a group only when it differs from what that group was sent last
    (per-row values change every few rounds; most messages carry nothing but the slices).
    """

    @property
    def iteration(self) -> int: ...

    @property
    def targets(self) -> np.ndarray | Mapping[str, np.ndarray]: ...

    @property
    def sticky(self) -> Sticky: ...

    def for_group(self, targets: Mapping[str, np.ndarray], sticky: Sticky) -> Self:
        """The request one group receives: its sites' slices, and the sticky part or
        ``None`` (unchanged)."""
        ...


class ScatterAnswer(Protocol):
    """Group → coordinator: the round answered and each hosted site's slice."""

    @property
    def iteration(self) -> int: ...

    @property
    def served(self) -> Mapping[str, np.ndarray]: ...
