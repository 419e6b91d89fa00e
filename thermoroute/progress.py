"""Live terminal display of a distributed run: iteration, residuals against their
tolerances, and ρ (ADMM) or μ and the step (interior point).

Fed by the coordinator's status snapshots
(:meth:`thermoroute.coordinator.actor.Coordinator.status`), which the driver polls while the run
goes; the objective appears when the sites report it at the end (mid-run, the coordinator knows only
served demand).
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
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

    def _fields(self) -> list[tuple[str, str]]:
        """``(column, value)`` of the status, for its method (interior point or ADMM)."""
        s = self.status
        head = [("iteration", str(s.get("iteration", 0)))]
        tail = [
            ("objective [AUD]", _num(s.get("objective_aud"), ",.2f")),
            ("elapsed [s]", _num(s.get("elapsed_s"), ".2f")),
        ]
        if s.get("method") == "ipm":
            return [
                *head,
                ("coupling r", _num(s.get("primal_residual"))),
                ("ε_pri", _num(s.get("eps_primal"))),
                ("μ", _num(s.get("mu"))),
                ("step", _num(s.get("step"), ".3f")),
                ("dual pending", str(s.get("dual_pending", "—"))),
                *tail,
            ]
        return [
            *head,
            ("primal r", _num(s.get("primal_residual"))),
            ("ε_pri", _num(s.get("eps_primal"))),
            ("dual s", _num(s.get("dual_residual"))),
            ("ε_dual", _num(s.get("eps_dual"))),
            ("ρ", _num(s.get("rho"), ".3g")),
            ("AA", "yes" if s.get("accelerated") else "no"),
            ("late", str(len(s.get("late_sites", []) or []))),
            *tail,
        ]

    def _line(self) -> str:
        return "  ".join(f"{escape(name)} {value}" for name, value in self._fields())

    def _render(self) -> Table:
        table = Table(title=self.title, title_justify="left", show_edge=False)
        fields = self._fields()
        for name, _ in fields:
            table.add_column(escape(name), justify="right")
        table.add_row(*(value for _, value in fields))
        return table
