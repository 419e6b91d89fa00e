"""Copy and trim the shared reference data into ``data_build/raw/`` (run once, by hand).

``python -m data_build.trim_raw --source /work/shared/data`` reproduces every file in
``data_build/raw/`` except ``PROVENANCE.md`` (hand-written). Only the rows and columns the
scenario build uses are kept; see ``raw/PROVENANCE.md`` for what was trimmed and why. The build
itself (:mod:`data_build.build_scenarios`) reads only ``raw/`` and never the shared directory.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from data_build.periods import PERIODS

RAW = Path(__file__).resolve().parent / "raw"

#: NEM week used by the January 2023 scenarios: the 168 hourly steps 2023-01-17T12:00 …
#: 2023-01-24T11:00 (+10:00) need the 5-min rows from 12:00 on the 17th to the end of the file
#: (11:30 on the 24th).
NEM_FIRST = "2023-01-17T12:00:00+10:00"
NEM_COLUMNS = (
    "timestamp",
    "region",
    "price_aud_per_mwh",
    "generation_mw",
    "emissions_tco2e",
    "battery_discharging_mw",
    "bioenergy_biomass_mw",
    "coal_black_mw",
    "coal_brown_mw",
    "distillate_mw",
    "gas_ccgt_mw",
    "gas_ocgt_mw",
    "gas_recip_mw",
    "gas_steam_mw",
    "gas_wcmg_mw",
    "hydro_mw",
    "solar_utility_mw",
    "wind_mw",
)
PRICE_FIRST, PRICE_LAST = "2023-01-17 12:00:00", "2023-01-24 11:00:00"
OPENMETEO_FILE = "weather/openmeteo_8capitals_hourly_2020-01_2026-08.csv.gz"
OPENMETEO_COLUMNS = (
    "time_utc",
    "city",
    "temperature_2m_c",
    "relative_humidity_2m_pct",
    "surface_pressure_hpa",
)
#: The economizer is calibrated on a whole year of Sydney's weather (UTC calendar year 2023).
CALIBRATION_CITY, CALIBRATION_YEAR = "Sydney", "2023"
#: Cooling design conditions of each capital (model v1.1 plant data of the heatwave scenario):
#: ASHRAE's annual percentiles of the hourly record over five whole UTC years after the 2020
#: heatwave, so the days the scenario replays are not part of the design statistics.
DESIGN_YEARS = ("2021", "2025")
DESIGN_FILE = "design_conditions_8capitals_2021-2025.csv"
SEASONS = "grid_nem/seasons"
AEMO_30MIN_FILE = (
    f"{SEASONS}/nem_price_demand_30min_5regions_fullmonths"
    "_2017-02_2019-01_2020-01_2020-02_2020-07.csv"
)
AEMO_30MIN_COLUMNS = (
    "region",
    "interval_start_nem",
    "interval_end_nem",
    "rrp_aud_per_mwh",
    "total_demand_mw",
)
AEMO_HOURLY_COLUMNS = ("period", "hour_start_nem", "region", "rrp_aud_per_mwh_mean")
CDEII_COLUMNS = (
    "date_nem",
    "regionid",
    "total_sent_out_energy_mwh",
    "total_emissions_tco2e",
    "co2e_intensity_index_tco2e_per_mwh",
)
MONTHLY_FUELS = (
    "battery_discharging_gwh",
    "bioenergy_biomass_gwh",
    "coal_black_gwh",
    "coal_brown_gwh",
    "distillate_gwh",
    "gas_ccgt_gwh",
    "gas_ocgt_gwh",
    "gas_recip_gwh",
    "gas_steam_gwh",
    "gas_wcmg_gwh",
    "hydro_gwh",
    "solar_utility_gwh",
    "wind_gwh",
)

COPIED = (
    "geo/cities.csv",
    "geo/distances_and_modelled_rtt.csv",
    "factors/nga_scope2_electricity_factors.csv",
    "factors/water_intensity_by_generation.csv",
    "factors/datacenter_wue_reference.csv",
    "llm_traces/AzureLLMInferenceTrace_conv_2023.csv",
    "llm_traces/AzureLLMInferenceTrace_code_2023.csv",
    "llm_traces/burstgpt1_derived_sessions_by_hour_of_day.csv",
    "weather/climatology_monthly_by_city_from_weatherAUS.csv",
)


def _filter(
    source: Path,
    target: Path,
    columns: Sequence[str],
    keep: Callable[[dict[str, str]], bool],
) -> int:
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        rows = [[row[c] for c in columns] for row in reader if keep(row)]
    with target.open("w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return len(rows)


def _utc_label(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _nem_dates(key: str) -> tuple[str, str]:
    """First and last NEM calendar date of a period, ``YYYY-MM-DD``."""
    period = PERIODS[key]
    return period.first.date().isoformat(), period.last.date().isoformat()


def _in_weather_window(row: dict[str, str]) -> bool:
    for period in PERIODS.values():
        first, last = period.weather_hours_utc()
        if _utc_label(first) <= row["time_utc"] <= _utc_label(last):
            return True
    return False


def _in_season(date_text: str) -> bool:
    """Whether a NEM date (``YYYY-MM-DD…``) falls in one of the AEMO 30-minute periods."""
    for key, period in PERIODS.items():
        if period.grid != "aemo-30min":
            continue
        first, last = _nem_dates(key)
        if first <= date_text[:10] <= last:
            return True
    return False


def design_conditions(source: Path, target: Path) -> int:
    """Per capital, the cooling design conditions of ASHRAE Handbook — Fundamentals ch. 14
    (annual cumulative frequency of the hourly values): the dry bulb exceeded in 0.4 % and 1 %
    of the hours and the wet bulb exceeded in 0.4 % of the hours (its evaporation design
    condition), from the Open-Meteo hours of :data:`DESIGN_YEARS`; wet bulb by the WMO
    psychrometer equation at the hour's surface pressure, as the scenarios' own.
    """
    import numpy as np

    from thermoroute.common.physics.psychrometrics import wet_bulb_psychrometric

    first, last = DESIGN_YEARS
    hours: dict[str, list[tuple[float, float, float]]] = {}
    with gzip.open(source / OPENMETEO_FILE, "rt", newline="", encoding="utf-8") as fin:
        for row in csv.DictReader(fin):
            if first <= row["time_utc"][:4] <= last:
                hours.setdefault(row["city"], []).append(
                    (
                        float(row["temperature_2m_c"]),
                        float(row["relative_humidity_2m_pct"]),
                        float(row["surface_pressure_hpa"]),
                    )
                )
    columns = ("city", "hours", "first_utc_year", "last_utc_year", "dry_bulb_0p4_c",
               "dry_bulb_1p0_c", "dry_bulb_max_c", "wet_bulb_0p4_c", "wet_bulb_max_c")  # fmt: skip
    rows = []
    for city in sorted(hours):
        values = np.array(hours[city])
        dry = values[:, 0]
        wet = wet_bulb_psychrometric(values[:, 0], values[:, 1], values[:, 2])
        rows.append(
            [city, len(dry), first, last, f"{np.percentile(dry, 99.6):.1f}",
             f"{np.percentile(dry, 99.0):.1f}", f"{dry.max():.1f}",
             f"{np.percentile(wet, 99.6):.1f}", f"{wet.max():.1f}"]
        )  # fmt: skip
    with (target / DESIGN_FILE).open("w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return len(rows)


def trim(source: Path, target: Path = RAW) -> dict[str, int]:
    """Write the trimmed files from ``source`` (the shared data directory) into ``target``.

    Returns
    -------
    dict
        Rows written per file.
    """
    target.mkdir(parents=True, exist_ok=True)
    counts = {}
    counts["nem_5min_2023-01-17T1200_to_2023-01-24T1130.csv"] = _filter(
        source / "grid_nem/nem_5min_2023-01-17_to_2023-01-24.csv",
        target / "nem_5min_2023-01-17T1200_to_2023-01-24T1130.csv",
        NEM_COLUMNS,
        lambda r: r["timestamp"] >= NEM_FIRST,
    )
    counts["openmeteo_8capitals_hourly_scenario_weeks.csv"] = _filter(
        source / OPENMETEO_FILE,
        target / "openmeteo_8capitals_hourly_scenario_weeks.csv",
        OPENMETEO_COLUMNS,
        _in_weather_window,
    )
    counts["openmeteo_sydney_hourly_2023.csv"] = _filter(
        source / OPENMETEO_FILE,
        target / "openmeteo_sydney_hourly_2023.csv",
        OPENMETEO_COLUMNS,
        lambda r: r["city"] == CALIBRATION_CITY and r["time_utc"].startswith(CALIBRATION_YEAR),
    )
    counts[DESIGN_FILE] = design_conditions(source, target)
    for zone in ("NSW", "VIC"):
        name = f"aemo_hourly_price_AU-{zone}_2023-01-17_to_2023-01-24.csv"
        counts[name] = _filter(
            source / f"green_dcc_au/prices_aud_hourly/AU-{zone}_electricity_prices_2023.csv",
            target / name,
            ("Datetime", "Price (USD/MWh)"),
            lambda r: PRICE_FIRST <= r["Datetime"] <= PRICE_LAST,
        )
    counts["aemo_price_demand_30min_5regions_2020_seasons.csv"] = _filter(
        source / AEMO_30MIN_FILE,
        target / "aemo_price_demand_30min_5regions_2020_seasons.csv",
        AEMO_30MIN_COLUMNS,
        lambda r: _in_season(r["interval_start_nem"]),
    )
    counts["aemo_hourly_rrp_5regions_2020_seasons.csv"] = _filter(
        source / f"{SEASONS}/nem_hourly_rrp_5regions_all_periods_long.csv",
        target / "aemo_hourly_rrp_5regions_2020_seasons.csv",
        AEMO_HOURLY_COLUMNS,
        lambda r: _in_season(r["hour_start_nem"]),
    )
    counts["aemo_cdeii_daily_2020_seasons.csv"] = _filter(
        source / f"{SEASONS}/aemo_cdeii_daily_emissions_intensity_priority_periods.csv",
        target / "aemo_cdeii_daily_2020_seasons.csv",
        CDEII_COLUMNS,
        lambda r: _in_season(r["date_nem"]) and r["regionid"] != "NEM",
    )
    months = sorted(
        {
            (p.first + timedelta(days=d)).strftime("%Y-%m")
            for p in PERIODS.values()
            if p.grid == "aemo-30min"
            for d in range((p.last - p.first).days + 1)
        }
    )
    counts["nem_monthly_fuel_mix_2020_seasons.csv"] = _filter(
        source / "grid_nem/nem_monthly_1998-12_to_2022-12.csv",
        target / "nem_monthly_fuel_mix_2020_seasons.csv",
        ("month", "region", *MONTHLY_FUELS),
        lambda r: r["month"] in months,
    )
    for rel in COPIED:
        shutil.copyfile(source / rel, target / Path(rel).name)
        counts[Path(rel).name] = -1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=RAW)
    args = parser.parse_args(argv)
    for name, rows in trim(args.source, args.out).items():
        print(f"{name}: {'copied' if rows < 0 else f'{rows} rows'}")


if __name__ == "__main__":
    main()
