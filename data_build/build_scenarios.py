"""Build the embedded scenarios from ``data_build/raw/``.

``python -m data_build.build_scenarios [--out DIR] [--only NAME]`` writes one v1 scenario
directory per scenario (``scenario.toml``, the eight CSV files and a ``PROVENANCE.md``) into
``DIR/<name>/`` — by default the package data directory ``common/scenarios/``. The build reads
nothing but ``data_build/raw/`` and is deterministic: a re-run reproduces every file byte for
byte. Methods and sources are documented in docs/data.md; this module's comments say why.

- ``australia`` (8 capitals) and ``australia-20`` (20 sites): the January 2023 week of the
  real NEM 5-minute data;
- ``australia-heatwave-2020`` and ``australia-winter-2020``: the same 8 sites, ids and regions
  as ``australia`` over 28 Jan – 2 Feb 2020 and 6–12 July 2020, with AEMO's 30-minute prices.

Time base: every time is NEM market time (AEST, UTC+10:00, no daylight saving); the spans are
the :data:`data_build.periods.PERIODS`. ``scenario.toml`` selects a 24-step default horizon and
``load_scenario(start=..., steps=...)`` can pick any other window of the series.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from data_build.periods import NEM_TZ, PERIODS, UTC, Period
from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.physics.cooling import (
    DEFAULT_PPUE_A,
    DEFAULT_PPUE_B,
    DEFAULT_PPUE_C,
    partial_pue,
)
from thermoroute.common.physics.latency import great_circle_km, modelled_rtt_ms
from thermoroute.common.physics.psychrometrics import wet_bulb_psychrometric
from thermoroute.common.physics.serving import idle_w, reference_gpu_s, serving_profile
from thermoroute.common.physics.water import DEFAULT_CYCLES, ewif_from_generation, wue_tower
from thermoroute.common.scenario import (
    Classes,
    Objective,
    Regions,
    Scenario,
    Sites,
    allowed_pairs,
    step_times,
)
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_writing import scenario_tables, scenario_toml
from thermoroute.common.servability import check_servable

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw"
PACKAGE_DIR = HERE.parent / "common" / "scenarios"

DEFAULT_STEPS = 24

# --------------------------------------------------------------------------------------------
# Objective weights (docs/data.md "Objective weights"). Real-world prices, not tuned.

#: Safeguard Mechanism cost-containment price, AUD 75 per t CO2-e in 2023–24 (Clean Energy
#: Regulator, "Managing excess emissions"), i.e. AUD 0.075 per kg.
CARBON_AUD_PER_T = 75.0
#: Sydney Water usage charge AUD 2.67 per kL (2024–25 price table on sydneywater.com.au; the
#: same figure is quoted for 2023–24 while dams are above 60 %), i.e. AUD 0.00267 per L.
WATER_AUD_PER_KL = 2.67
#: Value of latency = the operator's revenue lost per request-second of delay, so that every
#: term of the objective is a cash cost of the operator (energy bought at the spot price,
#: carbon at a compliance price, water at a tariff, latency as lost sales — the framing of
#: geographical load balancing, Liu et al. 2011). Revenue per request: Amazon Bedrock
#: on-demand list prices [USD per million input / output tokens] of the served model classes
#: (Llama 2 Chat 70B 1.95 / 2.56; Llama 3 Instruct 8B 0.30 / 0.60 for the 8B class) at the
#: classes' mean tokens, request-weighted by the chat:code split; converted at the RBA 2023
#: average of 0.6644 USD per AUD (ATO table). Sensitivity of revenue to delay: Bing's
#: server-delay experiment, +500 ms -> -1.2 % revenue per user (Schurman & Brutlag,
#: Velocity 2009), i.e. 2.4 % of revenue per second.
LIST_PRICE_USD_PER_M_TOKENS = {"llama-2-70b": (1.95, 2.56), "llama-3.1-8b": (0.30, 0.60)}
USD_PER_AUD = 0.6644
REVENUE_LOSS_PER_S = 0.012 / 0.5
#: The alternative valuation (a user's time at ABS average full-time ordinary-time earnings,
#: AUD 1,888.80 per 38-h week, Nov 2023) — documented for sensitivity, not used.
WAGE_AUD_PER_S = 1888.80 / (38.0 * 3600.0)


def objective_weights(
    class_tokens: dict[str, tuple[str, float, float]], split: dict[str, float]
) -> Objective:
    """The ``[objective]`` weights (docs/data.md §8).

    Parameters
    ----------
    class_tokens : dict
        Interactive class -> (model, mean prompt tokens, mean output tokens).
    split : dict
        Interactive class -> share of interactive requests.
    """
    revenue_usd = 0.0
    for cid, (model, prompt, output) in class_tokens.items():
        price_in, price_out = LIST_PRICE_USD_PER_M_TOKENS[model]
        revenue_usd += split[cid] * (prompt * price_in + output * price_out) / 1e6
    latency = float(f"{REVENUE_LOSS_PER_S * revenue_usd / USD_PER_AUD:.2g}")
    return Objective(
        carbon_aud_per_kg=CARBON_AUD_PER_T / 1000.0,
        water_aud_per_l=WATER_AUD_PER_KL / 1000.0,
        latency_aud_per_req_s=latency,
    )


# --------------------------------------------------------------------------------------------
# Grid signals

NEM_REGIONS = ("NSW1", "VIC1", "QLD1", "SA1", "TAS1")
#: Fuel-tech columns of the NEM file that count as generation (they sum to ``generation_mw``),
#: and the row of raw/water_intensity_by_generation.csv giving their water consumption.
#: Hydro is counted as 0 (reservoir evaporation is contested and not allocated to generation);
#: battery discharge is storage (its water belongs to whatever charged it), also 0.
FUEL_WATER_ROW: dict[str, tuple[str, str] | None] = {
    "battery_discharging_mw": None,
    "bioenergy_biomass_mw": ("biopower_steam", "cooling_tower"),
    "coal_black_mw": ("AU_coal_evaporative_large", "cooling_tower"),
    "coal_brown_mw": ("AU_brown_coal_LoyYang_Yallourn", "closed_cycle_wet"),
    "distillate_mw": ("AU_OCGT", "none"),
    "gas_ccgt_mw": ("gas_ngcc", "cooling_tower"),
    "gas_ocgt_mw": ("AU_OCGT", "none"),
    "gas_recip_mw": ("AU_OCGT", "none"),
    "gas_steam_mw": ("gas_steam", "cooling_tower"),
    "gas_wcmg_mw": ("AU_OCGT", "none"),
    "hydro_mw": None,
    "solar_utility_mw": ("solar_pv", "none"),
    "wind_mw": ("wind", "none"),
}
FUELS = tuple(FUEL_WATER_ROW)


@dataclass(frozen=True)
class EstimatedGrid:
    """Grid signals of a system outside the NEM, from documented facts (an ESTIMATE)."""

    nga_key: str  # row of the NGA 2024 scope-2 table
    price_level_aud_per_mwh: float
    price_amplitude: float  # scale of the NEM diurnal price shape (1 = as in the NEM)
    utc_offset_h: float  # local standard time, for the diurnal shape
    mix: dict[str, float]  # approximate annual share of generation by fuel tech
    price_note: str
    mix_note: str


ESTIMATED_GRIDS = {
    "WEM": EstimatedGrid(
        nga_key="WA_SWIS",
        price_level_aud_per_mwh=90.0,
        price_amplitude=1.0,
        utc_offset_h=8.0,
        mix={
            "coal_black_mw": 0.34,
            "gas_ccgt_mw": 0.22,
            "gas_ocgt_mw": 0.14,
            "wind_mw": 0.22,
            "solar_utility_mw": 0.06,
            "bioenergy_biomass_mw": 0.02,
        },
        price_note=(
            "AUD 90/MWh mean: WEM balancing prices in 2023 were rarely below AUD 60/MWh and "
            "showed morning and evening peaks (AEMO data as summarised by Frontier HE, 2023); "
            "shape = the NEM's median diurnal price shape of the same week in WA local time"
        ),
        mix_note=(
            "approximate SWIS sent-out mix: black coal ~1/3, gas ~36 % (CCGT/cogeneration "
            "22 %, OCGT 14 %), wind ~22 %, utility solar ~6 %, biomass ~2 % (rounded public "
            "summaries; rooftop PV excluded as in the NEM series)"
        ),
    ),
    "NT-DKIS": EstimatedGrid(
        nga_key="NT_DKIS",
        price_level_aud_per_mwh=100.0,
        price_amplitude=0.5,
        utc_offset_h=9.5,
        mix={"gas_ccgt_mw": 0.45, "gas_ocgt_mw": 0.45, "solar_utility_mw": 0.10},
        price_note=(
            "AUD 100/MWh: no spot market in the Darwin–Katherine system; the level is the fuel "
            "cost of its gas fleet (~10 GJ/MWh heat rate × ~AUD 10/GJ gas); shape = half the "
            "amplitude of the NEM's median diurnal shape (smaller solar share), NT local time"
        ),
        mix_note=(
            "~90 % gas (Channel Island, Weddell; taken as half combined-cycle, half open-cycle), "
            "~10 % utility solar"
        ),
    ),
    "NT-other": EstimatedGrid(
        nga_key="NT_DKIS",
        price_level_aud_per_mwh=100.0,
        price_amplitude=0.5,
        utc_offset_h=9.5,
        mix={"gas_recip_mw": 0.88, "solar_utility_mw": 0.12},
        price_note="as NT-DKIS (the NGA tables give no separate Alice Springs factor)",
        mix_note=(
            "Alice Springs isolated system: ~88 % gas reciprocating engines (Owen Springs, "
            "radiator-cooled), ~12 % solar"
        ),
    ),
}

# --------------------------------------------------------------------------------------------
# Places

#: UTC offset of local clocks by state: standard time, and the states that keep daylight
#: saving (one hour ahead) from October to April.
STANDARD_UTC_OFFSET_H = {
    "NSW": 10.0,
    "ACT": 10.0,
    "VIC": 10.0,
    "TAS": 10.0,
    "QLD": 10.0,
    "SA": 9.5,
    "NT": 9.5,
    "WA": 8.0,
}
DAYLIGHT_SAVING_STATES = frozenset({"NSW", "ACT", "VIC", "TAS", "SA"})


def utc_offset_h(state: str, period: Period) -> float:
    """The local clock's UTC offset [h] in ``state`` during ``period``."""
    summer = period.daylight_saving and state in DAYLIGHT_SAVING_STATES
    return STANDARD_UTC_OFFSET_H[state] + (1.0 if summer else 0.0)


@dataclass(frozen=True)
class SiteSpec:
    """One data-centre campus of an embedded scenario."""

    site_id: str
    name: str
    lat: float
    lon: float
    state: str
    grid_region: str
    gpu: str
    gpus: int
    cooling: str  # tower | economizer | dry
    weather: str  # "openmeteo:<capital>" or "climatology:<location>" (nearest capital, shifted)
    note: str = ""


def _capital_sites(cities: dict[str, dict[str, str]]) -> list[SiteSpec]:
    def c(name: str, sid: str, gpu: str, gpus: int, cooling: str, weather: str, note: str = ""):
        row = cities[name]
        return SiteSpec(
            sid,
            name,
            float(row["lat"]),
            float(row["lon"]),
            row["state"],
            row["grid_region"],
            gpu,
            gpus,
            cooling,
            weather,
            note,
        )

    return [
        c("Sydney", "syd", "H100", 512, "economizer", "openmeteo:Sydney"),
        c("Melbourne", "mel", "H100", 384, "economizer", "openmeteo:Melbourne"),
        c("Brisbane", "bne", "A100", 384, "tower", "openmeteo:Brisbane"),
        c("Perth", "per", "A100", 256, "economizer", "openmeteo:Perth"),
        c("Adelaide", "adl", "H100", 256, "tower", "openmeteo:Adelaide"),
        c("Canberra", "cbr", "H100", 256, "economizer", "openmeteo:Canberra"),
        c("Hobart", "hba", "A100", 128, "dry", "openmeteo:Hobart"),
        c("Darwin", "drw", "A100", 128, "tower", "openmeteo:Darwin"),
    ]


def _regional_sites(cities: dict[str, dict[str, str]]) -> list[SiteSpec]:
    def city(name: str) -> tuple[float, float]:
        return float(cities[name]["lat"]), float(cities[name]["lon"])

    gc, nc, gl = city("Gold Coast"), city("Newcastle"), city("Geelong")
    tv, asp = city("Townsville"), city("Alice Springs")
    return [
        SiteSpec(
            "ool", "Gold Coast", *gc, "QLD", "QLD1", "H100", 128, "tower", "climatology:GoldCoast"
        ),
        SiteSpec(
            "ntl", "Newcastle", *nc, "NSW", "NSW1", "A100", 128, "tower", "climatology:Newcastle"
        ),
        SiteSpec(
            "tsv", "Townsville", *tv, "QLD", "QLD1", "A100", 64, "tower", "climatology:Townsville"
        ),
        SiteSpec(
            "asp",
            "Alice Springs",
            *asp,
            "NT",
            "NT-other",
            "H100",
            64,
            "dry",
            "climatology:AliceSprings",
        ),
        SiteSpec(
            "cns",
            "Cairns",
            -16.9186,
            145.7781,
            "QLD",
            "QLD1",
            "A100",
            64,
            "tower",
            "climatology:Cairns",
        ),
        SiteSpec(
            "lst",
            "Launceston",
            -41.4332,
            147.1441,
            "TAS",
            "TAS1",
            "H100",
            128,
            "dry",
            "climatology:Launceston",
        ),
        SiteSpec(
            "wol",
            "Wollongong",
            -34.4278,
            150.8931,
            "NSW",
            "NSW1",
            "A100",
            128,
            "economizer",
            "climatology:Wollongong",
        ),
        SiteSpec(
            "wlm",
            "Williamtown",
            -32.7950,
            151.8344,
            "NSW",
            "NSW1",
            "H100",
            128,
            "economizer",
            "climatology:Williamtown",
        ),
        SiteSpec(
            "gee",
            "Geelong",
            *gl,
            "VIC",
            "VIC1",
            "A100",
            128,
            "economizer",
            "climatology:Melbourne",
            "no Geelong/Avalon climatology in the data: Melbourne's own, unshifted",
        ),
        SiteSpec(
            "syd-apt",
            "Sydney Airport",
            -33.9461,
            151.1772,
            "NSW",
            "NSW1",
            "H100",
            384,
            "tower",
            "climatology:SydneyAirport",
        ),
        SiteSpec(
            "mel-apt",
            "Melbourne Airport",
            -37.6690,
            144.8410,
            "VIC",
            "VIC1",
            "A100",
            256,
            "economizer",
            "climatology:MelbourneAirport",
        ),
        SiteSpec(
            "per-apt",
            "Perth Airport",
            -31.9403,
            115.9669,
            "WA",
            "WEM",
            "H100",
            256,
            "tower",
            "climatology:PerthAirport",
        ),
    ]


#: Regions beyond raw/cities.csv: (name, state, lat, lon, population, basis).
EXTRA_REGIONS = (
    (
        "Wollongong",
        "NSW",
        -34.4278,
        150.8931,
        310000.0,
        "approx. SUA Wollongong ~2023 (UNVERIFIED)",
    ),
    ("Cairns", "QLD", -16.9186, 145.7781, 160000.0, "approx. SUA Cairns ~2023 (UNVERIFIED)"),
    ("Launceston", "TAS", -41.4332, 147.1441, 90000.0, "approx. SUA Launceston ~2023 (UNVERIFIED)"),
)


# --------------------------------------------------------------------------------------------
# Fleet and workload choices

U_MAX = 0.9
#: Mean queueing delay at u_max by site size: more GPUs multiplex better (Erlang C), so large
#: campuses wait less at the same utilisation.
MAX_WAIT_MS_BY_SIZE = ((384, 80.0), (256, 100.0), (0, 120.0))
#: TTFT SLOs [ms]: chat 1 s; code completion tighter, 300 ms.
TTFT_SLO_MS = {"chat": 1000.0, "code": 300.0}
#: (class, model, Azure trace, deferrable, decode batch). Batch runs at a throughput-oriented
#: decode batch of 32; interactive classes at 16, the knee of the decode table.
CLASS_SPECS = (
    ("chat", "llama-2-70b", "conv", False, 16.0),
    ("code", "llama-3.1-8b", "code", False, 16.0),
    ("batch", "llama-2-70b", "conv", True, 32.0),
)
#: Busy share of Σ u_max·G at the national interactive peak hour (cheapest allowed gpu_s) …
INTERACTIVE_PEAK_UTILISATION = 0.55
#: … plus batch work equal to this share of Σ u_max·G spread over the 24-h horizon.
BATCH_UTILISATION = 0.12
#: Latent heat bound of evaporative cooling: 3.6 MJ per kWh / 2.26 MJ per kg [L/kWh].
EVAPORATION_BOUND_L_PER_KWH = 3.6 / 2.26
AWS_WUE_SYDNEY = 0.10
AWS_WUE_MELBOURNE = 0.06

# Model v1.1 plant data (docs/model.md §12; sources and method in docs/data.md §4a).
#: The scenarios whose sites carry plant data. The others stay model v1 files byte for byte:
#: the distributed methods solve v1 only so far, and `australia` pins the v1 optimum.
PLANT_SCENARIOS = frozenset({"australia-heatwave-2020"})
#: Capacity of an air-cooled chiller against the leaving chilled water `Tchws` and the outdoor
#: dry bulb `Toadb` [°C], relative to its rating: ASHRAE 90.1-2010 Appendix G's
#: "AirCooled_Chiller_2010_PathA_CAPFT" (OpenStudio Standards, from D. Lord's 2010 study of
#: manufacturers' data), a + b·Tchws + c·Tchws² + d·Toadb + e·Toadb² + f·Tchws·Toadb, valid for
#: Toadb 12.7–51.67 °C. It is 1.000 at the AHRI 550/590 rating point (6.67 °C, 35 °C).
AIR_COOLED_CAPFT = (1.0433825, 0.0407073, 0.0004506, -0.0041514, -8.86e-05, -0.0003467)
CAPFT_CHILLED_WATER_C = 6.67
CAPFT_MAX_AMBIENT_C = 51.67
#: AHRI 550/590's (and EN 14511's) standard rating ambient of an air-cooled chiller [°C]: a plant
#: selected for the local design dry bulb is never rated below it.
RATING_AMBIENT_C = 35.0
#: Cooling whose heat leaves through air-cooled condensers or dry coolers: capacity follows the
#: dry bulb. Towers reject heat by evaporation (the wet bulb), which v1.1's dry-bulb derating
#: cannot express: tower sites get no derating data.
DRY_BULB_COOLING = ("economizer", "dry")


def air_cooled_capacity(toadb_c: float) -> float:
    """Capacity of an air-cooled chiller at outdoor dry bulb ``toadb_c`` relative to its AHRI
    rating (:data:`AIR_COOLED_CAPFT` at the rating chilled water)."""
    a, b, c, d, e, f = AIR_COOLED_CAPFT
    tw = CAPFT_CHILLED_WATER_C
    return a + b * tw + c * tw * tw + d * toadb_c + e * toadb_c * toadb_c + f * tw * toadb_c


@dataclass(frozen=True)
class DesignConditions:
    """A capital's ASHRAE cooling design conditions from its Open-Meteo hours (trim_raw)."""

    dry_bulb_0p4_c: float
    wet_bulb_0p4_c: float
    years: str


def design_conditions(raw: Path = RAW) -> dict[str, DesignConditions]:
    return {
        r["city"]: DesignConditions(
            float(r["dry_bulb_0p4_c"]),
            float(r["wet_bulb_0p4_c"]),
            f"{r['first_utc_year']}–{r['last_utc_year']}",
        )
        for r in read_csv(raw / "design_conditions_8capitals_2021-2025.csv")
    }


@dataclass(frozen=True)
class PlantData:
    """The v1.1 columns of ``sites.csv`` (NaN where a site gives none) and how each was made."""

    design_c: np.ndarray  # the plant's design dry bulb, every site (grid sizing uses it too)
    cooling_design_c: np.ndarray
    cooling_derate_per_c: np.ndarray
    cooling_min_fraction: np.ndarray
    grid_limit_kw: np.ndarray
    water_cap_l_per_day: np.ndarray
    full_load_it_kw: np.ndarray
    design_wet_bulb_c: np.ndarray


def plant_data(
    specs: list[SiteSpec], gpus: np.ndarray, idle: np.ndarray, gpu_s: np.ndarray,
    energy: np.ndarray, raw: Path = RAW,
) -> PlantData:  # fmt: skip
    """Plant limits of each site, from public design data and the site's own full load.

    - Design dry bulb: the city's ASHRAE 0.4 % annual cooling dry bulb, never below the 35 °C
      rating ambient of air-cooled chillers (:data:`RATING_AMBIENT_C`).
    - Derating (air-cooled sites only, :data:`DRY_BULB_COOLING`): the capacity the published
      air-cooled chiller curve loses per °C over the 10 °C above the design dry bulb; the floor is
      what the curve keeps at its upper limit, 51.67 °C.
    - Grid connection: the site's facility power at full load — every GPU powered, ``u_max``
      busy on the class that draws the most power per GPU-second — at the design dry bulb's pPUE,
      rounded up to 10 kW.
    - Water allowance (tower sites only): a day at that full load at the city's 0.4 % design wet
      bulb, rounded up to 100 L.
    """
    design = design_conditions(raw)
    S = len(specs)
    nan = np.full(S, np.nan)
    design_c, derate, floor = nan.copy(), nan.copy(), nan.copy()
    cooling_design, wet, water = nan.copy(), nan.copy(), nan.copy()
    # The most power a busy GPU draws on any class [W]: energy per request / GPU-seconds.
    busy_w = (energy / gpu_s).max(axis=1)
    full_kw = gpus * (idle + U_MAX * busy_w) / 1000.0
    for i, s in enumerate(specs):
        city = design[s.weather.split(":")[1]]
        design_c[i] = max(RATING_AMBIENT_C, city.dry_bulb_0p4_c)
        if s.cooling in DRY_BULB_COOLING:
            rated = air_cooled_capacity(design_c[i])
            cooling_design[i] = design_c[i]
            derate[i] = round((1.0 - air_cooled_capacity(design_c[i] + 10.0) / rated) / 10.0, 4)
            floor[i] = round(air_cooled_capacity(CAPFT_MAX_AMBIENT_C) / rated, 3)
        if s.cooling == "tower":
            wet[i] = city.wet_bulb_0p4_c
            day_l = float(wue_tower(wet[i], DEFAULT_CYCLES)) * full_kw[i] * 24.0
            water[i] = math.ceil(day_l / 100.0) * 100.0
    ppue = partial_pue(design_c)
    grid = np.ceil(full_kw * ppue / 10.0) * 10.0
    return PlantData(design_c, cooling_design, derate, floor, grid, water, full_kw, wet)


# --------------------------------------------------------------------------------------------
# Reading


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dictionaries."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float:
    """A number from the factor tables: ``2.3``, ``~2.3`` or a range ``1.85-2.0`` (midpoint)."""
    values = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", text)]
    if not values:
        raise ValueError(f"no number in {text!r}")
    return sum(values[:2]) / len(values[:2])


def water_factors(raw: Path = RAW) -> dict[str, float]:
    """Water consumption [L/kWh] per NEM fuel-tech column (see :data:`FUEL_WATER_ROW`)."""
    table = {
        (r["technology"], r["cooling"]): r
        for r in read_csv(raw / "water_intensity_by_generation.csv")
    }
    out = {}
    for fuel, key in FUEL_WATER_ROW.items():
        if key is None:
            out[fuel] = 0.0
            continue
        row = table[key]
        out[fuel] = _number(row["consumption_l_per_kwh"])
    return out


def nga_factor(key: str, raw: Path = RAW, edition: str = "NGA2024") -> float:
    """Scope-2 emission factor [kg CO2-e/kWh] of ``key`` in the NGA ``edition``."""
    for row in read_csv(raw / "nga_scope2_electricity_factors.csv"):
        if row["edition"] == edition and row["state_or_grid"] == key:
            return float(row["scope2_kgco2e_per_kwh"])
    raise KeyError(key)


def period_times(period: Period) -> tuple[datetime, ...]:
    """The hourly step times of ``period``."""
    return step_times(period.first, 1.0, period.steps)


@dataclass(frozen=True)
class GridSeries:
    """Hourly grid signals over a period, each shape (steps,)."""

    price: np.ndarray
    carbon: np.ndarray
    ewif: np.ndarray
    intervals: np.ndarray  # market intervals averaged per hour (NEM) or 0 (estimated)


def nem_hourly(period: Period, raw: Path = RAW) -> dict[str, GridSeries]:
    """Hourly NEM signals of the January 2023 week from the 5-minute data.

    Each step ``[h, h+1)`` averages the 5-minute rows whose timestamp falls in it (12, or 7 in
    the last step where the file ends at 11:30). This is the hour bucketing of the green-dcc
    AEMO hourly prices (``floor`` of the timestamp), which the build checks against.

    - price: mean regional reference price [AUD/MWh];
    - carbon: ``Σ emissions / Σ (generation · 5/60)`` [kg/kWh], the energy-weighted mean of the
      production-based (sent-out) intensity;
    - ewif: :func:`ewif_from_generation` of the hour's mean MW per fuel tech.
    """
    water = water_factors(raw)
    factors = np.array([water[f] for f in FUELS])
    index = {t: k for k, t in enumerate(period_times(period))}
    steps = period.steps
    sums: dict[str, dict[str, np.ndarray]] = {}
    for row in read_csv(raw / "nem_5min_2023-01-17T1200_to_2023-01-24T1130.csv"):
        region = row["region"]
        when = datetime.fromisoformat(row["timestamp"])
        hour = when.replace(minute=0)
        k = index[hour]
        acc = sums.setdefault(
            region,
            {
                "price": np.zeros(steps),
                "emissions": np.zeros(steps),
                "generation": np.zeros(steps),
                "count": np.zeros(steps),
                "fuels": np.zeros((steps, len(FUELS))),
            },
        )
        acc["price"][k] += float(row["price_aud_per_mwh"])
        acc["emissions"][k] += float(row["emissions_tco2e"])
        acc["generation"][k] += float(row["generation_mw"]) * 5.0 / 60.0
        acc["count"][k] += 1
        acc["fuels"][k] += [float(row[f]) if row[f] else 0.0 for f in FUELS]
    out = {}
    for region in NEM_REGIONS:
        acc = sums[region]
        n = acc["count"]
        if np.any(n == 0):
            raise ValueError(f"{region}: an hour of the week has no 5-minute data")
        mean_mw = acc["fuels"] / n[:, None]
        out[region] = GridSeries(
            price=acc["price"] / n,
            carbon=acc["emissions"] / acc["generation"],  # t/MWh = kg/kWh
            ewif=ewif_from_generation(mean_mw, factors),
            intervals=n,
        )
    return out


def aemo_hourly(period: Period, raw: Path = RAW) -> dict[str, GridSeries]:
    """Hourly NEM signals of a 2020 season from AEMO's 30-minute data and daily intensity.

    - price: mean of the 30-minute regional reference prices of the intervals that *start* in
      the step (AEMO labels an interval by its end; ``interval_start_nem`` = end − 30 min);
    - carbon: AEMO's daily CDEII intensity of the region (sent-out, production-based, local
      generation only) for the step's NEM calendar day — constant within a day, because no
      hourly fuel mix of these days is in the data;
    - ewif: :func:`ewif_from_generation` of the region's generation by fuel tech in the step's
      calendar month (OpenNEM monthly energy), constant within a month for the same reason.
    """
    times = period_times(period)
    index = {t: k for k, t in enumerate(times)}
    prices: dict[str, np.ndarray] = {r: np.zeros(period.steps) for r in NEM_REGIONS}
    counts: dict[str, np.ndarray] = {r: np.zeros(period.steps) for r in NEM_REGIONS}
    for row in read_csv(raw / "aemo_price_demand_30min_5regions_2020_seasons.csv"):
        start = datetime.fromisoformat(row["interval_start_nem"]).replace(tzinfo=NEM_TZ)
        k = index.get(start.replace(minute=0))
        if k is None:
            continue
        prices[row["region"]][k] += float(row["rrp_aud_per_mwh"])
        counts[row["region"]][k] += 1
    intensity = {
        (row["date_nem"], row["regionid"]): float(row["total_emissions_tco2e"])
        / float(row["total_sent_out_energy_mwh"])
        for row in read_csv(raw / "aemo_cdeii_daily_2020_seasons.csv")
    }
    water = water_factors(raw)
    factors = np.array([water[f] for f in FUELS])
    monthly = {
        (row["month"], row["region"]): ewif_from_generation(
            np.array([_gwh(row[f.removesuffix("_mw") + "_gwh"]) for f in FUELS]), factors
        )
        for row in read_csv(raw / "nem_monthly_fuel_mix_2020_seasons.csv")
    }
    out = {}
    for region in NEM_REGIONS:
        n = counts[region]
        if np.any(n != 2):
            raise ValueError(f"{region}: an hour of {period.key} lacks its two 30-minute prices")
        out[region] = GridSeries(
            price=prices[region] / n,
            carbon=np.array([intensity[(t.date().isoformat(), region)] for t in times]),
            ewif=np.array([float(monthly[(t.strftime("%Y-%m"), region)]) for t in times]),
            intervals=n,
        )
    return out


def _gwh(text: str) -> float:
    """A fuel's monthly energy; empty = the region has no such plant."""
    return float(text) if text else 0.0


def nem_price_shape(nem: dict[str, GridSeries], period: Period) -> np.ndarray:
    """Median diurnal shape of the NEM-average price over the period, by AEST hour, mean 1."""
    mean = np.mean([nem[r].price for r in NEM_REGIONS], axis=0)
    hours = np.array([t.hour for t in period_times(period)])
    by_hour = np.array([np.median(mean[hours == h]) for h in range(24)])
    return by_hour / by_hour.mean()


def estimated_grid(
    name: str, nem: dict[str, GridSeries], period: Period, raw: Path = RAW
) -> GridSeries:
    """Grid signals of WEM / NT systems from documented facts (flat carbon and ewif)."""
    spec = ESTIMATED_GRIDS[name]
    shape = nem_price_shape(nem, period)
    aest_hour = np.array([t.hour + 0.5 for t in period_times(period)])  # mid-step
    # The NEM shape is by AEST (= local standard time in the east); evaluate it at the same
    # local standard time of the estimated system.
    local = (aest_hour + spec.utc_offset_h - 10.0 - 0.5) % 24.0
    periodic = np.interp(local, np.arange(25), np.append(shape, shape[0]))
    price = spec.price_level_aud_per_mwh * (1.0 + spec.price_amplitude * (periodic - 1.0))
    water = water_factors(raw)
    mix = np.array([spec.mix.get(f, 0.0) for f in FUELS])
    ewif = float(ewif_from_generation(mix, np.array([water[f] for f in FUELS])))
    return GridSeries(
        price=price,
        carbon=np.full(period.steps, nga_factor(spec.nga_key, raw)),
        ewif=np.full(period.steps, ewif),
        intervals=np.zeros(period.steps),
    )


def grid_signals(period: Period, raw: Path = RAW) -> tuple[dict[str, GridSeries], float]:
    """Every grid's hourly signals over ``period`` and the largest gap [AUD/MWh] between our
    hourly NEM prices and an independent hourly aggregation of AEMO's prices."""
    if period.grid == "opennem-5min":
        nem = nem_hourly(period, raw)
        gap = check_against_aemo_hourly(nem, period, raw)
        # OpenNEM rounds 5-minute prices to 4 significant figures: hourly means agree within a
        # few hundredths of a dollar.
        limit = 0.05
    else:
        nem = aemo_hourly(period, raw)
        gap = check_against_aemo_hourly_means(nem, period, raw)
        limit = 0.005  # both are means of the same two 2-decimal prices
    if gap > limit:
        raise ValueError(f"NEM hourly prices differ from AEMO hourly by {gap} AUD/MWh")
    grids = dict(nem)
    for g in ESTIMATED_GRIDS:
        grids[g] = estimated_grid(g, nem, period, raw)
    return grids, gap


def check_against_aemo_hourly(nem: dict[str, GridSeries], period: Period, raw: Path = RAW) -> float:
    """Largest |difference| [AUD/MWh] between our NSW/VIC hourly prices and green-dcc's."""
    worst = 0.0
    times = period_times(period)
    for zone, region in (("NSW", "NSW1"), ("VIC", "VIC1")):
        rows = read_csv(raw / f"aemo_hourly_price_AU-{zone}_2023-01-17_to_2023-01-24.csv")
        for k, row in enumerate(rows):
            when = datetime.fromisoformat(row["Datetime"]).replace(tzinfo=NEM_TZ)
            if when != times[k]:
                raise ValueError(f"AEMO hourly file out of step at {row['Datetime']}")
            if nem[region].intervals[k] == 12:  # the last, partial hour differs by design
                worst = max(worst, abs(float(row["Price (USD/MWh)"]) - nem[region].price[k]))
    return worst


def check_against_aemo_hourly_means(
    nem: dict[str, GridSeries], period: Period, raw: Path = RAW
) -> float:
    """Largest |difference| [AUD/MWh] between our hourly prices and the hourly means the
    seasons' data set was published with (aggregated independently of this build)."""
    index = {t: k for k, t in enumerate(period_times(period))}
    worst, seen = 0.0, 0
    for row in read_csv(raw / "aemo_hourly_rrp_5regions_2020_seasons.csv"):
        k = index.get(datetime.fromisoformat(row["hour_start_nem"]).replace(tzinfo=NEM_TZ))
        if k is None:
            continue
        seen += 1
        worst = max(worst, abs(float(row["rrp_aud_per_mwh_mean"]) - nem[row["region"]].price[k]))
    if seen != period.steps * len(NEM_REGIONS):
        raise ValueError(f"{period.key}: {seen} hourly AEMO means for {period.steps} steps")
    return worst


# --------------------------------------------------------------------------------------------
# Weather

#: The eight capitals of the Open-Meteo file (its ``city`` column), which are also the sites
#: and regions of ``australia``.
CAPITALS = ("Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide", "Canberra", "Hobart", "Darwin")


@dataclass(frozen=True)
class HourlyWeather:
    """One city's hourly reanalysis weather, keyed by the UTC hour it is valid at."""

    dry_bulb_c: dict[datetime, float]
    wet_bulb_c: dict[datetime, float]  # from T, RH and surface pressure


def read_openmeteo(path: Path) -> dict[str, HourlyWeather]:
    """Every city's hourly dry bulb and wet bulb from a trimmed Open-Meteo file.

    Wet bulb: :func:`thermoroute.common.physics.psychrometrics.wet_bulb_psychrometric` of each
    hour's temperature, relative humidity and surface pressure (the WMO psychrometer equation).
    """
    columns: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in read_csv(path):
        city = columns[row["city"]]
        city["time"].append(datetime.fromisoformat(row["time_utc"].replace("Z", "+00:00")))
        for key in ("temperature_2m_c", "relative_humidity_2m_pct", "surface_pressure_hpa"):
            city[key].append(float(row[key]))
    out = {}
    for name, city in columns.items():
        wet = wet_bulb_psychrometric(
            city["temperature_2m_c"], city["relative_humidity_2m_pct"], city["surface_pressure_hpa"]
        )
        out[name] = HourlyWeather(
            dry_bulb_c=dict(zip(city["time"], city["temperature_2m_c"], strict=True)),
            wet_bulb_c=dict(zip(city["time"], wet.tolist(), strict=True)),
        )
    return out


def step_weather(hourly: HourlyWeather, period: Period) -> tuple[np.ndarray, np.ndarray]:
    """Dry and wet bulb [°C] of every step of ``period``, unrounded.

    ERA5 values are instantaneous at the hour: a step ``[t, t+1h)`` is represented by the mean
    of the values at its two ends (``t`` and ``t+1h``, in UTC), i.e. by its middle.
    """
    dry, wet = np.empty(period.steps), np.empty(period.steps)
    for k, t in enumerate(period_times(period)):
        a = t.astimezone(UTC)
        b = a + timedelta(hours=1)
        dry[k] = (hourly.dry_bulb_c[a] + hourly.dry_bulb_c[b]) / 2.0
        wet[k] = (hourly.wet_bulb_c[a] + hourly.wet_bulb_c[b]) / 2.0
    return dry, wet


@dataclass(frozen=True)
class ClimateShift:
    """How a place away from the capitals differs from its nearest capital, by month.

    From the BOM daily observations 2008–2017 (``climatology_monthly_by_city_from_weatherAUS``):
    the dry-bulb shift is the difference of the mean daily mean temperature
    (``(mean max + mean min) / 2``), the wet-bulb shift the difference of the mean of the 9 am
    and 3 pm mean wet bulbs.
    """

    location: str  # the place's row in the climatology
    capital: str
    dry_c: dict[int, float]  # calendar month -> shift [°C]
    wet_c: dict[int, float]


def climatology(raw: Path = RAW) -> dict[tuple[str, int], dict[str, str]]:
    """The monthly climatology rows keyed by (location, month)."""
    rows = read_csv(raw / "climatology_monthly_by_city_from_weatherAUS.csv")
    return {(r["location"], int(r["month"])): r for r in rows}


def climate_shift(
    location: str, capital: str, months: set[int], table: dict[tuple[str, int], dict[str, str]]
) -> ClimateShift:
    """The :class:`ClimateShift` of ``location`` against ``capital`` for ``months``."""

    def daily_mean(row: dict[str, str]) -> float:
        return (float(row["mean_max_c"]) + float(row["mean_min_c"])) / 2.0

    def wet_mean(row: dict[str, str]) -> float:
        return (float(row["mean_wetbulb_9am_c_stull"]) + float(row["mean_wetbulb_3pm_c_stull"])) / 2

    dry, wet = {}, {}
    for m in sorted(months):
        here, there = table[(location, m)], table[(capital, m)]
        dry[m] = round(daily_mean(here) - daily_mean(there), 2)
        wet[m] = round(wet_mean(here) - wet_mean(there), 2)
    return ClimateShift(location, capital, dry, wet)


def nearest_capital(lat: float, lon: float, cities: dict[str, dict[str, str]]) -> str:
    """The capital closest to (lat, lon) by great-circle distance."""
    distance = {
        c: float(great_circle_km(lat, lon, float(cities[c]["lat"]), float(cities[c]["lon"])))
        for c in CAPITALS
    }
    return min(distance, key=distance.__getitem__)


def shifted_weather(
    dry: np.ndarray, wet: np.ndarray, shift: ClimateShift, period: Period
) -> tuple[np.ndarray, np.ndarray]:
    """The capital's step weather moved by the climatological difference of each step's
    month; the wet bulb is capped at the shifted dry bulb."""
    months = [t.month for t in period_times(period)]
    dry_shift = np.array([shift.dry_c[m] for m in months])
    wet_shift = np.array([shift.wet_c[m] for m in months])
    new_dry = dry + dry_shift
    return new_dry, np.minimum(wet + wet_shift, new_dry)


@dataclass(frozen=True)
class EconomizerCalibration:
    threshold_c: float
    slope: float
    sydney_hours_active: float
    sydney_max_wet_bulb: float


def calibrate_economizer(raw: Path = RAW) -> EconomizerCalibration:
    """Economizer parameters from AWS's Sydney WUE and the evaporation bound.

    Two conditions on Sydney's hourly wet bulb of 2023 (Open-Meteo, UTC year; wet bulb by the
    WMO psychrometer equation) fix ``(Tw0, k)``: the annual mean of ``k·max(0, Tw − Tw0)``
    equals AWS's 0.10 L/kWh, and the WUE at the year's highest wet bulb equals the latent-heat
    bound 1.59 L/kWh (all heat rejected by evaporation). Solved by bisection on ``Tw0`` (the
    ratio mean excess / peak excess falls monotonically in ``Tw0``).
    """
    hourly = read_openmeteo(raw / "openmeteo_sydney_hourly_2023.csv")["Sydney"]
    syd = np.array(list(hourly.wet_bulb_c.values()))
    top = float(syd.max())
    target = AWS_WUE_SYDNEY / EVAPORATION_BOUND_L_PER_KWH
    lo, hi = float(syd.min()), top - 1e-6
    for _ in range(200):
        mid = (lo + hi) / 2
        ratio = np.maximum(0.0, syd - mid).mean() / (top - mid)
        lo, hi = (mid, hi) if ratio > target else (lo, mid)
    threshold = round((lo + hi) / 2, 2)
    slope = round(EVAPORATION_BOUND_L_PER_KWH / (top - threshold), 4)
    return EconomizerCalibration(
        threshold_c=threshold,
        slope=slope,
        sydney_hours_active=float((syd > threshold).mean()),
        sydney_max_wet_bulb=top,
    )


# --------------------------------------------------------------------------------------------
# Workload


def trace_tokens(raw: Path = RAW) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Prompt and output tokens of every request of the Azure 2023 traces (conv, code)."""
    out = {}
    for kind in ("conv", "code"):
        rows = read_csv(raw / f"AzureLLMInferenceTrace_{kind}_2023.csv")
        out[kind] = (
            np.array([float(r["ContextTokens"]) for r in rows]),
            np.array([float(r["GeneratedTokens"]) for r in rows]),
        )
    return out


def burstgpt_shape(raw: Path = RAW) -> np.ndarray:
    """BurstGPT requests by hour of day, normalised to mean 1 (24 values)."""
    rows = read_csv(raw / "burstgpt1_derived_sessions_by_hour_of_day.csv")
    counts = np.array(
        [float(r["session_count"]) for r in sorted(rows, key=lambda r: int(r["hour"]))]
    )
    return counts / counts.mean()


def local_shape(shape: np.ndarray, utc_offset_h: float, period: Period) -> np.ndarray:
    """Mean of the hour-of-day ``shape`` over each step of ``period`` in a local clock.

    Step ``[t, t+1)`` (AEST) is ``[t + o − 10, t + o − 9)`` on a clock at UTC+``o``; the
    piecewise-constant hourly shape is averaged over that interval (two bins for half-hour
    offsets such as South Australia's +10:30).
    """
    out = np.empty(period.steps)
    for k, t in enumerate(period_times(period)):
        start = t.hour + (utc_offset_h - 10.0)
        first = math.floor(start)
        frac = start - first
        out[k] = (1 - frac) * shape[first % 24] + frac * shape[(first + 1) % 24]
    return out


# --------------------------------------------------------------------------------------------
# Scenario assembly


@dataclass(frozen=True)
class RegionSpec:
    region_id: str
    name: str
    state: str
    lat: float
    lon: float
    population: float
    basis: str


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def regions_for(kind: str, raw: Path = RAW) -> list[RegionSpec]:
    """The capitals (``australia``) or every city of cities.csv plus the extras."""
    rows = read_csv(raw / "cities.csv")
    out = [
        RegionSpec(
            _slug(r["city"]),
            r["city"],
            r["state"],
            float(r["lat"]),
            float(r["lon"]),
            float(r["population"]),
            r["population_basis"],
        )
        for r in rows
        if kind == "all" or r["population_basis"].startswith("ABS GCCSA")
    ]
    if kind == "all":
        out += [RegionSpec(_slug(n), n, s, la, lo, p, b) for n, s, la, lo, p, b in EXTRA_REGIONS]
    return out


def _max_wait(gpus: int) -> float:
    for size, wait in MAX_WAIT_MS_BY_SIZE:
        if gpus >= size:
            return wait
    raise AssertionError  # pragma: no cover


@dataclass
class BuildResult:
    scenario: Scenario  # the whole week (168 steps)
    provenance: str
    stats: dict


@dataclass(frozen=True)
class ScenarioSpec:
    """What an embedded scenario is made of."""

    places: str  # "capitals" (8 sites and regions) or "all" (20 sites, 16 regions)
    period: str  # key of :data:`data_build.periods.PERIODS`
    summary: str


SCENARIO_SPECS = {
    "australia": ScenarioSpec("capitals", "2023-01", "the 8 capitals, January 2023"),
    "australia-20": ScenarioSpec("all", "2023-01", "20 sites and 16 regions, January 2023"),
    "australia-heatwave-2020": ScenarioSpec(
        "capitals", "2020-01", "the 8 capitals in the heatwave of 28 Jan – 2 Feb 2020"
    ),
    "australia-winter-2020": ScenarioSpec(
        "capitals", "2020-07", "the 8 capitals in the winter week of 6–12 July 2020"
    ),
}


@dataclass(frozen=True)
class SiteWeather:
    """The hourly weather of every site and where each series comes from."""

    dry_bulb_c: np.ndarray  # (S, T), rounded to 0.01 °C
    wet_bulb_c: np.ndarray
    sources: tuple[str, ...]  # one line per site, for the provenance


def site_weather(specs: list[SiteSpec], period: Period, cities, raw: Path = RAW) -> SiteWeather:
    """Dry and wet bulb of every site over ``period``, rounded to 0.01 °C.

    A capital gets its own Open-Meteo series (:func:`step_weather`); any other place gets its
    nearest capital's, shifted by their climatological difference (:func:`shifted_weather`).
    """
    hourly = read_openmeteo(raw / "openmeteo_8capitals_hourly_scenario_weeks.csv")
    table = climatology(raw)
    months = {t.month for t in period_times(period)}
    dry, wet, sources = [], [], []
    for s in specs:
        source, key = s.weather.split(":")
        if source == "openmeteo":
            d, w = step_weather(hourly[key], period)
            sources.append(f"Open-Meteo {key}")
        else:
            capital = nearest_capital(s.lat, s.lon, cities)
            shift = climate_shift(key, capital, months, table)
            d, w = shifted_weather(*step_weather(hourly[capital], period), shift, period)
            moves = "; ".join(
                f"month {m}: dry {shift.dry_c[m]:+.2f}, wet {shift.wet_c[m]:+.2f} °C"
                for m in sorted(months)
            )
            sources.append(
                f"SHIFTED: Open-Meteo {capital} (nearest capital) + climatology {key} − "
                f"{capital} ({moves})"
            )
        dry.append(d)
        wet.append(w)
    dry_c = np.round(np.array(dry), 2)
    # Rounding keeps wet ≤ dry (both are rounded the same way, and wet ≤ dry before it).
    wet_c = np.round(np.array(wet), 2)
    return SiteWeather(dry_c, wet_c, tuple(sources))


def build_scenario(name: str, raw: Path = RAW) -> BuildResult:
    """Assemble the whole-period scenario ``name`` (one of :data:`SCENARIO_SPECS`)."""
    if name not in SCENARIO_SPECS:
        raise KeyError(f"unknown scenario {name!r} ({', '.join(SCENARIO_SPECS)})")
    spec = SCENARIO_SPECS[name]
    period = PERIODS[spec.period]
    cities = {r["city"]: r for r in read_csv(raw / "cities.csv")}
    specs = _capital_sites(cities)
    if spec.places == "all":
        specs += _regional_sites(cities)
    regions = regions_for(spec.places, raw)
    S, R, C, T = len(specs), len(regions), len(CLASS_SPECS), period.steps

    # --- grid signals per site
    grids, aemo_gap = grid_signals(period, raw)

    # --- weather per site
    weather = site_weather(specs, period, cities, raw)
    dry, wet = weather.dry_bulb_c, weather.wet_bulb_c
    econ = calibrate_economizer(raw)

    # --- serving profiles: the mean over the Azure trace requests of each class
    tokens = trace_tokens(raw)
    gpu_s = np.empty((S, C))
    energy = np.empty((S, C))
    prefill = np.empty((S, C))
    for c, (_, model, trace, _, batch) in enumerate(CLASS_SPECS):
        prompt, output = tokens[trace]
        for i, s in enumerate(specs):
            g, e, p = serving_profile(s.gpu, model, prompt, output, batch)
            gpu_s[i, c], energy[i, c], prefill[i, c] = g.mean(), e.mean(), p.mean()
    gpu_s, energy, prefill = np.round(gpu_s, 6), np.round(energy, 3), np.round(prefill, 3)

    # --- network
    s_lat = np.array([s.lat for s in specs])
    s_lon = np.array([s.lon for s in specs])
    r_lat = np.array([r.lat for r in regions])
    r_lon = np.array([r.lon for r in regions])
    rtt = np.round(
        modelled_rtt_ms(great_circle_km(s_lat[:, None], s_lon[:, None], r_lat, r_lon)), 1
    )
    rtt_gap = _check_rtt(specs, regions, rtt, cities, raw)

    max_wait = np.array([_max_wait(s.gpus) for s in specs])
    deferrable = np.array([spec[3] for spec in CLASS_SPECS])
    slo = np.array([np.inf if d else TTFT_SLO_MS[cid] for cid, _, _, d, _ in CLASS_SPECS])
    mean_tokens = np.array(
        [[round(float(tokens[spec[2]][k].mean())) for k in (0, 1)] for spec in CLASS_SPECS],
        dtype=float,
    )
    classes = Classes(
        class_id=tuple(spec[0] for spec in CLASS_SPECS),
        model=tuple(spec[1] for spec in CLASS_SPECS),
        prompt_tokens=mean_tokens[:, 0],
        output_tokens=mean_tokens[:, 1],
        ttft_slo_ms=slo,
        deferrable=deferrable,
    )
    allowed = allowed_pairs(rtt, prefill, max_wait, slo, deferrable)

    # --- demand
    shape = burstgpt_shape(raw)
    pop = np.array([r.population for r in regions])
    weight = pop / pop.sum()
    diurnal = np.array([local_shape(shape, utc_offset_h(r.state, period), period) for r in regions])
    conv_n, code_n = len(tokens["conv"][0]), len(tokens["code"][0])
    split = {"chat": conv_n / (conv_n + code_n), "code": code_n / (conv_n + code_n)}
    inter = ~deferrable
    min_g = np.where(allowed, gpu_s[:, None, :], np.inf).min(axis=0)  # (R, C)
    if not np.all(np.isfinite(min_g)):
        raise ValueError("a region cannot be served for some class")
    per_rps = np.array([split.get(spec[0], 0.0) for spec in CLASS_SPECS])  # national split
    unit_load = np.einsum("jt,j,jc,c->t", diurnal, weight, min_g, per_rps)
    gpus = np.array([float(s.gpus) for s in specs])
    capacity = float((U_MAX * gpus).sum())
    national_rps = INTERACTIVE_PEAK_UTILISATION * capacity / unit_load.max()
    demand = np.zeros((R, C, T))
    demand[:, inter, :] = (
        national_rps * weight[:, None, None] * per_rps[inter][None, :, None] * diurnal[:, None]
    )
    demand = np.round(demand, 4)
    batch_gpu_s = BATCH_UTILISATION * capacity * DEFAULT_STEPS * 3600.0
    batch = np.zeros((R, C))
    for c in np.flatnonzero(deferrable):
        batch[:, c] = np.round(batch_gpu_s * weight / deferrable.sum() / min_g[:, c])

    # --- sites
    p1 = {"tower": DEFAULT_CYCLES, "economizer": econ.threshold_c, "dry": 0.0}
    request_share = np.array(
        [
            demand[:, c].sum() * 3600.0 * DEFAULT_STEPS / period.steps
            if not deferrable[c]
            else batch[:, c].sum()
            for c in range(C)
        ]
    )
    idle = np.array([idle_w(s.gpu) for s in specs])
    plant = plant_data(specs, gpus, idle, gpu_s, energy, raw) if name in PLANT_SCENARIOS else None
    sites = Sites(
        site_id=tuple(s.site_id for s in specs),
        name=tuple(s.name for s in specs),
        lat=s_lat,
        lon=s_lon,
        grid_region=tuple(s.grid_region for s in specs),
        gpus=gpus,
        idle_w=idle,
        u_max=np.full(S, U_MAX),
        max_wait_ms=max_wait,
        ref_gpu_s=np.array([round(reference_gpu_s(gpu_s[i], request_share), 6) for i in range(S)]),
        ppue_a=np.full(S, DEFAULT_PPUE_A),
        ppue_b=np.full(S, DEFAULT_PPUE_B),
        ppue_c=np.full(S, DEFAULT_PPUE_C),
        wue_model=tuple(s.cooling for s in specs),
        wue_p1=np.array([p1[s.cooling] for s in specs]),
        wue_p2=np.array([econ.slope if s.cooling == "economizer" else 0.0 for s in specs]),
        **(
            {}
            if plant is None
            else {
                "cooling_design_c": plant.cooling_design_c,
                "cooling_derate_per_c": plant.cooling_derate_per_c,
                "cooling_min_fraction": plant.cooling_min_fraction,
                "grid_limit_kw": plant.grid_limit_kw,
                "water_cap_l_per_day": plant.water_cap_l_per_day,
            }
        ),
    )
    region_table = Regions(
        region_id=tuple(r.region_id for r in regions),
        name=tuple(r.name for r in regions),
        lat=r_lat,
        lon=r_lon,
        population=pop,
    )
    price = np.round(np.array([grids[s.grid_region].price for s in specs]), 4)
    carbon = np.round(np.array([grids[s.grid_region].carbon for s in specs]), 5)
    ewif = np.round(np.array([grids[s.grid_region].ewif for s in specs]), 4)
    times = period_times(period)
    scenario = Scenario(
        name=name,
        start=times[0],
        step_hours=1.0,
        objective=objective_weights(
            {
                cid: (model, float(mean_tokens[c, 0]), float(mean_tokens[c, 1]))
                for c, (cid, model, _, d, _) in enumerate(CLASS_SPECS)
                if not d
            },
            split,
        ),
        sites=sites,
        regions=region_table,
        classes=classes,
        gpu_s=gpu_s,
        energy_j=energy,
        prefill_ms=prefill,
        rtt_ms=rtt,
        times=times,
        dry_bulb_c=dry,
        wet_bulb_c=wet,
        price_aud_per_mwh=price,
        carbon_kg_per_kwh=carbon,
        ewif_l_per_kwh=ewif,
        demand_rps=demand,
        batch_requests=batch,
    )
    stats = _statistics(scenario, econ, aemo_gap, rtt_gap, national_rps, split)
    stats["period"] = period
    stats["weather_sources"] = weather.sources
    stats["plant"] = plant
    return BuildResult(scenario, _provenance(scenario, specs, regions, stats, econ), stats)


def _check_rtt(specs, regions, rtt, cities, raw: Path) -> float:
    """Largest |difference| [ms] to rtt_model_ms of geo/distances_and_modelled_rtt.csv, for
    sites placed at a city of cities.csv."""
    table = {}
    for row in read_csv(raw / "distances_and_modelled_rtt.csv"):
        table[(row["from"], row["to"])] = table[(row["to"], row["from"])] = float(
            row["rtt_model_ms"]
        )
    worst = 0.0
    for i, s in enumerate(specs):
        city = cities.get(s.name)
        if city is None or (float(city["lat"]), float(city["lon"])) != (s.lat, s.lon):
            continue
        for j, r in enumerate(regions):
            ref = table.get((s.name, r.name))
            if ref is not None:
                worst = max(worst, abs(ref - rtt[i, j]))
    if worst > 0.11:
        raise ValueError(f"recomputed RTT differs from the shared table by {worst} ms")
    return worst


def utilisation(scenario: Scenario) -> tuple[np.ndarray, float]:
    """Interactive load per step and mean batch load, both as shares of ``Σ u_max·G``.

    Loads use the cheapest ``gpu_s`` among the sites allowed to serve each region and class.
    The batch share spreads the 24-h batch volume evenly over 24 steps.
    """
    allowed = scenario.allowed()
    min_g = np.where(allowed, scenario.gpu_s[:, None, :], np.inf).min(axis=0)
    inter = scenario.classes.interactive
    cap = float((scenario.sites.u_max * scenario.sites.gpus).sum())
    load = np.einsum("jct,jc->t", scenario.demand_rps[:, inter], min_g[:, inter]) / cap
    batch = float((scenario.batch_requests[:, ~inter] * min_g[:, ~inter]).sum())
    return load, batch / (DEFAULT_STEPS * 3600.0) / cap


def _statistics(sc: Scenario, econ, aemo_gap, rtt_gap, national_rps, split) -> dict:
    load, batch = utilisation(sc)
    allowed = sc.allowed()
    inter = sc.classes.interactive
    per_region = allowed[:, :, inter].sum(axis=0)  # sites per (region, class)
    peak = int(np.argmax(load))
    return {
        "sites": len(sc.sites),
        "regions": len(sc.regions),
        "gpus": int(sc.sites.gpus.sum()),
        "h100": int(sum(g for g, w in zip(sc.sites.gpus, sc.sites.idle_w, strict=True) if w == 75)),
        "capacity": float((sc.sites.u_max * sc.sites.gpus).sum()),
        "peak_interactive": float(load.max()),
        "peak_time": sc.times[peak].isoformat(),
        "min_interactive": float(load.min()),
        "batch": batch,
        "peak_total": float(load.max() + batch),
        "national_mean_rps": float(national_rps),
        "split": split,
        "min_sites_per_region_class": int(per_region.min()),
        "forbidden_pairs": int((~allowed[:, :, inter]).sum()),
        "interactive_pairs": int(allowed[:, :, inter].size),
        "aemo_gap": aemo_gap,
        "rtt_gap": rtt_gap,
        "econ": econ,
    }


def _clock_text(period: Period) -> str:
    """The local clocks of the demand shapes, for the provenance."""
    clocks = [("NSW/ACT/VIC/TAS", "NSW"), ("QLD", "QLD"), ("SA", "SA"), ("NT", "NT"), ("WA", "WA")]
    return ", ".join(f"UTC{utc_offset_h(state, period):+g} {names}" for names, state in clocks)


def _grid_method(period: Period, gap: float) -> str:
    """How the NEM rows of the grid table were made, for the provenance."""
    if period.grid == "opennem-5min":
        return f"""NEM: hourly means of the 5-minute regional reference price; carbon = Σ emissions
/ Σ generation in the hour (production-based, no imports, no rooftop PV; the 2023 per-fuel
emissions are OpenNEM-derived estimates, see raw PROVENANCE); ewif from the hour's mean MW per
fuel tech × operational water consumption (coal black 1.925, brown 2.3, CCGT 0.78, OCGT /
reciprocating / distillate 0.125, gas steam 3.13, biomass 2.09, solar 0.004, wind, hydro and
battery 0 L/kWh). The last step (11:00 on 2023-01-24) averages the 7 intervals to 11:30 where
the data ends. Cross-check: the NSW1 and VIC1 hourly prices equal green-dcc's independent
AEMO hourly aggregation within {gap:.4f} AUD/MWh (all complete hours)."""
    return f"""NEM: price = mean of the two 30-minute regional reference prices (AEMO "price and
demand" files) of the intervals that start in the hour (AEMO labels an interval by its end).
Carbon = AEMO's daily CDEII emissions intensity of the region (emissions / sent-out energy of
the region's own generation: production-based, no imports) for the step's NEM calendar day —
**constant within each day**: no hourly fuel mix of these days is in the data. ewif = the
region's generation by fuel tech in the step's month (OpenNEM monthly energy) × the same
operational water factors as `australia` — **constant within each month**. Cross-check: every
hourly price equals the hourly means published with the data within {gap:.4f} AUD/MWh. Hourly
means at the market price cap (14,700 AUD/MWh in FY2019-20) are real."""


def _plant_provenance(sc: Scenario, specs, plant: PlantData | None) -> str:
    """The PROVENANCE.md section on the v1.1 plant columns; empty for a v1 scenario."""
    if plant is None:
        return ""

    def cell(value: float, fmt: str) -> str:
        return "–" if np.isnan(value) else format(value, fmt)

    rows = [
        [
            s.site_id,
            s.cooling,
            f"{plant.design_c[i]:.1f}",
            cell(plant.cooling_derate_per_c[i], ".4f"),
            cell(plant.cooling_min_fraction[i], ".3f"),
            f"{plant.full_load_it_kw[i]:.1f}",
            f"{plant.grid_limit_kw[i]:.0f}",
            cell(plant.design_wet_bulb_c[i], ".1f"),
            cell(plant.water_cap_l_per_day[i], ",.0f"),
        ]
        for i, s in enumerate(specs)
    ]
    table = _fmt_table(
        ["site", "cooling", "design dry bulb °C", "cooling_derate_per_c", "cooling_min_fraction",
         "full-load IT kW", "grid_limit_kw", "design wet bulb °C", "water_cap_l_per_day"],
        rows,
    )  # fmt: skip
    years = next(iter(design_conditions().values())).years
    return f"""
## Plant limits (model v1.1, docs/model.md §12)

`sites.csv` carries the optional columns `cooling_design_c`, `cooling_derate_per_c`,
`cooling_min_fraction`, `grid_limit_kw` and `water_cap_l_per_day`; there is no
`ppue_curve.csv` (every site keeps the quadratic pPUE). Sources and method: docs/data.md §4a.

{table}

- **Design dry bulb** (SOURCED method, computed): the city's annual 0.4 % cooling dry bulb
  (ASHRAE Handbook — Fundamentals ch. 14's definition: exceeded in 0.4 % of the hours) over
  the Open-Meteo hours of {years} (UTC years after this heatwave;
  `data_build/raw/design_conditions_8capitals_2021-2025.csv`), never below the
  {RATING_AMBIENT_C:g} °C rating ambient of air-cooled chillers (AHRI 550/590).
  `cooling_design_c` is given for the sites whose heat leaves through air
  ({", ".join(DRY_BULB_COOLING)}); tower sites (`wue_model` tower) reject heat by evaporation,
  which a dry-bulb derating cannot express, and give none.
- **Derating** (SOURCED): `cooling_derate_per_c` = the capacity ASHRAE 90.1-2010 Appendix G's
  air-cooled chiller curve (`AirCooled_Chiller_2010_PathA_CAPFT`, 1.000 at 6.67 °C chilled
  water and 35 °C) loses per °C over the 10 °C above the design dry bulb;
  `cooling_min_fraction` = what that curve keeps at its upper limit, {CAPFT_MAX_AMBIENT_C} °C.
- **Grid connection** (ESTIMATE by a sizing rule): the site's facility power at full load —
  every GPU powered, `u_max` busy on the class that draws the most power per GPU-second
  (`energy_j / gpu_s`) — at the pPUE of the design dry bulb, rounded up to 10 kW. IT power
  counts the GPUs only, as everywhere in these scenarios.
- **Water allowance** (ESTIMATE by a sizing rule; tower sites only): a day at that full load at
  the city's 0.4 % design wet bulb (the tower WUE of docs/model.md §4), rounded up to 100 L.
- None of these numbers was chosen to make a limit bind; which limits bind on the default day
  is measured by `thermoroute compare` (DECISIONS.md).
"""


def _fmt_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _provenance(sc: Scenario, specs, regions, stats, econ) -> str:
    """The scenario's PROVENANCE.md (generated, deterministic)."""
    period: Period = stats["period"]
    site_rows = [
        [
            s.site_id,
            s.name,
            s.grid_region,
            s.gpu,
            str(s.gpus),
            s.cooling,
            source + (f" ({s.note})" if s.note else ""),
        ]
        for s, source in zip(specs, stats["weather_sources"], strict=True)
    ]
    region_rows = [[r.region_id, r.name, f"{r.population:.0f}", r.basis] for r in regions]
    grid_rows = []
    for g in sorted({s.grid_region for s in specs}):
        i = [s.grid_region for s in specs].index(g)
        p, ci, w = sc.price_aud_per_mwh[i], sc.carbon_kg_per_kwh[i], sc.ewif_l_per_kwh[i]
        real = "NEM 5-min, real" if period.grid == "opennem-5min" else "AEMO 30-min, real"
        src = real if g in NEM_REGIONS else "ESTIMATE (see below)"
        grid_rows.append(
            [g, src, f"{p.mean():.1f}", f"{p.min():.1f} … {p.max():.1f}", f"{ci.mean():.3f}",
             f"{w.mean():.3f}"]
        )  # fmt: skip
    weather_rows = []
    for i, s in enumerate(specs):
        weather_rows.append(
            [s.site_id, f"{sc.dry_bulb_c[i].min():.1f}", f"{sc.dry_bulb_c[i].mean():.1f}",
             f"{sc.dry_bulb_c[i].max():.1f}", f"{sc.wet_bulb_c[i].mean():.1f}",
             f"{sc.wet_bulb_c[i].max():.1f}"]
        )  # fmt: skip
    est = "\n".join(
        f"- **{g}** (ESTIMATE): price — {e.price_note}; carbon — NGA 2024 {e.nga_key} "
        f"{nga_factor(e.nga_key):.2f} kg/kWh, flat; ewif — {e.mix_note}, weighted with the "
        "same water factors as the NEM, flat."
        for g, e in ESTIMATED_GRIDS.items()
        if g in {s.grid_region for s in specs}
    )
    cls_rows = [
        [
            sc.classes.class_id[c],
            sc.classes.model[c],
            f"{sc.classes.prompt_tokens[c]:.0f} / {sc.classes.output_tokens[c]:.0f}",
            "–" if sc.classes.deferrable[c] else f"{sc.classes.ttft_slo_ms[c]:.0f}",
            f"{CLASS_SPECS[c][4]:.0f}",
        ]
        for c in range(len(sc.classes))
    ]
    o = sc.objective
    return f"""# Scenario `{sc.name}` — provenance

Generated by `python -m data_build.build_scenarios` from `data_build/raw/` (see
`data_build/raw/PROVENANCE.md` for the upstream sources, commits and licences, and
`docs/data.md` for the methods). Do not edit by hand: re-run the build.

- Series: {period.steps} hourly steps {period.first.isoformat()} … {period.last.isoformat()}
  (NEM time, AEST): {period.label}.
  Default horizon (`scenario.toml`): 24 steps from {period.default_start.isoformat()}; any
  other window via `load_scenario(start=..., steps=...)`.
- {stats["sites"]} sites, {stats["regions"]} regions, 3 classes; {stats["gpus"]} GPUs
  ({stats["h100"]} H100-80GB, {stats["gpus"] - stats["h100"]} A100-80GB); Σ u_max·G =
  {stats["capacity"]:.1f} busy GPUs.

## Sites

{_fmt_table(["site", "name", "grid", "GPU", "GPUs", "cooling", "weather"], site_rows)}

All sites: `u_max` {U_MAX}, `max_wait_ms` 80 (≥ 384 GPUs) / 100 (256) / 120 (≤ 128),
`idle_w` 75 W (H100) / 63 W (A100), default pPUE curve (docs/model.md §3), `ref_gpu_s` = the
request-weighted mean `gpu_s` of the three classes at the site. Cooling parameters:
`tower` cycles of concentration {DEFAULT_CYCLES:g}; `economizer` threshold
{econ.threshold_c:g} °C wet bulb and slope {econ.slope:g} L/kWh/°C, calibrated so that the same
plant in Sydney's 2023 hourly weather (Open-Meteo) uses AWS's reported 0.10 L/kWh on average and
at most the evaporation bound 1.59 L/kWh (evaporative assist on {econ.sydney_hours_active:.1%} of
hours); `dry` uses no water.
{_plant_provenance(sc, specs, stats["plant"])}
## Regions

{_fmt_table(["region", "name", "population", "basis"], region_rows)}

## Classes and serving profiles

{
        _fmt_table(
            ["class", "model", "mean prompt / output tokens", "TTFT SLO ms", "decode batch"],
            cls_rows,
        )
    }

Token means from the Azure LLM inference trace 2023 (conversation → chat and batch, code →
code). `gpu_s`, `energy_j`, `prefill_ms` are the mean over the trace's requests of
`thermoroute.common.physics.serving.serving_profile` (Splitwise Llama-2-70B profile; 8B derived by
scaling). Forbidden (site, region, interactive class) pairs: {stats["forbidden_pairs"]} of
{stats["interactive_pairs"]}; every region reaches at least {stats["min_sites_per_region_class"]}
sites for every interactive class.

## Grid signals

{
        _fmt_table(
            [
                "grid",
                "source",
                "mean price AUD/MWh",
                "range",
                "mean kg CO2-e/kWh",
                "mean ewif L/kWh",
            ],
            grid_rows,
        )
    }

{_grid_method(period, stats["aemo_gap"])}

{est}

## Weather

Every site's dry and wet bulb are real hourly weather of the same hours as the prices:
Open-Meteo's historical API (ERA5 reanalysis, the grid cell at each capital's coordinates,
values instantaneous at each UTC hour). A step `[t, t+1h)` is the mean of the values at its
two ends (its middle), rounded to 0.01 °C. Wet bulb of each hour from its temperature,
relative humidity and surface pressure by the WMO psychrometer equation (WMO-No. 8, Annex
4.B; `thermoroute.common.physics.psychrometrics.wet_bulb_psychrometric`), averaged the same
way. A site away from the eight capitals (marked SHIFTED) takes its nearest capital's series,
moved by the difference of the two places' BOM climatology (2008–2017) in the step's month: daily
mean temperature for the dry bulb, mean 9 am / 3 pm wet bulb for the wet bulb (capped at the
dry bulb). Reanalysis cells smooth extremes: station maxima run higher (Melbourne 31 Jan
2020: ERA5 42.4 °C, Olympic Park 42.9 °C).

{
        _fmt_table(
            ["site", "min °C", "mean °C", "max °C", "mean wet bulb °C", "max wet bulb °C"],
            weather_rows,
        )
    }

## Demand

Interactive requests per region ∝ ABS population, shaped by the BurstGPT hour-of-day profile
in each region's local clock of the period ({_clock_text(period)}); chat:code = {
        stats["split"]["chat"]:.4f}:{stats["split"]["code"]:.4f}
(request counts of the Azure conversation and code traces). National mean interactive rate
{stats["national_mean_rps"]:.1f} req/s. Batch: per region ∝ population, per 24-step horizon.

Utilisation of Σ u_max·G with the cheapest allowed `gpu_s`: interactive peak
{stats["peak_interactive"]:.1%} (at {stats["peak_time"]}), trough {stats["min_interactive"]:.1%};
batch spread over 24 h {stats["batch"]:.1%}; peak + batch {stats["peak_total"]:.1%}.

## Objective weights

- `carbon_aud_per_kg` = {o.carbon_aud_per_kg:g}: Safeguard Mechanism cost-containment price
  AUD 75/t CO2-e (2023–24, Clean Energy Regulator).
- `water_aud_per_l` = {o.water_aud_per_l:g}: Sydney Water usage charge AUD 2.67/kL.
- `latency_aud_per_req_s` = {o.latency_aud_per_req_s:g}: the operator's revenue lost per
  request-second — 2.4 % of revenue per second of delay (Bing: +500 ms → −1.2 % revenue,
  Schurman & Brutlag 2009) × mean revenue per interactive request at Amazon Bedrock list
  prices (Llama 2 Chat 70B USD 1.95/2.56, Llama 3 8B USD 0.30/0.60 per million input/output
  tokens; 0.6644 USD/AUD). Valuing a waiting user's time at ABS average full-time earnings
  instead would give {WAGE_AUD_PER_S:.4f} AUD per request-second (see docs/data.md §8).
"""


# --------------------------------------------------------------------------------------------
# Writing


SCENARIOS = tuple(SCENARIO_SPECS)


def scenario_files(result: BuildResult) -> dict[str, str]:
    """Every file of the scenario directory: v1 files (default horizon in the TOML) + PROVENANCE."""
    full = result.scenario
    first = full.times.index(result.stats["period"].default_start)
    files = {"scenario.toml": scenario_toml(full.window(first, DEFAULT_STEPS))}
    for file, (header, rows) in scenario_tables(full).items():
        files[file] = csv_text(header, rows)
    files["PROVENANCE.md"] = result.provenance
    return files


def validate(directory: Path, full: Scenario) -> None:
    """Load the written directory and check servability of every 24-step window of the series."""
    load_scenario(directory)
    for first in range(full.steps - DEFAULT_STEPS + 1):
        problems = check_servable(full.window(first, DEFAULT_STEPS))
        if problems:
            raise ValueError(f"window starting {full.times[first]}: {problems[0]}")


def build_all(out: Path = PACKAGE_DIR, only: str | None = None) -> dict[str, BuildResult]:
    """Build, write and validate the scenarios into ``out/<name>/``."""
    results = {}
    for name in SCENARIOS:
        if only is not None and name != only:
            continue
        result = build_scenario(name)
        target = out / name
        files = scenario_files(result)
        write_directory_atomic(target, files)
        for file in files:  # temporary files are created 0600; package data must be readable
            (target / file).chmod(0o644)
        validate(target, result.scenario)
        results[name] = result
    if only is not None and not results:
        raise KeyError(f"unknown scenario {only!r} ({', '.join(SCENARIOS)})")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the embedded scenarios.")
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="parent directory")
    parser.add_argument("--only", choices=SCENARIOS, help="build one scenario")
    args = parser.parse_args(argv)
    for name, result in build_all(args.out, args.only).items():
        s = result.stats
        print(
            f"{name}: {s['sites']} sites, {s['regions']} regions, {s['gpus']} GPUs; "
            f"interactive peak {s['peak_interactive']:.1%} + batch {s['batch']:.1%} "
            f"= {s['peak_total']:.1%} of Σ u_max·G -> {args.out / name}"
        )


if __name__ == "__main__":
    main()


__all__ = ["build_all", "build_scenario", "main"]
