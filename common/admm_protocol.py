"""The messages of exchange ADMM, coordinator ↔ site group (and inside a group, to a site).

The run begins with :class:`AdmmSiteSettings` (in a
:class:`~thermoroute.common.method_protocol.MethodBegin`); then one :class:`AdmmRequest` per
group per iteration (a :class:`~thermoroute.common.method_protocol.ScatterRequest`), one
:class:`AdmmAnswer` back: a site sends nothing but its served demand ``A_i x_i`` on its support
rows (docs/model.md §7, §10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

#: The outer penalty: one value for every coupling row, or one per row (n_rows,).
Penalty = float | np.ndarray

#: The penalty a site's subproblem is built with until a run sets its own (ADMM's default
#: initial ``ρ``; a method that only reads the subproblem's data never changes it).
DEFAULT_PENALTY = 8.0


@dataclass(frozen=True)
class AdmmRequest:
    """Coordinator → group (or group → site): solve iteration ``iteration``.

    Attributes
    ----------
    iteration : int
    targets : ndarray or dict
        ``z_i − u`` on the support rows [scaled units]: stacked over the fleet (what the loop
        hands its fleet), ``{site_id: target}`` or one array concatenating the group's sites
        (what a group receives), or one site's array (what a site receives).
    penalty : float or ndarray (n_rows,) or None
        The penalty ``ρ`` (or ``ρ w_r`` per row); ``None``: unchanged since the last request
        (the coordinator sends penalties only when they change).
    eps : float or None
        Inner tolerance from now on; the site's default when ``None``.
    best_iteration : int or None
        The coordinator's best iteration so far (a site keeps that iterate for its report).
    """

    iteration: int
    targets: np.ndarray | Mapping[str, np.ndarray]
    penalty: Penalty | None = None
    eps: float | None = None
    best_iteration: int | None = None

    @property
    def sticky(self) -> Penalty | None:
        """The penalty: sent to a group only when it changed (:class:`ScatterRequest`)."""
        return self.penalty

    def for_group(
        self, targets: np.ndarray | Mapping[str, np.ndarray], sticky: Penalty | None
    ) -> AdmmRequest:
        """The same request for one group or site: its own targets and penalty."""
        return replace(self, targets=targets, penalty=sticky)


@dataclass(frozen=True)
class AdmmSiteSettings:
    """What a group's sites need before the first round (:class:`MethodBegin`'s settings).

    Attributes
    ----------
    rho : float
        The initial outer penalty ``ρ`` of every site's subproblem.
    """

    rho: float


@dataclass(frozen=True)
class AdmmAnswer:
    """Group → coordinator: the iteration answered and each hosted site's served demand."""

    iteration: int
    served: Mapping[str, np.ndarray]
