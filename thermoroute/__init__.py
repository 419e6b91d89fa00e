"""The thermoroute application: command line and composition of coordinator and sites."""

from common import __version__

__all__ = ["__version__"]
