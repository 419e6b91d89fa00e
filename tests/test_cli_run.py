"""``thermoroute run`` from the command line with site agents in process (``--executor inline``).

The runs of ``australia`` go through the command line's Typer app in this process (a new
process would only add seconds of imports); the run with ADMM's defaults is shared by the
tests that read it. The Ray path of the same command is exercised by tests/test_prometheus.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.test_admm import OBJECTIVE_RTOL
from thermoroute.cli import app
from thermoroute.common.central import solve_central
from thermoroute.coordinator.method_contract import MethodFlags

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]


def _thermoroute(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def run_australia(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``thermoroute run australia --executor inline`` with options: its output directory.

    Each distinct command runs once for the module."""
    root = tmp_path_factory.mktemp("runs")
    runs: dict[tuple[str, ...], Path] = {}

    def run(*options: str) -> Path:
        if options not in runs:
            out = root / f"run{len(runs)}"
            done = CliRunner().invoke(
                app,
                ["run", "australia", "--executor", "inline", "--no-compare", "--quiet",
                 "--out", str(out), *options],
            )  # fmt: skip
            assert done.exit_code == 0, (done.output, done.exception)
            runs[options] = out
        return runs[options]

    return run


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def central_australia() -> float:
    from tests.conftest import embedded_scenario

    return solve_central(embedded_scenario("australia")).objective_aud


def test_interior_point_fallback_finishes_the_solves_osqp_leaves_approximate(
    run_australia: Callable[..., Path], central_australia: float
) -> None:
    plain = _summary(run_australia("--method", "admm"))
    exact = _summary(run_australia("--method", "admm", "--inner-fallback"))
    for summary in (plain, exact):
        assert summary["solver_stats"]["converged"] is True
        assert summary["objective_aud"] == pytest.approx(central_australia, rel=OBJECTIVE_RTOL)
    # OSQP alone leaves some solves at its iteration limit (approximate iterates); with the
    # fallback Clarabel finishes them and none is left approximate.
    assert plain["solver_stats"]["inner_approximate"] > 0
    assert plain["solver_stats"]["inner_fallbacks"] == 0
    assert exact["solver_stats"]["inner_fallbacks"] > 0
    assert exact["solver_stats"]["inner_approximate"] == 0
    assert exact["solver_stats"]["inner_failed"] == plain["solver_stats"]["inner_failed"] == 0


def test_negative_agent_restarts_are_refused(tmp_path: Path, tiny_scenario_dir: Path) -> None:
    out = tmp_path / "out"
    done = _thermoroute(
        "run", str(tiny_scenario_dir), "--executor", "inline", "--agent-restarts", "-1",
        "--quiet", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "agent-restarts" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_run_defaults_to_the_interior_point_and_admm_stays_selectable(
    run_australia: Callable[..., Path], central_australia: float
) -> None:
    default = _summary(run_australia())
    admm = _summary(run_australia("--method", "admm"))
    alias = _summary(run_australia("--solver", "admm"))
    assert default["solver"] == default["solver_stats"]["method"] == "ipm"
    assert default["solver_stats"]["secure_aggregation"] is True
    assert admm["solver"] == alias["solver"] == "admm"
    assert default["solver_stats"]["iterations"] <= 15 < admm["solver_stats"]["iterations"]
    assert alias["solver_stats"]["iterations"] == admm["solver_stats"]["iterations"]
    for summary in (default, admm):
        assert summary["objective_aud"] == pytest.approx(central_australia, rel=OBJECTIVE_RTOL)
    header = (run_australia() / "convergence.csv").read_text().splitlines()[0]
    assert header.startswith("iteration,coupling_residual,mu,step")


# --------------------------------------------------------------------------------------------
# The live display (thermoroute/progress.py), fed by real runs' statuses


@pytest.fixture(scope="module")
def statuses() -> dict[str, list[dict]]:
    """Every status snapshot of an in-process run of ``australia``, per method."""
    from thermoroute.coordinator.admm import AdmmSettings
    from thermoroute.coordinator.ipm import IpmSettings
    from thermoroute.launch import solve_distributed

    seen: dict[str, list[dict]] = {}
    for settings in (IpmSettings(), AdmmSettings()):
        snapshots: list[dict] = []
        run = solve_distributed(
            "australia", executor="inline", settings=settings, progress=snapshots.append
        )
        # The last snapshot, after the sites reported, has the objective: the widest cell.
        assert snapshots[-1]["iterations"] == run.iterations == run.outputs.stats.iterations
        seen[run.outcome.method] = snapshots
    return seen


def _terminal(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=width, color_system=None), out


def _screen(text: str) -> list[str]:
    """The lines a terminal keeps of ``text``: cursor movements and erasures stripped, the
    last frame of a redrawn display read after its last carriage return."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [line.rsplit("\r", 1)[-1] for line in plain.replace("\r\n", "\n").split("\n")]


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_live_display_at_80_columns_cuts_no_number_and_shows_only_its_methods_columns(
    statuses: dict[str, list[dict]], method: str
) -> None:
    from thermoroute.coordinator.methods import METHODS
    from thermoroute.progress import (
        ELAPSED,
        ITERATIONS,
        OBJECTIVE,
        LiveProgress,
        render_lines,
        status_fields,
    )

    columns = METHODS[method].status_columns
    shown = (ITERATIONS, *columns, OBJECTIVE, ELAPSED)
    foreign = {c.label for m in METHODS if m != method for c in METHODS[m].status_columns}
    foreign -= {c.label for c in columns}
    for status in statuses[method]:
        header, values = render_lines(shown, status, 80)
        assert len(header) <= 80 and len(values) <= 80
        assert "…" not in values and not foreign & set(header.split())
        # Every cell shown is whole: the values line is made of complete cells only.
        cells = status_fields(shown, status)
        assert all(word in cells for word in values.split())
    # The whole display, first frame to last, at 80 columns: its own header throughout.
    console, out = _terminal(80)
    with LiveProgress(console, "title", columns, capture_stderr=False) as display:
        for status in statuses[method]:
            display.update(status)
    screen = [line for line in _screen(out.getvalue()) if line.strip()]
    headers = [line for line in screen if line.lstrip().startswith("iter ")]
    assert headers and all(not foreign & set(h.split()) for h in headers)
    assert max(len(line) for line in screen) <= 80 and "…" not in out.getvalue()
    last = statuses[method][-1]
    assert screen[-1].split()[0] == str(last["iterations"])
    assert format(last["objective_aud"], ",.2f") in screen[-1]


def test_live_display_prints_standard_error_above_itself() -> None:
    """A library writing to file descriptor 2 (as Ray's core does) or to ``sys.stderr``
    while the display is up: its lines come out above the display, which is drawn whole
    below them, and the descriptor is the same file again afterwards."""
    from thermoroute.coordinator.ipm import InteriorPointMethod
    from thermoroute.progress import LiveProgress

    before = os.fstat(2)
    console, out = _terminal(80)
    status = {"iterations": 3, "primal_residual": 0.5, "mu": 0.1, "step": 0.9}
    with LiveProgress(console, "title", InteriorPointMethod.status_columns,
                      capture_stderr=True) as display:  # fmt: skip
        display.update(status)
        os.write(2, b"a library's warning\n")
        # A logger's handler keeps the standard error it was made with (not pytest's).
        print("a logger's line", file=sys.__stderr__, flush=True)
        display.update({**status, "iterations": 4})
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    screen = [line for line in _screen(out.getvalue()) if line.strip()]
    assert "a library's warning" in screen and "a logger's line" in screen
    # The final frame (title, header, values) is the last thing on screen, whole.
    assert screen[-3] == "title" and screen[-2].startswith("iter ")
    assert screen[-1].split()[0] == "4"


def test_run_through_a_pipe_prints_a_line_every_25_iterations(
    statuses: dict[str, list[dict]],
) -> None:
    """Not a terminal: the first status, every PIPE_EVERY iterations and the last; the
    command's help says so."""
    from thermoroute.coordinator.methods import METHODS
    from thermoroute.progress import PIPE_EVERY, LiveProgress

    for method, snapshots in statuses.items():
        out = io.StringIO()
        console = Console(file=out, force_terminal=False, width=80)
        with LiveProgress(console, "title", METHODS[method].status_columns) as display:
            for status in snapshots:
                display.update(status)
        lines = out.getvalue().splitlines()
        done = [int(line.split()[1]) for line in lines]
        first, last = snapshots[0].get("iterations") or 0, snapshots[-1]["iterations"]
        expected = sorted({first, *range(PIPE_EVERY, last + 1, PIPE_EVERY), last})
        # The final status (with the objective) is printed even at an iteration printed.
        assert list(dict.fromkeys(done)) == expected and len(done) <= len(expected) + 1
        assert all(line.startswith("iter ") for line in lines)
        assert format(snapshots[-1]["objective_aud"], ",.2f") in lines[-1]
    assert len(statuses["admm"]) > 500  # ADMM on australia: ~860 iterations, ~36 lines
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert f"every {PIPE_EVERY} iterations" in help_text


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_run_on_an_80_column_terminal_under_tmux(method: str, tmp_path: Path) -> None:
    """``thermoroute run`` in a real 80×50 terminal (tmux): what stays on screen is the
    method's own display, whole, below anything written to standard error."""
    from thermoroute.coordinator.methods import METHODS

    server = f"thermoroute-test-{os.getpid()}-{method}"
    done = tmp_path / "done"
    command = " ".join([
        *(shlex.quote(part) for part in CLI), "run", "--method", method, "--executor",
        "inline", "--no-compare", "--out", shlex.quote(str(tmp_path / "out")),
        "; touch", shlex.quote(str(done)), "; sleep 60",
    ])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("COLUMNS", None)
    tmux = ["tmux", "-L", server]
    subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "50", command], env=env,
                   check=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), "the run did not finish in 120 s"
        screen = subprocess.run(
            [*tmux, "capture-pane", "-p", "-S", "-200", "-t", "0"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    title = METHODS[method].title(METHODS[method].settings_for(MethodFlags()))
    at = screen.index(f"{title} on inline")  # the display's title, once: redrawn in place
    assert screen.count(f"{title} on inline") == 1
    header, values = screen[at + 1], screen[at + 2]
    labels = {c.label for c in METHODS[method].status_columns}
    foreign = {c.label for m in METHODS if m != method for c in METHODS[m].status_columns}
    assert header.split()[0] == "iter" and not (foreign - labels) & set(header.split())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert values.split()[0] == str(summary["solver_stats"]["iterations"])
    assert f"{summary['objective_aud']:,.2f}" in values and "…" not in header + values
