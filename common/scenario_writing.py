"""Write a :class:`~thermoroute.common.scenario.Scenario` as a scenario directory (input
format v1), or copy one.

Floats are written exactly (:mod:`thermoroute.common.exact_csv`) and the files atomically
(:mod:`thermoroute.common.atomic_files`), so a scenario written and loaded again is the
same, bit for bit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario import PLANT_COLUMNS, Scenario
from thermoroute.common.scenario_format import (
    BATCH_COLUMNS,
    CLASS_COLUMNS,
    DEMAND_COLUMNS,
    NETWORK_COLUMNS,
    PPUE_CURVE_COLUMNS,
    PPUE_CURVE_FILE,
    PROFILE_COLUMNS,
    REGION_COLUMNS,
    SCENARIO_FILES,
    SERIES_COLUMNS,
    SITE_COLUMNS,
)

__all__ = [
    "copy_scenario_dir",
    "scenario_tables",
    "scenario_toml",
    "write_scenario",
]


def _cell(value: float) -> float | str:
    """A number as written, NaN (an optional value not given) as an empty cell."""
    return "" if math.isnan(value) else value


def scenario_tables(scenario: Scenario) -> dict[str, tuple[tuple[str, ...], list[list[Any]]]]:
    """Every CSV table of ``scenario`` as (header, rows), in input format v1; model v1.1's
    columns and ``ppue_curve.csv`` only where the scenario has them (so a v1 scenario is
    written exactly as before)."""
    sc = scenario
    s, r, c = sc.sites, sc.regions, sc.classes
    plant = [name for name in PLANT_COLUMNS if getattr(s, name) is not None]
    tables: dict[str, tuple[tuple[str, ...], list[list[Any]]]] = {}
    tables["sites.csv"] = (
        (*SITE_COLUMNS, *plant),
        [
            [
                s.site_id[i],
                s.name[i],
                s.lat[i],
                s.lon[i],
                s.grid_region[i],
                s.gpus[i],
                s.idle_w[i],
                s.u_max[i],
                s.max_wait_ms[i],
                s.ref_gpu_s[i],
                _cell(s.ppue_a[i]),
                _cell(s.ppue_b[i]),
                _cell(s.ppue_c[i]),
                s.wue_model[i],
                s.wue_p1[i],
                s.wue_p2[i],
                *(_cell(getattr(s, name)[i]) for name in plant),
            ]
            for i in range(len(s))
        ],
    )
    if s.ppue_curve is not None:
        tables[PPUE_CURVE_FILE] = (
            PPUE_CURVE_COLUMNS,
            [
                [s.site_id[i], float(dry), float(pue)]
                for i, curve in enumerate(s.ppue_curve)
                if curve is not None
                for dry, pue in curve
            ],
        )
    tables["regions.csv"] = (
        REGION_COLUMNS,
        [[r.region_id[j], r.name[j], r.lat[j], r.lon[j], r.population[j]] for j in range(len(r))],
    )
    tables["classes.csv"] = (
        CLASS_COLUMNS,
        [
            [
                c.class_id[k],
                c.model[k],
                c.prompt_tokens[k],
                c.output_tokens[k],
                c.ttft_slo_ms[k],
                "true" if c.deferrable[k] else "false",
            ]
            for k in range(len(c))
        ],
    )
    tables["profiles.csv"] = (
        PROFILE_COLUMNS,
        [
            [s.site_id[i], c.class_id[k], sc.gpu_s[i, k], sc.energy_j[i, k], sc.prefill_ms[i, k]]
            for i in range(len(s))
            for k in range(len(c))
        ],
    )
    tables["network.csv"] = (
        NETWORK_COLUMNS,
        [
            [s.site_id[i], r.region_id[j], sc.rtt_ms[i, j]]
            for i in range(len(s))
            for j in range(len(r))
        ],
    )
    tables["site_series.csv"] = (
        SERIES_COLUMNS,
        [
            [
                sc.times[t].isoformat(),
                s.site_id[i],
                sc.dry_bulb_c[i, t],
                sc.wet_bulb_c[i, t],
                sc.price_aud_per_mwh[i, t],
                sc.carbon_kg_per_kwh[i, t],
                sc.ewif_l_per_kwh[i, t],
            ]
            for t in range(sc.steps)
            for i in range(len(s))
        ],
    )
    tables["demand.csv"] = (
        DEMAND_COLUMNS,
        [
            [sc.times[t].isoformat(), r.region_id[j], c.class_id[k], sc.demand_rps[j, k, t]]
            for t in range(sc.steps)
            for j in range(len(r))
            for k in range(len(c))
            if not c.deferrable[k]
        ],
    )
    tables["batch.csv"] = (
        BATCH_COLUMNS,
        [
            [r.region_id[j], c.class_id[k], sc.batch_requests[j, k]]
            for j in range(len(r))
            for k in range(len(c))
            if c.deferrable[k]
        ],
    )
    return tables


def _toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly (quotes, backslashes, controls escaped)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
               "\f": "\\f", "\r": "\\r"}  # fmt: skip
    out = []
    for ch in str(text):
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_float(value: float) -> str:
    # float() first: the repr of a NumPy scalar is "np.float64(1.0)", which is not TOML.
    return repr(float(value))


def scenario_toml(scenario: Scenario) -> str:
    """The text of ``scenario.toml`` for ``scenario``."""
    o = scenario.objective
    return (
        "[scenario]\n"
        f"name = {_toml_string(scenario.name)}\n"
        f"start = {_toml_string(scenario.start.isoformat())}\n"
        f"step_hours = {_toml_float(scenario.step_hours)}\n"
        f"steps = {int(scenario.steps)}\n\n"
        "[objective]\n"
        f"carbon_aud_per_kg = {_toml_float(o.carbon_aud_per_kg)}\n"
        f"water_aud_per_l = {_toml_float(o.water_aud_per_l)}\n"
        f"latency_aud_per_req_s = {_toml_float(o.latency_aud_per_req_s)}\n"
    )


def write_scenario(scenario: Scenario, directory: str | os.PathLike[str]) -> Path:
    """Write ``scenario`` as a v1 scenario directory, atomically."""
    files: dict[str, str] = {"scenario.toml": scenario_toml(scenario)}
    for name, (header, rows) in scenario_tables(scenario).items():
        files[name] = csv_text(header, rows)
    return write_directory_atomic(directory, files)


def copy_scenario_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy the v1 files (and any PROVENANCE/README) of a scenario directory, atomically."""
    source = Path(source)
    files: dict[str, str | bytes] = {}
    for path in sorted(source.iterdir()):
        if path.is_file() and (path.name in SCENARIO_FILES or path.suffix == ".md"):
            files[path.name] = path.read_bytes()
    return write_directory_atomic(target, files)
