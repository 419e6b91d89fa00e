"""Moist-air relations: wet-bulb temperature from dry-bulb temperature, humidity and pressure."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def wet_bulb_stull(dry_bulb_c: ArrayLike, relative_humidity_pct: ArrayLike) -> np.ndarray:
    r"""Wet-bulb temperature by Stull's closed-form fit.

    .. math::
        T_w = T \arctan\!\big(0.151977\,(RH + 8.313659)^{1/2}\big)
              + \arctan(T + RH) - \arctan(RH - 1.676331)
              + 0.00391838\,RH^{3/2} \arctan(0.023101\,RH) - 4.686035

    Parameters
    ----------
    dry_bulb_c : array_like
        Air temperature [°C].
    relative_humidity_pct : array_like
        Relative humidity [%], 0–100.

    Returns
    -------
    ndarray
        Wet-bulb temperature [°C]. Valid within about ±1 °C for RH 5–99 % and
        T −20…50 °C at sea-level pressure [1]_; never above ``dry_bulb_c``.

    References
    ----------
    .. [1] R. Stull, "Wet-Bulb Temperature from Relative Humidity and Air Temperature",
       Journal of Applied Meteorology and Climatology 50(11), 2267–2269, 2011.
    """
    t = np.asarray(dry_bulb_c, dtype=float)
    rh = np.clip(np.asarray(relative_humidity_pct, dtype=float), 0.0, 100.0)
    tw = (
        t * np.arctan(0.151977 * np.sqrt(rh + 8.313659))
        + np.arctan(t + rh)
        - np.arctan(rh - 1.676331)
        + 0.00391838 * rh**1.5 * np.arctan(0.023101 * rh)
        - 4.686035
    )
    return np.minimum(tw, t)


#: Psychrometer coefficient of the WMO formula [1/°C] and its wet-bulb dependence [1/°C].
PSYCHROMETER_A = 6.53e-4
PSYCHROMETER_A_SLOPE = 0.000944


def saturation_vapour_pressure_hpa(temperature_c: ArrayLike, pressure_hpa: ArrayLike) -> np.ndarray:
    r"""Saturation vapour pressure of moist air over water [hPa] (WMO).

    .. math::
        e_w'(p, T) = f(p)\, 6.112 \exp\!\left(\frac{17.62\,T}{243.12 + T}\right), \qquad
        f(p) = 1.0016 + 3.15\times10^{-6} p - 0.074 / p

    Parameters
    ----------
    temperature_c : array_like
        Temperature [°C], −45…60.
    pressure_hpa : array_like
        Air pressure [hPa].

    References
    ----------
    .. [1] WMO, "Guide to Meteorological Instruments and Methods of Observation" (WMO-No. 8,
       2008 edition), Annex 4.B, formulae (4.B.1)–(4.B.3).
    """
    t = np.asarray(temperature_c, dtype=float)
    p = np.asarray(pressure_hpa, dtype=float)
    enhancement = 1.0016 + 3.15e-6 * p - 0.074 / p
    return enhancement * 6.112 * np.exp(17.62 * t / (243.12 + t))


def wet_bulb_psychrometric(
    dry_bulb_c: ArrayLike, relative_humidity_pct: ArrayLike, pressure_hpa: ArrayLike
) -> np.ndarray:
    r"""Wet-bulb temperature from the WMO psychrometer equation, solved exactly.

    The wet bulb ``T_w`` is the root of

    .. math::
        e_w'(p, T_w) - A\,(1 + 0.000944\,T_w)\,p\,(T - T_w) = \frac{RH}{100}\, e_w'(p, T),
        \qquad A = 6.53\times10^{-4}\ \mathrm{°C^{-1}}

    (the ventilated-psychrometer coefficient of [1]_), with :func:`saturation_vapour_pressure_hpa`.
    The left side rises strictly with ``T_w`` and is at least the right side at ``T_w = T``,
    so the root is found by bisection on ``[T − 80 °C, T]`` (60 halvings: below 1e-15 °C).
    Unlike :func:`wet_bulb_stull` it uses the station's pressure, which matters at altitude
    (Canberra, ~940 hPa: a few tenths of a degree).

    Parameters
    ----------
    dry_bulb_c : array_like
        Air temperature [°C].
    relative_humidity_pct : array_like
        Relative humidity over water [%], clipped to 0.1–100.
    pressure_hpa : array_like
        Surface air pressure [hPa] (not reduced to sea level).

    Returns
    -------
    ndarray
        Wet-bulb temperature [°C], never above ``dry_bulb_c``.

    References
    ----------
    .. [1] WMO, "Guide to Meteorological Instruments and Methods of Observation" (WMO-No. 8,
       2008 edition), Annex 4.B, formula (4.B.5) (psychrometer formula, Assmann type).
    """
    t, rh, p = np.broadcast_arrays(
        np.asarray(dry_bulb_c, dtype=float),
        np.clip(np.asarray(relative_humidity_pct, dtype=float), 0.1, 100.0),
        np.asarray(pressure_hpa, dtype=float),
    )
    vapour = rh / 100.0 * saturation_vapour_pressure_hpa(t, p)

    def excess(tw: np.ndarray) -> np.ndarray:
        coefficient = PSYCHROMETER_A * (1.0 + PSYCHROMETER_A_SLOPE * tw)
        return saturation_vapour_pressure_hpa(tw, p) - coefficient * p * (t - tw) - vapour

    # 80 °C below the air is below the wet bulb for any RH ≥ 0.1 % in the valid range.
    low, high = t - 80.0, t.copy()
    for _ in range(60):
        mid = 0.5 * (low + high)
        above = excess(mid) > 0.0
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    return np.minimum(0.5 * (low + high), t)
