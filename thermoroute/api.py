"""The Python API: the command line's runs, for notebooks and scripts.

>>> import thermoroute
>>> scenario = thermoroute.load_scenario("australia")
>>> solution = thermoroute.solve(scenario, solver="central")
>>> solution.totals["carbon_kg"]                       # fleet totals (docs/model.md §9)
>>> solution.shares()                                  # who serves whom (a DataFrame)
>>> rows = thermoroute.compare(scenario)               # every baseline, as `compare`

``thermoroute run`` is :func:`solve` plus the terminal's tables; both check every option
before any work (:class:`~thermoroute.options.OptionError`, one line naming the option) and
both write a run directory whole. A distributed run from here starts a local Ray cluster in
this process's network (the command line's ``--no-isolate``) unless ``address`` joins one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from thermoroute.common.compare import Comparison
from thermoroute.common.scenario import Scenario
from thermoroute.options import RunOptions
from thermoroute.results import Solution

#: A scenario as the API takes it: an embedded name, a scenario directory, or a loaded one.
ScenarioSource = str | os.PathLike[str] | Scenario


def load_scenario(
    source: str | os.PathLike[str] = "australia",
    *,
    start: datetime | None = None,
    steps: int | None = None,
) -> Scenario:
    """Read and validate a scenario: an embedded name (``australia``, ``australia-20``) or a
    scenario directory; ``start`` and ``steps`` choose the horizon (default: the file's).

    Raises :class:`thermoroute.common.errors.ScenarioError` listing every problem (file, row,
    column).
    """
    from thermoroute.common.scenario_loading import load_scenario as read_directory
    from thermoroute.common.scenarios import scenario_directory

    return read_directory(scenario_directory(source), start=start, steps=steps)


def solve(
    scenario: ScenarioSource = "australia",
    *,
    solver: str = "distributed",
    method: str | None = None,
    out: str | os.PathLike[str] | None = None,
    start: datetime | None = None,
    compare: bool = False,
    options: RunOptions | None = None,
    console: Console | None = None,
    **settings: Any,
) -> Solution:
    """Solve one horizon and return its outputs as a :class:`~thermoroute.results.Solution`.

    Parameters
    ----------
    scenario : str, path or Scenario
        An embedded name, a scenario directory (or the root of ``scenario split``, for a
        distributed run), or a loaded :class:`~thermoroute.common.scenario.Scenario`.
    solver : str
        ``distributed`` (the sites' agents solve together with ``method``), ``central``,
        or a baseline: ``nearest``, ``temperature-unaware``, ``mean-efficiency``,
        ``price-only``, ``carbon-only``.
    method : str, optional
        A registered distributed method's name
        (:data:`thermoroute.coordinator.methods.METHODS`); the default method by default.
    out : path, optional
        Where to write the run directory (replaced whole; refused if it holds anything but
        an earlier run). ``None``: a temporary directory, read back and removed — the
        solution's :attr:`~thermoroute.results.Solution.directory` is then ``None``.
    start : datetime, optional
        The horizon's first step (default: the scenario's); its length is ``steps`` (below).
    compare : bool
        Also solve temperature-unaware and keep its totals in ``solution.reference``; for
        ``central`` and the distributed solver also mean-efficiency, to split the run's gain
        into site differences and hourly weather (``solution.decomposition``).
    options : RunOptions, optional
        Every setting at once (what the command line builds); overrides ``solver``,
        ``method`` and ``settings``.
    console : rich Console, optional
        Where a distributed run shows its progress (nothing by default).
    **settings
        Any other field of :class:`~thermoroute.options.RunOptions` (``steps``, the
        horizon's length; ``eps_rel``, ``max_iter``, ``executor``, ``address``,
        ``share_site_details``, …).

    Raises
    ------
    thermoroute.options.OptionError
        A setting's value is not allowed (before any work).
    common.errors.ScenarioError, common.errors.SiteDataInvalid
        Bad scenario data.
    thermoroute.runner.SolveError
        The solver failed.
    """
    from thermoroute.common.run_directory import check_output_directory
    from thermoroute.common.scenario_writing import write_scenario

    if options is None:
        settings.setdefault("live", console is not None)
        options = RunOptions(solver=solver, method=method, **settings)
    options.check()
    if out is not None:
        check_output_directory(Path(out))
    with tempfile.TemporaryDirectory(prefix="thermoroute-") as scratch:
        if isinstance(scenario, Scenario):
            loaded: Scenario | None = scenario
            directory = write_scenario(scenario, Path(scratch) / "scenario")
        else:
            directory, loaded = resolve_source(scenario, options, start=start)
        return solve_resolved(directory, loaded, options, out=out, compare=compare, console=console)


class SplitRootNeedsDistributed(ValueError):
    """A split deployment directory given to a solver other than the distributed one."""


def resolve_source(
    source: str | os.PathLike[str], options: RunOptions, *, start: datetime | None = None
) -> tuple[Path, Scenario | None]:
    """The scenario directory behind ``source`` and the scenario loaded over the run's
    horizon — ``None`` for the root of ``scenario split``, which only the distributed solver
    may take (the sites' data stay on their hosts).

    Raises
    ------
    common.errors.ScenarioError
    SplitRootNeedsDistributed
    """
    from thermoroute.common.scenario_split import is_split_root
    from thermoroute.common.scenarios import scenario_directory

    directory = scenario_directory(source)
    if not is_split_root(directory):
        return directory, load_scenario(directory, start=start, steps=options.steps)
    if not options.distributed:
        raise SplitRootNeedsDistributed(
            f"{directory} is a split deployment directory: only the distributed solver "
            "(--solver distributed) can solve it (the sites' data stay on their hosts)"
        )
    return directory, None


def solve_resolved(
    directory: Path,
    loaded: Scenario | None,
    options: RunOptions,
    *,
    out: str | os.PathLike[str] | None = None,
    compare: bool = False,
    console: Console | None = None,
) -> Solution:
    """:func:`solve` for a scenario already resolved (:func:`resolve_source`) with options
    already checked — what the command line calls after its own checks."""
    from thermoroute import runner

    with tempfile.TemporaryDirectory(prefix="thermoroute-") as scratch:
        target = Path(out) if out is not None else Path(scratch) / "run"
        result = runner.run_solver(
            directory,
            loaded,
            target,
            options,
            console=console or Console(quiet=True),
            compare=compare and loaded is not None,
        )
        solution = Solution.read(result.out)
        solution = replace(
            solution,
            reference=result.reference,
            decomposition=result.decomposition,
            wall_s=result.wall_s,
        )
        if out is None:
            solution = replace(solution, directory=None)
    return solution


def compare(
    scenario: ScenarioSource = "australia", solvers: Sequence[str] | None = None
) -> Comparison:
    """The temperature-aware optimum and every baseline (or ``solvers``), each charged under
    the true model, with percent changes against temperature-unaware, and the optimum's gain
    split into site differences and hourly weather (``comparison.decomposition``,
    :class:`~thermoroute.common.compare.GainDecomposition`) — ``thermoroute compare``. Iterating the
    comparison gives its rows (:class:`~thermoroute.common.compare.CompareRow`)."""
    from thermoroute.common.compare import compare as compare_solvers

    loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    return compare_solvers(loaded, solvers)
