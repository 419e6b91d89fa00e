"""The centralised reference: the whole scheduling problem as one convex QP (docs/model.md §2–6).

The model is written here directly from the formulas of docs/model.md with cvxpy expressions —
load, IT power, facility energy, cost, carbon, water, path latency and congestion — on
purpose a different code path from the distributed runtime, whose site QPs are assembled
from matrices. Solving both on the same scenario and comparing schedules, objectives and
demand prices cross-validates the two.

Only allowed ``(site, region, class)`` triples get a variable; forbidden ones (docs/model.md §2)
are zero because they do not exist in the problem. The problem is solved with Clarabel (an
interior-point QP/conic solver) at tight tolerance.

Shadow prices
-------------
The dual of each coupling row (docs/model.md §5) is reported as the marginal cost of demand,
``∂J*/∂b`` — **positive when more demand costs more** — converted to AUD per additional
request:

- interactive ``(j, c, t)``: one more request per second during step ``t`` is ``3600Δ``
  more requests, so the price per request is ``(∂J*/∂D[j,c,t]) / 3600Δ``;
- deferrable ``(j, c)``: the row is already in requests, the price is ``∂J*/∂V[j,c]``.

:attr:`CentralResult.row_prices` holds the same duals in unscaled row units, in the order of
:class:`thermoroute.common.coupling.CouplingLayout` (AUD per req/s for interactive rows, AUD per
request for deferrable rows): that is what the exchange-ADMM coordinator's ``ρ·u / scale`` should
converge to (up to the sign convention of its residual).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.evaluate import plant_limits as limits_of
from thermoroute.common.evaluate import true_pue, true_wue
from thermoroute.common.scenario import Scenario

#: Clarabel tolerances: duality gap (absolute and relative) and primal/dual feasibility.
#: Ten times tighter than Clarabel's defaults; 1e-10 stalls on large fleets (the relative
#: residuals then sit at the rounding level of objectives of order 1e6 AUD).
#: Wall-clock bound of one solve [s]: no input may keep a solver busy without end (the
#: 1,000-site fleet solves in ~6 minutes, BENCHMARKS.md).
SOLVE_TIME_LIMIT_S = 1_800.0
CLARABEL_SETTINGS: dict[str, Any] = {
    "tol_gap_abs": 1e-9,
    "tol_gap_rel": 1e-9,
    "tol_feas": 1e-9,
    "max_iter": 300,
    "time_limit": SOLVE_TIME_LIMIT_S,
}
#: Settings of the fallback solvers, used only when Clarabel is missing or fails.
FALLBACK_SETTINGS: dict[str, dict[str, Any]] = {
    "OSQP": {
        "eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200_000, "polishing": True,
        "time_limit": SOLVE_TIME_LIMIT_S,
    },
    "SCS": {
        "eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000,
        "time_limit_secs": SOLVE_TIME_LIMIT_S,
    },
}  # fmt: skip
#: Relative slack on the primary objective allowed by the lexicographic tie-break stage.
TIE_BREAK_SLACK = 1e-7
#: The penalty per request moved away from a reference plan with which
#: :func:`least_moving_optimum` chooses among equally good plans, as a share of the optimum's
#: mean cost per request: small enough to leave the objective as it is (australia: 8e-11 of
#: it), large enough to choose (a needed move gains some 2e-2 of a request's cost there).
MOVE_PENALTY_SHARE = 3e-5

WEIGHT_KEYS = ("energy_cost", "carbon_aud_per_kg", "water_aud_per_l", "latency_aud_per_req_s")


class CentralSolveError(RuntimeError):
    """The centralised problem could not be solved (infeasible, unbounded or solver failure)."""


@dataclass(frozen=True)
class Weights:
    """Weights of the terms of the objective (docs/model.md §6).

    Attributes
    ----------
    energy_cost : float
        Multiplier of the energy cost ``K`` [–] (1 in the model; 0 for a carbon-only plan).
    carbon_aud_per_kg, water_aud_per_l, latency_aud_per_req_s : float
        ``λ_C`` [AUD/kg], ``λ_W`` [AUD/L], ``λ_L`` [AUD per request-second].
    """

    energy_cost: float
    carbon_aud_per_kg: float
    water_aud_per_l: float
    latency_aud_per_req_s: float

    @classmethod
    def of(
        cls,
        scenario: Scenario,
        overrides: dict[str, float] | None = None,
        include_latency: bool = True,
    ) -> Weights:
        """The scenario's weights with ``overrides`` applied.

        Raises
        ------
        ValueError
            For an unknown key or a non-finite weight.
        """
        o = scenario.objective
        values = {
            "energy_cost": 1.0,
            "carbon_aud_per_kg": o.carbon_aud_per_kg,
            "water_aud_per_l": o.water_aud_per_l,
            "latency_aud_per_req_s": o.latency_aud_per_req_s,
        }
        for key, value in (overrides or {}).items():
            if key not in values:
                raise ValueError(f"unknown objective weight {key!r} (known: {WEIGHT_KEYS})")
            values[key] = float(value)
        if not include_latency:
            values["latency_aud_per_req_s"] = 0.0
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"objective weights must be finite: {bad}")
        return cls(**values)


@dataclass(frozen=True)
class CentralResult:
    """The optimum of the centralised QP.

    Attributes
    ----------
    x : ndarray (S, R, C, T)
        Requests per second routed from region ``j``, class ``c`` to site ``i`` in step ``t``;
        exactly zero on forbidden pairs, clipped at 0 (interior-point round-off).
    n : ndarray (S, T)
        Powered GPUs, clipped to ``[0, G_i]``.
    objective_aud : float
        The objective as the QP saw it (with its own PUE/WUE and weights) [AUD].
    shadow_interactive : ndarray (R, C, T)
        Marginal cost of one more interactive request in step ``t`` [AUD/request]; NaN for
        deferrable classes and for rows no site may serve.
    shadow_deferrable : ndarray (R, C)
        Marginal cost of one more deferrable request over the horizon [AUD/request]; NaN for
        interactive classes and for rows no site may serve.
    row_prices : ndarray (rows,)
        The same duals in unscaled coupling-row units and :class:`CouplingLayout` order
        [AUD per req/s (interactive), AUD per request (deferrable)].
    status : str
        cvxpy status of the solve (``optimal`` or ``optimal_inaccurate``).
    solver : str
        Solver that produced the solution.
    iterations : int
        Interior-point iterations of that solver.
    wall_s, build_s, solve_s : float
        Total, model-building and solve (canonicalisation + solver) times [s].
    variables : int
        Scalar variables of the QP.
    info : dict
        Anything else worth reporting (tie-break stage, fallbacks).
    """

    x: np.ndarray
    n: np.ndarray
    objective_aud: float
    shadow_interactive: np.ndarray
    shadow_deferrable: np.ndarray
    row_prices: np.ndarray
    status: str
    solver: str
    iterations: int
    wall_s: float
    build_s: float
    solve_s: float
    variables: int
    info: dict[str, Any] = field(default_factory=dict)

    def shadow_prices(self) -> np.ndarray:
        """(R, C, T) AUD per request for ``write_run``: a deferrable class's horizon price is
        repeated at every step."""
        out = np.array(self.shadow_interactive, copy=True)
        defer = ~np.isnan(self.shadow_deferrable)
        out[defer] = np.broadcast_to(self.shadow_deferrable[..., None], out.shape)[defer]
        return out


@dataclass
class _Model:
    """The cvxpy problem and the handles needed to read a solution back."""

    problem: cp.Problem
    objective: cp.Expression
    x: cp.Variable
    n: cp.Variable
    triples: tuple[np.ndarray, np.ndarray, np.ndarray]
    interactive_rows: np.ndarray  # indices into the (R·Ci) interactive (j, c) pairs
    deferrable_rows: np.ndarray  # indices into the (R·Cd) deferrable (j, c) pairs
    interactive_con: cp.Constraint | None
    deferrable_con: cp.Constraint | None
    constraints: list[cp.Constraint]


def _site_step(value: np.ndarray | float, shape: tuple[int, int], name: str) -> np.ndarray:
    """``value`` — a scalar, one value per site (S,) or per site and step (S, T) — as an
    (S, T) array, checked finite."""
    array = np.asarray(value, dtype=float)
    # A 1-D array is one value per site, constant in time: made a column explicitly, since
    # numpy would broadcast it along the steps (and silently so when S equals T).
    if array.ndim == 1:
        if array.shape[0] != shape[0]:
            raise ValueError(f"{name} per site must have S = {shape[0]} values, not {array.size}")
        array = array[:, None]
    try:
        out = np.broadcast_to(array, shape).copy()
    except ValueError as exc:
        raise ValueError(f"{name} must be a scalar, (S,) or broadcast to (S, T) = {shape}") from exc
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be finite")
    return out


def _gather(
    rows: np.ndarray, n_rows: int, cols: np.ndarray, n_cols: int, values: np.ndarray | None = None
) -> sp.csr_matrix:
    """Sparse (n_rows, n_cols) matrix with ``values`` (default 1) at ``(rows[k], cols[k])``."""
    data = np.ones(len(cols)) if values is None else np.asarray(values, dtype=float)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))


def _build(
    scenario: Scenario,
    pue: np.ndarray,
    wue: np.ndarray,
    w: Weights,
    limits: bool = True,
) -> _Model:
    """Write docs/model.md §2–6 as a cvxpy problem over the allowed triples."""
    sc, s = scenario, scenario.sites
    S, R, _, T = sc.shape
    dt_h, dt_s = sc.step_hours, sc.step_seconds
    inter = sc.classes.interactive
    allowed = sc.allowed()
    ii, jj, cc = np.nonzero(allowed)  # one variable row per allowed triple
    K = len(ii)

    # x[k, t] for the allowed triple k = (i, j, c); n[i, t] active GPUs.
    x = cp.Variable((K, T), nonneg=True, name="x")
    n = cp.Variable((S, T), name="n")

    # Σ over the triples of one site, weighted by a per-(i, c) profile value.
    def per_site(profile: np.ndarray) -> sp.csr_matrix:
        return _gather(ii, S, np.arange(K), K, profile[ii, cc])

    # L[i,t] = Σ_jc gpu_s[i,c] · x[i,j,c,t]                         [busy GPUs]
    load = per_site(sc.gpu_s) @ x
    # P[i,t] = (idle_w_i · n[i,t] + Σ_jc energy_j[i,c] · x[i,j,c,t]) / 1000     [kW]
    it_kw = (cp.multiply(s.idle_w[:, None], n) + per_site(sc.energy_j) @ x) / 1000.0
    e_it = it_kw * dt_h  # [kWh]
    e_fac = cp.multiply(pue, e_it)  # E_fac = pue · E_it
    cost = cp.multiply(sc.price_aud_per_mwh / 1000.0, e_fac)  # K [AUD]
    carbon = cp.multiply(sc.carbon_kg_per_kwh, e_fac)  # C [kg]
    water = cp.multiply(wue, e_it) + cp.multiply(sc.ewif_l_per_kwh, e_fac)  # W_on + W_off [L]

    terms = []
    if w.energy_cost:
        terms.append(w.energy_cost * cp.sum(cost))
    if w.carbon_aud_per_kg:
        terms.append(w.carbon_aud_per_kg * cp.sum(carbon))
    if w.water_aud_per_l:
        terms.append(w.water_aud_per_l * cp.sum(water))
    if w.latency_aud_per_req_s:
        # Λ_path = Σ_jc(interactive) x · (rtt[i,j] + prefill[i,c]) / 1000 · 3600Δ
        path_s = np.where(inter[cc], (sc.rtt_ms[ii, jj] + sc.prefill_ms[ii, cc]) / 1000.0, 0.0)
        path = cp.sum(path_s @ x) * dt_s
        # Λ_queue = max_wait/1000 · L² / (ref_gpu_s · G · u_max) · 3600Δ
        q = s.max_wait_ms / 1000.0 / (s.ref_gpu_s * s.gpus * s.u_max) * dt_s
        queue = cp.sum_squares(cp.multiply(np.sqrt(q)[:, None], load))
        terms.append(w.latency_aud_per_req_s * (path + queue))
    objective = cp.sum(cp.hstack(terms)) if terms else cp.Constant(0.0)

    constraints: list[cp.Constraint] = [
        load <= cp.multiply(s.u_max[:, None], n),  # capacity
        n >= 0,
        n <= np.broadcast_to(s.gpus[:, None], (S, T)),
    ]
    if limits:
        constraints += _plant_constraints(sc, n, it_kw)

    # Coupling rows (docs/model.md §5) in CouplingLayout order: (j, c) pairs over the classes of
    # one kind, j major. Rows without any allowed site are left out (their demand is checked).
    layout = CouplingLayout(R, tuple(bool(v) for v in sc.classes.deferrable), T)
    ci, cd = layout.interactive_classes, layout.deferrable_classes
    pos_i = {int(c): k for k, c in enumerate(ci)}
    pos_d = {int(c): k for k, c in enumerate(cd)}
    is_int = inter[cc]
    pair = np.where(
        is_int,
        jj * len(ci) + np.array([pos_i.get(int(c), -1) for c in cc], dtype=int),
        jj * len(cd) + np.array([pos_d.get(int(c), -1) for c in cc], dtype=int),
    ).astype(int)

    interactive_con = deferrable_con = None
    inter_rows = np.unique(pair[is_int])
    defer_rows = np.unique(pair[~is_int])
    demand = sc.demand_rps[:, ci, :].reshape(R * len(ci), T)
    volume = sc.batch_requests[:, cd].reshape(R * len(cd))
    _check_unreachable(sc, demand, volume, inter_rows, defer_rows, ci, cd)
    if len(inter_rows):
        # Σ_i x[i,j,c,t] = D[j,c,t]   [req/s]
        keep = np.flatnonzero(is_int)
        local = np.searchsorted(inter_rows, pair[keep])
        agg = _gather(local, len(inter_rows), keep, K)
        interactive_con = agg @ x == demand[inter_rows]
        constraints.append(interactive_con)
    if len(defer_rows):
        # Σ_i Σ_t x[i,j,c,t] · 3600Δ = V[j,c], written divided by 3600Δ (mean rate over a
        # step, req/s): the same set, but rows of order 1e6 requests next to rates of order
        # 1e2 leave Clarabel's dual residual stuck near 1e-8 on large fleets.
        keep = np.flatnonzero(~is_int)
        local = np.searchsorted(defer_rows, pair[keep])
        agg = _gather(local, len(defer_rows), keep, K)
        deferrable_con = cp.sum(agg @ x, axis=1) == volume[defer_rows] / dt_s
        constraints.append(deferrable_con)

    problem = cp.Problem(cp.Minimize(objective), constraints)
    return _Model(
        problem=problem,
        objective=objective,
        x=x,
        n=n,
        triples=(ii, jj, cc),
        interactive_rows=inter_rows,
        deferrable_rows=defer_rows,
        interactive_con=interactive_con,
        deferrable_con=deferrable_con,
        constraints=constraints,
    )


def _plant_constraints(sc: Scenario, n: cp.Variable, it_kw: cp.Expression) -> list[cp.Constraint]:
    """Model v1.1's limits (docs/model.md §12) on the sites that give them; nothing for v1
    data, so a v1 problem is the same problem number for number.

    The limits are physical: they use the true pPUE and WUE at the sites' temperatures,
    whatever cooling the objective believes in.
    """
    lim = limits_of(sc)
    out: list[cp.Constraint] = []
    if lim.derated.any():
        rows = np.flatnonzero(lim.derated)
        out.append(n[rows, :] <= lim.max_gpus[rows])  # n_t ≤ f_t · G
    if lim.grid.any():
        rows = np.flatnonzero(lim.grid)
        # pPUE_t · P_t ≤ grid_limit_kw
        facility_kw = cp.multiply(true_pue(sc)[rows], it_kw[rows, :])
        out.append(facility_kw <= np.broadcast_to(lim.grid_kw[rows, None], facility_kw.shape))
    if lim.water.any():
        rows = np.flatnonzero(lim.water)
        # Σ_{t in window} WUE_t · P_t · Δ ≤ the window's allowance
        onsite_l = cp.multiply(true_wue(sc)[rows] * sc.step_hours, it_kw[rows, :])
        days = _gather(np.arange(sc.steps), sc.steps, lim.window, lim.water_l.shape[1])
        out.append(onsite_l @ days <= lim.water_l[rows])
    return out


def _check_unreachable(
    sc: Scenario,
    demand: np.ndarray,
    volume: np.ndarray,
    inter_rows: np.ndarray,
    defer_rows: np.ndarray,
    ci: np.ndarray,
    cd: np.ndarray,
) -> None:
    """Refuse demand on a coupling row that no site is allowed to serve."""
    problems = []
    missing = np.setdiff1d(np.arange(demand.shape[0]), inter_rows)
    for r in missing[demand[missing].max(axis=1, initial=0.0) > 0]:
        j, k = divmod(int(r), len(ci))
        problems.append(
            f"region {sc.regions.region_id[j]!r} has demand for interactive class "
            f"{sc.classes.class_id[ci[k]]!r} but no site reaches it within its "
            f"{sc.classes.ttft_slo_ms[ci[k]]:g} ms TTFT SLO"
        )
    missing = np.setdiff1d(np.arange(volume.shape[0]), defer_rows)
    for r in missing[volume[missing] > 0]:
        j, k = divmod(int(r), len(cd))
        problems.append(
            f"region {sc.regions.region_id[j]!r} has batch volume for class "
            f"{sc.classes.class_id[cd[k]]!r} but no site may serve it"
        )
    if problems:
        raise CentralSolveError("the problem is infeasible: " + "; ".join(problems))


def _solvers() -> list[str]:
    installed = set(cp.installed_solvers())
    return [name for name in ("CLARABEL", "OSQP", "SCS") if name in installed]


def _solve(problem: cp.Problem, scenario: Scenario, what: str) -> tuple[str, dict[str, Any]]:
    """Solve with Clarabel, falling back (with a warning) to OSQP or SCS.

    Returns the solver used and notes on fallbacks; raises :class:`CentralSolveError` when
    the problem is infeasible or unbounded or no solver succeeds.
    """
    candidates = _solvers()
    if not candidates:
        raise CentralSolveError("no QP solver installed: install clarabel (pip install clarabel)")
    notes: dict[str, Any] = {}
    if candidates[0] != "CLARABEL":
        warnings.warn(
            f"Clarabel is not installed; solving the {what} with {candidates[0]} instead "
            "(expect looser accuracy)",
            RuntimeWarning,
            stacklevel=3,
        )
        notes["fallback"] = f"Clarabel not installed, used {candidates[0]}"
    failures = []
    for name in candidates:
        settings = CLARABEL_SETTINGS if name == "CLARABEL" else FALLBACK_SETTINGS[name]
        try:
            problem.solve(solver=name, **settings)
        except cp.error.SolverError as exc:
            failures.append(f"{name}: {exc}")
            continue
        status = problem.status
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise CentralSolveError(_infeasible_message(scenario, what, name))
        if status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
            raise CentralSolveError(
                f"the {what} is unbounded ({name}): some served request lowers the objective "
                "without limit — check for a profile with gpu_s = 0 at a site whose energy "
                "cost is negative, or negative objective weights"
            )
        if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            if status == cp.OPTIMAL_INACCURATE:
                warnings.warn(
                    f"{name} solved the {what} only to reduced accuracy", RuntimeWarning, 3
                )
            if name != candidates[0] or failures:
                warnings.warn(
                    f"{candidates[0]} failed on the {what} ({'; '.join(failures)}); "
                    f"solution from {name}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                notes["fallback"] = f"{'; '.join(failures)}; used {name}"
            return name, notes
        failures.append(f"{name}: status {status}")
    raise CentralSolveError(f"no solver could solve the {what}: {'; '.join(failures)}")


def _infeasible_message(scenario: Scenario, what: str, solver: str) -> str:
    # Imported here: only needed to explain a failure.
    from thermoroute.common.servability import check_servable

    found = check_servable(scenario)
    detail = (
        "; ".join(str(p) for p in found[:5])
        if found
        else (
            "the necessary checks pass, so the combination of per-step interactive load and "
            "batch volume exceeds what the sites allowed within the TTFT SLOs can carry"
        )
    )
    return (
        f"the {what} is infeasible ({solver}): demand cannot be met within capacity "
        f"(u_max · gpus) and the TTFT SLOs: {detail}"
    )


def _unpack(model: _Model, scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    S, R, C, T = scenario.shape
    ii, jj, cc = model.triples
    x = np.zeros((S, R, C, T))
    x[ii, jj, cc, :] = np.maximum(np.asarray(model.x.value), 0.0)
    n = np.clip(np.asarray(model.n.value), 0.0, scenario.sites.gpus[:, None])
    return x, n


def _duals(model: _Model, scenario: Scenario) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shadow prices per request and row prices (see the module docstring for signs)."""
    _, R, C, T = scenario.shape
    layout = CouplingLayout(R, tuple(bool(v) for v in scenario.classes.deferrable), T)
    ci, cd = layout.interactive_classes, layout.deferrable_classes
    inter_rows = np.full((R * len(ci), T), np.nan)
    defer_rows = np.full(R * len(cd), np.nan)
    # cvxpy's dual of `served == b` is −∂J*/∂b: negate so that a positive price means
    # that more demand costs more.
    if model.interactive_con is not None:
        inter_rows[model.interactive_rows] = -np.asarray(model.interactive_con.dual_value)
    if model.deferrable_con is not None:
        # The row was divided by 3600Δ: its dual is per (req/s · step); per request is /3600Δ.
        dual = np.asarray(model.deferrable_con.dual_value)
        defer_rows[model.deferrable_rows] = -dual / scenario.step_seconds
    row_prices = np.concatenate([inter_rows.reshape(-1), defer_rows])
    shadow_i = np.full((R, C, T), np.nan)
    shadow_d = np.full((R, C), np.nan)
    shadow_i[:, ci, :] = inter_rows.reshape(R, len(ci), T) / scenario.step_seconds
    shadow_d[:, cd] = defer_rows.reshape(R, len(cd))
    return shadow_i, shadow_d, row_prices


def solve_central(
    scenario: Scenario,
    *,
    pue: np.ndarray | float | None = None,
    wue: np.ndarray | float | None = None,
    weights: dict[str, float] | None = None,
    include_latency: bool = True,
    tie_break: bool = False,
    plant_limits: bool = True,
) -> CentralResult:
    """Solve the whole scheduling problem of docs/model.md as one convex QP.

    Parameters
    ----------
    scenario : Scenario
    pue : float, ndarray (S,) or ndarray (S, T), optional
        Partial PUE [–] the planner believes in: one for the fleet, one per site (constant
        in time) or one per site and step; by default the true pPUE at each site's dry-bulb
        temperature (:func:`thermoroute.common.evaluate.true_pue`).
    wue : float, ndarray (S,) or ndarray (S, T), optional
        On-site WUE [L/kWh] the planner believes in, shaped as ``pue``; by default the true
        WUE.
    weights : dict, optional
        Overrides of the objective weights: ``energy_cost`` (multiplier of ``K``, default 1),
        ``carbon_aud_per_kg``, ``water_aud_per_l``, ``latency_aud_per_req_s`` (defaults from
        the scenario).
    include_latency : bool
        ``False`` drops the latency term (path and congestion), as ``λ_L = 0``.
    tie_break : bool
        Make a degenerate optimum unique: after the solve, re-solve for the schedule of least
        ``Σ (x/x_cap)² + Σ (n/G)²`` among those within :data:`TIE_BREAK_SLACK` (relative) of
        the optimal objective — load is spread evenly over equally good sites. Used by the
        LP baselines (price-only, carbon-only); duals are those of the first solve.
    plant_limits : bool
        Enforce the scenario's model v1.1 limits (cooling-limited capacity, grid connection, on-site
        water allowance; docs/model.md §12). ``False`` plans as model v1 does — a baseline that does
        not model the plant; charging then reports what it overloads
        (:func:`thermoroute.common.evaluate.overloads`). Without v1.1 data both are the same
        problem.

    Returns
    -------
    CentralResult

    Raises
    ------
    CentralSolveError
        When the problem is infeasible (with the likely cause: demand above what the sites
        allowed within the SLO can carry), unbounded, or no solver succeeds.
    ValueError
        For malformed ``pue``, ``wue`` or ``weights``.
    """
    t0 = time.perf_counter()
    w = Weights.of(scenario, weights, include_latency)
    shape = (len(scenario.sites), scenario.steps)
    pue_arr = true_pue(scenario) if pue is None else _site_step(pue, shape, "pue")
    wue_arr = true_wue(scenario) if wue is None else _site_step(wue, shape, "wue")
    model = _build(scenario, pue_arr, wue_arr, w, plant_limits)
    t1 = time.perf_counter()
    limits = scenario.sites.plant_data() if plant_limits else ()
    # Name the v1.1 limits in a failure: they, not only capacity and SLOs, may be why.
    what = f"centralised QP with model v1.1 limits ({', '.join(limits)})" if limits else ""
    solver, info = _solve(model.problem, scenario, what or "centralised QP")
    t2 = time.perf_counter()
    objective = float(model.problem.value)
    stats = model.problem.solver_stats
    iterations = int(stats.num_iters or 0) if stats is not None else 0
    status = str(model.problem.status)
    shadow_i, shadow_d, row_prices = _duals(model, scenario)
    if tie_break:
        info["tie_break"] = _tie_break(model, scenario, objective)
    x, n = _unpack(model, scenario)
    t3 = time.perf_counter()
    return CentralResult(
        x=x,
        n=n,
        objective_aud=objective,
        shadow_interactive=shadow_i,
        shadow_deferrable=shadow_d,
        row_prices=row_prices,
        status=status,
        solver=solver,
        iterations=iterations,
        wall_s=t3 - t0,
        build_s=t1 - t0,
        solve_s=t2 - t1,
        variables=int(model.x.size + model.n.size),
        info=info,
    )


def least_moving_optimum(
    scenario: Scenario, reference: np.ndarray, *, penalty_share: float = MOVE_PENALTY_SHARE
) -> tuple[np.ndarray, float]:
    """Among the optimum's plans, the one that moves least away from ``reference``.

    Where the optimum is not unique (sites the objective cannot tell apart, a deferrable
    volume served equally well in several hours), solvers return different plans of the same
    objective. This solves the centralised QP of :func:`solve_central` (true pPUE and WUE,
    every term, the plant limits), then again with a small penalty on the requests moved
    away from ``reference``, ``0.5 · Σ |x − reference| · 3600Δ``, priced at
    ``penalty_share`` of the optimum's mean cost per request: the penalty barely changes the
    objective but picks, among plans that equal it, one that keeps closest to ``reference``.
    Charge the plan (:func:`~thermoroute.common.evaluate.evaluate`) to see how close to the
    optimum it stayed.

    Parameters
    ----------
    scenario : Scenario
    reference : ndarray (S, R, C, T)
        Requests per second of the plan to move least from (e.g. temperature-unaware's).
    penalty_share : float
        The penalty per moved request, as a share of the optimum's cost per request.

    Returns
    -------
    x : ndarray (S, R, C, T)
        The plan, requests per second.
    penalty_aud : float
        The penalty per moved request [AUD].

    Raises
    ------
    CentralSolveError
        As :func:`solve_central`.
    """
    w = Weights.of(scenario, None, True)
    model = _build(scenario, true_pue(scenario), true_wue(scenario), w)
    limits = scenario.sites.plant_data()
    what = f"centralised QP with model v1.1 limits ({', '.join(limits)})" if limits else ""
    _solve(model.problem, scenario, what or "centralised QP")
    requests = scenario.demand_rps.sum() * scenario.step_seconds + scenario.batch_requests.sum()
    penalty = penalty_share * abs(float(model.problem.value)) / max(float(requests), 1.0)
    ii, jj, cc = model.triples
    moved = 0.5 * scenario.step_seconds * cp.sum(cp.abs(model.x - reference[ii, jj, cc, :]))
    _solve(
        cp.Problem(cp.Minimize(model.objective + penalty * moved), model.constraints),
        scenario,
        "least-moving stage",
    )
    return _unpack(model, scenario)[0], penalty


def _tie_break(model: _Model, scenario: Scenario, optimum: float) -> dict[str, Any]:
    """Second, lexicographic stage: the least-norm schedule among the (near-)optimal ones."""
    s = scenario.sites
    ii, _, cc = model.triples
    # Requests per second that would fill site i with class c alone: scales x to [0, 1].
    x_cap = s.u_max[ii] * s.gpus[ii] / scenario.gpu_s[ii, cc]
    spread = cp.sum_squares(cp.multiply(1.0 / x_cap[:, None], model.x)) + cp.sum_squares(
        cp.multiply(1.0 / s.gpus[:, None], model.n)
    )
    slack = TIE_BREAK_SLACK * max(abs(optimum), 1e-6)
    stage = cp.Problem(
        cp.Minimize(spread), [*model.constraints, model.objective <= optimum + slack]
    )
    solver, notes = _solve(stage, scenario, "tie-break stage")
    objective = model.objective.value
    if objective is None:  # _solve returns only with a solution; cvxpy types it optional
        raise CentralSolveError("tie-break stage: the solver returned no point")
    return {
        "solver": solver,
        "slack_aud": slack,
        "objective_aud": float(objective),
        **notes,
    }
