"""Charge a schedule under the true model (docs/model.md §3–6).

Every solver — centralised, distributed, baseline — ends here: given the routed requests
``x[i,j,c,t]`` and active GPUs ``n[i,t]`` it computes the physical quantities and costs of
each site and step from the scenario's true temperatures, prices, carbon and water
intensities. The same numbers are what the output files hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from thermoroute.common.physics.cooling import (
    cooling_energy_kwh,
    derated_capacity_fraction,
    partial_pue,
    ppue_curve,
)
from thermoroute.common.physics.energy import (
    carbon_kg,
    energy_cost_aud,
    facility_energy_kwh,
    it_power_kw,
)
from thermoroute.common.physics.latency import (
    congestion_latency_req_s,
    mean_ttft_ms,
    path_latency_req_s,
)
from thermoroute.common.physics.water import daily_windows, offsite_water_l, onsite_wue
from thermoroute.common.scenario import Objective, Scenario

TOTAL_KEYS = (
    "energy_cost_aud",
    "carbon_kg",
    "water_l",
    "water_onsite_l",
    "water_offsite_l",
    "it_kwh",
    "cooling_kwh",
    "facility_kwh",
    "latency_req_s",
    "ttft_mean_ms",
    "requests",
)


@dataclass(frozen=True)
class SiteSteps:
    """Per site and step physical state; every array has shape (S, T)."""

    active_gpus: np.ndarray
    load_gpus: np.ndarray
    it_kw: np.ndarray
    pue: np.ndarray
    cooling_kw: np.ndarray
    wue_l_per_kwh: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """A schedule charged under the true model.

    ``per_site[key]`` is an (S, T) array for every key of :data:`TOTAL_KEYS` except the
    mean TTFT, plus ``interactive_requests`` and ``objective_aud``.
    """

    x: np.ndarray
    n: np.ndarray
    steps: SiteSteps
    per_site_step: dict[str, np.ndarray]

    def site_totals(self, i: int) -> dict[str, float]:
        return _totals({k: v[i] for k, v in self.per_site_step.items()})

    def totals(self) -> dict[str, float]:
        return _totals(self.per_site_step)

    def totals_with_objective(self) -> dict[str, float]:
        """:meth:`totals` and ``objective_aud``: the figures a comparison lists."""
        return {**self.totals(), "objective_aud": self.objective_aud}

    @property
    def objective_aud(self) -> float:
        return float(self.per_site_step["objective_aud"].sum())

    @property
    def has_site_detail(self) -> bool:
        """A charged schedule always knows every site's figures (output writers ask)."""
        return True


def _totals(parts: dict[str, np.ndarray]) -> dict[str, float]:
    out = {k: float(np.sum(parts[k])) for k in TOTAL_KEYS if k != "ttft_mean_ms"}
    out["ttft_mean_ms"] = float(
        mean_ttft_ms(np.sum(parts["latency_req_s"]), np.sum(parts["interactive_requests"]))
    )
    return {k: out[k] for k in TOTAL_KEYS}


def true_pue(scenario: Scenario) -> np.ndarray:
    """pPUE of every site and step at its true dry-bulb temperature, shape (S, T): the
    site's measured curve where it has one (model v1.1), its quadratic otherwise."""
    s = scenario.sites
    pue = partial_pue(scenario.dry_bulb_c, s.ppue_a[:, None], s.ppue_b[:, None], s.ppue_c[:, None])
    for i, curve in enumerate(s.ppue_curve or ()):
        if curve is not None:
            pue[i] = ppue_curve(scenario.dry_bulb_c[i], curve[:, 0], curve[:, 1])
    return pue


def true_wue(scenario: Scenario) -> np.ndarray:
    """On-site WUE of every site and step at its true wet-bulb temperature, shape (S, T)."""
    s = scenario.sites
    return onsite_wue(s.wue_model, scenario.wet_bulb_c, s.wue_p1, s.wue_p2)


@dataclass(frozen=True)
class PlantLimits:
    """Model v1.1's limits of every site (docs/model.md §12), from the true temperatures.

    Attributes
    ----------
    max_gpus : ndarray (S, T)
        Powered GPUs the cooling allows, ``f_t · gpus`` (``gpus`` without derating data).
    grid_kw : ndarray (S,)
        Facility power limit [kW]; ``inf`` where a site gives none.
    water_l : ndarray (S, W)
        On-site water allowance of each daily window [L]; ``inf`` where a site gives none.
    window : ndarray of int (T,)
        The window of each step.
    derated, grid, water : ndarray of bool (S,)
        Which sites give each kind of limit.
    """

    max_gpus: np.ndarray
    grid_kw: np.ndarray
    water_l: np.ndarray
    window: np.ndarray
    derated: np.ndarray
    grid: np.ndarray
    water: np.ndarray

    def per_window(self, values: np.ndarray) -> np.ndarray:
        """``values`` (S, T) summed over each daily window, (S, W) like ``water_l``."""
        sums = np.zeros(self.water_l.shape)
        # numpy's stub types ufunc.at's indices as integer arrays only; a tuple holding a
        # slice is a valid index (numpy.ufunc.at's documentation).
        np.add.at(sums, (slice(None), self.window), values)  # type: ignore[arg-type]
        return sums


def _given(values: np.ndarray | None, sites: int) -> np.ndarray:
    """Which sites give an optional column (bool (S,))."""
    if values is None:
        return np.zeros(sites, dtype=bool)
    return ~np.isnan(values)


def cooling_max_gpus(scenario: Scenario) -> np.ndarray:
    """Powered GPUs each site's cooling allows at its true dry bulb, ``f_t · gpus`` (model
    v1.1), shape (S, T); ``gpus`` for a site without derating data (all of them in v1)."""
    s = scenario.sites
    design, slope, floor = s.cooling_design_c, s.cooling_derate_per_c, s.cooling_min_fraction
    derated = _given(design, len(s))
    max_gpus = np.broadcast_to(s.gpus[:, None], (len(s), scenario.steps)).copy()
    if derated.any():
        # A scenario gives the three cooling columns together or none of them (scenario_readers).
        assert design is not None and slope is not None and floor is not None
        f = derated_capacity_fraction(
            scenario.dry_bulb_c[derated],
            design[derated, None],
            slope[derated, None],
            floor[derated, None],
        )
        max_gpus[derated] = f * s.gpus[derated, None]
    return max_gpus


def plant_limits(scenario: Scenario) -> PlantLimits:
    """The v1.1 limits of ``scenario``'s sites over its horizon (all absent for v1 data)."""
    s = scenario.sites
    S, T = len(s), scenario.steps
    derated = _given(s.cooling_design_c, S)
    max_gpus = cooling_max_gpus(scenario)
    grid_limit, water_cap = s.grid_limit_kw, s.water_cap_l_per_day
    grid = _given(grid_limit, S)
    grid_kw = np.full(S, np.inf) if grid_limit is None else np.where(grid, grid_limit, np.inf)
    water = _given(water_cap, S)
    if water_cap is not None and water.any():
        window, share = daily_windows(T, scenario.step_hours)
        caps = np.where(water, water_cap, np.inf)
        water_l = caps[:, None] * share[None, :]
    else:
        window, water_l = np.zeros(T, dtype=int), np.full((S, 1), np.inf)
    return PlantLimits(max_gpus, grid_kw, water_l, window, derated, grid, water)


#: A limit counts as exceeded beyond this share of it (solvers meet limits to ~1e-9).
OVERLOAD_REL_TOL = 1e-6


@dataclass(frozen=True)
class Overload:
    """What a plan puts above one kind of v1.1 limit, charged under the true model.

    Attributes
    ----------
    site_hours : float
        Hours summed over the sites in which the limit is exceeded [h] (for a water
        allowance: the whole window of a day whose allowance is exceeded).
    it_kwh : float
        IT energy above the limit [kWh]: what the site could not draw.
    requests : float
        Requests above the limit: what would be throttled or shed, in proportion to the
        excess.
    """

    site_hours: float
    it_kwh: float
    requests: float

    @property
    def any(self) -> bool:
        return self.site_hours > 0


#: The kinds of limit an overload report covers, in the order reports show them.
OVERLOAD_KINDS = ("capacity", "grid", "water")


def overloads(scenario: Scenario, evaluation: Evaluation) -> dict[str, Overload]:
    """Per kind of v1.1 limit (:data:`OVERLOAD_KINDS`), what ``evaluation``'s plan puts
    above it at the true temperatures; never clipped. All zero on v1 data.

    - ``capacity``: powered GPUs above ``f_t · gpus``; energy and requests are the share
      ``(n − f_t G)/n`` and ``(L − u_max f_t G)/L`` of the step's.
    - ``grid``: facility power ``pPUE_t · P_t`` above ``grid_limit_kw``; the IT energy
      beyond ``grid_limit_kw / pPUE_t`` and that share of the step's requests.
    - ``water``: a window's on-site water above its allowance; that share of the window's
      IT energy and requests.
    """
    limits = plant_limits(scenario)
    dt_h = scenario.step_hours
    ev, steps = evaluation, evaluation.steps
    it_kwh = ev.per_site_step["it_kwh"]
    requests = ev.per_site_step["requests"]
    n, load = steps.active_gpus, steps.load_gpus
    u_max, gpus = scenario.sites.u_max[:, None], scenario.sites.gpus[:, None]

    def share(excess: np.ndarray, whole: np.ndarray) -> np.ndarray:
        return np.divide(excess, whole, out=np.zeros_like(excess), where=whole > 0)

    over = n - limits.max_gpus > OVERLOAD_REL_TOL * gpus
    gpu_share = share(np.maximum(n - limits.max_gpus, 0.0), n)
    load_share = share(np.maximum(load - u_max * limits.max_gpus, 0.0), load)
    capacity = Overload(
        site_hours=float(over.sum() * dt_h),
        it_kwh=float(np.sum(np.where(over, gpu_share * it_kwh, 0.0))),
        requests=float(np.sum(np.where(over, load_share * requests, 0.0))),
    )

    pue = true_pue(scenario)
    it_kw = steps.it_kw
    limit = limits.grid_kw[:, None]
    over = pue * it_kw - limit > OVERLOAD_REL_TOL * limit
    it_share = share(np.maximum(it_kw - limit / pue, 0.0), it_kw)
    grid = Overload(
        site_hours=float(over.sum() * dt_h),
        it_kwh=float(np.sum(np.where(over, it_share * it_kwh, 0.0))),
        requests=float(np.sum(np.where(over, it_share * requests, 0.0))),
    )

    S, W = limits.water_l.shape
    days = np.zeros((S, W, 3))  # per window: on-site water [L], IT energy [kWh], requests
    for k, values in enumerate((true_wue(scenario) * it_kwh, it_kwh, requests)):
        days[:, :, k] = limits.per_window(values)
    used = days[:, :, 0]
    allowed = limits.water_l
    over_days = used - allowed > OVERLOAD_REL_TOL * np.maximum(allowed, 1.0)
    water_share = share(np.maximum(used - np.where(over_days, allowed, used), 0.0), used)
    hours = np.bincount(limits.window, minlength=W) * dt_h
    water = Overload(
        site_hours=float(np.sum(np.where(over_days, hours[None, :], 0.0))),
        it_kwh=float(np.sum(water_share * days[:, :, 1])),
        requests=float(np.sum(water_share * days[:, :, 2])),
    )
    return {"capacity": capacity, "grid": grid, "water": water}


def overload_report(scenario: Scenario, evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """:func:`overloads` in plain form for a summary or a comparison (``{kind: {"site_hours",
    "it_kwh", "requests"}}``); empty for a scenario without plant data, whose outputs stay
    as model v1 writes them."""
    if not scenario.sites.plant_data():
        return {}
    return {kind: vars(o) for kind, o in overloads(scenario, evaluation).items()}


#: Load a fold may add past a full site's capacity, over a step [GPUs].
OVERLOAD_BUDGET_GPUS = 1e-7
#: Flows below this rate [requests/s] (0.0036 requests an hour) are residues of a solver's
#: arithmetic (an interior point leaves ~1e-10 on every allowed pair), not decisions.
RESIDUE_RPS = 1e-6


def without_residues(
    scenario: Scenario, x: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, n)`` with flows below :data:`RESIDUE_RPS` folded into the largest flow of their
    (region, class, step) at a site with room for them, and ``n`` raised where that needs a
    sliver more GPUs.

    Every row's total — a step's interactive demand, a deferrable class's volume over the
    horizon — is unchanged up to rounding; the schedule moves by at most 1e-6 requests/s
    per pair. A row with nowhere to put them keeps its residues.
    """
    x = np.where(x > 0, x, 0.0)
    tiny = x < RESIDUE_RPS
    dropped = np.where(tiny, x, 0.0).sum(axis=0)  # (R, C, T)
    kept = np.where(tiny, 0.0, x)
    s = scenario.sites
    # (S, T) GPUs; a derated site's room is below its derated capacity (model v1.1)
    room = s.u_max[:, None] * cooling_max_gpus(scenario) - load_gpus(scenario, kept)
    # A thousandth of a GPU of room is ample: a fold adds ~1e-6 requests/s · gpu_s.
    candidates = np.where((kept > 0) & (room[:, None, None, :] > 1e-3), kept, -1.0)
    target = candidates.argmax(axis=0)  # (R, C, T)
    r, c, t = np.nonzero(dropped)
    ok = candidates[target[r, c, t], r, c, t] > 0
    np.add.at(kept, (target[r[ok], c[ok], t[ok]], r[ok], c[ok], t[ok]), dropped[r, c, t][ok])
    stay = np.zeros_like(dropped, dtype=bool)
    deferrable = np.asarray(scenario.classes.deferrable, dtype=bool)
    # Past a full site's capacity by at most this many GPUs in all (a tenth of the
    # feasibility tolerance, thermoroute.common.evaluate.Feasibility).
    overload = np.full(room.shape, OVERLOAD_BUDGET_GPUS)
    for j, k, step in zip(r[~ok], c[~ok], t[~ok], strict=True):
        pool = candidates[:, j, k, :]
        extra = dropped[j, k, step] * scenario.gpu_s[:, k]  # (S,) GPUs, per site
        largest = int(kept[:, j, k, step].argmax())
        if deferrable[k] and pool.max() > 0:
            # A deferrable class's volume counts over the whole horizon: another step will do.
            i, later = np.unravel_index(pool.argmax(), pool.shape)
            kept[i, j, k, later] += dropped[j, k, step]
        elif kept[largest, j, k, step] > 0 and extra[largest] <= overload[largest, step]:
            overload[largest, step] -= extra[largest]
            kept[largest, j, k, step] += dropped[j, k, step]
        else:
            stay[j, k, step] = True  # nowhere to go: the residues stay as they were
    kept = np.where(tiny & stay[None], x, kept)
    needed = minimal_active_gpus(scenario, load_gpus(scenario, kept))
    n = np.minimum(np.maximum(n, needed), np.maximum(n, scenario.sites.gpus[:, None]))
    return kept, n


def minimal_active_gpus(scenario: Scenario, load_gpus: np.ndarray) -> np.ndarray:
    """The fewest powered GPUs that carry ``load_gpus`` within ``u_max`` (S, T)."""
    return load_gpus / scenario.sites.u_max[:, None]


def load_gpus(scenario: Scenario, x: np.ndarray) -> np.ndarray:
    """Busy GPUs ``L[i,t] = Σ_jc gpu_s[i,c] · x[i,j,c,t]``, shape (S, T)."""
    return np.einsum("ijct,ic->it", x, scenario.gpu_s)


def evaluate(
    scenario: Scenario,
    x: np.ndarray,
    n: np.ndarray | None = None,
    *,
    pue: np.ndarray | None = None,
    wue: np.ndarray | None = None,
) -> Evaluation:
    """Charge schedule ``x`` (S, R, C, T) with active GPUs ``n`` (S, T).

    Parameters
    ----------
    scenario : Scenario
    x : ndarray (S, R, C, T)
        Requests per second routed from region ``j``, class ``c`` to site ``i`` in step ``t``.
    n : ndarray (S, T), optional
        Powered GPUs; by default the fewest that carry the load (``L / u_max``).
    pue, wue : ndarray (S, T), optional
        Override the cooling model (used to price a plan the way a temperature-unaware
        planner believes it costs); by default the true values at the site temperatures.

    Returns
    -------
    Evaluation
    """
    x = np.asarray(x, dtype=float)
    if x.shape != scenario.shape:
        raise ValueError(f"schedule has shape {x.shape}, the scenario needs {scenario.shape}")
    s, cls = scenario.sites, scenario.classes
    dt_h, dt_s = scenario.step_hours, scenario.step_seconds
    load = load_gpus(scenario, x)
    if n is None:
        n = minimal_active_gpus(scenario, load)
    n = np.asarray(n, dtype=float)
    pue = true_pue(scenario) if pue is None else pue
    wue = true_wue(scenario) if wue is None else wue

    dynamic_w = np.einsum("ijct,ic->it", x, scenario.energy_j)
    it_kw = it_power_kw(s.idle_w[:, None], n, dynamic_w)
    it_kwh = it_kw * dt_h
    fac_kwh = facility_energy_kwh(pue, it_kwh)
    cool_kwh = cooling_energy_kwh(pue, it_kwh)
    w_on = wue * it_kwh
    w_off = offsite_water_l(scenario.ewif_l_per_kwh, fac_kwh)
    cost = energy_cost_aud(scenario.price_aud_per_mwh, fac_kwh)
    co2 = carbon_kg(scenario.carbon_kg_per_kwh, fac_kwh)

    inter = cls.interactive
    x_int = x[:, :, inter, :]
    path_ms = scenario.rtt_ms[:, :, None] + scenario.prefill_ms[:, None, inter]  # (S, R, Ci)
    path = path_latency_req_s(x_int, path_ms[..., None], 0.0, dt_s).sum(axis=(1, 2))
    queue = congestion_latency_req_s(
        load,
        s.max_wait_ms[:, None],
        s.ref_gpu_s[:, None],
        s.gpus[:, None],
        s.u_max[:, None],
        dt_s,
    )
    latency = path + queue
    requests = x.sum(axis=(1, 2)) * dt_s
    interactive_requests = x_int.sum(axis=(1, 2)) * dt_s
    o = scenario.objective
    objective = (
        cost
        + o.carbon_aud_per_kg * co2
        + o.water_aud_per_l * (w_on + w_off)
        + o.latency_aud_per_req_s * latency
    )
    parts = {
        "energy_cost_aud": cost,
        "carbon_kg": co2,
        "water_l": w_on + w_off,
        "water_onsite_l": w_on,
        "water_offsite_l": w_off,
        "it_kwh": it_kwh,
        "cooling_kwh": cool_kwh,
        "facility_kwh": fac_kwh,
        "latency_req_s": latency,
        "requests": requests,
        "interactive_requests": interactive_requests,
        "objective_aud": objective,
    }
    steps = SiteSteps(
        active_gpus=n,
        load_gpus=load,
        it_kw=it_kw,
        pue=np.broadcast_to(pue, it_kw.shape),
        cooling_kw=(np.broadcast_to(pue, it_kw.shape) - 1.0) * it_kw,
        wue_l_per_kwh=np.broadcast_to(wue, it_kw.shape),
    )
    return Evaluation(x=x, n=n, steps=steps, per_site_step=parts)


@dataclass(frozen=True)
class Feasibility:
    """How far a schedule is from feasible, in the units of each constraint."""

    demand_abs_rps: float  # worst |Σ_i x − D| over interactive rows [req/s]
    demand_rel: float  # the same relative to the row's demand (rows with D > 0)
    batch_rel: float  # worst relative shortfall or excess of deferrable volume
    capacity_gpus: float  # worst L − u_max·n [busy GPUs]
    active_over_gpus: float  # worst n − G
    forbidden_rps: float  # largest x on a forbidden pair
    negative_rps: float  # most negative x

    def ok(self, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
        return (
            self.demand_rel <= rel_tol
            and self.batch_rel <= rel_tol
            and self.capacity_gpus <= abs_tol + rel_tol
            and self.active_over_gpus <= abs_tol + rel_tol
            and self.forbidden_rps <= abs_tol
            and self.negative_rps <= abs_tol
        )


def feasibility(scenario: Scenario, x: np.ndarray, n: np.ndarray) -> Feasibility:
    """Measure every constraint of the model for schedule ``x`` and active GPUs ``n``."""
    inter = scenario.classes.interactive
    served = x.sum(axis=0)  # (R, C, T)
    d = scenario.demand_rps
    gap = np.abs(served[:, inter] - d[:, inter])
    rel = gap / np.maximum(d[:, inter], 1e-9)
    rel = np.where(d[:, inter] > 0, rel, gap)
    batch_served = served[:, ~inter].sum(axis=-1) * scenario.step_seconds  # (R, Cd)
    v = scenario.batch_requests[:, ~inter]
    batch_rel = np.abs(batch_served - v) / np.maximum(v, 1.0)
    load = load_gpus(scenario, x)
    forbidden = ~scenario.allowed()
    return Feasibility(
        demand_abs_rps=float(gap.max(initial=0.0)),
        demand_rel=float(rel.max(initial=0.0)),
        batch_rel=float(batch_rel.max(initial=0.0)),
        capacity_gpus=float((load - scenario.sites.u_max[:, None] * n).max(initial=0.0)),
        active_over_gpus=float((n - scenario.sites.gpus[:, None]).max(initial=0.0)),
        forbidden_rps=float(np.abs(x[forbidden]).max(initial=0.0)),
        negative_rps=float((-x).max(initial=0.0)),
    )


def objective_parts_aud(totals: Mapping[str, float], objective: Objective) -> dict[str, float]:
    """The four parts of docs/model.md §6's objective (AUD) from a run's totals.

    Parameters
    ----------
    totals : mapping
        ``energy_cost_aud``, ``carbon_kg``, ``water_l`` and ``latency_req_s`` (as in
        ``summary.json``'s ``totals``).
    objective : Objective
        The scenario's weights (AUD/kg CO2-e, AUD/L, AUD/request-second).
    """
    return {
        "energy_cost": float(totals["energy_cost_aud"]),
        "carbon": float(objective.carbon_aud_per_kg * totals["carbon_kg"]),
        "water": float(objective.water_aud_per_l * totals["water_l"]),
        "latency": float(objective.latency_aud_per_req_s * totals["latency_req_s"]),
    }
