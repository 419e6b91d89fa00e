"""The messages of the distributed interior-point method, coordinator ↔ site group.

Typed and small. The coordinator broadcasts one :class:`IpmRequest` per round (the same to every
group); every group answers one :class:`Aggregate`: the sum over its sites of the round's fields,
packed in the order :func:`round_fields` gives, masked when secure aggregation is on
(:mod:`thermoroute.common.secure_aggregation`) so that only the fleet sum can be read.

Rounds of one iteration
-----------------------
``newton``
    sites take the previous step, then send their Schur contribution ``A K⁻¹ Aᵀ`` (in the
    layout's :class:`~thermoroute.common.schur_pattern.SchurPattern`), the predictor right-hand side
    ``A K⁻¹ g_aff``, served demand ``A ξ``, the complementarity ``ξᵀz + sᵀw`` and its
    number of pairs, their objective (the fleet's is the sum; the duality gap is measured
    against it), a count of sites whose dual residual is not yet small, and what cleaning
    the iterate would do: per row, the flow each site would drop below the cleaning
    threshold and how much more its remaining flows could carry (their share of its spare
    capacity). The last ``newton`` round of a run is thereby also its cleaning round.
``predict``
    with the predictor price step: a histogram of the sites' longest feasible steps
    (:data:`STEP_GRID`), the coefficients of the predicted complementarity (a quadratic in
    the step), and the corrector right-hand side as ``rhs0 + σμ · rhs1``.
``correct``
    with the final price step and ``σμ``: the histogram of feasible steps again.
``centre`` and ``recentred`` (Gondzio's centrality correctors, opt-in)
    with a trial step longer than the one found, the sites send the right-hand side of a
    correction that pushes the complementarity products at the trial step back into a box
    around ``σμ``; with its price step, the histogram of the corrected direction's steps. The
    coordinator keeps the correction if it lengthens the step enough, and says so in the
    next request (``accept_correction``).
``finish``
    the per-row factors that put the dropped flow back. Posted without waiting for an
    answer: the calls that follow (the final reports) reach each group after it.

Each of ``newton``, ``predict`` and ``correct`` carries a decision only the coordinator can
take (a solve with the fleet's Schur complement, Mehrotra's ``σ``, the fleet's step length),
so an iteration needs all three; the step itself and the cleaning ride on them
(docs/model.md §13).

Each run opens with one exchange (:class:`IpmStart`): the sites start and answer their
first ``newton`` round with it (phase ``open``), together with the count of their sites
whose model v1.1 limits span several steps (a daily water allowance). If that count is not
zero the Schur complement must be sent on the pattern across steps
(:class:`thermoroute.common.schur_pattern.SchurPattern`): the coordinator then asks for the
first ``newton`` round again on that pattern, and every later request says so. A group
that rejoins after a crash answers a plain ``start`` (the count only).

Step lengths are a minimum over sites, which a sum cannot give; the sites send instead, for
every step on a fixed grid, whether it is infeasible for them. The sum counts the sites
that block each grid step, and the coordinator takes the longest step nobody blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from thermoroute.common.secure_aggregation import MaskingSetup

Phase = Literal["open", "start", "newton", "predict", "correct", "centre", "recentred", "finish"]

#: A number per answered phase, for the masks' nonces ``(IpmRequest.sequence, round id)``.
ROUND_IDS: dict[str, int] = {
    "newton": 0,
    "predict": 1,
    "correct": 2,
    "centre": 3,
    "recentred": 4,
    "start": 6,
    "open": 7,
}


def _step_grid(ratio: float = 0.98, smallest: float = 1e-10, closest: float = 1e-9) -> np.ndarray:
    """Steps ``0.5 r^k`` down to ``smallest`` and ``1 − 0.5 r^k`` up to ``1 − closest``, and 1.

    Relative resolution ``1 − r`` both for small steps and for ``1 − α`` near a full step,
    which is where an interior point spends its last iterations.
    """
    k_small = int(np.ceil(np.log(smallest / 0.5) / np.log(ratio)))
    k_near = int(np.ceil(np.log(closest / 0.5) / np.log(ratio)))
    low = 0.5 * ratio ** np.arange(k_small, 0, -1)
    high = 1.0 - 0.5 * ratio ** np.arange(0, k_near + 1)
    return np.concatenate([low, high, [1.0]])


#: Candidate step lengths, increasing; the step histogram has one count per entry.
STEP_GRID = _step_grid()


def blocked_steps(bound: float) -> np.ndarray:
    """One site's histogram entry: 1 where a grid step exceeds its longest feasible step."""
    return (bound < STEP_GRID).astype(float)


def longest_free_step(blocked: np.ndarray) -> float:
    """The longest grid step that no site blocks (0 if every one is blocked)."""
    free = np.flatnonzero(np.rint(blocked) == 0)
    return float(STEP_GRID[free[-1]]) if free.size else 0.0


def round_fields(phase: Phase, n_rows: int, pattern_size: int) -> tuple[tuple[str, int], ...]:
    """``(name, length)`` of every field a group sends in ``phase``, in packing order."""
    grid = STEP_GRID.size
    newton = (
        ("schur", pattern_size),
        ("rhs", n_rows),
        ("served", n_rows),
        ("complementarity", 1),
        ("pairs", 1),
        ("objective", 1),
        ("dual_pending", 1),
        ("dropped", n_rows),
        ("absorb", n_rows),
    )
    if phase == "newton":
        return newton
    if phase == "open":
        return (("across_steps", 1), *newton)
    if phase == "predict":
        return (("blocked", grid), ("poly", 3), ("rhs0", n_rows), ("rhs1", n_rows))
    if phase in ("correct", "recentred"):
        return (("blocked", grid),)
    if phase == "centre":
        return (("rhs", n_rows),)
    if phase == "start":
        return (("across_steps", 1),)
    return ()


def pack(phase: Phase, values: dict[str, np.ndarray], n_rows: int, pattern_size: int) -> np.ndarray:
    """Concatenate ``values`` in the order of :func:`round_fields`."""
    parts = []
    for name, size in round_fields(phase, n_rows, pattern_size):
        v = np.asarray(values[name], dtype=float).ravel()
        if v.size != size:
            raise ValueError(f"field {name!r} has {v.size} values, expected {size}")
        parts.append(v)
    return np.concatenate(parts) if parts else np.zeros(0)


def unpack(phase: Phase, flat: np.ndarray, n_rows: int, pattern_size: int) -> dict[str, np.ndarray]:
    """Split a packed vector back into named fields (scalars as length-1 arrays)."""
    out, at = {}, 0
    for name, size in round_fields(phase, n_rows, pattern_size):
        out[name] = flat[at : at + size]
        at += size
    if at != flat.size:
        raise ValueError(f"{flat.size} values for a {phase!r} round of {at}")
    return out


@dataclass(frozen=True)
class IpmSiteSettings:
    """What every site needs to know of the run's settings.

    Attributes
    ----------
    eps_rel : float
        A site's dual residual counts as small when ``‖r_d‖∞ ≤ eps_rel · max(1, ‖c‖∞)``.
    clean_share : float
        Flows below this share of their row's demand are dropped before the schedule is
        written (:mod:`thermoroute.coordinator.ipm`).
    dual_floor : float
        Initial bound duals are at least this share of the site's largest cost (then
        centred, :meth:`thermoroute.site_agent.ipm.SiteInteriorPoint.start`).
    initial_capacity_dual : float
        Initial duals of the capacity rows (before centring).
    """

    eps_rel: float = 1e-4
    clean_share: float = 1e-4
    dual_floor: float = 1e-3
    initial_capacity_dual: float = 1e-2


@dataclass(frozen=True)
class IpmStart:
    """Coordinator → groups, once per run: the starting point and the masking keys.

    Attributes
    ----------
    run_id : str
    share : ndarray (m,)
        ``b_r / |S_r|``: each site starts serving an equal share of every row it can serve.
    demand : ndarray (m,)
        Scaled demand ``b``: the cleaning threshold of each row (``clean_share · |b_r|``).
    prices : ndarray (m,)
        Initial ``λ`` (zero cold; a shifted previous solution warm).
    settings : IpmSiteSettings
    masking : dict or None
        ``{group index: MaskingSetup}`` with each group's neighbours' public keys; ``None``
        sends sums in the clear (the coordinator then sees every group's sum).
    resume : bool
        After a group crashed and rejoined: groups holding an iterate keep it (only the new
        keys apply); the restarted group starts cold at ``prices``. Answered ``start``; a
        fresh start is answered ``open`` (with the first ``newton`` round).
    warm : bool
        Receding horizon: every site starts from the iterate it kept in the previous run
        (shifted with the horizon), cold where it has none.
    sequence : int
        The run's number of this exchange: the nonce of the answer's masks (as
        :attr:`IpmRequest.sequence`).
    """

    run_id: str
    share: np.ndarray
    demand: np.ndarray
    prices: np.ndarray
    settings: IpmSiteSettings
    masking: dict[int, MaskingSetup] | None = None
    resume: bool = False
    warm: bool = False
    sequence: int = 0


@dataclass(frozen=True)
class IpmRequest:
    """Coordinator → groups, one per round (broadcast).

    Attributes
    ----------
    iteration : int
    phase : Phase
    step : float
        ``newton``: the step to take along the last direction before anything else (0 in
        the first iteration); ``centre``: the trial step.
    prices : ndarray (m,) or None
        ``newton``: ``λ`` after that step.
    price_step : ndarray (m,) or None
        ``predict``: ``Δλ_aff``; ``correct``: ``Δλ``.
    sigma_mu : float
        ``correct``, ``centre``: the centring target ``σμ``.
    accept_correction : bool
        The sites replace their direction by the corrected one of the last ``recentred``
        round before anything else.
    snapshot : bool
        ``predict``: every site keeps its current iterate to warm-start the next horizon
        (the coordinator keeps its prices of the same iterate).
    factors : ndarray (m,) or None
        ``finish``: per row, the share of its allowance each flow grows by; on a restored
        row, the factor of every flow.
    restore : ndarray of bool (m,) or None
        ``finish``: rows whose dropped flows come back (the others could not carry them).
    sequence : int
        The run's number of this round (set by the coordinator, strictly increasing): with
        the phase it is the nonce of the answer's masks, which must never repeat under one
        key — an iteration may hold several rounds of one phase (Gondzio's correctors).
    across_steps : bool
        ``newton``: send the Schur complement on the pattern across steps (some site's
        limits couple steps; see the start's answer).
    """

    iteration: int
    phase: Phase
    step: float = 0.0
    prices: np.ndarray | None = None
    price_step: np.ndarray | None = None
    sigma_mu: float = 0.0
    accept_correction: bool = False
    snapshot: bool = False
    factors: np.ndarray | None = None
    restore: np.ndarray | None = None
    sequence: int = 0
    across_steps: bool = False


@dataclass(frozen=True)
class Aggregate:
    """Group → coordinator: the group's sum of a round's fields.

    Attributes
    ----------
    iteration : int
    phase : Phase
    values : ndarray
        ``float64 (n,)`` in the clear, or ``uint64 (2, n)`` masked fixed point.
    masked : bool
    """

    iteration: int
    phase: Phase
    values: np.ndarray
    masked: bool = field(default=False)
