"""The ``thermoroute`` console script: SIGTERM taken first, then the command line.

Importing the command line takes a second or more (NumPy, SciPy, cvxpy, Typer); a SIGTERM
in that time would kill the process without a word. The handler
(:mod:`thermoroute.signals`) is installed before any of it.
"""

from __future__ import annotations

import sys

from thermoroute import signals


def main() -> None:
    """Entry point of the ``thermoroute`` console script."""
    signals.install()
    try:
        from thermoroute.cli import main as command_line
    except signals.Terminated:
        # Sent SIGTERM while importing: nothing started, nothing to undo.
        sys.stderr.write("terminated\n")
        raise SystemExit(signals.EXIT_TERMINATED) from None
    command_line()
