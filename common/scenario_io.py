"""Read, validate and write scenario directories (input format v1, docs/model.md §8).

Every problem found is reported with the file, the row (line number, the header being line 1)
and the column, and all problems of a directory are collected before raising, so a user can
fix a file in one pass. Writing is atomic: files are written under temporary names in the
target directory and renamed into place only when all of them are complete.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.common.atomic_files import write_directory_atomic
from thermoroute.common.bounds import bound_of
from thermoroute.common.errors import Problem, ScenarioError
from thermoroute.common.evaluate import cooling_max_gpus
from thermoroute.common.exact_csv import csv_text
from thermoroute.common.scenario import (
    COOLING_COLUMNS,
    PLANT_COLUMNS,
    WUE_MODELS,
    Classes,
    DemandView,
    Objective,
    Regions,
    Scenario,
    Sites,
    allowed_pairs,
    step_times,
)

SCENARIO_FILES = (
    "scenario.toml",
    "sites.csv",
    "regions.csv",
    "classes.csv",
    "profiles.csv",
    "network.csv",
    "site_series.csv",
    "demand.csv",
    "batch.csv",
)

SITE_COLUMNS = (
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
)
REGION_COLUMNS = ("region_id", "name", "lat", "lon", "population")
CLASS_COLUMNS = (
    "class_id",
    "model",
    "prompt_tokens",
    "output_tokens",
    "ttft_slo_ms",
    "deferrable",
)
PROFILE_COLUMNS = ("site_id", "class_id", "gpu_s", "energy_j", "prefill_ms")
NETWORK_COLUMNS = ("site_id", "region_id", "rtt_ms")
SERIES_COLUMNS = (
    "time",
    "site_id",
    "dry_bulb_c",
    "wet_bulb_c",
    "price_aud_per_mwh",
    "carbon_kg_per_kwh",
    "ewif_l_per_kwh",
)
#: Model v1.1's optional file (docs/model.md §12): measured pPUE curves, private to each site.
PPUE_CURVE_FILE = "ppue_curve.csv"
PPUE_CURVE_COLUMNS = ("site_id", "dry_bulb_c", "ppue")
DEMAND_COLUMNS = ("time", "region_id", "class_id", "requests_per_s")
BATCH_COLUMNS = ("region_id", "class_id", "requests")

# Wet-bulb temperature cannot exceed dry-bulb; allow for rounding in the inputs.
WET_BULB_SLACK_C = 0.5


# --------------------------------------------------------------------------------------------
# Cell parsing


class _Collector:
    """Collects problems; ``check`` records one and tells whether the value was fine."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        # Line numbers of rows that later whole-scenario checks (check_servable) point at,
        # keyed by (file, *position in the arrays).
        self.lines: dict[tuple[Any, ...], int] = {}

    def add(self, file: str, reason: str, row: int | None = None, column: str | None = None):
        self.problems.append(Problem(file, reason, row, column))


#: Strict number syntax: digits, one point, an exponent — not "1_000", "0x1F", "nan" or
#: "infinity", which Python's float() would take.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?", re.ASCII)
_INFINITY = re.compile(r"\+?inf", re.IGNORECASE)
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


@dataclass
class _Row:
    file: str
    line: int
    cells: dict[str, str]
    sink: _Collector

    def text(self, column: str, *, allow_empty: bool = False) -> str | None:
        value = (self.cells.get(column) or "").strip()
        if not value and not allow_empty:
            self.sink.add(self.file, "empty value", self.line, column)
            return None
        return value

    def number(
        self,
        column: str,
        *,
        minimum: float | None = None,
        allow_inf: bool = False,
    ) -> float | None:
        """The cell as a number within its bound (common/bounds.py) and above ``minimum``
        (a limit that depends on another cell), or None with the problem recorded."""
        raw = self.text(column)
        if raw is None:
            return None
        infinite = allow_inf and _INFINITY.fullmatch(raw) is not None
        if not infinite and _NON_FINITE.fullmatch(raw):
            reason = f"must be a finite number (got {raw!r})"
            self.sink.add(self.file, reason, self.line, column)
            return None
        if not (infinite or _DECIMAL.fullmatch(raw)):
            self.sink.add(
                self.file,
                f"not a number: {raw[:40]!r} (a decimal like 12, -0.5 or 1.5e3)",
                self.line,
                column,
            )
            return None
        value = float(raw)
        if math.isinf(value) and not infinite:
            reason = f"must be a finite number (got {raw[:40]!r})"
            self.sink.add(self.file, reason, self.line, column)
            return None
        bound = bound_of(self.file, column)
        if bound is not None and not infinite and not bound.admits(value):
            self.sink.add(
                self.file,
                f"{raw[:40]} is outside the allowed range {bound.describe()} ({bound.source})",
                self.line,
                column,
            )
            return None
        if minimum is not None and value < minimum:
            self.sink.add(self.file, f"must be >= {minimum:g} (got {raw})", self.line, column)
            return None
        return value

    def boolean(self, column: str) -> bool | None:
        raw = self.text(column)
        if raw is None:
            return None
        low = raw.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        self.sink.add(self.file, f"not a boolean (true/false): {raw!r}", self.line, column)
        return None

    def time(self, column: str) -> datetime | None:
        raw = self.text(column)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            self.sink.add(self.file, f"not an ISO-8601 time: {raw!r}", self.line, column)
            return None
        if value.tzinfo is None:
            self.sink.add(
                self.file, f"time {raw!r} has no UTC offset (e.g. +10:00)", self.line, column
            )
            return None
        return value


#: Input files larger than this are refused unread: validation's memory is bounded by it
#: (the 1,000-site synthetic fleet's largest file is ~2 MB).
MAX_INPUT_BYTES = 512 * 1024 * 1024


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file (None if it can).

    Only regular files are read: a FIFO or device would block or never end.
    """
    if not path.exists():
        return "file is missing" if not path.is_symlink() else "is a broken symbolic link"
    if not path.is_file():
        return "is not a regular file (a directory, FIFO or device)"
    if path.stat().st_size > MAX_INPUT_BYTES:
        return f"is larger than {MAX_INPUT_BYTES // 2**20} MiB"
    return None


def _read_csv(
    directory: Path, file: str, columns: Iterable[str], sink: _Collector
) -> Iterator[_Row]:
    path = directory / file
    if (reason := _unreadable(path)) is not None:
        sink.add(file, reason)
        return
    # Decode the whole file first: a stray non-UTF-8 byte must become a problem, not a
    # UnicodeDecodeError halfway through the rows. "utf-8-sig" drops the byte-order mark
    # spreadsheet programs put in front of the header, which would otherwise hide the
    # first column.
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        sink.add(file, f"not UTF-8 text (byte {exc.start}: {exc.reason})")
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            sink.add(file, "file is empty (a header row is required)", 1)
            return
        missing = [c for c in columns if c not in header]
        for column in missing:
            sink.add(file, "required column is missing from the header", 1, column)
        # A repeated column would silently keep only its last value.
        twice = [c for c in columns if header.count(c) > 1]
        for column in twice:
            sink.add(file, "column appears more than once in the header", 1, column)
        if missing or twice:
            return
        # A record's line number is one past the last line of the previous record: a quoted
        # field may span several lines, so counting records would drift.
        last_line = reader.line_num
        for values in reader:
            number, last_line = last_line + 1, reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                sink.add(
                    file,
                    f"has {len(values)} fields, the header has {len(header)}",
                    number,
                )
                continue
            yield _Row(file, number, dict(zip(header, values, strict=True)), sink)
    except csv.Error as exc:
        sink.add(file, f"not valid CSV: {exc}", reader.line_num)


#: What an id may look like (docs/model.md §8): it names per-site directories, Ray resources
#: and metric labels, so nothing that climbs out of a directory, hides as a dot file or needs
#: quoting.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
ID_RULE = "letters, digits, '-', '_' and '.', not starting with '.', at most 64 characters"


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id (:data:`ID_PATTERN`), or None if it is."""
    if ID_PATTERN.fullmatch(value):
        return None
    return f"id {value!r} is not allowed: ids are {ID_RULE}"


def _unique_ids(rows: list[_Row], column: str, sink: _Collector) -> dict[str, int]:
    """Map id -> position, reporting empty, malformed and duplicate ids."""
    index: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for row in rows:
        value = row.text(column)
        if value is None:
            continue
        if (reason := id_problem(value)) is not None:
            sink.add(row.file, reason, row.line, column)
            continue
        if value in index:
            sink.add(
                row.file,
                f"duplicate id {value!r} (first on row {first_line[value]})",
                row.line,
                column,
            )
            continue
        first_line[value] = row.line
        index[value] = len(index)
    return index


# --------------------------------------------------------------------------------------------
# Loading


def load_scenario(
    directory: str | os.PathLike[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> Scenario:
    """Read and validate a scenario directory.

    Parameters
    ----------
    directory : path
        A scenario directory in input format v1.
    start, steps : optional
        Override ``[scenario] start`` and ``steps`` of ``scenario.toml``, e.g. to pick another
        day of a week-long series. The series must cover every step of the horizon.

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        With every problem found, each naming the file, row and column.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError(Problem(str(directory), "not a directory"), str(directory))
    sink = _Collector()
    meta = _apply_overrides(_load_toml(directory, sink), start, steps, sink)

    sites, site_index, ppue_empty = _load_sites(directory, sink)
    regions, region_index = _load_regions(directory, sink)
    classes, class_index = _load_classes(directory, sink)
    # Go on to the tables keyed by these ids even when some of their cells are bad, so one
    # run reports the problems of every file; only a table whose keys cannot be trusted
    # (ids missing, unreadable, empty or repeated) is left for the next run, as checking it
    # would only echo the first problem.
    sites_ok = _ids_sound(sink, "sites.csv", "site_id")
    regions_ok = _ids_sound(sink, "regions.csv", "region_id")
    classes_ok = _ids_sound(sink, "classes.csv", "class_id", "deferrable")
    times = step_times(meta["start"], meta["step_hours"], meta["steps"]) if meta else ()
    step_of = {t: k for k, t in enumerate(times)}
    S, R, C, T = len(sites), len(regions), len(classes), len(times)

    if sites_ok:
        sites = _load_plant(directory, sites, site_index, ppue_empty, meta, sink)
    if sites_ok and classes_ok:
        gpu_s, energy_j, prefill_ms = _load_profiles(directory, site_index, class_index, sink)
    if sites_ok and regions_ok:
        rtt_ms = _load_network(directory, site_index, region_index, sink)
    if meta is not None and sites_ok:
        series = _load_series(directory, site_index, step_of, sink)
    if meta is not None and regions_ok and classes_ok:
        demand = _load_demand(
            directory, region_index, class_index, classes, step_of, sink,
            populated=bool(np.any(regions.population > 0)),
        )  # fmt: skip
    if regions_ok and classes_ok:
        batch = _load_batch(directory, region_index, class_index, classes, sink)
    if sink.problems or meta is None:
        raise ScenarioError(sink.problems, str(directory))

    scenario = Scenario(
        name=meta["name"],
        start=times[0],
        step_hours=meta["step_hours"],
        objective=meta["objective"],
        sites=sites,
        regions=regions,
        classes=classes,
        gpu_s=gpu_s,
        energy_j=energy_j,
        prefill_ms=prefill_ms,
        rtt_ms=rtt_ms,
        times=times,
        dry_bulb_c=series[0],
        wet_bulb_c=series[1],
        price_aud_per_mwh=series[2],
        carbon_kg_per_kwh=series[3],
        ewif_l_per_kwh=series[4],
        demand_rps=demand,
        batch_requests=batch,
        metadata={"directory": str(directory), "available_steps": series[5]},
    )
    assert scenario.shape == (S, R, C, T)
    check_servable(scenario, sink)
    if sink.problems:
        raise ScenarioError(sink.problems, str(directory))
    return scenario


def _ids_sound(sink: _Collector, file: str, *columns: str) -> bool:
    """Were the ids of ``file`` read without a problem (so other tables can refer to them)?

    False if the file as a whole had a problem (missing, empty, bad header: row 1 or no
    row) or any of ``columns`` did.
    """
    return not any(
        p.file == file and (p.row in (None, 1) or p.column in columns) for p in sink.problems
    )


def _apply_overrides(
    meta: dict[str, Any] | None, start: datetime | None, steps: int | None, sink: _Collector
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


def _load_toml(directory: Path, sink: _Collector) -> dict[str, Any] | None:
    file = "scenario.toml"
    path = directory / file
    if (reason := _unreadable(path)) is not None:
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

    def need(table: dict, table_name: str, key: str, kind: Callable[[Any], bool], what: str):
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


def _load_sites(
    directory: Path, sink: _Collector
) -> tuple[Sites, dict[str, int], list[tuple[int, int, str]]]:
    """``sites.csv`` as :class:`Sites`, the site index, and the ``(site, line, column)`` of
    every empty ``ppue_a/b/c`` cell (allowed only for a site with a measured curve, which
    :func:`_load_plant` checks once ``ppue_curve.csv`` is read)."""
    file = "sites.csv"
    rows = list(_read_csv(directory, file, SITE_COLUMNS, sink))
    index = _unique_ids(rows, "site_id", sink)
    if not rows and not any(p.file == file for p in sink.problems):
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
        given = [c for c in cooling if (row.cells.get(c) or "").strip()]
        # (a header with part of the triple is reported once, above)
        if given and len(given) < len(COOLING_COLUMNS) == len(cooling):
            for c in COOLING_COLUMNS:
                if c not in given:
                    sink.add(
                        file,
                        f"empty while {', '.join(given)} given: the cooling derating needs "
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


def _load_plant(
    directory: Path,
    sites: Sites,
    site_index: dict[str, int],
    ppue_empty: list[tuple[int, int, str]],
    meta: dict[str, Any] | None,
    sink: _Collector,
) -> Sites:
    """Read ``ppue_curve.csv`` (if present) into ``sites`` and check the v1.1 data that
    span files: empty ``ppue_a/b/c`` only where a curve replaces them, a water allowance
    only with steps that divide a day (docs/model.md §12)."""
    curves: tuple[np.ndarray | None, ...] | None = None
    path = directory / PPUE_CURVE_FILE
    if path.exists() or path.is_symlink():
        curves = _load_curves(directory, site_index, sink)
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


def _load_curves(
    directory: Path, site_index: dict[str, int], sink: _Collector
) -> tuple[np.ndarray | None, ...]:
    """Each site's measured pPUE points from ``ppue_curve.csv`` (None for a site without)."""
    file = PPUE_CURVE_FILE
    points: dict[int, list[tuple[float, float]]] = {}
    first_line: dict[int, int] = {}
    # Rows per site, bad ones included: a bad row is reported once, not again as a
    # missing point.
    rows: dict[int, int] = {}
    for row in _read_csv(directory, file, PPUE_CURVE_COLUMNS, sink):
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


def _load_regions(directory: Path, sink: _Collector) -> tuple[Regions, dict[str, int]]:
    file = "regions.csv"
    rows = list(_read_csv(directory, file, REGION_COLUMNS, sink))
    index = _unique_ids(rows, "region_id", sink)
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


def _load_classes(directory: Path, sink: _Collector) -> tuple[Classes, dict[str, int]]:
    file = "classes.csv"
    rows = list(_read_csv(directory, file, CLASS_COLUMNS, sink))
    index = _unique_ids(rows, "class_id", sink)
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


def _make_table(kind: type, cols: dict[str, list[Any]], text_columns: tuple[str, ...]):
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
    sink: _Collector,
) -> list[np.ndarray]:
    """Read a table keyed by two ids into dense arrays, reporting unknown, duplicate, missing."""
    (a_col, a_index), (b_col, b_index) = first, second
    out = [np.full((len(a_index), len(b_index)), np.nan) for _ in values]
    seen: dict[tuple[int, int], int] = {}
    for row in _read_csv(directory, file, columns, sink):
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


def _load_profiles(directory, site_index, class_index, sink):
    return _pair_table(
        directory,
        "profiles.csv",
        PROFILE_COLUMNS,
        ("site_id", site_index),
        ("class_id", class_index),
        {"gpu_s": {}, "energy_j": {}, "prefill_ms": {}},
        sink,
    )


def _load_network(directory, site_index, region_index, sink):
    (rtt,) = _pair_table(
        directory,
        "network.csv",
        NETWORK_COLUMNS,
        ("site_id", site_index),
        ("region_id", region_index),
        {"rtt_ms": {}},
        sink,
    )
    return rtt


def _load_series(
    directory: Path, site_index: dict[str, int], step_of: dict[datetime, int], sink: _Collector
):
    file = "site_series.csv"
    S, T = len(site_index), len(step_of)
    arrays = [np.full((S, T), np.nan) for _ in range(5)]
    seen: dict[tuple[int, datetime], int] = {}
    available: dict[int, set[datetime]] = {i: set() for i in range(S)}
    for row in _read_csv(directory, file, SERIES_COLUMNS, sink):
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
        t = step_of.get(when)
        if t is None:
            continue
        for array, value in zip(arrays, values, strict=True):
            if value is not None:
                array[i, t] = value
    if (directory / file).is_file() and not any(
        p.file == file and p.row in (None, 1) for p in sink.problems
    ):
        steps = sorted(step_of, key=step_of.get)
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
    # How many consecutive steps the series covers from the start, for receding horizons.
    first = min(step_of, key=step_of.get) if step_of else None
    covered = _steps_covered(available, first, step_of)
    return (*arrays, covered)


def _steps_covered(available, first, step_of) -> int:
    if first is None:
        return 0
    ordered = sorted(step_of, key=step_of.get)
    step = ordered[1] - ordered[0] if len(ordered) > 1 else None
    if step is None:
        return len(ordered)
    common = set.intersection(*available.values()) if available else set()
    count, when = 0, first
    while when in common:
        count += 1
        when = when + step
    return count


def _load_demand(
    directory, region_index, class_index, classes: Classes, step_of, sink, *, populated: bool
):
    file = "demand.csv"
    R, C, T = len(region_index), len(class_index), len(step_of)
    demand = np.zeros((R, C, T))
    filled = np.zeros((R, C, T), dtype=bool)
    seen: dict[tuple[int, int, datetime], int] = {}
    rows = 0
    for row in _read_csv(directory, file, DEMAND_COLUMNS, sink):
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
        steps = sorted(step_of, key=step_of.get)
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


def _load_batch(directory, region_index, class_index, classes: Classes, sink):
    file = "batch.csv"
    batch = np.zeros((len(region_index), len(class_index)))
    seen: dict[tuple[int, int], int] = {}
    for row in _read_csv(directory, file, BATCH_COLUMNS, sink):
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


def check_servable(scenario: Scenario, sink: _Collector | None = None) -> list[Problem]:
    """Report demand that the fleet cannot serve.

    Checks, in turn: a class with demand that no site can serve within its TTFT SLO; a
    region/class whose demand at some step exceeds the capacity of every site allowed to
    serve it; a step whose interactive load exceeds the whole fleet; batch volume beyond what
    is left over the horizon. These are necessary conditions; they catch the usual mistakes
    with a precise message before any solver runs.

    Problems name a row only when the scenario was read from files (``sink`` of
    :func:`load_scenario` knows their line numbers); for a scenario built in memory the row
    is ``None``.
    """
    own = sink is None
    sink = sink or _Collector()
    allowed = scenario.allowed()
    sites, classes, regions = scenario.sites, scenario.classes, scenario.regions
    # Busy GPUs per site and step: u_max · gpus, derated by the cooling (model v1.1).
    capacity = sites.u_max[:, None] * cooling_max_gpus(scenario)
    derated = "cooling_design_c" in sites.plant_data()
    what, note = (" derated by the cooling,", " (derated by the cooling)") if derated else ("", "")
    demand = scenario.demand_rps
    for c in range(len(classes)):
        volume = demand[:, c].sum() + scenario.batch_requests[:, c].sum()
        if volume > 0 and not allowed[:, :, c].any():
            where = "demand.csv" if not classes.deferrable[c] else "batch.csv"
            sink.add(
                "classes.csv",
                f"class {classes.class_id[c]!r} has demand in {where} but "
                "no site can serve it within its TTFT SLO (rtt + prefill + max_wait > "
                "ttft_slo_ms for every site)",
                sink.lines.get(("classes.csv", c)),
                "ttft_slo_ms",
            )
            continue
        for j in range(len(regions)):
            if classes.deferrable[c]:
                continue
            load = demand[j, c]
            if not load.any():
                continue
            ok_sites = allowed[:, j, c]
            if not ok_sites.any():
                sink.add(
                    "demand.csv",
                    f"region {regions.region_id[j]!r} has demand for class "
                    f"{classes.class_id[c]!r} but no site reaches it within the "
                    f"{classes.ttft_slo_ms[c]:g} ms TTFT SLO",
                    None,
                    "requests_per_s",
                )
                continue
            per_site = scenario.gpu_s[ok_sites, c]
            best = (capacity[ok_sites] / per_site[:, None]).sum(axis=0)
            over = np.flatnonzero(load > best * (1 + 1e-9))
            if over.size:
                t = over[0]
                best = best[t]
                more = f" (and {over.size - 1} more steps)" if over.size > 1 else ""
                sink.add(
                    "demand.csv",
                    f"demand {load[t]:g} req/s of region "
                    f"{regions.region_id[j]!r}, class {classes.class_id[c]!r} at "
                    f"{scenario.times[t].isoformat()} is above the {best:g} req/s the "
                    f"sites within its SLO can serve{more}{note}",
                    sink.lines.get(("demand.csv", j, c, t)),
                    "requests_per_s",
                )
    interactive = classes.interactive
    # Lightest possible load: every request at the site where it costs the fewest GPU-s.
    min_gpu_s = np.where(allowed, scenario.gpu_s[:, None, :], np.inf).min(axis=0)  # (R, C)
    min_gpu_s = np.where(np.isfinite(min_gpu_s), min_gpu_s, 0.0)
    step_load = np.einsum("jct,jc->t", demand[:, interactive], min_gpu_s[:, interactive])
    fleet = capacity.sum(axis=0)
    over = np.flatnonzero(step_load > fleet * (1 + 1e-9))
    if over.size:
        t = over[0]
        sink.add(
            "demand.csv",
            f"interactive demand at {scenario.times[t].isoformat()} needs at "
            f"least {step_load[t]:g} busy GPUs, above the fleet's "
            f"{fleet[t]:g} "
            f"(u_max · gpus{what} summed over sites)",
            None,
            "requests_per_s",
        )
    batch_gpu_s = float((scenario.batch_requests * min_gpu_s).sum())
    spare_gpu_s = float((fleet - step_load).clip(min=0).sum() * scenario.step_seconds)
    if batch_gpu_s > spare_gpu_s * (1 + 1e-9):
        sink.add(
            "batch.csv",
            f"batch volume needs {batch_gpu_s:g} GPU-seconds, above the "
            f"{spare_gpu_s:g} left by interactive demand over the horizon",
            None,
            "requests",
        )
    return sink.problems if own else []


def load_demand_view(
    directory: str | os.PathLike[str],
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> DemandView:
    """Read only the coordinator's files of a scenario directory.

    Reads ``scenario.toml``, ``regions.csv``, ``classes.csv``, ``demand.csv`` and
    ``batch.csv``; no site file is opened, so this works on a coordinator-only directory
    (see :func:`split_scenario`).

    Raises
    ------
    ScenarioError
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError(Problem(str(directory), "not a directory"), str(directory))
    sink = _Collector()
    meta = _apply_overrides(_load_toml(directory, sink), start, steps, sink)
    regions, region_index = _load_regions(directory, sink)
    classes, class_index = _load_classes(directory, sink)
    keys_ok = _ids_sound(sink, "regions.csv", "region_id") and _ids_sound(
        sink, "classes.csv", "class_id", "deferrable"
    )
    times = step_times(meta["start"], meta["step_hours"], meta["steps"]) if meta else ()
    step_of = {t: k for k, t in enumerate(times)}
    if meta is not None and keys_ok:
        demand = _load_demand(
            directory, region_index, class_index, classes, step_of, sink,
            populated=bool(np.any(regions.population > 0)),
        )  # fmt: skip
    if keys_ok:
        batch = _load_batch(directory, region_index, class_index, classes, sink)
    if sink.problems or meta is None:
        raise ScenarioError(sink.problems, str(directory))
    return DemandView(
        name=meta["name"],
        start=times[0],
        step_hours=meta["step_hours"],
        objective=meta["objective"],
        regions=regions,
        classes=classes,
        times=times,
        demand_rps=demand,
        batch_requests=batch,
    )


SITE_PRIVATE_FILES = ("sites.csv", "profiles.csv", "network.csv", "site_series.csv")
#: A site's own optional files (model v1.1), sliced like the others where present.
SITE_OPTIONAL_FILES = (PPUE_CURVE_FILE,)
COORDINATOR_FILES = ("scenario.toml", "regions.csv", "classes.csv", "demand.csv", "batch.csv")


def site_sliced_files(directory: Path) -> tuple[str, ...]:
    """The files of ``directory`` sliced into each site's own: the v1 private files and
    model v1.1's optional ones where present."""
    return (*SITE_PRIVATE_FILES, *(n for n in SITE_OPTIONAL_FILES if (directory / n).is_file()))


def _csv_records(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file that has already been validated."""
    text = path.read_bytes().decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    rows = [dict(zip(header, r, strict=False)) for r in reader if r and any(v.strip() for v in r)]
    return header, rows


def _filtered_csv(path: Path, keep: Callable[[dict[str, str]], bool]) -> str:
    header, rows = _csv_records(path)
    return csv_text(header, [[r.get(h, "") for h in header] for r in rows if keep(r)])


def site_slice_files(directory: str | os.PathLike[str], site_id: str) -> dict[str, str]:
    """The files of a one-site scenario directory holding only ``site_id``'s rows.

    The site keeps its own rows of ``sites.csv``, ``profiles.csv``, ``network.csv`` and
    ``site_series.csv``, the public ``scenario.toml`` and ``classes.csv``, and the region
    ids and coordinates; region populations, demand and batch volumes (the coordinator's
    data) are left out: ``population`` is 0, and ``demand.csv`` and ``batch.csv`` hold a
    header and no rows, which :func:`load_scenario` reads as no demand, so the directory
    loads as a valid one-site scenario over any horizon its series covers.
    """
    directory = Path(directory)
    files: dict[str, str] = {}
    for name in (*SITE_PRIVATE_FILES, "scenario.toml", "classes.csv", "regions.csv"):
        if not (directory / name).is_file():
            raise ScenarioError(Problem(name, "file is missing"), str(directory))
    for name in site_sliced_files(directory):
        files[name] = _filtered_csv(
            directory / name, lambda row: row.get("site_id", "").strip() == site_id
        )
    if files["sites.csv"].count("\n") < 2:
        raise ScenarioError(
            Problem("sites.csv", f"no site with site_id {site_id!r}", None, "site_id"),
            str(directory),
        )
    for name in ("scenario.toml", "classes.csv"):
        files[name] = (directory / name).read_text(encoding="utf-8")
    _, regions = _csv_records(directory / "regions.csv")
    files["regions.csv"] = csv_text(
        REGION_COLUMNS,
        [[r["region_id"], r.get("name", ""), r["lat"], r["lon"], 0] for r in regions],
    )
    files["demand.csv"] = csv_text(DEMAND_COLUMNS, [])
    files["batch.csv"] = csv_text(BATCH_COLUMNS, [])
    return files


def is_split_root(directory: str | os.PathLike[str]) -> bool:
    """Is ``directory`` the output root of :func:`split_scenario`?"""
    directory = Path(directory)
    return (directory / "coordinator").is_dir() and (directory / "sites").is_dir()


def split_scenario(
    directory: str | os.PathLike[str], out: str | os.PathLike[str]
) -> dict[str, Path]:
    """Split a scenario into a coordinator directory and one directory per site.

    Writes ``out/coordinator/`` (the demand side) and ``out/sites/<site_id>/`` (each a
    valid one-site scenario directory holding only that site's private rows), so each can
    be shipped to its own host. The source is validated first.

    Returns
    -------
    dict
        ``{"coordinator": path, site_id: path, ...}``.

    Raises
    ------
    ScenarioError
        If the source is invalid (ids that could not name a directory are refused by
        validation, :data:`ID_PATTERN`). Nothing is written then.
    """
    scenario = load_scenario(directory)
    directory, out = Path(directory), Path(out)
    slices = {site: site_slice_files(directory, site) for site in scenario.sites.site_id}
    paths: dict[str, Path] = {}
    coordinator = {name: (directory / name).read_bytes() for name in COORDINATOR_FILES}
    paths["coordinator"] = write_directory_atomic(out / "coordinator", coordinator)
    for site, files in slices.items():
        paths[site] = write_directory_atomic(out / "sites" / site, files)
    return paths


# --------------------------------------------------------------------------------------------
# Writing


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


__all__ = [
    "SCENARIO_FILES",
    "allowed_pairs",
    "check_servable",
    "copy_scenario_dir",
    "is_split_root",
    "load_demand_view",
    "load_scenario",
    "scenario_tables",
    "scenario_toml",
    "site_slice_files",
    "split_scenario",
    "write_scenario",
]
