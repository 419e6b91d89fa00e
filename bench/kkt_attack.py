"""What a distributed run's published outputs reveal of a site's hourly data: the KKT attack
of docs/model.md §11, and what cost privacy (``--cost-privacy``) leaves of it.

    python -m bench.kkt_attack [--scenario australia] [--epsilons 4,1,0.25] [--sensitivity 10]
                               [--repeats 3]

Run by hand; nothing is tuned. For each setting the scenario is solved with the default
method in this process (``--executor inline``), and an attacker holding only what the
coordinator publishes (``schedule.csv``, ``shadow_prices.csv``) and what is public (the sites'
static specification, the objective's weights, the regional carbon and water intensity)
recovers each site's hourly cost of a kWh of IT energy ``κ_t`` from the KKT conditions of the
site's problem: for a flow to a site with room, its marginal cost equals the row's shadow
price. From ``κ_t`` it infers the hourly price given the weather, or the dry bulb given the
price and the wet bulb. The table gives the median absolute errors over the site-hours the
attacker could use, and what the noise costs: the plan's true objective above the noise-free
optimum. Every site draws its own noise key per run, so each setting is solved ``--repeats``
times and the table gives the median over the draws (and the range of the cost).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thermoroute.common.evaluate import load_gpus, true_pue, true_wue
from thermoroute.common.scenario import Scenario
from thermoroute.results import Solution

#: A site whose load is within this share of its capacity counts as full: its flows' marginal
#: cost carries the capacity's multiplier, which the attacker cannot separate.
FULL_SHARE = 1e-4


@dataclass(frozen=True)
class AttackResult:
    """Per site-hour estimates (NaN where the attacker had no usable flow), shape (S, T).

    Attributes
    ----------
    kappa : ndarray
        The recovered cost of IT energy [AUD/kWh].
    price_error : ndarray
        Estimated minus true price, given the weather [AUD/MWh].
    dry_bulb_error : ndarray
        Estimated minus true dry bulb, given the price and wet bulb [°C].
    """

    kappa: np.ndarray
    price_error: np.ndarray
    dry_bulb_error: np.ndarray

    @property
    def site_hours(self) -> int:
        """How many site-hours the attacker could estimate."""
        return int(np.isfinite(self.kappa).sum())

    @property
    def median_price_error(self) -> float:
        return float(np.nanmedian(np.abs(self.price_error)))

    @property
    def median_dry_bulb_error(self) -> float:
        return float(np.nanmedian(np.abs(self.dry_bulb_error)))


def shadow_array(solution: Solution, scenario: Scenario) -> np.ndarray:
    """The published shadow prices as ``π[j, c, t]`` [AUD/request] (NaN where absent)."""
    if solution.shadow_prices is None:
        raise ValueError("the run published no shadow prices")
    index = {t.isoformat(): k for k, t in enumerate(scenario.times)}
    regions = {r: j for j, r in enumerate(scenario.regions.region_id)}
    classes = {c: k for k, c in enumerate(scenario.classes.class_id)}
    _, R, C, T = scenario.shape
    out = np.full((R, C, T), np.nan)
    for row in solution.shadow_prices.itertuples(index=False):
        out[regions[row.region_id], classes[row.class_id], index[row.time]] = row.aud_per_request
    return out


def recover_kappa(solution: Solution, scenario: Scenario) -> np.ndarray:
    """``κ[i, t]`` from the KKT conditions of site ``i``'s problem [AUD per kWh of IT energy].

    With ``n = L/u_max`` (idling costs money), the marginal cost of one request per second
    of ``(j, c)`` at step ``t`` is ``κ Δ (e_c + idle_w g_c / u_max)/1000`` plus the path
    latency ``λ_L (rtt + prefill)/1000 · 3600Δ`` (interactive classes) plus the congestion
    ``2 β L_t g_c``; for a flow to a site with room it equals ``π · 3600Δ``. Each site-hour's
    largest flow gives the estimate (docs/model.md §3, §6).
    """
    x = solution.x(scenario)
    load = load_gpus(scenario, x)  # (S, T)
    price = shadow_array(solution, scenario)
    s, o = scenario.sites, scenario.objective
    dt_h, dt_s = scenario.step_hours, scenario.step_seconds
    S, _, _, T = scenario.shape
    interactive = np.asarray(scenario.classes.interactive, dtype=bool)
    kappa = np.full((S, T), np.nan)
    for i in range(S):
        gpus, u_max = float(s.gpus[i]), float(s.u_max[i])
        beta = (
            o.latency_aud_per_req_s
            * float(s.max_wait_ms[i])
            / 1000.0
            / (float(s.ref_gpu_s[i]) * gpus * u_max)
            * dt_s
        )
        per_kappa = dt_h * (scenario.energy_j[i] + float(s.idle_w[i]) * scenario.gpu_s[i] / u_max)
        per_kappa = per_kappa / 1000.0  # (C,)
        path = (
            o.latency_aud_per_req_s
            * (scenario.rtt_ms[i][:, None] + scenario.prefill_ms[i][None, :])
            / 1000.0
            * dt_s
            * interactive[None, :]
        )  # (R, C)
        for t in range(T):
            flows = x[i, :, :, t]
            busy = float(load[i, t])
            if busy <= 0.0 or busy >= u_max * gpus * (1.0 - FULL_SHARE):
                continue
            j, c = np.unravel_index(int(np.argmax(flows)), flows.shape)
            marginal = price[j, c, t] * dt_s
            if not np.isfinite(marginal):
                continue
            congestion = 2.0 * beta * busy * scenario.gpu_s[i, c]
            kappa[i, t] = (marginal - path[j, c] - congestion) / per_kappa[c]
    return kappa


def attack(solution: Solution, scenario: Scenario) -> AttackResult:
    """The KKT attack on ``solution``'s published outputs, scored against ``scenario``'s truth.

    ``scenario`` stands for what the attacker knows (the static specification, the weights,
    the regional carbon and water intensity, and — one attack at a time — the weather or the
    price); its other series are only used to score the estimates.
    """
    kappa = recover_kappa(solution, scenario)
    o = scenario.objective
    pue, wue = true_pue(scenario), true_wue(scenario)
    public = o.carbon_aud_per_kg * scenario.carbon_kg_per_kwh + o.water_aud_per_l * (
        scenario.ewif_l_per_kwh
    )
    onsite = o.water_aud_per_l * wue
    price_hat = 1000.0 * ((kappa - onsite) / pue - public)
    per_facility = scenario.price_aud_per_mwh / 1000.0 + public
    ppue_hat = (kappa - onsite) / per_facility
    a, b, c = (np.asarray(v, dtype=float)[:, None] for v in (
        scenario.sites.ppue_a, scenario.sites.ppue_b, scenario.sites.ppue_c
    ))  # fmt: skip
    # The curve's increasing branch (its vertex lies far below any Australian temperature).
    disc = np.maximum(b * b - 4.0 * c * (a - ppue_hat), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dry_hat = np.where(c > 0, (-b + np.sqrt(disc)) / (2.0 * c), (ppue_hat - a) / b)
    return AttackResult(
        kappa=kappa,
        price_error=price_hat - scenario.price_aud_per_mwh,
        dry_bulb_error=dry_hat - scenario.dry_bulb_c,
    )


def main(argv: Sequence[str] | None = None) -> None:
    from thermoroute.api import load_scenario, solve

    parser = argparse.ArgumentParser(prog="python -m bench.kkt_attack", description=__doc__)
    parser.add_argument("--scenario", default="australia")
    parser.add_argument("--epsilons", default="4,1,0.25")
    parser.add_argument("--sensitivity", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    scenario = load_scenario(args.scenario)
    plain = solve(args.scenario, executor="inline")
    base = attack(plain, scenario)
    print(f"{args.scenario}: {scenario.shape[0]} sites × {scenario.steps} steps; Δ = "
          f"{args.sensitivity:g} AUD/MWh of IT energy; median of {args.repeats} draws")  # fmt: skip
    print("| ε | site-hours | median price error [AUD/MWh] | median dry-bulb error [°C] | "
          "objective above the optimum [%] (range) |")  # fmt: skip
    print("|---|--:|--:|--:|--:|")
    print(f"| off | {base.site_hours} | {base.median_price_error:.4f} | "
          f"{base.median_dry_bulb_error:.4f} | 0 |")  # fmt: skip
    for eps in (float(e) for e in args.epsilons.split(",")):
        draws = []
        for _ in range(args.repeats):
            noisy = solve(
                args.scenario,
                executor="inline",
                cost_privacy_epsilon=eps,
                cost_privacy_sensitivity=args.sensitivity,
            )
            result = attack(noisy, scenario)
            cost = 100.0 * (noisy.objective_aud - plain.objective_aud) / plain.objective_aud
            draws.append(
                (result.site_hours, result.median_price_error, result.median_dry_bulb_error, cost)
            )
        hours, price, dry, cost = (float(np.median(column)) for column in zip(*draws, strict=True))
        costs = [d[3] for d in draws]
        print(
            f"| {eps:g} | {hours:.0f} | {price:.3f} ({price / base.median_price_error:,.0f}×) | "
            f"{dry:.3f} ({dry / base.median_dry_bulb_error:,.0f}×) | {cost:.3f} "
            f"({min(costs):.3f}–{max(costs):.3f}) |"
        )


if __name__ == "__main__":
    main()
