"""The distributed primal–dual interior-point method: the coordinator's side.

The fleet solves ``min Σ_i f_i(ξ_i)`` s.t. ``Σ_i A_i ξ_i = b`` (scaled coupling rows), each site
with ``ξ_i ≥ 0`` and its capacity ``H_i ξ_i ≤ cap_i``. A primal–dual interior point with Mehrotra's
predictor–corrector eliminates every site's variables at the site
(:mod:`thermoroute.site_agent.ipm`), so the coordinator works only in the ``m`` coupling rows —
``m`` does not grow with the number of sites. Per iteration, three rounds
(:mod:`thermoroute.common.ipm_protocol`; docs/model.md §13 says why none can go):

1. ``newton``: the sites take the last step, then send (summed, masked)
   ``S = Σ A_i K_i⁻¹ A_iᵀ``, ``Σ A_i K_i⁻¹ g_aff``, ``Σ A_i ξ_i``, the complementarity, the
   count of sites whose dual residual is not small, and what cleaning the iterate would
   drop. The coordinator tests for convergence, factorises ``S`` (``m × m``, dense
   Cholesky) and solves the predictor ``S Δλ_aff = r_c + Σ A K⁻¹ g_aff``.
2. ``predict``: with ``Δλ_aff``, the sites send the histogram of their feasible steps, the
   coefficients of the predicted complementarity and the corrector right-hand side as
   ``rhs0 + σμ·rhs1``; the coordinator sets Mehrotra's ``σ = (μ_aff/μ)³`` and solves
   ``S Δλ = r_c + rhs0 + σμ·rhs1`` with the same factor.
3. ``correct``: with ``Δλ`` and ``σμ``, the sites send the histogram of feasible steps of the
   combined direction; the coordinator takes ``α = η · (the longest step nobody blocks)``
   and ``λ ← λ + αΔλ``. The sites take the step at the start of the next ``newton`` round.

The run opens with one exchange that starts the sites and carries the first ``newton``
round (phase ``open``), so a run of ``k`` iterations takes ``3k`` rounds after it (Gondzio's
centrality correctors, opt-in, add two per corrector tried).

Stopping test, from what the coordinator may see: ``‖Σ A ξ − b‖ ≤ ε_abs √m + ε_rel ‖b‖``, no
site with a large dual residual (``‖r_d,i‖∞ ≤ ε_rel max(1, ‖c_i‖∞)``, a yes/no counted by
the sum), and the duality gap ``Σ ξᵀz + sᵀw ≤ ε_gap · max(1, |Σ f_i|)`` (``ε_gap = ε_rel``
by default; the fleet's objective is a masked sum like the rest). A direction along which
no step of at least :data:`STALL_STEP` is feasible (round-off near the boundary) ends the
run, not converged, at the current iterate.

After convergence the interior point leaves a tiny flow on every allowed pair. The sites
drop the flows below ``clean_share`` (1e-4) of their row's demand: every ``newton`` round
says what they would drop per row (a sum), so the last one is the cleaning round; the
coordinator posts per-row factors ``b_r / (Σ served − dropped)`` that put that flow — and the
last residual — back on the remaining servers of each row, without waiting for an answer
(the final reports that follow reach every group after it).

Shadow prices are ``λ``: ``∇f_i + A_iᵀλ = z_i ≥ 0``, so one more scaled unit of demand on a
row costs ``−λ_r`` at the optimum.

Nothing here knows of Ray; the loop talks to a :class:`thermoroute.coordinator.fleet.Fleet`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.ipm_protocol import (
    Aggregate,
    IpmRequest,
    IpmSiteSettings,
    IpmStart,
    Phase,
    longest_free_step,
    unpack,
)
from thermoroute.common.method_protocol import MethodBegin
from thermoroute.common.report_protocol import repair_factors
from thermoroute.common.schur_pattern import SchurPattern, factor, solve
from thermoroute.common.secure_aggregation import masking_setups, unmask_sum
from thermoroute.coordinator.events import IterationRecord, RunObserver, RunState, notify_all
from thermoroute.coordinator.fleet import RoundFailed
from thermoroute.coordinator.method_contract import MethodFlags, MethodRun, StatusColumn, StatusHook
from thermoroute.coordinator.structure import ExchangeStructure

if TYPE_CHECKING:
    from thermoroute.coordinator.fleet import Fleet

log = logging.getLogger(__name__)

#: The method's registry name (``--method``).
NAME = "ipm"
#: How a run begins on the sites: the method's site side
#: (:func:`thermoroute.site_agent.ipm.begin_interior_point`); its settings come with the start.
SITE_BEGIN = MethodBegin(NAME, "thermoroute.site_agent.ipm:begin_interior_point")

#: The iterate kept for a warm start of the next horizon is the first with μ at most this
#: (scaled units, rows of order one), and in a warm run not before iteration
#: WARM_RECENTRE_ITERATIONS (before, it holds the shifted start: kept again, the starts
#: drift). Measured on a day of australia with the default forecasts (each hour's forecasts
#: differ), with two Gondzio correctors: median iterations per step 11 at (5e-3, 2), 8 at
#: (2e-2, 1), 7 at (3e-2, 1), 8 at (5e-2, 1), 11.5 at (2e-2, 0); cold 10. Without them (the
#: default): 9 at (3e-2, 1) and (1e-1, 1), 10 at (1e-2, 1), (2e-2, 1), (5e-2, 1) and
#: (3e-2, 2), 11 at (3e-2, 0); cold 12. Closer to the boundary the next horizon's changed
#: data leave the start badly centred.
WARM_START_MU = 3e-2
WARM_RECENTRE_ITERATIONS = 1

#: Steps shorter than this mean the direction is lost to round-off: the run stops there.
STALL_STEP = 1e-8

#: Gondzio's correctors aim at a step this much longer than the one found, and are kept when
#: they gain ``GONDZIO_GAIN`` of that (Gondzio 1996: δ_α = 0.1, γ = 0.1).
GONDZIO_STEP = 0.1
GONDZIO_GAIN = 0.1


@dataclass(frozen=True)
class IpmSettings:
    """Parameters of the distributed interior-point method.

    Parameters
    ----------
    eps_abs, eps_rel : float
        Tolerances of the stopping test (module docstring), in scaled coupling units; the
        same meaning as ADMM's so the two stop at comparable accuracy.
    eps_gap : float or None
        Relative duality gap of the stopping test, ``Σ ξᵀz + sᵀw ≤ eps_gap · max(1, |f|)``
        with ``f`` the fleet's objective; ``eps_rel`` by default: the objective is then
        within about ``eps_rel`` of the optimum (measured: 0.0004–0.009 %, BENCHMARKS.md).
        Much tighter gaps run into round-off (``D = z/ξ`` spans 24 orders of magnitude).
    max_iter : int
        Newton iterations at most.
    step_fraction : float
        ``η``: the fraction of the longest feasible step taken (keeps the iterate interior).
    secure_aggregation : bool
        Mask every group's sums (:mod:`thermoroute.common.secure_aggregation`) so the coordinator
        reads only fleet sums. Off only to measure what masking costs.
    centrality_correctors : int
        Gondzio's correctors tried per iteration (two rounds each; a correction is kept only
        when it lengthens the step by ``GONDZIO_GAIN · GONDZIO_STEP``). None by default:
        they save a few iterations (``australia`` 12 → 10, 1,000 sites ~50 → 44) but each
        costs two rounds, and across a WAN a round costs a round trip, so the decision
        takes longer with them (``australia``: 36 rounds without, 70 with; BENCHMARKS.md).
    clean_share : float
        Flows below this share of their row's demand are dropped and their volume put back
        on the row's other servers before the schedule is written.
    solve_timeout_s : float
        Deadline of one round.
    agent_restarts : int
        Crashes of one agent actor Ray recovers from (the actor comes back; see
        :class:`thermoroute.coordinator.fleet.RayFleet`).
    time_limit_s : float or None
        Stop (not converged) after this much wall time.
    """

    eps_abs: float = 1e-5
    eps_rel: float = 1e-4
    eps_gap: float | None = None
    max_iter: int = 100
    step_fraction: float = 0.99
    secure_aggregation: bool = True
    clean_share: float = 1e-4
    centrality_correctors: int = 0
    solve_timeout_s: float = 120.0
    agent_restarts: int = 3
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.eps_abs < 0 or not self.eps_rel > 0:
            raise ValueError("eps_abs must be >= 0 and eps_rel > 0")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1 (got {self.max_iter})")
        if not 0.0 < self.step_fraction < 1.0:
            raise ValueError(f"step_fraction must be in (0, 1) (got {self.step_fraction})")
        if self.centrality_correctors < 0:
            raise ValueError("centrality_correctors must be >= 0")
        if not 0.0 <= self.clean_share < 0.01:
            raise ValueError(f"clean_share must be in [0, 0.01) (got {self.clean_share})")

    @property
    def gap_tolerance(self) -> float:
        return self.eps_rel if self.eps_gap is None else self.eps_gap

    def site_settings(self) -> IpmSiteSettings:
        return IpmSiteSettings(eps_rel=self.eps_rel, clean_share=self.clean_share)


@dataclass
class IpmLog:
    """One iteration as the coordinator saw it (a row of ``convergence.csv``).

    Attributes
    ----------
    iteration : int
        Steps taken before this iterate (0: the starting point).
    coupling : float
        ``‖Σ A ξ − b‖`` [scaled units].
    coupling_max : float
        ``max_r |Σ A ξ − b|_r / max(|b_r|, 1)``.
    eps_coupling : float
        The coupling tolerance ``ε_abs √m + ε_rel ‖b‖``.
    mu : float
        Mean complementarity.
    dual_pending : int
        Sites whose dual residual is not yet small.
    objective : float
        The fleet's objective at the iterate [AUD] (a sum of the sites' objectives).
    sigma, step : float
        Centring parameter and the step taken from this iterate (NaN for the last).
    stalled : bool
        No usable step from this iterate (the run ended here, not converged).
    converged : bool
        The iterate passed the stopping test: it met every tolerance.
    tolerances_met : tuple of str
        The stopping test's tolerances this iterate met: ``"primal"`` (the coupling
        residual), ``"dual"`` (no site's dual residual pending), ``"gap"`` (complementarity).
    crashed_sites : tuple of str
        Sites whose agent crashed before this iterate (restarted; they began again cold).
    elapsed_s : float
    """

    iteration: int
    coupling: float
    coupling_max: float
    eps_coupling: float
    mu: float
    dual_pending: int
    objective: float = math.nan
    sigma: float = math.nan
    step: float = math.nan
    elapsed_s: float = 0.0
    stalled: bool = False
    converged: bool = False
    tolerances_met: tuple[str, ...] = ()
    crashed_sites: tuple[str, ...] = ()


@dataclass
class IpmResult:
    """The outcome of :meth:`DistributedInteriorPoint.run`."""

    run_id: str
    converged: bool
    iterations: int
    prices: np.ndarray
    history: list[IpmLog]
    wall_s: float
    masked: bool
    cleaning: dict[str, float] = field(default_factory=dict)
    rejoins: int = 0
    rounds: int = 0
    #: Every exchange the run waited on: its rounds, and two per (re)start (keys, start).
    round_trips: int = 0
    values_per_group: int = 0
    warm_prices: np.ndarray | None = None
    timing: dict[str, float] = field(default_factory=dict)
    #: The Schur complement was sent on the pattern across steps (some site's water window).
    across_steps: bool = False

    @property
    def last(self) -> IpmLog:
        return self.history[-1]

    @property
    def bytes_per_group_iteration(self) -> float:
        """Bytes one group sent per iteration: 16 per value masked, 8 in the clear."""
        return self.values_per_group * (16 if self.masked else 8) / max(self.iterations, 1)


class DistributedInteriorPoint:
    """The interior-point loop over a fleet.

    Parameters
    ----------
    structure : ExchangeStructure
        The stacked supports (for ``b``, ``|S_r|`` and the fleet's size).
    layout : CouplingLayout
        The coupling rows (the Schur pattern is the layout's, across steps when some site's
        limits couple steps: the sites' answer to the start says so).
    settings : IpmSettings
    prices : ndarray (m,), optional
        Initial ``λ`` (scaled); zero by default.
    run_id : str, optional
    warm : bool
        The sites start from the iterates they kept in the previous run (receding horizon;
        ``prices`` then are that run's kept prices, shifted).
    """

    def __init__(
        self,
        structure: ExchangeStructure,
        layout: CouplingLayout,
        settings: IpmSettings,
        prices: np.ndarray | None = None,
        run_id: str | None = None,
        *,
        warm: bool = False,
    ) -> None:
        self.structure = structure
        self.warm = warm
        #: λ of the iterate the sites kept for the next horizon (None: none kept yet).
        self.warm_prices: np.ndarray | None = None
        self._layout = layout
        self.pattern = SchurPattern(layout)
        self.settings = settings
        m = structure.n_rows
        self.prices = np.zeros(m) if prices is None else np.asarray(prices, dtype=float).copy()
        if self.prices.shape != (m,):
            raise ValueError("initial prices do not match the coupling rows")
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.history: list[IpmLog] = []
        self.masked = False
        self.timing = {"fleet_s": 0.0, "update_s": 0.0}
        #: A Gondzio correction accepted and not yet announced to the sites.
        self._accept_pending = False
        #: Times the fleet recovered crashed groups, and their sites not yet logged.
        self.rejoins = 0
        self._crashed: list[str] = []
        #: Seconds each site's group spent answering the current iteration's rounds.
        self._answer_s: dict[str, float] = {}
        #: Answered rounds, and the values one group sent in them (its message sizes); the
        #: exchanges that open a run (keys, then the start) are counted apart.
        self.rounds = 0
        self.opening_exchanges = 0
        self.values_per_group = 0
        #: Rounds sent in this run, answered or not: each request's mask nonce.
        self._sequence = 0

    # ------------------------------------------------------------------------------------

    def _round(self, fleet: Fleet, request: IpmRequest) -> dict[str, np.ndarray]:
        """Broadcast one request; the fleet sum of the groups' answers, by field."""
        t0 = time.perf_counter()
        request = replace(request, sequence=self._sequence)
        self._sequence += 1
        answers = fleet.aggregate("method_round", request)
        t1 = time.perf_counter()
        for sid, seconds in fleet.answer_seconds().items():
            self._answer_s[sid] = self._answer_s.get(sid, 0.0) + seconds
        for answer in answers:
            if answer.iteration != request.iteration or answer.phase != request.phase:
                raise RuntimeError(
                    f"a group answered {answer.phase} {answer.iteration}, "
                    f"not {request.phase} {request.iteration}"
                )
        self.rounds += 1
        self.values_per_group += max((a.values.shape[-1] for a in answers), default=0)
        out = unpack(
            request.phase, self._fleet_sum(answers), self.structure.n_rows, self.pattern.size
        )
        self.timing["fleet_s"] += t1 - t0
        self.timing["update_s"] += time.perf_counter() - t1
        return out

    def _fleet_sum(self, answers: Sequence[Aggregate]) -> np.ndarray:
        """The groups' answers summed: unmasked when the run masks them."""
        if self.masked:
            return unmask_sum([a.values for a in answers])
        return np.sum([a.values for a in answers], axis=0)

    def _begin(self, fleet: Fleet, *, resume: bool = False) -> dict[str, np.ndarray] | None:
        """Fresh keys, relayed to each group's neighbours; the starting point (``resume``:
        only the groups without an iterate start; the others keep theirs).

        A fresh start is answered with the first ``newton`` round (``open``), returned here;
        ``None`` when that round must be asked again: a resumed run, or some site's limits
        couple steps and the Schur complement must come on the pattern across steps.
        """
        keys = fleet.begin(SITE_BEGIN, rejoin=resume)
        self.opening_exchanges += 2  # the keys, then the start (below)
        masking = masking_setups(self.run_id, keys) if self.settings.secure_aggregation else None
        self.masked = masking is not None
        s = self.structure
        start = IpmStart(
            run_id=self.run_id,
            share=s.b / np.maximum(s.counts, 1),
            demand=s.b,
            prices=self.prices,
            settings=self.settings.site_settings(),
            masking=masking,
            resume=resume,
            warm=self.warm and not resume,
            sequence=self._sequence,
        )
        self._sequence += 1
        answers = fleet.aggregate("method_start", start, indexed=True)
        phase: Phase = "start" if resume else "open"
        opened = unpack(phase, self._fleet_sum(answers), s.n_rows, self.pattern.size)
        # Some site's limits couple steps (a daily water allowance): its Schur complement is
        # not within the per-step blocks. The count of such sites is all that arrives.
        across = bool(round(float(opened.pop("across_steps")[0])) > 0)
        if across != self.pattern.across_steps:
            self.pattern = SchurPattern(self._layout, across_steps=across)
            return None
        return opened or None

    def run(
        self,
        fleet: Fleet,
        observers: Sequence[RunObserver] = (),
        *,
        on_iteration: Callable[[IpmLog], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> IpmResult:
        """Iterate until converged, the iteration or time limit, or ``should_stop``."""
        cfg, s = self.settings, self.structure
        observers = list(observers)
        dropped: set[int] = set()
        notify_all(observers, lambda o: o.on_state(self.run_id, RunState.RUNNING), dropped)
        start = time.perf_counter()
        b = s.b
        eps_coupling = cfg.eps_abs * math.sqrt(s.n_rows) + cfg.eps_rel * float(np.linalg.norm(b))
        converged = False
        step = 0.0
        k = 0
        try:
            newton = self._begin(fleet)
            while True:
                try:
                    if newton is None:
                        newton = self._newton(fleet, k, step)
                    row = self._log(k, newton, eps_coupling)
                    converged = row.converged
                    out_of_time = cfg.time_limit_s is not None and (
                        time.perf_counter() - start > cfg.time_limit_s
                    )
                    stop = converged or k >= cfg.max_iter or out_of_time
                    stop = stop or (should_stop is not None and should_stop())
                    if not stop:
                        step = self._step(fleet, k, newton, row)
                        stop = row.stalled
                    row.elapsed_s = time.perf_counter() - start
                    self._notify(observers, row, dropped, on_iteration)
                    if stop:
                        cleaning = self._finish(fleet, k + 1, newton)
                        break
                    k += 1
                    newton = None
                except RoundFailed as failure:
                    # Retry the iteration once the groups are back (Ray restarted them);
                    # their sites start again from the current prices, the others keep
                    # their iterates. The retried newton round does not repeat a step.
                    self._rejoin(fleet, failure)
                    newton = None
        except Exception:
            notify_all(observers, lambda o: o.on_state(self.run_id, RunState.FAILED), dropped)
            raise
        final = RunState.CONVERGED if converged else RunState.STOPPED
        notify_all(observers, lambda o: o.on_state(self.run_id, final), dropped)
        return IpmResult(
            run_id=self.run_id,
            converged=converged,
            iterations=self.history[-1].iteration,
            prices=self.prices.copy(),
            history=list(self.history),
            wall_s=time.perf_counter() - start,
            masked=self.masked,
            cleaning=cleaning,
            rejoins=self.rejoins,
            rounds=self.rounds,
            round_trips=self.rounds + self.opening_exchanges,
            values_per_group=self.values_per_group,
            warm_prices=self.warm_prices if self.warm_prices is not None else self.prices.copy(),
            timing=dict(self.timing),
            across_steps=self.pattern.across_steps,
        )

    def _newton(self, fleet: Fleet, k: int, step: float) -> dict[str, np.ndarray]:
        """The ``newton`` round of iteration ``k``: the sites take ``step`` first."""
        request = IpmRequest(
            k,
            "newton",
            step=step,
            prices=self.prices,
            accept_correction=self._accept_pending,
            across_steps=self.pattern.across_steps,
        )
        newton = self._round(fleet, request)
        self._accept_pending = False
        return newton

    def _log(self, k: int, newton: dict[str, np.ndarray], eps_coupling: float) -> IpmLog:
        """Iterate ``k`` as its ``newton`` round describes it, with the stopping test."""
        b = self.structure.b
        gap = newton["served"] - b
        comp = float(newton["complementarity"][0])
        row = IpmLog(
            iteration=k,
            coupling=float(np.linalg.norm(gap)),
            coupling_max=float(np.max(np.abs(gap) / np.maximum(np.abs(b), 1.0), initial=0.0)),
            eps_coupling=eps_coupling,
            mu=comp / float(newton["pairs"][0]),
            dual_pending=round(float(newton["dual_pending"][0])),
            objective=float(newton["objective"][0]),
            crashed_sites=tuple(self._crashed),
        )
        self._crashed = []
        tests = (
            ("primal", row.coupling <= eps_coupling),
            ("dual", row.dual_pending == 0),
            ("gap", comp <= self.settings.gap_tolerance * max(1.0, abs(row.objective))),
        )
        row.tolerances_met = tuple(name for name, met in tests if met)
        row.converged = len(row.tolerances_met) == len(tests)
        if self.history and self.history[-1].iteration == k:
            self.history[-1] = row  # a retried iteration replaces its first attempt
        else:
            self.history.append(row)
        return row

    def _rejoin(self, fleet: Fleet, failure: RoundFailed) -> None:
        """Recover the failed groups, re-key every group, restart the failed groups' sites."""
        log.warning("interior point: %s; recovering and retrying the iteration", failure)
        fleet.recover(failure.groups)
        self._crashed.extend(failure.sites)
        self.rejoins += 1
        self._begin(fleet, resume=True)

    def _step(self, fleet: Fleet, k: int, newton: dict[str, np.ndarray], row: IpmLog) -> float:
        """Predictor, corrector and step length from iterate ``k``; updates the prices."""
        gap = newton["served"] - self.structure.b
        pairs = float(newton["pairs"][0])
        mu = row.mu
        t0 = time.perf_counter()
        factored = factor(self.pattern.dense(newton["schur"]))
        dlam_aff = solve(factored, gap + newton["rhs"])
        self.timing["update_s"] += time.perf_counter() - t0
        # The next horizon starts from the first iterate this close to the central path;
        # a warm run first re-centres its shifted start on this horizon's path.
        keep = (
            self.warm_prices is None
            and mu <= WARM_START_MU
            and k >= (WARM_RECENTRE_ITERATIONS if self.warm else 0)
        )
        predict = self._round(fleet, IpmRequest(k, "predict", price_step=dlam_aff, snapshot=keep))
        if keep:
            self.warm_prices = self.prices.copy()
        alpha_aff = min(1.0, longest_free_step(predict["blocked"]))
        c0, c1, c2 = (float(v) for v in predict["poly"])
        mu_aff = max(c0 + c1 * alpha_aff + c2 * alpha_aff**2, 0.0) / pairs
        sigma = min(1.0, (mu_aff / mu) ** 3) if mu > 0 else 0.0
        sigma_mu = sigma * mu
        t1 = time.perf_counter()
        dlam = solve(factored, gap + predict["rhs0"] + sigma_mu * predict["rhs1"])
        self.timing["update_s"] += time.perf_counter() - t1
        correct = self._round(fleet, IpmRequest(k, "correct", price_step=dlam, sigma_mu=sigma_mu))
        longest = longest_free_step(correct["blocked"])
        dlam, longest = self._centrality_correctors(fleet, factored, k, dlam, longest, sigma_mu)
        step = min(1.0, self.settings.step_fraction * longest)
        row.sigma, row.step = sigma, step
        if step < STALL_STEP:
            log.warning(
                "interior point stalled at iteration %d (step %.1e): stopping at the current "
                "iterate",
                k,
                step,
            )
            row.stalled = True
            return 0.0
        self.prices = self.prices + step * dlam
        return step

    def _centrality_correctors(
        self,
        fleet: Fleet,
        factored: tuple[np.ndarray, bool],
        k: int,
        dlam: np.ndarray,
        longest: float,
        sigma_mu: float,
    ) -> tuple[np.ndarray, float]:
        """Gondzio's correctors: aim at a step ``δ`` longer, keep what lengthens it enough.

        Each costs two rounds; one accepted is announced in the next request. Returns the
        price step and the longest feasible step of the direction the sites now hold.
        """
        for _ in range(self.settings.centrality_correctors):
            if longest >= 1.0:
                break
            trial = min(1.0, longest + GONDZIO_STEP)
            centre = self._round(
                fleet,
                IpmRequest(
                    k,
                    "centre",
                    step=trial,
                    sigma_mu=sigma_mu,
                    accept_correction=self._accept_pending,
                ),
            )
            self._accept_pending = False
            correction = solve(factored, centre["rhs"])
            answer = self._round(fleet, IpmRequest(k, "recentred", price_step=correction))
            corrected = longest_free_step(answer["blocked"])
            if corrected < longest + GONDZIO_GAIN * GONDZIO_STEP:
                break
            self._accept_pending = True
            dlam, longest = dlam + correction, corrected
        return dlam, longest

    def _finish(
        self, fleet: Fleet, iteration: int, newton: dict[str, np.ndarray]
    ) -> dict[str, float]:
        """Put the volume the last ``newton`` round says the sites drop back on each row's
        servers (:func:`thermoroute.common.report_protocol.repair_factors`), posted."""
        b = self.structure.b
        dropped = newton["dropped"]
        factors, restore = repair_factors(b, newton["served"], dropped, newton["absorb"])
        finish = IpmRequest(iteration, "finish", factors=factors, restore=restore)
        fleet.post("method_round", finish)
        return {
            "clean_share": self.settings.clean_share,
            "dropped_total": float(dropped.sum()),
            "rows_restored": int((restore & (dropped > 0)).sum()),
        }

    def _notify(
        self,
        observers: list[RunObserver],
        row: IpmLog,
        dropped: set[int],
        on_iteration: Callable[[IpmLog], None] | None,
    ) -> None:
        if on_iteration is not None:
            on_iteration(row)
        record = IterationRecord(
            run_id=self.run_id,
            iteration=row.iteration,
            primal_residual=row.coupling,
            dual_residual=float(row.dual_pending),
            eps_primal=row.eps_coupling,
            eps_dual=0.0,
            rho=math.nan,
            objective_aud=row.objective,
            elapsed_s=row.elapsed_s,
            site_solve_s=dict(self._answer_s),
            crashed_sites=row.crashed_sites,
            method=NAME,
            mu=row.mu,
            step=row.step,
        )
        self._answer_s = {}
        notify_all(observers, lambda o: o.on_iteration(record), dropped)


def shift_prices(
    prices: np.ndarray,
    old: ExchangeStructure,
    new: ExchangeStructure,
    layout: CouplingLayout,
    steps: int = 1,
) -> np.ndarray:
    """``λ`` for the horizon ``steps`` later (receding horizon).

    Interactive row ``(j, c, t)`` takes the old row ``(j, c, t + steps)``, rows past the old
    horizon repeat its last step, deferrable rows keep theirs; the unscaled price ``−λ/s``
    is what persists, so ``λ`` is rescaled by the new row scales.
    """
    source = layout.shifted_rows(steps)
    return prices[source] * new.row_scale / old.row_scale[source]


class InteriorPointMethod:
    """The distributed interior-point method (:mod:`thermoroute.coordinator.ipm`)."""

    name: ClassVar[str] = NAME
    settings_type: ClassVar[type] = IpmSettings
    status_columns: ClassVar[tuple[StatusColumn, ...]] = (
        StatusColumn("coupling r", "primal_residual", priority=0),
        StatusColumn("ε_pri", "eps_primal"),
        StatusColumn("μ", "mu", priority=0),
        StatusColumn("step", "step", ".3f", priority=0),
        StatusColumn("dual pend.", "dual_pending", "d", priority=3),
    )

    @staticmethod
    def settings_for(flags: MethodFlags) -> IpmSettings:
        return replace(
            IpmSettings(),
            eps_rel=flags.eps_rel or IpmSettings.eps_rel,
            max_iter=flags.max_iter or IpmSettings.max_iter,
            agent_restarts=flags.agent_restarts,
            secure_aggregation=flags.secure_aggregation,
        )

    @staticmethod
    def title(settings: IpmSettings) -> str:
        masking = "secure aggregation" if settings.secure_aggregation else "sums in the clear"
        return f"interior point ({masking})"

    def __init__(
        self,
        structure: ExchangeStructure,
        layout: CouplingLayout,
        settings: IpmSettings,
        warm_start: np.ndarray | None = None,
        run_id: str | None = None,
        resume: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        # Resuming, the prices are the checkpoint's and the sites (registered again) start
        # from their default point: only a warm start has kept site iterates to use.
        self.loop = DistributedInteriorPoint(
            structure,
            layout,
            settings,
            prices=np.asarray(resume["prices"], dtype=float) if resume is not None else warm_start,
            run_id=run_id,
            warm=warm_start is not None and resume is None,
        )

    def checkpoint(self) -> dict[str, np.ndarray]:
        return {"prices": self.loop.prices.copy()}

    @staticmethod
    def state_arrays(state: np.ndarray) -> dict[str, np.ndarray]:
        """The warm start's prices (the interior point's state: an ndarray)."""
        return {"prices": np.array(state, dtype=float)}

    @staticmethod
    def state_from_arrays(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array(arrays["prices"], dtype=float)

    @staticmethod
    def _status(row: IpmLog) -> dict[str, Any]:
        return {
            "iteration": row.iteration,
            # Row k is the iterate after k steps (row 0 the start): k iterations done.
            "iterations": row.iteration,
            "primal_residual": row.coupling,
            "eps_primal": row.eps_coupling,
            "coupling_max_rel": row.coupling_max,
            "mu": row.mu,
            "dual_pending": row.dual_pending,
            "step": row.step,
            "objective_aud": row.objective,
            "elapsed_s": row.elapsed_s,
        }

    def run(
        self,
        fleet: Fleet,
        observers: Sequence[RunObserver],
        *,
        on_status: StatusHook | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MethodRun:
        hook = None if on_status is None else (lambda row: on_status(self._status(row)))
        result: IpmResult = self.loop.run(
            fleet, observers, on_iteration=hook, should_stop=should_stop
        )
        last = result.last
        return MethodRun(
            method=self.name,
            run_id=result.run_id,
            converged=result.converged,
            iterations=result.iterations,
            report_iteration=None,
            wall_s=result.wall_s,
            scaled_prices=result.prices,
            primal_residual=last.coupling,
            dual_residual=float(last.dual_pending),
            rho=math.nan,
            extra_stats={
                "eps_primal": last.eps_coupling,
                "coupling_residual": last.coupling,
                "coupling_max_rel": last.coupling_max,
                "mu": last.mu,
                "sites_dual_pending": last.dual_pending,
                "tolerances_met": list(last.tolerances_met),
                "secure_aggregation": result.masked,
                "site_crashes": sum(len(h.crashed_sites) for h in result.history),
                "rejoins": result.rejoins,
                "schur_across_steps": result.across_steps,
                "rounds": result.rounds,
                "round_trips": result.round_trips,
                "bytes_per_group_per_iteration": round(result.bytes_per_group_iteration),
                **result.cleaning,
            },
            convergence_columns=(
                "iteration",
                "coupling_residual",
                "mu",
                "step",
                "sites_dual_pending",
                "objective_aud",
                "elapsed_s",
            ),
            convergence=[
                [
                    int(h.iteration),
                    float(h.coupling),
                    float(h.mu),
                    float(h.step),
                    int(h.dual_pending),
                    float(h.objective),
                    float(h.elapsed_s),
                ]
                for h in result.history
            ],
            state=result.warm_prices,
            result=result,
            timing=dict(result.timing),
        )

    @staticmethod
    def shift(
        state: np.ndarray,
        old: ExchangeStructure,
        new: ExchangeStructure,
        layout: CouplingLayout,
        steps: int,
    ) -> np.ndarray:
        return shift_prices(state, old, new, layout, steps)
