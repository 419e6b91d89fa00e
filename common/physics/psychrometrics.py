"""Moist-air relations: wet-bulb temperature from dry-bulb temperature and humidity."""

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
