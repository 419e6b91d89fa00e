"""A site group relaying its members' answers on Ray (:mod:`thermoroute.common.aggregation_tree`).

A relay is an ordinary site group that, for one round, forwards the coordinator's message
to its children (site-group actors: leaves called directly, relays through their own
:func:`relay_round`), answers the round itself, and sends its parent one sum: its own answer
plus its children's subtree sums, all masked (the masks cancel only in the fleet's sum, so it
reads nothing of its children's answers). A child that crashed or is late makes the relay
answer which groups failed instead of a sum, so the coordinator names them in its
:class:`~thermoroute.coordinator.fleet.RoundFailed`.

The only module of ``site_agent`` that calls Ray: a relay calls other actors. Ray is imported
when a relay runs, so an in-process group never needs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from thermoroute.common.aggregation_tree import (
    ObjectRef,
    RelayAnswer,
    RelayChild,
    RelayPlan,
    aggregate_of,
    sum_aggregates,
)
from thermoroute.common.method_protocol import PackedCalls, unpack_answer


def relay_round(
    own: PackedCalls, message: Sequence[bytes | ObjectRef], plan: RelayPlan, indexed: bool
) -> RelayAnswer:
    """One round through the relay ``own`` (a site group, in its actor).

    Parameters
    ----------
    own : site group
        The relay's own group, answering the round like any other (its ``packed_call``).
    message : sequence of one packed call
        The coordinator's :class:`~thermoroute.common.method_protocol.PackedCall`, boxed so
        that Ray hands it on as it is: the pickled bytes when small (inside every call, as a
        flat round sends them — no fetch from the coordinator's node, which costs remote
        sites several round trips), else a reference to them in the object store.
    plan : RelayPlan
    indexed : bool
        The call takes the group's fleet index too (``method_start``).

    Returns
    -------
    RelayAnswer
        The subtree's sum, or the groups of the subtree that crashed or were late.
    """
    import ray

    t0 = time.perf_counter()
    (payload,) = message
    pending: list[tuple[RelayChild, ObjectRef]] = []
    for child in plan.children:
        if child.plan is not None:
            pending.append((child, child.handle.relay.remote(message, child.plan, indexed)))
        elif indexed:
            pending.append((child, child.handle.packed_call.remote(payload, child.group)))
        else:
            pending.append((child, child.handle.packed_call.remote(payload)))
    packed: bytes = payload if isinstance(payload, bytes) else ray.get([payload])[0]
    own_answer = own.packed_call(packed, plan.group) if indexed else own.packed_call(packed)
    parts = [aggregate_of(plan.group, unpack_answer(own_answer))]
    refs = [r for _, r in pending]
    left = max(0.0, plan.wait_s - (time.perf_counter() - t0))
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=left)
    arrived = set(ready)
    crashed: list[int] = []
    late: list[int] = []
    reasons: list[str] = []
    for child, r in pending:
        if r not in arrived:
            late.append(child.group)
            reasons.append(f"site group {child.group} gave no answer within {plan.wait_s:g} s")
            continue
        try:
            answer = ray.get([r])[0]
        except ray.exceptions.RayActorError as error:
            crashed.append(child.group)
            reasons.append(str(error).strip().splitlines()[0])
            continue
        if not isinstance(answer, RelayAnswer):
            parts.append(aggregate_of(child.group, unpack_answer(answer)))
        elif answer.answer is not None:  # a relay's subtree: its sum, or who failed
            parts.append(answer.answer)
        else:
            crashed.extend(answer.crashed)
            late.extend(answer.late)
            reasons.append(answer.reason)
    if crashed or late:
        return RelayAnswer(None, tuple(crashed), tuple(late), reasons[0])
    return RelayAnswer(sum_aggregates(parts))
