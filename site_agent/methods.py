"""Site-side handlers of the distributed methods that use the fleet's generic rounds.

ADMM's sites solve their subproblem (:meth:`thermoroute.site_agent.group.SiteGroup.solve`); a method
with rounds of its own (:meth:`thermoroute.coordinator.fleet.Fleet.broadcast`) has a handler here,
built per run by a :class:`~thermoroute.site_agent.group.SiteGroup` from its sites' problems.

A handler takes ``(qps, layout, previous)``, ``previous`` being the group's handler of the
last run (a receding-horizon run may start from what it kept), and offers:
``new_key() -> bytes`` (a fresh masking key for the run, or after a group rejoined),
``started`` (whether its sites hold an iterate), ``start(message, group_index) -> answer``,
``handle(request) -> answer``, ``solutions() -> list of ξ`` (the hosted sites' final flows,
adopted by their subproblems after a request whose ``phase`` is ``"finish"``) and,
optionally, ``shift(steps)`` when the horizon moves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from thermoroute.common.coupling import CouplingLayout
from thermoroute.site_agent.ipm import GroupInteriorPoint
from thermoroute.site_agent.subproblem import SiteQp


def _interior_point(
    qps: Sequence[SiteQp], layout: CouplingLayout, previous: Any = None
) -> GroupInteriorPoint:
    warm = previous.warm if isinstance(previous, GroupInteriorPoint) else None
    return GroupInteriorPoint(qps, layout, warm=warm)


#: Handler factories by method name (the names of ``thermoroute.coordinator.methods.METHODS``).
SITE_METHODS: dict[str, Callable[[Sequence[SiteQp], CouplingLayout, Any], Any]] = {
    "ipm": _interior_point,
}
