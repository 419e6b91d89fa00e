"""SIGTERM ends a command the way Ctrl-C does: the run stops, nothing is written, exit 143.

A Python process dies at once on SIGTERM (no ``finally``, no cleanup), and Ray's driver
installs handlers of its own (a silent ``exit 15``, or its core worker's dump): neither
removes a run's staging directory or stops the Ray it started. :func:`install` makes SIGTERM
raise :class:`Terminated` — a ``KeyboardInterrupt``, so every path that undoes a Ctrl-C
(output staging, Ray shutdown, the private network) undoes a SIGTERM too — and
:func:`reinstall_after_ray` puts it back after ``ray.init`` has put its own.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

#: The exit status of a command ended by SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = 143

_received = threading.Event()
# Whether this process asked for it (the command line does; a library caller may not).
_wanted = threading.Event()


class Terminated(KeyboardInterrupt):
    """The command was sent SIGTERM."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    # The first SIGTERM interrupts; a second while the first unwinds is not another
    # exception in the middle of the cleanup.
    if _received.is_set():
        return
    _received.set()
    raise Terminated


def install() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (call it from there)."""
    if threading.current_thread() is threading.main_thread():
        _wanted.set()
        signal.signal(signal.SIGTERM, _terminate)


def reinstall_after_ray() -> None:
    """Take SIGTERM back from Ray's driver (``ray.init`` installs its own handlers); only
    where :func:`install` took it first, so a library caller's own handler is kept."""
    if _wanted.is_set():
        install()


def record() -> None:
    """Note a SIGTERM this process handled itself (relayed to the run it started)."""
    _received.set()


def terminated() -> bool:
    """Whether this process was sent SIGTERM."""
    return _received.is_set()
