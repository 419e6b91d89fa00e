"""Compare the centralised optimum with every baseline, on one scenario or several.

Every row is a schedule charged by :func:`thermoroute.common.evaluate.evaluate` under the true
model; percent changes are against ``temperature-unaware``, the planner that optimises everything
except the temperature dependence of cooling — so they show what temperature-awareness buys (or
costs) in each quantity, whatever the sign.

The gain of temperature-awareness (temperature-unaware − optimum, in AUD) is split by the
``mean-efficiency`` plan, which knows each site's own horizon-mean pPUE and WUE but not the
hour-by-hour weather (:class:`GainDecomposition`): what knowing the *sites' differences* is
worth (temperature-unaware − mean-efficiency) and what knowing the *hourly weather* adds
(mean-efficiency − optimum), per term of the objective and in total.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from rich.markup import escape
from rich.table import Table

from thermoroute.common.baselines import SOLVERS, run_solver
from thermoroute.common.evaluate import OVERLOAD_KINDS, objective_parts_aud, overload_report
from thermoroute.common.scenario import Objective, Scenario

#: The solver every percent change is measured against.
REFERENCE = "temperature-unaware"
#: The plan between the reference and the optimum: each site's own mean efficiency.
MEAN_EFFICIENCY = "mean-efficiency"
#: The temperature-aware optimum.
OPTIMUM = "central"

#: Compared quantities: (key, column title, unit, format).
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("cooling_kwh", "cooling", "kWh", ",.1f"),
    ("facility_kwh", "facility", "kWh", ",.1f"),
    ("energy_cost_aud", "energy cost", "AUD", ",.2f"),
    ("carbon_kg", "carbon", "kg", ",.1f"),
    ("water_l", "water", "L", ",.1f"),
    ("ttft_mean_ms", "TTFT", "ms", ",.1f"),
    ("objective_aud", "objective", "AUD", ",.2f"),
)
METRIC_KEYS = tuple(m[0] for m in METRICS)

#: The terms of the objective (docs/model.md §6) as
#: :func:`thermoroute.common.evaluate.objective_parts_aud` #: names them, and ``objective``, their
#: sum: (key, title). All in AUD.
TERMS: tuple[tuple[str, str], ...] = (
    ("energy_cost", "energy cost"),
    ("carbon", "carbon"),
    ("water", "water"),
    ("latency", "latency"),
    ("objective", "objective"),
)
TERM_KEYS = tuple(t[0] for t in TERMS)

#: A total gain smaller than this fraction of the optimum's objective is within the
#: solvers' accuracy (Clarabel stops at a relative gap of 1e-9; folding residue flows moves
#: a schedule by at most 1e-6 req/s per pair): shares of it would be ratios of noise.
GAIN_NOISE_REL = 1e-6


def objective_terms(totals: Mapping[str, float | None], objective: Objective) -> dict[str, float]:
    """A plan's objective terms [AUD] (:data:`TERM_KEYS`) from its totals.

    Parameters
    ----------
    totals : mapping
        ``energy_cost_aud``, ``carbon_kg``, ``water_l``, ``latency_req_s`` and
        ``objective_aud`` (:meth:`thermoroute.common.evaluate.Evaluation.totals_with_objective`).
    objective : Objective
        The scenario's weights.
    """
    # A summary's totals write NaN as null; the sums read here are never NaN.
    needed = ("energy_cost_aud", "carbon_kg", "water_l", "latency_req_s", "objective_aud")
    known = {key: value for key in needed if (value := totals[key]) is not None}
    if len(known) < len(needed):
        raise ValueError(f"totals without {[k for k in needed if k not in known]}")
    parts = objective_parts_aud(known, objective)
    return {**parts, "objective": float(known["objective_aud"])}


@dataclass(frozen=True)
class GainDecomposition:
    """Where the gain of temperature-awareness comes from, per term and in total [AUD].

    ``gain = site + weather`` with

    - ``gain = unaware − aware``: what temperature-unaware costs above the temperature-aware
      plan (the optimum, or a run that plans with hourly temperatures);
    - ``site = unaware − mean_efficiency``: what knowing each site's own mean pPUE and WUE
      (its specification sheet) is worth;
    - ``weather = mean_efficiency − aware``: what knowing the weather hour by hour adds.

    The parts are differences of the three plans' true-model charges, so they add up by
    construction (to one rounding of the charges, ~1e-16 of them). Per term either part can
    have either sign — a plan may pay more energy cost to save more carbon and water, and
    the weather may undo part of what the sites' means suggested — and none is clipped;
    only the objective's total gain is ≥ 0 (to solver accuracy), the optimum being optimal.

    Attributes
    ----------
    unaware_aud, mean_efficiency_aud, aware_aud : dict
        Each plan's terms under the true model, keyed by :data:`TERM_KEYS` [AUD].
    aware : str
        Which plan is the temperature-aware one (``central``, or a run's solver).
    """

    unaware_aud: dict[str, float]
    mean_efficiency_aud: dict[str, float]
    aware_aud: dict[str, float]
    aware: str = OPTIMUM

    @classmethod
    def of(
        cls,
        unaware: Mapping[str, float | None],
        mean_efficiency: Mapping[str, float | None],
        aware: Mapping[str, float | None],
        objective: Objective,
        aware_name: str = OPTIMUM,
    ) -> GainDecomposition:
        """The decomposition from the three plans' totals (as :func:`objective_terms`)."""
        return cls(
            unaware_aud=objective_terms(unaware, objective),
            mean_efficiency_aud=objective_terms(mean_efficiency, objective),
            aware_aud=objective_terms(aware, objective),
            aware=aware_name,
        )

    @property
    def gain_aud(self) -> dict[str, float]:
        """``unaware − aware`` per term [AUD]."""
        return {k: self.unaware_aud[k] - self.aware_aud[k] for k in TERM_KEYS}

    @property
    def site_aud(self) -> dict[str, float]:
        """The part from the sites' differences, ``unaware − mean_efficiency`` [AUD]."""
        return {k: self.unaware_aud[k] - self.mean_efficiency_aud[k] for k in TERM_KEYS}

    @property
    def weather_aud(self) -> dict[str, float]:
        """The part from the hourly weather, ``mean_efficiency − aware`` [AUD]."""
        return {k: self.mean_efficiency_aud[k] - self.aware_aud[k] for k in TERM_KEYS}

    @property
    def total_gain_aud(self) -> float:
        """The objective's gain [AUD], what every share is a fraction of."""
        return self.gain_aud["objective"]

    def share(self, part: Mapping[str, float]) -> dict[str, float]:
        """``part`` per term as a fraction of the total gain (not of the term's own gain,
        which may be ~0 or negative); NaN when the total gain is not positive beyond solver
        noise (:data:`GAIN_NOISE_REL`), where a fraction of it would mean nothing."""
        gain = self.total_gain_aud
        if gain <= GAIN_NOISE_REL * abs(self.aware_aud["objective"]):
            return {k: math.nan for k in TERM_KEYS}
        return {k: part[k] / gain for k in TERM_KEYS}

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe form: every plan's terms, the parts [AUD] and their shares of the
        total gain (``None`` where not defined)."""

        def clean(values: Mapping[str, float]) -> dict[str, float | None]:
            return {k: None if math.isnan(v) else float(v) for k, v in values.items()}

        return {
            "aware": self.aware,
            "plans_aud": {
                REFERENCE: clean(self.unaware_aud),
                MEAN_EFFICIENCY: clean(self.mean_efficiency_aud),
                self.aware: clean(self.aware_aud),
            },
            "gain_aud": clean(self.gain_aud),
            "site_differences_aud": clean(self.site_aud),
            "hourly_weather_aud": clean(self.weather_aud),
            "site_differences_share": clean(self.share(self.site_aud)),
            "hourly_weather_share": clean(self.share(self.weather_aud)),
        }


@dataclass(frozen=True)
class CompareRow:
    """One solver's schedule charged under the true model.

    Attributes
    ----------
    solver : str
    values : dict
        ``cooling_kwh``, ``facility_kwh``, ``energy_cost_aud``, ``carbon_kg``, ``water_l``,
        ``ttft_mean_ms``, ``objective_aud`` (the true-model objective).
    pct_vs_reference : dict
        ``100 · (value − reference) / |reference|`` for each key; NaN when the reference
        value is 0.
    wall_s : float
        Planning time [s].
    terms_aud : dict
        The objective's terms and total [AUD], keyed by :data:`TERM_KEYS`.
    overloads : dict
        Model v1.1 (a scenario with plant data only): per kind of limit
        (:data:`thermoroute.common.evaluate.OVERLOAD_KINDS`) what the plan puts above it,
        ``{"site_hours", "it_kwh", "requests"}``; empty for v1 data.
    """

    solver: str
    values: dict[str, float]
    pct_vs_reference: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    terms_aud: dict[str, float] = field(default_factory=dict)
    overloads: dict[str, dict[str, float]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key == "solver":
            return self.solver
        return self.values[key]

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe form (NaN written as ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        out: dict[str, Any] = {
            "solver": self.solver,
            **{k: clean(v) for k, v in self.values.items()},
            "pct_vs_" + REFERENCE: {k: clean(v) for k, v in self.pct_vs_reference.items()},
            "wall_s": float(self.wall_s),
            "terms_aud": {k: clean(v) for k, v in self.terms_aud.items()},
        }
        if self.overloads:  # v1 data: the document stays as it was
            out["overloads"] = self.overloads
        return out


def percent_change(value: float, reference: float) -> float:
    """``100 · (value − reference) / |reference|``; NaN when ``reference`` is 0."""
    if reference == 0.0:
        return math.nan
    return 100.0 * (value - reference) / abs(reference)


@dataclass(frozen=True)
class Comparison(Sequence[CompareRow]):
    """Every compared plan on one scenario's horizon, and where the gain comes from.

    A sequence of its :class:`CompareRow` (iterate, index, ``len``), as the rows were
    returned before the decomposition existed.

    Attributes
    ----------
    scenario : str
        The scenario's name.
    start : str
        The horizon's start (ISO 8601 with offset).
    steps : int
    step_hours : float
        Step length [h].
    rows : tuple of CompareRow
        In the order asked for.
    decomposition : GainDecomposition
        The optimum's gain over temperature-unaware split into site differences and hourly
        weather.
    """

    scenario: str
    start: str
    steps: int
    step_hours: float
    rows: tuple[CompareRow, ...]
    decomposition: GainDecomposition

    @overload
    def __getitem__(self, index: int) -> CompareRow: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[CompareRow, ...]: ...
    def __getitem__(self, index: int | slice) -> CompareRow | tuple[CompareRow, ...]:
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def horizon(self) -> str:
        """``"24 × 1 h from 2023-01-17T00:00:00+10:00"``."""
        return f"{self.steps} × {self.step_hours:g} h from {self.start}"

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe form (NaN written as ``None``)."""
        return {
            "scenario": self.scenario,
            "start": self.start,
            "steps": self.steps,
            "step_hours": self.step_hours,
            "reference": REFERENCE,
            "rows": [r.as_dict() for r in self.rows],
            "decomposition": self.decomposition.as_dict(),
        }


def compare(scenario: Scenario, solvers: Sequence[str] | None = None) -> Comparison:
    """Run ``central`` and every baseline on ``scenario`` and charge each under the true model.

    Parameters
    ----------
    scenario : Scenario
    solvers : sequence of str, optional
        Names from :data:`thermoroute.common.baselines.SOLVERS`; default all of them, ``central``
        first. ``temperature-unaware`` (the reference of the percent changes), ``mean-efficiency``
        and ``central`` (the decomposition's) are always run.

    Returns
    -------
    Comparison
        Its rows in the order of ``solvers``.
    """
    names = list(solvers) if solvers is not None else list(SOLVERS)
    run_names = list(dict.fromkeys([*names, REFERENCE, MEAN_EFFICIENCY, OPTIMUM]))
    totals: dict[str, dict[str, float]] = {}
    walls: dict[str, float] = {}
    over: dict[str, dict[str, dict[str, float]]] = {}
    for name in run_names:
        run = run_solver(name, scenario)
        totals[name] = run.evaluation.totals_with_objective()
        walls[name] = run.stats.wall_s
        over[name] = overload_report(scenario, run.evaluation)
    ref = totals[REFERENCE]
    rows = tuple(
        CompareRow(
            solver=name,
            values={k: totals[name][k] for k in METRIC_KEYS},
            pct_vs_reference={k: percent_change(totals[name][k], ref[k]) for k in METRIC_KEYS},
            wall_s=walls[name],
            terms_aud=objective_terms(totals[name], scenario.objective),
            overloads=over[name],
        )
        for name in names
    )
    return Comparison(
        scenario=scenario.name,
        start=scenario.start.isoformat(),
        steps=scenario.steps,
        step_hours=scenario.step_hours,
        rows=rows,
        decomposition=GainDecomposition.of(
            ref, totals[MEAN_EFFICIENCY], totals[OPTIMUM], scenario.objective
        ),
    )


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}%"


def render_table(rows: Sequence[CompareRow], title: str | None = None) -> Table:
    """A ``rich`` table: each metric with its percent change against the reference."""
    table = Table(title=title, caption=f"% change against {REFERENCE}; true-model charges")
    table.add_column("solver", style="bold")
    for _, name, unit, _ in METRICS:
        # Escape: "[kWh]" would otherwise be read as rich markup and vanish.
        table.add_column(f"{name}\n{escape(f'[{unit}]')}", justify="right")
    for row in rows:
        cells = [escape(row.solver)]
        for key, _, _, fmt in METRICS:
            value = format(row.values[key], fmt)
            if row.solver != REFERENCE:
                value += f"\n{_pct(row.pct_vs_reference[key])}"
            cells.append(value)
        table.add_row(*cells)
    return table


#: Titles of the kinds of limit (model v1.1) in the overload table.
OVERLOAD_TITLES = {
    "capacity": "derated capacity",
    "grid": "grid connection",
    "water": "water allowance",
}


def overload_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows (one per plan) of what each plan puts above each v1.1 limit, as
    text; None for a scenario without plant data."""
    if not any(row.overloads for row in comparison):
        return None
    header = ["solver"] + [
        f"above {OVERLOAD_TITLES[k]} [site-h, IT kWh, requests]" for k in OVERLOAD_KINDS
    ]

    def cell(o: Mapping[str, float]) -> str:
        if o["site_hours"] <= 0:
            return "–"
        return f"{o['site_hours']:g} h, {o['it_kwh']:,.1f} kWh, {o['requests']:,.0f} req"

    body = [[row.solver] + [cell(row.overloads[k]) for k in OVERLOAD_KINDS] for row in comparison]
    return header, body


OVERLOAD_NOTE = (
    "model v1.1: what each plan, charged at the true temperatures, puts above the sites' "
    "limits (would be throttled or shed); never clipped. The objectives and the gain above "
    "leave out what that throttling or shedding would cost: a plan with overloads did not "
    "do the work it is charged for"
)


def render_overloads(comparison: Comparison, title: str | None = None) -> Table | None:
    """A ``rich`` table of :func:`overload_cells`; None without plant data."""
    cells = overload_cells(comparison)
    if cells is None:
        return None
    header, body = cells
    table = Table(title=title, caption=OVERLOAD_NOTE)
    for k, name in enumerate(header):
        table.add_column(escape(name), justify="left" if k == 0 else "right")
    for row in body:
        table.add_row(*(escape(c) for c in row))
    return table


def _share(value: float) -> str:
    return "–" if math.isnan(value) else f"{100.0 * value:+.1f}%"


def decomposition_cells(d: GainDecomposition) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per term, then the objective) of the decomposition, as text:
    what every rendering (terminal, plain text, the HTML report) shows."""
    header = [
        "term",
        "unaware [AUD]",
        "mean-eff. [AUD]",
        f"{d.aware} [AUD]",
        "gain [AUD]",
        "site differences [AUD]",
        "hourly weather [AUD]",
    ]
    gain, site, weather = d.gain_aud, d.site_aud, d.weather_aud
    site_share, weather_share = d.share(site), d.share(weather)
    body = [
        [
            title,
            f"{d.unaware_aud[key]:,.2f}",
            f"{d.mean_efficiency_aud[key]:,.2f}",
            f"{d.aware_aud[key]:,.2f}",
            f"{gain[key]:+,.3f}",
            f"{site[key]:+,.3f} ({_share(site_share[key])})",
            f"{weather[key]:+,.3f} ({_share(weather_share[key])})",
        ]
        for key, title in TERMS
    ]
    return header, body


def decomposition_note(d: GainDecomposition) -> str:
    """What the decomposition's columns mean, in one sentence."""
    return (
        f"unaware = {REFERENCE}, mean-eff. = {MEAN_EFFICIENCY}; gain = {REFERENCE} − "
        f"{d.aware} = site differences ({REFERENCE} − {MEAN_EFFICIENCY}) + hourly weather "
        f"({MEAN_EFFICIENCY} − {d.aware}); in brackets each part's share of the objective's "
        "total gain; per term a part may be negative (a plan trades one term for another), "
        "and none is clipped"
    )


def render_decomposition(d: GainDecomposition, title: str | None = None) -> Table:
    """A ``rich`` table of the decomposition: per term the three plans, the parts in AUD
    and their shares of the total gain."""
    header, body = decomposition_cells(d)
    table = Table(title=title, caption=decomposition_note(d))
    for k, name in enumerate(header):
        table.add_column(escape(name), justify="left" if k == 0 else "right")
    for cells in body:
        table.add_row(*(escape(c) for c in cells))
    return table


def _text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """Aligned plain-text lines: first column left, the others right, a rule under the
    header."""
    widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if k == 0 else c.rjust(w)
            for k, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def to_text(comparison: Comparison) -> str:
    """The comparison as plain text: one line per solver, values and percent changes; then
    the decomposition, one line per term."""
    header = ["solver"] + [f"{name} [{unit}]" for _, name, unit, _ in METRICS]
    body = []
    for row in comparison:
        cells = [row.solver]
        for key, _, _, fmt in METRICS:
            cell = format(row.values[key], fmt)
            if row.solver != REFERENCE:
                cell += f" ({_pct(row.pct_vs_reference[key])})"
            cells.append(cell)
        body.append(cells)
    lines = _text_table(header, body)
    lines.append(f"(percent change against {REFERENCE}; every row charged under the true model)")
    lines.append("")
    lines.extend(_text_table(*decomposition_cells(comparison.decomposition)))
    lines.append(f"({decomposition_note(comparison.decomposition)})")
    if (overload_table := overload_cells(comparison)) is not None:
        lines.append("")
        lines.extend(_text_table(*overload_table))
        lines.append(f"({OVERLOAD_NOTE})")
    return "\n".join(lines)


def to_json(comparison: Comparison) -> str:
    """The comparison as a JSON document (NaN written as ``null``)."""
    return json.dumps(comparison.as_dict(), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------
# Several scenarios (seasons) in one table


def _season_cells(comparisons: Sequence[Comparison]) -> tuple[list[str], list[list[str]]]:
    """One table over scenarios: per scenario each plan's terms and objective, then the
    gain and its two parts (AUD, and in brackets the share of the scenario's total gain)."""
    header = [
        "scenario",
        "plan",
        *(f"{title} [AUD]" for _, title in TERMS),
        f"objective vs {REFERENCE}",
    ]
    body = []
    for comparison in comparisons:
        for row in comparison:
            body.append(
                [
                    comparison.scenario,
                    row.solver,
                    *(f"{row.terms_aud[k]:,.2f}" for k in TERM_KEYS),
                    "" if row.solver == REFERENCE else _pct(row.pct_vs_reference["objective_aud"]),
                ]
            )
        d = comparison.decomposition
        parts = (
            ("gain", d.gain_aud),
            ("from site differences", d.site_aud),
            ("from hourly weather", d.weather_aud),
        )
        for label, part in parts:
            share = d.share(part)
            body.append(
                [
                    comparison.scenario,
                    label,
                    *(f"{part[k]:+,.3f} ({_share(share[k])})" for k in TERM_KEYS),
                    "",
                ]
            )
    return header, body


def seasons_note(comparisons: Sequence[Comparison]) -> str:
    """Each scenario's horizon and how to read the decomposition rows."""
    horizons = "; ".join(f"{c.scenario}: {c.horizon}" for c in comparisons)
    return (
        f"Every plan charged under the true model. Horizons: {horizons}. "
        f"gain = {REFERENCE} − {OPTIMUM} = from site differences ({REFERENCE} − "
        f"{MEAN_EFFICIENCY}) + from hourly weather ({MEAN_EFFICIENCY} − {OPTIMUM}), in AUD "
        "and in brackets as a share of the scenario's total gain of the objective; per term "
        "a part may be negative (a plan trades one term for another) and none is clipped."
    )


def render_seasons(comparisons: Sequence[Comparison], title: str | None = None) -> Table:
    """One ``rich`` table over several scenarios (:func:`_season_cells`): a section per
    scenario, headed by its name (a column of names would not fit 160 characters)."""
    header, body = _season_cells(comparisons)
    table = Table(title=title, caption=seasons_note(comparisons))
    table.add_column(escape(header[1]), no_wrap=True)
    for name in header[2:]:
        table.add_column(escape(name), justify="right")
    previous = None
    for cells in body:
        if cells[0] != previous:
            if previous is not None:
                table.add_section()
            table.add_row(f"[bold]{escape(cells[0])}[/]")
            previous = cells[0]
        table.add_row(*(escape(c) for c in cells[1:]))
    return table


def seasons_markdown(comparisons: Sequence[Comparison]) -> str:
    """The same table as Markdown (for DECISIONS.md), its reading note below it."""
    header, body = _season_cells(comparisons)
    align = ["---", "---", *(["--:"] * (len(header) - 2))]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(cells) + " |" for cells in body),
    ]
    return "\n".join(lines) + "\n\n" + seasons_note(comparisons) + "\n"


def seasons_to_json(comparisons: Sequence[Comparison]) -> str:
    """Several comparisons as one JSON document (NaN written as ``null``)."""
    doc = {"reference": REFERENCE, "scenarios": [c.as_dict() for c in comparisons]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
