"""An OSQP-form QP solved by the interior-point solver Clarabel: the sites' fallback.

OSQP (ADMM) is the sites' workhorse because a warm-started re-solve after a small change of
the target takes tens of iterations. On the subproblems of large fleets, while prices are
still being discovered, it can stall for thousands of iterations (most variables end at
their bound and the rest are ~1e-3 of a row). An interior-point method does not care about
that: it takes 10–20 iterations whatever the data, at the price of a fresh start and one
sparse factorisation per iteration. :class:`InteriorPointQP` keeps one Clarabel solver per
subproblem and changes only its vectors and ``P``'s values, as the OSQP object is.

OSQP form ``min ½xᵀPx + qᵀx, l ≤ Ax ≤ u`` maps to Clarabel's ``Ax + s = b, s ∈ K``:
rows with ``l = u`` go to the zero cone, finite lower bounds become ``−A x ≤ −l`` and finite
upper bounds ``A x ≤ u`` in the non-negative cone. With ``z`` Clarabel's dual, OSQP's
constraint dual is ``y = z_eq`` on equalities and ``y = z_up − z_lo`` on ranges (both
solve ``Px + q + Aᵀy = 0``).

References
----------
.. [1] P. J. Goulart, Y. Chen, "Clarabel: An interior-point solver for conic programs with
   quadratic objectives", arXiv:2405.12762, 2024.
.. [2] B. Stellato, G. Banjac, P. Goulart, A. Bemporad, S. Boyd, "OSQP: an operator splitting
   solver for quadratic programs", Mathematical Programming Computation 12, 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import clarabel
import numpy as np
import scipy.sparse as sp

#: Statuses whose point is used (AlmostSolved: reduced tolerances, still far better than a
#: stalled first-order iterate).
_USABLE = frozenset({clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved})


@dataclass(frozen=True)
class InteriorPointResult:
    """A usable Clarabel solution in OSQP's terms."""

    x: np.ndarray
    y: np.ndarray
    status: str
    iterations: int


class InteriorPointQP:
    """The QP ``min ½xᵀPx + qᵀx, l ≤ Ax ≤ u`` (OSQP's form), set up once for Clarabel.

    Parameters
    ----------
    P : csc_matrix (n, n)
        Upper triangle used; its pattern is kept for :meth:`update_p`.
    A : csc_matrix (m, n)
    lower, upper : ndarray (m,)
        ``l`` and ``u``; ``±inf`` where absent.
    max_iter : int
        Clarabel's iteration limit.
    tolerance : float
        Clarabel's gap (absolute and relative) and feasibility tolerances. Its defaults
        (1e-8) leave errors of ~1e-5 in the served demand of these QPs when the rows'
        penalties differ by orders of magnitude; 1e-9 costs about one more iteration.
    """

    def __init__(
        self,
        P: sp.csc_matrix,
        A: sp.csc_matrix,
        lower: np.ndarray,
        upper: np.ndarray,
        *,
        max_iter: int = 100,
        tolerance: float = 1e-9,
    ) -> None:
        lo, up = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        self._m = len(lo)
        self._eq = np.flatnonzero(lo == up)
        ranged = lo != up
        self._lo = np.flatnonzero(ranged & np.isfinite(lo))
        self._up = np.flatnonzero(ranged & np.isfinite(up))
        a = sp.csr_matrix(A)
        self._A = sp.vstack([a[self._eq], -a[self._lo], a[self._up]]).tocsc()
        self._b = np.concatenate([up[self._eq], -lo[self._lo], up[self._up]])
        self._cones = [
            clarabel.ZeroConeT(len(self._eq)),
            clarabel.NonnegativeConeT(len(self._lo) + len(self._up)),
        ]
        self._P = sp.triu(sp.csc_matrix(P), format="csc")
        self._P.sort_indices()
        self._settings = clarabel.DefaultSettings()
        self._settings.verbose = False
        self._settings.max_iter = int(max_iter)
        self._settings.tol_gap_abs = tolerance
        self._settings.tol_gap_rel = tolerance
        self._settings.tol_feas = tolerance
        # Keep explicit zeros: the pattern must survive value updates.
        self._settings.presolve_enable = False
        self._solver: clarabel.DefaultSolver | None = None
        self._q = np.zeros(self._P.shape[0])

    def update_p(self, P: sp.csc_matrix) -> None:
        """New values of ``P`` on the same pattern (applied at the next solve)."""
        upper = sp.triu(sp.csc_matrix(P), format="csc")
        upper.sort_indices()
        if upper.nnz != self._P.nnz:
            raise ValueError("P's pattern changed; build a new InteriorPointQP")
        self._P = upper
        if self._solver is not None:
            self._solver.update(P=upper.data.copy())

    def solve(self, q: np.ndarray) -> InteriorPointResult | None:
        """Solve for the linear cost ``q``; ``None`` when Clarabel finds no usable point."""
        q = np.asarray(q, dtype=float)
        if self._solver is None:
            self._solver = clarabel.DefaultSolver(
                self._P, q, self._A, self._b, self._cones, self._settings
            )
        else:
            self._solver.update(q=q)
        solution = self._solver.solve()
        if solution.status not in _USABLE:
            return None
        x = np.asarray(solution.x, dtype=float)
        z = np.asarray(solution.z, dtype=float)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
            return None
        neq, nlo = len(self._eq), len(self._lo)
        y = np.zeros(self._m)
        y[self._eq] = z[:neq]
        np.subtract.at(y, self._lo, z[neq : neq + nlo])
        np.add.at(y, self._up, z[neq + nlo :])
        return InteriorPointResult(x, y, str(solution.status), int(solution.iterations))
