"""Compare the centralised optimum with every baseline on one scenario.

Every row is a schedule charged by :func:`common.evaluate.evaluate` under the true model;
percent changes are against ``temperature-unaware``, the planner that optimises everything
except the temperature dependence of cooling — so they show what temperature-awareness
buys (or costs) in each quantity, whatever the sign.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.table import Table

from common.baselines import SOLVERS, run_solver
from common.scenario import Scenario

#: The solver every percent change is measured against.
REFERENCE = "temperature-unaware"

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
    """

    solver: str
    values: dict[str, float]
    pct_vs_reference: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def __getitem__(self, key: str) -> Any:
        if key == "solver":
            return self.solver
        return self.values[key]

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe form (NaN written as ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "solver": self.solver,
            **{k: clean(v) for k, v in self.values.items()},
            "pct_vs_" + REFERENCE: {k: clean(v) for k, v in self.pct_vs_reference.items()},
            "wall_s": float(self.wall_s),
        }


def percent_change(value: float, reference: float) -> float:
    """``100 · (value − reference) / |reference|``; NaN when ``reference`` is 0."""
    if reference == 0.0:
        return math.nan
    return 100.0 * (value - reference) / abs(reference)


def compare(scenario: Scenario, solvers: Sequence[str] | None = None) -> list[CompareRow]:
    """Run ``central`` and every baseline on ``scenario`` and charge each under the true model.

    Parameters
    ----------
    scenario : Scenario
    solvers : sequence of str, optional
        Names from :data:`common.baselines.SOLVERS`; default all of them, ``central`` first.
        ``temperature-unaware`` is always run (it is the reference of the percent changes).

    Returns
    -------
    list of CompareRow
        In the order of ``solvers``.
    """
    names = list(solvers) if solvers is not None else list(SOLVERS)
    run_names = names if REFERENCE in names else [*names, REFERENCE]
    values: dict[str, dict[str, float]] = {}
    walls: dict[str, float] = {}
    for name in run_names:
        run = run_solver(name, scenario)
        totals = run.evaluation.totals_with_objective()
        values[name] = {k: totals[k] for k in METRIC_KEYS}
        walls[name] = run.stats.wall_s
    ref = values[REFERENCE]
    return [
        CompareRow(
            solver=name,
            values={k: values[name][k] for k in METRIC_KEYS},
            pct_vs_reference={k: percent_change(values[name][k], ref[k]) for k in METRIC_KEYS},
            wall_s=walls[name],
        )
        for name in names
    ]


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


def to_text(rows: Sequence[CompareRow]) -> str:
    """The table as plain text, one line per solver, values and percent changes."""
    header = ["solver"] + [f"{name} [{unit}]" for _, name, unit, _ in METRICS]
    body = []
    for row in rows:
        cells = [row.solver]
        for key, _, _, fmt in METRICS:
            cell = format(row.values[key], fmt)
            if row.solver != REFERENCE:
                cell += f" ({_pct(row.pct_vs_reference[key])})"
            cells.append(cell)
        body.append(cells)
    widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if k == 0 else c.rjust(w)
            for k, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"(percent change against {REFERENCE}; every row charged under the true model)")
    return "\n".join(lines)


def to_json(rows: Sequence[CompareRow], scenario: Scenario | None = None) -> str:
    """The comparison as a JSON document (NaN written as ``null``)."""
    doc: dict[str, Any] = {"reference": REFERENCE, "rows": [r.as_dict() for r in rows]}
    if scenario is not None:
        doc = {"scenario": scenario.name, "steps": scenario.steps, **doc}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
