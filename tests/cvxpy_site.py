"""An independent site-group implementation with cvxpy, for testing the coordinator.

:class:`CvxSiteGroup` solves each site's exchange-ADMM subproblem (docs/model.md §3, §6, §7)

    min f_i(x, n) + ρ/2 ‖A_i x − target‖²,  x ≥ 0 on allowed pairs,  L ≤ u_max n,  0 ≤ n ≤ G

with cvxpy (Clarabel) written directly from the model — not from ``site_agent``'s OSQP formulation —
so the coordinator's algorithm is checked against a second, plain implementation of the site side.
It speaks the site-group contract of :mod:`thermoroute.coordinator.fleet`. :func:`central_optimum`
solves the whole scenario at once with the same objective, as an independent reference optimum with
its equality-constraint duals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from thermoroute.common.admm_protocol import (
    DEFAULT_PENALTY,
    AdmmAnswer,
    AdmmRequest,
    AdmmSiteSettings,
)
from thermoroute.common.coupling import CouplingLayout, coefficient_of_entry
from thermoroute.common.evaluate import evaluate, true_pue, true_wue
from thermoroute.common.method_protocol import MethodBegin, PackedCalls
from thermoroute.common.report_protocol import GroupReport, ReportRequest
from thermoroute.common.scenario import Scenario
from thermoroute.common.secure_aggregation import PairwiseMasker
from thermoroute.site_agent.agent import SiteReport
from thermoroute.site_agent.group import answer_report


def _site_cost(scenario: Scenario, i: int, x: cp.Expression, n: cp.Expression, var_rc, T):
    """``f_i`` [AUD] for a site's variables: x (k, T) over allowed (j, c) pairs, n (T,)."""
    sc, s, o = scenario, scenario.sites, scenario.objective
    dt_h, dt_s = sc.step_hours, sc.step_seconds
    pue, wue = true_pue(sc)[i], true_wue(sc)[i]
    kappa = (
        pue
        * (
            sc.price_aud_per_mwh[i] / 1000.0
            + o.carbon_aud_per_kg * sc.carbon_kg_per_kwh[i]
            + o.water_aud_per_l * sc.ewif_l_per_kwh[i]
        )
        + o.water_aud_per_l * wue
    )  # AUD per kWh of IT energy, (T,)
    j, c = var_rc[:, 0], var_rc[:, 1]
    energy_w = sc.energy_j[i, c]  # J per request = W per req/s
    lin = (energy_w[:, None] / 1000.0 * dt_h) * kappa[None, :]  # (k, T)
    inter = ~sc.classes.deferrable[c]
    path = np.where(inter, (sc.rtt_ms[i, j] + sc.prefill_ms[i, c]) / 1000.0 * dt_s, 0.0)
    lin = lin + o.latency_aud_per_req_s * path[:, None]
    idle = kappa * dt_h * s.idle_w[i] / 1000.0  # AUD per powered GPU per step
    load = sc.gpu_s[i, c] @ x  # (T,)
    beta = (
        o.latency_aud_per_req_s
        * s.max_wait_ms[i]
        / 1000.0
        / (s.ref_gpu_s[i] * s.gpus[i] * s.u_max[i])
        * dt_s
    )
    cost = cp.sum(cp.multiply(lin, x)) + idle @ n + beta * cp.sum_squares(load)
    return cost, load


@dataclass
class _Site:
    index: int
    site_id: str
    support: np.ndarray
    var_rc: np.ndarray  # (k, 2) allowed (j, c)
    served_matrix: sp.csr_matrix  # (|support|, k*T): scaled served demand of vec(x)
    rho: np.ndarray | None = None  # per support entry
    problem: cp.Problem | None = None
    x: cp.Variable | None = None
    n: cp.Variable | None = None
    target: cp.Parameter | None = None
    cost: cp.Expression | None = None
    iterates: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    last: tuple[int, np.ndarray] | None = None


class CvxSiteGroup(PackedCalls):
    """Several sites of ``scenario`` solved with cvxpy; the site-group contract.

    Parameters
    ----------
    scenario : Scenario
        The full scenario; the group reads only the rows of its own sites.
    site_ids : sequence of str
    """

    def __init__(self, scenario: Scenario, site_ids: list[str] | tuple[str, ...]) -> None:
        self.scenario = scenario
        self.site_ids = tuple(site_ids)
        self._index = {sid: scenario.sites.site_id.index(sid) for sid in self.site_ids}
        self.sites: dict[str, _Site] = {}
        self.calls = 0
        self.solves = 0
        self.messages_out: list[Any] = []
        self.penalty_messages = {"unchanged": 0, "changed": 0, "repeated": 0}
        self._reporter: PairwiseMasker | None = None

    def register(self, layout: CouplingLayout, row_scale: np.ndarray) -> dict[str, np.ndarray]:
        sc = self.scenario
        T = layout.steps
        allowed = sc.allowed()
        rows_of = layout.row_of_entry()
        coef = coefficient_of_entry(layout, sc.step_seconds)
        out = {}
        for sid, i in self._index.items():
            var_rc = np.argwhere(allowed[i])
            support = layout.support(allowed[i]).astype(np.int64)
            k = len(var_rc)
            r = rows_of[var_rc[:, 0], var_rc[:, 1], :]  # (k, T)
            pos = np.searchsorted(support, r)
            col = np.arange(k)[:, None] * T + np.arange(T)[None, :]  # C-order vec of (k, T)
            val = coef[var_rc[:, 1]][:, None] / row_scale[r]
            m = sp.csr_matrix(
                (np.broadcast_to(val, (k, T)).ravel(), (pos.ravel(), col.ravel())),
                shape=(support.size, k * T),
            )
            site = _Site(i, sid, support, var_rc, m)
            self._build(site, DEFAULT_PENALTY)
            self.sites[sid] = site
            out[sid] = support
        return out

    @staticmethod
    def _entry_rho(site: _Site, rho: float | np.ndarray) -> np.ndarray:
        if np.ndim(rho) == 0:
            return np.full(site.support.size, float(rho))
        return np.asarray(rho, dtype=float)[site.support]

    def _build(self, site: _Site, rho: float | np.ndarray) -> None:
        sc = self.scenario
        T = sc.steps
        k = len(site.var_rc)
        x = cp.Variable((k, T), nonneg=True)
        n = cp.Variable(T, nonneg=True)
        target = cp.Parameter(site.support.size)
        cost, load = _site_cost(sc, site.index, x, n, site.var_rc, T)
        served = site.served_matrix @ cp.vec(x, order="C")
        weight = self._entry_rho(site, rho)
        objective = cost + cp.sum(cp.multiply(weight / 2.0, cp.square(served - target)))
        cons = [load <= sc.sites.u_max[site.index] * n, n <= sc.sites.gpus[site.index]]
        site.problem = cp.Problem(cp.Minimize(objective), cons)
        site.x, site.n, site.target, site.cost, site.rho = x, n, target, cost, weight

    def method_begin(self, message: MethodBegin) -> bytes:
        """A run of exchange ADMM begins: every site's penalty is its initial ``ρ``."""
        assert isinstance(message.settings, AdmmSiteSettings), message
        for site in self.sites.values():
            if not np.array_equal(site.rho, self._entry_rho(site, message.settings.rho)):
                self._build(site, message.settings.rho)
        return b""

    def method_scatter(self, request: AdmmRequest) -> AdmmAnswer:
        iteration, rho, targets = request.iteration, request.penalty, request.targets
        best_iteration = request.best_iteration
        self.calls += 1
        out = {}
        for sid in self.site_ids:
            site = self.sites[sid]
            if site.last is not None and site.last[0] == iteration:
                out[sid] = site.last[1]  # idempotent per iteration id
                continue
            if rho is None:
                self.penalty_messages["unchanged"] += 1  # keep the penalty in force
            elif site.rho is None or not np.array_equal(self._entry_rho(site, rho), site.rho):
                self.penalty_messages["changed"] += 1
                self._build(site, rho)
            else:
                self.penalty_messages["repeated"] += 1
            site.target.value = np.asarray(targets[sid], dtype=float)
            site.problem.solve(solver=cp.CLARABEL)
            self.solves += 1
            xv = np.maximum(site.x.value, 0.0)
            nv = np.clip(site.n.value, 0.0, self.scenario.sites.gpus[site.index])
            served = site.served_matrix @ xv.ravel()
            site.iterates[iteration] = (xv, nv, served)
            keep = {iteration, best_iteration}
            site.iterates = {k: v for k, v in site.iterates.items() if k in keep}
            site.last = (iteration, served)
            out[sid] = served
        answer = AdmmAnswer(iteration, out)
        self.messages_out.append(answer)
        return answer

    def penalties(self) -> dict[str, np.ndarray]:
        """The penalty in force at each site, per support entry."""
        return {sid: np.array(site.rho) for sid, site in self.sites.items()}

    def penalty_counts(self) -> dict[str, int]:
        return dict(self.penalty_messages)

    def full_x(self, sid: str, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """(x (R, C, T), n (T,)) of a kept iterate."""
        site = self.sites[sid]
        sc = self.scenario
        xv, nv, _ = site.iterates[iteration]
        x = np.zeros((len(sc.regions), len(sc.classes), sc.steps))
        x[site.var_rc[:, 0], site.var_rc[:, 1], :] = xv
        return x, nv

    def report_keys(self, run_id: str) -> bytes:
        self._reporter = PairwiseMasker()
        return self._reporter.public_key

    def final_report(self, request: ReportRequest, group_index: int) -> GroupReport:
        """The product's end-of-run answer (thermoroute.site_agent.group.answer_report)."""
        masker, self._reporter = self._reporter, None
        return answer_report(self.site_reports(request.iteration), request, group_index, masker)

    def site_reports(self, iteration: int) -> list[SiteReport]:
        """Each site's result in the product's report format (charged by ``evaluate``)."""
        sc = self.scenario
        reports = []
        for sid in self.site_ids:
            i = self._index[sid]
            x, n = self.full_x(sid, iteration)
            xs, ns = np.zeros(sc.shape), np.zeros((len(sc.sites), sc.steps))
            xs[i], ns[i] = x, n
            ev = evaluate(sc, xs, ns)
            totals = ev.site_totals(i)
            for key in ("interactive_requests", "objective_aud"):
                totals[key] = float(ev.per_site_step[key][i].sum())
            st = ev.steps
            reports.append(
                SiteReport(
                    site_id=sid,
                    iteration=iteration,
                    best=False,
                    times=sc.times,
                    x=x,
                    n=n,
                    active_gpus=np.array(st.active_gpus[i]),
                    load_gpus=np.array(st.load_gpus[i]),
                    it_kw=np.array(st.it_kw[i]),
                    pue=np.array(st.pue[i]),
                    cooling_kw=np.array(st.cooling_kw[i]),
                    wue=np.array(st.wue_l_per_kwh[i]),
                    totals=totals,
                )
            )
        return reports

    def telemetry(self) -> dict[str, Any]:
        return {"calls": self.calls, "solves": self.solves}

    def shift(self, steps: int, start: Any = None) -> None:
        raise NotImplementedError


def assemble(scenario: Scenario, reports: list[SiteReport]) -> tuple[np.ndarray, np.ndarray]:
    """Full (S, R, C, T) schedule and (S, T) active GPUs from the group reports."""
    x = np.zeros(scenario.shape)
    n = np.zeros((len(scenario.sites), scenario.steps))
    for r in reports:
        i = scenario.sites.site_id.index(r.site_id)
        x[i], n[i] = r.x, r.n
    return x, n


@dataclass
class CentralSolution:
    objective: float
    x: np.ndarray
    n: np.ndarray
    duals_interactive: np.ndarray  # (R, C, T) AUD per (req/s for one step)
    duals_volume: np.ndarray  # (R, C) AUD per request


def central_optimum(scenario: Scenario) -> CentralSolution:
    """The whole scenario as one cvxpy problem (Clarabel), with its demand duals.

    The duals are signed as marginal costs: the change of the optimum per unit increase of
    the right-hand side (demand in req/s for one step, or volume in requests).
    """
    sc = scenario
    S, R, C, T = sc.shape
    allowed = sc.allowed()
    total = 0
    served = [[[0 for _ in range(T)] for _ in range(C)] for _ in range(R)]
    volume = [[0 for _ in range(C)] for _ in range(R)]
    cons = []
    xs, ns, rcs = [], [], []
    for i in range(S):
        var_rc = np.argwhere(allowed[i])
        x = cp.Variable((len(var_rc), T), nonneg=True)
        n = cp.Variable(T, nonneg=True)
        cost, load = _site_cost(sc, i, x, n, var_rc, T)
        total = total + cost
        cons += [load <= sc.sites.u_max[i] * n, n <= sc.sites.gpus[i]]
        for k, (j, c) in enumerate(var_rc):
            if sc.classes.deferrable[c]:
                volume[j][c] = volume[j][c] + cp.sum(x[k]) * sc.step_seconds
            else:
                for t in range(T):
                    served[j][c][t] = served[j][c][t] + x[k, t]
        xs.append(x)
        ns.append(n)
        rcs.append(var_rc)
    demand_cons: dict[tuple[int, int, int], cp.Constraint] = {}
    volume_cons: dict[tuple[int, int], cp.Constraint] = {}
    for j in range(R):
        for c in range(C):
            if sc.classes.deferrable[c]:
                if isinstance(volume[j][c], cp.Expression):
                    volume_cons[j, c] = volume[j][c] == sc.batch_requests[j, c]
            else:
                for t in range(T):
                    if isinstance(served[j][c][t], cp.Expression):
                        demand_cons[j, c, t] = served[j][c][t] == sc.demand_rps[j, c, t]
    problem = cp.Problem(
        cp.Minimize(total), cons + list(demand_cons.values()) + list(volume_cons.values())
    )
    problem.solve(solver=cp.CLARABEL)
    x_full = np.zeros(sc.shape)
    n_full = np.zeros((S, T))
    for i in range(S):
        x_full[i][rcs[i][:, 0], rcs[i][:, 1], :] = np.maximum(xs[i].value, 0.0)
        n_full[i] = ns[i].value
    # cvxpy's dual of `expr == rhs` is y with Lagrangian f + y(expr − rhs): ∂f*/∂rhs = y.
    duals_i = np.zeros((R, C, T))
    for key, con in demand_cons.items():
        duals_i[key] = float(con.dual_value)
    duals_v = np.zeros((R, C))
    for key, con in volume_cons.items():
        duals_v[key] = float(con.dual_value)
    return CentralSolution(
        objective=float(problem.value),
        x=x_full,
        n=n_full,
        duals_interactive=duals_i,
        duals_volume=duals_v,
    )


def true_objective(scenario: Scenario, x: np.ndarray, n: np.ndarray) -> float:
    """The model's objective of a schedule under :func:`thermoroute.common.evaluate.evaluate`."""
    return evaluate(scenario, x, n).objective_aud
