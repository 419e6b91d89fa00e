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


class SiteDataInvalid(ValueError):
    """A site's own data failed validation *on the site*.

    What leaves the site is only this: which site(s) and how many problems. The problems
    themselves quote the site's private cells (prices, temperatures), so they are logged on
    the site's node (its Ray worker log) and never sent to the coordinator or the driver.
    """

    def __init__(self, site_ids: tuple[str, ...], problems: int) -> None:
        self.site_ids = tuple(site_ids)
        self.problems = int(problems)
        if len(self.site_ids) == 1:
            who, whose = f"site {self.site_ids[0]}", "its"
        else:
            who, whose = f"sites {', '.join(self.site_ids)}", "their"
        super().__init__(
            f"{who}: {whose} data failed validation ({self.problems} problem(s), see the "
            "site's log)"
        )

    def __reduce__(self) -> tuple[type, tuple[tuple[str, ...], int]]:
        # Rebuilt from its fields, not its message (it crosses process boundaries).
        return (type(self), (self.site_ids, self.problems))

    @classmethod
    def from_message(cls, message: str) -> SiteDataInvalid | None:
        """Rebuild the error from its one-line message (as a Ray creation error carries it)."""
        import re

        match = re.fullmatch(
            r"sites? (?P<ids>[A-Za-z0-9_.,\- ]+): (?:its|their) data failed validation "
            r"\((?P<n>\d+) problem\(s\), see the site's log\)",
            message.strip(),
        )
        if match is None:
            return None
        return cls(tuple(s.strip() for s in match["ids"].split(",")), int(match["n"]))
