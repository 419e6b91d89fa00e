"""Copy and trim the shared reference data into ``data_build/raw/`` (run once, by hand).

``python -m data_build.trim_raw --source /work/shared/data`` reproduces every file in
``data_build/raw/`` except ``PROVENANCE.md`` (hand-written). Only the rows and columns the
scenario build uses are kept; see ``raw/PROVENANCE.md`` for what was trimmed and why. The build
itself (:mod:`data_build.build_scenarios`) reads only ``raw/`` and never the shared directory.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

RAW = Path(__file__).resolve().parent / "raw"

#: NEM week used by the scenarios: the 168 hourly steps 2023-01-17T12:00 … 2023-01-24T11:00
#: (+10:00) need the 5-min rows from 12:00 on the 17th to the end of the file (11:30 on the 24th).
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
OPENMETEO_COLUMNS = ("zone", "time_local", "temperature_2m_c", "relative_humidity_2m_pct")
BOM_COLUMNS = (
    "Date",
    "Location",
    "MinTemp",
    "MaxTemp",
    "Temp9am",
    "Temp3pm",
    "Humidity9am",
    "Humidity3pm",
)
#: Padded by three days each side of Jan 17–24 for the interpolation at the ends.
BOM_FIRST, BOM_LAST = "2017-01-14", "2017-01-27"
PRICE_FIRST, PRICE_LAST = "2023-01-17 12:00:00", "2023-01-24 11:00:00"

COPIED = (
    "geo/cities.csv",
    "geo/distances_and_modelled_rtt.csv",
    "factors/nga_scope2_electricity_factors.csv",
    "factors/water_intensity_by_generation.csv",
    "factors/datacenter_wue_reference.csv",
    "llm_traces/AzureLLMInferenceTrace_conv_2023.csv",
    "llm_traces/AzureLLMInferenceTrace_code_2023.csv",
    "llm_traces/burstgpt1_derived_sessions_by_hour_of_day.csv",
)


def _filter(source: Path, target: Path, columns, keep) -> int:
    with source.open(newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        rows = [[row[c] for c in columns] for row in reader if keep(row)]
    with target.open("w", newline="", encoding="utf-8") as fout:
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
    counts["openmeteo_hourly_AU-NSW_AU-VIC_2023.csv"] = _filter(
        source / "green_dcc_au/weather_hourly_openmeteo_AU-NSW_AU-VIC_2020-2024.csv",
        target / "openmeteo_hourly_AU-NSW_AU-VIC_2023.csv",
        OPENMETEO_COLUMNS,
        lambda r: r["time_local"].startswith("2023-") or r["time_local"].startswith("2024-01-01"),
    )
    counts["weatherAUS_2017-01-14_to_2017-01-27.csv"] = _filter(
        source / "weather/weatherAUS_selected_cities_daily_2007-2017.csv",
        target / "weatherAUS_2017-01-14_to_2017-01-27.csv",
        BOM_COLUMNS,
        lambda r: BOM_FIRST <= r["Date"] <= BOM_LAST,
    )
    for zone in ("NSW", "VIC"):
        name = f"aemo_hourly_price_AU-{zone}_2023-01-17_to_2023-01-24.csv"
        counts[name] = _filter(
            source / f"green_dcc_au/prices_aud_hourly/AU-{zone}_electricity_prices_2023.csv",
            target / name,
            ("Datetime", "Price (USD/MWh)"),
            lambda r: PRICE_FIRST <= r["Datetime"] <= PRICE_LAST,
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
