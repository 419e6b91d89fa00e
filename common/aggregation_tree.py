"""Tree aggregation: relays sum their members' masked answers so the coordinator's inbound
bytes grow with the relays at the top, not with the site groups.

Every site group answers an interior-point round with one
:class:`~thermoroute.common.ipm_protocol.Aggregate`, masked with pairwise masks between
groups (:mod:`thermoroute.common.secure_aggregation`). Masked vectors sum like plain ones
(modulo ``2^128``) and the masks cancel only in the fleet's full sum, so a group can add its
members' masked answers to its own and forward one vector: it reads nothing of them, and the
coordinator reads the same fleet sum, to the bit.

The tree
--------
:meth:`AggregationTree.k_ary` builds it bottom up over the groups in fleet order: while more
than ``fan_in`` nodes are left at the top, each run of ``fan_in`` consecutive top nodes
becomes one node whose first member is the relay of the others. So no process — the
coordinator or a relay — takes in more than ``fan_in`` answers per level, and the
coordinator takes in at most ``fan_in`` per round; a fleet of at most ``fan_in`` groups is
flat. Consecutive groups are neighbours in the scenario's site order (a deployment lists its
sites by region), so a relay is usually near its members on the WAN.

What a relay sees (docs/model.md §11)
-------------------------------------
A relay sees its children's subtree sums, each masked; the coordinator sees only the top
nodes' sums. A combination of such sums unmasks only if the coefficients of every pairwise
mask cancel, i.e. if it is constant on every connected component of the masking graph
without the relay's own edges. :func:`~thermoroute.common.secure_aggregation.neighbour_graph`
contains a ring, so it stays connected without any one group: a relay (even together with
the coordinator) learns at most a multiple of the fleet sum without its own value — which a
relay alone never sees, since no relay's subtree is the whole fleet (a tree has at least two
top nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thermoroute.common.ipm_protocol import Aggregate
from thermoroute.common.secure_aggregation import add

#: Answers a node takes in per level by default: 1,000 one-site groups make 63 relays
#: under 4 top nodes, so the coordinator takes in 4 answers a round instead of 1,000.
DEFAULT_FAN_IN = 16


@dataclass(frozen=True)
class AggregationTree:
    """Which group relays which groups' answers.

    Attributes
    ----------
    children : tuple of tuple of int
        Per group (fleet order), the groups whose subtree sums it adds to its own answer,
        in the order it adds them; empty for a leaf.
    top : tuple of int
        The groups that answer the coordinator (every group when the tree is flat).
    """

    children: tuple[tuple[int, ...], ...]
    top: tuple[int, ...]

    @classmethod
    def flat(cls, n_groups: int) -> AggregationTree:
        """Every group answers the coordinator itself."""
        return cls(tuple(() for _ in range(n_groups)), tuple(range(n_groups)))

    @classmethod
    def k_ary(cls, n_groups: int, fan_in: int = DEFAULT_FAN_IN) -> AggregationTree:
        """Runs of ``fan_in`` consecutive top nodes under their first, level by level, until
        at most ``fan_in`` are left for the coordinator (flat for ``n_groups <= fan_in``)."""
        if fan_in < 2:
            raise ValueError("a relay needs a fan-in of at least 2")
        if n_groups < 1:
            raise ValueError("at least one group")
        children: list[list[int]] = [[] for _ in range(n_groups)]
        top = list(range(n_groups))
        while len(top) > fan_in:
            runs = [top[k : k + fan_in] for k in range(0, len(top), fan_in)]
            for run in runs:
                children[run[0]].extend(run[1:])
            top = [run[0] for run in runs]
        return cls(tuple(tuple(c) for c in children), tuple(top))

    @property
    def is_flat(self) -> bool:
        return len(self.top) == len(self.children)

    def subtree(self, group: int) -> tuple[int, ...]:
        """``group`` and every group below it, depth first."""
        out = [group]
        for child in self.children[group]:
            out.extend(self.subtree(child))
        return tuple(out)

    def height(self, group: int) -> int:
        """Levels of relays below ``group`` (0 for a leaf)."""
        return 1 + max((self.height(c) for c in self.children[group]), default=-1)


@dataclass(frozen=True)
class RelayAnswer:
    """A relay → its parent (the coordinator or a relay): its subtree's sum, or which
    groups of its subtree did not answer.

    Attributes
    ----------
    answer : Aggregate or None
        The relay's own answer plus its children's subtree sums (``None`` when one failed).
    crashed : tuple of int
        Groups (fleet indices) whose actor died or raised during the round.
    late : tuple of int
        Groups that had not answered by the relay's deadline (their call still runs).
    reason : str
        The first failure's first line, for the round's error message.
    """

    answer: Aggregate | None
    crashed: tuple[int, ...] = ()
    late: tuple[int, ...] = ()
    reason: str = ""


#: A Ray actor handle and an object reference: opaque here (this module knows nothing of
#: Ray); the coordinator's fleet makes them, a relay calls them.
ActorHandle = Any
ObjectRef = Any


@dataclass(frozen=True)
class RelayChild:
    """One child of a relay.

    Attributes
    ----------
    group : int
        Its fleet index (what a failure names; an indexed call's argument).
    handle : actor handle
    plan : ObjectRef or None
        Its own :class:`RelayPlan` in the object store (put once by the fleet); ``None`` for
        a leaf, which is called directly.
    """

    group: int
    handle: ActorHandle
    plan: ObjectRef | None


@dataclass(frozen=True)
class RelayPlan:
    """What a relay needs for a round: its place in the fleet, its children, its patience.

    Attributes
    ----------
    group : int
        The relay's own fleet index.
    children : tuple of RelayChild
    wait_s : float
        Seconds from the relay's call to the last child answer it waits for (longer for a
        relay of relays, so that a late group is named by the relay just above it).
    """

    group: int
    children: tuple[RelayChild, ...]
    wait_s: float


def aggregate_of(group: int, answer: object) -> Aggregate:
    """Group ``group``'s answer to a summed round, checked to be an :class:`Aggregate`: a
    group that answered anything else is a defect, named here (by the coordinator for the
    top nodes, by a relay for its children)."""
    if not isinstance(answer, Aggregate):
        raise TypeError(f"site group {group} answered a {type(answer).__name__}, not an Aggregate")
    return answer


def sum_aggregates(parts: Sequence[Aggregate]) -> Aggregate:
    """The sum of one round's answers, masked or in the clear, in the order given.

    Masked answers add modulo ``2^128`` (the masks stay in and cancel only in the fleet
    sum); answers in the clear add as floats.

    Raises
    ------
    ValueError
        No answers, or answers of different rounds or masking (a defect of the caller).
    """
    if not parts:
        raise ValueError("nothing to sum")
    first = parts[0]
    values = first.values.copy()
    for part in parts[1:]:
        if (part.iteration, part.phase, part.masked) != (
            first.iteration,
            first.phase,
            first.masked,
        ):
            raise ValueError(
                f"cannot sum a {part.phase} {part.iteration} answer (masked: {part.masked}) "
                f"into a {first.phase} {first.iteration} one (masked: {first.masked})"
            )
        values = add(values, part.values) if first.masked else values + part.values
    return Aggregate(first.iteration, first.phase, np.asarray(values), first.masked)
