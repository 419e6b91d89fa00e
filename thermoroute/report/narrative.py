"""The report's words: what moved against temperature-unaware, and why, from the numbers.

Temperature-unaware plans with every site at the fleet's mean cooling efficiency and
otherwise optimises the same objective, so the volume that moves between the two plans is
what temperature-awareness decided. For the sites that gained or lost most this module
states how their conditions differ from the fleet's — dry-bulb temperature and pPUE, energy
price, grid carbon, water intensity — and values each difference in AUD per MWh of IT
energy at the fleet's mean prices, so the drivers can be ranked:

* cooling: ``(pPUE_fleet − pPUE_i) · v_fleet``, with ``v`` the value of one MWh of facility
  energy (price + carbon price · carbon + water price · off-site water);
* price: ``pPUE_fleet · (price_fleet − price_i)``;
* carbon: ``pPUE_fleet · carbon price · (carbon_fleet − carbon_i)``;
* water: ``water price · ((WUE_fleet − WUE_i) + pPUE_fleet · (EWIF_fleet − EWIF_i))``.

A positive value favours the site. Fleet means are weighted by the load temperature-unaware
put on each site and hour (where the volume came from). Only the cooling term differs
between the two plans — price, carbon and water are priced alike by both — so it is what
moves volume, and the others decide which of the favoured sites take it. Latency is
reported as the mean round trip of the requests a site gained or lost.

The optimum need not be unique: plans of the same objective may route differently, and two
solvers at the same optimum then move different volumes. :func:`choice_note` says so when a
plan of the optimum's objective moves materially less than the run's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thermoroute.common.evaluate import true_pue, true_wue
from thermoroute.common.scenario import Scenario

#: Sites described, for gains and for losses each.
LARGEST = 3


@dataclass(frozen=True)
class SiteShift:
    """One site's change against temperature-unaware and its conditions.

    Attributes
    ----------
    site_id, name : str
    run_requests, unaware_requests : float
        Requests served over the horizon by the run and by temperature-unaware.
    dry_bulb_c, pue, price_aud_per_mwh, carbon_kg_per_kwh : float
        The site's horizon means.
    drivers : dict
        ``{cooling, price, carbon, water}`` in AUD per MWh of IT energy against the fleet
        (positive favours the site).
    rtt_ms : float
        Mean round trip of the requests that moved to or from the site (NaN: none).
    """

    site_id: str
    name: str
    run_requests: float
    unaware_requests: float
    dry_bulb_c: float
    pue: float
    price_aud_per_mwh: float
    carbon_kg_per_kwh: float
    drivers: dict[str, float]
    rtt_ms: float

    @property
    def change(self) -> float:
        return self.run_requests - self.unaware_requests


@dataclass(frozen=True)
class Narrative:
    """The numbers behind the report's text, and the text."""

    moved_requests: float
    total_requests: float
    shifts: list[SiteShift]
    fleet: dict[str, float]
    busiest_hour: int | None
    paragraphs: list[str]


def explain(scenario: Scenario, run_x: np.ndarray, unaware_x: np.ndarray) -> Narrative:
    """Compare the run's schedule with temperature-unaware's on ``scenario``.

    Parameters
    ----------
    scenario : Scenario
    run_x, unaware_x : ndarray (S, R, C, T)
        Requests per second of the two plans.
    """
    seconds = scenario.step_seconds
    run_site = run_x.sum(axis=(1, 2, 3)) * seconds
    unaware_site = unaware_x.sum(axis=(1, 2, 3)) * seconds
    delta = run_x - unaware_x  # (S, R, C, T)
    moved = moved_requests(scenario, run_x, unaware_x)
    total = float(run_site.sum())

    s = scenario.sites
    pue = true_pue(scenario)  # a site's measured curve where it has one (model v1.1)
    wue = true_wue(scenario)
    # Where temperature-unaware put its load: the fleet's reference conditions.
    weights = np.einsum("ijct,ic->it", unaware_x, scenario.energy_j)
    weights = weights if weights.sum() > 0 else np.ones_like(pue)

    def fleet_mean(values: np.ndarray) -> float:
        return float((values * weights).sum() / weights.sum())

    o = scenario.objective
    fleet = {
        "dry_bulb_c": fleet_mean(scenario.dry_bulb_c),
        "pue": fleet_mean(pue),
        "price": fleet_mean(scenario.price_aud_per_mwh),
        "carbon": fleet_mean(scenario.carbon_kg_per_kwh),
        "wue": fleet_mean(wue),
        "ewif": fleet_mean(scenario.ewif_l_per_kwh),
    }
    value_per_mwh = (
        fleet["price"] + 1e3 * o.carbon_aud_per_kg * fleet["carbon"]
        + 1e3 * o.water_aud_per_l * fleet["ewif"]
    )  # fmt: skip
    shifts = []
    for i, site_id in enumerate(s.site_id):
        means = {
            "pue": float(pue[i].mean()),
            "price": float(scenario.price_aud_per_mwh[i].mean()),
            "carbon": float(scenario.carbon_kg_per_kwh[i].mean()),
            "wue": float(wue[i].mean()),
            "ewif": float(scenario.ewif_l_per_kwh[i].mean()),
        }
        drivers = {
            "cooling": (fleet["pue"] - means["pue"]) * value_per_mwh,
            "price": fleet["pue"] * (fleet["price"] - means["price"]),
            "carbon": fleet["pue"] * 1e3 * o.carbon_aud_per_kg
            * (fleet["carbon"] - means["carbon"]),
            "water": 1e3 * o.water_aud_per_l * (
                (fleet["wue"] - means["wue"]) + fleet["pue"] * (fleet["ewif"] - means["ewif"])
            ),
        }  # fmt: skip
        moved_here = np.abs(delta[i]).sum(axis=(1, 2))  # (R,)
        rtt = (
            float((moved_here * scenario.rtt_ms[i]).sum() / moved_here.sum())
            if moved_here.sum() > 0
            else float("nan")
        )
        shifts.append(
            SiteShift(
                site_id=site_id,
                name=s.name[i],
                run_requests=float(run_site[i]),
                unaware_requests=float(unaware_site[i]),
                dry_bulb_c=float(scenario.dry_bulb_c[i].mean()),
                pue=means["pue"],
                price_aud_per_mwh=means["price"],
                carbon_kg_per_kwh=means["carbon"],
                drivers=drivers,
                rtt_ms=rtt,
            )
        )
    per_hour = 0.5 * np.abs(delta).sum(axis=(0, 1, 2)) * seconds
    busiest = int(per_hour.argmax()) if per_hour.max() > 0 else None
    paragraphs = _paragraphs(scenario, shifts, fleet, moved, total, busiest, per_hour)
    return Narrative(moved, total, shifts, fleet, busiest, paragraphs)


def moved_requests(scenario: Scenario, x: np.ndarray, reference: np.ndarray) -> float:
    """Requests plan ``x`` serves elsewhere (at another site or hour) than ``reference``:
    half the summed absolute difference, each move counted once, not as a loss and a gain."""
    return 0.5 * float(np.abs(x - reference).sum()) * scenario.step_seconds


def choice_note(
    moved: float, least: float, gap_aud: float, optimum_aud: float, penalty_aud: float
) -> str:
    """The words for a run whose moves exceed those of an equally good plan.

    Parameters
    ----------
    moved : float
        Requests the run's plan moves against temperature-unaware.
    least : float
        Requests the least-moving plan of the optimum moves
        (:func:`~thermoroute.common.central.least_moving_optimum`).
    gap_aud : float
        That plan's objective less the optimum's [AUD].
    optimum_aud : float
        The optimum's objective [AUD].
    penalty_aud : float
        The penalty per moved request that chose it [AUD].
    """
    return (
        f"The optimum is not unique, so these moves are one of many equally good plans. "
        f"Re-solving the centralised problem with a penalty of {penalty_aud:.1e} AUD per "
        f"request moved away from temperature-unaware finds a plan whose objective differs "
        f"from the optimum's by {abs(gap_aud):.1g} AUD ({abs(gap_aud) / optimum_aud:.0e} of "
        f"it) and that moves {least / 1e6:,.2f} M requests, {(moved - least) / 1e6:,.2f} M "
        f"fewer than this one. At most that much moving is what temperature-awareness needs; "
        f"where the rest goes — and so part of each site's change below — is the solver's "
        f"choice among equal plans, not a reason."
    )


def _paragraphs(
    scenario: Scenario,
    shifts: list[SiteShift],
    fleet: dict[str, float],
    moved: float,
    total: float,
    busiest: int | None,
    per_hour: np.ndarray,
) -> list[str]:
    if moved <= 1e-6 * max(total, 1.0):
        return [
            "This plan serves every region and class from the same sites as "
            "temperature-unaware: on this horizon the temperature differences between the "
            "sites were not worth any move."
        ]
    out = [
        f"Against temperature-unaware — which plans with every site at the fleet's mean "
        f"cooling efficiency — this plan moves {moved / 1e6:,.2f} M requests "
        f"({moved / total:.1%} of {total / 1e6:,.1f} M) to other sites. The fleet's "
        f"load-weighted conditions: {fleet['dry_bulb_c']:.1f} °C dry bulb, pPUE "
        f"{fleet['pue']:.3f}, {fleet['price']:.0f} AUD/MWh, {fleet['carbon']:.2f} kg CO2-e/kWh."
    ]
    ranked = sorted(shifts, key=lambda sh: sh.change)
    losers = [sh for sh in ranked[:LARGEST] if sh.change < -1e-6 * total]
    gainers = [sh for sh in reversed(ranked[-LARGEST:]) if sh.change > 1e-6 * total]
    for shift in gainers + losers:
        out.append(_describe(shift, fleet))
    if busiest is not None:
        t = scenario.times[busiest]
        spread = np.ptp(scenario.dry_bulb_c[:, busiest])
        out.append(
            f"The largest move is at {t:%H:%M} on {t:%d %b} ({per_hour[busiest] / 1e3:,.0f} "
            f"thousand requests), when the sites' temperatures spanned {spread:.1f} °C."
        )
    return out


def _describe(shift: SiteShift, fleet: dict[str, float]) -> str:
    verb = "gains" if shift.change > 0 else "loses"
    base = max(shift.unaware_requests, 1.0)
    cooling = shift.drivers["cooling"]
    others = ", ".join(
        f"{name} {value:+,.1f}"
        for name, value in sorted(shift.drivers.items(), key=lambda kv: -abs(kv[1]))
        if name != "cooling"
    )
    latency = (
        f" The requests that moved travel {shift.rtt_ms:.0f} ms round trip on average."
        if np.isfinite(shift.rtt_ms)
        else ""
    )
    return (
        f"{shift.name} ({shift.site_id}) {verb} {abs(shift.change) / 1e6:,.2f} M requests "
        f"({shift.change / base:+.1%}). Temperature-unaware planned it at the fleet's pPUE "
        f"{fleet['pue']:.3f}; at a mean {shift.dry_bulb_c:.1f} °C "
        f"({shift.dry_bulb_c - fleet['dry_bulb_c']:+.1f} °C against the fleet) its true pPUE "
        f"averages {shift.pue:.3f}, worth {cooling:+,.1f} AUD per MWh of IT energy (cooling; "
        f"hour by hour the difference is larger where its temperature swings). Its other "
        f"conditions, which both plans price alike, decide which sites take the volume: "
        f"{others} AUD/MWh against the fleet ({shift.price_aud_per_mwh:.0f} AUD/MWh, "
        f"{shift.carbon_kg_per_kwh:.2f} kg CO2-e/kWh).{latency}"
    )
