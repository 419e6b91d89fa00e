"""Water: on-site water-use effectiveness (WUE) of cooling, and off-site water of generation."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: Floor of the cooling-tower WUE curve [L/kWh] (docs/model.md §4).
TOWER_WUE_FLOOR = 0.05
#: Default cycles of concentration of a cooling tower [–].
DEFAULT_CYCLES = 6.0


def wue_tower(wet_bulb_c: ArrayLike, cycles: ArrayLike = DEFAULT_CYCLES) -> np.ndarray:
    r"""On-site WUE of an evaporative cooling tower.

    .. math::
        F = \tfrac95 T_w + 32,\quad
        \mathrm{WUE} = \max\!\Big(0.05,\ \frac{S}{S-1}\,
        (6\cdot10^{-5}F^3 - 0.01F^2 + 0.61F - 10.4)\Big)

    Parameters
    ----------
    wet_bulb_c : array_like
        Outdoor wet-bulb temperature [°C].
    cycles : array_like
        Cycles of concentration ``S`` of the tower water [–], > 1.

    Returns
    -------
    ndarray
        Water evaporated and blown down per unit of IT energy [L/kWh].

    References
    ----------
    .. [1] P. Li, J. Yang, M. A. Islam, S. Ren, "Making AI Less 'Thirsty': Uncovering and
       Addressing the Secret Water Footprint of AI Models", arXiv:2304.03271, 2023.
    """
    f = np.asarray(wet_bulb_c, dtype=float) * 9.0 / 5.0 + 32.0
    s = np.asarray(cycles, dtype=float)
    evaporation = 6e-5 * f**3 - 0.01 * f**2 + 0.61 * f - 10.4
    return np.maximum(TOWER_WUE_FLOOR, s / (s - 1.0) * evaporation)


def wue_economizer(
    wet_bulb_c: ArrayLike, threshold_c: ArrayLike, slope_l_per_kwh_c: ArrayLike
) -> np.ndarray:
    r"""On-site WUE of free-air cooling with evaporative assist above a wet-bulb threshold.

    .. math:: \mathrm{WUE} = \max\big(0,\ k\,(T_w - T_{w0})\big)

    Parameters
    ----------
    wet_bulb_c : array_like
        Outdoor wet-bulb temperature [°C].
    threshold_c : array_like
        Wet bulb ``T_w0`` above which evaporative assist runs [°C].
    slope_l_per_kwh_c : array_like
        Water per kWh of IT energy per °C above the threshold, ``k`` [L/kWh/°C].

    Returns
    -------
    ndarray
        [L/kWh]. Zero while the plant runs on outside air alone.

    References
    ----------
    .. [1] docs/model.md §4; AWS reports ~0.10 L/kWh (Sydney) and ~0.06 L/kWh (Melbourne)
       for free-air-cooled sites that use evaporation only at summer peaks.
    """
    tw = np.asarray(wet_bulb_c, dtype=float)
    return np.maximum(0.0, np.asarray(slope_l_per_kwh_c) * (tw - np.asarray(threshold_c)))


def wue_dry(wet_bulb_c: ArrayLike) -> np.ndarray:
    """On-site WUE of closed-loop dry coolers: zero [L/kWh] at every wet bulb.

    Parameters
    ----------
    wet_bulb_c : array_like
        Outdoor wet-bulb temperature [°C] (only its shape is used).

    References
    ----------
    .. [1] docs/model.md §4.
    """
    return np.zeros_like(np.asarray(wet_bulb_c, dtype=float))


def onsite_wue(
    wue_model: str | ArrayLike,
    wet_bulb_c: ArrayLike,
    p1: ArrayLike,
    p2: ArrayLike,
) -> np.ndarray:
    """On-site WUE for sites that each name their model (``tower``, ``economizer``, ``dry``).

    Parameters
    ----------
    wue_model : str or array_like of str, shape (S,)
        Cooling model per site.
    wet_bulb_c : array_like, shape (S, T) or (S,)
        Wet-bulb temperature [°C].
    p1, p2 : array_like, shape (S,)
        Model parameters: ``tower`` uses ``p1`` = cycles of concentration; ``economizer`` uses
        ``p1`` = threshold [°C] and ``p2`` = slope [L/kWh/°C]; ``dry`` uses neither.

    Returns
    -------
    ndarray
        [L/kWh], the shape of ``wet_bulb_c``.

    References
    ----------
    .. [1] docs/model.md §4.
    """
    tw = np.asarray(wet_bulb_c, dtype=float)
    scalar = tw.ndim == 0
    tw = np.atleast_1d(tw)
    models = np.asarray(wue_model, dtype=object).reshape(-1)
    if models.size == 1:
        models = np.full(tw.shape[0], models[0], dtype=object)
    p1 = np.broadcast_to(np.asarray(p1, dtype=float).reshape(-1), models.shape)
    p2 = np.broadcast_to(np.asarray(p2, dtype=float).reshape(-1), models.shape)
    per_site = (slice(None),) + (None,) * (tw.ndim - 1)
    out = np.zeros_like(tw)
    for name in set(models.tolist()):
        rows = models == name
        if name == "tower":
            out[rows] = wue_tower(tw[rows], p1[rows][per_site])
        elif name == "economizer":
            out[rows] = wue_economizer(tw[rows], p1[rows][per_site], p2[rows][per_site])
        elif name == "dry":
            out[rows] = wue_dry(tw[rows])
        else:
            raise ValueError(f"unknown wue_model {name!r}")
    return out[0] if scalar else out


def offsite_water_l(ewif_l_per_kwh: ArrayLike, facility_energy_kwh: ArrayLike) -> np.ndarray:
    """Water consumed off site by the generation that supplies the facility [L].

    Parameters
    ----------
    ewif_l_per_kwh : array_like
        Energy water intensity factor of the supplying grid [L/kWh].
    facility_energy_kwh : array_like
        Facility energy drawn from the grid [kWh].

    References
    ----------
    .. [1] P. Li et al., arXiv:2304.03271 (2023).
    .. [2] J. Macknick et al., "Operational water consumption and withdrawal factors for
       electricity generating technologies", Environ. Res. Lett. 7 045802, 2012.
    """
    return np.asarray(ewif_l_per_kwh, dtype=float) * np.asarray(facility_energy_kwh, dtype=float)


def ewif_from_generation(generation_mw: ArrayLike, water_l_per_kwh: ArrayLike) -> np.ndarray:
    """Generation-weighted water intensity of a grid mix [L/kWh].

    Parameters
    ----------
    generation_mw : array_like, shape (..., F)
        Output of each of ``F`` generation technologies [MW] (negative values, such as
        imports or storage charging, are ignored).
    water_l_per_kwh : array_like, shape (F,)
        Operational water consumption of each technology [L/kWh].

    Returns
    -------
    ndarray, shape (...)
        [L/kWh]; zero where nothing generates.

    References
    ----------
    .. [1] J. Macknick et al., Environ. Res. Lett. 7 045802, 2012.
    """
    gen = np.clip(np.nan_to_num(np.asarray(generation_mw, dtype=float)), 0.0, None)
    total = gen.sum(axis=-1)
    water = gen @ np.asarray(water_l_per_kwh, dtype=float)
    return np.divide(water, total, out=np.zeros_like(total), where=total > 0)


def daily_windows(steps: int, step_hours: float) -> tuple[np.ndarray, np.ndarray]:
    """The days of a horizon over which an on-site water allowance counts (model v1.1).

    Parameters
    ----------
    steps : int
        Steps of the horizon.
    step_hours : float
        Length of a step [h]; must divide 24.

    Returns
    -------
    window : ndarray of int, shape (steps,)
        Window of each step: windows of ``24 / step_hours`` consecutive steps from the
        horizon's first step.
    share : ndarray, shape (windows,)
        Share of a day's allowance each window gets [–]: 1 for a full window, its length over
        a day's steps for a last, shorter one (the allowance pro-rated).

    Raises
    ------
    ValueError
        If ``step_hours`` does not divide a day.

    References
    ----------
    .. [1] docs/model.md §12 (on-site water allowance).
    """
    per_day = 24.0 / step_hours
    length = round(per_day)
    if length < 1 or abs(per_day - length) > 1e-9 * per_day:
        raise ValueError(f"a step of {step_hours:g} h does not divide a day")
    window = np.arange(steps) // length
    sizes = np.bincount(window, minlength=int(window[-1]) + 1 if steps else 0)
    return window, sizes / length
