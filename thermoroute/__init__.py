"""The thermoroute application: command line, Python API and composition of coordinator and
sites.

The Python API (:mod:`thermoroute.api`)::

    import thermoroute
    solution = thermoroute.solve("australia", solver="central")
    solution.shares()                     # who serves whom

The API's names are imported when first used (PEP 562), so that importing the package — as
the command line does before it parses a flag or takes SIGTERM — stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thermoroute.common import __version__

if TYPE_CHECKING:
    from thermoroute.api import compare, load_scenario, solve
    from thermoroute.results import Solution

__all__ = ["Solution", "__version__", "compare", "load_scenario", "solve"]


def __getattr__(name: str) -> Any:
    if name in ("compare", "load_scenario", "solve"):
        from thermoroute import api

        return getattr(api, name)
    if name == "Solution":
        from thermoroute.results import Solution

        return Solution
    raise AttributeError(f"module 'thermoroute' has no attribute {name!r}")
