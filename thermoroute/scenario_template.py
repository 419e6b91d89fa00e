"""``thermoroute scenario init``: a scenario directory to start from, explained file by file.

The numbers are a small synthetic fleet (:func:`thermoroute.common.synth.synthesize`) so the
directory validates and solves as written; ``scenario.toml`` carries a comment on every key and
``README.md`` says, for every file and column, what it means, its unit, the range the loader accepts
(:data:`thermoroute.common.bounds.BOUNDS`), who owns it and where such data come from. Replace the
numbers with your own and validate (``docs/own-data.md`` walks through it).
"""

from __future__ import annotations

from pathlib import Path

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.bounds import bound_of
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenario_writing import scenario_tables
from thermoroute.common.synth import synthesize

#: Per file: (who holds it, what it is, where such data come from, {column: meaning}).
FILES: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "sites.csv": (
        "each site its own row",
        "One row per data centre: where it is, its GPUs and its cooling plant.",
        "the facility's asset register and the cooling plant's specification "
        "(docs/own-data.md: choosing pPUE and WUE coefficients)",
        {
            "site_id": "short id (letters, digits, - _ .); names its output directory",
            "name": "display name",
            "lat, lon": "coordinates [°]",
            "grid_region": "the NEM region (or grid) it buys from, for your own bookkeeping",
            "gpus": "installed GPUs",
            "idle_w": "power of an idle, powered GPU [W]",
            "u_max": "highest utilisation planned for (0, 1]",
            "max_wait_ms": "longest queueing wait an interactive request may see [ms]",
            "ref_gpu_s": "GPU-seconds of a reference request, scales the queueing model [GPU·s]",
            "ppue_a, ppue_b, ppue_c": "partial PUE pPUE(T) = a + b·T + c·T² of the dry bulb T",
            "wue_model": "tower, economizer or dry",
            "wue_p1, wue_p2": "tower: cycles of concentration, -; economizer: wet-bulb "
            "threshold [°C], slope [L/kWh/°C]; dry: unused",
        },
    ),
    "regions.csv": (
        "the coordinator",
        "One row per demand region (a city, a point of presence).",
        "your load balancer's geography",
        {
            "region_id": "short id",
            "name": "display name",
            "lat, lon": "coordinates [°] (drawn on the report's map)",
            "population": "people, for your bookkeeping and batch volumes",
        },
    ),
    "classes.csv": (
        "everyone",
        "One row per request class: the model served, its tokens and its TTFT target.",
        "your service-level objectives",
        {
            "class_id": "short id",
            "model": "the model (for your bookkeeping)",
            "prompt_tokens, output_tokens": "mean tokens per request",
            "ttft_slo_ms": "time-to-first-token target [ms]; inf for a deferrable class",
            "deferrable": "true: the class's volume may be served any time in the horizon",
        },
    ),
    "profiles.csv": (
        "the site",
        "Per site and class: what serving one request costs on the site's hardware.",
        "your serving telemetry (GPU time and energy per request, measured prefill)",
        {
            "gpu_s": "GPU-seconds per request [GPU·s]",
            "energy_j": "IT energy per request above idle [J]",
            "prefill_ms": "time to compute the first token [ms]",
        },
    ),
    "network.csv": (
        "the site",
        "Per site and region: the network round trip.",
        "your own RTT measurements (or modelled from distance)",
        {"rtt_ms": "round-trip time between the region and the site [ms]"},
    ),
    "site_series.csv": (
        "the site",
        "Per site and step: its weather and grid signals over the horizon (and beyond, for "
        "simulate).",
        "BOM or on-site weather station; AEMO dispatch prices of the site's NEM region; "
        "grid carbon and water intensity from the generation mix",
        {
            "time": "start of the step, ISO-8601 with its UTC offset",
            "dry_bulb_c, wet_bulb_c": "outdoor temperatures [°C] (wet ≤ dry)",
            "price_aud_per_mwh": "wholesale energy price [AUD/MWh]",
            "carbon_kg_per_kwh": "grid emissions intensity [kg CO2-e/kWh]",
            "ewif_l_per_kwh": "water consumed by generation per kWh [L/kWh]",
        },
    ),
    "demand.csv": (
        "the coordinator",
        "Per step, region and interactive class: the request rate to serve in that step.",
        "your load balancer's request logs, or its forecast",
        {"requests_per_s": "mean request rate over the step [requests/s]"},
    ),
    "batch.csv": (
        "the coordinator",
        "Per region and deferrable class: the volume to serve anywhere in the horizon.",
        "your batch queues",
        {"requests": "requests to serve over the horizon"},
    ),
}

_OBJECTIVE = {
    "carbon_aud_per_kg": "price of a kg of CO2-e emitted by the grid for the fleet",
    "water_aud_per_l": "price of a litre of water consumed on site and by generation",
    "latency_aud_per_req_s": "value of a second of waiting, per request",
}


def template(sites: int, regions: int, steps: int, seed: int = 0) -> Scenario:
    """The template's numbers: a small synthetic fleet that validates and solves."""
    return synthesize(sites, regions, seed, steps=steps, name="my-fleet")


def scenario_toml_commented(scenario: Scenario) -> str:
    """``scenario.toml`` with a comment on every key (the range the loader accepts)."""

    def rng(column: str) -> str:
        bound = bound_of("scenario.toml", column)
        return "" if bound is None else f" Allowed: {bound.describe()}."

    o = scenario.objective
    return f"""\
# thermoroute scenario (input format v1), written by `thermoroute scenario init`.
# Every file of this directory is explained in README.md beside it. Replace the synthetic
# numbers with your own, then check the whole directory:
#     thermoroute scenario validate THIS_DIRECTORY

[scenario]
# A name for outputs and reports.
name = "{scenario.name}"
# First step of the horizon, ISO-8601 with its UTC offset; site_series.csv and demand.csv
# must have rows from this time on.
start = "{scenario.start.isoformat()}"
# Length of one step in hours.{rng("step_hours")}
step_hours = {scenario.step_hours!r}
# Steps in one horizon (a day of hourly steps here).{rng("steps")}
steps = {scenario.steps}

[objective]
# What the fleet pays beside its energy bill, in AUD.
# {_OBJECTIVE["carbon_aud_per_kg"]}.{rng("carbon_aud_per_kg")}
carbon_aud_per_kg = {o.carbon_aud_per_kg!r}
# {_OBJECTIVE["water_aud_per_l"]}.{rng("water_aud_per_l")}
water_aud_per_l = {o.water_aud_per_l!r}
# {_OBJECTIVE["latency_aud_per_req_s"]}.{rng("latency_aud_per_req_s")}
latency_aud_per_req_s = {o.latency_aud_per_req_s!r}
"""


def readme(scenario: Scenario) -> str:
    """``README.md``: every file and column, its unit, range, owner and source."""
    lines = [
        f"# {scenario.name}: a thermoroute scenario to start from",
        "",
        f"Written by `thermoroute scenario init` with {len(scenario.sites)} synthetic sites and "
        f"{len(scenario.regions)} regions so that it validates and solves as it is:",
        "",
        "    thermoroute scenario validate THIS_DIRECTORY",
        "    thermoroute run THIS_DIRECTORY --solver central",
        "",
        "Replace every number with your own, file by file; the loader refuses a value outside "
        "its range with the file, row, column and the range. The guide `docs/own-data.md` of "
        "thermoroute builds such a directory from telemetry and market data step by step; "
        "`docs/model.md` §8 is the contract.",
        "",
        "`scenario.toml` sets the horizon and the objective's prices (commented there).",
    ]
    for name, (owner, what, source, columns) in FILES.items():
        lines += ["", f"## {name}", "", f"{what} Held by: {owner}. Data from: {source}.", ""]
        lines += ["| column | meaning | allowed |", "|---|---|---|"]
        for column, meaning in columns.items():
            bounds = [bound_of(name, c.strip()) for c in column.split(",")]
            allowed = "; ".join(b.describe() for b in bounds if b is not None) or "–"
            lines.append(f"| `{column}` | {meaning} | {allowed} |")
    return "\n".join(lines) + "\n"


def write_template(directory: Path, sites: int, regions: int, steps: int) -> Scenario:
    """Write the template into ``directory`` (new or empty) whole; return what it reads
    back as."""
    scenario = template(sites, regions, steps)
    files: dict[str, str | bytes] = {
        "scenario.toml": scenario_toml_commented(scenario),
        "README.md": readme(scenario),
    }
    for name, (header, rows) in scenario_tables(scenario).items():
        files[name] = csv_text(header, rows)
    write_directory_atomic(directory, files)
    return load_scenario(directory)
