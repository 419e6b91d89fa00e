"""The log of ``thermoroute serve``: one line per event on stderr, as text or as JSON lines.

Every line is one :mod:`logging` record of the ``thermoroute`` loggers. A record made with
:func:`log_event` carries an event name and its fields; any other record (a warning of the
service, say) is an event ``message``. :class:`TextFormatter` writes a line for a person at a
terminal, :class:`JsonFormatter` one JSON object per line with the keys of :data:`COMMON_KEYS`
first and then the event's own (docs/serve.md lists them per event).

Only what the coordinator may know goes into a line: site ids and counts, the clock, the
method's iterations and seconds — never a site's weather, prices, costs or totals.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

#: The logger every serve line goes through (the service's and the command line's are its
#: children).
ROOT = "thermoroute"
#: ``--log-format`` values.
TEXT, JSON = "text", "json"
FORMATS = (TEXT, JSON)
#: The keys of every JSON line, in this order.
COMMON_KEYS = ("ts", "level", "event", "message")
#: The event of a record made without :func:`log_event`.
MESSAGE = "message"


def log_event(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """Log ``message`` as the event ``event`` with its ``fields`` (JSON values)."""
    logger.log(level, "%s", message, extra={"event": event, "fields": fields})


def _timestamp(record: logging.LogRecord) -> str:
    """The record's wall time in UTC, to the millisecond (``2026-12-07T21:04:05.123Z``)."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <message>``: the event's fields are in its message already."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: :data:`COMMON_KEYS`, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # Still one line: the traceback travels inside the message.
            message += "\n" + self.formatException(record.exc_info)
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", MESSAGE),
            "message": message,
        }
        fields = getattr(record, "fields", {})
        line.update({k: v for k, v in fields.items() if k not in COMMON_KEYS})
        return json.dumps(line, separators=(",", ":"))


class _ServeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (told apart from any other, to replace it)."""


def configure(log_format: str, stream: TextIO | None = None) -> Callable[[], None]:
    """Send the ``thermoroute`` loggers' records of level INFO and above to ``stream``
    (default: stderr) in ``log_format`` (:data:`TEXT` or :data:`JSON`).

    A handler an earlier call installed is replaced, so each line is written once.

    Returns
    -------
    callable
        Puts the loggers back as they were: a command calls it when it ends, since callers in
        the same process (the Python API, tests) share the logging module.

    Raises
    ------
    ValueError
        ``log_format`` is not one of :data:`FORMATS`.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(FORMATS)}")
    logger = logging.getLogger(ROOT)
    before = (logger.level, logger.propagate)
    for old in [h for h in logger.handlers if isinstance(h, _ServeHandler)]:
        logger.removeHandler(old)
    handler = _ServeHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == JSON else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Not again through the root logger's handlers (a library's basicConfig): one line each.
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return restore
