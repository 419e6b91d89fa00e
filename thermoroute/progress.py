"""Live terminal display of an ADMM run: iteration, residuals against their tolerances, ρ.

Fed by the coordinator's status snapshots (:meth:`coordinator.actor.Coordinator.status`),
which the driver polls while the run goes; the objective appears when the sites report it
at the end (mid-run, the coordinator knows only served demand).
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

#: Redraw at most this often [1/s]; a status arrives every iteration (every few ms).
REFRESH_PER_SECOND = 8


def _num(value: Any, fmt: str = ".3e") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


class LiveProgress:
    """A context manager showing the newest status of a run; ``update`` is its callback."""

    def __init__(self, console: Console, title: str = "ADMM") -> None:
        self.console = console
        self.title = title
        self.status: dict[str, Any] = {}
        self._live: Live | None = None
        self._last_draw = 0.0

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self._live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=REFRESH_PER_SECOND,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(kind, value, traceback)
        elif self.status:
            self.console.print(self._line(), highlight=False)

    def update(self, status: dict[str, Any]) -> None:
        """Take a status snapshot (called from the run's loop: must stay cheap)."""
        self.status = status
        now = time.perf_counter()
        if now - self._last_draw < 1.0 / REFRESH_PER_SECOND:
            return
        self._last_draw = now
        if self._live is not None:
            self._live.update(self._render())
        elif status.get("iteration", 0) % 50 == 0:
            # Not a terminal (CI log, pipe): a plain line now and then.
            self.console.print(self._line(), highlight=False)

    def _line(self) -> str:
        s = self.status
        return (
            f"iter {s.get('iteration', 0):>5}  "
            f"r {_num(s.get('primal_residual'))} (≤ {_num(s.get('eps_primal'))})  "
            f"s {_num(s.get('dual_residual'))} (≤ {_num(s.get('eps_dual'))})  "
            f"ρ {_num(s.get('rho'), '.3g')}  "
            f"objective {_num(s.get('objective_aud'), ',.2f')} AUD  "
            f"{_num(s.get('elapsed_s'), '.2f')} s"
        )

    def _render(self) -> Table:
        s = self.status
        table = Table(title=self.title, title_justify="left", show_edge=False)
        for name in (
            "iteration",
            "primal r",
            "ε_pri",
            "dual s",
            "ε_dual",
            "ρ",
            "AA",
            "late",
            "objective [AUD]",
            "elapsed [s]",
        ):
            table.add_column(name, justify="right")
        table.add_row(
            str(s.get("iteration", 0)),
            _num(s.get("primal_residual")),
            _num(s.get("eps_primal")),
            _num(s.get("dual_residual")),
            _num(s.get("eps_dual")),
            _num(s.get("rho"), ".3g"),
            "yes" if s.get("accelerated") else "no",
            str(len(s.get("late_sites", []) or [])),
            _num(s.get("objective_aud"), ",.2f"),
            _num(s.get("elapsed_s"), ".2f"),
        )
        return table
