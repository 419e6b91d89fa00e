"""A site's exchange-ADMM subproblem, built once and re-solved with OSQP 1.x.

Each outer ADMM iteration the coordinator sends a site a target ``v`` (one value per coupling row
the site can serve, in the scaled units of :class:`thermoroute.common.coupling.CouplingLayout`) and
a penalty ``ρ``; the site solves (docs/model.md §3, §6, §7)

.. math::

    x_i = \\arg\\min_{x \\ge 0,\\ 0 \\le n \\le G,\\ L \\le u_{max} n}
          f_i(x, n) + \\frac{\\rho}{2} \\lVert A_i x - v \\rVert^2

where ``f_i`` is the site's share of the objective in AUD and ``A_i x`` its served demand per
coupling row: ``x[j,c,t] / s_r`` on an interactive row, ``Σ_t x[j,c,t] · 3600Δ / s_r`` on a
deferrable row.

Formulation
-----------
What can be eliminated is:

* variables of forbidden (region, class) pairs never exist;
* the active GPUs ``n``: they only carry the idle-power cost ``a_t · n_t`` with
  ``a_t = κ_t · Δ · idle_w / 1000`` (``κ_t`` the AUD cost of a kWh of IT energy at step ``t``,
  :meth:`SiteSubproblem.energy_weight`) and the constraints ``L_t / u_max ≤ n_t ≤ G``. For fixed
  ``x`` the optimum is ``n_t = L_t / u_max`` when ``a_t ≥ 0`` (idle GPUs cost money) and
  ``n_t = G`` when ``a_t < 0`` (negative prices pay for consumption), so ``n`` is replaced by
  that choice, its cost folded into the linear cost of ``x`` and the constraints reduce to
  ``L_t ≤ u_max · G``. The elimination is exact: the problem over ``x`` has the same optimum.

The variables are scaled, ``x = D ξ``, so that the coupling rows read ``ξ`` directly: ``D`` is
the row scale ``s_r`` on interactive entries and ``s_r / (3600Δ · T)`` on deferrable ones
(a deferrable row is then the mean of its ``T`` entries). Two groups of auxiliary variables
keep the Hessian diagonal and its size linear in the number of pairs (the quadratic terms
are rank one per step and per deferrable pair; kept in ``x`` they would give dense blocks
of ``(pairs)²`` per step):

* ``ℓ_t = L_t / (u_max G)``, the utilisation of the installed capacity, with
  ``0 ≤ ℓ_t ≤ 1`` and the equality ``Σ_k g_k D_k ξ_k / (u_max G) − ℓ_t = 0``;
* ``z_p = (1/T) Σ_t ξ_{p,t}``, the served share of deferrable pair ``p``.

The OSQP problem is ``min ½ yᵀ P y + qᵀ y`` over ``y = (ξ, ℓ, z)`` with

* ``P = P₀ + ρ Q`` diagonal: ``P₀ = 2β (u_max G)²`` on ``ℓ`` (β the congestion weight),
  ``Q = 1`` on interactive ``ξ`` and on ``z``; both on one upper-triangular pattern, so a
  change of ρ is a single ``update(Px=…)``;
* ``q = q₀ − ρ · (v on interactive ξ and on z)``: a new target is a single ``update(q=…)``
  that keeps the factorisation.

References
----------
.. [1] S. Boyd, N. Parikh, E. Chu, B. Peleato, J. Eckstein, "Distributed Optimization and
   Statistical Learning via the Alternating Direction Method of Multipliers", Foundations
   and Trends in Machine Learning 3(1), 2011, §7.3 (exchange ADMM).
.. [2] B. Stellato, G. Banjac, P. Goulart, A. Bemporad, S. Boyd, "OSQP: an operator splitting
   solver for quadratic programs", Mathematical Programming Computation 12, 2020.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import osqp
import scipy.sparse as sp

from thermoroute.common.admm_protocol import Penalty
from thermoroute.common.coupling import CouplingLayout, shift_steps
from thermoroute.common.evaluate import evaluate, plant_limits, true_pue, true_wue
from thermoroute.common.scenario import Scenario
from thermoroute.site_agent.cost_privacy import CostNoise
from thermoroute.site_agent.interior_point import InteriorPointQP

log = logging.getLogger(__name__)

#: Statuses whose iterate is usable, if not to the requested accuracy.
_APPROXIMATE = frozenset(
    {
        osqp.SolverStatus.OSQP_SOLVED_INACCURATE,
        osqp.SolverStatus.OSQP_MAX_ITER_REACHED,
        osqp.SolverStatus.OSQP_TIME_LIMIT_REACHED,
    }
)


@dataclass(frozen=True)
class InnerSettings:
    """OSQP settings of a site's subproblem (names as OSQP 1.x wants them).

    Attributes
    ----------
    eps_abs, eps_rel : float
        Default absolute and relative tolerances; :meth:`SiteSubproblem.solve` may tighten
        them per call (``eps``) as the outer residuals fall.
    max_iter : int
        Iteration limit of one inner solve. A warm-started solve takes ~10–50 iterations
        once the prices settle; early on, and on large fleets whose rows carry large
        penalties, hundreds. The cap bounds the long tail (a tolerance the near-linear batch
        allocation cannot reach), the iterate then being used and flagged as approximate:
        on 300 synthetic sites, a cap of 300 instead of 4,000 cut the wall time of the
        first 40 iterations by 30 % at the same outer progress.
    polishing : bool
        Polish the solution (an extra reduced KKT solve); off in the ADMM loop.
    warm_starting : bool
        Start each solve from the previous solution.
    adaptive_rho : bool
        OSQP's own step-size adaptation (refactorises when it fires).
    adaptive_rho_interval : int
        Iterations between those adaptations. OSQP's default (0) times the setup and adapts
        after a fraction of it, which makes iteration counts — and so results to within
        the tolerance — depend on the machine's load; a fixed interval keeps runs
        reproducible.
    check_termination : int
        Check the stopping test every this many iterations. OSQP's default (25) makes even
        a warm start from the exact solution take 25 iterations (osqp issue #484); on these
        small problems a residual check is cheap.
    osqp_rho : float
        OSQP's initial internal step size (not the outer ADMM ρ).
    time_limit : float, optional
        Seconds per solve; none by default.
    verbose : bool
        Let OSQP print.
    fallback : bool
        When OSQP has not solved within its iteration limit, solve the same QP with the
        interior-point solver Clarabel (:mod:`thermoroute.site_agent.interior_point`) and warm-start
        OSQP from that exact point, instead of using an approximate iterate. OSQP stalls on
        the subproblems of large fleets while prices are discovered: with 1,000 sites
        sharing every row, the QPs of iteration 7 needed 825–15,020 OSQP iterations (no ρ,
        σ, α or scaling helped), against 14 Clarabel iterations (~9 ms). Once prices settle,
        warm-started OSQP solves in 10–50 iterations and Clarabel is not called. Off by
        default until measured on whole runs (BENCHMARKS.md); on ``australia`` it finishes
        the polishing solves exactly.
    fallback_after : int
        OSQP's iteration limit on the solve after one that needed the fallback (a site whose
        QPs are hard now is likely to have a hard one next); ``max_iter`` again as soon as
        OSQP solves on its own.
    """

    eps_abs: float = 1e-6
    eps_rel: float = 1e-6
    max_iter: int = 1_000
    polishing: bool = False
    warm_starting: bool = True
    adaptive_rho: bool = True
    adaptive_rho_interval: int = 25
    check_termination: int = 5
    osqp_rho: float = 0.1
    time_limit: float | None = None
    verbose: bool = False
    fallback: bool = False
    fallback_after: int = 50

    def osqp_kwargs(self) -> dict[str, float | int | bool]:
        """Keyword arguments of ``osqp.OSQP.setup``."""
        kwargs: dict[str, float | int | bool] = {
            "eps_abs": self.eps_abs,
            "eps_rel": self.eps_rel,
            "max_iter": self.max_iter,
            "polishing": self.polishing,
            "warm_starting": self.warm_starting,
            "adaptive_rho": self.adaptive_rho,
            "adaptive_rho_interval": self.adaptive_rho_interval,
            "check_termination": self.check_termination,
            "rho": self.osqp_rho,
            "verbose": self.verbose,
        }
        if self.time_limit is not None:
            kwargs["time_limit"] = self.time_limit
        return kwargs


@dataclass(frozen=True)
class LimitRows:
    """A site's model v1.1 limits on its variables beyond the capacity: ``M ξ ≤ 1``.

    One row per step for a grid connection limit (IT power below ``grid_limit_kw / pPUE_t``),
    one per daily window for a water allowance (docs/model.md §12), then one per step for the
    powered GPUs (``L/u_max + ν G ≤ f_t G``, ``ν`` the GPUs powered beyond the load), each
    divided by its limit so that every row reads as a share of it (rows in kW and in litres
    next to busy GPUs would otherwise span six orders of magnitude in the interior point's
    Newton matrix).

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix (r, n)
        Share of the row's limit one scaled unit of each variable uses.
    spans_steps : bool
        Some row holds flows of several steps (a water window): the site's Schur complement then
        couples rows of different steps (:class:`thermoroute.common.schur_pattern.SchurPattern`).
    """

    matrix: sp.csr_matrix
    spans_steps: bool

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])

    def values(self, xi: np.ndarray) -> np.ndarray:
        """Each row's share of its limit, (r,)."""
        return np.asarray(self.matrix @ xi, dtype=float)

    def transpose(self, y: np.ndarray) -> np.ndarray:
        """``Mᵀ y``, (n,)."""
        return np.asarray(self.matrix.T @ y, dtype=float)

    def smallest_per_flow(self, row_values: np.ndarray, n: int) -> np.ndarray:
        """For every flow, the smallest of ``row_values`` over the rows it is in (1 if none)."""
        coo = self.matrix.tocoo()
        out = np.ones(n)
        np.minimum.at(out, coo.col, row_values[coo.row])
        return out


@dataclass(frozen=True)
class SiteQp:
    """A site's problem in the scaled variables ``ξ``, for methods that do not use OSQP.

    ``f(ξ) = costᵀξ + congestion · Σ_t L_t² + constant`` with the busy GPUs
    ``L_t = Σ_{k: step_k = t} gpu_load_k ξ_k ≤ capacity_t``, the v1.1 limits
    ``limits.matrix ξ ≤ 1`` where the site gives any, and ``ξ ≥ 0``; the site's served
    demand on support row ``support[position_k]`` is ``Σ coefficient_k ξ_k``. The same
    problem as the ADMM subproblem without the penalty term (module docstring).

    Attributes
    ----------
    cost : ndarray (n,)
        Linear cost [AUD per scaled unit].
    congestion : float
        ``β`` [AUD per busy-GPU²].
    gpu_load : ndarray (n,)
        Busy GPUs per scaled unit.
    step : ndarray of int (n,)
        Step of each variable.
    steps : int
    capacity : ndarray (T,)
        ``u_max · f_t · G`` busy GPUs (``f_t = 1`` without derating data).
    constant : float
        AUD that no decision changes (GPUs kept powered where idling pays).
    support : ndarray of int64 (m_i,)
        Global coupling rows the site can serve, sorted.
    position : ndarray of int (n,)
        Support position of each variable's coupling row.
    coefficient : ndarray (n,)
        Coefficient of each variable in its scaled row (1, or ``1/T`` for deferrable).
    limits : LimitRows or None
        The grid and water rows (model v1.1); ``None`` for a site without them.
    """

    cost: np.ndarray
    congestion: float
    gpu_load: np.ndarray
    step: np.ndarray
    steps: int
    capacity: np.ndarray
    constant: float
    support: np.ndarray
    position: np.ndarray
    coefficient: np.ndarray
    limits: LimitRows | None = None

    @property
    def n(self) -> int:
        return int(self.cost.size)

    def load(self, xi: np.ndarray) -> np.ndarray:
        """Busy GPUs per step, (T,)."""
        return np.bincount(self.step, weights=self.gpu_load * xi, minlength=self.steps)

    @property
    def row_caps(self) -> np.ndarray:
        """Right-hand sides of the local rows: the capacity per step, then 1 per limit row."""
        if self.limits is None:
            return self.capacity
        return np.concatenate([self.capacity, np.ones(self.limits.size)])

    def rows(self, xi: np.ndarray) -> np.ndarray:
        """The local rows' values ``H ξ``: load per step, then the limit rows, (T + r,)."""
        if self.limits is None:
            return self.load(xi)
        return np.concatenate([self.load(xi), self.limits.values(xi)])

    def rows_transpose(self, y: np.ndarray) -> np.ndarray:
        """``Hᵀ y`` for one value per local row, (n,)."""
        out = self.gpu_load * y[: self.steps][self.step]
        if self.limits is not None:
            out = out + self.limits.transpose(y[self.steps :])
        return out

    def room(self, xi: np.ndarray, fraction: float = 1.0) -> np.ndarray:
        """For every flow, ``min(1, fraction · cap / value)`` over the local rows it is in:
        scaling each flow by it keeps every row within ``fraction`` of its limit (the
        rows' coefficients are non-negative)."""
        load = self.load(xi)
        cap = fraction * self.capacity
        factor = np.where(load > cap, cap / np.maximum(load, 1e-300), 1.0)[self.step]
        if self.limits is not None:
            value = self.limits.values(xi)
            limit_factor = np.where(value > fraction, fraction / np.maximum(value, 1e-300), 1.0)
            factor = np.minimum(factor, self.limits.smallest_per_flow(limit_factor, self.n))
        return factor

    def spare_share(self, xi: np.ndarray) -> np.ndarray:
        """For every flow, how much it may grow as a share of itself, ``min(spare/value,
        1)`` over the local rows it is in (the spare room shared in proportion to use)."""
        load = self.load(xi)
        spare = np.maximum(self.capacity - load, 0.0)
        allowance = np.minimum(spare / np.maximum(load, 1e-300), 1.0)[self.step]
        if self.limits is not None:
            value = self.limits.values(xi)
            share = np.minimum(np.maximum(1.0 - value, 0.0) / np.maximum(value, 1e-300), 1.0)
            allowance = np.minimum(allowance, self.limits.smallest_per_flow(share, self.n))
        return allowance

    def served(self, xi: np.ndarray) -> np.ndarray:
        """Served demand on the support rows [scaled units]."""
        out = np.bincount(self.position, weights=self.coefficient * xi, minlength=self.support.size)
        return out.astype(float, copy=False)

    def gradient(self, xi: np.ndarray) -> np.ndarray:
        return self.cost + 2.0 * self.congestion * self.gpu_load * self.load(xi)[self.step]

    def objective(self, xi: np.ndarray) -> float:
        load = self.load(xi)
        return float(self.cost @ xi + self.congestion * (load @ load) + self.constant)


@dataclass
class SolveInfo:
    """What the last inner solve did (for the site's own telemetry)."""

    status: str = "not solved"
    ok: bool = False
    #: OSQP solves run so far.
    solves: int = 0
    iterations: int = 0
    solve_s: float = 0.0
    #: Solves that returned an approximate iterate (inaccurate, iteration or time limit).
    approximate: int = 0
    #: Solves whose iterate was unusable; the previous iterate was kept instead.
    failed: int = 0
    #: Solves finished by the Clarabel fallback, and its iterations in the last one.
    fallbacks: int = 0
    fallback_iterations: int = 0


class SiteSubproblem:
    """One site's ADMM subproblem: set up once, re-solved by changing vectors only.

    Parameters
    ----------
    site : Scenario
        A one-site scenario (see :func:`thermoroute.site_agent.data.load_site`).
    layout : CouplingLayout
        The coupling rows; must match the scenario's regions, classes and steps.
    row_scale : ndarray (n_rows,)
        Positive scale ``s_r`` of every coupling row (:meth:`CouplingLayout.row_scale`).
    rho : float
        Initial outer ADMM penalty [AUD per squared scaled unit].
    settings : InnerSettings, optional
        OSQP settings.
    cost_noise : CostNoise, optional
        The site's private noise on its cost of IT energy (cost privacy,
        :mod:`thermoroute.site_agent.cost_privacy`): the problem is planned with it, the
        site's charges (:meth:`local_objective`) stay true.

    Attributes
    ----------
    setup_count : int
        How often OSQP was set up (1 unless the structure changed in :meth:`shift`).
    px_updates : int
        How often the matrix values were updated (each one refactorises).
    info : SolveInfo
        Status, iterations and time of the last solve, and failure counters.
    """

    def __init__(
        self,
        site: Scenario,
        layout: CouplingLayout,
        row_scale: np.ndarray,
        *,
        rho: Penalty,
        settings: InnerSettings | None = None,
        cost_noise: CostNoise | None = None,
    ) -> None:
        self.settings = settings or InnerSettings()
        self.cost_noise = cost_noise
        self.setup_count = 0
        self.px_updates = 0
        self.info = SolveInfo()
        self._layout = layout
        self._eps = (self.settings.eps_abs, self.settings.eps_rel)
        self._bind_site(site)
        self._build_structure()
        self._rho = self._entry_rho(rho)
        self._set_row_scale(row_scale)
        self._xi = np.zeros(self._n_qp)
        self._served = self._served_of(self._xi)
        self._y_dual: np.ndarray | None = None
        self._ipm: InteriorPointQP | None = None
        self._setup()

    # ----------------------------------------------------------------------------------
    # Data and structure

    def _bind_site(self, site: Scenario) -> None:
        """Check ``site`` against the layout and derive the per-step costs."""
        if len(site.sites) != 1:
            raise ValueError(f"a site subproblem needs a one-site scenario, got {len(site.sites)}")
        lay = self._layout
        if (len(site.regions), len(site.classes), site.steps) != (
            lay.regions,
            lay.classes,
            lay.steps,
        ):
            raise ValueError(
                f"scenario has (R, C, T) = {(len(site.regions), len(site.classes), site.steps)}, "
                f"the coupling layout {(lay.regions, lay.classes, lay.steps)}"
            )
        if tuple(bool(d) for d in site.classes.deferrable) != tuple(lay.deferrable):
            raise ValueError("the scenario's deferrable classes differ from the coupling layout")
        self.site = site
        s, o = site.sites, site.objective
        self._gpus = float(s.gpus[0])
        self._u_max = float(s.u_max[0])
        self._capacity = self._u_max * self._gpus  # busy GPUs
        dt_h, dt_s = site.step_hours, site.step_seconds
        # Congestion: Λ_queue·λ_L = β L², β in AUD per busy-GPU².
        self._beta = (
            o.latency_aud_per_req_s
            * float(s.max_wait_ms[0])
            / 1000.0
            / (float(s.ref_gpu_s[0]) * self._gpus * self._u_max)
            * dt_s
        )
        kappa = self.energy_weight(site)  # AUD per kWh of IT energy, (T,)
        if self.cost_noise is not None:
            kappa = kappa + self.cost_noise.offsets(site.sites.site_id[0], site.times)
        idle_cost = kappa * dt_h * float(s.idle_w[0]) / 1000.0  # AUD per powered GPU, a_t
        self._bind_plant(site)
        # n = L/u_max, or f_t G where idling pays — unless the site has grid or water rows,
        # where the GPUs powered beyond the load are variables of their own (_bind_plant).
        self._idle_follows_load = (idle_cost >= 0.0) | self._idle_variables
        self._idle_cost = idle_cost
        self._const = float(
            np.where(self._idle_follows_load, 0.0, idle_cost * self._max_gpus).sum()
        )
        # Linear cost of one request per second of (j, c) at step t, AUD / (req/s): (R, C, T).
        energy = kappa[None, None, :] * dt_h * site.energy_j[0][None, :, None] / 1000.0
        idle = np.where(self._idle_follows_load, idle_cost, 0.0)[None, None, :] * (
            site.gpu_s[0][None, :, None] / self._u_max
        )
        path_ms = site.rtt_ms[0][:, None] + site.prefill_ms[0][None, :]  # (R, C)
        path = (
            o.latency_aud_per_req_s
            * np.where(site.classes.interactive[None, :], path_ms, 0.0)
            / 1000.0
            * dt_s
        )
        self._unit_cost = energy + idle + path[:, :, None]

    def _bind_plant(self, site: Scenario) -> None:
        """Model v1.1's limits of the site (docs/model.md §12), from its true temperatures.

        Derating lowers the capacity per step (``n ≤ f_t G``, so ``L ≤ u_max f_t G``, and
        ``n = f_t G`` where idling pays). A grid limit caps IT power per step at
        ``grid_limit_kw / pPUE_t``; a water allowance caps ``Σ wue_t · Δ · P_t`` per daily
        window. Where idling pays (a negative energy weight, e.g. South Australia's negative
        prices) the best ``n`` under such a limit depends on how much room the load leaves,
        which the elimination of ``n`` cannot express: a site with grid or water rows keeps,
        per step, the GPUs it powers beyond its load as a variable ``ν_t ≥ 0`` (a share of
        ``G``; ``n = L/u_max + ν G ≤ f_t G``), at cost ``a_t G`` — zero at the optimum
        wherever idling costs money. Exact in every case.
        """
        limits = plant_limits(site)
        self._max_gpus = limits.max_gpus[0]  # f_t G, (T,)
        self._grid_it_kw: np.ndarray | None = None
        self._water: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if limits.grid[0]:
            self._grid_it_kw = limits.grid_kw[0] / true_pue(site)[0]
        if limits.water[0]:
            self._water = (limits.window, limits.water_l[0], true_wue(site)[0])
        self._idle_variables = self._grid_it_kw is not None or self._water is not None

    @staticmethod
    def energy_weight(site: Scenario) -> np.ndarray:
        """AUD per kWh of IT energy at each step of a one-site scenario, ``κ_t``.

        ``κ = pue · (price/1000 + λ_C · ci + λ_W · ewif) + λ_W · wue`` (docs/model.md §3, §6): the
        energy cost, carbon and off-site water scale with facility energy ``pue · E_it``,
        on-site water with IT energy.

        Returns
        -------
        ndarray (T,)
        """
        o = site.objective
        pue, wue = true_pue(site)[0], true_wue(site)[0]
        per_fac_kwh = (
            site.price_aud_per_mwh[0] / 1000.0
            + o.carbon_aud_per_kg * site.carbon_kg_per_kwh[0]
            + o.water_aud_per_l * site.ewif_l_per_kwh[0]
        )
        return pue * per_fac_kwh + o.water_aud_per_l * wue

    def _build_structure(self) -> None:
        """Index maps and the fixed sparsity patterns of P and A."""
        lay, site = self._layout, self.site
        T = lay.steps
        self._allowed = site.allowed()[0]
        pairs = np.argwhere(self._allowed)  # (npairs, 2), row-major (j, c)
        self._pair_j, self._pair_c = pairs[:, 0], pairs[:, 1]
        npairs = len(pairs)
        self._npairs = npairs
        self._nvar = npairs * T
        self._support = lay.support(self._allowed).astype(np.int64)
        rows = lay.row_of_entry()[self._pair_j, self._pair_c, :].reshape(-1)  # var k = p*T + t
        self._pos = np.searchsorted(self._support, rows)  # support position of each var
        deferrable = np.asarray(lay.deferrable, dtype=bool)
        self._var_deferrable = np.repeat(deferrable[self._pair_c], T)
        self._var_step = np.tile(np.arange(T), npairs)
        self._var_gpu_s = np.repeat(site.gpu_s[0][self._pair_c], T)
        # Coefficient of ξ in its scaled coupling row: 1 (interactive), 1/T (deferrable).
        self._m = np.where(self._var_deferrable, 1.0 / T, 1.0)
        self._defer_pairs = np.flatnonzero(deferrable[self._pair_c])
        nz = len(self._defer_pairs)
        self._nz = nz
        self._z_pos = self._pos[self._defer_pairs * T] if nz else np.zeros(0, dtype=np.int64)
        self._int_vars = np.flatnonzero(~self._var_deferrable)
        self._int_pos = self._pos[self._int_vars]
        nvar = self._nvar
        n_nu = T if self._idle_variables else 0
        self._n_nu = n_nu
        self._n_qp = nvar + n_nu  # the variables of SiteQp: flows, then ν
        self._i_z = nvar + T  # first z variable
        self._i_nu = nvar + T + nz  # first ν variable
        self._n_total = self._i_nu + n_nu

        # P: diagonal on interactive ξ, all ℓ and all z (the common pattern of P₀ and Q).
        diag = np.concatenate([self._int_vars, np.arange(nvar, self._i_nu)])
        self._p_index = diag
        self._p0 = np.zeros(len(diag))
        self._q_diag = np.zeros(len(diag))
        n_int = len(self._int_vars)
        self._q_diag[:n_int] = 1.0
        self._q_diag[n_int + T :] = 1.0

        # A in CSC, built column by column so the position of every value is known:
        # rows [ξ bounds (nvar) | ℓ bounds (T) | load definitions (T) | deferrable means (nz)
        #       | grid rows (T) | water windows | ν bounds (T) | powered GPUs (T)], the last
        # four only for a site with model v1.1 grid or water limits.
        r_ell_bound, r_load, r_mean = nvar, nvar + T, nvar + 2 * T
        r_grid = r_mean + nz
        n_grid = T if self._grid_it_kw is not None else 0
        r_water = r_grid + n_grid
        # The daily window of each step (empty without a water allowance).
        window, n_water = (
            (self._water[0], int(self._water[1].size))
            if self._water is not None
            else (np.zeros(0, dtype=np.int64), 0)
        )
        r_nu_bound = r_water + n_water
        r_powered = r_nu_bound + n_nu
        k = np.arange(nvar)
        defer_index = np.full(npairs, -1)
        defer_index[self._defer_pairs] = np.arange(nz)
        var_z = defer_index[k // T]
        has_z = var_z >= 0
        counts = np.concatenate(
            [
                2 + has_z.astype(int) + int(n_grid > 0) + int(n_water > 0),
                np.full(T, 2 + int(n_nu > 0), dtype=int),
                np.ones(nz, dtype=int),
                np.full(n_nu, 2 + int(n_grid > 0) + int(n_water > 0), dtype=int),
            ]
        )
        indptr = np.concatenate([[0], np.cumsum(counts)])
        indices = np.empty(indptr[-1], dtype=np.int64)
        data = np.empty(indptr[-1])
        start = indptr[:-1]
        # ξ columns: bound row, load row of its step, mean row of its pair (deferrable).
        indices[start[:nvar]] = k
        data[start[:nvar]] = 1.0
        indices[start[:nvar] + 1] = r_load + self._var_step
        self._a_load_at = start[:nvar] + 1  # values that depend on the row scale
        data[self._a_load_at] = 0.0
        ks = np.flatnonzero(has_z)
        indices[start[ks] + 2] = r_mean + var_z[ks]
        data[start[ks] + 2] = 1.0 / T
        # v1.1 rows follow (their values depend on the row scale, like the load rows).
        after = start[:nvar] + 2 + has_z.astype(int)
        self._a_grid_at = self._a_water_at = np.zeros(0, dtype=np.int64)
        if n_grid:
            self._a_grid_at = after.copy()
            indices[after] = r_grid + self._var_step
            after = after + 1
        if n_water:
            self._a_water_at = after.copy()
            indices[after] = r_water + window[self._var_step]
        self._n_limit_rows = n_grid + n_water
        # ℓ columns: bound row and −1 in the load row of its step (and 1 in its powered row).
        t = np.arange(T)
        indices[start[nvar + t]] = r_ell_bound + t
        data[start[nvar + t]] = 1.0
        indices[start[nvar + t] + 1] = r_load + t
        data[start[nvar + t] + 1] = -1.0
        if n_nu:
            indices[start[nvar + t] + 2] = r_powered + t
            data[start[nvar + t] + 2] = 1.0
        # z columns: −1 in its mean row.
        zc = np.arange(nz)
        indices[start[nvar + T + zc]] = r_mean + zc
        data[start[nvar + T + zc]] = -1.0
        # ν columns: its grid row and water window (values set with the data), its bound
        # row and its powered row (n/G = ℓ + ν ≤ f_t).
        self._a_nu_grid_at = self._a_nu_water_at = np.zeros(0, dtype=np.int64)
        if n_nu:
            at = start[self._i_nu + t]
            if n_grid:
                self._a_nu_grid_at = at.copy()
                indices[at] = r_grid + t
                at = at + 1
            if n_water:
                self._a_nu_water_at = at.copy()
                indices[at] = r_water + window
                at = at + 1
            indices[at] = r_nu_bound + t
            data[at] = 1.0
            indices[at + 1] = r_powered + t
            data[at + 1] = 1.0
        self._a_indices, self._a_indptr, self._a_data = indices, indptr, data
        m = r_powered + n_nu
        self._n_cons = m
        self._l, self._u = self._bounds()

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``l ≤ A y ≤ u``: ξ ≥ 0, 0 ≤ ℓ ≤ f_t (1 without derating), load and mean rows
        equalities (= 0), v1.1 rows at most 1 (their share of the limit), ν ≥ 0 and the
        powered GPUs ``ℓ + ν ≤ f_t``."""
        nvar, T, n_nu = self._nvar, self._layout.steps, self._n_nu
        fraction = self._max_gpus / self._gpus
        upper = np.concatenate(
            [
                np.full(nvar, np.inf),
                fraction,
                np.zeros(T + self._nz),
                np.ones(self._n_limit_rows),
                np.full(n_nu, np.inf),
                fraction[:n_nu],
            ]
        )
        lower = np.concatenate(
            [
                np.zeros(nvar + 2 * T + self._nz),
                np.full(self._n_limit_rows, -np.inf),
                np.zeros(n_nu),
                np.full(n_nu, -np.inf),
            ]
        )
        return lower, upper

    def _set_row_scale(self, row_scale: np.ndarray) -> None:
        """Variable scaling and every value that depends on it (q₀, P₀, load rows of A)."""
        lay, T = self._layout, self._layout.steps
        row_scale = np.asarray(row_scale, dtype=float)
        if row_scale.shape != (lay.n_rows,):
            raise ValueError(f"row_scale has shape {row_scale.shape}, expected ({lay.n_rows},)")
        s = row_scale[self._support][self._pos]
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("row scales must be finite and positive")
        self._row_scale = row_scale.copy()
        self._D = np.where(self._var_deferrable, s / (self.site.step_seconds * T), s)
        self._h = self._var_gpu_s * self._D  # busy GPUs per unit of ξ
        self._a_data[self._a_load_at] = self._h / self._capacity
        self._limits = self._limit_rows()
        self._qp: SiteQp | None = None  # built again from these values when next needed
        unit = self._unit_cost[self._pair_j, self._pair_c, :].reshape(-1)
        self._q0 = np.zeros(self._n_total)
        self._q0[: self._nvar] = unit * self._D
        # ν: a_t per powered GPU, ν in shares of G.
        self._q0[self._i_nu :] = self._idle_cost[: self._n_nu] * self._gpus
        # ½ P₀ ℓ² = β (u_max G ℓ)², the congestion cost of load L = u_max G ℓ.
        self._p0[len(self._int_vars) + np.arange(T)] = 2.0 * self._beta * self._capacity**2

    def _limit_rows(self) -> LimitRows | None:
        """The v1.1 rows of :class:`SiteQp` in the current scaling (``None`` without them);
        their values also go into OSQP's matrix.

        One scaled unit of flow ``k`` draws ``p_k = (idle_w · gpu_s / u_max + energy) · D_k
        / 1000`` kW of IT power (its share of the powered GPUs' idle power and its own), one
        unit of ``ν`` (a share of ``G``) ``idle_w · G / 1000``: a grid row ``t`` is
        ``Σ_{k in t} p_k ξ_k / (grid_limit_kw / pPUE_t)``, a water row
        ``Σ_{k in window} wue_t · Δ · p_k ξ_k / allowance``, and a powered row ``t`` is
        ``(L_t / u_max + ν_t G) / (f_t G)`` (all with ν's terms).
        """
        if not self._idle_variables:
            return None
        s, T, step = self.site.sites, self._layout.steps, self._var_step
        nvar, idle_w = self._nvar, float(s.idle_w[0])
        energy = self.site.energy_j[0][self._pair_c]
        per_pair = idle_w * self.site.gpu_s[0][self._pair_c] / self._u_max + energy
        it_kw = np.repeat(per_pair, T) * self._D / 1000.0  # per unit of each flow
        nu_kw = np.full(T, idle_w * self._gpus / 1000.0)  # per unit of each ν
        flow_cols, nu_cols, t = np.arange(nvar), nvar + np.arange(T), np.arange(T)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        values: list[np.ndarray] = []
        first = 0

        def add(
            row_of_flow: np.ndarray,
            flow: np.ndarray,
            row_of_nu: np.ndarray,
            nu: np.ndarray,
            size: int,
        ) -> None:
            """Rows ``first + row_of_*`` with ``flow`` in the flow columns, ``nu`` in ν's."""
            nonlocal first
            rows.extend([first + row_of_flow, first + row_of_nu])
            cols.extend([flow_cols, nu_cols])
            values.extend([flow, nu])
            first += size

        if self._grid_it_kw is not None:
            grid = it_kw / self._grid_it_kw[step]
            nu_grid = nu_kw / self._grid_it_kw
            self._a_data[self._a_grid_at] = grid
            self._a_data[self._a_nu_grid_at] = nu_grid
            add(step, grid, t, nu_grid, T)
        spans = False
        if self._water is not None:
            window, allowance, wue = self._water
            litres = wue * self.site.step_hours / allowance[window]  # share per kWh of IT
            water, nu_water = litres[step] * it_kw, litres * nu_kw
            self._a_data[self._a_water_at] = water
            self._a_data[self._a_nu_water_at] = nu_water
            add(window[step], water, window, nu_water, allowance.size)
            spans = bool(np.any(np.bincount(window) > 1))
        # Powered GPUs within the cooling's derated count: (L/u_max + ν G) / (f_t G) ≤ 1.
        usable = np.maximum(self._max_gpus, 1e-9 * self._gpus)  # f_t = 0: no GPU at all
        add(step, self._h / self._u_max / usable[step], t, self._gpus / usable, T)
        matrix = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
            shape=(first, self._n_qp),
        )
        return LimitRows(matrix, spans)

    def _p_values(self, rho: np.ndarray) -> np.ndarray:
        """P's diagonal for per-support-entry penalties ``rho`` (CSC data order)."""
        weight = np.concatenate(
            [rho[self._int_pos], np.zeros(self._layout.steps), rho[self._z_pos]]
        )
        return self._p0 + weight * self._q_diag

    def _p_matrix(self, rho: np.ndarray) -> sp.csc_matrix:
        """P in CSC, built explicitly so zero values keep their place in the pattern.

        Every column holds at most its diagonal entry and ``_p_index`` is increasing, so the
        CSC data are :meth:`_p_values` in order — the ``Px`` of later updates.
        """
        n = self._n_total
        present = np.zeros(n, dtype=np.int64)
        present[self._p_index] = 1
        indptr = np.concatenate([[0], np.cumsum(present)])
        return sp.csc_matrix((self._p_values(rho), self._p_index, indptr), shape=(n, n))

    def _a_matrix(self) -> sp.csc_matrix:
        return sp.csc_matrix(
            (self._a_data.copy(), self._a_indices, self._a_indptr),
            shape=(self._n_cons, self._n_total),
        )

    def _setup(self) -> None:
        self._solver = osqp.OSQP()
        self._solver.setup(
            self._p_matrix(self._rho),
            self._q_of(np.zeros(len(self._support)), self._rho),
            self._a_matrix(),
            self._l,
            self._u,
            **self.settings.osqp_kwargs(),
        )
        self.setup_count += 1
        self._ipm = None  # built from the new matrices when first needed
        self._osqp_budget = self.settings.max_iter
        self._eps = (self.settings.eps_abs, self.settings.eps_rel)
        self._solver.warm_start(x=self._full_of(self._xi), y=np.zeros(self._n_cons))

    def _q_of(self, target: np.ndarray, rho: np.ndarray) -> np.ndarray:
        q = self._q0.copy()
        q[self._int_vars] -= rho[self._int_pos] * target[self._int_pos]
        q[self._i_z : self._i_nu] -= rho[self._z_pos] * target[self._z_pos]
        return q

    # ----------------------------------------------------------------------------------
    # Solving

    def _entry_rho(self, rho: Penalty) -> np.ndarray:
        """Per-support-entry penalties from a scalar or a per-coupling-row vector."""
        if np.ndim(rho) == 0:
            value = float(rho)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"rho must be finite and > 0, got {value}")
            return np.full(len(self._support), value)
        rows = np.asarray(rho, dtype=float)
        if rows.shape != (self._layout.n_rows,):
            raise ValueError(
                f"per-row rho has shape {rows.shape}, expected ({self._layout.n_rows},)"
            )
        entry = rows[self._support]
        if not np.all(np.isfinite(entry)) or np.any(entry <= 0):
            raise ValueError("per-row rho must be finite and > 0 on the site's support")
        return entry

    @property
    def support(self) -> np.ndarray:
        """Sorted global ids of the coupling rows this site can serve (int64)."""
        return self._support

    @property
    def layout(self) -> CouplingLayout:
        return self._layout

    @property
    def row_scale(self) -> np.ndarray:
        return self._row_scale.copy()

    @property
    def rho(self) -> np.ndarray:
        """The outer penalty on each support row [AUD per squared scaled unit]."""
        return self._rho.copy()

    @property
    def osqp_iteration_limit(self) -> int:
        """OSQP's iteration limit for the next solve (see ``InnerSettings.fallback_after``)."""
        return self._osqp_budget

    @property
    def solver(self) -> osqp.OSQP:
        """The OSQP object (set up once; exposed so tests can check it is reused)."""
        return self._solver

    def set_rho(self, rho: Penalty) -> None:
        """Change the outer penalty: one ``update(Px=…)`` (a refactorisation), same pattern.

        ``rho`` is one value for every row, or one per coupling row (n_rows,).
        """
        entry = self._entry_rho(rho)
        if np.array_equal(entry, self._rho):
            return
        self._solver.update(Px=self._p_values(entry))
        self.px_updates += 1
        self._rho = entry
        if self._ipm is not None:
            self._ipm.update_p(self._p_matrix(entry))

    def _set_eps(self, eps: float | None) -> None:
        wanted = (
            (self.settings.eps_abs, self.settings.eps_rel)
            if eps is None
            else (float(eps), float(eps))
        )
        if wanted != self._eps:
            # Tolerances are plain settings: no refactorisation.
            self._solver.update_settings(eps_abs=wanted[0], eps_rel=wanted[1])
            self._eps = wanted

    def solve(
        self, target: np.ndarray, rho: Penalty | None, eps: float | None = None
    ) -> np.ndarray:
        """Solve for a new target and return the served demand on the support rows.

        Parameters
        ----------
        target : ndarray (len(support),)
            ``v``: the coordinator's target for this site's ``A_i x_i`` [scaled units].
        rho : float or ndarray (n_rows,) or None
            Outer ADMM penalty, one for all rows or one per coupling row; a change updates
            P's values (one refactorisation). ``None`` keeps the current one.
        eps : float, optional
            Inner absolute and relative tolerance for this and later solves; ``None`` keeps
            the defaults of :class:`InnerSettings`.

        Returns
        -------
        ndarray (len(support),)
            ``A_i x_i`` on the support rows [scaled units].

        Notes
        -----
        A solve that ends without ``OSQP_SOLVED`` is finished by Clarabel
        (:mod:`thermoroute.site_agent.interior_point`, with ``InnerSettings.fallback``), and OSQP is
        warm-started from that exact point. Without the fallback, or if it fails too, the
        solve does not raise: an approximate OSQP iterate (inaccurate, iteration or time
        limit) is projected onto the feasible set and used; an unusable one (infeasible,
        non-convex, NaN) is discarded and the previous iterate kept. Both are logged and
        counted in :attr:`info`.
        """
        target = np.asarray(target, dtype=float)
        if target.shape != self._support.shape:
            raise ValueError(f"target has shape {target.shape}, expected {self._support.shape}")
        if not np.all(np.isfinite(target)):
            raise ValueError("target must be finite")
        if rho is not None:
            self.set_rho(rho)
        self._set_eps(eps)
        q = self._q_of(target, self._rho)
        self._solver.update(q=q)
        t0 = time.perf_counter()
        result = self._solver.solve(raise_error=False)
        status = osqp.SolverStatus(result.info.status_val)
        if status == osqp.SolverStatus.OSQP_SIGINT:
            # OSQP traps Ctrl-C while it solves; hand the interrupt back to the caller
            # instead of swallowing it and carrying on with a stale iterate.
            raise KeyboardInterrupt(f"site {self.site_id}: interrupted during the inner solve")
        exact = None
        if status != osqp.SolverStatus.OSQP_SOLVED and self.settings.fallback:
            exact = self._interior_point().solve(q)
        self._set_osqp_budget(exact is not None)
        elapsed = time.perf_counter() - t0
        info = self.info
        info.solves += 1
        info.solve_s = elapsed
        info.iterations = int(result.info.iter)
        info.status = status.name
        # Copies: OSQP's solution arrays are overwritten by the next solve.
        xi = self._qp_part(result.x) if result.x is not None else None
        y = np.array(result.y, dtype=float) if result.y is not None else None
        if xi is not None and not np.all(np.isfinite(xi)):
            xi = None  # OSQP's iterate is usable only if finite
        if exact is not None:
            xi, y = self._qp_part(exact.x), exact.y
            info.ok = True
            info.status = f"CLARABEL_{exact.status.upper()}"
            info.fallbacks += 1
            info.fallback_iterations = exact.iterations
            # OSQP continues from the exact point: the next re-solve is a short one.
            self._solver.warm_start(x=exact.x, y=exact.y)
        elif status == osqp.SolverStatus.OSQP_SOLVED and xi is not None:
            info.ok = True
        elif status in _APPROXIMATE and xi is not None:
            info.ok = False
            info.approximate += 1
            log.warning(
                "site %s: inner solve ended with %s after %d iterations; using its iterate",
                self.site_id,
                status.name,
                info.iterations,
            )
        else:
            info.ok = False
            info.failed += 1
            log.error(
                "site %s: inner solve failed with %s; keeping the previous iterate",
                self.site_id,
                status.name,
            )
            xi, y = self._xi, None
            # OSQP's own iterate is garbage now: restart it from the last good point.
            self._solver.warm_start(x=self._full_of(xi), y=np.zeros(self._n_cons))
        self._y_dual = y if y is not None and np.all(np.isfinite(y)) else None
        self._xi = self._project(xi)
        self._served = self._served_of(self._xi)
        return self._served.copy()

    def _set_osqp_budget(self, after_fallback: bool) -> None:
        """OSQP's iteration limit for the next solve (``fallback_after`` after a fallback)."""
        cfg = self.settings
        budget = min(cfg.fallback_after, cfg.max_iter) if after_fallback else cfg.max_iter
        if budget != self._osqp_budget:
            self._solver.update_settings(max_iter=budget)
            self._osqp_budget = budget

    def _interior_point(self) -> InteriorPointQP:
        """The Clarabel copy of the current QP (built on first use, then kept)."""
        if self._ipm is None:
            self._ipm = InteriorPointQP(
                self._p_matrix(self._rho), self._a_matrix(), self._l, self._u
            )
        return self._ipm

    def _project(self, xi: np.ndarray) -> np.ndarray:
        """Clip to ``x ≥ 0`` and scale down flows in a local row above its limit (the load
        above ``u_max f_t G``, a v1.1 limit; solver tolerance)."""
        xi = np.maximum(xi, 0.0)
        return xi * self.qp().room(xi)

    def _served_of(self, xi: np.ndarray) -> np.ndarray:
        flows = xi[: self._nvar]
        served = np.bincount(self._pos, weights=self._m * flows, minlength=len(self._support))
        return served.astype(float, copy=False)  # bincount of nothing is an int array

    def _qp_part(self, y: np.ndarray) -> np.ndarray:
        """The variables of :class:`SiteQp` (flows, then ν) in an OSQP vector (a copy: OSQP
        overwrites its arrays)."""
        return np.concatenate([y[: self._nvar], y[self._i_nu : self._n_total]]).astype(float)

    def _full_of(self, xi: np.ndarray) -> np.ndarray:
        """The OSQP vector ``(ξ, ℓ, z, ν)`` consistent with ``(ξ, ν)``."""
        T, flows = self._layout.steps, xi[: self._nvar]
        ell = np.bincount(self._var_step, weights=self._h * flows, minlength=T) / self._capacity
        z = flows.reshape(self._npairs, T)[self._defer_pairs].mean(axis=1) if self._nz else []
        return np.concatenate([flows, ell, z, xi[self._nvar :]])

    # ----------------------------------------------------------------------------------
    # The iterate

    @property
    def site_id(self) -> str:
        return self.site.sites.site_id[0]

    @property
    def served(self) -> np.ndarray:
        """``A_i x_i`` of the current iterate on the support rows [scaled units]."""
        return self._served.copy()

    @property
    def x(self) -> np.ndarray:
        """Requests per second of the current iterate, (R, C, T); zero on forbidden pairs."""
        lay = self._layout
        out = np.zeros((lay.regions, lay.classes, lay.steps))
        flows = self._D * self._xi[: self._nvar]
        out[self._pair_j, self._pair_c, :] = flows.reshape(self._npairs, lay.steps)
        return out

    @property
    def load(self) -> np.ndarray:
        """Busy GPUs ``L_t`` of the current iterate, (T,)."""
        flows = self._xi[: self._nvar]
        return np.bincount(self._var_step, weights=self._h * flows, minlength=self._layout.steps)

    @property
    def n(self) -> np.ndarray:
        """Active GPUs of the current iterate, (T,): ``L/u_max``, or ``f_t G`` where idling
        pays (``L/u_max + ν G`` at a site with grid or water rows)."""
        n = np.where(self._idle_follows_load, self.load / self._u_max, self._max_gpus)
        if self._n_nu:
            n = n + np.maximum(self._xi[self._nvar :], 0.0) * self._gpus
        return np.clip(n, 0.0, self._max_gpus)

    def objective_value(self) -> float:
        """``f_i`` of the current iterate [AUD], from the QP data (cheap; no ADMM penalty)."""
        load = self.load
        linear = self._q0[: self._nvar] @ self._xi[: self._nvar]
        linear += self._q0[self._i_nu :] @ self._xi[self._nvar :]
        return float(linear + self._beta * (load @ load) + self._const)

    def qp(self) -> SiteQp:
        """The site's problem without the ADMM penalty, in the scaled variables.

        Built once per scaling and data (:meth:`_set_row_scale` drops it): every inner solve
        projects its iterate with it.
        """
        if self._qp is None:
            self._qp = self._build_qp()
        return self._qp

    def _build_qp(self) -> SiteQp:
        # ν (GPUs powered beyond the load, v1.1 grid or water rows only) has no coupling
        # row (coefficient 0) and no busy GPUs: only its cost and its limit rows.
        nu = self._n_nu
        return SiteQp(
            cost=self._qp_part(self._q0),
            congestion=float(self._beta),
            gpu_load=np.concatenate([self._h, np.zeros(nu)]),
            step=np.concatenate([self._var_step, np.arange(nu)]),
            steps=self._layout.steps,
            capacity=self._u_max * self._max_gpus,
            constant=float(self._const),
            support=self._support.copy(),
            position=np.concatenate([self._pos, np.zeros(nu, dtype=self._pos.dtype)]),
            coefficient=np.concatenate([self._m, np.zeros(nu)]),
            limits=self._limits,
        )

    def adopt(self, xi: np.ndarray) -> None:
        """Make ``ξ`` (scaled variables, as in :meth:`qp`) the current iterate.

        Used by other methods to hand their answer to the report and warm-start paths.
        """
        xi = np.asarray(xi, dtype=float)
        if xi.shape != (self._n_qp,):
            raise ValueError(f"xi has shape {xi.shape}, expected ({self._n_qp},)")
        self._warm(xi, None)

    def local_objective(
        self, x: np.ndarray | None = None, n: np.ndarray | None = None
    ) -> dict[str, float]:
        """The site's objective in AUD, charged by :func:`thermoroute.common.evaluate.evaluate`.

        Parameters
        ----------
        x : ndarray (R, C, T), optional
            A schedule to charge instead of the current iterate (with ``n``).
        n : ndarray (T,), optional
            Its active GPUs; by default those of the current iterate, or ``L/u_max`` when
            ``x`` is given.

        Returns
        -------
        dict
            ``energy_cost``, ``carbon``, ``water``, ``latency`` (each in AUD, weighted as in
            docs/model.md §6) and their sum ``total``.
        """
        if x is None:
            x = self.x
            n = self.n if n is None else n
        ev = evaluate(self.site, np.asarray(x)[None], None if n is None else np.asarray(n)[None])
        o = self.site.objective
        part = ev.per_site_step
        out = {
            "energy_cost": float(part["energy_cost_aud"].sum()),
            "carbon": float(o.carbon_aud_per_kg * part["carbon_kg"].sum()),
            "water": float(o.water_aud_per_l * part["water_l"].sum()),
            "latency": float(o.latency_aud_per_req_s * part["latency_req_s"].sum()),
        }
        out["total"] = float(part["objective_aud"].sum())
        return out

    def warm_start(self, x: np.ndarray, n: np.ndarray | None = None) -> None:
        """Make ``x`` the current iterate and OSQP's starting point (duals reset to 0).

        Parameters
        ----------
        x : ndarray (R, C, T)
            Requests per second; entries of forbidden pairs are ignored (those variables do
            not exist).
        n : ndarray (T,), optional
            Active GPUs: only a site with grid or water rows keeps the GPUs powered beyond
            its load as variables (``ν``, none without ``n``); elsewhere ``n`` is eliminated
            (module docstring) and follows from ``x``.
        """
        self._warm(self.xi_of(x, n), None)

    def xi_of(self, x: np.ndarray, n: np.ndarray | None = None) -> np.ndarray:
        """The variables of :meth:`qp` for requests per second ``x`` (and active GPUs ``n``:
        ``ν = (n − L/u_max) / G`` at a site with grid or water rows, 0 without ``n``)."""
        x = np.asarray(x, dtype=float)
        lay = self._layout
        shape = (lay.regions, lay.classes, lay.steps)
        if x.shape != shape:
            raise ValueError(f"x has shape {x.shape}, expected {shape}")
        flows = x[self._pair_j, self._pair_c, :].reshape(-1) / self._D
        if not self._n_nu:
            return flows
        nu = np.zeros(self._n_nu)
        if n is not None:
            load = np.bincount(self._var_step, weights=self._h * flows, minlength=lay.steps)
            nu = np.maximum(np.asarray(n, dtype=float) - load / self._u_max, 0.0) / self._gpus
        return np.concatenate([flows, nu])

    def _warm(self, xi: np.ndarray, y: np.ndarray | None) -> None:
        self._xi = self._project(xi)
        self._served = self._served_of(self._xi)
        self._y_dual = y
        self._solver.warm_start(
            x=self._full_of(self._xi), y=np.zeros(self._n_cons) if y is None else y
        )

    # ----------------------------------------------------------------------------------
    # Receding horizon

    def _shift_duals(self, y: np.ndarray, k: int) -> np.ndarray:
        """Shift the constraint duals of every per-step row by ``k`` steps."""
        T, nvar = self._layout.steps, self._nvar
        bounds = shift_steps(y[:nvar].reshape(self._npairs, T), k).reshape(-1)
        ell = shift_steps(y[nvar : nvar + T], k)
        load = shift_steps(y[nvar + T : nvar + 2 * T], k)
        means = y[nvar + 2 * T : nvar + 2 * T + self._nz]
        limits = y[nvar + 2 * T + self._nz : nvar + 2 * T + self._nz + self._n_limit_rows]
        if self._grid_it_kw is not None:
            limits = np.concatenate([shift_steps(limits[:T], k), limits[T:]])
        # Water windows restart at the horizon's first step: their duals are kept as a guess.
        nu_steps = y[nvar + 2 * T + self._nz + self._n_limit_rows :].reshape(-1, T)
        nu_rows = shift_steps(nu_steps, k).reshape(-1) if nu_steps.size else nu_steps.reshape(-1)
        return np.concatenate([bounds, ell, load, means, limits, nu_rows])

    def shift(self, site: Scenario, steps: int, row_scale: np.ndarray | None = None) -> None:
        """Move to the next horizon: new data, warm start shifted by ``steps``.

        Only the vectors (q, and the costs behind it) are rebuilt; the OSQP object and its
        factorisation are kept. A new ``row_scale`` (the coordinator's demand moved) changes
        the variable scaling, hence P's and A's values but not their pattern: one
        ``update(Px=…, Ax=…)``. Only if the allowed pairs changed (a new network or profile)
        is OSQP set up again.

        Parameters
        ----------
        site : Scenario
            The one-site scenario of the new window (same site, same number of steps).
        steps : int
            How many steps the window moved (≥ 0); the warm start (primal and dual) drops
            the first ``steps`` steps and repeats the last one to fill the end.
        row_scale : ndarray (n_rows,), optional
            New coupling-row scales; the previous ones by default.
        """
        if steps < 0:
            raise ValueError("steps must be >= 0")
        if site.sites.site_id != self.site.sites.site_id:
            raise ValueError(f"shift to site {site.sites.site_id}, this is {self.site_id}")
        T = self._layout.steps
        k = min(int(steps), T - 1)
        x_new = shift_steps(self.x, k)
        n_new = shift_steps(self.n, k)
        y_old = self._y_dual
        old_allowed, old_scale = self._allowed, self._row_scale
        old_p, old_a = self._p_values(self._rho), self._a_data.copy()
        self._bind_site(site)
        scale = old_scale if row_scale is None else np.asarray(row_scale, dtype=float)
        if not np.array_equal(self.site.allowed()[0], old_allowed):
            # New structure: the only case that sets OSQP up again.
            self._build_structure()
            self._set_row_scale(scale)
            self._xi = np.zeros(self._n_qp)
            self._setup()
            self._warm(self.xi_of(x_new, n_new), None)
            return
        self._set_row_scale(scale)
        self._refresh_matrices(old_p, old_a)
        y_new = None if y_old is None else self._shift_duals(y_old, k)
        self._warm(self.xi_of(x_new, n_new), y_new)

    def set_row_scale(self, row_scale: np.ndarray, rho: Penalty | None = None) -> None:
        """Adopt new coupling-row scales (and ρ), keeping the current schedule ``x``.

        The variable scaling follows the row scales, so P's and A's values change but not
        their pattern: a single ``update(Px=…, Ax=…)`` (one refactorisation, also covering
        a new ρ); OSQP is not set up again.

        Parameters
        ----------
        row_scale : ndarray (n_rows,)
        rho : float or ndarray (n_rows,), optional
            New outer penalty; unchanged by default.
        """
        scale = np.asarray(row_scale, dtype=float)
        if np.array_equal(scale, self._row_scale):
            # Same scales (registered again for the same horizon): at most a new ρ.
            if rho is not None:
                self.set_rho(rho)
            return
        new_rho = self._rho if rho is None else self._entry_rho(rho)
        x, n = self.x, self.n
        old_p, old_a = self._p_values(self._rho), self._a_data.copy()
        self._rho = new_rho
        self._set_row_scale(scale)
        self._refresh_matrices(old_p, old_a)
        self._warm(self.xi_of(x, n), None)

    def _refresh_matrices(self, old_p: np.ndarray, old_a: np.ndarray) -> None:
        lower, upper = self._bounds()
        if not (np.array_equal(lower, self._l) and np.array_equal(upper, self._u)):
            # New derated capacities (a shifted window's temperatures): vectors only.
            self._l, self._u = lower, upper
            self._solver.update(l=lower, u=upper)
            self._ipm = None
        new_p = self._p_values(self._rho)
        if not (np.array_equal(new_p, old_p) and np.array_equal(self._a_data, old_a)):
            self._solver.update(Px=new_p, Ax=self._a_data.copy())
            self.px_updates += 1
            self._ipm = None
