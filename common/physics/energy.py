"""Electrical energy: IT power of a site, facility energy and its cost and carbon."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def it_power_kw(
    idle_w: ArrayLike, active_gpus: ArrayLike, dynamic_power_w: ArrayLike
) -> np.ndarray:
    r"""IT power of a site, ``P = (idle_w · n + Σ energy_j · x) / 1000`` [kW].

    Parameters
    ----------
    idle_w : array_like
        Idle power per powered GPU, including its share of host and network [W].
    active_gpus : array_like
        Powered GPUs ``n`` [–].
    dynamic_power_w : array_like
        ``Σ_jc energy_j[c] · x[j,c]``: energy per request [J] times requests per second,
        i.e. the power above idle [W].

    References
    ----------
    .. [1] docs/model.md §3.
    """
    return (
        np.asarray(idle_w, dtype=float) * np.asarray(active_gpus, dtype=float)
        + np.asarray(dynamic_power_w, dtype=float)
    ) / 1000.0


def facility_energy_kwh(pue: ArrayLike, it_energy_kwh: ArrayLike) -> np.ndarray:
    """Facility energy drawn from the grid, ``pue · E_it`` [kWh].

    References
    ----------
    .. [1] The Green Grid, "PUE: A Comprehensive Examination of the Metric", 2012.
    """
    return np.asarray(pue, dtype=float) * np.asarray(it_energy_kwh, dtype=float)


def energy_cost_aud(price_aud_per_mwh: ArrayLike, facility_energy_kwh: ArrayLike) -> np.ndarray:
    """Wholesale energy cost, ``price / 1000 · E_fac`` [AUD]; negative prices earn money.

    Parameters
    ----------
    price_aud_per_mwh : array_like
        Regional reference price [AUD/MWh].
    facility_energy_kwh : array_like
        [kWh].

    References
    ----------
    .. [1] AEMO, "Aggregated price and demand data" (regional reference price, RRP).
    """
    return (
        np.asarray(price_aud_per_mwh, dtype=float)
        / 1000.0
        * np.asarray(facility_energy_kwh, dtype=float)
    )


def carbon_kg(carbon_kg_per_kwh: ArrayLike, facility_energy_kwh: ArrayLike) -> np.ndarray:
    """Location-based scope-2 emissions, ``ci · E_fac`` [kg CO2-e].

    Parameters
    ----------
    carbon_kg_per_kwh : array_like
        Grid emissions intensity [kg CO2-e/kWh].
    facility_energy_kwh : array_like
        [kWh].

    References
    ----------
    .. [1] DCCEEW, National Greenhouse Accounts Factors 2024, Table 1.
    """
    return np.asarray(carbon_kg_per_kwh, dtype=float) * np.asarray(facility_energy_kwh, dtype=float)
