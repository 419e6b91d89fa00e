"""Build the embedded scenarios ``australia`` and ``australia-20`` from ``data_build/raw/``.

``python -m data_build.build_scenarios [--out DIR] [--only NAME]`` writes one v1 scenario
directory per scenario (``scenario.toml``, the eight CSV files and a ``PROVENANCE.md``) into
``DIR/<name>/`` — by default the package data directory ``common/scenarios/``. The build reads
nothing but ``data_build/raw/`` and is deterministic: a re-run reproduces every file byte for
byte. Methods and sources are documented in docs/data.md; this module's comments say why.

Time base: every time is NEM market time (AEST, UTC+10:00, no daylight saving). The series
cover the 168 hourly steps 2023-01-17T12:00+10:00 … 2023-01-24T11:00+10:00 (the span of the
real NEM 5-minute data); ``scenario.toml`` selects a 24-step default horizon starting
2023-01-18T00:00+10:00, and ``load_scenario(start=..., steps=...)`` can pick any other.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from common.physics.cooling import DEFAULT_PPUE_A, DEFAULT_PPUE_B, DEFAULT_PPUE_C
from common.physics.latency import great_circle_km, modelled_rtt_ms
from common.physics.psychrometrics import wet_bulb_stull
from common.physics.serving import idle_w, reference_gpu_s, serving_profile
from common.physics.water import DEFAULT_CYCLES, ewif_from_generation, wue_economizer
from common.scenario import (
    Classes,
    Objective,
    Regions,
    Scenario,
    Sites,
    allowed_pairs,
    step_times,
)
from common.scenario_io import (
    check_servable,
    csv_text,
    load_scenario,
    scenario_tables,
    scenario_toml,
    write_directory_atomic,
)

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw"
PACKAGE_DIR = HERE.parent / "common" / "scenarios"

NEM_TZ = timezone(timedelta(hours=10))
WEEK_START = datetime(2023, 1, 17, 12, 0, tzinfo=NEM_TZ)
WEEK_STEPS = 168
DEFAULT_START = datetime(2023, 1, 18, 0, 0, tzinfo=NEM_TZ)
DEFAULT_STEPS = 24
#: The BOM daily observations end in 2017: the same calendar dates of 2017 stand in for 2023.
BOM_YEAR = 2017
BOM_FIRST_DAY = date(2017, 1, 14)  # first day in raw/weatherAUS_2017-01-14_to_2017-01-27.csv
BOM_LAST_DAY = date(2017, 1, 27)

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

#: January (daylight-saving) UTC offset of local clocks, by state.
JANUARY_UTC_OFFSET_H = {
    "NSW": 11.0,
    "ACT": 11.0,
    "VIC": 11.0,
    "TAS": 11.0,
    "QLD": 10.0,
    "SA": 10.5,
    "NT": 9.5,
    "WA": 8.0,
}


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
    weather: str  # "openmeteo:<zone>" or "bom:<weatherAUS location>"
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
        c("Sydney", "syd", "H100", 512, "economizer", "openmeteo:AU-NSW"),
        c("Melbourne", "mel", "H100", 384, "economizer", "openmeteo:AU-VIC"),
        c("Brisbane", "bne", "A100", 384, "tower", "bom:Brisbane"),
        c("Perth", "per", "A100", 256, "economizer", "bom:Perth"),
        c("Adelaide", "adl", "H100", 256, "tower", "bom:Adelaide"),
        c("Canberra", "cbr", "H100", 256, "economizer", "bom:Canberra"),
        c("Hobart", "hba", "A100", 128, "dry", "bom:Hobart"),
        c("Darwin", "drw", "A100", 128, "tower", "bom:Darwin"),
    ]


def _regional_sites(cities: dict[str, dict[str, str]]) -> list[SiteSpec]:
    def city(name: str) -> tuple[float, float]:
        return float(cities[name]["lat"]), float(cities[name]["lon"])

    gc, nc, gl = city("Gold Coast"), city("Newcastle"), city("Geelong")
    tv, asp = city("Townsville"), city("Alice Springs")
    return [
        SiteSpec("ool", "Gold Coast", *gc, "QLD", "QLD1", "H100", 128, "tower", "bom:GoldCoast"),
        SiteSpec("ntl", "Newcastle", *nc, "NSW", "NSW1", "A100", 128, "tower", "bom:Newcastle"),
        SiteSpec("tsv", "Townsville", *tv, "QLD", "QLD1", "A100", 64, "tower", "bom:Townsville"),
        SiteSpec(
            "asp", "Alice Springs", *asp, "NT", "NT-other", "H100", 64, "dry", "bom:AliceSprings"
        ),
        SiteSpec(
            "cns", "Cairns", -16.9186, 145.7781, "QLD", "QLD1", "A100", 64, "tower", "bom:Cairns"
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
            "bom:Launceston",
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
            "bom:Wollongong",
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
            "bom:Williamtown",
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
            "bom:Melbourne",
            "weather proxy: BOM Melbourne (Olympic Park); no Geelong/Avalon station in the data",
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
            "bom:SydneyAirport",
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
            "bom:MelbourneAirport",
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
            "bom:PerthAirport",
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

#: Station whose same-day observations fill a variable a location lacks for the whole window.
BOM_DONORS = {"Newcastle": "Williamtown"}
#: Coordinates of the weatherAUS locations that are not a city of raw/cities.csv.
BOM_COORDS = {
    "SydneyAirport": (-33.9461, 151.1772),
    "MelbourneAirport": (-37.6690, 144.8410),
    "PerthAirport": (-31.9403, 115.9669),
    "Williamtown": (-32.7950, 151.8344),
    "Cairns": (-16.9186, 145.7781),
    "Launceston": (-41.4332, 147.1441),
    "Wollongong": (-34.4278, 150.8931),
}
BOM_STATE = {
    "Sydney": "NSW",
    "SydneyAirport": "NSW",
    "Newcastle": "NSW",
    "Williamtown": "NSW",
    "Wollongong": "NSW",
    "Canberra": "ACT",
    "Melbourne": "VIC",
    "MelbourneAirport": "VIC",
    "Brisbane": "QLD",
    "GoldCoast": "QLD",
    "Townsville": "QLD",
    "Cairns": "QLD",
    "Adelaide": "SA",
    "Perth": "WA",
    "PerthAirport": "WA",
    "Hobart": "TAS",
    "Launceston": "TAS",
    "Darwin": "NT",
    "AliceSprings": "NT",
}

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


def week_times() -> tuple[datetime, ...]:
    return step_times(WEEK_START, 1.0, WEEK_STEPS)


@dataclass(frozen=True)
class GridSeries:
    """Hourly grid signals over the week, each shape (168,)."""

    price: np.ndarray
    carbon: np.ndarray
    ewif: np.ndarray
    intervals: np.ndarray  # 5-min intervals averaged per hour (NEM) or 0 (estimated)


def nem_hourly(raw: Path = RAW) -> dict[str, GridSeries]:
    """Hourly NEM signals from the 5-minute data.

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
    index = {t: k for k, t in enumerate(week_times())}
    sums: dict[str, dict[str, np.ndarray]] = {}
    for row in read_csv(raw / "nem_5min_2023-01-17T1200_to_2023-01-24T1130.csv"):
        region = row["region"]
        when = datetime.fromisoformat(row["timestamp"])
        hour = when.replace(minute=0)
        k = index[hour]
        acc = sums.setdefault(
            region,
            {
                "price": np.zeros(WEEK_STEPS),
                "emissions": np.zeros(WEEK_STEPS),
                "generation": np.zeros(WEEK_STEPS),
                "count": np.zeros(WEEK_STEPS),
                "fuels": np.zeros((WEEK_STEPS, len(FUELS))),
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


def nem_price_shape(nem: dict[str, GridSeries]) -> np.ndarray:
    """Median diurnal shape of the NEM-average price over the week, by AEST hour, mean 1."""
    mean = np.mean([nem[r].price for r in NEM_REGIONS], axis=0)
    hours = np.array([t.hour for t in week_times()])
    by_hour = np.array([np.median(mean[hours == h]) for h in range(24)])
    return by_hour / by_hour.mean()


def estimated_grid(name: str, nem: dict[str, GridSeries], raw: Path = RAW) -> GridSeries:
    """Grid signals of WEM / NT systems from documented facts (flat carbon and ewif)."""
    spec = ESTIMATED_GRIDS[name]
    shape = nem_price_shape(nem)
    aest_hour = np.array([t.hour + 0.5 for t in week_times()])  # mid-step
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
        carbon=np.full(WEEK_STEPS, nga_factor(spec.nga_key, raw)),
        ewif=np.full(WEEK_STEPS, ewif),
        intervals=np.zeros(WEEK_STEPS),
    )


def check_against_aemo_hourly(nem: dict[str, GridSeries], raw: Path = RAW) -> float:
    """Largest |difference| [AUD/MWh] between our NSW/VIC hourly prices and green-dcc's."""
    worst = 0.0
    for zone, region in (("NSW", "NSW1"), ("VIC", "VIC1")):
        rows = read_csv(raw / f"aemo_hourly_price_AU-{zone}_2023-01-17_to_2023-01-24.csv")
        times = week_times()
        for k, row in enumerate(rows):
            when = datetime.fromisoformat(row["Datetime"]).replace(tzinfo=NEM_TZ)
            if when != times[k]:
                raise ValueError(f"AEMO hourly file out of step at {row['Datetime']}")
            if nem[region].intervals[k] == 12:  # the last, partial hour differs by design
                worst = max(worst, abs(float(row["Price (USD/MWh)"]) - nem[region].price[k]))
    return worst


# --------------------------------------------------------------------------------------------
# Weather


def _magnus_dew_point(t_c: np.ndarray, rh_pct: np.ndarray) -> np.ndarray:
    """Dew point [°C] from temperature and RH (Magnus form, Alduchov & Eskridge 1996)."""
    a, b = 17.625, 243.04
    gamma = np.log(np.clip(rh_pct, 1.0, 100.0) / 100.0) + a * t_c / (b + t_c)
    return b * gamma / (a - gamma)


def _magnus_rh(t_c: np.ndarray, dew_c: np.ndarray) -> np.ndarray:
    a, b = 17.625, 243.04
    return 100.0 * np.exp(a * dew_c / (b + dew_c) - a * t_c / (b + t_c))


def sunrise_local_h(lat: float, lon: float, utc_offset_h: float, day: date) -> float:
    """Local clock hour of sunrise (NOAA general solar position equations)."""
    n = day.timetuple().tm_yday
    g = 2.0 * math.pi / 365.0 * (n - 1)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    phi = math.radians(lat)
    cos_ha = math.cos(math.radians(90.833)) / (math.cos(phi) * math.cos(decl)) - math.tan(
        phi
    ) * math.tan(decl)
    ha = math.degrees(math.acos(max(-1.0, min(1.0, cos_ha))))
    utc_minutes = 720.0 - 4.0 * (lon + ha) - eqtime
    return utc_minutes / 60.0 + utc_offset_h


def pchip(x: np.ndarray, y: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch & Carlson 1980).

    Shape-preserving: no overshoot, extrema only at the data points — the property wanted
    for temperatures between a minimum, observations and a maximum.
    """
    x, y, xi = (np.asarray(v, dtype=float) for v in (x, y, xi))
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0], d[-1] = 0.0, 0.0
    k = np.clip(np.searchsorted(x, xi, side="right") - 1, 0, len(x) - 2)
    t = (xi - x[k]) / h[k]
    h00 = (1 + 2 * t) * (1 - t) ** 2
    h10 = t * (1 - t) ** 2
    h01 = t * t * (3 - 2 * t)
    h11 = t * t * (t - 1)
    return h00 * y[k] + h10 * h[k] * d[k] + h01 * y[k + 1] + h11 * h[k] * d[k + 1]


BOM_VARS = ("MinTemp", "MaxTemp", "Temp9am", "Temp3pm", "Humidity9am", "Humidity3pm")


def bom_daily(raw: Path = RAW) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Daily observations per location over :data:`BOM_FIRST_DAY` … :data:`BOM_LAST_DAY`, gaps
    filled.

    Filling: a variable missing on every day of the window is taken from the donor station
    (:data:`BOM_DONORS`): the 3 pm temperature as the location's own maximum minus the donor's
    (max − 3 pm) difference of that day, the 3 pm humidity from the donor's 3 pm dew point at
    the location's 3 pm temperature. Any other gap is interpolated linearly between the
    neighbouring days of the same variable (nearest day at the ends).

    Returns
    -------
    (dict, list of str)
        Location → variable → values per day, and a description of every fill made.
    """
    days = (BOM_LAST_DAY - BOM_FIRST_DAY).days + 1
    table: dict[str, dict[str, np.ndarray]] = defaultdict(
        lambda: {v: np.full(days, np.nan) for v in BOM_VARS}
    )
    for row in read_csv(raw / "weatherAUS_2017-01-14_to_2017-01-27.csv"):
        k = (date.fromisoformat(row["Date"]) - BOM_FIRST_DAY).days
        for v in BOM_VARS:
            if row[v] not in ("", "NA"):
                table[row["Location"]][v][k] = float(row[v])
    notes = []
    for loc, donor in BOM_DONORS.items():
        own, don = table[loc], table[donor]
        if np.all(np.isnan(own["Temp3pm"])):
            own["Temp3pm"] = own["MaxTemp"] - (don["MaxTemp"] - don["Temp3pm"])
            notes.append(
                f"{loc}: Temp3pm missing on all days; MaxTemp − ({donor} MaxTemp − Temp3pm)"
            )
        if np.all(np.isnan(own["Humidity3pm"])):
            dew = _magnus_dew_point(don["Temp3pm"], don["Humidity3pm"])
            own["Humidity3pm"] = np.minimum(_magnus_rh(own["Temp3pm"], dew), 100.0)
            notes.append(f"{loc}: Humidity3pm missing on all days; {donor}'s 3 pm dew point")
    x = np.arange(days)
    for loc in sorted(table):
        for v in BOM_VARS:
            values = table[loc][v]
            bad = np.isnan(values)
            if bad.all():
                raise ValueError(f"{loc}: no {v} in the window and no donor station")
            if bad.any():
                dates = ", ".join(str(BOM_FIRST_DAY + timedelta(days=int(k))) for k in x[bad])
                notes.append(f"{loc}: {v} interpolated on {dates}")
                values[bad] = np.interp(x[bad], x[~bad], values[~bad])
    return dict(table), notes


def reconstruct_hourly(
    daily: dict[str, np.ndarray],
    lat: float,
    lon: float,
    utc_offset_h: float,
    hours: np.ndarray,
    first_day: date = BOM_FIRST_DAY,
) -> tuple[np.ndarray, np.ndarray]:
    """Dry bulb [°C] and RH [%] at ``hours`` (local clock, since 00:00 of the first day).

    Temperature: a monotone cubic through, for each day, the minimum at sunrise, the 9 am
    observation, the maximum (at 15:00 when the 3 pm observation is within 0.5 °C of it,
    otherwise at 13:00 followed by the 3 pm observation — a sea breeze or cool change), and
    three night points (18, 21, 24 h) on the cosine from the 3 pm value down to the next
    day's minimum at sunrise (the "WAVE" night segment of Reicosky et al. 1989). Dew point is
    interpolated linearly between the 9 am and 3 pm observations (from T and RH by Magnus), and
    RH follows from the hourly temperature and dew point.
    """
    n = len(daily["MinTemp"])
    tmin = np.minimum(daily["MinTemp"], np.minimum(daily["Temp9am"], daily["Temp3pm"]))
    tmax = np.maximum(daily["MaxTemp"], np.maximum(daily["Temp9am"], daily["Temp3pm"]))
    t9, t15 = daily["Temp9am"], daily["Temp3pm"]
    sunrise = [
        sunrise_local_h(lat, lon, utc_offset_h, first_day + timedelta(days=k)) for k in range(n)
    ]
    xs: list[float] = []
    ys: list[float] = []
    for k in range(n):
        base = 24.0 * k
        xs += [base + sunrise[k], base + 9.0]
        ys += [tmin[k], t9[k]]
        if tmax[k] - t15[k] > 0.5:
            xs += [base + 13.0, base + 15.0]
            ys += [tmax[k], t15[k]]
            end = t15[k]
        else:
            xs.append(base + 15.0)
            ys.append(tmax[k])
            end = tmax[k]
        if k + 1 < n:
            rise = 24.0 * (k + 1) + sunrise[k + 1]
            for h in (18.0, 21.0, 24.0):
                frac = (h - 15.0) / (rise - base - 15.0)
                ys.append(tmin[k + 1] + (end - tmin[k + 1]) * (1 + math.cos(math.pi * frac)) / 2)
                xs.append(base + h)
    dry = pchip(np.array(xs), np.array(ys), hours)
    dew_x = np.ravel([[24.0 * k + 9.0, 24.0 * k + 15.0] for k in range(n)])
    dew_y = np.ravel(
        np.column_stack(
            [
                _magnus_dew_point(t9, daily["Humidity9am"]),
                _magnus_dew_point(t15, daily["Humidity3pm"]),
            ]
        )
    )
    dew = np.minimum(np.interp(hours, dew_x, dew_y), dry)
    rh = np.clip(_magnus_rh(dry, dew), 5.0, 100.0)
    return dry, rh


def bom_weather(
    location: str,
    daily: dict[str, dict[str, np.ndarray]],
    cities_by_bom: dict[str, tuple[float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly dry bulb and RH at the middle of every week step, from 2017 daily observations."""
    lat, lon = cities_by_bom.get(location) or BOM_COORDS[location]
    offset = JANUARY_UTC_OFFSET_H[BOM_STATE[location]]
    # Hours since local midnight of BOM_FIRST_DAY, at the step middles, for the same calendar
    # dates and clock times in 2017 as in the 2023 week.
    first = datetime(BOM_YEAR, WEEK_START.month, WEEK_START.day, WEEK_START.hour, tzinfo=NEM_TZ)
    origin = datetime(BOM_FIRST_DAY.year, BOM_FIRST_DAY.month, BOM_FIRST_DAY.day, tzinfo=NEM_TZ)
    start_h = (first - origin).total_seconds() / 3600.0 + (offset - 10.0)
    hours = start_h + np.arange(WEEK_STEPS) + 0.5
    return reconstruct_hourly(daily[location], lat, lon, offset, hours)


def openmeteo_hourly(raw: Path = RAW) -> dict[str, dict[datetime, tuple[float, float]]]:
    """Open-Meteo hourly (T, RH) per zone keyed by aware time.

    The file's times are regular hours (no repeated or missing hour at the DST changes) with
    a constant +11:00 offset in its header; in January that is AEDT under either reading.
    """
    tz = timezone(timedelta(hours=11))
    out: dict[str, dict[datetime, tuple[float, float]]] = defaultdict(dict)
    for row in read_csv(raw / "openmeteo_hourly_AU-NSW_AU-VIC_2023.csv"):
        when = datetime.fromisoformat(row["time_local"]).replace(tzinfo=tz)
        out[row["zone"]][when] = (
            float(row["temperature_2m_c"]),
            float(row["relative_humidity_2m_pct"]),
        )
    return dict(out)


def openmeteo_weather(zone: str, om) -> tuple[np.ndarray, np.ndarray]:
    """Dry bulb and RH at the middle of every week step: mean of the two bounding hours."""
    series = om[zone]
    dry, rh = np.empty(WEEK_STEPS), np.empty(WEEK_STEPS)
    for k, t in enumerate(week_times()):
        a, b = series[t], series[t + timedelta(hours=1)]
        dry[k], rh[k] = (a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0
    return dry, rh


def reconstruction_error(zone: str, om, first_day: date = date(2023, 1, 14)) -> dict[str, float]:
    """Test the daily-to-hourly reconstruction on a real hourly series.

    Daily statistics are taken from Open-Meteo's hourly Sydney or Melbourne series the way BOM
    defines them (minimum over the 24 h to 9 am, maximum over the 24 h from 9 am, 9 am and 3 pm
    values, local clock = +11:00 in January); the hourly series is then rebuilt with
    :func:`reconstruct_hourly` and compared with the real one over the 168 week steps.

    Returns
    -------
    dict
        RMSE and largest error of dry bulb and of wet bulb [°C].
    """
    tz = timezone(timedelta(hours=11))
    series = om[zone]
    days = (BOM_LAST_DAY - BOM_FIRST_DAY).days + 1
    daily = {v: np.empty(days) for v in BOM_VARS}
    for k in range(days):
        day = datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz) + timedelta(k)
        before = [series[day + timedelta(hours=h)][0] for h in range(-15, 10)]
        after = [series[day + timedelta(hours=h)][0] for h in range(9, 34)]
        daily["MinTemp"][k], daily["MaxTemp"][k] = min(before), max(after)
        (daily["Temp9am"][k], daily["Humidity9am"][k]) = series[day + timedelta(hours=9)]
        (daily["Temp3pm"][k], daily["Humidity3pm"][k]) = series[day + timedelta(hours=15)]
    lat, lon = {"AU-NSW": (-33.848858, 151.19551), "AU-VIC": (-37.785587, 144.93976)}[zone]
    origin = datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz)
    start_h = (WEEK_START - origin).total_seconds() / 3600.0
    hours = start_h + np.arange(WEEK_STEPS) + 0.5
    dry, rh = reconstruct_hourly(daily, lat, lon, 11.0, hours, first_day)
    true_dry, true_rh = openmeteo_weather(zone, om)
    wet, true_wet = wet_bulb_stull(dry, rh), wet_bulb_stull(true_dry, true_rh)
    return {
        "dry_rmse": float(np.sqrt(np.mean((dry - true_dry) ** 2))),
        "dry_max": float(np.abs(dry - true_dry).max()),
        "wet_rmse": float(np.sqrt(np.mean((wet - true_wet) ** 2))),
        "wet_max": float(np.abs(wet - true_wet).max()),
    }


@dataclass(frozen=True)
class EconomizerCalibration:
    threshold_c: float
    slope: float
    sydney_hours_active: float
    melbourne_annual_wue: float
    sydney_max_wet_bulb: float


def calibrate_economizer(om) -> EconomizerCalibration:
    """Economizer parameters from AWS's Sydney WUE and the evaporation bound.

    Two conditions on Sydney's 2023 hourly wet bulb fix ``(Tw0, k)``: the annual mean of
    ``k·max(0, Tw − Tw0)`` equals AWS's 0.10 L/kWh, and the WUE at the year's highest wet bulb
    equals the latent-heat bound 1.59 L/kWh (all heat rejected by evaporation). Solved by
    bisection on ``Tw0`` (the ratio mean excess / peak excess falls monotonically in ``Tw0``).
    """

    def wet(zone: str) -> np.ndarray:
        values = [v for t, v in om[zone].items() if t.year == 2023]
        arr = np.array(values)
        return wet_bulb_stull(arr[:, 0], arr[:, 1])

    syd, mel = wet("AU-NSW"), wet("AU-VIC")
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
        melbourne_annual_wue=float(wue_economizer(mel, threshold, slope).mean()),
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


def local_shape(shape: np.ndarray, utc_offset_h: float) -> np.ndarray:
    """Mean of the hour-of-day ``shape`` over each week step in a local clock, shape (168,).

    Step ``[t, t+1)`` (AEST) is ``[t + o − 10, t + o − 9)`` on a clock at UTC+``o``; the
    piecewise-constant hourly shape is averaged over that interval (two bins for half-hour
    offsets such as South Australia's +10:30).
    """
    out = np.empty(WEEK_STEPS)
    for k, t in enumerate(week_times()):
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


def build_scenario(name: str, raw: Path = RAW) -> BuildResult:
    """Assemble the full-week scenario ``name`` (``australia`` or ``australia-20``)."""
    cities = {r["city"]: r for r in read_csv(raw / "cities.csv")}
    if name == "australia":
        specs = _capital_sites(cities)
        regions = regions_for("capitals", raw)
    elif name == "australia-20":
        specs = _capital_sites(cities) + _regional_sites(cities)
        regions = regions_for("all", raw)
    else:
        raise KeyError(f"unknown scenario {name!r} (australia, australia-20)")
    S, R, C, T = len(specs), len(regions), len(CLASS_SPECS), WEEK_STEPS

    # --- grid signals per site
    nem = nem_hourly(raw)
    grids = dict(nem)
    for g in ESTIMATED_GRIDS:
        grids[g] = estimated_grid(g, nem, raw)
    aemo_gap = check_against_aemo_hourly(nem, raw)
    # OpenNEM rounds 5-minute prices to 4 significant figures: hourly means agree within a few
    # hundredths of a dollar.
    if aemo_gap > 0.05:
        raise ValueError(f"NEM hourly prices differ from AEMO hourly by {aemo_gap} AUD/MWh")

    # --- weather per site
    om = openmeteo_hourly(raw)
    daily, fills = bom_daily(raw)
    cities_by_bom = {
        r["weatherAUS_location"]: (float(r["lat"]), float(r["lon"]))
        for r in cities.values()
        if r["weatherAUS_location"]
    }
    dry = np.empty((S, T))
    rh = np.empty((S, T))
    for i, s in enumerate(specs):
        source, key = s.weather.split(":")
        if source == "openmeteo":
            dry[i], rh[i] = openmeteo_weather(key, om)
        else:
            dry[i], rh[i] = bom_weather(key, daily, cities_by_bom)
    dry = np.round(dry, 2)
    wet = np.round(wet_bulb_stull(dry, rh), 2)
    econ = calibrate_economizer(om)
    recon = {z: reconstruction_error(z, om) for z in ("AU-NSW", "AU-VIC")}

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
    diurnal = np.array([local_shape(shape, JANUARY_UTC_OFFSET_H[r.state]) for r in regions])
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
            demand[:, c].sum() * 3600.0 * DEFAULT_STEPS / WEEK_STEPS
            if not deferrable[c]
            else batch[:, c].sum()
            for c in range(C)
        ]
    )
    sites = Sites(
        site_id=tuple(s.site_id for s in specs),
        name=tuple(s.name for s in specs),
        lat=s_lat,
        lon=s_lon,
        grid_region=tuple(s.grid_region for s in specs),
        gpus=gpus,
        idle_w=np.array([idle_w(s.gpu) for s in specs]),
        u_max=np.full(S, U_MAX),
        max_wait_ms=max_wait,
        ref_gpu_s=np.array([round(reference_gpu_s(gpu_s[i], request_share), 6) for i in range(S)]),
        ppue_a=np.full(S, DEFAULT_PPUE_A),
        ppue_b=np.full(S, DEFAULT_PPUE_B),
        ppue_c=np.full(S, DEFAULT_PPUE_C),
        wue_model=tuple(s.cooling for s in specs),
        wue_p1=np.array([p1[s.cooling] for s in specs]),
        wue_p2=np.array([econ.slope if s.cooling == "economizer" else 0.0 for s in specs]),
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
    times = week_times()
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
    stats["reconstruction"] = recon
    return BuildResult(scenario, _provenance(scenario, specs, regions, stats, fills, econ), stats)


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


def _fmt_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _provenance(sc: Scenario, specs, regions, stats, fills, econ) -> str:
    """The scenario's PROVENANCE.md (generated, deterministic)."""
    site_rows = [
        [
            s.site_id,
            s.name,
            s.grid_region,
            s.gpu,
            str(s.gpus),
            s.cooling,
            s.weather.replace("openmeteo:", "Open-Meteo 2023 ").replace("bom:", "BOM 2017 ")
            + (f" ({s.note})" if s.note else ""),
        ]
        for s in specs
    ]
    region_rows = [[r.region_id, r.name, f"{r.population:.0f}", r.basis] for r in regions]
    grid_rows = []
    for g in sorted({s.grid_region for s in specs}):
        i = [s.grid_region for s in specs].index(g)
        p, ci, w = sc.price_aud_per_mwh[i], sc.carbon_kg_per_kwh[i], sc.ewif_l_per_kwh[i]
        src = "NEM 5-min, real" if g in NEM_REGIONS else "ESTIMATE (see below)"
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
    fills_text = "\n".join(f"- {f}" for f in fills) or "- none"
    o = sc.objective
    return f"""# Scenario `{sc.name}` — provenance

Generated by `python -m data_build.build_scenarios` from `data_build/raw/` (see
`data_build/raw/PROVENANCE.md` for the upstream sources, commits and licences, and
`docs/data.md` for the methods). Do not edit by hand: re-run the build.

- Series: 168 hourly steps 2023-01-17T12:00+10:00 … 2023-01-24T11:00+10:00 (NEM time, AEST).
  Default horizon (`scenario.toml`): 24 steps from 2023-01-18T00:00+10:00; any other window
  via `load_scenario(start=..., steps=...)`.
- {stats["sites"]} sites, {stats["regions"]} regions, 3 classes; {stats["gpus"]} GPUs
  ({stats["h100"]} H100-80GB, {stats["gpus"] - stats["h100"]} A100-80GB); Σ u_max·G =
  {stats["capacity"]:.1f} busy GPUs.

## Sites

{_fmt_table(["site", "name", "grid", "GPU", "GPUs", "cooling", "weather"], site_rows)}

All sites: `u_max` {U_MAX}, `max_wait_ms` 80 (≥ 384 GPUs) / 100 (256) / 120 (≤ 128),
`idle_w` 75 W (H100) / 63 W (A100), default pPUE curve (MODEL.md §3), `ref_gpu_s` = the
request-weighted mean `gpu_s` of the three classes at the site. Cooling parameters:
`tower` cycles of concentration {DEFAULT_CYCLES:g}; `economizer` threshold
{econ.threshold_c:g} °C wet bulb and slope {econ.slope:g} L/kWh/°C, calibrated so that the same
plant in Sydney's 2023 hourly weather (Open-Meteo) uses AWS's reported 0.10 L/kWh on average and
at most the evaporation bound 1.59 L/kWh (evaporative assist on {econ.sydney_hours_active:.1%} of
hours); the same plant in Melbourne's 2023 weather gives {econ.melbourne_annual_wue:.3f} L/kWh
(AWS reports 0.06); `dry` uses no water.

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
`common.physics.serving.serving_profile` (Splitwise Llama-2-70B profile; 8B derived by
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

NEM: hourly means of the 5-minute regional reference price; carbon = Σ emissions / Σ
generation in the hour (production-based, no imports, no rooftop PV; the 2023 per-fuel
emissions are OpenNEM-derived estimates, see raw PROVENANCE); ewif from the hour's mean MW per
fuel tech × operational water consumption (coal black 1.925, brown 2.3, CCGT 0.78, OCGT /
reciprocating / distillate 0.125, gas steam 3.13, biomass 2.09, solar 0.004, wind, hydro and
battery 0 L/kWh). The last step (11:00 on 2023-01-24) averages the 7 intervals to 11:30 where
the data ends. Cross-check: the NSW1 and VIC1 hourly prices equal green-dcc's independent
AEMO hourly aggregation within {stats["aemo_gap"]:.4f} AUD/MWh (all complete hours).

{est}

## Weather

Sydney and Melbourne (`openmeteo`): real 2023 hourly temperature and RH (Open-Meteo, ERA5),
times +11:00 → +10:00, each step the mean of its two bounding hours. All others (`bom`):
hourly values reconstructed from the BOM daily observations of the same calendar days of
2017 (min/max, 9 am / 3 pm temperature and humidity), evaluated at the middle of each step.
Wet bulb: Stull (2011). Check of the reconstruction on the real 2023 hourly series (daily
statistics taken from it the BOM way, then rebuilt): RMSE dry bulb
{stats["reconstruction"]["AU-NSW"]["dry_rmse"]:.2f} °C (Sydney) /
{stats["reconstruction"]["AU-VIC"]["dry_rmse"]:.2f} °C (Melbourne), wet bulb
{stats["reconstruction"]["AU-NSW"]["wet_rmse"]:.2f} / {
        stats["reconstruction"]["AU-VIC"]["wet_rmse"]:.2f} °C.
Gaps filled:

{fills_text}

{
        _fmt_table(
            ["site", "min °C", "mean °C", "max °C", "mean wet bulb °C", "max wet bulb °C"],
            weather_rows,
        )
    }

## Demand

Interactive requests per region ∝ ABS population, shaped by the BurstGPT hour-of-day profile
in each region's local January clock (AEDT +11 NSW/ACT/VIC/TAS, AEST +10 QLD, ACDT +10:30 SA,
ACST +9:30 NT, AWST +8 WA); chat:code = {stats["split"]["chat"]:.4f}:{stats["split"]["code"]:.4f}
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


SCENARIOS = ("australia", "australia-20")


def scenario_files(result: BuildResult) -> dict[str, str]:
    """Every file of the scenario directory: v1 files (default horizon in the TOML) + PROVENANCE."""
    full = result.scenario
    first = full.times.index(DEFAULT_START)
    files = {"scenario.toml": scenario_toml(full.window(first, DEFAULT_STEPS))}
    for file, (header, rows) in scenario_tables(full).items():
        files[file] = csv_text(header, rows)
    files["PROVENANCE.md"] = result.provenance
    return files


def validate(directory: Path, full: Scenario) -> None:
    """Load the written directory and check servability of every 24-step window of the week."""
    load_scenario(directory)
    for first in range(WEEK_STEPS - DEFAULT_STEPS + 1):
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
