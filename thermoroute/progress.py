"""Live terminal display of a distributed run: the iterations, the running method's own
figures (residuals against their tolerances, ρ for ADMM, μ and the step for the interior
point: each method names its columns), the objective and the time.

Fed by the coordinator's status snapshots
(:meth:`thermoroute.coordinator.actor.Coordinator.status`), which the driver polls while the run
goes; the objective appears when the sites report it at the end (mid-run, the coordinator knows only
served demand).

On a terminal the display is two lines redrawn in place, as wide as the terminal: columns
that do not fit are left out, least important first, and a number is never cut. Whatever
is written to the process's standard error meanwhile (a library's warning, Ray's or a
logger's) is printed above it, so the display is redrawn whole below. Elsewhere (a pipe, a
CI log) it prints one line on the first status, one every :data:`PIPE_EVERY` iterations
and one at the end.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from thermoroute.coordinator.method_contract import StatusColumn

#: Redraw at most this often [1/s]; a status arrives every iteration (every few ms).
REFRESH_PER_SECOND = 8

#: Not on a terminal, one line per this many iterations (and the first and the last): an
#: interior-point run (10–40 iterations) gives two or three lines, ADMM's ~900 on
#: ``australia`` about 36.
PIPE_EVERY = 25

#: Columns beside the method's own: the iterations done, then the objective and the wall
#: time, left out (in that order, from the last) after the method's less important ones.
ITERATIONS = StatusColumn("iter", "iterations", "d", priority=0)
OBJECTIVE = StatusColumn("obj [AUD]", "objective_aud", ",.2f", priority=2)
ELAPSED = StatusColumn("time [s]", "elapsed_s", ".2f", priority=1)

#: Between two columns.
GAP = "  "


def _cell(value: Any, fmt: str) -> str:
    """One status figure as its column shows it (:class:`StatusColumn`'s ``fmt``)."""
    if fmt == "yes/no":
        return "yes" if value else "no"
    if fmt == "count":
        return str(len(value or []))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def status_fields(columns: tuple[StatusColumn, ...], status: dict[str, Any]) -> list[str]:
    """The cells of ``status`` under ``columns`` (the iterations, the method's, the objective
    and the time)."""
    return [_cell(status.get(c.key), c.fmt) for c in columns]


def fit_columns(
    columns: tuple[StatusColumn, ...], cells: list[str], width: int
) -> list[tuple[StatusColumn, str, int]]:
    """The columns that fit in ``width`` characters, each with its cell and width.

    A column is as wide as its label or its cell, whichever is wider, so no number is cut;
    while the row is too wide, the column with the highest ``priority`` (the rightmost of
    equals) is left out. The first column (the iterations) always stays.
    """
    pairs = zip(columns, cells, strict=True)
    shown = [(c, cell, max(len(c.label), len(cell))) for c, cell in pairs]

    def total() -> int:
        return sum(w for _, _, w in shown) + len(GAP) * (len(shown) - 1)

    while total() > width and len(shown) > 1:
        worst = max(range(1, len(shown)), key=lambda i: (shown[i][0].priority, i))
        del shown[worst]
    return shown


def render_lines(
    columns: tuple[StatusColumn, ...], status: dict[str, Any], width: int
) -> tuple[str, str]:
    """The header and the values of ``status`` in ``width`` characters, right-aligned."""
    shown = fit_columns(columns, status_fields(columns, status), width)
    header = GAP.join(c.label.rjust(w) for c, _, w in shown)
    values = GAP.join(cell.rjust(w) for _, cell, w in shown)
    return header, values


class StderrAbove:
    """Standard error (file descriptor 2) through a pipe, each line handed to ``emit``.

    A library writing to the descriptor itself (Ray's C++ core, a logger holding the
    original ``sys.stderr``) would otherwise write into the middle of the live display and
    leave its old lines on screen. :meth:`stop` puts the descriptor back; lines still
    arriving from processes started meanwhile (which inherited the pipe) go straight to the
    real standard error.
    """

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _flush() -> None:
        """Flush what Python buffered for standard error: ``sys.stderr`` and the original,
        which a logger's handler may hold."""
        for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s}.values():
            stream.flush()

    def start(self) -> None:
        self._flush()
        self._saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self._thread.start()

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._emit(line.decode(errors="replace"))
            if pending:
                self._emit(pending.decode(errors="replace"))

    def stop(self) -> None:
        if self._saved is None:
            return
        self._flush()
        os.dup2(self._saved, 2)  # closes this process's last write end of the pipe
        saved, self._saved = self._saved, None
        assert self._thread is not None
        # Without other writers the pipe ends now and the last lines are shown above the
        # display; a child still holding it keeps the thread, which then writes directly.
        self._thread.join(timeout=0.5)
        if not self._thread.is_alive():
            os.close(saved)
            return

        def direct(line: str) -> None:
            os.write(saved, (line + "\n").encode())

        self._emit = direct


class LiveProgress:
    """A context manager showing the newest status of a run; ``update`` is its callback.

    Parameters
    ----------
    console : Console
        Where the display goes; a terminal gets the live display, anything else lines.
    title : str
        The first line of the live display.
    status_columns : tuple of StatusColumn
        The running method's columns
        (:attr:`~thermoroute.coordinator.method_contract.DistributedMethod.status_columns`),
        known before its first status so that the first frame is already its own.
    capture_stderr : bool, optional
        Show what is written to standard error above the live display (default: when both
        the console and standard error are terminals).
    """

    def __init__(
        self,
        console: Console,
        title: str,
        status_columns: tuple[StatusColumn, ...],
        *,
        capture_stderr: bool | None = None,
    ) -> None:
        self.console = console
        self.title = title
        self.columns = (ITERATIONS, *status_columns, OBJECTIVE, ELAPSED)
        self.status: dict[str, Any] = {}
        self._live: Live | None = None
        self._last_draw = 0.0
        self._printed: int | None = None  # the iterations of the last line printed
        self._printed_status: dict[str, Any] | None = None
        if capture_stderr is None:
            capture_stderr = console.is_terminal and os.isatty(2)
        self._stderr = StderrAbove(self._print_above) if capture_stderr else None

    def _print_above(self, line: str) -> None:
        self.console.print(Text(line), soft_wrap=True)

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self._live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=REFRESH_PER_SECOND,
                transient=False,
                # Standard error is taken at its descriptor (StderrAbove), not as sys.stderr.
                redirect_stderr=False,
            )
            self._live.__enter__()
            if self._stderr is not None:
                self._stderr.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live is not None:
            if self._stderr is not None:
                self._stderr.stop()
            self._live.update(self._render())
            self._live.__exit__(kind, value, traceback)
        elif self.status and self.status is not self._printed_status:
            # The last status (with what the sites reported: the objective), even at an
            # iteration already printed.
            self._print_line()

    def update(self, status: dict[str, Any]) -> None:
        """Take a status snapshot (called from the run's loop: must stay cheap)."""
        self.status = status
        if self._live is None:
            # Not a terminal (CI log, pipe): the first status with the method's figures (a
            # Ray run's first polls come before any), then every PIPE_EVERY iterations; a
            # poll may skip iterations, so a line is due on passing a multiple.
            if not any(c.key in status for c in self.columns[1:]):
                return
            done = self._iterations()
            if self._printed is None or done // PIPE_EVERY > self._printed // PIPE_EVERY:
                self._print_line()
            return
        now = time.perf_counter()
        if now - self._last_draw < 1.0 / REFRESH_PER_SECOND:
            return
        self._last_draw = now
        self._live.update(self._render())

    def _iterations(self) -> int:
        return int(self.status.get("iterations") or 0)

    def line(self) -> str:
        """The status as one line of ``label value`` pairs (for logs: every column)."""
        cells = status_fields(self.columns, self.status)
        return GAP.join(f"{c.label} {cell}" for c, cell in zip(self.columns, cells, strict=True))

    def _print_line(self) -> None:
        self._printed, self._printed_status = self._iterations(), self.status
        # One line per status whatever the width: a log is read by line (grep, tail).
        self.console.print(Text(self.line()), soft_wrap=True)

    def _render(self) -> Text:
        width = self.console.width
        header, values = render_lines(self.columns, self.status, width)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.title + "\n", style="italic")
        text.append(header + "\n", style="bold")
        text.append(values)
        return text
