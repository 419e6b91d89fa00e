"""thermoroute's model layer: scenario data, physics and the centralised reference.

Nothing in this package knows about Ray: it is plain NumPy, SciPy and cvxpy, so every
solver (distributed or not) and every test can share it.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
