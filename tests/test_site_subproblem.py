"""The site subproblem (OSQP, set up once) against an independent cvxpy formulation.

The cvxpy problem here is written from docs/model.md in physical units, with the active GPUs ``n``
as variables and no auxiliary variables, so it shares nothing with the OSQP formulation of
``thermoroute.site_agent.subproblem`` (scaled variables, ``n`` eliminated, lifted load and
deferrable means) except the model. It is DPP (``ρ·‖A x‖²`` and a linear term ``(ρ·v)ᵀ A x`` with
``ρ·v`` computed in NumPy), so changing ρ or the target re-uses the compiled problem.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cvxpy as cp
import numpy as np
import osqp
import pytest

from thermoroute.common.coupling import CouplingLayout, coefficient_of_entry
from thermoroute.common.scenario import Objective, Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.synth import synthesize
from thermoroute.site_agent.data import load_site, load_sites
from thermoroute.site_agent.subproblem import InnerSettings, SiteSubproblem

#: The objective weights of the fixtures, pinned (those of the embedded scenarios) so that the
#: penalties below keep their meaning whatever the synthetic generator's defaults become.
WEIGHTS = Objective(carbon_aud_per_kg=0.075, water_aud_per_l=0.00267, latency_aud_per_req_s=7.6e-5)
#: A penalty at which sites serve most of their targets (their costs are ~0.1–30 AUD per
#: scaled unit) and the biggest ones reach capacity.
RHO = 1e3
#: OSQP alone, to high accuracy.
TIGHT = InnerSettings(eps_abs=1e-10, eps_rel=1e-10, max_iter=200_000, polishing=True)
#: Every solve handed to the interior-point fallback (OSQP stops after one iteration).
EXACT = InnerSettings(max_iter=1, fallback=True, fallback_after=1)
SOLVERS = pytest.mark.parametrize(
    ("settings", "status", "x_tol"),
    [(TIGHT, "OSQP_SOLVED", 1e-5), (EXACT, "CLARABEL_SOLVED", 5e-5)],
    ids=["osqp", "clarabel-fallback"],
)

# --------------------------------------------------------------------------------------------
# Fixtures and helpers


def layout_of(scenario: Scenario) -> CouplingLayout:
    return CouplingLayout(
        len(scenario.regions),
        tuple(bool(d) for d in scenario.classes.deferrable),
        scenario.steps,
    )


def synth(sites: int, regions: int, seed: int, steps: int) -> Scenario:
    """A synthetic scenario with the pinned objective weights."""
    return replace(
        synthesize(sites=sites, regions=regions, seed=seed, steps=steps), objective=WEIGHTS
    )


def interactive_only(scenario: Scenario) -> Scenario:
    """The scenario without its deferrable classes (every variable then has a unique optimum)."""
    keep = np.flatnonzero(~scenario.classes.deferrable)
    cls = scenario.classes
    classes = replace(
        cls,
        class_id=tuple(cls.class_id[k] for k in keep),
        model=tuple(cls.model[k] for k in keep),
        prompt_tokens=cls.prompt_tokens[keep],
        output_tokens=cls.output_tokens[keep],
        ttft_slo_ms=cls.ttft_slo_ms[keep],
        deferrable=cls.deferrable[keep],
    )
    return replace(
        scenario,
        classes=classes,
        gpu_s=scenario.gpu_s[:, keep],
        energy_j=scenario.energy_j[:, keep],
        prefill_ms=scenario.prefill_ms[:, keep],
        demand_rps=scenario.demand_rps[:, keep],
        batch_requests=scenario.batch_requests[:, keep],
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, Path]:
    """A 4-site, 5-region, 8-step synthetic fleet written to disk."""
    scenario = synth(4, 5, 11, 8)
    directory = tmp_path_factory.mktemp("fleet")
    write_scenario(scenario, directory)
    return scenario, directory


@pytest.fixture(scope="module")
def interactive_fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, Path]:
    scenario = interactive_only(synth(3, 4, 5, 6))
    directory = tmp_path_factory.mktemp("interactive")
    write_scenario(scenario, directory)
    return scenario, directory


def scaled_rhs(scenario: Scenario, layout: CouplingLayout) -> tuple[np.ndarray, np.ndarray]:
    scale = layout.row_scale(scenario.demand_rps, scenario.batch_requests)
    b = layout.right_hand_side(scenario.demand_rps, scenario.batch_requests) / scale
    return scale, b


def some_target(
    support: np.ndarray, b: np.ndarray, sites: int, rng: np.random.Generator, noise: float = 0.3
) -> np.ndarray:
    """A plausible target: an even share of each row, perturbed."""
    return b[support] / sites * (1.0 + noise * rng.standard_normal(support.size))


class CvxSite:
    """The same subproblem in cvxpy, from docs/model.md, in physical units (DPP)."""

    def __init__(self, site: Scenario, layout: CouplingLayout, row_scale: np.ndarray) -> None:
        self.site, self.layout = site, layout
        T = site.steps
        allowed = site.allowed()[0]
        self.pairs = np.argwhere(allowed)
        j, c = self.pairs[:, 0], self.pairs[:, 1]
        self.support = layout.support(allowed)
        rows = layout.row_of_entry()[j, c, :]  # (k, T)
        pos = np.searchsorted(self.support, rows)
        coef = coefficient_of_entry(layout, site.step_seconds)[c][:, None] / row_scale[rows]
        k = len(self.pairs)
        self.A = np.zeros((self.support.size, k * T))
        cols = np.arange(k * T).reshape(k, T)
        self.A[pos.ravel(), cols.ravel()] = coef.ravel()

        s, o = site.sites, site.objective
        dt_h, dt_s = site.step_hours, site.step_seconds
        temp, tw = site.dry_bulb_c[0], site.wet_bulb_c[0]
        pue = np.maximum(1.0, s.ppue_a[0] + s.ppue_b[0] * temp + s.ppue_c[0] * temp**2)
        wue = manual_wue(s.wue_model[0], tw, s.wue_p1[0], s.wue_p2[0])
        per_kwh = (
            pue
            * (
                site.price_aud_per_mwh[0] / 1000
                + o.carbon_aud_per_kg * site.carbon_kg_per_kwh[0]
                + o.water_aud_per_l * site.ewif_l_per_kwh[0]
            )
            + o.water_aud_per_l * wue
        )
        self.x = cp.Variable((k, T), nonneg=True)
        self.n = cp.Variable(T, nonneg=True)
        load = site.gpu_s[0, c] @ self.x
        it_kwh = (s.idle_w[0] * self.n + site.energy_j[0, c] @ self.x) / 1000 * dt_h
        interactive = site.classes.interactive[c]
        path_s = np.where(interactive, (site.rtt_ms[0, j] + site.prefill_ms[0, c]) / 1000, 0)
        queue = (
            s.max_wait_ms[0] / 1000 / (s.ref_gpu_s[0] * s.gpus[0] * s.u_max[0]) * dt_s
        ) * cp.sum_squares(load)
        self.f = (
            per_kwh @ it_kwh
            + o.latency_aud_per_req_s * cp.sum(path_s @ self.x) * dt_s
            + o.latency_aud_per_req_s * queue
        )
        served = self.A @ cp.vec(self.x, order="C")
        self.rho = cp.Parameter(nonneg=True)
        self.linear = cp.Parameter(self.support.size)  # ρ·target, computed in NumPy
        self.problem = cp.Problem(
            cp.Minimize(self.f + self.rho / 2 * cp.sum_squares(served) - self.linear @ served),
            [load <= s.u_max[0] * self.n, self.n <= s.gpus[0]],
        )

    def solve(self, target: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
        self.rho.value = rho
        self.linear.value = rho * target
        self.problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
        assert self.problem.status == cp.OPTIMAL
        x = np.zeros((self.layout.regions, self.layout.classes, self.layout.steps))
        x[self.pairs[:, 0], self.pairs[:, 1], :] = self.x.value
        return x, self.n.value

    def served(self, x: np.ndarray) -> np.ndarray:
        return self.A @ x[self.pairs[:, 0], self.pairs[:, 1], :].ravel()


def manual_wue(model: str, tw: np.ndarray, p1: float, p2: float) -> np.ndarray:
    """docs/model.md §4, written out again."""
    if model == "tower":
        f = tw * 9 / 5 + 32
        return np.maximum(0.05, p1 / (p1 - 1) * (6e-5 * f**3 - 0.01 * f**2 + 0.61 * f - 10.4))
    if model == "economizer":
        return np.maximum(0.0, p2 * (tw - p1))
    return np.zeros_like(tw)


def manual_parts(site: Scenario, x: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """The objective parts of docs/model.md §3–6 for one site, from the formulas directly [AUD]."""
    s, o = site.sites, site.objective
    dt_h, dt_s = site.step_hours, site.step_seconds
    temp, tw = site.dry_bulb_c[0], site.wet_bulb_c[0]
    pue = np.maximum(1.0, s.ppue_a[0] + s.ppue_b[0] * temp + s.ppue_c[0] * temp**2)
    wue = manual_wue(s.wue_model[0], tw, s.wue_p1[0], s.wue_p2[0])
    load = np.einsum("jct,c->t", x, site.gpu_s[0])
    it_kwh = (s.idle_w[0] * n + np.einsum("jct,c->t", x, site.energy_j[0])) / 1000 * dt_h
    fac = pue * it_kwh
    inter = site.classes.interactive
    path = np.einsum(
        "jct,jc->", x[:, inter], site.rtt_ms[0][:, None] + site.prefill_ms[0][None, inter]
    )
    queue = s.max_wait_ms[0] / 1000 * load**2 / (s.ref_gpu_s[0] * s.gpus[0] * s.u_max[0])
    parts = {
        "energy_cost": float((site.price_aud_per_mwh[0] / 1000 * fac).sum()),
        "carbon": float(o.carbon_aud_per_kg * (site.carbon_kg_per_kwh[0] * fac).sum()),
        "water": float(o.water_aud_per_l * (wue * it_kwh + site.ewif_l_per_kwh[0] * fac).sum()),
        "latency": float(o.latency_aud_per_req_s * (path / 1000 * dt_s + (queue * dt_s).sum())),
    }
    parts["total"] = sum(parts.values())
    return parts


def penalised(f: float, served: np.ndarray, target: np.ndarray, rho: float) -> float:
    return f + rho / 2 * float(np.sum((served - target) ** 2))


# --------------------------------------------------------------------------------------------
# Cross-checks against cvxpy


def test_cvxpy_reference_is_dpp(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, _ = scaled_rhs(scenario, lay)
    ref = CvxSite(load_site(directory, scenario.sites.site_id[0]), lay, scale)
    assert ref.problem.is_dpp()


@SOLVERS
def test_same_x_as_cvxpy_without_deferrable_classes(interactive_fleet, settings, status, x_tol):
    """Every variable has a unique optimum here: x must agree entry by entry, across a ρ change.

    ρ is large enough that sites serve most pairs, and at the larger ρ the largest site runs
    into its capacity, so bounds, capacity rows and the congestion term all matter.
    """
    scenario, directory = interactive_fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    rows = lay.row_of_entry()
    rng = np.random.default_rng(0)
    at_capacity = False
    for sid in scenario.sites.site_id:
        site = load_site(directory, sid)
        cap = site.sites.u_max[0] * site.sites.gpus[0]
        sub = SiteSubproblem(site, lay, scale, rho=RHO / 10, settings=settings)
        ref = CvxSite(site, lay, scale)
        assert ref.problem.is_dpp()
        for rho in (RHO / 10, RHO / 10, RHO):
            target = some_target(sub.support, b, len(scenario.sites), rng)
            served = sub.solve(target, rho)
            x_ref, n_ref = ref.solve(target, rho)
            assert sub.info.status == status
            assert (x_ref[site.allowed()[0]] > 1e-6).mean() > 0.5  # not a trivial optimum
            at_capacity |= bool(np.any(sub.load >= cap * (1 - 1e-6)))
            # x in the units of its coupling row (a fraction of the row's scale), and in req/s.
            assert np.max(np.abs(sub.x - x_ref) / scale[rows]) <= x_tol
            np.testing.assert_allclose(sub.x, x_ref, rtol=1e-5, atol=1e-5 * scale.min())
            np.testing.assert_allclose(sub.n, n_ref, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(served, ref.served(x_ref), atol=1e-6)
        assert sub.px_updates == 1  # the one ρ change
    assert at_capacity


@SOLVERS
def test_same_solution_as_cvxpy_with_deferrable_class(fleet, settings, status, x_tol):
    """With a deferrable class the split of batch work among regions within a step is not
    unique (every region's batch request costs the same at a site). What is unique is
    compared: interactive x, served demand on every row and the optimal value (tightly),
    the load per step and the GPUs. The load is unique only through the congestion term,
    whose weight is tiny next to ρ, so it is compared to 1e-4 of the site's capacity.
    """
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    rng = np.random.default_rng(1)
    inter = scenario.classes.interactive
    rows = lay.row_of_entry()
    for sid in scenario.sites.site_id:
        site = load_site(directory, sid)
        cap = site.sites.u_max[0] * site.sites.gpus[0]
        sub = SiteSubproblem(site, lay, scale, rho=RHO, settings=settings)
        ref = CvxSite(site, lay, scale)
        target = some_target(sub.support, b, len(scenario.sites), rng)
        served = sub.solve(target, RHO)
        x_ref, n_ref = ref.solve(target, RHO)
        assert sub.info.status == status
        assert np.max(np.abs(sub.x - x_ref)[:, inter] / scale[rows][:, inter]) <= x_tol
        np.testing.assert_allclose(served, ref.served(x_ref), atol=1e-5)
        ours = penalised(sub.objective_value(), served, target, RHO)
        theirs = penalised(
            manual_parts(site, x_ref, n_ref)["total"], ref.served(x_ref), target, RHO
        )
        assert ours == pytest.approx(theirs, rel=1e-8)
        load_ref = np.einsum("jct,c->t", x_ref, site.gpu_s[0])
        np.testing.assert_allclose(sub.load, load_ref, atol=1e-4 * cap)
        np.testing.assert_allclose(sub.n, n_ref, atol=1e-4 * site.sites.gpus[0])


@SOLVERS
def test_per_row_penalties_match_cvxpy(interactive_fleet, settings, status, x_tol):
    """Penalties that differ row by row (ρ w_r): x agrees with cvxpy entry by entry."""
    scenario, directory = interactive_fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    rows = lay.row_of_entry()
    rng = np.random.default_rng(5)
    rho_rows = RHO * np.exp(rng.uniform(np.log(0.05), np.log(20.0), lay.n_rows))
    for sid in scenario.sites.site_id:
        site = load_site(directory, sid)
        sub = SiteSubproblem(site, lay, scale, rho=RHO, settings=settings)
        ref = CvxSite(site, lay, scale)
        target = some_target(sub.support, b, len(scenario.sites), rng)
        served = sub.solve(target, rho_rows)
        weight = rho_rows[sub.support]
        x_served = ref.A @ cp.vec(ref.x, order="C")
        problem = cp.Problem(
            cp.Minimize(ref.f + cp.sum(cp.multiply(weight / 2, cp.square(x_served - target)))),
            ref.problem.constraints,
        )
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
        assert problem.status == cp.OPTIMAL
        x_ref = np.zeros_like(sub.x)
        x_ref[ref.pairs[:, 0], ref.pairs[:, 1], :] = ref.x.value
        assert sub.info.status == status
        assert sub.px_updates == 1  # from the scalar of the setup to the per-row vector
        np.testing.assert_array_equal(sub.rho, weight)
        assert np.max(np.abs(sub.x - x_ref) / scale[rows]) <= x_tol
        np.testing.assert_allclose(served, ref.served(x_ref), atol=1e-6)


def test_uniform_per_row_penalty_is_the_scalar_one(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    sub = SiteSubproblem(site, lay, scale, rho=RHO, settings=TIGHT)
    target = some_target(sub.support, b, 4, np.random.default_rng(3))
    scalar = sub.solve(target, RHO)
    vector = sub.solve(target, np.full(lay.n_rows, RHO))
    assert sub.px_updates == 0  # the same penalties: no refactorisation
    np.testing.assert_array_equal(scalar, vector)


@pytest.mark.parametrize(
    ("rho", "message"),
    [
        (np.ones(3), "per-row rho has shape"),
        (-1.0, "rho must be finite and > 0"),
        ("nan-row", "per-row rho must be finite and > 0"),
    ],
)
def test_bad_penalties_are_refused(fleet, rho, message):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, _ = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    sub = SiteSubproblem(site, lay, scale, rho=RHO)
    if isinstance(rho, str):
        rho = np.full(lay.n_rows, RHO)
        rho[sub.support[0]] = np.nan
    with pytest.raises(ValueError, match=message):
        sub.solve(np.zeros(sub.support.size), rho)


def test_negative_prices_keep_every_gpu_powered(interactive_fleet):
    """Where idling earns money the eliminated n is G; cvxpy, with n free, agrees."""
    scenario, directory = interactive_fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[1])
    price = site.price_aud_per_mwh.copy()
    price[0, ::2] = -400.0
    site = replace(site, price_aud_per_mwh=price)
    sub = SiteSubproblem(site, lay, scale, rho=RHO, settings=TIGHT)
    ref = CvxSite(site, lay, scale)
    target = some_target(sub.support, b, len(scenario.sites), np.random.default_rng(2))
    sub.solve(target, RHO)
    x_ref, n_ref = ref.solve(target, RHO)
    np.testing.assert_allclose(sub.n[::2], site.sites.gpus[0])
    np.testing.assert_allclose(sub.n, n_ref, rtol=1e-5, atol=1e-5)
    rows = lay.row_of_entry()
    assert np.max(np.abs(sub.x - x_ref) / scale[rows]) <= 1e-5
    assert sub.objective_value() == pytest.approx(
        manual_parts(site, x_ref, n_ref)["total"], rel=1e-7
    )


# --------------------------------------------------------------------------------------------
# Objective pieces


def test_objective_pieces_match_evaluate_and_the_formulas(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    rng = np.random.default_rng(3)
    for sid in scenario.sites.site_id:
        site = load_site(directory, sid)
        sub = SiteSubproblem(site, lay, scale, rho=RHO)
        sub.solve(some_target(sub.support, b, len(scenario.sites), rng), RHO)
        parts = sub.local_objective()  # via common.evaluate
        manual = manual_parts(site, sub.x, sub.n)
        assert set(parts) == {"energy_cost", "carbon", "water", "latency", "total"}
        for key, value in manual.items():
            assert parts[key] == pytest.approx(value, rel=1e-10, abs=1e-9), key
        assert sub.objective_value() == pytest.approx(parts["total"], rel=1e-10)


def test_served_is_the_coupling_contribution_of_x(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[2])
    sub = SiteSubproblem(site, lay, scale, rho=RHO)
    served = sub.solve(some_target(sub.support, b, 4, np.random.default_rng(4)), RHO)
    x = sub.x
    full = np.zeros(lay.n_rows)
    coef = coefficient_of_entry(lay, site.step_seconds)
    np.add.at(full, lay.row_of_entry(), x * coef[None, :, None])
    full /= scale
    np.testing.assert_allclose(served, full[sub.support], rtol=1e-12, atol=1e-12)
    outside = np.setdiff1d(np.arange(lay.n_rows), sub.support)
    assert np.all(full[outside] == 0)


def test_forbidden_pairs_have_no_variables(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    allowed = scenario.allowed()
    sid = scenario.sites.site_id[int(np.argmin(allowed.sum(axis=(1, 2))))]
    site = load_site(directory, sid)
    mask = site.allowed()[0]
    assert not mask.all(), "the fixture should have a forbidden pair"
    sub = SiteSubproblem(site, lay, scale, rho=RHO)
    assert sub.solver.n == mask.sum() * lay.steps + lay.steps + (
        mask[:, scenario.classes.deferrable].sum()
    )
    sub.solve(some_target(sub.support, b, 4, np.random.default_rng(5)), RHO)
    assert np.all(sub.x[~mask] == 0)
    np.testing.assert_array_equal(sub.support, lay.support(mask))


# --------------------------------------------------------------------------------------------
# Re-solving without re-setup


def test_fifty_iterations_one_setup_and_one_px_update_per_rho_change(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    sub = SiteSubproblem(load_site(directory, scenario.sites.site_id[0]), lay, scale, rho=RHO)
    solver = sub.solver
    rng = np.random.default_rng(6)
    previous = None
    for _ in range(50):
        served = sub.solve(some_target(sub.support, b, 4, rng), RHO)
        assert previous is None or not np.allclose(served, previous)
        previous = served
    assert sub.solver is solver
    assert sub.setup_count == 1
    assert sub.px_updates == 0
    assert sub.info.solves == 50
    sub.solve(some_target(sub.support, b, 4, rng), 2 * RHO)  # ρ changes: exactly one Px update
    assert sub.px_updates == 1
    for _ in range(5):
        sub.solve(some_target(sub.support, b, 4, rng), 2 * RHO)
    assert (sub.px_updates, sub.setup_count, sub.solver is solver) == (1, 1, True)


def test_rho_change_gives_the_solution_of_a_fresh_setup(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[1])
    target = some_target(lay.support(site.allowed()[0]), b, 4, np.random.default_rng(7))
    updated = SiteSubproblem(site, lay, scale, rho=RHO / 10, settings=TIGHT)
    updated.solve(target, RHO / 10)
    fresh = SiteSubproblem(site, lay, scale, rho=3 * RHO, settings=TIGHT)
    np.testing.assert_allclose(
        updated.solve(target, 3 * RHO), fresh.solve(target, 3 * RHO), atol=1e-7
    )


def test_warm_start_needs_no_more_iterations_than_cold(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[3])
    rng = np.random.default_rng(8)
    base = some_target(lay.support(site.allowed()[0]), b, 4, rng, noise=0.2)
    warm = SiteSubproblem(site, lay, scale, rho=RHO)
    warm.solve(base, RHO)
    warm_iters, cold_iters = [], []
    for _ in range(5):
        nudged = base * (1 + 0.01 * rng.standard_normal(base.size))
        warm.solve(nudged, RHO)
        cold = SiteSubproblem(site, lay, scale, rho=RHO)
        cold.solve(nudged, RHO)
        warm_iters.append(warm.info.iterations)
        cold_iters.append(cold.info.iterations)
        np.testing.assert_allclose(warm.served, cold.served, atol=1e-3)
    assert sum(warm_iters) <= sum(cold_iters)


def test_tolerance_can_be_tightened_per_solve(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    target = some_target(lay.support(site.allowed()[0]), b, 4, np.random.default_rng(9))
    exact = SiteSubproblem(site, lay, scale, rho=RHO, settings=TIGHT)
    reference = exact.solve(target, RHO)
    loose = SiteSubproblem(site, lay, scale, rho=RHO)
    rough = loose.solve(target, RHO, eps=1e-2)
    rough_iters = loose.info.iterations
    loose.warm_start(np.zeros_like(loose.x))
    fine = loose.solve(target, RHO, eps=1e-9)
    assert loose.info.iterations >= rough_iters
    assert np.abs(fine - reference).max() <= np.abs(rough - reference).max()
    assert np.abs(fine - reference).max() <= 1e-6
    assert loose.setup_count == 1


def test_failed_inner_solve_is_flagged_and_returns_a_feasible_iterate(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    sub = SiteSubproblem(
        site,
        lay,
        scale,
        rho=RHO,
        settings=InnerSettings(max_iter=3, check_termination=1),
    )
    served = sub.solve(some_target(sub.support, b, 4, np.random.default_rng(10)), RHO)
    assert sub.info.status == osqp.SolverStatus.OSQP_MAX_ITER_REACHED.name
    assert not sub.info.ok and sub.info.approximate == 1
    assert np.all(np.isfinite(served))
    assert np.all(sub.x >= 0)
    cap = site.sites.u_max[0] * site.sites.gpus[0]
    assert np.all(sub.load <= cap * (1 + 1e-12))
    assert np.all((sub.n >= 0) & (sub.n <= site.sites.gpus[0]))


def test_stalled_osqp_is_finished_by_the_interior_point_fallback(fleet):
    """OSQP stopped after 10 iterations: Clarabel finishes the solve exactly, and OSQP,
    warm-started from that point, then re-solves the same QP within its 10 iterations."""
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    settings = InnerSettings(max_iter=10, fallback=True, fallback_after=4, check_termination=1)
    sub = SiteSubproblem(site, lay, scale, rho=RHO, settings=settings)
    alone = SiteSubproblem(site, lay, scale, rho=RHO, settings=TIGHT)
    target = some_target(sub.support, b, 4, np.random.default_rng(10))
    served = sub.solve(target, RHO)
    assert sub.info.iterations == 10 and sub.info.status == "CLARABEL_SOLVED"
    assert sub.info.ok and sub.info.fallbacks == 1 and sub.info.approximate == 0
    assert 5 <= sub.info.fallback_iterations <= 50
    np.testing.assert_allclose(served, alone.solve(target, RHO), atol=1e-6)
    # After a fallback OSQP gets `fallback_after` iterations; from the exact point they do.
    assert sub.osqp_iteration_limit == 4
    again = sub.solve(target, RHO)
    assert sub.info.status == "OSQP_SOLVED" and sub.info.iterations <= 4
    assert sub.info.fallbacks == 1 and sub.osqp_iteration_limit == 10
    np.testing.assert_allclose(again, served, atol=1e-6)


def test_unusable_inner_solve_keeps_the_previous_iterate_and_recovers(fleet, caplog):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    sub = SiteSubproblem(site, lay, scale, rho=RHO)
    target = some_target(sub.support, b, 4, np.random.default_rng(15))
    good = sub.solve(target, RHO)
    x_good = sub.x
    absurd = target.copy()
    absurd[0] = 1e30  # overflows OSQP's scaled data: no usable iterate comes back
    with caplog.at_level("ERROR", logger="thermoroute.site_agent.subproblem"):
        kept = sub.solve(absurd, RHO)
    assert sub.info.failed == 1 and not sub.info.ok
    assert "keeping the previous iterate" in caplog.text
    np.testing.assert_array_equal(kept, good)
    np.testing.assert_array_equal(sub.x, x_good)
    again = sub.solve(target, RHO)
    assert sub.info.ok and sub.info.status == "OSQP_SOLVED"
    np.testing.assert_allclose(again, good, atol=1e-4)
    with pytest.raises(ValueError, match="finite"):
        sub.solve(np.full_like(target, np.nan), RHO)


# --------------------------------------------------------------------------------------------
# Receding horizon


def test_shift_keeps_the_solver_and_matches_a_fresh_subproblem(tmp_path):
    scenario = synth(3, 4, 13, 10)
    write_scenario(scenario, tmp_path)
    horizon = 6
    sid = scenario.sites.site_id[0]
    series = load_sites(tmp_path, [sid])[sid]
    first, second = series.window(0, horizon), series.window(1, horizon)
    lay = CouplingLayout(
        len(scenario.regions), tuple(bool(d) for d in scenario.classes.deferrable), horizon
    )
    win1, win2 = scenario.window(0, horizon), scenario.window(1, horizon)
    scale1 = lay.row_scale(win1.demand_rps, win1.batch_requests)
    scale2 = lay.row_scale(win2.demand_rps, win2.batch_requests)
    b2 = lay.right_hand_side(win2.demand_rps, win2.batch_requests) / scale2
    rng = np.random.default_rng(12)
    sub = SiteSubproblem(first, lay, scale1, rho=RHO, settings=TIGHT)
    sub.solve(some_target(sub.support, b2, 3, rng), RHO)
    solver = sub.solver
    target = some_target(sub.support, b2, 3, rng)

    sub.shift(second, 1)  # same row scales: vectors only
    assert (sub.solver is solver, sub.setup_count, sub.px_updates) == (True, 1, 0)
    assert sub.site.start == second.start
    fresh = SiteSubproblem(second, lay, scale1, rho=RHO, settings=TIGHT)
    np.testing.assert_allclose(sub.solve(target, RHO), fresh.solve(target, RHO), atol=1e-7)

    sub.shift(second, 0, row_scale=scale2)  # new scales: one value update, same pattern
    assert (sub.solver is solver, sub.setup_count, sub.px_updates) == (True, 1, 1)
    fresh = SiteSubproblem(second, lay, scale2, rho=RHO, settings=TIGHT)
    np.testing.assert_allclose(sub.solve(target, RHO), fresh.solve(target, RHO), atol=1e-7)


def test_shifted_warm_start_moves_the_schedule_by_the_steps(fleet):
    scenario, directory = fleet
    lay = layout_of(scenario)
    scale, b = scaled_rhs(scenario, lay)
    site = load_site(directory, scenario.sites.site_id[0])
    sub = SiteSubproblem(site, lay, scale, rho=RHO)
    sub.solve(some_target(sub.support, b, 4, np.random.default_rng(14)), RHO)
    before = sub.x
    sub.shift(site, 2)
    np.testing.assert_allclose(sub.x[:, :, :-2], before[:, :, 2:], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sub.x[:, :, -1], before[:, :, -1], rtol=1e-12, atol=1e-9)
