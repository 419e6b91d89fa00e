"""Errors raised for bad input, carrying the file, row and column at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file.

    ``row`` is the 1-based line number in the file (the CSV header is line 1), or ``None``
    when the problem concerns the whole file or column.
    """

    file: str
    reason: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        # One problem, one line: a reason quoting an exception may carry line breaks.
        reason = " ".join(self.reason.splitlines())
        return f"{where}: {reason}"


class ScenarioError(ValueError):
    """A scenario directory that cannot be used, with every problem found in it."""

    def __init__(self, problems: list[Problem] | Problem, directory: str | None = None):
        self.problems: list[Problem] = (
            [problems] if isinstance(problems, Problem) else list(problems)
        )
        self.directory = directory
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"invalid scenario {self.directory}" if self.directory else "invalid scenario"
        shown = self.problems[:25]
        lines = [f"{head}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)
