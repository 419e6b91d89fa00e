"""The thermoroute application: command line, Python API and composition of coordinator and
sites.

The Python API (:mod:`thermoroute.api`)::

    import thermoroute
    solution = thermoroute.solve("australia", solver="central")
    solution.shares()                     # who serves whom
"""

from thermoroute.api import compare, load_scenario, solve
from thermoroute.common import __version__
from thermoroute.results import Solution

__all__ = ["Solution", "__version__", "compare", "load_scenario", "solve"]
