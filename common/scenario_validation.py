"""The checks every cell and CSV file of a scenario directory goes through, and the
collector of the problems they find.

Every problem names the file, the row (line number, the header being line 1) and the
column. A directory's problems are all collected (:class:`ProblemCollector`) before
:class:`~thermoroute.common.errors.ScenarioError` is raised, so a user can fix a file in one
pass. Numbers must lie within their bounds (:mod:`thermoroute.common.bounds`).
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from thermoroute.common.bounds import bound_of
from thermoroute.common.errors import Problem
from thermoroute.common.scenario_format import ID_PATTERN, ID_RULE

__all__ = [
    "MAX_INPUT_BYTES",
    "CsvRow",
    "ProblemCollector",
    "id_problem",
    "ids_sound",
    "read_csv_rows",
    "unique_ids",
    "unreadable",
]


class ProblemCollector:
    """The problems found in one scenario (or directory), in the order they were found.

    Attributes
    ----------
    problems : list of Problem
        Every problem recorded by :meth:`add`.
    lines : dict
        Line numbers of rows that later whole-scenario checks
        (:func:`thermoroute.common.servability.check_servable`) point at.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        # Line numbers of rows that later whole-scenario checks (check_servable) point at,
        # keyed by (file, *position in the arrays).
        self.lines: dict[tuple[Any, ...], int] = {}

    def add(
        self, file: str, reason: str, row: int | None = None, column: str | None = None
    ) -> None:
        """Record one problem of ``file`` (at ``row`` and ``column`` where known)."""
        self.problems.append(Problem(file, reason, row, column))


#: Strict number syntax: digits, one point, an exponent — not "1_000", "0x1F", "nan" or
#: "infinity", which Python's float() would take.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?", re.ASCII)
_INFINITY = re.compile(r"\+?inf", re.IGNORECASE)
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


@dataclass
class CsvRow:
    """One record of a CSV file, whose cells are read through checks.

    Each reader method returns the cell's value, or None after recording in ``sink`` why
    the cell is not valid.
    """

    file: str
    line: int
    cells: dict[str, str]
    sink: ProblemCollector

    def text(self, column: str, *, allow_empty: bool = False) -> str | None:
        value = (self.cells.get(column) or "").strip()
        if not value and not allow_empty:
            self.sink.add(self.file, "empty value", self.line, column)
            return None
        return value

    def number(
        self,
        column: str,
        *,
        minimum: float | None = None,
        allow_inf: bool = False,
    ) -> float | None:
        """The cell as a number within its bound (common/bounds.py) and above ``minimum``
        (a limit that depends on another cell), or None with the problem recorded."""
        raw = self.text(column)
        if raw is None:
            return None
        infinite = allow_inf and _INFINITY.fullmatch(raw) is not None
        if not infinite and _NON_FINITE.fullmatch(raw):
            reason = f"must be a finite number (got {quoted(raw)})"
            self.sink.add(self.file, reason, self.line, column)
            return None
        if not (infinite or _DECIMAL.fullmatch(raw)):
            self.sink.add(
                self.file,
                f"not a number: {quoted(raw)} (a decimal like 12, -0.5 or 1.5e3)",
                self.line,
                column,
            )
            return None
        value = float(raw)
        if math.isinf(value) and not infinite:
            reason = f"must be a finite number (got {quoted(raw)})"
            self.sink.add(self.file, reason, self.line, column)
            return None
        bound = bound_of(self.file, column)
        if bound is not None and not infinite and not bound.admits(value):
            self.sink.add(
                self.file,
                f"{raw[:40]} is outside the allowed range {bound.describe()} ({bound.source})",
                self.line,
                column,
            )
            return None
        if minimum is not None and value < minimum:
            self.sink.add(self.file, f"must be >= {minimum:g} (got {raw})", self.line, column)
            return None
        return value

    def boolean(self, column: str) -> bool | None:
        raw = self.text(column)
        if raw is None:
            return None
        low = raw.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        self.sink.add(self.file, f"not a boolean (true/false): {quoted(raw)}", self.line, column)
        return None

    def time(self, column: str) -> datetime | None:
        raw = self.text(column)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            self.sink.add(self.file, f"not an ISO-8601 time: {quoted(raw)}", self.line, column)
            return None
        if value.tzinfo is None:
            self.sink.add(
                self.file, f"time {quoted(raw)} has no UTC offset (e.g. +10:00)", self.line, column
            )
            return None
        return value


#: Input files larger than this are refused unread: validation's memory is bounded by it
#: (the 1,000-site synthetic fleet's largest file is ~2 MB).
MAX_INPUT_BYTES = 512 * 1024 * 1024


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file (None if it can).

    Only regular files are read: a FIFO or device would block or never end.
    """
    if not path.exists():
        return "file is missing" if not path.is_symlink() else "is a broken symbolic link"
    if not path.is_file():
        return "is not a regular file (a directory, FIFO or device)"
    if path.stat().st_size > MAX_INPUT_BYTES:
        return f"is larger than {MAX_INPUT_BYTES // 2**20} MiB"
    return None


def _utf8_problem(path: Path) -> str | None:
    """Why ``path`` is not UTF-8 text (None if it is), checked chunk by chunk so that the
    file is never held whole; the byte is counted after a byte-order mark, if any."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        head = handle.read(len(codecs.BOM_UTF8))
        # Bytes of the file before the decoder's pending input (the BOM not counted).
        offset = 0
        chunk = head.removeprefix(codecs.BOM_UTF8) + handle.read(_CHUNK_BYTES)
        while True:
            final = not chunk
            try:
                decoder.decode(chunk, final)
            except UnicodeDecodeError as exc:
                pending = len(exc.object) - len(chunk)
                return f"not UTF-8 text (byte {offset - pending + exc.start}: {exc.reason})"
            if final:
                return None
            offset += len(chunk)
            chunk = handle.read(_CHUNK_BYTES)


#: Bytes read at a time while checking that a file is UTF-8.
_CHUNK_BYTES = 1 << 20


def read_csv_rows(
    directory: Path,
    file: str,
    columns: Iterable[str],
    sink: ProblemCollector,
    *,
    skip_sites: Collection[str] = (),
) -> Iterator[CsvRow]:
    """The records of ``directory / file`` that are not blank, each with its line number.

    A file that cannot be read, is not UTF-8 or valid CSV, or whose header lacks or repeats
    one of ``columns`` is recorded as a problem in ``sink``, as is a record with another
    number of fields than the header. The file is streamed: only the record at hand is
    held.

    Parameters
    ----------
    skip_sites : collection of str, optional
        Site ids whose records (by their ``site_id`` cell, which ``columns`` must name) are
        passed over unparsed and unchecked: other sites' rows, which a site's loader must
        neither hold nor judge (:mod:`thermoroute.common.site_view`).
    """
    path = directory / file
    if (reason := unreadable(path)) is not None:
        sink.add(file, reason)
        return
    # Check the encoding before the first record: a stray non-UTF-8 byte must become the
    # file's one problem, not a UnicodeDecodeError (or problems of half its rows) on the way.
    if (reason := _utf8_problem(path)) is not None:
        sink.add(file, reason)
        return
    # "utf-8-sig" drops the byte-order mark spreadsheet programs put in front of the
    # header, which would otherwise hide the first column.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                sink.add(file, "file is empty (a header row is required)", 1)
                return
            missing = [c for c in columns if c not in header]
            for column in missing:
                sink.add(file, "required column is missing from the header", 1, column)
            # A repeated column would silently keep only its last value.
            twice = [c for c in columns if header.count(c) > 1]
            for column in twice:
                sink.add(file, "column appears more than once in the header", 1, column)
            if missing or twice:
                return
            site = header.index("site_id") if skip_sites else -1
            # A record's line number is one past the last line of the previous record: a
            # quoted field may span several lines, so counting records would drift.
            last_line = reader.line_num
            for values in reader:
                number, last_line = last_line + 1, reader.line_num
                if not values or all(not v.strip() for v in values):
                    continue
                if 0 <= site < len(values) and values[site].strip() in skip_sites:
                    continue
                if len(values) != len(header):
                    sink.add(
                        file,
                        f"has {len(values)} fields, the header has {len(header)}",
                        number,
                    )
                    continue
                yield CsvRow(file, number, dict(zip(header, values, strict=True)), sink)
        except csv.Error as exc:
            sink.add(file, f"not valid CSV: {exc}", reader.line_num)
        except UnicodeDecodeError as exc:
            # The file changed since its check.
            sink.add(file, f"not UTF-8 text ({exc.reason})")


#: Characters of a cell a message quotes: enough to find it, never a whole pasted file.
QUOTED_CHARS = 40


def quoted(value: str) -> str:
    """``repr`` of a cell's text for a message, cut to :data:`QUOTED_CHARS` characters
    (saying how long it was)."""
    if len(value) <= QUOTED_CHARS:
        return repr(value)
    return f"{value[:QUOTED_CHARS]!r}… ({len(value):,} characters)"


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id
    (:data:`~thermoroute.common.scenario_format.ID_PATTERN`), or None if it is."""
    if ID_PATTERN.fullmatch(value):
        return None
    return f"id {quoted(value)} is not allowed: ids are {ID_RULE}"


def unique_ids(rows: Iterable[CsvRow], column: str, sink: ProblemCollector) -> dict[str, int]:
    """Map id -> position, reporting empty, malformed and duplicate ids."""
    index: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for row in rows:
        value = row.text(column)
        if value is None:
            continue
        if (reason := id_problem(value)) is not None:
            sink.add(row.file, reason, row.line, column)
            continue
        if value in index:
            sink.add(
                row.file,
                f"duplicate id {quoted(value)} (first on row {first_line[value]})",
                row.line,
                column,
            )
            continue
        first_line[value] = row.line
        index[value] = len(index)
    return index


def ids_sound(sink: ProblemCollector, file: str, *columns: str) -> bool:
    """Were the ids of ``file`` read without a problem (so other tables can refer to them)?

    False if the file as a whole had a problem (missing, empty, bad header: row 1 or no
    row) or any of ``columns`` did.
    """
    return not any(
        p.file == file and (p.row in (None, 1) or p.column in columns) for p in sink.problems
    )
