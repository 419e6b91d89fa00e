"""Exchange ADMM, a site group's side: every hosted site solves its proximal subproblem.

Per iteration the group receives its sites' targets ``z_i − u`` (an
:class:`~thermoroute.common.admm_protocol.AdmmRequest`, scattered by the coordinator's fleet) and
answers each site's served demand ``A_i x_i`` on its support rows
(:meth:`thermoroute.site_agent.agent.SiteAgent.solve`: the subproblem, its OSQP object and the
iterate the site reports stay with the site). Nothing is masked: each answer is the site's own
slice of the coupling rows, which the coordinator needs to update its allocation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from thermoroute.common.admm_protocol import AdmmAnswer, AdmmRequest, AdmmSiteSettings
from thermoroute.site_agent.methods import HostedSites, SiteHandler


class GroupAdmm:
    """The hosted sites' side of one ADMM run.

    Parameters
    ----------
    sites : HostedSites
    settings : AdmmSiteSettings
        The initial penalty, set on every site's subproblem now.
    """

    def __init__(self, sites: HostedSites, settings: AdmmSiteSettings) -> None:
        self._sites = sites
        self._ids = tuple(agent.site_id for agent in sites.agents)
        for agent in sites.agents:
            agent.set_penalty(settings.rho)
        sizes = [agent.subproblem.support.size for agent in sites.agents]
        ends = np.cumsum(sizes)
        #: Each site's slice of a concatenated target or answer, in the group's order.
        self.offsets = {
            sid: slice(int(end - size), int(end))
            for sid, size, end in zip(self._ids, sizes, ends, strict=True)
        }

    @property
    def started(self) -> bool:
        # ADMM's sites need no starting round: their subproblems hold their iterate.
        return True

    def new_key(self) -> bytes:
        return b""  # nothing is masked

    def start(self, message: object, group_index: int) -> object:
        raise TypeError("exchange ADMM has no start round")

    def handle(self, request: object) -> object:
        raise TypeError("exchange ADMM's rounds are scatter rounds (method_scatter)")

    def shift(self, steps: int) -> None:
        """The sites' subproblems shift their own warm starts (``SiteAgent.shift``)."""

    def _targets(self, targets: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(targets, Mapping):
            missing = [s for s in self._ids if s not in targets]
            if missing:
                raise ValueError(f"no target for sites {missing}")
            return {s: np.asarray(targets[s], dtype=float) for s in self._ids}
        flat = np.asarray(targets, dtype=float)
        total = sum(sl.stop - sl.start for sl in self.offsets.values())
        if flat.shape != (total,):
            raise ValueError(f"concatenated targets have shape {flat.shape}, expected ({total},)")
        return {s: flat[self.offsets[s]] for s in self._ids}

    def scatter(self, request: AdmmRequest) -> AdmmAnswer:
        """Solve every hosted site for one iteration (:meth:`SiteAgent.solve`).

        Parameters
        ----------
        request : AdmmRequest
            Its ``targets`` are ``{site_id: target}``, or one array concatenating the sites'
            targets in the group's order (:attr:`offsets`); the penalty, tolerance and best
            iteration are the same for every site.
        """
        per_site = self._targets(request.targets)
        served = self._sites.map(
            lambda agent: agent.solve(
                request.iteration,
                request.penalty,
                per_site[agent.site_id],
                request.eps,
                request.best_iteration,
            )[1],
            self._sites.agents,
        )
        return AdmmAnswer(int(request.iteration), dict(zip(self._ids, served, strict=True)))


def begin_admm(sites: HostedSites, previous: SiteHandler | None, settings: object) -> GroupAdmm:
    """:class:`~thermoroute.site_agent.methods.SiteHandlerFactory` of exchange ADMM (a run
    keeps nothing of the previous one: the sites' subproblems hold their warm starts)."""
    if not isinstance(settings, AdmmSiteSettings):
        raise TypeError(f"exchange ADMM's sites begin with AdmmSiteSettings, not {settings!r}")
    return GroupAdmm(sites, settings)
