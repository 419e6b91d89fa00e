"""``python -m thermoroute``: the ``thermoroute`` console script, for environments without it."""

from thermoroute.console import main

main()
