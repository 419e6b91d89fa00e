"""Cooling overhead: partial power usage effectiveness (pPUE) against dry-bulb temperature."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: Default coefficients of the quadratic pPUE(T) curve (docs/model.md §3).
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
    .. [1] docs/model.md §3.
    """
    return (np.asarray(pue, dtype=float) - 1.0) * np.asarray(it_energy_kwh, dtype=float)


def derated_capacity_fraction(
    dry_bulb_c: ArrayLike,
    design_c: ArrayLike,
    derate_per_c: ArrayLike,
    min_fraction: ArrayLike,
) -> np.ndarray:
    r"""Share of a site's GPUs its cooling plant can carry at an outdoor dry bulb (model v1.1).

    .. math:: f = \max\big(f_{\min},\ 1 - d\,\max(0,\ T - T_d)\big)

    Parameters
    ----------
    dry_bulb_c : array_like
        Outdoor dry-bulb temperature ``T`` [°C].
    design_c : array_like
        Design ambient ``T_d`` of the heat rejection (chiller or dry cooler) [°C]: up to it
        the plant removes the full IT heat.
    derate_per_c : array_like
        Capacity lost per °C above the design ambient, ``d`` [1/°C].
    min_fraction : array_like
        Floor ``f_min`` of the derated capacity [–], in [0, 1].

    Returns
    -------
    ndarray
        ``f`` [–] in ``[f_min, 1]``; the powered GPUs are limited to ``f · gpus``. NaN where
        any parameter is NaN (a site without plant data has no such limit).

    Notes
    -----
    Air-cooled chillers and dry coolers lose capacity above their design ambient: their
    condensers reject heat into a smaller temperature difference. Manufacturers' rating
    tables give a loss of the order of 1–2 % of capacity per °C above the rating point [1]_; the
    floor stands for the capacity the plant keeps at any ambient the site can see (free
    cooling, redundancy), so one hot hour never reads as a dead site.

    References
    ----------
    .. [1] ASHRAE Handbook — HVAC Systems and Equipment, the chapters on compressors and
       condensers: capacity of air-cooled condensing units against entering-air
       temperature. docs/model.md §12.
    """
    t = np.asarray(dry_bulb_c, dtype=float)
    over = np.maximum(0.0, t - np.asarray(design_c, dtype=float))
    return np.maximum(
        np.asarray(min_fraction, dtype=float), 1.0 - np.asarray(derate_per_c, dtype=float) * over
    )


def ppue_curve(dry_bulb_c: ArrayLike, points_c: ArrayLike, points_ppue: ArrayLike) -> np.ndarray:
    """Partial PUE from a measured curve: piecewise-linear in the dry bulb (model v1.1).

    Parameters
    ----------
    dry_bulb_c : array_like
        Outdoor dry-bulb temperature [°C].
    points_c : array_like, shape (K,)
        Dry bulbs of the measured points [°C], strictly increasing, ``K ≥ 2``.
    points_ppue : array_like, shape (K,)
        pPUE at each point [–], each at least 1.

    Returns
    -------
    ndarray
        pPUE [–] at ``dry_bulb_c``: linear between neighbouring points, constant beyond the
        first and the last point (a measured curve says nothing outside its range).

    Notes
    -----
    An economised plant runs on outside air below a knee and mechanically above it, so its
    pPUE has a kink a quadratic cannot follow; a few measured points can [1]_.

    References
    ----------
    .. [1] ASHRAE TC 9.9, "Thermal Guidelines for Data Processing Environments", 5th ed.
       (2021): economiser hours and cooling energy against climate. docs/model.md §12.
    """
    return np.interp(
        np.asarray(dry_bulb_c, dtype=float),
        np.asarray(points_c, dtype=float),
        np.asarray(points_ppue, dtype=float),
    )
