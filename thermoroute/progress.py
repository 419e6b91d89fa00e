"""Live terminal display of a distributed run: the iteration, the running method's own
figures (residuals against their tolerances, ρ for ADMM, μ and the step for the interior
point: each method names its columns), the objective and the time.

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


def _cell(value: Any, fmt: str) -> str:
    """One status figure as its column shows it (:class:`StatusColumn`'s ``fmt``)."""
    if fmt == "yes/no":
        return "yes" if value else "no"
    if fmt == "count":
        return str(len(value or []))
    if value is None:
        return "—"
    return _num(value, fmt)


class LiveProgress:
    """A context manager showing the newest status of a run; ``update`` is its callback."""

    def __init__(self, console: Console, title: str) -> None:
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
        """``(column, value)`` of the status: the iteration, the running method's own
        columns (:attr:`~thermoroute.coordinator.method_contract.DistributedMethod.status_columns`),
        the objective and the time."""
        from thermoroute.coordinator.methods import METHODS

        s = self.status
        method = METHODS.get(str(s.get("method")))
        columns = method.status_columns if method is not None else ()
        return [
            ("iteration", str(s.get("iteration", 0))),
            *((c.label, _cell(s.get(c.key), c.fmt)) for c in columns),
            ("objective [AUD]", _num(s.get("objective_aud"), ",.2f")),
            ("elapsed [s]", _num(s.get("elapsed_s"), ".2f")),
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
