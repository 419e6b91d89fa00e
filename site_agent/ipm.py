"""A site's share of the distributed primal–dual interior-point method.

Everything here stays on the site: its iterate ``(ξ, z, s, w)`` — flows, their bound duals, the
capacity slack and its dual — and its data. The coordinator's side and the method's outline are in
:mod:`thermoroute.coordinator.ipm`; the messages in :mod:`thermoroute.common.ipm_protocol`.

The site's Newton matrix ``K = ∇²f + X⁻¹Z + Hᵀ S⁻¹W H = D + Σ_t γ_t h_t h_tᵀ`` is diagonal
plus one rank-one term per step, so the site eliminates its own variables in closed form
(Sherman–Morrison), with no factorisation:

.. math:: K^{-1} v = D^{-1} v − \\sum_t ρ_t (D^{-1} h_t)(h_t^T D^{-1} v),
          \\quad ρ_t = γ_t / (1 + γ_t h_t^T D^{-1} h_t),

and sends its Schur complement ``A K⁻¹ Aᵀ = diag(A D⁻¹ Aᵀ) − Σ_t ρ_t a_t a_tᵀ`` with ``a_t = A D⁻¹
h_t`` on the layout's fixed pattern (:class:`thermoroute.common.schur_pattern.SchurPattern`).

A site with model v1.1 grid or water rows (docs/model.md §12) has more local rows ``H``
(load per step, then its limit rows ``M``: one per step, one per daily window) and
``K = D + Hᵀ Γ H`` with ``Γ = W S⁻¹ (+ 2β on the load rows)``; it eliminates them by
Woodbury's identity with the small dense capacitance ``C = I + Γ^½ H D⁻¹ Hᵀ Γ^½`` (one row
per local row, a few dozen), whose Cholesky factor it computes once per iterate:

.. math:: K^{-1} v = D^{-1} v − D^{-1} H^T Γ^{½} C^{-1} Γ^{½} H D^{-1} v,

and its Schur complement is ``diag(A D⁻¹ Aᵀ) − Bᵀ C⁻¹ B`` with ``B = Γ^½ H D⁻¹ Aᵀ``. A
water window couples the rows of its steps, so such a run uses the pattern across steps.

References
----------
.. [1] S. K. Pakazad, A. Hansson, M. S. Andersen, "Distributed primal–dual interior-point
   methods for solving tree-structured coupled convex problems using message-passing",
   Optimization Methods & Software 32(3), 2017.
.. [2] S. Mehrotra, "On the implementation of a primal–dual interior point method", SIAM J.
   Optim. 2(4), 1992.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from thermoroute.common.coupling import CouplingLayout, shift_steps
from thermoroute.common.ipm_protocol import (
    ROUND_IDS,
    Aggregate,
    IpmRequest,
    IpmStart,
    Phase,
    blocked_steps,
    pack,
)
from thermoroute.common.schur_pattern import SchurPattern
from thermoroute.common.secure_aggregation import PairwiseMasker
from thermoroute.site_agent.cleaning import CleanedFlows, drop_small_flows
from thermoroute.site_agent.methods import HostedSites, SiteHandler
from thermoroute.site_agent.subproblem import SiteQp

#: Gondzio's target box for the complementarity products, in units of ``σμ``.
GONDZIO_BOX = (0.1, 10.0)

#: A coupling row whose demand is at most this share of the largest row's has no interior:
#: its flows are fixed at zero (see :meth:`SiteInteriorPoint.fix_empty_rows`).
EMPTY_ROW = 1e-12


def _longest_step(v: np.ndarray, dv: np.ndarray) -> float:
    """Largest ``α`` with ``v + α dv ≥ 0`` (inf when ``dv ≥ 0``)."""
    falling = dv < 0
    return float(np.min(-v[falling] / dv[falling])) if falling.any() else np.inf


@dataclass(frozen=True)
class WarmPoint:
    """A site's iterate kept for the next horizon, with the scaling it was taken in.

    Attributes
    ----------
    xi, z : ndarray (n,)
        Flows and their duals, variables in pair-major order (``k = p·T + t``).
    s, w : ndarray (T + r,)
        Slacks of the local rows (capacity per step, then any v1.1 limit rows) and their
        duals.
    gpu_load : ndarray (n,)
        ``h`` when it was taken: ``h ∝ D``, the row scaling of ``ξ``, so a new scaling
        converts ``ξ`` by ``h_old/h_new`` and ``z`` by the inverse (``ξz`` is invariant).
    steps : int
        ``T``.
    """

    xi: np.ndarray
    z: np.ndarray
    s: np.ndarray
    w: np.ndarray
    gpu_load: np.ndarray
    steps: int

    def shifted(self, steps: int) -> WarmPoint:
        """The point ``steps`` later: each pair's series and the per-step ones move left,
        the last step repeated (a persistence forecast)."""
        T = self.steps

        def roll(a: np.ndarray) -> np.ndarray:
            return shift_steps(a.reshape(-1, T), steps).ravel()

        def roll_rows(a: np.ndarray) -> np.ndarray:
            # The capacity rows move with the horizon; limit rows are kept as a guess (the
            # site recomputes every slack from the new window's data when it starts).
            return np.concatenate([roll(a[:T]), a[T:]])

        return WarmPoint(
            roll(self.xi),
            roll(self.z),
            roll_rows(self.s),
            roll_rows(self.w),
            roll(self.gpu_load),
            self.steps,
        )


@dataclass
class _Direction:
    xi: np.ndarray
    z: np.ndarray
    s: np.ndarray
    w: np.ndarray

    def bound(self, site: SiteInteriorPoint) -> float:
        """Longest step keeping ``ξ, z, s, w`` non-negative (one for primal and dual)."""
        return min(
            _longest_step(site.xi, self.xi),
            _longest_step(site.s, self.s),
            _longest_step(site.z, self.z),
            _longest_step(site.w, self.w),
        )


class SiteInteriorPoint:
    """One site's iterate and its part of each round.

    Parameters
    ----------
    qp : SiteQp
        The site's problem in scaled variables (``SiteSubproblem.qp()``).
    pattern : SchurPattern
        The Schur pattern of the run (:meth:`use_pattern` changes it).
    n_rows : int
        Coupling rows ``m`` of the layout.
    """

    def __init__(self, qp: SiteQp, pattern: SchurPattern, n_rows: int) -> None:
        self.qp = qp
        self.n_rows = n_rows
        self.rows = qp.support[qp.position]  # global row of every variable
        #: Model v1.1 grid or water rows: Woodbury's elimination instead of Sherman–Morrison.
        self.woodbury = qp.limits is not None
        if self.woodbury:
            assert qp.limits is not None
            n = qp.n
            load_rows = sp.csr_matrix((qp.gpu_load, (qp.step, np.arange(n))), shape=(qp.steps, n))
            self._h = sp.vstack([load_rows, qp.limits.matrix], format="csr")
            # Served demand on the support rows as a matrix: A = coefficient at (position, k).
            self._a = sp.csr_matrix(
                (qp.coefficient, (qp.position, np.arange(n))), shape=(qp.support.size, n)
            )
        self.pattern: SchurPattern | None = None
        self.use_pattern(pattern)
        self.c_norm = max(1.0, float(np.abs(qp.cost).max(initial=0.0)))
        self.xi = np.zeros(qp.n)
        #: Flows fixed at zero (their row has no demand) and the others.
        self._fixed = np.zeros(qp.n, dtype=bool)
        self._free = ~self._fixed
        self._cleaning: CleanedFlows | None = None
        self.z = np.ones(qp.n)
        self.s = qp.row_caps.copy()
        self.w = np.ones(self.s.size)
        self.prices = np.zeros(qp.support.size)
        self._direction: _Direction | None = None
        self._candidate: _Direction | None = None

    def use_pattern(self, pattern: SchurPattern) -> None:
        """Where this site's Schur entries land in ``pattern`` (computed once per pattern)."""
        if self.pattern is pattern:
            return
        self.pattern = pattern
        qp = self.qp
        self._diag_pos = pattern.positions(qp.support, qp.support)
        if self.woodbury:
            # Every pair of support rows the pattern holds (a water window couples steps).
            a, b = np.tril_indices(qp.support.size)
            keep = pattern.contains(qp.support[a], qp.support[b])
            self._lower = (a[keep], b[keep])
            self._lower_pos = pattern.positions(qp.support[a[keep]], qp.support[b[keep]])
            return
        # The pairs (k, l) of variables of the same step with rows[k] ≥ rows[l]: where the
        # rank-one terms land in the pattern.
        order = np.argsort(qp.step, kind="stable")
        bounds = np.searchsorted(qp.step[order], np.arange(qp.steps + 1))
        first, second = [], []
        for t in range(qp.steps):
            idx = order[bounds[t] : bounds[t + 1]]
            one, other = np.meshgrid(idx, idx, indexing="ij")
            keep = self.rows[one] >= self.rows[other]
            first.append(one[keep])
            second.append(other[keep])
        self._k = np.concatenate(first) if first else np.zeros(0, dtype=np.int64)
        self._l = np.concatenate(second) if second else np.zeros(0, dtype=np.int64)
        self._pair_pos = pattern.positions(self.rows[self._k], self.rows[self._l])

    # ------------------------------------------------------------------------------------

    def snapshot(self) -> WarmPoint:
        """The current iterate, to warm-start the next horizon from."""
        return WarmPoint(self.xi.copy(), self.z.copy(), self.s.copy(), self.w.copy(),
                         self.qp.gpu_load.copy(), self.qp.steps)  # fmt: skip

    def fix_empty_rows(self, demand: np.ndarray) -> None:
        """Fix at zero the flows of rows without demand.

        ``Σ A ξ = 0`` with ``ξ ≥ 0`` leaves such flows no interior: an interior point would
        drive them to zero and their duals (and the row's price, which nothing then pins) to
        infinity, and stall on round-off (a fleet without deferrable work did: no step was
        feasible after μ fell to 1e-10). Fixed, they take no part in the site's Newton
        system (``D⁻¹ = 0``), its complementarity or its dual residual, and the row's Schur
        entries are zero, which leaves its price unchanged
        (:func:`thermoroute.common.schur_pattern.factor`).
        """
        b = np.abs(np.asarray(demand, dtype=float))
        empty = b[self.rows] <= EMPTY_ROW * float(b.max(initial=0.0))
        self._fixed = empty & (self.qp.coefficient > 0)
        self._free = ~self._fixed

    def _over_xi(self, v: np.ndarray) -> np.ndarray:
        """``v / ξ`` on the free variables, zero on the fixed ones."""
        return np.divide(v, self.xi, out=np.zeros(self.qp.n), where=self._free)

    def _adopt_start(self, message: IpmStart) -> None:
        """What every start takes from the coordinator's message, before its iterate:
        prices, settings, the flows fixed at zero and each variable's cleaning threshold."""
        self.fix_empty_rows(message.demand)
        self.prices = np.asarray(message.prices, dtype=float)[self.qp.support]
        self.settings = message.settings
        self._clean_threshold = message.settings.clean_share * np.abs(message.demand[self.rows])
        self._direction = None

    def start_warm(self, point: WarmPoint, message: IpmStart) -> bool:
        """Start from a kept iterate (already shifted); ``False`` if it does not fit.

        Converted to the new row scaling, then pulled below every local limit where the new
        window's data need it (the slack from the new limits, at least 2 % of each).
        """
        qp = self.qp
        if point.xi.shape != (qp.n,) or point.s.shape != qp.row_caps.shape:
            return False
        # ν (GPUs powered beyond the load, no busy GPUs) keeps its scale: a share of G.
        flows = qp.gpu_load > 0
        ratio = np.divide(point.gpu_load, qp.gpu_load, out=np.ones(qp.n), where=flows)
        xi, z = point.xi * ratio, point.z / ratio
        self._adopt_start(message)
        xi, z = np.where(self._fixed, 0.0, xi), np.where(self._fixed, 0.0, z)
        xi = xi * qp.room(xi, 0.98)
        self.xi, self.z, self.w = xi, z, point.w.copy()
        self.s = qp.row_caps - qp.rows(xi)
        return True

    def start(self, message: IpmStart) -> None:
        """A cold starting point: an equal share of every row, half of every local limit at
        most, and centred duals."""
        qp = self.qp
        settings = message.settings
        # Flows serve an equal share of their row; GPUs powered beyond the load (v1.1, no
        # row) start at a tenth of the site's.
        xi = np.maximum(np.where(qp.coefficient > 0, message.share[self.rows], 0.1), 1e-6)
        self._adopt_start(message)
        xi = np.where(self._fixed, 0.0, xi)
        xi = xi * qp.room(xi, 0.5)
        self.xi = xi
        self.s = qp.row_caps - qp.rows(xi)
        # Duals: the cost of each flow (its reduced cost if the prices were zero), floored
        # at a thousandth of the site's largest, then raised where needed so that no product
        # ξz or sw starts below the mean: a centred start. Large fleets, whose equal shares
        # are tiny, otherwise spend their first iterations on steps of 1e-3.
        cost = np.abs(qp.cost)
        z = np.maximum(cost, settings.dual_floor * float(cost.max(initial=1.0)))
        w = np.full(self.s.size, settings.initial_capacity_dual)
        free = self._free
        mu0 = float(np.mean(xi[free] * z[free])) if free.any() else 0.0
        self.z = np.where(free, np.maximum(z, self._over_xi(np.full(qp.n, mu0))), 0.0)
        self.w = np.maximum(w, mu0 / self.s)

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        """Support-row values into a global vector of ``m`` rows."""
        out = np.zeros(self.n_rows)
        out[self.qp.support] = values
        return out

    def _coupling_rhs(self, g: np.ndarray) -> np.ndarray:
        """``A K⁻¹ g`` on all ``m`` rows: what a right-hand side ``g`` adds to the
        coordinator's system."""
        return self._scatter(self.qp.served(self._kinv(g)))

    def _kinv_once(self, v: np.ndarray) -> np.ndarray:
        qp = self.qp
        dv = self._dinv * v
        if self.woodbury:
            u = self._sqrt_gamma * self._solve_capacitance(self._sqrt_gamma * qp.rows(dv))
            return dv - self._dinv * qp.rows_transpose(u)
        coef = np.bincount(qp.step, weights=qp.gpu_load * dv, minlength=qp.steps) * self._rho_t
        return dv - self._dh * coef[qp.step]

    def _solve_capacitance(self, v: np.ndarray) -> np.ndarray:
        return scipy.linalg.cho_solve(self._capacitance, v, check_finite=False)

    def _apply_k(self, y: np.ndarray) -> np.ndarray:
        """``K y = D y + Hᵀ Γ H y``."""
        qp = self.qp
        if self.woodbury:
            return self._d * y + qp.rows_transpose(self._gamma * qp.rows(y))
        return self._d * y + qp.gpu_load * (self._gamma * qp.load(y))[qp.step]

    def _kinv(self, v: np.ndarray) -> np.ndarray:
        """``K⁻¹ v`` by Sherman–Morrison (or Woodbury), with one step of iterative refinement.

        Near the end ``D`` spans many orders of magnitude and, on a step at capacity,
        Sherman–Morrison subtracts nearly equal numbers; one refinement step (``K`` is cheap
        to apply) restores the accuracy the Newton step needs.
        """
        y = self._kinv_once(v)
        return y + self._kinv_once(v - self._apply_k(y))

    # ------------------------------------------------------------------------------------
    # Rounds

    def take(self, step: float, prices: np.ndarray) -> None:
        """Move along the last direction by ``step`` and adopt the coordinator's prices."""
        d = self._direction
        if d is not None and step > 0:
            self.xi = self.xi + step * d.xi
            self.z = self.z + step * d.z
            self.s = self.s + step * d.s
            self.w = self.w + step * d.w
        self._direction = None
        self.prices = np.asarray(prices, dtype=float)[self.qp.support]

    def _schur(self) -> np.ndarray:
        """``A K⁻¹ Aᵀ`` on the pattern (needs :meth:`newton`'s ``D`` and ``Γ``)."""
        qp = self.qp
        assert self.pattern is not None  # set in __init__
        size = self.pattern.size
        schur = np.bincount(
            self._diag_pos,
            weights=np.bincount(
                qp.position, weights=qp.coefficient**2 * self._dinv, minlength=qp.support.size
            ),
            minlength=size,
        )
        if self.woodbury:
            # B = Γ^½ H D⁻¹ Aᵀ (local rows × support rows); subtract Bᵀ C⁻¹ B = YᵀY.
            b = (self._hd @ self._a.T).toarray() * self._sqrt_gamma[:, None]
            y = scipy.linalg.solve_triangular(
                self._capacitance[0], b, lower=True, check_finite=False
            )
            one, other = self._lower
            return schur - np.bincount(
                self._lower_pos, weights=np.einsum("ij,ij->j", y[:, one], y[:, other]),
                minlength=size,
            )  # fmt: skip
        a = qp.coefficient * self._dh  # a_t entries: m_k D⁻¹_k h_k (the variable's row, step)
        schur -= np.bincount(
            self._pair_pos,
            weights=self._rho_t[qp.step[self._k]] * a[self._k] * a[self._l],
            minlength=size,
        )
        return schur

    def newton(self) -> dict[str, np.ndarray]:
        """The site's Schur contribution, predictor right-hand side and progress figures,
        and what cleaning this iterate would drop (:meth:`clean`): the last ``newton`` round
        is the run's cleaning round too."""
        qp = self.qp
        r_d = qp.gradient(self.xi) + (qp.coefficient * self.prices[qp.position])
        r_d += qp.rows_transpose(self.w) - self.z
        self._r_d = r_d
        self._r_s = qp.rows(self.xi) + self.s - qp.row_caps
        # A fixed flow stays at zero: D⁻¹ = 0 keeps it out of K⁻¹ (D itself is never used on
        # it: the directions are zero there).
        d = self._over_xi(self.z)
        e = self.w / self.s
        gamma = e.copy()
        gamma[: qp.steps] += 2.0 * qp.congestion  # the congestion's Hessian, on the load rows
        self._d, self._gamma = d, gamma
        self._dinv = np.divide(1.0, d, out=np.zeros(qp.n), where=self._free)
        if self.woodbury:
            self._sqrt_gamma = np.sqrt(gamma)
            self._hd = self._h.multiply(self._dinv).tocsr()  # H D⁻¹, also for the Schur
            hdh = (self._hd @ self._h.T).toarray()
            capacitance = np.eye(gamma.size) + self._sqrt_gamma[:, None] * hdh * self._sqrt_gamma
            self._capacitance = scipy.linalg.cho_factor(capacitance, lower=True, check_finite=False)
        else:
            self._dh = self._dinv * qp.gpu_load
            hdh = np.bincount(qp.step, weights=qp.gpu_load * self._dh, minlength=qp.steps)
            self._rho_t = gamma / (1.0 + gamma * hdh)
        self._g_aff = self._rhs_vector(-self.xi * self.z, -self.s * self.w)
        complementarity = float(self.xi @ self.z + self.s @ self.w)
        pending = np.abs(r_d[self._free]).max(initial=0.0) > self.settings.eps_rel * self.c_norm
        return {
            "schur": self._schur(),
            "rhs": self._coupling_rhs(self._g_aff),
            "served": self._scatter(qp.served(self.xi)),
            "complementarity": np.array([complementarity]),
            "pairs": np.array([float(self._free.sum() + self.s.size)]),
            "objective": np.array([qp.objective(self.xi)]),
            "dual_pending": np.array([float(pending)]),
            **self.clean(),
        }

    def _rhs_vector(self, r_xz: np.ndarray, r_sw: np.ndarray) -> np.ndarray:
        """``g = −r_d + R_xz/ξ − Hᵀ((R_sw + w r_s)/s)`` (the eliminated right-hand side)."""
        back = (r_sw + self.w * self._r_s) / self.s
        return -self._r_d + self._over_xi(r_xz) - self.qp.rows_transpose(back)

    def _direction_of(
        self,
        g: np.ndarray,
        price_step: np.ndarray,
        r_xz: np.ndarray,
        r_sw: np.ndarray,
        capacity_residual: np.ndarray | float | None = None,
    ) -> _Direction:
        """``Δξ = K⁻¹(g − AᵀΔλ)``, then the eliminated ``Δz, Δs, Δw``.

        ``capacity_residual`` is ``r_s = Hξ + s − cap`` (the current one by default; zero for
        a correction, which leaves the residuals to the direction it corrects).
        """
        qp = self.qp
        r_s = self._r_s if capacity_residual is None else capacity_residual
        dxi = self._kinv(g - qp.coefficient * price_step[qp.support][qp.position])
        dz = self._over_xi(r_xz - self.z * dxi)
        ds = -r_s - qp.rows(dxi)
        dw = (r_sw - self.w * ds) / self.s
        return _Direction(dxi, dz, ds, dw)

    def predict(self, price_step: np.ndarray) -> dict[str, np.ndarray]:
        """Affine direction: its step bound, predicted complementarity, corrector rhs."""
        qp = self.qp
        aff = self._direction_of(self._g_aff, price_step, -self.xi * self.z, -self.s * self.w)
        bound = aff.bound(self)
        # Σ (ξ + α dξ)(z + α dz) + (s + α ds)(w + α dw) = c0 + c1 α + c2 α².
        poly = np.array(
            [
                self.xi @ self.z + self.s @ self.w,
                self.xi @ aff.z + aff.xi @ self.z + self.s @ aff.w + aff.s @ self.w,
                aff.xi @ aff.z + aff.s @ aff.w,
            ]
        )
        # Mehrotra's corrector: R = σμ − ξz − Δξ_aff Δz_aff, affine in σμ.
        self._r0 = (-self.xi * self.z - aff.xi * aff.z, -self.s * self.w - aff.s * aff.w)
        self._g0 = self._rhs_vector(*self._r0)
        self._g1 = self._over_xi(np.ones(qp.n)) - qp.rows_transpose(1.0 / self.s)
        return {
            "blocked": blocked_steps(bound),
            "poly": poly,
            "rhs0": self._coupling_rhs(self._g0),
            "rhs1": self._coupling_rhs(self._g1),
        }

    def correct(self, price_step: np.ndarray, sigma_mu: float) -> dict[str, np.ndarray]:
        """The combined direction for ``σμ``; its step bound."""
        r_xz = self._r0[0] + sigma_mu
        r_sw = self._r0[1] + sigma_mu
        g = self._g0 + sigma_mu * self._g1
        self._direction = self._direction_of(g, price_step, r_xz, r_sw)
        return {"blocked": blocked_steps(self._direction.bound(self))}

    def centre(self, trial_step: float, sigma_mu: float) -> dict[str, np.ndarray]:
        """Gondzio's centrality corrector for the current direction: its right-hand side.

        At the trial step the products ``ξz`` and ``sw`` are pushed back into
        ``[β_min σμ, β_max σμ]`` (large ones only down to ``−β_max σμ``); the correction
        solves the Newton system with that complementarity target and no other residual.
        """
        d = self._direction
        assert d is not None, "centre after correct"
        lo, hi = GONDZIO_BOX[0] * sigma_mu, GONDZIO_BOX[1] * sigma_mu

        def target(v: np.ndarray) -> np.ndarray:
            return np.maximum(np.clip(v, lo, hi) - v, -hi)

        t_xz = target((self.xi + trial_step * d.xi) * (self.z + trial_step * d.z))
        t_sw = target((self.s + trial_step * d.s) * (self.w + trial_step * d.w))
        g = self._over_xi(t_xz) - self.qp.rows_transpose(t_sw / self.s)
        self._centring = (g, t_xz, t_sw)
        return {"rhs": self._coupling_rhs(g)}

    def recentred(self, price_step: np.ndarray) -> dict[str, np.ndarray]:
        """The corrected direction (kept aside until the coordinator accepts it); its bound."""
        d = self._direction
        assert d is not None
        g, t_xz, t_sw = self._centring
        c = self._direction_of(g, price_step, t_xz, t_sw, capacity_residual=0.0)
        self._candidate = _Direction(d.xi + c.xi, d.z + c.z, d.s + c.s, d.w + c.w)
        return {"blocked": blocked_steps(self._candidate.bound(self))}

    def accept(self) -> None:
        """The coordinator took the corrected direction (a repeated notice changes nothing)."""
        if self._candidate is not None:
            self._direction = self._candidate
            self._candidate = None

    def clean(self) -> dict[str, np.ndarray]:
        """Drop flows below ``clean_share`` of their row's demand; report per row what was
        dropped and how much more the remaining flows could carry
        (:func:`thermoroute.site_agent.cleaning.drop_small_flows`).

        The iterate itself changes only in :meth:`finish` (a round repeated after a crash
        starts from it again).
        """
        self._cleaning = drop_small_flows(self.qp, self.xi, self._clean_threshold)
        return {
            "dropped": self._scatter(self._cleaning.dropped),
            "absorb": self._scatter(self._cleaning.absorb),
        }

    def finish(self, factors: np.ndarray, restore: np.ndarray) -> np.ndarray:
        """Put the dropped volume back (:mod:`thermoroute.coordinator.ipm`); return the final ξ.

        Computed from the iterate :meth:`clean` kept, so a repeated ``finish`` (a round
        sent again after a crash) gives the same ξ.
        """
        if self._cleaning is None:
            raise RuntimeError("finish before clean")
        rows = self.rows
        self.xi = self._cleaning.finished(
            np.asarray(factors, dtype=float)[rows], np.asarray(restore, dtype=bool)[rows]
        )
        return self.xi


class GroupInteriorPoint:
    """A site group's side of the method: its sites' sums, masked when the run says so.

    Parameters
    ----------
    qps : sequence of SiteQp
        The hosted sites' problems.
    layout : CouplingLayout
    warm : sequence of WarmPoint, optional
    adopt : sequence of callable, optional
        One per site: called with the site's final flows ``ξ`` after the ``finish`` round
        (its subproblem adopts them, so its report and a later warm start see them).
    """

    def __init__(
        self,
        qps: Sequence[SiteQp],
        layout: CouplingLayout,
        warm: Sequence[WarmPoint] | None = None,
        adopt: Sequence[Callable[[np.ndarray], None]] | None = None,
    ) -> None:
        self._adopt = list(adopt) if adopt is not None else []
        self._layout = layout
        self._patterns: dict[bool, SchurPattern] = {}
        self.sites = [SiteInteriorPoint(qp, self._pattern(False), layout.n_rows) for qp in qps]
        #: Each site's kept iterate (this run's, or the previous run's shifted to now).
        self.warm: list[WarmPoint] | None = list(warm) if warm is not None else None
        self.n_rows = layout.n_rows
        self.masker: PairwiseMasker | None = None
        self._masked = False
        #: The last iteration whose ``newton`` round this group ran (None: not started).
        self._newton_iteration: int | None = None

    def _pattern(self, across_steps: bool) -> SchurPattern:
        if across_steps not in self._patterns:
            self._patterns[across_steps] = SchurPattern(self._layout, across_steps=across_steps)
        return self._patterns[across_steps]

    def new_key(self) -> bytes:
        """A fresh key pair (a new run, or after a group rejoined); the public half for the
        coordinator to relay."""
        self.masker = PairwiseMasker()
        return self.masker.public_key

    @property
    def started(self) -> bool:
        """Whether the sites hold an iterate of this run."""
        return self._newton_iteration is not None

    def start(self, message: IpmStart, group_index: int) -> Aggregate:
        """Configure the masks; start the sites — unless ``message.resume`` and they hold an
        iterate already (a group that rejoined after another one crashed keeps its own).

        Answers the (masked) count of its sites whose limits span several steps, from which
        the coordinator picks the run's Schur pattern; a fresh start (``open``) also the first
        ``newton`` round, on the pattern within steps (the coordinator asks again if some site
        spans steps).
        """
        setup = None if message.masking is None else message.masking.get(group_index)
        self._masked = setup is not None
        if setup is not None:
            if self.masker is None:
                raise RuntimeError("the group has no key for this run: call new_key first")
            self.masker.configure(setup)
        if not (message.resume and self.started):
            warm = self.warm if message.warm and self.warm is not None else [None] * len(self.sites)
            for site, point in zip(self.sites, warm, strict=True):
                if point is None or not site.start_warm(point, message):
                    site.start(message)
            self.warm = None
            self._newton_iteration = -1
        spans = np.array([sum(bool(s.qp.limits and s.qp.limits.spans_steps) for s in self.sites)])
        if message.resume:
            return self._answer(-1, "start", message.sequence, spans.astype(float))
        pattern = self._pattern(False)
        for site in self.sites:
            site.use_pattern(pattern)
        summed = self._summed([site.newton() for site in self.sites])
        self._newton_iteration = 0
        flat = pack("open", {"across_steps": spans, **summed}, self.n_rows, pattern.size)
        return self._answer(0, "open", message.sequence, flat)

    @staticmethod
    def _summed(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The hosted sites' answers summed field by field."""
        return {name: reduce(np.add, [p[name] for p in parts]) for name in parts[0]}

    def _answer(self, iteration: int, phase: Phase, sequence: int, flat: np.ndarray) -> Aggregate:
        """The group's sum, masked when the run says so."""
        if not self._masked:
            return Aggregate(iteration, phase, flat)
        assert self.masker is not None
        return Aggregate(iteration, phase, self.masker.mask(flat, sequence, ROUND_IDS[phase]), True)

    def shift(self, steps: int) -> None:
        """The horizon moved ``steps``: move the kept iterates with it."""
        if self.warm is not None:
            self.warm = [point.shifted(steps) for point in self.warm]

    def handle(self, request: IpmRequest) -> Aggregate:
        """Run one round on every hosted site; answer the group's (masked) sum."""
        phase: Phase = request.phase
        parts: list[dict[str, np.ndarray]] = []
        for site in self.sites:
            if request.accept_correction:
                site.accept()
            if phase == "newton":
                assert request.prices is not None
                if self._newton_iteration is None:
                    raise RuntimeError("a newton round before the group was started")
                # A round repeated after another group crashed: the step is taken once.
                step = request.step if request.iteration > self._newton_iteration else 0.0
                site.take(step, request.prices)
                site.use_pattern(self._pattern(request.across_steps))
                parts.append(site.newton())
            elif phase == "predict":
                assert request.price_step is not None
                parts.append(site.predict(request.price_step))
            elif phase == "correct":
                assert request.price_step is not None
                parts.append(site.correct(request.price_step, request.sigma_mu))
            elif phase == "centre":
                parts.append(site.centre(request.step, request.sigma_mu))
            elif phase == "recentred":
                assert request.price_step is not None
                parts.append(site.recentred(request.price_step))
            elif phase == "finish":
                assert request.factors is not None and request.restore is not None
                site.finish(request.factors, request.restore)
            else:
                raise ValueError(f"unknown phase {phase!r}")
        if phase == "newton":
            self._newton_iteration = max(request.iteration, self._newton_iteration or 0)
        if phase == "predict" and request.snapshot:
            self.warm = [site.snapshot() for site in self.sites]
        if phase == "finish":
            for adopt, site in zip(self._adopt, self.sites, strict=True):
                adopt(site.xi)
            return Aggregate(request.iteration, phase, np.zeros(0))
        summed = self._summed(parts)
        pattern_size = self._pattern(request.across_steps).size
        flat = pack(phase, summed, self.n_rows, pattern_size)
        return self._answer(request.iteration, phase, request.sequence, flat)

    def solutions(self) -> list[np.ndarray]:
        """Each hosted site's ``ξ``."""
        return [site.xi for site in self.sites]


def begin_interior_point(
    sites: HostedSites, previous: SiteHandler | None, settings: object
) -> GroupInteriorPoint:
    """:class:`~thermoroute.site_agent.methods.SiteHandlerFactory` of the interior point: the
    sites' problems as they are now, warm from the previous run's kept iterates (if that run
    was an interior point's too). ``settings`` are unused: they come with the start."""
    del settings
    warm = previous.warm if isinstance(previous, GroupInteriorPoint) else None
    return GroupInteriorPoint(
        [agent.subproblem.qp() for agent in sites.agents],
        sites.layout,
        warm=warm,
        adopt=[agent.subproblem.adopt for agent in sites.agents],
    )
