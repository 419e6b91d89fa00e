"""A tiny, valid scenario directory written by hand, for tests that corrupt one cell at a time.

The scenario has three sites (``alpha`` with a cooling tower, ``bravo`` with an economizer,
``charlie`` with dry coolers), two regions (``east``, ``west``), three classes (``chat`` and
``code`` interactive, ``batch`` deferrable) and four hourly steps. The CSV text is written
here directly, not by :func:`thermoroute.common.scenario_writing.write_scenario`, so the loader
is tested against files it did not produce.

Every site can serve every region within the SLOs (worst TTFT 45 + 400 + 100 = 545 ms
against 1000 / 2000 ms), and the fleet is lightly loaded, so single corrupted cells produce
exactly the problem under test.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

TZ = timezone(timedelta(hours=10))
START = datetime(2023, 1, 16, 0, 0, tzinfo=TZ)
STEPS = 4

SITE_IDS = ("alpha", "bravo", "charlie")
REGION_IDS = ("east", "west")
CLASS_IDS = ("chat", "code", "batch")

SITES_HEADER = [
    "site_id",
    "name",
    "lat",
    "lon",
    "grid_region",
    "gpus",
    "idle_w",
    "u_max",
    "max_wait_ms",
    "ref_gpu_s",
    "ppue_a",
    "ppue_b",
    "ppue_c",
    "wue_model",
    "wue_p1",
    "wue_p2",
]
# gpus * u_max = busy-GPU capacity: 6.4, 5.4, 3.4 (fleet 15.2).
SITES_ROWS = [
    ["alpha", "Alpha DC", "-33.8688", "151.2093", "NSW1", "8", "75", "0.8", "100", "0.5",
     "1.0743", "0.0041", "7.1705e-05", "tower", "6", "0"],
    ["bravo", "Bravo DC", "-37.8136", "144.9631", "VIC1", "6", "75", "0.9", "100", "0.5",
     "1.0743", "0.0041", "7.1705e-05", "economizer", "18", "0.2"],
    ["charlie", "Charlie DC", "-31.9523", "115.8613", "WEM", "4", "63", "0.85", "100", "0.5",
     "1.1", "0.003", "5e-05", "dry", "0", "0"],
]  # fmt: skip

REGIONS_HEADER = ["region_id", "name", "lat", "lon", "population"]
REGIONS_ROWS = [
    ["east", "East coast", "-33.87", "151.21", "5000000"],
    ["west", "West coast", "-31.95", "115.86", "2000000"],
]

CLASSES_HEADER = [
    "class_id",
    "model",
    "prompt_tokens",
    "output_tokens",
    "ttft_slo_ms",
    "deferrable",
]
CLASSES_ROWS = [
    ["chat", "llama-2-70b", "1155", "211", "1000", "false"],
    ["code", "llama-3.1-8b", "2048", "28", "2000", "false"],
    ["batch", "llama-2-70b", "1000", "200", "", "true"],
]

# Same serving profile at every site: chat 0.5 GPU-s / 200 ms prefill, code 0.3 / 400,
# batch 2.0 / 1500.
PROFILE_VALUES = {"chat": ("0.5", "300", "200"), "code": ("0.3", "150", "400"),
                  "batch": ("2", "900", "1500")}  # fmt: skip
PROFILES_HEADER = ["site_id", "class_id", "gpu_s", "energy_j", "prefill_ms"]

RTT_MS = {
    ("alpha", "east"): "5",
    ("alpha", "west"): "40",
    ("bravo", "east"): "15",
    ("bravo", "west"): "20",
    ("charlie", "east"): "45",
    ("charlie", "west"): "5",
}
NETWORK_HEADER = ["site_id", "region_id", "rtt_ms"]

SERIES_HEADER = [
    "time",
    "site_id",
    "dry_bulb_c",
    "wet_bulb_c",
    "price_aud_per_mwh",
    "carbon_kg_per_kwh",
    "ewif_l_per_kwh",
]
DEMAND_HEADER = ["time", "region_id", "class_id", "requests_per_s"]
BATCH_HEADER = ["region_id", "class_id", "requests"]
BATCH_ROWS = [["east", "batch", "2000"], ["west", "batch", "1000"]]


def step_time(t: int) -> datetime:
    """Start of step ``t`` (hourly from :data:`START`)."""
    return START + timedelta(hours=t)


def series_value(site: int, t: int) -> list[str]:
    """Dry bulb, wet bulb, price, carbon, ewif of ``site`` at step ``t`` as CSV text."""
    dry = 20.0 + 2.5 * site + 1.5 * t
    wet = dry - 4.0 - 0.5 * t
    price = -20.0 + 35.0 * t + 10.0 * site  # a negative price at alpha, step 0
    carbon = (0.66, 0.77, 0.51)[site]
    ewif = 1.25 + 0.125 * site
    return [repr(dry), repr(wet), repr(price), repr(carbon), repr(ewif)]


def demand_value(region: int, klass: int, t: int) -> str:
    """Interactive demand [req/s] of ``region``/``klass`` at step ``t`` as CSV text."""
    return repr((2.0 if klass == 0 else 0.75) * (1 + region) + 0.25 * t)


def base_tables(series_steps: int = STEPS) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Header and rows of every CSV file; ``series_steps`` steps of series and demand."""
    profiles = [[s, c, *PROFILE_VALUES[c]] for s in SITE_IDS for c in CLASS_IDS]
    network = [[s, r, RTT_MS[(s, r)]] for s in SITE_IDS for r in REGION_IDS]
    series = [
        [step_time(t).isoformat(), s, *series_value(i, t)]
        for t in range(series_steps)
        for i, s in enumerate(SITE_IDS)
    ]
    demand = [
        [step_time(t).isoformat(), r, c, demand_value(j, k, t)]
        for t in range(series_steps)
        for j, r in enumerate(REGION_IDS)
        for k, c in enumerate(CLASS_IDS)
        if c != "batch"
    ]
    return {
        "sites.csv": (SITES_HEADER, [list(r) for r in SITES_ROWS]),
        "regions.csv": (REGIONS_HEADER, [list(r) for r in REGIONS_ROWS]),
        "classes.csv": (CLASSES_HEADER, [list(r) for r in CLASSES_ROWS]),
        "profiles.csv": (PROFILES_HEADER, profiles),
        "network.csv": (NETWORK_HEADER, network),
        "site_series.csv": (SERIES_HEADER, series),
        "demand.csv": (DEMAND_HEADER, demand),
        "batch.csv": (BATCH_HEADER, [list(r) for r in BATCH_ROWS]),
    }


def toml_text(
    *, name: str = "tiny", start: datetime = START, steps: int = STEPS, step_hours: float = 1.0
) -> str:
    """The text of ``scenario.toml``."""
    return (
        "[scenario]\n"
        f'name = "{name}"\n'
        f'start = "{start.isoformat()}"\n'
        f"step_hours = {step_hours!r}\n"
        f"steps = {steps}\n"
        "\n"
        "[objective]\n"
        "carbon_aud_per_kg = 0.07\n"
        "water_aud_per_l = 0.003\n"
        "latency_aud_per_req_s = 0.0005\n"
    )


def to_csv(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    writer.writerows(rows)
    return buffer.getvalue()


def make_scenario_dir(directory: Path, *, series_steps: int = STEPS, steps: int = STEPS) -> Path:
    """Write the tiny scenario into ``directory`` (created) and return it.

    ``series_steps`` steps of site series and demand are written while ``scenario.toml``
    asks for ``steps``, so a longer series can hold several horizons.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scenario.toml").write_text(toml_text(steps=steps), encoding="utf-8")
    for name, (header, rows) in base_tables(series_steps).items():
        (directory / name).write_text(to_csv(header, rows), encoding="utf-8")
    return directory


# --------------------------------------------------------------------------------------------
# Corrupting one thing at a time


def read_rows(directory: Path, file: str) -> list[list[str]]:
    """Every record of ``file``, the header first (record ``k`` is line ``k + 1``)."""
    with (directory / file).open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def write_rows(directory: Path, file: str, rows: list[list[str]]) -> None:
    (directory / file).write_text(to_csv(rows[0], rows[1:]), encoding="utf-8")


def find_line(directory: Path, file: str, **match: str) -> int:
    """Line number (header = 1) of the first row whose cells equal ``match``."""
    rows = read_rows(directory, file)
    header = rows[0]
    for k, row in enumerate(rows[1:], start=2):
        cells = dict(zip(header, row, strict=False))
        if all(cells.get(col) == value for col, value in match.items()):
            return k
    raise LookupError(f"no row of {file} matches {match}")


def set_cell(directory: Path, file: str, line: int, column: str, value: str) -> None:
    """Replace one cell of ``file`` (``line`` as in :func:`find_line`)."""
    rows = read_rows(directory, file)
    rows[line - 1][rows[0].index(column)] = value
    write_rows(directory, file, rows)


def delete_line(directory: Path, file: str, line: int) -> list[str]:
    """Remove one row of ``file`` and return its cells."""
    rows = read_rows(directory, file)
    removed = rows.pop(line - 1)
    write_rows(directory, file, rows)
    return removed


def append_row(directory: Path, file: str, row: list[str]) -> int:
    """Append a row to ``file`` and return its line number."""
    rows = read_rows(directory, file)
    rows.append(row)
    write_rows(directory, file, rows)
    return len(rows)


def drop_column(directory: Path, file: str, column: str) -> None:
    """Remove ``column`` from the header and every row of ``file``."""
    rows = read_rows(directory, file)
    k = rows[0].index(column)
    write_rows(directory, file, [r[:k] + r[k + 1 :] for r in rows])


#: Model v1.1 plant data that binds nowhere in the factory scenario (docs/model.md §12).
PLANT_VALUES = {
    "cooling_design_c": "35",
    "cooling_derate_per_c": "0.02",
    "cooling_min_fraction": "0.5",
    "grid_limit_kw": "1000",
    "water_cap_l_per_day": "100000",
}
#: A measured pPUE curve for ``alpha`` (rows 2 and 3 of ppue_curve.csv).
PPUE_CURVE_ROWS = [["alpha", "10", "1.05"], ["alpha", "30", "1.25"]]


def add_plant_data(directory: Path) -> Path:
    """Give every site of a factory scenario all the v1.1 columns and ``alpha`` a curve."""
    rows = read_rows(directory, "sites.csv")
    rows[0] += list(PLANT_VALUES)
    for row in rows[1:]:
        row += list(PLANT_VALUES.values())
    write_rows(directory, "sites.csv", rows)
    write_rows(directory, "ppue_curve.csv", [["site_id", "dry_bulb_c", "ppue"], *PPUE_CURVE_ROWS])
    return directory
