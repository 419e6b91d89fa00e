"""The end of a distributed run, coordinator ↔ site group: decisions out, detail kept home.

After the last iteration the coordinator needs three things: the schedule (the decision it
publishes), the fleet's totals, and — for ADMM's ``convergence.csv`` — the fleet objective at
each iterate. None of that needs a site's own physics or costs, so (docs/model.md §9–11):

1. ``report_keys(run_id)`` — each group draws a fresh X25519 key pair for this report and
   answers its public half (as the interior point's ``method_begin`` does);
2. ADMM only — its iterate carries residues, flows far below any decision — two cleaning
   rounds on the reported iterate: ``clean_report(CleanRequest, group_index)``, each group
   answering its sites' served demand, dropped flows and spare room per row, summed and
   masked like the report; the coordinator's :func:`repair_factors`; and
   ``finish_report(CleanFinish)``, after which each site's reported iterate is the cleaned
   one (the interior point cleans in its own rounds, :mod:`thermoroute.common.ipm_protocol`);
3. ``final_report(ReportRequest, group_index)`` — each group answers a :class:`GroupReport`:
   per site a :class:`SiteDecision` (its flows ``x``, which iterate they are, and counts of
   inner-solve trouble), plus one vector of *sums over its sites* laid out by
   :func:`report_fields` and masked by pairwise secure aggregation, so the coordinator can
   read only the fleet's sums. Each site writes its own detail (``site_steps.csv``, its
   totals, objective parts and history) under ``<output>/<site_id>/`` on its own node.

With ``share_details`` (the operator's ``--share-site-details``) a decision also carries the site's
full :class:`~thermoroute.site_agent.agent.SiteReport`-style detail and the coordinator writes the
per-site files of output format v1 as a central run does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thermoroute.common.evaluate import TOTAL_KEYS
from thermoroute.common.secure_aggregation import MaskingSetup

#: Fleet sums the coordinator learns (the mean TTFT is derived from two of them).
SUMMED_KEYS: tuple[str, ...] = (
    *(k for k in TOTAL_KEYS if k != "ttft_mean_ms"),
    "interactive_requests",
    "objective_aud",
)
#: The masks' round ids of the report and of ADMM's cleaning (beside the interior point's
#: rounds 0–5).
REPORT_ROUND = 7
CLEAN_ROUND = 8


def report_fields(history: int) -> tuple[tuple[str, int], ...]:
    """``(name, length)`` of the summed vector: the totals, then per requested iterate the
    objective and the number of sites that solved it (a site may have missed an iterate)."""
    return (*((k, 1) for k in SUMMED_KEYS), ("objective_at", history), ("solved_at", history))


def pack_report(values: Mapping[str, Any], history: int) -> np.ndarray:
    return np.concatenate(
        [np.atleast_1d(np.asarray(values[name], dtype=float)) for name, _ in report_fields(history)]
    )


def unpack_report(flat: np.ndarray, history: int) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for name, size in report_fields(history):
        out[name] = np.asarray(flat[at : at + size], dtype=float)
        at += size
    return out


@dataclass(frozen=True)
class ReportRequest:
    """The coordinator's request for the sites' results.

    Attributes
    ----------
    run_id : str
    iteration : int or None
        The iterate the method reports (ADMM: its best or last; the interior point: last).
    history_iterations : tuple of int
        Iterations whose fleet objective the coordinator asks for (ADMM; empty otherwise).
    masking : dict, optional
        ``{group index: MaskingSetup}``; ``None`` sums in the clear (a one-group fleet,
        where the sum is that group's own).
    output : str, optional
        Where each site writes ``<output>/<site_id>/`` (the run's ``OUT/sites``); a node
        that sets ``THERMOROUTE_SITE_OUTPUT`` writes there instead; ``None`` and no such
        setting: nothing is written.
    share_details : bool
        Whether each decision carries the site's detail (``--share-site-details``).
    """

    run_id: str
    iteration: int | None
    history_iterations: tuple[int, ...] = ()
    masking: Mapping[int, MaskingSetup] | None = None
    output: str | None = None
    share_details: bool = False


@dataclass(frozen=True)
class CleanRequest:
    """The coordinator's request to drop the reported iterate's residues (ADMM).

    Attributes
    ----------
    iteration : int or None
        The reported iterate (as in :class:`ReportRequest`).
    demand : ndarray (m,)
        The scaled demand ``b`` of every coupling row (sets each row's threshold).
    share : float
        Flows below ``share · |b_r|`` are dropped.
    masking : dict, optional
        As in :class:`ReportRequest` (the keys of ``report_keys``).
    """

    iteration: int | None
    demand: np.ndarray
    share: float
    masking: Mapping[int, MaskingSetup] | None = None


#: A group's answer to :class:`CleanRequest`: ``served``, ``dropped`` and ``absorb`` per
#: coupling row, concatenated, summed over its sites and masked when the request masks.
CLEAN_FIELDS = ("served", "dropped", "absorb")


@dataclass(frozen=True)
class CleanFinish:
    """The coordinator's factors (:func:`repair_factors`): each site finishes its cleaning."""

    factors: np.ndarray
    restore: np.ndarray


def repair_factors(
    demand: np.ndarray, served: np.ndarray, dropped: np.ndarray, absorb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row factors that put dropped flows back on each row's remaining servers.

    Row ``r`` lacks ``d_r = b_r − (Σ served − dropped)`` (the dropped flow and the last
    residual). Its remaining flows can carry ``absorb_r`` more within their sites' spare
    capacity; when ``|d_r| ≤ absorb_r`` every flow grows by ``d_r / absorb_r`` of its
    allowance — the row then meets its demand exactly and no site exceeds its capacity,
    whatever the other rows do. Else, when the dropped flow alone fits (``dropped_r ≤
    absorb_r``), the flows grow by ``dropped_r / absorb_r`` of their allowance: the row
    serves what it served before, without its residues. Else the row keeps its dropped
    flows (``restore``) and all of them are scaled by ``b_r / Σ served``.

    Returns
    -------
    factors : ndarray (m,)
    restore : ndarray of bool (m,)
    """
    deficit = demand - (served - dropped)
    exact = np.abs(deficit) <= absorb
    moved = ~exact & (dropped <= absorb)
    per_allowance = np.where(exact, deficit, dropped) / np.where(absorb > 0, absorb, 1.0)
    whole = np.where(served > 0, demand / np.where(served > 0, served, 1.0), 1.0)
    return np.where(exact | moved, per_allowance, whole), ~(exact | moved)


@dataclass
class SiteDecision:
    """One site's part of the decision, and only that (unless details are shared).

    Attributes
    ----------
    site_id : str
    iteration : int or None
        The iterate whose flows these are (``None``: the site never solved).
    best : bool
        Whether that is ADMM's best-iterate snapshot.
    x : ndarray (R, C, T)
        Requests per second routed to the site: the schedule, which the coordinator
        publishes.
    inner_approximate, inner_failed, inner_fallbacks : int
        Counts of inner solves that ended inaccurate, failed, or needed the fallback.
    detail : Any, optional
        The site's :class:`~thermoroute.site_agent.agent.SiteReport` — only with ``share_details``.
    """

    site_id: str
    iteration: int | None
    best: bool
    x: np.ndarray
    inner_approximate: int = 0
    inner_failed: int = 0
    inner_fallbacks: int = 0
    detail: Any = None


@dataclass
class GroupReport:
    """A group's answer to a :class:`ReportRequest`.

    Attributes
    ----------
    decisions : list of SiteDecision
        In the group's site order.
    sums : ndarray
        The sum over the group's sites of :func:`report_fields` — masked ``(2, n)`` words
        when ``masked``, else ``(n,)`` floats.
    masked : bool
    written : tuple of str
        The sites that wrote their own detail on their node.
    """

    decisions: list[SiteDecision]
    sums: np.ndarray
    masked: bool
    written: tuple[str, ...] = field(default_factory=tuple)
