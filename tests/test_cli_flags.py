"""Every bad flag is one line naming the flag, the value and what is allowed; exit status 2;
no traceback; no work started (nothing written, answered in seconds).

The command line's entry point runs in this process (``thermoroute.cli.main``, as the console
script calls it; its output read at the file descriptors): two dozen refusals in new
processes cost a minute or more of interpreter start-ups on the 2-core machine. The entry
point in a process of its own is tested by tests/test_cli_run.py and
tests/test_run_directory.py.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thermoroute.cli import main


@pytest.fixture
def refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[..., str]:
    """``thermoroute <args> [--out out]`` in tmp_path: its one line of refusal."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str, with_out: bool = True) -> str:
        out = tmp_path / "out"
        argv = ["thermoroute", *args, *(["--out", str(out)] if with_out else [])]
        monkeypatch.setattr(sys, "argv", argv)
        t0 = time.monotonic()
        with pytest.raises(SystemExit) as ended:
            main()
        assert time.monotonic() - t0 < 15, "refused only after work"
        stdout, stderr = capfd.readouterr()
        assert ended.value.code == 2, (stdout, stderr)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert "Traceback" not in stderr + stdout
        assert not out.exists()
        return lines[0]

    return run


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--eps-rel", "-1"], ["--eps-rel", "-1", "(0, 0.1]"]),
        (["--eps-rel", "0.5"], ["--eps-rel", "0.5"]),
        (["--eps-rel", "nan"], ["--eps-rel", "nan"]),
        (["--max-iter", "0"], ["--max-iter", "0", "[1, 100,000]"]),
        (["--max-iter", "abc"], ["--max-iter", "integer"]),
        (["--metrics-linger", "-5"], ["--metrics-linger", "-5"]),
        (["--metrics-port", "70000"], ["--metrics-port", "70000", "[1, 65535]"]),
        (["--address", "not-an-address"], ["--address", "host:port"]),
        (["--address", "127.0.0.1:1"], ["--address", "127.0.0.1:1", "no Ray cluster answers"]),
        (["--steps", "0"], ["--steps"]),
        (["--steps", "9000"], ["--steps", "9000"]),
        (["--method", "simplex"], ["--method", "simplex"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_a_bad_run_flag_is_one_line_and_exit_2(
    refused: Callable[..., str], args: list[str], words: list[str]
) -> None:
    line = refused("run", "australia", *args)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--solver", "central", "--method", "admm"], ["--method admm", "--solver central"]),
        (["--solver", "central", "--executor", "inline"],
         ["--executor inline", "--solver central", "--solver distributed"]),
        (["--solver", "nearest", "--sites-per-agent", "2"],
         ["--sites-per-agent 2", "--solver nearest"]),
        (["--solver", "temperature-unaware", "--no-secure-aggregation"],
         ["--no-secure-aggregation", "--solver temperature-unaware"]),
        (["--solver", "ipm", "--method", "admm"], ["--method admm", "--solver ipm"]),
        (["--penalty", "scalar"],
         ["--penalty scalar", "--method ipm (the default)", "--method admm"]),
        (["--method", "ipm", "--acceleration", "anderson"],
         ["--acceleration anderson", "--method ipm", "--method admm"]),
        (["--solver", "ipm", "--inner-fallback"], ["--inner-fallback", "--solver ipm"]),
        (["--method", "admm", "--no-secure-aggregation"],
         ["--no-secure-aggregation", "--method admm", "--method ipm"]),
        (["--executor", "inline", "--address", "127.0.0.1:1"],
         ["--address 127.0.0.1:1", "--executor inline", "Ray"]),
        (["--executor", "inline", "--agent-restarts", "5"],
         ["--agent-restarts 5", "--executor inline"]),
        (["--solver", "central", "--metrics-port", "9464"],
         ["--metrics-port 9464 with --solver central"]),
        (["--metrics-linger", "5"], ["--metrics-linger 5", "without --metrics-port"]),
        (["--metrics-addr", "0.0.0.0"], ["--metrics-addr 0.0.0.0", "without --metrics-port"]),
        (["--json", "--compare"], ["--compare", "--json"]),
        (["--solver", "central", "--no-isolate"], ["--no-isolate with --solver central"]),
        (["--executor", "inline", "--isolate"], ["--isolate with --executor inline"]),
        # A switch's shown flag and its default's, hidden, flag (kept for scripts).
        (["--isolate", "--no-isolate"], ["--isolate", "--no-isolate", "one or the other"]),
        (["--inner-fallback", "--no-inner-fallback"], ["--inner-fallback", "--no-inner-fallback"]),
    ],
)  # fmt: skip
def test_a_flag_another_makes_meaningless_is_refused_naming_both(
    refused: Callable[..., str], args: list[str], words: list[str]
) -> None:
    line = refused("run", "australia", *args)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("command", ["simulate", "serve"])
def test_simulate_and_serve_refuse_a_flag_their_executor_ignores(
    refused: Callable[..., str], command: str
) -> None:
    args = ["--executor", "inline", "--address", "127.0.0.1:1"]
    line = refused(command, "australia", *args, with_out=command != "serve")
    assert "--address 127.0.0.1:1 with --executor inline" in line, line
    line = refused(command, "australia", "--executor", "inline", "--no-isolate",
                   with_out=command != "serve")  # fmt: skip
    assert "--no-isolate with --executor inline" in line, line


def test_a_default_never_conflicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # --solver central leaves every distributed flag at its default (--method ipm,
    # --executor ray, ...): none was given, so nothing is refused and the run solves.
    out = tmp_path / "central"
    monkeypatch.setattr(sys, "argv", ["thermoroute", "run", "australia", "--solver", "central",
                                      "--json", "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 0, capfd.readouterr().err
    assert (out / "summary.json").is_file()


def test_agreeing_flags_are_not_a_conflict() -> None:
    from thermoroute.options import RunOptions

    given = frozenset({"solver", "method", "penalty", "executor", "sites_per_agent"})
    options = RunOptions(solver="admm", method="admm", penalty="scalar", executor="inline",
                         sites_per_agent=2, given=given)  # fmt: skip
    assert options.check(probe=False) is options


def test_a_busy_metrics_port_is_refused(refused: Callable[..., str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        line = refused("run", "australia", "--metrics-port", str(port))
    assert f"--metrics-port {port}" in line and "cannot listen" in line


def test_simulate_flags_are_checked_before_simulating(refused: Callable[..., str]) -> None:
    line = refused("simulate", "australia", "--address", "127.0.0.1:1")
    assert "--address" in line


@pytest.mark.parametrize("command", ["run", "simulate", "serve"])
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--eps-rel", "0.5"], ["--eps-rel", "0.5", "(0, 0.1]"]),
        (["--max-iter", "0"], ["--max-iter", "0", "[1, 100,000]"]),
        (["--method", "simplex"], ["--method", "simplex"]),
    ],
)
def test_the_method_flags_are_the_same_for_every_command(
    refused: Callable[..., str], command: str, args: list[str], words: list[str]
) -> None:
    # run, simulate and serve take the same method flags and refuse a bad one alike
    # (RunOptions.check); serve writes no outputs (no --out).
    line = refused(command, "australia", *args, with_out=command != "serve")
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("command", ["serve", "status", "route haproxy"])
def test_a_token_file_others_can_read_is_refused(
    tmp_path: Path, refused: Callable[..., str], command: str
) -> None:
    token = tmp_path / "plan.token"
    token.write_text("k" * 40 + "\n")
    token.chmod(0o644)
    args = ["australia"] if command == "serve" else []
    line = refused(*command.split(), *args, "--token-file", str(token), with_out=False)
    assert f"--token-file {token}" in line and "644" in line and "chmod 600" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "australia", "--metrics-port", "9999", "--metrics-addr", "nosuch.invalid"],
         ["--metrics-addr nosuch.invalid", "an address of this host"]),
        (["serve", "australia", "--host", "nosuch.invalid"],
         ["--host nosuch.invalid", "an address of this host"]),
        (["status", "--address", "not a host"], ["--address 'not a host'", "host:port"]),
        (["route", "haproxy", "--address", "not a host"],
         ["--address 'not a host'", "host:port"]),
        (["route", "haproxy", "--haproxy", "haproxy:stats"],
         ["--haproxy 'haproxy:stats'", "a UNIX socket's path (with a /) or host:port"]),
        (["route", "haproxy", "--period", "0"], ["--period", "0"]),
        (["simulate", "australia", "--days", "inf"], ["--days"]),
        (["simulate", "australia", "--horizon", "100000"], ["--horizon"]),
        (["simulate", "australia", "--days", "1", "--horizon", "8784"],
         ["--days 1 --horizon 8784", "8,807 steps", "[1, 8,784]"]),
        (["run", "australia", "--out", "/proc/thermoroute-out"], ["--out", "/proc"]),
    ],
)  # fmt: skip
def test_a_flag_nothing_can_use_is_named_in_one_line(
    tmp_path: Path, refused: Callable[..., str], args: list[str], words: list[str]
) -> None:
    line = refused(*args, with_out=False)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("where", ["file", "/proc/thermoroute-state"])
def test_serve_refuses_a_state_dir_it_cannot_use_before_any_cycle(
    tmp_path: Path, refused: Callable[..., str], where: str
) -> None:
    state_dir = tmp_path / "a-file" if where == "file" else Path(where)
    if where == "file":
        state_dir.write_text("not a directory\n")
    line = refused("serve", "australia", "--executor", "inline", "--state-dir",
                    str(state_dir), with_out=False)  # fmt: skip
    assert line.startswith(f"error: --state-dir {state_dir}: "), line


class _Planted:
    """An object whose unpickling runs ``touch marker`` (it pickles as a call of os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_serve_refuses_a_planted_state_file_without_running_it(
    tmp_path: Path, refused: Callable[..., str]
) -> None:
    import pickle

    marker = tmp_path / "MARKER"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "service-state.npz").write_bytes(pickle.dumps(_Planted(marker)))
    line = refused("serve", "australia", "--executor", "inline", "--state-dir",
                    str(state_dir), with_out=False)  # fmt: skip
    assert f"{state_dir / 'service-state.npz'}: not a thermoroute service state (a pickle" in line
    assert not marker.exists()


def _commands() -> list[list[str]]:
    """Every command and sub-command of the command line, as its words."""
    import typer

    from thermoroute.cli import app

    out: list[list[str]] = []

    def walk(command: object, words: list[str]) -> None:
        out.append(words)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return out


@pytest.mark.parametrize("words", _commands(), ids=lambda w: " ".join(w) or "thermoroute")
def test_every_command_takes_h_for_help(
    words: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["thermoroute", *words, "-h"])
    with pytest.raises(SystemExit) as ended:
        main()
    stdout, stderr = capfd.readouterr()
    assert ended.value.code == 0, stderr
    text = " ".join(stdout.split())
    # (in process the program's name is pytest's; the command's words follow it)
    assert "Usage:" in text and " ".join(["thermoroute", *words]) in text, text[:200]


def _command_of(words: list[str]) -> Any:
    """The Typer (Click) command these words name."""
    import typer

    from thermoroute.cli import app

    command: Any = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return command


@pytest.mark.parametrize("words", _commands(), ids=lambda w: " ".join(w) or "thermoroute")
def test_every_help_reads_at_80_columns(
    words: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # The help Typer lays out for an 80-column terminal: no line wider, no option name or
    # value cut short (Typer's ellipsis), every option's value shown whole on one line (a
    # narrow column folds it mid-word: "<distributed|ad" / "mm|ipm|central|…").
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", ["thermoroute", *words, "--help"])
    with pytest.raises(SystemExit) as ended:
        main()
    stdout, stderr = capfd.readouterr()
    assert ended.value.code == 0, stderr
    lines = stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, stdout
    assert "…" not in stdout, stdout
    command = _command_of(words)
    ctx = command.context_class(command, info_name=(words or ["thermoroute"])[-1])
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("--"):
                whole = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
                assert any(whole.search(line) for line in lines), (name, stdout)
        shown = param.display_type_rich(ctx)
        assert shown is None or any(shown in line for line in lines), (shown, stdout)


def test_version(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from thermoroute.common import __version__

    monkeypatch.setattr(sys, "argv", ["thermoroute", "--version"])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 0 and capfd.readouterr().out == f"thermoroute {__version__}\n"


#: A bound no healthy start-up comes near (the measured figures, ~0.2 s on an idle 2-core
#: machine, are in BENCHMARKS.md): the test catches an import of the numerics creeping back.
HELP_WALL_BOUND_S = 3.0


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_start_fast_without_the_numerics(flag: str) -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "thermoroute", flag], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    wall = time.perf_counter() - t0
    assert done.returncode == 0 and done.stdout, done.stderr
    assert wall < HELP_WALL_BOUND_S, wall
    # What makes it fast: the command line imports none of the heavy libraries to parse a flag.
    probe = ("import sys, thermoroute.cli; print(sorted(m for m in ('numpy', 'scipy', 'pandas', "
             "'cvxpy', 'ray', 'osqp', 'matplotlib') if m in sys.modules))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_an_error_line_keeps_its_brackets(
    tmp_path: Path,
    tiny_scenario_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A refusal is printed as written: ``[scenario]`` in it is a TOML table's name, not
    console markup to be swallowed."""
    import shutil

    broken = tmp_path / "scenario"
    shutil.copytree(tiny_scenario_dir, broken)
    toml = broken / "scenario.toml"
    toml.write_text(re.sub(r'start = "([^"]+?)[+-]\d\d:\d\d"', r'start = "\1"', toml.read_text()))
    monkeypatch.setattr(sys, "argv", ["thermoroute", "scenario", "validate", str(broken)])
    with pytest.raises(SystemExit) as ended:
        main()
    stderr = capfd.readouterr().err
    assert ended.value.code == 2, stderr
    assert "column 'start': [scenario] 'start' has no UTC offset" in stderr, stderr
