"""A site's side of cleaning a converged iterate of its residues.

A method stopped at a tolerance leaves tiny flows on pairs the optimum does not use (the interior
point on every allowed pair, ADMM wherever its last inner solves left them). The site drops the
flows below a share of their row's demand and tells the coordinator, summed per row, what it dropped
and how much more its remaining flows could carry within its spare capacity; the coordinator answers
one factor per row (:func:`thermoroute.common.report_protocol.repair_factors`) that puts the dropped
volume back on each row's remaining servers. Nothing of the site's capacity leaves it but those row
sums, and those only inside the fleet's masked sum.

The same arithmetic serves the interior point's ``clean``/``finish`` rounds
(:mod:`thermoroute.site_agent.ipm`) and ADMM's end of run (:mod:`thermoroute.site_agent.agent`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thermoroute.site_agent.subproblem import SiteQp


@dataclass(frozen=True)
class CleanedFlows:
    """A site's iterate with its tiny flows dropped, pending the coordinator's factors.

    Attributes
    ----------
    original : ndarray (n,)
        The iterate before cleaning [scaled units].
    kept : ndarray (n,)
        It with the dropped flows set to zero.
    allowance : ndarray (n,)
        How much each kept flow may grow, as a share of itself: ``min(spare_t / load_t, 1)``
        of its step (the spare capacity shared in proportion to the load).
    dropped : ndarray (m_i,)
        Dropped served demand on the site's support rows [scaled units].
    absorb : ndarray (m_i,)
        What the kept flows could carry more on the support rows [scaled units].
    flows : ndarray of bool (n,)
        Which variables are flows; the others (a v1.1 site's GPUs powered beyond its load)
        are never dropped nor scaled.
    """

    original: np.ndarray
    kept: np.ndarray
    allowance: np.ndarray
    dropped: np.ndarray
    absorb: np.ndarray
    flows: np.ndarray

    def finished(self, factor: np.ndarray, restore: np.ndarray) -> np.ndarray:
        """The final iterate, given each variable's row factor and restore flag.

        On a restored row the dropped flows come back and every flow is scaled by the
        factor; on the others each kept flow grows by ``factor · allowance`` of itself.
        """
        back = np.asarray(restore, dtype=bool)
        factor = np.asarray(factor, dtype=float)
        xi = np.where(back, self.original, self.kept)
        finished = xi * np.where(back, factor, 1.0 + factor * self.allowance)
        return np.where(self.flows, finished, self.original)


def drop_small_flows(qp: SiteQp, xi: np.ndarray, threshold: np.ndarray) -> CleanedFlows:
    """Drop the flows of ``xi`` below ``threshold`` (one per variable, in the row's units).

    Parameters
    ----------
    qp : SiteQp
        The site's problem (its load, capacity and served-demand maps).
    xi : ndarray (n,)
        The iterate [scaled units; a deferrable variable in its row's units too, so one
        threshold per row serves every variable].
    threshold : ndarray (n,)
        ``share · |b_r|`` of each variable's row.
    """
    xi = np.maximum(np.asarray(xi, dtype=float), 0.0)
    flows = qp.coefficient > 0
    tiny = (xi < threshold) & flows
    kept = np.where(tiny, 0.0, xi)
    allowance = qp.spare_share(kept)
    return CleanedFlows(
        original=xi,
        kept=kept,
        allowance=allowance,
        dropped=qp.served(np.where(tiny, xi, 0.0)),
        absorb=qp.served(allowance * kept),
        flows=flows,
    )
