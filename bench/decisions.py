"""Every embedded scenario in one table — each plan's objective terms and where the gain of
temperature-awareness comes from — written to DECISIONS.md (issue 18, item 4).

    python -m bench.decisions [--scenarios NAME,NAME,...] [--out FILE] [--json FILE]

Run by hand; nothing here is asserted and nothing is tuned: the figures are what
:func:`thermoroute.common.compare.compare` measures on each scenario's default horizon (every
embedded scenario unless ``--scenarios`` names some), charged under the true model. The document is
replaced whole (an interrupted or refused run leaves the previous one), with the command that made
it, the commit, the machine, and where the data come from.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bench.admm_bench import machine_info
from thermoroute.common.compare import (
    MEAN_EFFICIENCY,
    OPTIMUM,
    OVERLOAD_TITLES,
    REFERENCE,
    Comparison,
    compare,
    seasons_markdown,
    seasons_to_json,
)
from thermoroute.common.evaluate import OVERLOAD_KINDS
from thermoroute.common.run_directory import OutputDirectoryError, write_file_whole
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenarios import embedded_path, embedded_scenarios

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python -m bench.decisions"
#: How a scenario with model v1.1 plant data is labelled, and its v1 view (plant data dropped
#: in memory, ``Scenario.v1_view``), which keeps the finding made before the data came.
PLANT_LABEL = "{name} [plant limits]"
V1_LABEL = "{name} [v1 view]"


def views(scenario: Scenario) -> list[Scenario]:
    """What the document compares of one embedded scenario: itself, and for one with plant
    data both it and its v1 view, each renamed so that every table says which is which."""
    if not scenario.sites.plant_data():
        return [scenario]
    return [
        replace(scenario, name=PLANT_LABEL.format(name=scenario.name)),
        replace(scenario.v1_view(), name=V1_LABEL.format(name=scenario.name)),
    ]


def _embedded_name(label: str) -> str:
    return label.split(" [")[0]


def _commit() -> str:
    """The checked-out commit, marked when the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"`{head}`" + (" with uncommitted changes" if dirty else "")


def _scenario_line(scenario: Scenario) -> str:
    """One row of the data table: size, horizon, weights and provenance, repository paths."""
    o = scenario.objective
    base = _embedded_name(scenario.name)
    provenance = embedded_path(base) / "PROVENANCE.md"
    source = (
        f"[PROVENANCE.md](common/scenarios/{base}/PROVENANCE.md)"
        if provenance.is_file()
        else "no PROVENANCE.md"
    )
    return (
        f"| {scenario.name} | {len(scenario.sites)} | {len(scenario.regions)} | "
        f"{scenario.steps} × {scenario.step_hours:g} h from {scenario.start.isoformat()} | "
        f"{o.carbon_aud_per_kg:g} | {o.water_aud_per_l:g} | {o.latency_aud_per_req_s:g} | "
        f"{source} |"
    )


def _summary(comparison: Comparison) -> str:
    """The decomposition of one scenario in a sentence, AUD over the horizon and per day."""
    d = comparison.decomposition
    days = comparison.steps * comparison.step_hours / 24.0
    gain = d.total_gain_aud
    site, weather = d.site_aud["objective"], d.weather_aud["objective"]
    site_share, weather_share = (
        d.share(d.site_aud)["objective"],
        d.share(d.weather_aud)["objective"],
    )
    unaware = d.unaware_aud["objective"]
    return (
        f"- **{comparison.scenario}**: gain {gain:,.3f} AUD over the horizon "
        f"({gain / days:,.3f} AUD a day; {100 * gain / unaware:.3f} % of {REFERENCE}'s "
        f"objective): {site:+,.3f} AUD ({100 * site_share:+.1f} %) from the sites' "
        f"differences, {weather:+,.3f} AUD ({100 * weather_share:+.1f} %) from the hourly "
        "weather."
    )


def _overloads(comparisons: list[Comparison]) -> list[str]:
    """The section on model v1.1's limits: per scenario with plant data and plan, what it
    puts above each kind of limit; empty when no scenario has plant data."""
    with_plant = [c for c in comparisons if any(row.overloads for row in c)]
    if not with_plant:
        return []
    header = "| scenario | plan | " + " | ".join(
        f"above {OVERLOAD_TITLES[k]} [site-h / IT kWh / requests]" for k in OVERLOAD_KINDS
    )
    lines = [
        "## Above the sites' limits (model v1.1 plant data)",
        "",
        "Each plan charged at the true temperatures: the site-hours, IT energy and requests it "
        "puts above each kind of limit (`thermoroute.common.evaluate.overloads`; what would be "
        "throttled or shed, never clipped). Baselines plan as model v1 does, without the plant; "
        f"`{OPTIMUM}` keeps within every limit. A plan with overloads did not do the work it "
        "is charged for, so its objective above is not comparable with the optimum's, and a "
        "part of the gain measured against it can turn negative (`mean-efficiency` overloads "
        "where the optimum holds back: `from hourly weather`). The `[v1 view]` rows are the "
        "same scenario with its plant data dropped in memory: the finding made before the "
        "data came, kept comparable.",
        "",
        header + " |",
        "|---|---|" + "--:|" * len(OVERLOAD_KINDS),
    ]
    for c in with_plant:
        for row in c:
            cells = []
            for kind in OVERLOAD_KINDS:
                o = row.overloads[kind]
                cells.append(
                    "–"
                    if o["site_hours"] <= 0
                    else f"{o['site_hours']:g} / {o['it_kwh']:,.1f} / {o['requests']:,.0f}"
                )
            lines.append(f"| {c.scenario} | {row.solver} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def document(scenarios: list[Scenario], comparisons: list[Comparison], command: str) -> str:
    """DECISIONS.md: how it was made (``command``), the data, the table and one line per
    scenario."""
    info = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    load = ", ".join(f"{x:.2f}" for x in info["loadavg"])
    lines = [
        "# Decisions: what temperature-awareness is worth, and where it comes from",
        "",
        f"Generated by `bench/decisions.py`; do not edit by hand — re-run `{COMMAND}`.",
        "",
        "Every plan below is charged under the true model "
        "(`thermoroute.common.evaluate.evaluate`). "
        f"`{OPTIMUM}` is the temperature-aware optimum; `{REFERENCE}` plans with one pPUE and "
        f"WUE for the whole fleet (its horizon mean); `{MEAN_EFFICIENCY}` plans with each "
        "site's own horizon-mean pPUE and WUE, constant in time — what a site's specification "
        "sheet tells, without a weather forecast. The gain of temperature-awareness, "
        f"`{REFERENCE} − {OPTIMUM}`, is the sum of what knowing the **sites' differences** is "
        f"worth (`{REFERENCE} − {MEAN_EFFICIENCY}`) and what knowing the **hourly weather** "
        f"adds (`{MEAN_EFFICIENCY} − {OPTIMUM}`). Per term (energy cost, carbon, water, "
        "latency, all in AUD at the scenario's weights) a part may be negative — a plan "
        "trades one term for another — and none is clipped; shares are of the scenario's "
        "total gain of the objective.",
        "",
        "## How these figures were made",
        "",
        f"```\n{command}\n```",
        "",
        f"- Date {info['date']}, commit {_commit()}.",
        f"- Machine: {info['nproc']} cores ({info['cpu']}), {info['mem_total_gb']} GB, "
        f"Python {info['python']}, {versions}; load average {load} at the end.",
        "- Solver: cvxpy + Clarabel at a relative gap of 1e-9 (`common/central.py`) for "
        f"`{OPTIMUM}`, `{REFERENCE}`, `{MEAN_EFFICIENCY}`, `price-only` and `carbon-only`; "
        "`nearest` is greedy. The figures are costs, not times: another machine gives them "
        "to the solver's accuracy.",
        "- Data: how every input was built and its licences, [docs/data.md](docs/data.md); "
        "each scenario's own numbers in its `PROVENANCE.md`:",
        "",
        "| scenario | sites | regions | horizon | carbon [AUD/kg] | water [AUD/L] "
        "| latency [AUD/req·s] | provenance |",
        "|---|--:|--:|---|--:|--:|--:|---|",
        *(_scenario_line(s) for s in scenarios),
        "",
        "## Every plan, scenario by scenario",
        "",
        seasons_markdown(comparisons).rstrip("\n"),
        "",
        *_overloads(comparisons),
        "## The gain in one line per scenario",
        "",
        *(_summary(c) for c in comparisons),
        "",
    ]
    return "\n".join(lines)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, compare every scenario, write the document (and JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios", help="Comma-separated embedded scenarios (default: every one)."
    )
    parser.add_argument("--out", type=Path, default=REPO / "DECISIONS.md")
    parser.add_argument("--json", type=Path, help="Also write the comparisons as JSON here.")
    arguments = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(arguments)
    names = embedded_scenarios() if args.scenarios is None else args.scenarios.split(",")
    unknown = [n for n in names if n not in embedded_scenarios()]
    if unknown:
        _fail(
            f"--scenarios {args.scenarios}: not embedded: {', '.join(unknown)} "
            f"(embedded: {', '.join(embedded_scenarios())})"
        )
    if len(set(names)) < len(names):
        _fail(f"--scenarios {args.scenarios}: a scenario named more than once")
    for target in (args.out, args.json):
        if target is not None and target.is_dir():
            _fail(f"{target} is a directory; name a file")
    scenarios = [v for n in names for v in views(load_scenario(embedded_path(n)))]
    comparisons = [compare(s) for s in scenarios]
    try:
        if args.json is not None:
            write_file_whole(args.json, seasons_to_json(comparisons))
        command = " ".join([COMMAND, *map(shlex.quote, arguments)])
        written = write_file_whole(args.out, document(scenarios, comparisons, command))
    except OutputDirectoryError as exc:
        _fail(str(exc))
    print(seasons_markdown(comparisons))
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
