"""Read each file of a scenario directory into arrays, checking what spans rows and files.

One reader per file of the format (:mod:`thermoroute.common.scenario_format`). Each records
its problems in a :class:`~thermoroute.common.scenario_validation.ProblemCollector` and
returns what it could read, so that one pass reports the problems of every file;
:func:`thermoroute.common.scenario_loading.load_scenario` and
:func:`thermoroute.common.demand_view.load_demand_view` put the results together and raise.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.common.bounds import bound_of
from thermoroute.common.scenario import (
    COOLING_COLUMNS,
    PLANT_COLUMNS,
    WUE_MODELS,
    Classes,
    Objective,
    Regions,
    Sites,
)
from thermoroute.common.scenario_format import (
    BATCH_COLUMNS,
    CLASS_COLUMNS,
    DEMAND_COLUMNS,
    NETWORK_COLUMNS,
    PPUE_CURVE_COLUMNS,
    PPUE_CURVE_FILE,
    PROFILE_COLUMNS,
    REGION_COLUMNS,
    SERIES_COLUMNS,
    SITE_COLUMNS,
)
from thermoroute.common.scenario_validation import (
    ProblemCollector,
    read_csv_rows,
    unique_ids,
    unreadable,
)

__all__ = [
    "WET_BULB_SLACK_C",
    "apply_overrides",
    "read_batch",
    "read_classes",
    "read_demand",
    "read_network",
    "read_plant",
    "read_profiles",
    "read_regions",
    "read_series",
    "read_sites",
    "read_toml",
]


# Wet-bulb temperature cannot exceed dry-bulb; allow for rounding in the inputs.
WET_BULB_SLACK_C = 0.5


def apply_overrides(
    meta: dict[str, Any] | None, start: datetime | None, steps: int | None, sink: ProblemCollector
) -> dict[str, Any] | None:
    """``scenario.toml`` with the caller's ``start``/``steps`` in place of its own.

    An override is checked like the file's value: a naive start would never match the
    offset-aware series times (every step would look missing), and no steps leave no
    horizon at all.
    """
    if start is not None and start.tzinfo is None:
        sink.add("scenario.toml", f"start {start.isoformat()} has no UTC offset", None, "start")
        return None
    steps_bound = bound_of("scenario.toml", "steps")
    if steps is not None and steps_bound is not None and not steps_bound.admits(steps):
        sink.add(
            "scenario.toml",
            f"steps {steps} is outside the allowed range {steps_bound.describe()}",
            None,
            "steps",
        )
        return None
    if meta is not None:
        if start is not None:
            meta["start"] = start
        if steps is not None:
            meta["steps"] = steps
    return meta


def read_toml(directory: Path, sink: ProblemCollector) -> dict[str, Any] | None:
    file = "scenario.toml"
    path = directory / file
    if (reason := unreadable(path)) is not None:
        sink.add(file, reason)
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        sink.add(file, f"not valid TOML: {exc}")
        return None
    before = len(sink.problems)
    scen = data.get("scenario")
    obj = data.get("objective")
    if not isinstance(scen, dict):
        sink.add(file, "missing table [scenario]")
        scen = {}
    if not isinstance(obj, dict):
        sink.add(file, "missing table [objective]")
        obj = {}

    def need(
        table: dict[str, Any], table_name: str, key: str, kind: Callable[[Any], bool], what: str
    ) -> Any:
        if key not in table:
            sink.add(file, f"[{table_name}] is missing '{key}'", None, key)
            return None
        value = table[key]
        if not kind(value):
            sink.add(file, f"[{table_name}] '{key}' must be {what} (got {value!r})", None, key)
            return None
        return value

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    name = need(scen, "scenario", "name", lambda v: isinstance(v, str) and v != "", "a name")
    start = need(scen, "scenario", "start", lambda v: isinstance(v, str | datetime), "a time")
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start)
        except ValueError:
            sink.add(file, f"[scenario] 'start' is not an ISO-8601 time: {start!r}", None, "start")
            start = None
    if isinstance(start, datetime) and start.tzinfo is None:
        sink.add(file, "[scenario] 'start' has no UTC offset (e.g. +10:00)", None, "start")
    # Types here; ranges from the bounds table below.
    step_hours = need(scen, "scenario", "step_hours", is_number, "a number")
    steps = need(
        scen,
        "scenario",
        "steps",
        lambda v: isinstance(v, int) and not isinstance(v, bool),
        "an integer",
    )
    weights = {}
    for key in ("carbon_aud_per_kg", "water_aud_per_l", "latency_aud_per_req_s"):
        weights[key] = need(obj, "objective", key, is_number, "a number")
    for table_name, key, value in (
        ("scenario", "step_hours", step_hours),
        ("scenario", "steps", steps),
        *(("objective", k, v) for k, v in weights.items()),
    ):
        bound = bound_of(file, key)
        if value is not None and bound is not None and not bound.admits(value):
            sink.add(
                file,
                f"[{table_name}] '{key}' = {value!r} is outside the allowed range "
                f"{bound.describe()} ({bound.source})",
                None,
                key,
            )
    if len(sink.problems) > before:
        return None
    return {
        "name": name,
        "start": start,
        "step_hours": float(step_hours),
        "steps": steps,
        "objective": Objective(**{k: float(v) for k, v in weights.items()}),
    }


def read_sites(
    directory: Path, sink: ProblemCollector, *, skip_sites: Collection[str] = ()
) -> tuple[Sites, dict[str, int], list[tuple[int, int, str]]]:
    """``sites.csv`` as :class:`Sites`, the site index, and the ``(site, line, column)`` of
    every empty ``ppue_a/b/c`` cell (allowed only for a site with a measured curve, which
    :func:`read_plant` checks once ``ppue_curve.csv`` is read).

    The rows of ``skip_sites`` are passed over, here and in every reader of a site's file
    (:func:`~thermoroute.common.scenario_validation.read_csv_rows`)."""
    file = "sites.csv"
    rows = list(read_csv_rows(directory, file, SITE_COLUMNS, sink, skip_sites=skip_sites))
    index = unique_ids(rows, "site_id", sink)
    # With sites skipped the file has sites: whether the wanted ones are among them is the
    # caller's to say.
    if not rows and not skip_sites and not any(p.file == file for p in sink.problems):
        sink.add(file, "no sites")
    header = set(rows[0].cells) if rows else set()
    plant = [c for c in PLANT_COLUMNS if c in header]
    cooling = [c for c in COOLING_COLUMNS if c in header]
    if cooling and len(cooling) < len(COOLING_COLUMNS):
        for c in COOLING_COLUMNS:
            if c not in header:
                sink.add(file, f"required with {', '.join(cooling)} (all three or none)", 1, c)
    cols: dict[str, list[Any]] = {c: [] for c in (*SITE_COLUMNS, *plant)}
    ppue_empty: list[tuple[int, int, str]] = []
    for row in rows:
        cols["site_id"].append(row.text("site_id") or "")
        cols["name"].append(row.text("name", allow_empty=True) or "")
        cols["lat"].append(row.number("lat"))
        cols["lon"].append(row.number("lon"))
        cols["grid_region"].append(row.text("grid_region", allow_empty=True) or "")
        cols["gpus"].append(row.number("gpus"))
        cols["idle_w"].append(row.number("idle_w"))
        u_max = row.number("u_max")
        cols["u_max"].append(u_max)
        cols["max_wait_ms"].append(row.number("max_wait_ms"))
        cols["ref_gpu_s"].append(row.number("ref_gpu_s"))
        for c in ("ppue_a", "ppue_b", "ppue_c"):
            if not (row.cells.get(c) or "").strip():
                ppue_empty.append((len(cols[c]), row.line, c))
                cols[c].append(math.nan)
            else:
                cols[c].append(row.number(c))
        for c in plant:
            # An empty cell: this site does not give the limit.
            given = bool((row.cells.get(c) or "").strip())
            cols[c].append(row.number(c) if given else math.nan)
        given_cooling = [c for c in cooling if (row.cells.get(c) or "").strip()]
        # (a header with part of the triple is reported once, above)
        if given_cooling and len(given_cooling) < len(COOLING_COLUMNS) == len(cooling):
            for c in COOLING_COLUMNS:
                if c not in given_cooling:
                    sink.add(
                        file,
                        f"empty while {', '.join(given_cooling)} given: the cooling derating needs "
                        "all three of cooling_design_c, cooling_derate_per_c and "
                        "cooling_min_fraction, or none",
                        row.line,
                        c,
                    )
        model = row.text("wue_model")
        if model is not None and model not in WUE_MODELS:
            sink.add(
                file,
                f"unknown wue_model {model!r} (one of {', '.join(WUE_MODELS)})",
                row.line,
                "wue_model",
            )
        cols["wue_model"].append(model or "")
        # p1 is the cycles of concentration of a tower (checked below) but the wet-bulb
        # threshold of an economizer, in °C, which may well be below zero.
        p1 = row.number("wue_p1", minimum=None if model == "economizer" else 0)
        p2 = row.number("wue_p2")
        if model == "tower" and p1 is not None and p1 <= 1:
            sink.add(
                file,
                f"cycles of concentration must be > 1 for 'tower' (got {p1:g})",
                row.line,
                "wue_p1",
            )
        cols["wue_p1"].append(p1)
        cols["wue_p2"].append(p2)
    table = _make_table(Sites, cols, ("site_id", "name", "grid_region", "wue_model"))
    return table, index, ppue_empty


def read_plant(
    directory: Path,
    sites: Sites,
    site_index: dict[str, int],
    ppue_empty: list[tuple[int, int, str]],
    meta: dict[str, Any] | None,
    sink: ProblemCollector,
    *,
    skip_sites: Collection[str] = (),
) -> Sites:
    """Read ``ppue_curve.csv`` (if present) into ``sites`` and check the v1.1 data that
    span files: empty ``ppue_a/b/c`` only where a curve replaces them, a water allowance
    only with steps that divide a day (docs/model.md §12)."""
    curves: tuple[np.ndarray | None, ...] | None = None
    path = directory / PPUE_CURVE_FILE
    if path.exists() or path.is_symlink():
        curves = _read_curves(directory, site_index, sink, skip_sites)
    has_curve = {i for i, c in enumerate(curves or ()) if c is not None}
    for i, line, column in ppue_empty:
        if i not in has_curve:
            sink.add(
                "sites.csv",
                f"empty value (may be empty only for a site with a curve in {PPUE_CURVE_FILE})",
                line,
                column,
            )
    caps = sites.water_cap_l_per_day
    if caps is not None and meta is not None and np.any(~np.isnan(caps)):
        per_day = 24.0 / meta["step_hours"]
        if abs(per_day - round(per_day)) > 1e-9 * per_day:
            sink.add(
                "scenario.toml",
                f"step_hours = {meta['step_hours']:g} does not divide 24 h, which a daily "
                "water allowance (sites.csv water_cap_l_per_day) needs",
                None,
                "step_hours",
            )
    return replace(sites, ppue_curve=curves) if curves is not None else sites


def _read_curves(
    directory: Path, site_index: dict[str, int], sink: ProblemCollector, skip_sites: Collection[str]
) -> tuple[np.ndarray | None, ...]:
    """Each site's measured pPUE points from ``ppue_curve.csv`` (None for a site without)."""
    file = PPUE_CURVE_FILE
    points: dict[int, list[tuple[float, float]]] = {}
    first_line: dict[int, int] = {}
    # Rows per site, bad ones included: a bad row is reported once, not again as a
    # missing point.
    rows: dict[int, int] = {}
    for row in read_csv_rows(directory, file, PPUE_CURVE_COLUMNS, sink, skip_sites=skip_sites):
        sid = row.text("site_id")
        dry, pue = row.number("dry_bulb_c"), row.number("ppue")
        if sid is None:
            continue
        if sid not in site_index:
            sink.add(file, f"unknown site_id {sid!r} (not in sites.csv)", row.line, "site_id")
            continue
        i = site_index[sid]
        rows[i] = rows.get(i, 0) + 1
        first_line.setdefault(i, row.line)
        if dry is None or pue is None:
            continue
        mine = points.setdefault(i, [])
        if mine and dry <= mine[-1][0]:
            sink.add(
                file,
                f"{dry:g} does not follow {mine[-1][0]:g}: a site's dry_bulb_c must increase "
                "strictly from row to row",
                row.line,
                "dry_bulb_c",
            )
            continue
        mine.append((dry, pue))
    for i, count in rows.items():
        if count < 2:
            sink.add(
                file,
                "a curve needs at least two points (rows) per site",
                first_line[i],
                "site_id",
            )
    return tuple(
        np.array(points[i], dtype=float) if len(points.get(i, ())) >= 2 else None
        for i in range(len(site_index))
    )


def read_regions(directory: Path, sink: ProblemCollector) -> tuple[Regions, dict[str, int]]:
    """``regions.csv`` as :class:`Regions` and the region index (id -> position)."""
    file = "regions.csv"
    rows = list(read_csv_rows(directory, file, REGION_COLUMNS, sink))
    index = unique_ids(rows, "region_id", sink)
    if not rows and not any(p.file == file for p in sink.problems):
        sink.add(file, "no regions")
    cols: dict[str, list[Any]] = {c: [] for c in REGION_COLUMNS}
    for row in rows:
        cols["region_id"].append(row.text("region_id") or "")
        cols["name"].append(row.text("name", allow_empty=True) or "")
        cols["lat"].append(row.number("lat"))
        cols["lon"].append(row.number("lon"))
        cols["population"].append(row.number("population"))
    return _make_table(Regions, cols, ("region_id", "name")), index


def read_classes(directory: Path, sink: ProblemCollector) -> tuple[Classes, dict[str, int]]:
    """``classes.csv`` as :class:`Classes` and the class index (id -> position)."""
    file = "classes.csv"
    rows = list(read_csv_rows(directory, file, CLASS_COLUMNS, sink))
    index = unique_ids(rows, "class_id", sink)
    if not rows and not any(p.file == file for p in sink.problems):
        sink.add(file, "no classes")
    cols: dict[str, list[Any]] = {c: [] for c in CLASS_COLUMNS}
    for row in rows:
        cols["class_id"].append(row.text("class_id") or "")
        sink.lines.setdefault((file, len(cols["class_id"]) - 1), row.line)
        cols["model"].append(row.text("model", allow_empty=True) or "")
        cols["prompt_tokens"].append(row.number("prompt_tokens"))
        cols["output_tokens"].append(row.number("output_tokens"))
        deferrable = row.boolean("deferrable")
        cols["deferrable"].append(deferrable)
        raw_slo = (row.cells.get("ttft_slo_ms") or "").strip()
        if deferrable and raw_slo == "":
            cols["ttft_slo_ms"].append(math.inf)
        elif deferrable:
            cols["ttft_slo_ms"].append(row.number("ttft_slo_ms", allow_inf=True))
        else:
            cols["ttft_slo_ms"].append(row.number("ttft_slo_ms"))
    table = _make_table(Classes, cols, ("class_id", "model"))
    return table, index


def _make_table(kind: type, cols: dict[str, list[Any]], text_columns: tuple[str, ...]) -> Any:
    values: dict[str, Any] = {}
    for name, column in cols.items():
        if name in text_columns:
            values[name] = tuple(column)
        elif name == "deferrable":
            values[name] = np.array([bool(v) for v in column], dtype=bool)
        else:
            values[name] = np.array([np.nan if v is None else v for v in column], dtype=float)
    return kind(**values)


def _pair_table(
    directory: Path,
    file: str,
    columns: tuple[str, ...],
    first: tuple[str, dict[str, int]],
    second: tuple[str, dict[str, int]],
    values: dict[str, dict[str, Any]],
    sink: ProblemCollector,
    skip_sites: Collection[str],
) -> list[np.ndarray]:
    """Read a table keyed by two ids into dense arrays, reporting unknown, duplicate, missing."""
    (a_col, a_index), (b_col, b_index) = first, second
    out = [np.full((len(a_index), len(b_index)), np.nan) for _ in values]
    seen: dict[tuple[int, int], int] = {}
    for row in read_csv_rows(directory, file, columns, sink, skip_sites=skip_sites):
        a, b = row.text(a_col), row.text(b_col)
        ok = True
        if a is not None and a not in a_index:
            sink.add(file, f"unknown {a_col} {a!r}", row.line, a_col)
            ok = False
        if b is not None and b not in b_index:
            sink.add(file, f"unknown {b_col} {b!r}", row.line, b_col)
            ok = False
        parsed = [row.number(name, **limits) for name, limits in values.items()]
        if a is None or b is None or not ok:
            continue
        key = (a_index[a], b_index[b])
        if key in seen:
            sink.add(file, f"duplicate pair ({a}, {b}) (first on row {seen[key]})", row.line)
            continue
        seen[key] = row.line
        for array, value in zip(out, parsed, strict=True):
            if value is not None:
                array[key] = value
    if (directory / file).is_file() and not any(
        p.file == file and p.row in (None, 1) for p in sink.problems
    ):
        a_names = list(a_index)
        b_names = list(b_index)
        missing = [
            (a_names[i], b_names[k])
            for i in range(len(a_names))
            for k in range(len(b_names))
            if (i, k) not in seen
        ]
        for a, b in missing[:10]:
            sink.add(file, f"missing row for ({a_col}={a}, {b_col}={b})")
        if len(missing) > 10:
            sink.add(file, f"... {len(missing) - 10} more ({a_col}, {b_col}) pairs missing")
    return out


def read_profiles(
    directory: Path,
    site_index: dict[str, int],
    class_index: dict[str, int],
    sink: ProblemCollector,
    *,
    skip_sites: Collection[str] = (),
) -> list[np.ndarray]:
    """``profiles.csv`` as the (site, class) arrays ``gpu_s``, ``energy_j``, ``prefill_ms``."""
    return _pair_table(
        directory,
        "profiles.csv",
        PROFILE_COLUMNS,
        ("site_id", site_index),
        ("class_id", class_index),
        {"gpu_s": {}, "energy_j": {}, "prefill_ms": {}},
        sink,
        skip_sites,
    )


def read_network(
    directory: Path,
    site_index: dict[str, int],
    region_index: dict[str, int],
    sink: ProblemCollector,
    *,
    skip_sites: Collection[str] = (),
) -> np.ndarray:
    """``network.csv`` as the (site, region) array of round-trip times ``rtt_ms``."""
    (rtt,) = _pair_table(
        directory,
        "network.csv",
        NETWORK_COLUMNS,
        ("site_id", site_index),
        ("region_id", region_index),
        {"rtt_ms": {}},
        sink,
        skip_sites,
    )
    return rtt


class _StepGrid:
    """The step times of a scenario, continued both ways past its horizon: rows of a series
    at other times fall between steps, and are refused rather than skipped (docs/model.md
    §8, "Series resolution")."""

    def __init__(self, step_of: dict[datetime, int], step_hours: float) -> None:
        self.first = min(step_of, key=step_of.__getitem__) if step_of else None
        self.step_hours = step_hours
        self.step = timedelta(hours=step_hours)
        #: The earliest row time seen between steps.
        self.between: datetime | None = None

    def check(self, when: datetime) -> None:
        """Note ``when`` if it is not a step time."""
        if self.first is None:
            return
        k = round((when - self.first) / self.step)
        # The same arithmetic as step_times, so that a step time compares equal.
        if when != self.first + timedelta(hours=self.step_hours * k):
            self.between = when if self.between is None else min(self.between, when)

    def report(self, file: str, sink: ProblemCollector) -> None:
        """One problem for ``file`` if any of its rows fell between steps."""
        if self.between is None or self.first is None:
            return
        sink.add(
            file,
            f"the series has rows between step times (the first at "
            f"{self.between.isoformat()}): steps are {self.step_hours:g} h apart from "
            f"{self.first.isoformat()}; give one row per step (e.g. averaged over it) or set "
            "step_hours to the series' resolution",
            None,
            "time",
        )


def read_series(
    directory: Path,
    site_index: dict[str, int],
    step_of: dict[datetime, int],
    sink: ProblemCollector,
    *,
    step_hours: float,
    skip_sites: Collection[str] = (),
) -> tuple[Any, ...]:
    """``site_series.csv`` as five (site, step) arrays — dry bulb, wet bulb, price, carbon
    and EWIF, in the order of :data:`~thermoroute.common.scenario_format.SERIES_COLUMNS` —
    then, per site, the number of consecutive steps from the start its series covers.

    Rows between the step times (``step_hours`` apart) are refused, not sampled."""
    file = "site_series.csv"
    S, T = len(site_index), len(step_of)
    arrays = [np.full((S, T), np.nan) for _ in range(5)]
    seen: dict[tuple[int, datetime], int] = {}
    available: dict[int, set[datetime]] = {i: set() for i in range(S)}
    grid = _StepGrid(step_of, step_hours)
    for row in read_csv_rows(directory, file, SERIES_COLUMNS, sink, skip_sites=skip_sites):
        when = row.time("time")
        site = row.text("site_id")
        values = [
            row.number("dry_bulb_c"),
            row.number("wet_bulb_c"),
            row.number("price_aud_per_mwh"),
            row.number("carbon_kg_per_kwh"),
            row.number("ewif_l_per_kwh"),
        ]
        if (
            values[0] is not None
            and values[1] is not None
            and (values[1] > values[0] + WET_BULB_SLACK_C)
        ):
            sink.add(
                file,
                f"wet bulb {values[1]:g} °C is above dry bulb {values[0]:g} °C",
                row.line,
                "wet_bulb_c",
            )
        if site is not None and site not in site_index:
            sink.add(file, f"unknown site_id {site!r}", row.line, "site_id")
            continue
        if when is None or site is None:
            continue
        i = site_index[site]
        if (i, when) in seen:
            sink.add(
                file,
                f"duplicate row for site {site!r} at {when.isoformat()} "
                f"(first on row {seen[(i, when)]})",
                row.line,
            )
            continue
        seen[(i, when)] = row.line
        available[i].add(when)
        grid.check(when)
        t = step_of.get(when)
        if t is None:
            continue
        for array, value in zip(arrays, values, strict=True):
            if value is not None:
                array[i, t] = value
    grid.report(file, sink)
    if (directory / file).is_file() and not any(
        p.file == file and p.row in (None, 1) for p in sink.problems
    ):
        steps = sorted(step_of, key=step_of.__getitem__)
        sites = list(site_index)
        for i, site in enumerate(sites):
            lacking = [t for t in steps if (i, t) not in seen]
            if lacking:
                sink.add(
                    file,
                    f"missing step {lacking[0].isoformat()} for site {site!r}"
                    + (f" (and {len(lacking) - 1} more steps)" if len(lacking) > 1 else ""),
                    None,
                    "time",
                )
    # How many consecutive steps each site's series covers from the start, for receding
    # horizons.
    covered = tuple(_steps_covered(available[i], step_of) for i in range(S))
    return (*arrays, covered)


def _steps_covered(available: set[datetime], step_of: dict[datetime, int]) -> int:
    if not step_of:
        return 0
    ordered = sorted(step_of, key=step_of.__getitem__)
    if len(ordered) == 1:
        return 1
    step = ordered[1] - ordered[0]
    count, when = 0, ordered[0]
    while when in available:
        count += 1
        when = when + step
    return count


def read_demand(
    directory: Path,
    region_index: dict[str, int],
    class_index: dict[str, int],
    classes: Classes,
    step_of: dict[datetime, int],
    sink: ProblemCollector,
    *,
    populated: bool,
    step_hours: float,
) -> np.ndarray:
    """``demand.csv`` as the (region, class, step) array of interactive requests per second.

    ``populated`` (some region has people) makes a header-only file a problem: only a site's
    own directory may state that there is no interactive demand. Rows between the step
    times (``step_hours`` apart) are refused, not sampled.
    """
    file = "demand.csv"
    R, C, T = len(region_index), len(class_index), len(step_of)
    demand = np.zeros((R, C, T))
    filled = np.zeros((R, C, T), dtype=bool)
    seen: dict[tuple[int, int, datetime], int] = {}
    grid = _StepGrid(step_of, step_hours)
    rows = 0
    for row in read_csv_rows(directory, file, DEMAND_COLUMNS, sink):
        rows += 1
        when = row.time("time")
        region, klass = row.text("region_id"), row.text("class_id")
        value = row.number("requests_per_s")
        bad = False
        if region is not None and region not in region_index:
            sink.add(file, f"unknown region_id {region!r}", row.line, "region_id")
            bad = True
        if klass is not None and klass not in class_index:
            sink.add(file, f"unknown class_id {klass!r}", row.line, "class_id")
            bad = True
        elif klass is not None and classes.deferrable[class_index[klass]]:
            sink.add(
                file,
                f"class {klass!r} is deferrable: its volume belongs in batch.csv",
                row.line,
                "class_id",
            )
            bad = True
        if bad or when is None or region is None or klass is None:
            continue
        key = (region_index[region], class_index[klass], when)
        if key in seen:
            sink.add(
                file,
                f"duplicate row for ({region}, {klass}) at {when.isoformat()} "
                f"(first on row {seen[key]})",
                row.line,
            )
            continue
        seen[key] = row.line
        grid.check(when)
        t = step_of.get(when)
        if t is None:
            continue
        # The row is there: a bad value is reported on its own row, not again as a
        # missing step.
        filled[key[0], key[1], t] = True
        sink.lines[(file, key[0], key[1], t)] = row.line
        if value is not None:
            demand[key[0], key[1], t] = value
    # A demand.csv with a header and no rows states that there is no interactive demand —
    # which only a site's own directory may say (its regions have population 0, see
    # site_slice_files). Otherwise every interactive region/class needs a row at every step.
    grid.report(file, sink)
    header_only = rows == 0 and not any(p.file == file for p in sink.problems)
    if header_only and populated:
        sink.add(
            file,
            "has no rows: every region needs the demand of every interactive class at every "
            "step (only a site's own directory, whose regions have population 0, may omit it)",
            None,
        )
        return demand
    if (
        (directory / file).is_file()
        and not header_only
        and not any(p.file == file and p.row in (None, 1) for p in sink.problems)
    ):
        steps = sorted(step_of, key=step_of.__getitem__)
        regions, cls = list(region_index), list(class_index)
        reported = 0
        for j in range(R):
            for c in range(C):
                if classes.deferrable[c]:
                    continue
                lacking = np.flatnonzero(~filled[j, c])
                if lacking.size and reported < 10:
                    reported += 1
                    sink.add(
                        file,
                        f"missing step {steps[lacking[0]].isoformat()} for region "
                        f"{regions[j]!r}, class {cls[c]!r}"
                        + (f" (and {lacking.size - 1} more steps)" if lacking.size > 1 else ""),
                        None,
                        "time",
                    )
    return demand


def read_batch(
    directory: Path,
    region_index: dict[str, int],
    class_index: dict[str, int],
    classes: Classes,
    sink: ProblemCollector,
) -> np.ndarray:
    """``batch.csv`` as the (region, class) array of deferrable requests over the horizon."""
    file = "batch.csv"
    batch = np.zeros((len(region_index), len(class_index)))
    seen: dict[tuple[int, int], int] = {}
    for row in read_csv_rows(directory, file, BATCH_COLUMNS, sink):
        region, klass = row.text("region_id"), row.text("class_id")
        value = row.number("requests")
        bad = False
        if region is not None and region not in region_index:
            sink.add(file, f"unknown region_id {region!r}", row.line, "region_id")
            bad = True
        if klass is not None and klass not in class_index:
            sink.add(file, f"unknown class_id {klass!r}", row.line, "class_id")
            bad = True
        elif klass is not None and not classes.deferrable[class_index[klass]]:
            sink.add(
                file,
                f"class {klass!r} is interactive: its demand belongs in demand.csv",
                row.line,
                "class_id",
            )
            bad = True
        if bad or region is None or klass is None:
            continue
        key = (region_index[region], class_index[klass])
        if key in seen:
            sink.add(
                file, f"duplicate row for ({region}, {klass}) (first on row {seen[key]})", row.line
            )
            continue
        seen[key] = row.line
        if value is not None:
            batch[key] = value
    return batch
