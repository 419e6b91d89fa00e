"""The ``thermoroute`` command line.

Every command that reads a scenario accepts either the name of an embedded scenario
(``australia``, ``australia-20``) or a scenario directory. Bad input ends with one readable
line per problem on stderr and exit status 2, never a traceback; outputs are written
atomically, so a failed run leaves earlier outputs untouched.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from thermoroute import signals
from thermoroute.common.errors import ScenarioError, SiteDataInvalid
from thermoroute.common.run_directory import OutputDirectoryError
from thermoroute.coordinator.methods import DEFAULT_METHOD, METHODS
from thermoroute.isolation import in_private_network
from thermoroute.ray_auth import ClusterAccessError

if TYPE_CHECKING:
    import pandas as pd

    from thermoroute.common.scenario import Scenario
    from thermoroute.observed_demand import PrometheusDemand
    from thermoroute.options import RunOptions
    from thermoroute.results import Solution

#: -h as well as --help, for every command.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="thermoroute",
    help="Temperature-, carbon- and water-aware routing of LLM inference across "
    "Australian edge data centres, solved across the sites on Ray (a distributed interior "
    "point, or exchange ADMM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)
scenario_app = typer.Typer(
    help="Export, validate, synthesise and split scenarios.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
app.add_typer(scenario_app, name="scenario")
token_app = typer.Typer(
    help="The Ray cluster's shared token.", no_args_is_help=True, context_settings=HELP_OPTIONS
)
app.add_typer(token_app, name="token")
route_app = typer.Typer(
    help="Make the published plan route real traffic (a load balancer's weights).",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
app.add_typer(route_app, name="route")


def _version(wanted: bool) -> None:
    if wanted:
        from thermoroute.common import __version__

        sys.stdout.write(f"thermoroute {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Temperature-, carbon- and water-aware routing of LLM inference across Australian edge
    data centres, solved across the sites on Ray (a distributed interior point, or exchange
    ADMM)."""


# Not a terminal (a pipe, CI log): print full-width tables rather than 80-column ones.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=_WIDTH)

EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130
#: Set when this process only relayed a run in its private network (which speaks for itself).
_RELAYED = False
#: Set when serve or the route follower logs JSON lines: its stderr then holds nothing else,
#: not even the closing "terminated" (its shutdown line says so).
_JSON_LOG = False


def _choices(values: Sequence[str]) -> list[tuple[str, str]]:
    return [(value.replace("-", "_"), value) for value in values]


#: The solvers that solve the whole scenario in one process: the optimum and the baselines.
CENTRAL_SOLVERS = (
    "central", "nearest", "temperature-unaware", "mean-efficiency", "price-only", "carbon-only",
)  # fmt: skip
#: ``--solver``: ``distributed``, a method's name (the same as ``--solver distributed
#: --method NAME``, kept for scripts of the time when only exchange ADMM ran distributed),
#: or a central solver.
Solver = StrEnum(  # type: ignore[misc]  # the registry's names, known at import
    "Solver", _choices(["distributed", *METHODS, *CENTRAL_SOLVERS])
)
#: ``--method``: the registered distributed methods.
Method = StrEnum("Method", _choices(list(METHODS)))  # type: ignore[misc]
DEFAULT = Method(DEFAULT_METHOD)
DISTRIBUTED = Solver("distributed")


class Penalty(StrEnum):
    per_row = "per-row"
    scalar = "scalar"


class Acceleration(StrEnum):
    none = "none"
    anderson = "anderson"
    nesterov = "nesterov"


class Executor(StrEnum):
    ray = "ray"
    inline = "inline"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


# Help panels: at 80 columns Typer gives an option's help what its panel's widest names and
# values leave, so the options are grouped (and their values named shortly, the choices
# listed in the help) for every panel to leave the help most of the width.
DISTRIBUTED_PANEL = "The sites' agents (distributed)"
METHOD_PANEL = "One method's"
METRICS_PANEL = "Metrics (distributed)"
FORECAST_PANEL = "Forecasts and the end"
OUTPUT_PANEL = "Output"
PRIVACY_PANEL = "Cost privacy (distributed)"

ScenarioArg = Annotated[
    str,
    typer.Argument(
        help="Embedded scenario name (`thermoroute scenario list`) or a scenario directory."
    ),
]
StartOpt = Annotated[
    datetime | None,
    typer.Option(
        "--start",
        metavar="TIME",
        help="Horizon start, ISO-8601 with offset (default: scenario.toml's).",
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
    ),
]
StepsOpt = Annotated[
    int | None, typer.Option("--steps", min=1, metavar="N", help="Horizon length in steps.")
]
NoIsolateOpt = Annotated[
    bool,
    typer.Option(
        "--no-isolate",
        rich_help_panel=DISTRIBUTED_PANEL,
        help="A local Ray runs outside a private network namespace, listening on every "
        "interface (by default nothing it starts listens beyond loopback).",
    ),
]
IsolateOpt = Annotated[bool, typer.Option("--isolate", hidden=True, help="The default.")]


def _isolated(
    wanted: bool, distributed: bool, executor: str, address: str | None,
    metrics: tuple[str, int] | None,
) -> None:  # fmt: skip
    """Re-run this command in a private network namespace when it starts a local Ray; the
    exit status is the inner command's. Returns (does nothing) where that does not apply."""
    from thermoroute import isolation

    if isolation.in_private_network():
        if metrics is not None:
            isolation.start_inner_relay(metrics[1])
        return
    if not (wanted and distributed and executor == "ray" and address is None):
        return
    try:
        status = isolation.run_isolated(sys.argv[1:], forward=metrics)
    except isolation.Unisolated as exc:
        err_console.print(
            f"[yellow]warning:[/] {exc}: the local Ray listens on all interfaces (token "
            "authentication still guards it); --no-isolate silences this",
            highlight=False,
        )
        return
    except OSError as exc:
        host, port = metrics or ("", 0)
        reason = exc.strerror or exc
        raise _fail(f"--metrics-port {port}: cannot listen on {host}:{port}: {reason}") from None
    global _RELAYED
    _RELAYED = True
    raise typer.Exit(status)


def _isolation(ctx: typer.Context, options: RunOptions) -> bool:
    """Whether a local Ray run is to be isolated (``--isolate``, the default, or
    ``--no-isolate``); a given flag that no local Ray run reads is refused, as
    :meth:`RunOptions.check` refuses the others."""
    wanted = _switch(ctx, "isolate", "no_isolate", default=True)
    if "isolate" not in options.given:
        return wanted
    if not options.distributed:
        beside = f"--solver {options.solver}"
    elif options.executor != "ray":
        beside = f"--executor {options.executor}"
    elif options.address is not None:
        beside = f"--address {options.address}"
    else:
        return wanted
    flag = "--isolate" if wanted else "--no-isolate"
    raise _fail(
        f"{flag} with {beside}: read by a local Ray run only (--executor ray, no --address)"
    )


def _given(ctx: typer.Context) -> frozenset[str]:
    """The command's parameters the user gave (on the command line or in the environment):
    a default must never make a flag conflict (:meth:`RunOptions.check`)."""
    from typer._click.core import ParameterSource

    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    names = {name for name in ctx.params if ctx.get_parameter_source(name) in given}
    # A switch's hidden default flag and its shown one (_switch) set one option.
    return frozenset(
        name[3:] if name.startswith("no_") and name[3:] in ctx.params else name for name in names
    )


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: MESSAGE`` on stderr (as written: brackets in it are text, not markup)
    and return the exit to raise."""
    err_console.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    return typer.Exit(code)


def _stdout_kept(ctx: typer.Context) -> TextIO:
    """This command's stdout, kept for its own output until the command ends: Ray prints
    node-wide warnings (a raylet's "N worker processes have been started") to ``sys.stdout``
    from a thread of its own, at any time, so everything else printed there meanwhile goes
    to stderr."""
    own = sys.stdout
    sys.stdout = sys.stderr
    ctx.call_on_close(lambda: setattr(sys, "stdout", own))
    return own


def _check_out(out: Path) -> None:
    """Refuse an output directory no run may write, before any work (exit status 2)."""
    from thermoroute.common.run_directory import OutputDirectoryError, check_output_directory

    try:
        check_output_directory(out)
    except OutputDirectoryError as exc:
        raise _fail(f"--out {out}: {exc}") from None


def _unwritten(out: Path | None, error: OSError) -> str:
    """One line for outputs that could not be written: which file, why, and that the
    earlier output (replaced only whole, after every file was written) is intact."""
    name = str(error.filename) if error.filename else ""
    if out is not None:  # the staged copy's path, said as the output's
        name = re.sub(rf"\.{re.escape(out.name)}\.new-[^/]+", out.name, name)
    what = f"cannot write {name}" if name else "cannot write the outputs"
    reason = error.strerror or str(error).splitlines()[0]
    return f"--out {out}: {what}: {reason}; the earlier output there is intact"


def _check_simulation_span(directory: Path, days: float, horizon: int) -> None:
    """Refuse --days and --horizon whose data no scenario may hold, naming the flags (the
    scenario's own check would blame its steps)."""
    import tomllib

    from thermoroute.common.bounds import bound_of

    try:
        table = tomllib.loads((directory / "scenario.toml").read_text(encoding="utf-8"))
        step_hours = float(table["scenario"]["step_hours"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # the scenario's own validation says what is wrong with it
    steps = bound_of("scenario.toml", "steps")
    if steps is None or not math.isfinite(step_hours) or step_hours <= 0:
        return
    # As simulate counts: the days' steps, then the last horizon's end.
    span = max(1, round(days * round(24.0 / step_hours))) + horizon - 1
    if not steps.admits(span):
        raise _fail(
            f"--days {days:g} --horizon {horizon}: {span:,} steps of data "
            f"({step_hours:g} h each); a scenario holds {steps.describe()} steps"
        )


def resolve_scenario(source: str) -> Path:
    """A scenario directory for an embedded name or a path."""
    from thermoroute.common.scenarios import scenario_directory

    try:
        return scenario_directory(source)
    except ScenarioError as exc:
        raise _fail("; ".join(str(p) for p in exc.problems)) from None


def _load(source: str, start: datetime | None, steps: int | None) -> tuple[Path, Scenario]:
    from thermoroute.common.scenario_loading import load_scenario

    directory = resolve_scenario(source)
    try:
        return directory, load_scenario(directory, start=start, steps=steps)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None


# The method's flags, the same for run, simulate and serve (checked by RunOptions.check).
EpsRelOpt = Annotated[
    float | None,
    typer.Option(
        metavar="EPS",
        rich_help_panel=DISTRIBUTED_PANEL,
        help="Relative tolerance ε_rel of the stopping test (default: the method's own, "
        "interior point 1e-4, ADMM 5e-5).",
    ),
]
MaxIterOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        rich_help_panel=DISTRIBUTED_PANEL,
        help="Iteration limit (default: ADMM 2000, interior point 100).",
    ),
]
# A switch shows only the flag that changes its default; the default's own flag stays,
# hidden, for scripts that spell it out (a "--on/--off" pair's two long names would leave
# its help a sixth of an 80-column screen).
NoSecureAggregationOpt = Annotated[
    bool,
    typer.Option(
        "--no-secure-aggregation",
        rich_help_panel=METHOD_PANEL,
        help="Interior point: the sites' sums in the clear, not masked (only to measure "
        "what masking costs).",
    ),
]
SecureAggregationOpt = Annotated[
    bool, typer.Option("--secure-aggregation", hidden=True, help="The default.")
]
ExecutorOpt = Annotated[
    Executor,
    typer.Option(
        rich_help_panel=DISTRIBUTED_PANEL,
        help="The sites' agents as Ray actors, or in this process.",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        metavar="HOST:PORT",
        rich_help_panel=DISTRIBUTED_PANEL,
        help="Join this Ray cluster (or 'auto') instead of starting a local one.",
    ),
]
SitesPerAgentOpt = Annotated[
    int,
    typer.Option(
        min=1, metavar="K", rich_help_panel=DISTRIBUTED_PANEL,
        help="Sites hosted by one agent.",
    ),
]  # fmt: skip
MethodOpt = Annotated[
    Method,
    typer.Option(
        metavar="METHOD",
        help="The distributed method: ipm, the interior point (tens of iterations), or "
        "admm, the paper's exchange ADMM (hundreds).",
    ),
]
CostPrivacyOpt = Annotated[
    float | None,
    typer.Option(
        "--cost-privacy",
        metavar="ε",
        rich_help_panel=PRIVACY_PANEL,
        help="Each site plans with private Laplace noise on its cost of IT energy, so the "
        "published schedule and shadow prices hide its hourly price and weather (ε per "
        "site-hour; docs/model.md §11). Off by default.",
    ),
]
CostPrivacySensitivityOpt = Annotated[
    float | None,
    typer.Option(
        "--cost-privacy-sensitivity",
        metavar="Δ",
        rich_help_panel=PRIVACY_PANEL,
        help="With --cost-privacy: the change of a site-hour's cost of IT energy hidden, "
        "in AUD/MWh (noise scale Δ/ε; default 10).",
    ),
]


def _switch(ctx: typer.Context, on: str, off: str, *, default: bool) -> bool:
    """The value of a switch offered as two flags (parameters ``on`` and ``off``, each
    ``True`` when given): as given, else ``default``; both given is refused."""
    if ctx.params[on] and ctx.params[off]:
        flags = [p.opts[0] for p in ctx.command.params if p.name in (on, off)]
        raise _fail(f"{flags[0]} with {flags[1]}: one or the other")
    return True if ctx.params[on] else False if ctx.params[off] else default


@app.command()
def run(  # noqa: PLR0913 (typer: one parameter per command-line option)
    ctx: typer.Context,
    scenario: ScenarioArg = "australia",
    solver: Annotated[
        Solver,
        typer.Option(
            metavar="SOLVER",
            help=f"distributed: the sites' agents solve together, see --method; "
            f"{', '.join(METHODS)}: distributed with that method; {', '.join(CENTRAL_SOLVERS)}: "
            "one solver on the whole scenario.",
        ),
    ] = DISTRIBUTED,
    method: MethodOpt = DEFAULT,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Output directory (default runs/SCENARIO-SOLVER)."),
    ] = None,
    start: StartOpt = None,
    steps: StepsOpt = None,
    executor: ExecutorOpt = Executor.ray,
    address: AddressOpt = None,
    sites_per_agent: SitesPerAgentOpt = 1,
    eps_rel: EpsRelOpt = None,
    max_iter: MaxIterOpt = None,
    agent_restarts: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            rich_help_panel=DISTRIBUTED_PANEL,
            help="On Ray: how often a crashed agent is restarted before the run fails.",
        ),
    ] = 3,
    share_site_details: Annotated[
        bool,
        typer.Option(
            "--share-site-details",
            rich_help_panel=DISTRIBUTED_PANEL,
            help="The sites send their hourly physics and totals to the coordinator, which "
            "writes them as a central run does (else each writes its own in OUT/sites/ID/).",
        ),
    ] = False,
    penalty: Annotated[
        Penalty,
        typer.Option(
            metavar="KIND",
            rich_help_panel=METHOD_PANEL,
            help="ADMM: per-row, an adaptive penalty per coupling row (needed on large "
            "fleets), or scalar, one ρ (Boyd's residual balancing).",
        ),
    ] = Penalty.per_row,
    acceleration: Annotated[
        Acceleration,
        typer.Option(
            metavar="KIND",
            rich_help_panel=METHOD_PANEL,
            help="ADMM: none, anderson (safeguarded) or nesterov (with restart); neither "
            "cuts iterations on the shipped fleets (BENCHMARKS.md).",
        ),
    ] = Acceleration.none,
    inner_fallback: Annotated[
        bool,
        typer.Option(
            "--inner-fallback",
            rich_help_panel=METHOD_PANEL,
            help="ADMM: a site QP that OSQP leaves unsolved is finished by Clarabel, an "
            "interior-point solver (large fleets; BENCHMARKS.md).",
        ),
    ] = False,
    no_inner_fallback: Annotated[
        bool, typer.Option("--no-inner-fallback", hidden=True, help="The default.")
    ] = False,
    no_secure_aggregation: NoSecureAggregationOpt = False,
    secure_aggregation: SecureAggregationOpt = False,
    cost_privacy: CostPrivacyOpt = None,
    cost_privacy_sensitivity: CostPrivacySensitivityOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            rich_help_panel=METRICS_PANEL,
            help="Serve Prometheus metrics on this port during the run.",
        ),
    ] = None,
    metrics_addr: Annotated[
        str,
        typer.Option(
            metavar="ADDR",
            rich_help_panel=METRICS_PANEL,
            help="Bind address of the metrics server.",
        ),
    ] = "127.0.0.1",
    metrics_linger: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            rich_help_panel=METRICS_PANEL,
            help="Keep serving metrics this long after the run (for a last scrape).",
        ),
    ] = 0.0,
    no_compare_baseline: Annotated[
        bool,
        typer.Option(
            "--no-compare",
            rich_help_panel=OUTPUT_PANEL,
            help="Do not solve temperature-unaware too for the comparison.",
        ),
    ] = False,
    compare_baseline: Annotated[
        bool, typer.Option("--compare", hidden=True, help="The default.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            rich_help_panel=OUTPUT_PANEL,
            # The 25 is thermoroute.progress.PIPE_EVERY (not imported here: --help stays fast).
            help="No live display (else: on a terminal, redrawn in place; elsewhere one "
            "line every 25 iterations, the first and the last).",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            rich_help_panel=OUTPUT_PANEL,
            help="Print summary.json on stdout instead of the tables (for scripts; implies "
            "--quiet and --no-compare).",
        ),
    ] = False,
    no_isolate: NoIsolateOpt = False,
    isolate: IsolateOpt = False,
) -> None:
    """Solve one horizon of a scenario and write docs/model.md §9 outputs.

    SCENARIO may also be the output root of ``thermoroute scenario split`` (a deployment:
    the coordinator's data here, each site's data on its own host); only the distributed
    methods (``--solver distributed``, the default) can solve it, since nothing else may read
    the sites' data.
    """
    from thermoroute import isolation
    from thermoroute.options import OptionError, RunOptions

    options = RunOptions(
        solver=solver.value,
        method=method.value,
        executor=executor.value,
        address=address,
        sites_per_agent=sites_per_agent,
        penalty=penalty.value,
        acceleration=acceleration.value,
        eps_rel=eps_rel,
        max_iter=max_iter,
        secure_aggregation=_switch(
            ctx, "secure_aggregation", "no_secure_aggregation", default=True
        ),
        share_site_details=share_site_details,
        agent_restarts=agent_restarts,
        inner_fallback=_switch(ctx, "inner_fallback", "no_inner_fallback", default=False),
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        metrics_linger=metrics_linger,
        steps=steps,
        live=not (quiet or as_json),
        cost_privacy_epsilon=cost_privacy,
        cost_privacy_sensitivity=cost_privacy_sensitivity,
        given=_given(ctx),
    )
    compare_baseline = _switch(ctx, "compare_baseline", "no_compare_baseline", default=True)
    if as_json and ctx.params["compare_baseline"]:
        raise _fail("--compare with --json: --json prints summary.json alone; drop one")
    try:
        # In a run's private network the outer process has checked the flags already (and
        # holds the metrics port for its relay).
        options.check(probe=not isolation.in_private_network())
    except OptionError as exc:
        raise _fail(str(exc)) from None
    distributed = options.distributed
    metrics = None if metrics_port is None else (metrics_addr, metrics_port)
    _isolated(_isolation(ctx, options), distributed, executor.value, address, metrics)
    from thermoroute import api, runner

    json_out = _stdout_kept(ctx) if as_json else sys.stdout  # for the JSON alone
    try:
        directory, scen = api.resolve_source(resolve_scenario(scenario), options, start=start)
    except (ScenarioError, api.SplitRootNeedsDistributed) as exc:
        raise _fail(str(exc)) from None
    if scen is None:  # a split deployment: the driver cannot read the sites' data
        compare_baseline = False
    name = directory.resolve().name if scen is None else scen.name
    label = options.effective_method if distributed else solver.value
    out = out or Path("runs") / f"{name}-{label}"
    _check_out(out)
    try:
        solution = api.solve_resolved(
            directory,
            scen,
            options,
            out=out,
            compare=compare_baseline and not as_json,
            console=err_console if as_json else console,
        )
    except (ScenarioError, SiteDataInvalid) as exc:
        raise _fail(str(exc)) from None
    except OutputDirectoryError as exc:
        raise _fail(f"--out {out}: {exc}") from None
    except (runner.SolveError, ClusterAccessError) as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    except OSError as exc:  # writing the outputs: a full disk, a quota, an I/O error
        raise _fail(_unwritten(out, exc), EXIT_FAILED) from None
    if as_json:
        json_out.write(json.dumps(solution.summary, indent=2) + "\n")
        json_out.flush()
    else:
        runner.print_run(solution, console, compare=compare_baseline)
        runner.print_decision(solution, console, scen)
    if not solution.converged:
        raise _fail(f"{label} did not converge (see {out}/summary.json)", EXIT_NOT_CONVERGED)


@app.command()
def compare(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Embedded scenario name (`thermoroute scenario list`) or a scenario "
            "directory (default australia)."
        ),
    ] = None,
    scenarios: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            metavar="SCENARIO",
            help="Another scenario; repeat it (e.g. one per season) for one table over them "
            "all: each plan's objective terms and where the gain comes from.",
        ),
    ] = None,
    start: StartOpt = None,
    steps: StepsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Compare the temperature-aware optimum with every baseline on one horizon, and split
    its gain over temperature-unaware into site differences and hourly weather."""
    names = ([scenario] if scenario is not None else []) + list(scenarios or [])
    names = names or ["australia"]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _fail(f"--scenario {repeated[0]}: given more than once")
    # Every scenario is read before any solve: a bad name costs nothing and prints nothing.
    loaded = [_load(name, start, steps)[1] for name in names]
    from thermoroute import api
    from thermoroute.common.central import CentralSolveError
    from thermoroute.common.compare import (
        render_decomposition,
        render_overloads,
        render_seasons,
        render_table,
        seasons_to_json,
        to_json,
    )

    try:
        comparisons = [api.compare(scen) for scen in loaded]
    except CentralSolveError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    if len(comparisons) > 1:
        if as_json:
            sys.stdout.write(seasons_to_json(comparisons))
        else:
            console.print(render_seasons(comparisons, title="every plan, scenario by scenario"))
        return
    (comparison,) = comparisons
    if as_json:
        sys.stdout.write(to_json(comparison))
        return
    console.print(render_table(comparison, title=f"{comparison.scenario}: {comparison.horizon}"))
    console.print(render_decomposition(comparison.decomposition, title="where the gain comes from"))
    if (overloaded := render_overloads(comparison, title="above the sites' limits")) is not None:
        console.print(overloaded)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run's output directory (run --out).")],
    out: Annotated[
        Path | None, typer.Option(help="The HTML file to write (default RUN_DIR/report.html).")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="The run's scenario (embedded name or directory) for the map, temperatures, "
            "baselines and explanation; default: the embedded scenario the run names, if any.",
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML report of a run: who serves whom, a map, the sites
    hour by hour, the baselines, shadow prices, convergence and what temperature-awareness
    changed. Works on whatever detail the run directory holds and says what is missing."""
    t0 = time.perf_counter()  # the imports below count: matplotlib, cvxpy
    from thermoroute.report import build_report
    from thermoroute.results import RunDirectoryInvalid, Solution

    target = out or run_dir / "report.html"
    try:
        solution = Solution.read(run_dir)
    except RunDirectoryInvalid as exc:
        raise _fail(str(exc)) from None
    scen = _report_scenario(solution, scenario)
    from thermoroute.common.run_directory import write_file_whole

    spent = {"starting and reading the run and the scenario": time.perf_counter() - t0}
    page = build_report(solution, scen, spent)
    try:
        write_file_whole(target, page)
    except OutputDirectoryError as exc:
        raise _fail(f"--out {target}: {exc}") from None
    # Where the time went (the slowest parts first; the figures are drawn in their sections).
    parts = sorted(((s, name) for name, s in spent.items() if s >= 0.05), reverse=True)
    where = ", ".join(f"{name.lower()} {s:.1f} s" for s, name in parts)
    console.print(
        f"wrote {target} in {time.perf_counter() - t0:.1f} s" + (f" ({where})" if where else ""),
        highlight=False,
    )


def _report_scenario(solution: Solution, source: str | None) -> Scenario | None:
    """The run's scenario over the run's horizon, checked against its schedule; ``None``
    when not named and not embedded."""
    from thermoroute.common.scenarios import embedded_scenarios

    if source is None:
        if solution.scenario_name not in embedded_scenarios():
            return None
        source = solution.scenario_name
    start = solution.summary.get("start")
    start = datetime.fromisoformat(start) if start is not None else None
    _, scen = _load(source, start, solution.summary.get("steps"))
    unknown = sorted(set(solution.site_ids) - set(scen.sites.site_id))
    if unknown:
        raise _fail(
            f"--scenario {source}: has no site(s) {', '.join(unknown)} of the run "
            f"{solution.directory}; name the run's scenario"
        )
    return scen


class Vary(StrEnum):
    carbon = "carbon"
    water = "water"
    latency = "latency"


@app.command()
def pareto(
    scenario: ScenarioArg = "australia",
    vary: Annotated[
        Vary, typer.Option(help="The objective weight to sweep (carbon, water or latency price).")
    ] = Vary.carbon,
    points: Annotated[
        int, typer.Option(help="Weights, log-spaced from default/10 to default·10 (2–50).")
    ] = 7,
    start: StartOpt = None,
    steps: StepsOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default runs/<scenario>-pareto-<vary>).")
    ] = None,
) -> None:
    """Trade-off front: solve over a sweep of one weight (the centralised optimum and every
    baseline at each), write pareto.csv and pareto.png (the objective and every term
    against the weight)."""
    from thermoroute.common.run_directory import RunDirectory
    from thermoroute.pareto import WEIGHTS, SweepError, front_figure, sweep, weights_for
    from thermoroute.report import figure_png

    _, scen = _load(scenario, start, steps)
    try:
        weights_for(scen, vary.value, points)
    except SweepError as exc:
        raise _fail(str(exc)) from None
    out = out or Path("runs") / f"{scen.name}-pareto-{vary.value}"
    _check_out(out)
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task(f"{scen.name}: sweeping {vary.value}", total=None)
        frame = sweep(
            scen,
            vary.value,
            points,
            on_point=lambda done, total: progress.update(task, completed=done, total=total),
        )
    field, _ = WEIGHTS[vary.value]
    figure = front_figure(frame, scen.name)
    try:
        with RunDirectory(out, command=f"pareto --vary {vary.value}") as run_dir:
            assert run_dir.staging is not None
            frame.to_csv(run_dir.staging / "pareto.csv", index=False)
            (run_dir.staging / "pareto.png").write_bytes(figure_png(figure))
            out = run_dir.commit()
    except OutputDirectoryError as exc:
        raise _fail(f"--out {out}: {exc}") from None
    _print_front(frame, field)
    console.print(f"wrote {out}/pareto.csv and pareto.png", highlight=False)


def _print_front(frame: pd.DataFrame, field: str) -> None:
    from rich.table import Table

    table = Table(
        title=f"front: {field}", title_justify="left", caption="* the scenario's own weight"
    )
    table.add_column(escape(field), justify="right")
    table.add_column("plan")
    for _, name, unit, _ in FRONT_COLUMNS:
        table.add_column(escape(f"{name} [{unit}]"), justify="right")
    for weight, rows in frame.groupby("weight", sort=True):
        for k, row in enumerate(rows.itertuples()):
            mark = " *" if row.default else ""
            table.add_row(
                f"{weight:.4g}{mark}" if k == 0 else "",
                escape(str(row.solver)),
                *(format(getattr(row, key), fmt) for key, _, _, fmt in FRONT_COLUMNS),
                end_section=k == len(rows) - 1,
            )
    console.print(table)


#: The front's columns in the terminal, short names: (key, name, unit, format).
FRONT_COLUMNS = (
    ("objective_aud", "objective", "AUD", ",.2f"),
    ("objective_above_optimum_pct", "vs optimum", "%", "+.3f"),
    ("energy_cost_aud", "energy", "AUD", ",.2f"),
    ("carbon_kg", "carbon", "kg", ",.1f"),
    ("water_l", "water", "L", ",.0f"),
    ("ttft_mean_ms", "TTFT", "ms", ",.1f"),
    ("cooling_kwh", "cooling", "kWh", ",.1f"),
)


@app.command()
def simulate(  # noqa: PLR0913 (typer: one parameter per command-line option)
    ctx: typer.Context,
    scenario: ScenarioArg = "australia",
    days: Annotated[
        float,
        typer.Option(min=0.04, max=366.0, metavar="DAYS", help="Days of operation to simulate."),
    ] = 1.0,
    horizon: Annotated[
        int, typer.Option(min=1, max=8784, metavar="STEPS", help="Steps per re-solve.")
    ] = 24,
    start: StartOpt = None,
    method: MethodOpt = DEFAULT,
    seed: Annotated[
        int,
        typer.Option(metavar="N", rich_help_panel=FORECAST_PANEL, help="Seed of the noise."),
    ] = 0,
    perfect_site_forecast: Annotated[
        bool,
        typer.Option(
            "--perfect-site-forecast",
            rich_help_panel=FORECAST_PANEL,
            help="Sites plan with their real weather, price and carbon (by default with "
            "forecasts whose errors grow with lead time: site_agent/forecast.py).",
        ),
    ] = False,
    site_forecast_noise: Annotated[
        bool, typer.Option("--site-forecast-noise", hidden=True, help="The default.")
    ] = False,
    no_drain: Annotated[
        bool,
        typer.Option(
            "--no-drain",
            rich_help_panel=FORECAST_PANEL,
            help="Stop after --days: the plans serve unequal work, compared per served "
            "request. By default no deferrable volume arrives after --days and the horizons "
            "shorten to the last full one's end (at most horizon − 1 more steps), so both "
            "plans serve every request and their totals compare; exit 3 if a backlog is "
            "left then.",
        ),
    ] = False,
    drain: Annotated[bool, typer.Option("--drain", hidden=True, help="The default.")] = False,
    out: Annotated[Path | None, typer.Option(metavar="DIR", help="Output directory.")] = None,
    executor: ExecutorOpt = Executor.ray,
    address: AddressOpt = None,
    sites_per_agent: SitesPerAgentOpt = 1,
    eps_rel: EpsRelOpt = None,
    max_iter: MaxIterOpt = None,
    no_isolate: NoIsolateOpt = False,
    isolate: IsolateOpt = False,
    no_secure_aggregation: NoSecureAggregationOpt = False,
    secure_aggregation: SecureAggregationOpt = False,
    cost_privacy: CostPrivacyOpt = None,
    cost_privacy_sensitivity: CostPrivacySensitivityOpt = None,
) -> None:
    """Receding-horizon operation: re-solve every step with a forecast, apply the first.

    The summary gives, per plan, the requests that arrived, were served and were left, the
    objective per 1,000 served requests, and the totals' changes only for equal work.
    """
    from thermoroute import isolation
    from thermoroute.options import OptionError, RunOptions

    try:
        options = RunOptions(
            method=method.value, executor=executor.value, address=address,
            sites_per_agent=sites_per_agent, eps_rel=eps_rel, max_iter=max_iter,
            secure_aggregation=_switch(ctx, "secure_aggregation", "no_secure_aggregation",
                                       default=True),
            cost_privacy_epsilon=cost_privacy, cost_privacy_sensitivity=cost_privacy_sensitivity,
            given=_given(ctx),
        ).check(probe=not isolation.in_private_network())  # fmt: skip
    except OptionError as exc:
        raise _fail(str(exc)) from None
    drain = _switch(ctx, "drain", "no_drain", default=True)
    noisy = _switch(ctx, "site_forecast_noise", "perfect_site_forecast", default=True)
    if out is not None:
        _check_out(out)
    _isolated(_isolation(ctx, options), True, executor.value, address, None)
    directory = resolve_scenario(scenario)
    _check_simulation_span(directory, days, horizon)
    from thermoroute import runner
    from thermoroute.common.central import CentralSolveError
    from thermoroute.distributed_run import run_receding
    from thermoroute.simulation import SimulationSpec
    from thermoroute.site_agent.forecast import SiteForecast

    spec = SimulationSpec(
        days=days, horizon=horizon, start=start, seed=seed, drain=drain,
        site_forecast=SiteForecast(seed=seed) if noisy else SiteForecast.perfect(),
    )  # fmt: skip
    try:
        result = run_receding(directory, options, spec, out=out, console=console)
    except (ScenarioError, SiteDataInvalid) as exc:
        raise _fail(str(exc)) from None
    except OutputDirectoryError as exc:
        raise _fail(f"--out {out}: {exc}") from None
    except (runner.SolveError, ClusterAccessError) as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    except OSError as exc:  # writing the outputs: a full disk, a quota, an I/O error
        raise _fail(_unwritten(out, exc), EXIT_FAILED) from None
    except CentralSolveError as exc:  # the baseline could not plan a step
        raise _fail(f"{exc}".splitlines()[0], EXIT_FAILED) from None
    if drain and not result.drained:
        left = [f"{method.value} {result.work.deferrable_left:,.0f}"]
        if result.baseline_work is not None:
            left.append(f"{result.baseline} {result.baseline_work.deferrable_left:,.0f}")
        raise _fail(
            f"the backlog did not drain by the end of the last horizon: deferrable requests "
            f"left: {', '.join(left)}; the totals are not comparable",
            EXIT_NOT_CONVERGED,
        )


@app.command()
def serve(  # noqa: PLR0913 (typer: one parameter per command-line option)
    ctx: typer.Context,
    scenario: ScenarioArg = "australia",
    method: MethodOpt = DEFAULT,
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDR", help="Address of the plan API (beyond loopback: needs --token-file)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port of the plan API (/plan, /status, /metrics).")
    ] = 8808,
    token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="The bearer token the API asks for (of all but /healthz)."
        ),
    ] = None,
    step_seconds: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Wall seconds per step of the clock (default: the step's real length), to "
            "replay the scenario's data faster in demos and tests.",
        ),
    ] = None,
    cycles: Annotated[
        int | None,
        typer.Option(metavar="N", help="Stop after this many cycles (default: when stopped)."),
    ] = None,
    horizon: Annotated[
        int | None, typer.Option(metavar="STEPS", help="Steps planned per cycle.")
    ] = None,
    max_plan_age: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", help="Age at which the API marks a plan stale (default: 2 steps)."
        ),
    ] = None,
    cycle_budget: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", help="Time a cycle's method may take (default: 0.8 of a step)."
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Checkpoint after every cycle here; resume from it."),
    ] = None,
    executor: ExecutorOpt = Executor.ray,
    address: AddressOpt = None,
    sites_per_agent: SitesPerAgentOpt = 1,
    eps_rel: EpsRelOpt = None,
    max_iter: MaxIterOpt = None,
    no_isolate: NoIsolateOpt = False,
    isolate: IsolateOpt = False,
    no_secure_aggregation: NoSecureAggregationOpt = False,
    secure_aggregation: SecureAggregationOpt = False,
    cost_privacy: CostPrivacyOpt = None,
    cost_privacy_sensitivity: CostPrivacySensitivityOpt = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="The log on stderr (a line per cycle, the start and the shutdown): text, or "
            "one JSON object per line (keys: docs/serve.md)."
        ),
    ] = LogFormat.text,
    demand_from_prometheus: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="A Prometheus server whose observed request rates are the current step's "
            "demand (needs --demand-query; docs/serve.md).",
        ),
    ] = None,
    demand_query: Annotated[
        str | None,
        typer.Option(
            metavar="PROMQL",
            help="The rate per region and class, e.g. 'sum by (region, class) "
            "(rate(requests_total[1h]))'.",
        ),
    ] = None,
    demand_config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="TOML whose [demand] table maps the query's labels to region and class ids "
            "(default: labels region and class holding the ids).",
        ),
    ] = None,
    prometheus_token_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="A bearer token Prometheus asks for (mode 600)."),
    ] = None,
) -> None:
    """Keep the site agents up and re-plan every step: each cycle the sites re-read their
    own data (appended forecasts), the coordinator its demand forecast, the method runs
    warm-started, and the plan is published over HTTP (GET /plan, /status, /metrics).
    Every cycle logs a line on stderr: its outcome, and why it kept the previous plan."""
    from thermoroute import isolation
    from thermoroute.options import OptionError, RunOptions

    try:
        # A crashed agent rejoins at the next cycle (Ray restarts it) while this cycle keeps
        # the previous plan: the method does not wait for it inside a cycle.
        options = RunOptions(
            method=method.value, executor=executor.value, address=address,
            sites_per_agent=sites_per_agent, eps_rel=eps_rel, max_iter=max_iter,
            secure_aggregation=_switch(ctx, "secure_aggregation", "no_secure_aggregation",
                                       default=True),
            agent_restarts=0, metrics_port=port, metrics_addr=host,
            cost_privacy_epsilon=cost_privacy, cost_privacy_sensitivity=cost_privacy_sensitivity,
            given=_given(ctx),
        ).check(probe=not isolation.in_private_network())  # fmt: skip
    except OptionError as exc:
        raise _fail(
            str(exc).replace("--metrics-port", "--port").replace("--metrics-addr", "--host")
        ) from None
    token = _serve_token(host, token_file)
    for flag, value in (("--step-seconds", step_seconds), ("--max-plan-age", max_plan_age),
                        ("--cycle-budget", cycle_budget)):  # fmt: skip
        if value is not None and not (0 < value <= 86_400 * 7):
            raise _fail(f"{flag} {value}: seconds in (0, 604,800]")
    if cycles is not None and cycles < 1:
        raise _fail(f"--cycles {cycles}: an integer >= 1")
    observer = _demand_observer(
        demand_from_prometheus, demand_query, demand_config, prometheus_token_file
    )
    from thermoroute.common.state_files import StateFileError

    if state_dir is not None:
        from thermoroute.service import prepare_state_dir

        try:
            prepare_state_dir(state_dir)
        except StateFileError as exc:
            raise _fail(f"--state-dir {exc}") from None
    global _JSON_LOG
    _JSON_LOG = log_format == LogFormat.json
    _isolated(_isolation(ctx, options), True, executor.value, address, (host, port))
    import logging

    from thermoroute import service_log

    ctx.call_on_close(service_log.configure(log_format.value))
    directory = resolve_scenario(scenario)
    from thermoroute.cluster import cluster_summary, discover, serve_fleet
    from thermoroute.http_api import ApiServer, create_app
    from thermoroute.service import PlanningService, ServeSettings
    from thermoroute.service_metrics import ServiceMetrics

    coordinator_dir, site_ids = discover(directory)
    metrics = ServiceMetrics()
    try:
        service = PlanningService(
            coordinator_dir,
            site_ids,
            options.method_settings(),
            ServeSettings(
                horizon=horizon, step_seconds=step_seconds, cycles=cycles,
                max_plan_age_s=max_plan_age, cycle_budget_s=cycle_budget, state_dir=state_dir,
            ),
            serve_fleet(directory, site_ids, executor=executor.value, address=address,
                        sites_per_agent=sites_per_agent, cost_privacy=options.cost_privacy()),
            metrics=metrics,
            cluster=cluster_summary,
            observer=observer,
        )  # fmt: skip
    except (ScenarioError, SiteDataInvalid) as exc:
        raise _fail(str(exc)) from None
    except StateFileError as exc:  # refused: nothing of it was run
        raise _fail(f"--state-dir {exc}; move it away to start afresh") from None
    except ClusterAccessError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    # In a run's private network the API listens on its loopback; the host's --host:--port
    # is relayed to it (thermoroute.isolation).
    bind = "127.0.0.1" if isolation.in_private_network() else host
    server = ApiServer(create_app(service, metrics.registry, token), bind, port)
    try:
        server.start()
    except OSError as exc:
        service.stop(f"the plan API did not start on port {port}")
        service.run()  # closes the fleet
        raise _fail(f"--port {port}: {exc}") from None
    import signal

    def finish(*_: object) -> None:
        # The service ends its cycle (or abandons it at the next wait) and closes the
        # fleet; the command then exits 143 like any other stopped by SIGTERM.
        signals.record()
        service.stop("SIGTERM")

    signal.signal(signal.SIGTERM, finish)
    url = f"http://{host}:{port}"
    service_log.log_event(
        # Not __name__: run as ``python -m thermoroute.cli`` that is "__main__", outside the
        # thermoroute loggers.
        logging.getLogger("thermoroute.serve"), logging.INFO, "start",
        f"serving the plan of {len(site_ids)} sites at {url}/plan — a cycle every "
        f"{service.step_seconds:g} s over {service.horizon} steps (status: /status)",
        url=url, sites=len(site_ids), method=method.value, step_seconds=service.step_seconds,
        horizon=service.horizon,
    )  # fmt: skip
    try:
        service.run()
    except KeyboardInterrupt:
        service.stop()
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        server.stop()
    if signals.terminated():
        raise typer.Exit(signals.EXIT_TERMINATED)


def _serve_token(host: str, token_file: Path | None) -> str | None:
    """The API's bearer token; refuse to serve beyond loopback without one."""
    import ipaddress

    if token_file is None:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise _fail(
                f"--host {host}: serving the plan beyond loopback needs --token-file (a "
                "bearer token; thermoroute token generate FILE writes one)"
            )
        return None
    token = _read_token(token_file)
    if len(token) < 16 or any(c.isspace() for c in token):
        raise _fail(f"--token-file {token_file}: a token of at least 16 characters, no spaces")
    return token


def _read_token(token_file: Path, flag: str = "--token-file") -> str:
    """A bearer token file's token; refused when others than its owner may read it (the
    message names ``flag``)."""
    try:
        mode = token_file.stat().st_mode
        if mode & 0o077:
            raise _fail(
                f"{flag} {token_file}: readable by group or others (mode "
                f"{mode & 0o777:o}); a token must be its owner's alone: chmod 600 it"
            )
        return token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _fail(f"{flag} {token_file}: {exc.strerror or exc}") from None


def _demand_observer(
    url: str | None, query: str | None, config: Path | None, token_file: Path | None
) -> PrometheusDemand | None:
    """The Prometheus reader of ``serve``'s observed demand, or ``None`` when not asked for;
    flags that need ``--demand-from-prometheus`` without it, or a bad URL, query, mapping
    file or token file, are refused in one line before any work."""
    from thermoroute import observed_demand

    if url is None:
        beside = [
            flag for flag, value in (("--demand-query", query), ("--demand-config", config),
                                     ("--prometheus-token-file", token_file)) if value is not None
        ]  # fmt: skip
        if beside:
            raise _fail(f"{beside[0]}: read only with --demand-from-prometheus URL")
        return None
    try:
        base = observed_demand.check_url(url)
    except ValueError as exc:
        raise _fail(f"--demand-from-prometheus {url!r}: {exc}") from None
    if query is None or not query.strip():
        raise _fail(
            "--demand-from-prometheus needs --demand-query (a PromQL rate per region and "
            "class, e.g. 'sum by (region, class) (rate(requests_total[1h]))')"
        )
    try:
        mapping = (
            observed_demand.load_demand_config(config)
            if config is not None
            else observed_demand.DemandConfig()
        )
    except observed_demand.DemandConfigError as exc:  # "[demand]" is no markup
        raise _fail(str(exc)) from None
    token = None
    if token_file is not None:
        token = _read_token(token_file, "--prometheus-token-file")
        if not token or any(c.isspace() for c in token):
            raise _fail(f"--prometheus-token-file {token_file}: one token, no spaces")
    return observed_demand.PrometheusDemand(base, query, mapping, token)


@app.command()
def fleet(
    ctx: typer.Context,
    scenario: ScenarioArg = "australia",
    method: MethodOpt = DEFAULT,
    sites_per_agent: SitesPerAgentOpt = 1,
    start: StartOpt = None,
    steps: StepsOpt = None,
) -> None:
    """Keep a local Ray and SCENARIO's site agents up for the runs that join it.

    Prints the address; ``thermoroute run SCENARIO --address ADDRESS`` with the same
    --method, --sites-per-agent, --start and --steps then runs on these agents instead of
    starting Ray and its own (one run at a time). A run whose scenario files or settings
    differ starts its own agents, as without a fleet. Ctrl-C or SIGTERM stops the fleet:
    its agents and its Ray go with it.
    """

    from thermoroute import api
    from thermoroute.cluster import discover, ensure_ray, plan_groups, stop_ray
    from thermoroute.coordinator.fleet import SiteGroupLost
    from thermoroute.local_fleet import keep_agents
    from thermoroute.options import OptionError, RunOptions

    options = RunOptions(method=method.value, sites_per_agent=sites_per_agent, steps=steps)
    try:
        options.check(probe=False)
        directory, scen = api.resolve_source(resolve_scenario(scenario), options, start=start)
    except (OptionError, ScenarioError, api.SplitRootNeedsDistributed) as exc:
        raise _fail(str(exc)) from None
    if scen is None:
        raise _fail(
            f"{scenario}: a split deployment's root; a fleet keeps one machine's emulated "
            "sites up (on a deployment each site's agent runs on its own host)"
        )
    spec = options.launch_spec(scen)
    groups = plan_groups(discover(directory)[1], sites_per_agent)
    import ray

    address_out = _stdout_kept(ctx)  # the fleet's one line: a script reads the address
    # Not in a private network: the runs that join it must reach it. Like `ray start`, its
    # Ray listens on this machine's interfaces, guarded by the local token (token mode).
    ensure_ray()
    try:
        try:
            kept = keep_agents(Path(directory), groups, spec.agent_setup)
        except (SiteDataInvalid, SiteGroupLost) as exc:
            raise _fail(str(exc), EXIT_FAILED) from None
        address = ray.get_runtime_context().gcs_address
        address_out.write(
            f"a fleet of {len(kept.handles)} site agents for {scen.name} is up at {address}: "
            f"thermoroute run {scenario} --address {address} runs on it; Ctrl-C or SIGTERM "
            "stops it\n"
        )
        address_out.flush()
        while True:  # `kept` holds the agents' handles: until Ctrl-C or SIGTERM (130, 143)
            time.sleep(3600)
    finally:
        stop_ray()


@app.command()
def status(
    address: Annotated[
        str, typer.Option(help="The plan API of a running serve (host:port).")
    ] = "127.0.0.1:8808",
    token_file: Annotated[
        Path | None, typer.Option(help="The bearer token file, if the service asks for one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print /status as JSON.")] = False,
) -> None:
    """One screen: the cluster, the agents and the service's last cycles (from /status)."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{address}/status")
    if token_file is not None:
        request.add_header("Authorization", f"Bearer {_read_token(token_file)}")
    try:
        with urllib.request.urlopen(request, timeout=5.0) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise _fail(f"--address {address}: the service answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _fail(f"--address {address}: no thermoroute serve answers there ({reason})") from None
    except (ValueError, http.client.HTTPException):  # InvalidURL: spaces, control characters
        raise _fail(f"--address {address!r}: host:port (e.g. 10.0.0.10:8808)") from None
    if as_json:
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return
    _print_status(body)


def _print_status(body: dict[str, Any]) -> None:
    from rich.table import Table

    from thermoroute.plan_api import StatusResponse

    status = StatusResponse.model_validate(body)
    cluster = status.cluster or {}
    plan = status.plan
    console.print(
        f"thermoroute serve · {status.method} · cycle {status.current_cycle} at "
        f"{status.clock_time.isoformat()} · {status.cycles} cycles run "
        f"({', '.join(f'{k} {v}' for k, v in status.cycles_by_outcome.items())})",
        highlight=False,
    )
    if cluster:
        console.print(
            f"cluster: {cluster.get('nodes')} node(s), {cluster.get('cpus'):g} CPUs, "
            f"site resources: {', '.join(cluster.get('site_resources') or []) or 'none'}",
            highlight=False,
        )
    if plan:
        console.print(
            f"plan: cycle {plan.cycle} from {plan.start.isoformat()}, {plan.age_s:.1f} s old"
            f"{' — STALE' if plan.stale else ''}{' — degraded' if plan.degraded else ''}",
            highlight=False,
        )
    else:
        console.print("plan: none yet", highlight=False)
    last = status.last_cycles[-1] if status.last_cycles else None
    if last is not None:
        console.print(
            f"last cycle: {last.cycle}, {last.outcome}"
            f"{' (degraded)' if last.degraded else ''}"
            f"{f' — {escape(last.reason)}' if last.reason else ''}",
            highlight=False,
        )
    observed = status.observed_demand
    if observed is not None and observed.cycle is not None:
        console.print(
            f"observed demand (cycle {observed.cycle}): {len(observed.observed)} region/class "
            f"observed, {len(observed.forecast_kept)} kept the forecast",
            highlight=False,
        )
    sites = Table(title="agents", title_justify="left")
    sites.add_column("site")
    sites.add_column("state")
    for site in status.sites:
        sites.add_row(escape(site.site_id), escape(site.state))
    console.print(sites)
    cycles_table = Table(title="last cycles", title_justify="left")
    for column in ("cycle", "time", "outcome", "iterations", "seconds", "reason"):
        cycles_table.add_column(
            column, justify="right" if column in ("cycle", "iterations", "seconds") else "left"
        )
    for row in status.last_cycles:
        # The reason names the stale and rejoining sites, and a failed cycle's error.
        cycles_table.add_row(
            str(row.cycle), row.time.isoformat(), row.outcome, str(row.iterations),
            f"{row.duration_s:.2f}", escape(row.reason or ""),
        )  # fmt: skip
    console.print(cycles_table)


@route_app.command("haproxy")
def route_haproxy(  # noqa: PLR0913 (typer: one parameter per command-line option)
    ctx: typer.Context,
    haproxy: Annotated[
        str,
        typer.Option(
            "--haproxy",
            help="HAProxy's runtime API: the path of its `stats socket ... level admin`, or "
            "host:port of a TCP one.",
        ),
    ] = "/run/haproxy/admin.sock",
    address: Annotated[
        str, typer.Option(help="The plan API of a running serve (host:port).")
    ] = "127.0.0.1:8808",
    token_file: Annotated[
        Path | None, typer.Option(help="The bearer token file, if the service asks for one.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML mapping of region/class to backend and site to server names "
            "(docs/serve.md); default: backend be_<region>_<class>, server <site id>."
        ),
    ] = None,
    period: Annotated[
        float, typer.Option(min=0.1, max=3600.0, help="Seconds between polls of the plan.")
    ] = 10.0,
    max_backoff: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=3600.0,
            help="Longest wait in seconds between retries when the service or HAProxy does "
            "not answer (1 s, then doubling).",
        ),
    ] = 60.0,
    once: Annotated[
        bool, typer.Option("--once", help="Apply the current plan once and exit (for cron).")
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="The log on stderr (a line per applied or held plan, the start and the "
            "shutdown): text, or one JSON object per line (keys: docs/serve.md)."
        ),
    ] = LogFormat.text,
) -> None:
    """Follow a running serve's plan and set an HAProxy's server weights after every new
    plan: one backend per region and class, one server per site, weights the sites' shares
    (rounded to a total of 256; a share of 0 drains). A degraded or stale plan, or a
    backend that would be zeroed, keeps the weights; an unreachable service or HAProxy is
    retried with back-off. One log line per applied plan on stderr, as text or JSON
    (--log-format)."""
    import logging

    from thermoroute import haproxy as route
    from thermoroute import service_log

    for flag, value, tcp_only in (("--address", address, True), ("--haproxy", haproxy, False)):
        host, _, port = value.rpartition(":")
        tcp = bool(host) and port.isdigit() and 0 < int(port) < 65536 and "/" not in value
        if any(c.isspace() for c in value) or not (tcp or (not tcp_only and "/" in value)):
            what = "host:port" if tcp_only else "a UNIX socket's path (with a /) or host:port"
            raise _fail(f"{flag} {value!r}: {what}")
    try:
        mapping = route.load_config(config) if config is not None else route.RouteConfig()
    except route.RouteConfigError as exc:  # "[backends]" is no markup
        raise _fail(str(exc)) from None
    token = _read_token(token_file) if token_file is not None else None
    global _JSON_LOG
    _JSON_LOG = log_format == LogFormat.json
    ctx.call_on_close(service_log.configure(log_format.value))

    def fatal(event: str, message: str, code: int, **fields: object) -> typer.Exit:
        # In JSON the last line is one of the log's too, so that stderr stays JSON lines.
        if log_format != LogFormat.json:
            return _fail(message, code)
        service_log.log_event(route.log, logging.ERROR, event, message, **fields)
        return typer.Exit(code)

    follower = route.Follower(route.PlanSource(address, token), route.RuntimeApi(haproxy), mapping)
    try:
        if not once:  # until Ctrl-C or SIGTERM (exit 130 or 143, said by main)
            route.follow(follower, period_s=period, max_backoff_s=max_backoff)
        applied = follower.poll()
    except route.Unreachable as exc:  # --once: cron runs it again; no back-off here
        raise fatal(
            "unreachable", f"{exc}; weights kept", EXIT_FAILED, peer=exc.peer,
            address=exc.address, reason=exc.reason, retry_in_s=None, attempt=None,
        ) from None  # fmt: skip
    except route.Refused as exc:  # a wrong token: retrying would not help
        raise fatal("refused", str(exc), EXIT_BAD_INPUT, peer=exc.peer, address=exc.address,
                    backend=exc.backend) from None  # fmt: skip
    if applied.problems:
        raise fatal(
            "not_set", f"{len(applied.problems)} backend(s) not set: {applied.problems[0]}",
            EXIT_FAILED, backends=len(applied.problems),
        )  # fmt: skip


@scenario_app.command("list")
def scenario_list() -> None:
    """List the embedded scenarios."""
    from thermoroute.common.scenarios import embedded_scenarios

    for name in embedded_scenarios():
        console.print(name)


@scenario_app.command("export")
def scenario_export(
    name: Annotated[str, typer.Argument(help="Embedded scenario name.")],
    directory: Annotated[Path, typer.Argument(help="Target directory.")],
) -> None:
    """Write an embedded scenario as a scenario directory."""
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenario_writing import copy_scenario_dir
    from thermoroute.common.scenarios import embedded_path, embedded_scenarios

    if name not in embedded_scenarios():
        raise _fail(f"no embedded scenario {name!r} (embedded: {', '.join(embedded_scenarios())})")
    source = embedded_path(name)
    try:
        load_scenario(source)
    except ScenarioError as exc:  # a broken package is a bug, but say so plainly
        raise _fail(str(exc), EXIT_FAILED) from None
    copy_scenario_dir(source, directory)
    console.print(f"wrote {name} to {directory}")


@scenario_app.command("validate")
def scenario_validate(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SCENARIO",
            help="A scenario directory, the output of `scenario split` or a part of it (the "
            "coordinator's, a site's), or an embedded scenario name.",
        ),
    ],
    start: StartOpt = None,
    steps: StepsOpt = None,
) -> None:
    """Check a scenario, as run reads it; report every problem with file, row and column.

    Says which kind SCENARIO is: a full scenario, a split root (its coordinator's part and
    every site's directory that holds data; an empty one is a site whose data are on its own
    host), the coordinator's part of a split, or a single site's directory.
    """
    from thermoroute.common.scenario_directories import DirectoryKind, check_directory

    directory = resolve_scenario(source)
    try:
        checked = check_directory(directory, start=start, steps=steps)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None
    view, here, elsewhere = checked.view, checked.sites_here, checked.sites_elsewhere
    extra = ""
    if checked.kind is DirectoryKind.split_root:
        sites = f"{len(here) + len(elsewhere)} sites ({len(here)} checked here"
        sites += (
            f", {len(elsewhere)} on their own hosts: {', '.join(elsewhere)})" if elsewhere else ")"
        )
    elif checked.kind is DirectoryKind.coordinator:
        sites = "no site's data"
        extra = f"; run takes its split root, {directory.parent}"
    elif checked.kind is DirectoryKind.site:
        sites = f"site {here[0]}"
    else:
        sites = f"{len(here)} sites"
    if checked.scenario is not None:
        allowed = checked.scenario.allowed()
        extra = (
            f"; {int((~allowed).sum())} of {allowed.size} site/region/class pairs forbidden by SLO"
        )
    console.print(
        f"{directory}: valid {checked.kind} — scenario {view.name!r}, {sites}, "
        f"{len(view.regions.region_id)} regions, {len(view.classes.class_id)} classes, "
        f"{view.steps} steps of {view.step_hours:g} h from {view.start.isoformat()}{extra}",
        highlight=False,
    )


@scenario_app.command("init")
def scenario_init(
    directory: Annotated[Path, typer.Argument(help="New (or empty) scenario directory.")],
    sites: Annotated[int, typer.Option(min=1, max=1000, help="Number of sites.")] = 3,
    regions: Annotated[int, typer.Option(min=1, max=1000, help="Number of regions.")] = 3,
    steps: Annotated[int, typer.Option(min=1, max=8784, help="Steps of the horizon.")] = 24,
) -> None:
    """Write a scenario directory to start from: a small synthetic fleet that validates
    and solves, with every key of scenario.toml commented and every file and column
    explained in its README.md (units, allowed ranges, owners, data sources)."""
    from thermoroute.scenario_template import write_template

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise _fail(f"{directory}: exists and is not an empty directory; name a new one")
    scen = write_template(directory, sites, regions, steps)
    console.print(
        f"wrote a scenario template ({len(scen.sites)} sites, {len(scen.regions)} regions, "
        f"{scen.steps} steps) to {directory}; see {directory / 'README.md'}",
        highlight=False,
    )


@scenario_app.command("synth")
def scenario_synth(
    directory: Annotated[Path, typer.Argument(help="Target directory.")],
    sites: Annotated[int, typer.Option(min=1, help="Number of sites.")] = 100,
    regions: Annotated[int, typer.Option(min=1, help="Number of regions.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Hourly steps.")] = 24,
) -> None:
    """Write a synthetic fleet spread over Australia (for scale tests)."""
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenario_writing import write_scenario
    from thermoroute.common.synth import synthesize

    scen = synthesize(sites, regions, seed, steps=steps)
    write_scenario(scen, directory)
    load_scenario(directory)  # what we write must read back
    console.print(
        f"wrote synthetic scenario ({sites} sites, {regions} regions, seed {seed}) to {directory}"
    )


@scenario_app.command("split")
def scenario_split(
    scenario: ScenarioArg,
    out: Annotated[Path, typer.Argument(help="Target directory.")],
) -> None:
    """Split a scenario into a coordinator directory and one private directory per site."""
    from thermoroute.common.scenario_split import split_scenario

    directory = resolve_scenario(scenario)
    try:
        paths = split_scenario(directory, out)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None
    console.print(f"coordinator: {paths.pop('coordinator')}")
    for site, path in paths.items():
        console.print(f"site {site}: {path}")


@token_app.command("generate")
def token_generate(
    path: Annotated[Path, typer.Argument(help="Token file to write (replaced if it exists).")],
) -> None:
    """Write a new random cluster token, readable by its owner only (mode 0600).

    Every call makes a new token: to rotate, generate one, copy it to every node, and
    restart the cluster (deploy/GUIDE.md, "Security"); the old token is then refused.
    """
    from thermoroute.ray_auth import generate_token

    try:
        written = generate_token(path)
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None
    console.print(f"wrote a new cluster token to {written} (mode 0600)", highlight=False)


def _flowing_help(*groups: typer.Typer) -> None:
    """Give every command of ``groups`` its docstring as help with each paragraph on one
    line: Typer keeps the source's line breaks in all but the first paragraph (and in the
    first, in a group's list of commands), breaking a line mid-sentence at 80 columns."""
    import inspect

    for group in groups:
        for info in group.registered_commands:
            if info.help is None and info.callback is not None and info.callback.__doc__:
                paragraphs = inspect.cleandoc(info.callback.__doc__).split("\n\n")
                info.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


_flowing_help(app, scenario_app, token_app)


def main() -> None:
    """Entry point of the ``thermoroute`` console script."""
    # gRPC's own informational lines (a refused TLS handshake) would follow our one-line
    # errors on stderr; its errors still show.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Typer's own exceptions (a private module: Typer re-exports no base class for them).
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    signals.install()
    global _JSON_LOG, _RELAYED
    _JSON_LOG = _RELAYED = False  # a command's own (the tests run several in one process)
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `thermoroute` alone: the help, as usual
        exc.show()
        code = exc.exit_code
    except ClickException as exc:  # a flag's value Typer could not take: one line
        err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False)
        code = exc.exit_code
    # Typer turns Ctrl-C (and SIGTERM: signals.Terminated) into a silent 130; say it once —
    # here, not inside a run's private network (the process that started it speaks for it).
    if code in (EXIT_INTERRUPTED, signals.EXIT_TERMINATED) and signals.terminated():
        code = signals.EXIT_TERMINATED
    stopped = code in (EXIT_INTERRUPTED, signals.EXIT_TERMINATED)
    if stopped and not _RELAYED and not in_private_network() and not _JSON_LOG:
        err_console.print("terminated" if code == signals.EXIT_TERMINATED else "interrupted")
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()
