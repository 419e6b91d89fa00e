"""Cooling overhead: partial power usage effectiveness (pPUE) against dry-bulb temperature."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: Default coefficients of the quadratic pPUE(T) curve (docs/MODEL.md §3).
DEFAULT_PPUE_A = 1.0743
DEFAULT_PPUE_B = 0.0041
DEFAULT_PPUE_C = 7.1705e-5


def partial_pue(
    dry_bulb_c: ArrayLike,
    a: ArrayLike = DEFAULT_PPUE_A,
    b: ArrayLike = DEFAULT_PPUE_B,
    c: ArrayLike = DEFAULT_PPUE_C,
) -> np.ndarray:
    r"""Partial PUE of the cooling plant at an outdoor dry-bulb temperature.

    .. math:: \mathrm{pPUE}(T) = \max\left(1,\ a + b\,T + c\,T^2\right)

    Parameters
    ----------
    dry_bulb_c : array_like
        Outdoor dry-bulb temperature [°C].
    a, b, c : array_like
        Curve coefficients [–], [1/°C], [1/°C²]; broadcast against ``dry_bulb_c``.

    Returns
    -------
    ndarray
        Facility energy per unit of IT energy [–], at least 1.

    Notes
    -----
    The default coefficients fit an outside-air-economised production plant whose partial
    PUE is about 1.05 at −3.9 °C and 1.30 at 35 °C [1]_.

    References
    ----------
    .. [1] H. Xu, C. Feng, B. Li, "Temperature Aware Workload Management in Geo-distributed
       Datacenters", ACM SIGMETRICS 2013.
    """
    t = np.asarray(dry_bulb_c, dtype=float)
    return np.maximum(1.0, np.asarray(a) + np.asarray(b) * t + np.asarray(c) * t * t)


def cooling_energy_kwh(pue: ArrayLike, it_energy_kwh: ArrayLike) -> np.ndarray:
    """Cooling (and other non-IT) energy, ``(pue − 1) · E_it`` [kWh].

    Parameters
    ----------
    pue : array_like
        Partial PUE [–].
    it_energy_kwh : array_like
        IT energy [kWh].

    References
    ----------
    .. [1] docs/MODEL.md §3.
    """
    return (np.asarray(pue, dtype=float) - 1.0) * np.asarray(it_energy_kwh, dtype=float)
