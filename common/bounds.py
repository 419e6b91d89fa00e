"""Physical bounds of every numeric input (docs/model.md §8, "Bounds").

A value outside its bound is refused when a scenario is read, with the file, row, column,
the value and the allowed range. The bounds are wide — they admit any real data centre,
market and climate — and exist so that no number can make a solve meaningless or endless
(a price of 1e300 AUD/MWh, a GPU count of 1e30, 10⁸ hourly steps). Each says where it comes
from. :func:`markdown_table` renders the table that docs/model.md shows (a test keeps the two
the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """The allowed range of one input value.

    Attributes
    ----------
    low, high : float
        Inclusive limits (``low_open``: ``low`` itself is excluded).
    unit : str
    source : str
        Where the limits come from.
    low_open : bool
    """

    low: float
    high: float
    unit: str
    source: str
    low_open: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        """``[low, high] unit`` (``(low, …`` when open), as messages and the table show it."""
        left = "(" if self.low_open else "["
        unit = f" {self.unit}" if self.unit and self.unit != "–" else ""
        return f"{left}{_fmt(self.low)}, {_fmt(self.high)}]{unit}"


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:,g}" if abs(value) < 1e6 else f"{value:g}"


_TEMPERATURE = (
    "beyond the hottest (56.7 °C, Death Valley) and coldest inhabited (−67.7 °C, Oymyakon) "
    "air temperatures on record"
)

#: ``{(file, column): Bound}`` — scenario.toml keys are listed under ``scenario.toml``.
BOUNDS: dict[tuple[str, str], Bound] = {
    ("scenario.toml", "step_hours"): Bound(
        1 / 60, 24, "h", "one minute to one day: the model is an hourly-scale energy model"
    ),
    ("scenario.toml", "steps"): Bound(
        1, 8784, "steps", "a leap year of hourly steps: bounds the memory of validation"
    ),
    ("scenario.toml", "carbon_aud_per_kg"): Bound(
        0, 10, "AUD/kg", "100× the highest carbon prices traded (EU ETS ~0.15 AUD/kg)"
    ),
    ("scenario.toml", "water_aud_per_l"): Bound(
        0, 1, "AUD/L", "100× urban water tariffs (~0.003–0.01 AUD/L)"
    ),
    ("scenario.toml", "latency_aud_per_req_s"): Bound(
        0, 1, "AUD/(request·s)", "≫ any value of a second of waiting (default 7.6e-5)"
    ),
    ("sites.csv", "lat"): Bound(-90, 90, "°", "latitude"),
    ("sites.csv", "lon"): Bound(-180, 180, "°", "longitude"),
    ("sites.csv", "gpus"): Bound(
        1, 1_000_000, "GPUs", "the largest clusters built hold ~2·10⁵ GPUs"
    ),
    ("sites.csv", "idle_w"): Bound(0, 2_000, "W/GPU", "an H100 SXM draws 700 W at full load"),
    ("sites.csv", "u_max"): Bound(0, 1, "–", "a utilisation cap", low_open=True),
    ("sites.csv", "max_wait_ms"): Bound(0, 60_000, "ms", "a minute of queueing"),
    ("sites.csv", "ref_gpu_s"): Bound(
        1e-3, 3_600, "GPU·s", "a millisecond to an hour of GPU time per request"
    ),
    ("sites.csv", "ppue_a"): Bound(1, 3, "–", "pPUE at 0 °C: at least 1, at most 3"),
    ("sites.csv", "ppue_b"): Bound(-0.05, 0.05, "1/°C", "pPUE slope (Xu et al.: 0.0041)"),
    ("sites.csv", "ppue_c"): Bound(-0.001, 0.002, "1/°C²", "pPUE curvature (Xu et al.: 7.2e-5)"),
    ("sites.csv", "wue_p1"): Bound(
        -70,
        100,
        "– or °C",
        "tower: cycles of concentration (> 1, typically 3–10); economizer: the wet-bulb "
        "threshold, within the wet-bulb range",
    ),
    ("sites.csv", "wue_p2"): Bound(
        0, 10, "L/kWh/°C", "economizer slope (0.19 in the shipped data)"
    ),
    ("sites.csv", "cooling_design_c"): Bound(
        -70, 60, "°C", "v1.1: design ambient of the heat rejection, within the dry-bulb range"
    ),
    ("sites.csv", "cooling_derate_per_c"): Bound(
        0, 1, "1/°C", "v1.1: air-cooled chillers lose of the order of 0.01–0.02 per °C"
    ),
    ("sites.csv", "cooling_min_fraction"): Bound(0, 1, "–", "v1.1: a share of the site's GPUs"),
    ("sites.csv", "grid_limit_kw"): Bound(
        0,
        1e7,
        "kW",
        "v1.1: 10 GW, above the largest campuses planned (~1–5 GW); 0 would forbid any load",
        low_open=True,
    ),
    ("sites.csv", "water_cap_l_per_day"): Bound(
        0,
        1e9,
        "L/day",
        "v1.1: ≫ the largest data centres' ~10⁷ L/day; 0 would forbid every hour that "
        "evaporates water (a site that may not evaporate is `wue_model = dry`)",
        low_open=True,
    ),
    ("ppue_curve.csv", "dry_bulb_c"): Bound(-70, 60, "°C", "v1.1: the dry-bulb range"),
    ("ppue_curve.csv", "ppue"): Bound(1, 3, "–", "v1.1: as `ppue_a`: at least 1, at most 3"),
    ("regions.csv", "lat"): Bound(-90, 90, "°", "latitude"),
    ("regions.csv", "lon"): Bound(-180, 180, "°", "longitude"),
    ("regions.csv", "population"): Bound(0, 1e10, "people", "the world's population"),
    ("classes.csv", "prompt_tokens"): Bound(0, 1e7, "tokens", "10× the longest contexts"),
    ("classes.csv", "output_tokens"): Bound(0, 1e7, "tokens", "10× the longest contexts"),
    ("classes.csv", "ttft_slo_ms"): Bound(
        0, 3.6e6, "ms", "up to an hour; `inf` for deferrable classes", low_open=True
    ),
    ("profiles.csv", "gpu_s"): Bound(
        1e-4, 3_600, "GPU·s/request", "0.1 ms to an hour of GPU time per request"
    ),
    ("profiles.csv", "energy_j"): Bound(
        1e-3, 1e7, "J/request", "an hour of a full 8-GPU server (~10 kW) per request"
    ),
    ("profiles.csv", "prefill_ms"): Bound(0, 600_000, "ms", "ten minutes of prefill"),
    ("network.csv", "rtt_ms"): Bound(0, 2_000, "ms", "a geostationary satellite hop ~600 ms"),
    ("site_series.csv", "dry_bulb_c"): Bound(-70, 60, "°C", _TEMPERATURE),
    ("site_series.csv", "wet_bulb_c"): Bound(
        -70, 40, "°C", "wet bulb ≤ dry bulb; above 35 °C no person survives outdoors"
    ),
    ("site_series.csv", "price_aud_per_mwh"): Bound(
        -1_000, 20_300, "AUD/MWh", "the NEM's market price floor and cap (AEMC, FY2025-26)"
    ),
    ("site_series.csv", "carbon_kg_per_kwh"): Bound(
        0, 2, "kg CO2-e/kWh", "brown-coal generation emits ~1.2–1.4"
    ),
    ("site_series.csv", "ewif_l_per_kwh"): Bound(
        0, 100, "L/kWh", "≫ the water intensity of any grid (hydro-heavy ~ 20)"
    ),
    ("demand.csv", "requests_per_s"): Bound(
        0, 1e7, "requests/s", "≫ all web search traffic on Earth (~10⁵/s)"
    ),
    ("batch.csv", "requests"): Bound(0, 1e12, "requests", "10⁷ requests/s for a day"),
}


def bound_of(file: str, column: str) -> Bound | None:
    return BOUNDS.get((file, column))


def markdown_table() -> str:
    """The bounds as the Markdown table of docs/model.md §8."""
    lines = ["| file | column | allowed | why |", "|---|---|---|---|"]
    for (file, column), bound in BOUNDS.items():
        lines.append(f"| `{file}` | `{column}` | {bound.describe()} | {bound.source} |")
    return "\n".join(lines) + "\n"
