"""Safeguarded Anderson acceleration (type II) of a fixed-point iteration ``v ← G(v)``.

The coordinator's ADMM state ``v = (z, u)`` evolves by a fixed-point map ``G`` (one round of
site solves and the exchange update). Anderson acceleration replaces ``G(v_k)`` by an affine
combination of the last ``m + 1`` images ``G(v_j)`` whose combined residual
``g = v − G(v)`` is smallest in the least-squares sense. With ``s_j = v_{j+1} − v_j`` and
``y_j = g_{j+1} − g_j`` held as the columns of ``S`` and ``Y``:

.. math::
    \\gamma = \\arg\\min_\\gamma \\|g_k - Y\\gamma\\|^2 + \\eta\\,(\\|S\\|_F^2 + \\|Y\\|_F^2)
    \\|\\gamma\\|^2, \\qquad v_{k+1} = G(v_k) - (S - Y)\\gamma,

which is A2DR's weight form ``v_{k+1} = Σ_j α_j G(v_j)``, ``Σ_j α_j = 1``. Affine weights
keep every linear invariant of ``G``'s images — here ``Σ_i z_i = b``.

The safeguard of A2DR: an accelerated step is taken only while the fixed-point residual of
the current iterate stays below ``D ‖g_0‖ (n_AA + 1)^{−(1+ε)}`` (``n_AA`` accelerated steps so
far); otherwise the plain step ``G(v_k)`` is taken. The memory is reset by the caller when
``G`` itself changes (a new ``ρ``).

Everything is computed from the coordinator's own state: the sites only ever send served
demand, so acceleration adds no message and reveals nothing more of a site.

References
----------
.. [1] H. F. Walker, P. Ni, "Anderson Acceleration for Fixed-Point Iterations", SIAM J.
   Numer. Anal. 49(4), 2011.
.. [2] A. Fu, J. Zhang, S. Boyd, "Anderson Accelerated Douglas-Rachford Splitting", SIAM J.
   Sci. Comput. 42(6), 2020 (memory 10, regularisation 1e-8, safeguard ``D = 1e6``).
"""

from __future__ import annotations

import math

import numpy as np


class AndersonAccelerator:
    """Type-II Anderson acceleration with A2DR's regularisation and safeguard.

    Parameters
    ----------
    memory : int
        Number of difference pairs ``(s_j, y_j)`` kept.
    regularization : float
        ``η``; the least-squares problem is regularised by ``η (‖S‖²_F + ‖Y‖²_F)``.
    safeguard_factor : float
        ``D`` of the safeguard bound.
    safeguard_eps : float
        ``ε`` of the safeguard bound.
    """

    def __init__(
        self,
        memory: int = 10,
        regularization: float = 1e-8,
        safeguard_factor: float = 1e6,
        safeguard_eps: float = 1e-6,
        monotone: bool = True,
        monotone_slack: float = -0.01,
    ) -> None:
        if memory < 1:
            raise ValueError("memory must be >= 1")
        self.memory = int(memory)
        self.regularization = float(regularization)
        self.safeguard_factor = float(safeguard_factor)
        self.safeguard_eps = float(safeguard_eps)
        self.monotone = bool(monotone)
        self.monotone_slack = float(monotone_slack)
        self.accepted = 0  # n_AA: accelerated steps taken
        self.rejected = 0
        self.g0_norm: float | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the history (after the map ``G`` changed, e.g. a new ``ρ``)."""
        self._s: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._gram = np.zeros((0, 0))  # YᵀY of the kept columns
        self._v_prev: np.ndarray | None = None
        self._g_prev: np.ndarray | None = None
        self._ref: tuple[float, np.ndarray] | None = None

    def bound(self) -> float:
        """The current safeguard bound on ``‖g_k‖``."""
        if self.g0_norm is None:
            return math.inf
        return (
            self.safeguard_factor
            * self.g0_norm
            * (self.accepted + 1.0) ** (-(1.0 + self.safeguard_eps))
        )

    def _push(self, s: np.ndarray, y: np.ndarray) -> None:
        if len(self._y) == self.memory:
            self._s.pop(0)
            self._y.pop(0)
            self._gram = self._gram[1:, 1:]
        cross = np.array([float(np.dot(col, y)) for col in self._y])
        k = len(self._y)
        gram = np.empty((k + 1, k + 1))
        gram[:k, :k] = self._gram
        gram[:k, k] = cross
        gram[k, :k] = cross
        gram[k, k] = float(np.dot(y, y))
        self._gram = gram
        self._s.append(s)
        self._y.append(y)

    def weights(self, g: np.ndarray) -> np.ndarray:
        """``γ`` of the regularised least-squares problem for residual ``g``."""
        k = len(self._y)
        rhs = np.array([float(np.dot(col, g)) for col in self._y])
        frob = float(np.trace(self._gram)) + sum(float(np.dot(s, s)) for s in self._s)
        lhs = self._gram + self.regularization * max(frob, 1e-300) * np.eye(k)
        try:
            return np.linalg.solve(lhs, rhs)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(lhs, rhs, rcond=None)[0]

    def step(self, v: np.ndarray, gv: np.ndarray) -> tuple[np.ndarray, bool]:
        """The next iterate from ``v_k`` and its image ``G(v_k)``.

        Returns
        -------
        v_next : ndarray
            ``G(v_k)``, the accelerated point, or — when the last accelerated point did not
            lower the fixed-point residual — ``G`` of the point it was extrapolated from.
        accelerated : bool
            Whether the Anderson step was taken.
        """
        g = v - gv
        g_norm = float(np.linalg.norm(g))
        if self.g0_norm is None:
            self.g0_norm = g_norm
        if self._ref is not None and self.monotone:
            ref_norm, ref_image = self._ref
            self._ref = None
            if not g_norm <= ref_norm * (1.0 + self.monotone_slack):
                # The extrapolated point is worse than where it came from: fall back to the
                # plain step from there, and forget the history that produced it.
                self.rejected += 1
                self.reset()
                return ref_image, False
        return self._advance(v, gv, g, g_norm)

    def _advance(
        self, v: np.ndarray, gv: np.ndarray, g: np.ndarray, g_norm: float
    ) -> tuple[np.ndarray, bool]:
        if self._v_prev is not None and self._g_prev is not None:
            self._push(v - self._v_prev, g - self._g_prev)
        self._v_prev, self._g_prev = v.copy(), g
        if not self._y:
            return gv, False
        if not g_norm <= self.bound():
            self.rejected += 1
            return gv, False
        gamma = self.weights(g)
        if not np.all(np.isfinite(gamma)):
            self.rejected += 1
            return gv, False
        v_next = gv.copy()
        for gam, s, y in zip(gamma, self._s, self._y, strict=True):
            v_next -= gam * (s - y)
        self.accepted += 1
        self._ref = (g_norm, gv)
        return v_next, True


class RestartedNesterov:
    """Nesterov momentum on a fixed-point iteration with adaptive restart (fast ADMM).

    The iterate evaluated is an extrapolation ``v̂_k = x_k + θ_k (x_k − x_{k−1})`` of the
    plain iterates ``x_k = G(v̂_{k−1})``, with Nesterov's ``a_{k+1} = (1 + √(1 + 4a_k²))/2``
    and ``θ_k = (a_k − 1)/a_{k+1}``. Whenever the fixed-point residual ``‖G(v̂) − v̂‖`` does
    not fall below ``η`` times its previous value, the momentum restarts (``a = 1``), which
    is what makes the scheme safe for weakly convex problems such as this one.

    As for :class:`AndersonAccelerator`, the extrapolation is affine in the images, so every
    linear invariant of ``G`` (``Σ_i z_i = b``) is kept, and it uses nothing but the
    coordinator's own state.

    Parameters
    ----------
    restart_factor : float
        ``η`` of the restart test (Goldstein et al. use 0.999).
    max_momentum : float
        Cap on ``θ`` (1 is Nesterov's limit); a smaller cap damps the extrapolation.

    References
    ----------
    .. [1] T. Goldstein, B. O'Donoghue, S. Setzer, R. Baraniuk, "Fast Alternating Direction
       Optimization Methods", SIAM J. Imaging Sci. 7(3), 2014 (Algorithm 8).
    .. [2] B. O'Donoghue, E. Candès, "Adaptive Restart for Accelerated Gradient Schemes",
       Found. Comput. Math. 15, 2015.
    """

    def __init__(self, restart_factor: float = 0.999, max_momentum: float = 1.0) -> None:
        if not 0.0 < restart_factor <= 1.0:
            raise ValueError("restart_factor must be in (0, 1]")
        if not 0.0 <= max_momentum <= 1.0:
            raise ValueError("max_momentum must be in [0, 1]")
        self.restart_factor = float(restart_factor)
        self.max_momentum = float(max_momentum)
        self.accepted = 0
        self.restarts = 0
        self.reset()

    def reset(self) -> None:
        """Drop the momentum (after ``G`` changed, e.g. a new ``ρ``)."""
        self._a = 1.0
        self._x_prev: np.ndarray | None = None
        self._g_prev = math.inf

    def step(self, v: np.ndarray, gv: np.ndarray) -> tuple[np.ndarray, bool]:
        """The next point to evaluate from ``v̂_k`` and its image ``G(v̂_k)``."""
        g_norm = float(np.linalg.norm(gv - v))
        x_prev, self._x_prev = self._x_prev, gv
        if x_prev is None or not g_norm < self.restart_factor * self._g_prev:
            if x_prev is not None:
                self.restarts += 1
            self._a = 1.0
            self._g_prev = g_norm
            return gv, False
        self._g_prev = g_norm
        a_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * self._a * self._a))
        theta = min((self._a - 1.0) / a_next, self.max_momentum)
        self._a = a_next
        if theta <= 0.0:
            return gv, False
        self.accepted += 1
        return gv + theta * (gv - x_prev), True
