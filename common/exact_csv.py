"""CSV text whose numbers read back exactly: floats as their shortest round-trip repr.

Scenario files (:mod:`thermoroute.common.scenario_writing`) and run outputs are written with
it, so a file written and read again gives the same float, bit for bit.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["csv_text"]


def _fmt(value: float | np.floating[Any]) -> str:
    """Shortest text that reads back to the same float; integers without a decimal point."""
    value = float(value)
    if math.isinf(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def csv_text(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """CSV text with a header, floats written exactly (shortest round-trip repr)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    for row in rows:
        writer.writerow([_fmt(v) if isinstance(v, float | np.floating) else v for v in row])
    return buffer.getvalue()
