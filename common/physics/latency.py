"""Latency: network path and prefill, queueing congestion, and the TTFT they add up to."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: Speed of light in optical fibre [km/s].
FIBRE_KM_PER_S = 200_000.0
#: Mean Earth radius used for great-circle distances [km] (IUGG).
EARTH_RADIUS_KM = 6371.0088


def great_circle_km(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray:
    """Haversine great-circle distance [km] between points given in degrees.

    References
    ----------
    .. [1] R. W. Sinnott, "Virtues of the Haversine", Sky and Telescope 68(2), 159, 1984.
    """
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def modelled_rtt_ms(
    distance_km: ArrayLike, route_factor: float = 1.5, fixed_ms: float = 2.0
) -> np.ndarray:
    """Round-trip time over fibre: ``2 · route_factor · d / c_fibre + fixed`` [ms].

    Parameters
    ----------
    distance_km : array_like
        Great-circle distance [km].
    route_factor : float
        Fibre route length over great-circle distance [–] (1.5 reproduces the usual
        Sydney–Melbourne 12–14 ms and Sydney–Perth ~50 ms).
    fixed_ms : float
        Switching and queueing in the path [ms].

    References
    ----------
    .. [1] shared data geo/PROVENANCE.md (rtt_model_ms); not measured data.
    """
    return 2.0 * route_factor * np.asarray(distance_km, dtype=float) / FIBRE_KM_PER_S * 1000.0 + (
        fixed_ms
    )


def path_latency_req_s(
    requests_per_s: ArrayLike, rtt_ms: ArrayLike, prefill_ms: ArrayLike, step_s: float
) -> np.ndarray:
    """Request-seconds of network round trip plus prefill over a step.

    ``Λ_path = x · (rtt + prefill) / 1000 · step_s`` [request-seconds].

    Parameters
    ----------
    requests_per_s : array_like
        Interactive requests per second ``x`` [1/s].
    rtt_ms, prefill_ms : array_like
        [ms], broadcast against ``requests_per_s``.
    step_s : float
        Step length [s].

    References
    ----------
    .. [1] docs/model.md §3.
    """
    return (
        np.asarray(requests_per_s, dtype=float)
        * (np.asarray(rtt_ms, dtype=float) + np.asarray(prefill_ms, dtype=float))
        / 1000.0
        * step_s
    )


def congestion_latency_req_s(
    load_gpus: ArrayLike,
    max_wait_ms: ArrayLike,
    ref_gpu_s: ArrayLike,
    gpus: ArrayLike,
    u_max: ArrayLike,
    step_s: float,
) -> np.ndarray:
    r"""Request-seconds spent queueing before prefill over a step.

    .. math:: \Lambda_{queue} = \frac{w_{max}}{1000}\,\frac{L^2}{g_{ref}\,G\,u_{max}}\,\Delta_s

    The mean wait grows linearly with utilisation ``L / G`` and reaches ``max_wait_ms`` at
    ``u_max``; requests per second are approximated by ``L / ref_gpu_s``.

    Parameters
    ----------
    load_gpus : array_like
        Busy GPUs ``L`` [–].
    max_wait_ms : array_like
        Mean queueing delay at ``u_max`` [ms].
    ref_gpu_s : array_like
        Reference GPU-seconds per request [s].
    gpus : array_like
        Installed GPUs ``G`` [–].
    u_max : array_like
        Highest allowed utilisation [–].
    step_s : float
        Step length [s].

    References
    ----------
    .. [1] docs/model.md §3.
    """
    load = np.asarray(load_gpus, dtype=float)
    return (
        np.asarray(max_wait_ms, dtype=float)
        / 1000.0
        * load**2
        / (np.asarray(ref_gpu_s, dtype=float) * np.asarray(gpus, dtype=float) * np.asarray(u_max))
        * step_s
    )


#: Fewer interactive requests than this over a horizon have no meaningful mean TTFT: a site
#: that serves only batch carries interior-point residues of ~1e-6 requests, whose "mean"
#: would be billions of milliseconds.
MIN_REQUESTS_FOR_MEAN = 1.0


def mean_ttft_ms(total_latency_req_s: ArrayLike, interactive_requests: ArrayLike) -> np.ndarray:
    """Mean time to first token: ``1000 · ΣΛ / interactive requests`` [ms].

    NaN where fewer than :data:`MIN_REQUESTS_FOR_MEAN` interactive requests were served (a
    mean of nothing; the outputs write it as null).

    References
    ----------
    .. [1] docs/model.md §6.
    """
    lat = np.asarray(total_latency_req_s, dtype=float)
    n = np.asarray(interactive_requests, dtype=float)
    return np.divide(
        1000.0 * lat, n, out=np.full_like(lat * n, np.nan), where=n >= MIN_REQUESTS_FOR_MEAN
    )
