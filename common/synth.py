"""Synthetic scenarios of any size over Australia, for tests and scaling experiments.

:func:`synthesize` builds a complete, valid :class:`~thermoroute.common.scenario.Scenario` (it
passes :func:`thermoroute.common.scenario_loading.load_scenario` after a write) from a seed alone: a
fleet of edge data centres spread over populated Australia, regions at population centres, three
request classes and plausible hourly weather and grid signals. Nothing is read from disk, and the
same arguments always give the same scenario.

What is synthetic and how
-------------------------
- **Places.** Sites and extra regions are scattered around the 16 largest Australian urban
  areas (:data:`CITIES`) — a coastal bias, as the real population — with a Gaussian spread
  of about 1° for sites and 1.5° for extra regions, clipped to the mainland/Tasmania box.
  The first regions are the cities themselves (largest first), weighted by population.
- **Weather.** January mean dry bulb falls with latitude, ``29 − 0.4·(|lat| − 12.5)`` °C
  (Darwin ≈ 29 °C, Hobart ≈ 17 °C), plus a per-site offset and a day-to-day random walk; a
  diurnal cycle with its minimum near 05:00 and maximum near 15:00 local solar time; dew
  point a per-site depression below the daily mean (humid north, drier south), relative
  humidity from the Magnus formula and wet bulb by Stull (2011).
- **Grid.** Each site takes the grid region of the nearest city. Prices follow a "duck"
  shape (solar trough at midday, evening peak) around a typical level per grid region;
  carbon and off-site water intensity are the NGA 2024 factor and a coal-share water
  intensity, lowered around solar noon.
- **Fleet.** H100 or A100 sites (60/40), 64–1,024 GPUs, cooling ``tower`` (cycles 4–8),
  ``economizer`` (threshold 16–20 °C wet bulb, slope 0.02–0.06 L/kWh/°C) or ``dry``; serving
  profiles from :mod:`thermoroute.common.physics.serving`; RTT from great-circle distance.
- **Demand.** Interactive requests per region proportional to population with the BurstGPT
  hour-of-day shape applied in the region's local (January daylight-saving) time; sized so the
  interactive peak plus the mean batch rate keeps the fleet :data:`TARGET_PEAK_UTILISATION`
  busy (of ``Σ u_max·G``, measured with the cheapest allowed ``gpu_s``).

TTFT SLOs start at :data:`BASE_TTFT_SLO_MS` and are raised, where needed, so that every region
has at least one site within its SLO for every class; the scenario is then checked with the
same rules as ``load_scenario`` and demand scaled down in the rare case it is not servable.

References
----------
.. [1] R. Stull, "Wet-Bulb Temperature from Relative Humidity and Air Temperature", J. Appl.
   Meteor. Climatol. 50, 2011.
.. [2] DCCEEW, National Greenhouse Accounts Factors 2024 (state scope-2 factors).
.. [3] Y. Wang et al., "BurstGPT: A Real-World Workload Dataset to Optimize LLM Serving
   Systems", arXiv:2401.17644 (hour-of-day arrival shape).
.. [4] P. Patel et al., "Splitwise", ISCA 2024 (Azure trace token statistics).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from thermoroute.common.physics.cooling import DEFAULT_PPUE_A, DEFAULT_PPUE_B, DEFAULT_PPUE_C
from thermoroute.common.physics.latency import great_circle_km, modelled_rtt_ms
from thermoroute.common.physics.psychrometrics import wet_bulb_stull
from thermoroute.common.physics.serving import idle_w, reference_gpu_s, serving_profile
from thermoroute.common.scenario import Classes, Objective, Regions, Scenario, Sites, step_times

#: NEM market time (AEST, no daylight saving).
NEM_TZ = timezone(timedelta(hours=10))
#: Default horizon start.
DEFAULT_START = datetime(2023, 1, 18, 0, 0, tzinfo=NEM_TZ)

#: (name, state, lat, lon, population) of the largest Australian urban areas (ABS 2024 ERP
#: for capitals, approximate significant-urban-area figures for the others).
CITIES: tuple[tuple[str, str, float, float, float], ...] = (
    ("Sydney", "NSW", -33.8688, 151.2093, 5557233),
    ("Melbourne", "VIC", -37.8136, 144.9631, 5350705),
    ("Brisbane", "QLD", -27.4698, 153.0251, 2780063),
    ("Perth", "WA", -31.9523, 115.8613, 2384371),
    ("Adelaide", "SA", -34.9285, 138.6007, 1469163),
    ("Gold Coast", "QLD", -28.0167, 153.4000, 740000),
    ("Newcastle", "NSW", -32.9283, 151.7817, 530000),
    ("Canberra", "ACT", -35.2809, 149.1300, 473855),
    ("Sunshine Coast", "QLD", -26.6500, 153.0667, 400000),
    ("Geelong", "VIC", -38.1499, 144.3617, 300000),
    ("Wollongong", "NSW", -34.4278, 150.8931, 310000),
    ("Hobart", "TAS", -42.8821, 147.3272, 254930),
    ("Townsville", "QLD", -19.2590, 146.8169, 185000),
    ("Cairns", "QLD", -16.9186, 145.7781, 160000),
    ("Darwin", "NT", -12.4634, 130.8456, 152489),
    ("Launceston", "TAS", -41.4332, 147.1441, 90000),
)

#: Grid region, January UTC offset (daylight saving where observed), and typical grid figures
#: per state: mean price [AUD/MWh], NGA 2024 scope-2 factor [kg/kWh], off-site water [L/kWh].
STATE_GRID: dict[str, tuple[str, float, float, float, float]] = {
    "NSW": ("NSW1", 11.0, 110.0, 0.66, 1.6),
    "ACT": ("NSW1", 11.0, 110.0, 0.66, 1.6),
    "VIC": ("VIC1", 11.0, 80.0, 0.77, 1.9),
    "QLD": ("QLD1", 10.0, 90.0, 0.71, 1.5),
    "SA": ("SA1", 10.5, 100.0, 0.23, 0.35),
    "TAS": ("TAS1", 11.0, 70.0, 0.15, 0.1),
    "WA": ("WEM", 8.0, 85.0, 0.51, 1.0),
    "NT": ("NT-DKIS", 9.5, 120.0, 0.56, 0.75),
}

#: BurstGPT requests by hour of day (sessions over 61 days, analysis/output/by_hour.csv),
#: taken as the local-time diurnal shape of LLM demand.
BURSTGPT_BY_HOUR = np.array(
    [53097, 51713, 33337, 30471, 21970, 20457, 11523, 8998, 9324, 18234, 41893, 67256,
     101401, 84445, 98301, 71462, 75549, 71690, 65409, 87528, 73298, 62284, 60387, 55616],
    dtype=float,
)  # fmt: skip

#: (class_id, model, prompt tokens, output tokens, deferrable, decode batch, request share).
#: chat/code token means: Azure LLM inference trace 2023 (conversation, code).
CLASS_SPECS: tuple[tuple[str, str, float, float, bool, float, float], ...] = (
    ("chat", "llama-2-70b", 1155.0, 211.0, False, 16.0, 0.55),
    ("code", "llama-3.1-8b", 2048.0, 28.0, False, 16.0, 0.35),
    ("batch", "llama-2-70b", 1155.0, 211.0, True, 32.0, 0.10),
)
#: Starting TTFT SLOs of the interactive classes [ms]; raised if a region would be unservable.
BASE_TTFT_SLO_MS = {"chat": 1000.0, "code": 300.0}
#: Interactive peak plus mean batch rate as a share of ``Σ u_max·G``.
TARGET_PEAK_UTILISATION = 0.62
#: Share of that busy capacity taken by batch work (spread evenly over the horizon).
BATCH_SHARE = 0.15

#: Objective weights, the same as the embedded scenarios (docs/data.md §8): Safeguard
#: cost-containment price AUD 75/t, Sydney Water usage charge AUD 2.67/kL, and the revenue an
#: operator loses per request-second of delay (2.4 %/s of the Bedrock list price of a request).
SYNTH_OBJECTIVE = Objective(
    carbon_aud_per_kg=0.075, water_aud_per_l=0.00267, latency_aud_per_req_s=7.6e-5
)

_LAT_RANGE = (-43.5, -10.7)
_LON_RANGE = (113.0, 153.6)


def _magnus_rh(t_c: np.ndarray, dew_c: np.ndarray) -> np.ndarray:
    """Relative humidity [%] from temperature and dew point (Magnus, Alduchov & Eskridge)."""
    a, b = 17.625, 243.04
    return 100.0 * np.exp(a * dew_c / (b + dew_c) - a * t_c / (b + t_c))


def _scatter(
    rng: np.random.Generator, count: int, weights: np.ndarray, spread_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` points around the cities chosen with ``weights``: (lat, lon, city index)."""
    lat0 = np.array([c[2] for c in CITIES])
    lon0 = np.array([c[3] for c in CITIES])
    anchor = rng.choice(len(CITIES), size=count, p=weights / weights.sum())
    lat = np.clip(lat0[anchor] + rng.normal(0.0, spread_deg, count), *_LAT_RANGE)
    lon = np.clip(lon0[anchor] + rng.normal(0.0, spread_deg, count), *_LON_RANGE)
    return np.round(lat, 4), np.round(lon, 4), anchor


def _nearest_city(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    lat0 = np.array([c[2] for c in CITIES])
    lon0 = np.array([c[3] for c in CITIES])
    d = great_circle_km(lat[:, None], lon[:, None], lat0[None, :], lon0[None, :])
    return np.argmin(d, axis=1)


def _weather(
    rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, hours_utc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dry and wet bulb [°C], shape (S, T), for hours since 00:00 UTC of the first day."""
    s, t = len(lat), len(hours_utc)
    days = int(np.ceil((hours_utc[-1] + 24.0) / 24.0)) + 1
    mean = 29.0 - 0.4 * (np.abs(lat) - 12.5) + rng.normal(0.0, 1.5, s)
    daily = mean[:, None] + np.cumsum(rng.normal(0.0, 1.2, (s, days)), axis=1)
    amplitude = rng.uniform(3.0, 7.0, s)  # half the diurnal range
    solar_h = (hours_utc[None, :] + lon[:, None] / 15.0) % 24.0
    # Daily means sit at solar noon of each day; interpolate between them so the series has no
    # jump at midnight.
    position = np.clip((hours_utc[None, :] + lon[:, None] / 15.0) / 24.0 + 0.5, 0, days - 1.001)
    lower = np.floor(position).astype(int)
    frac = position - lower
    base = (1.0 - frac) * np.take_along_axis(daily, lower, axis=1) + frac * np.take_along_axis(
        daily, lower + 1, axis=1
    )
    # Two harmonics: a faster morning rise, minimum ~05:00 and maximum ~15:00 solar time.
    phase = 2.0 * np.pi * (solar_h - 15.0) / 24.0
    dry = base + amplitude[:, None] * (0.88 * np.cos(phase) + 0.12 * np.cos(2 * phase))
    depression = np.where(np.abs(lat) < 20.0, rng.uniform(2.0, 5.0, s), rng.uniform(5.0, 11.0, s))
    dew = base - depression[:, None] - 0.5 * amplitude[:, None]
    dew = np.minimum(dew, dry)
    rh = np.clip(_magnus_rh(dry, dew), 5.0, 99.0)
    wet = wet_bulb_stull(dry, rh)
    assert dry.shape == (s, t)
    return np.round(dry, 2), np.round(wet, 2)


def _grid_series(
    rng: np.random.Generator, states: list[str], hours_utc: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Price [AUD/MWh], carbon [kg/kWh] and ewif [L/kWh], shape (S, T)."""
    s = len(states)
    grid_names = sorted({STATE_GRID[st][0] for st in STATE_GRID})
    t = len(hours_utc)
    # One series per grid region (prices are regional), then per-site loss-factor jitter.
    level = {g: rng.uniform(0.8, 1.2) for g in grid_names}
    noise = {g: np.exp(rng.normal(0.0, 0.12, t)) for g in grid_names}
    solar_share = {g: rng.uniform(0.15, 0.35) for g in grid_names}
    price = np.empty((s, t))
    carbon = np.empty((s, t))
    ewif = np.empty((s, t))
    for i, st in enumerate(states):
        grid, _, p0, ci, w0 = STATE_GRID[st]
        h = (hours_utc + lon[i] / 15.0) % 24.0
        solar = np.clip(np.cos((h - 12.5) / 12.0 * np.pi * 1.6), 0.0, None)
        duck = 1.0 + 0.45 * np.exp(-(((h - 19.0) / 2.0) ** 2)) - 0.55 * solar
        price[i] = p0 * level[grid] * duck * noise[grid]
        dip = 1.1 - solar_share[grid] * 1.5 * solar
        carbon[i] = ci * dip
        ewif[i] = w0 * dip
    jitter = rng.uniform(0.97, 1.03, s)[:, None]
    return np.round(price * jitter, 2), np.round(carbon, 4), np.round(ewif, 4)


def synthesize(
    sites: int,
    regions: int,
    seed: int,
    *,
    steps: int = 24,
    start: datetime = DEFAULT_START,
    name: str | None = None,
) -> Scenario:
    """A synthetic, valid scenario with ``sites`` data centres and ``regions`` regions.

    Parameters
    ----------
    sites : int
        Number of sites, ≥ 1 (tested up to 5,000).
    regions : int
        Number of demand regions, ≥ 1; the first are the largest Australian cities, further
        ones synthetic towns around them.
    seed : int
        Seed of the random generator; equal arguments give equal scenarios.
    steps : int
        Hourly steps of the horizon.
    start : datetime
        Start of the first step (timezone-aware).
    name : str, optional
        Scenario name; ``synth-<sites>x<regions>-s<seed>`` by default.

    Returns
    -------
    Scenario
        With classes ``chat`` and ``code`` (interactive) and ``batch`` (deferrable).
    """
    if sites < 1 or regions < 1 or steps < 1:
        raise ValueError("sites, regions and steps must be >= 1")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    rng = np.random.default_rng(seed)
    pop = np.array([c[4] for c in CITIES], dtype=float)
    states_of_city = [c[1] for c in CITIES]

    # Regions: the largest cities first, then synthetic towns around them.
    n_real = min(regions, len(CITIES))
    r_lat = np.array([c[2] for c in CITIES[:n_real]])
    r_lon = np.array([c[3] for c in CITIES[:n_real]])
    r_pop = pop[:n_real].copy()
    r_name = [c[0] for c in CITIES[:n_real]]
    if regions > n_real:
        extra = regions - n_real
        lat, lon, anchor = _scatter(rng, extra, pop, 1.5)
        r_lat, r_lon = np.concatenate([r_lat, lat]), np.concatenate([r_lon, lon])
        r_pop = np.concatenate([r_pop, np.round(np.exp(rng.normal(10.0, 1.0, extra)))])
        r_name += [f"{CITIES[a][0]} area {k}" for k, a in enumerate(anchor)]
    r_states = [states_of_city[k] for k in _nearest_city(r_lat, r_lon)]
    region_table = Regions(
        region_id=tuple(f"r{j:04d}" for j in range(regions)),
        name=tuple(r_name),
        lat=r_lat,
        lon=r_lon,
        population=r_pop,
    )

    # Sites: around cities weighted by √population (edge sites follow people, but spread).
    s_lat, s_lon, _ = _scatter(rng, sites, np.sqrt(pop), 1.0)
    near = _nearest_city(s_lat, s_lon)
    s_states = [states_of_city[k] for k in near]
    gpu_type = np.where(rng.random(sites) < 0.6, "H100", "A100")
    gpus = 8.0 * np.round(np.exp(rng.uniform(np.log(8), np.log(128), sites)))
    cooling = rng.choice(np.array(["tower", "economizer", "dry"]), size=sites, p=[0.4, 0.4, 0.2])
    p1 = np.where(
        cooling == "tower",
        rng.integers(4, 9, sites).astype(float),
        np.where(cooling == "economizer", np.round(rng.uniform(16.0, 20.0, sites), 1), 0.0),
    )
    p2 = np.where(cooling == "economizer", np.round(rng.uniform(0.02, 0.06, sites), 3), 0.0)
    # Dry coolers run compressors more in heat: a slightly higher pPUE curve.
    ppue_a = np.where(cooling == "dry", DEFAULT_PPUE_A + 0.03, DEFAULT_PPUE_A)
    u_max = np.round(rng.uniform(0.85, 0.95, sites), 3)
    max_wait = np.round(rng.uniform(40.0, 150.0, sites))

    # Classes and serving profiles.
    C = len(CLASS_SPECS)
    gpu_s = np.empty((sites, C))
    energy = np.empty((sites, C))
    prefill = np.empty((sites, C))
    for c, (_, model, p_tok, o_tok, _, batch, _) in enumerate(CLASS_SPECS):
        for kind in ("H100", "A100"):
            rows = gpu_type == kind
            g, e, p = serving_profile(kind, model, p_tok, o_tok, batch)
            gpu_s[rows, c], energy[rows, c], prefill[rows, c] = float(g), float(e), float(p)
    gpu_s, energy, prefill = np.round(gpu_s, 6), np.round(energy, 3), np.round(prefill, 3)
    shares = np.array([spec[6] for spec in CLASS_SPECS])
    ref = np.array([round(reference_gpu_s(gpu_s[i], shares), 6) for i in range(sites)])
    site_table = Sites(
        site_id=tuple(f"s{i:04d}" for i in range(sites)),
        name=tuple(f"{CITIES[k][0]} edge {i}" for i, k in enumerate(near)),
        lat=s_lat,
        lon=s_lon,
        grid_region=tuple(STATE_GRID[st][0] for st in s_states),
        gpus=gpus,
        idle_w=np.array([idle_w(str(g)) for g in gpu_type]),
        u_max=u_max,
        max_wait_ms=max_wait,
        ref_gpu_s=ref,
        ppue_a=ppue_a,
        ppue_b=np.full(sites, DEFAULT_PPUE_B),
        ppue_c=np.full(sites, DEFAULT_PPUE_C),
        wue_model=tuple(str(m) for m in cooling),
        wue_p1=p1,
        wue_p2=p2,
    )
    rtt = np.round(
        modelled_rtt_ms(great_circle_km(s_lat[:, None], s_lon[:, None], r_lat, r_lon)), 2
    )

    deferrable = np.array([spec[4] for spec in CLASS_SPECS])
    worst = rtt[:, :, None] + prefill[:, None, :] + max_wait[:, None, None]  # (S, R, C)
    need = worst.min(axis=0).max(axis=0)  # the SLO that leaves every region one site
    slo = np.array(
        [
            np.inf if d else max(BASE_TTFT_SLO_MS[cid], float(np.ceil(need[c] * 1.05 / 10) * 10))
            for c, (cid, d) in enumerate(zip([s[0] for s in CLASS_SPECS], deferrable, strict=True))
        ]
    )
    class_table = Classes(
        class_id=tuple(s[0] for s in CLASS_SPECS),
        model=tuple(s[1] for s in CLASS_SPECS),
        prompt_tokens=np.array([s[2] for s in CLASS_SPECS]),
        output_tokens=np.array([s[3] for s in CLASS_SPECS]),
        ttft_slo_ms=slo,
        deferrable=deferrable,
    )

    # Time series.
    times = step_times(start, 1.0, steps)
    midnight_utc = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hours_utc = np.array([(t - midnight_utc).total_seconds() / 3600.0 for t in times])
    dry, wet = _weather(rng, s_lat, s_lon, hours_utc)
    price, carbon, ewif = _grid_series(rng, s_states, hours_utc, s_lon)

    # Demand: population × BurstGPT shape in each region's local clock.
    shape = BURSTGPT_BY_HOUR / BURSTGPT_BY_HOUR.mean()
    offsets = np.array([STATE_GRID[st][1] for st in r_states])
    local_h = (hours_utc[None, :] + offsets[:, None]) % 24.0
    lo = np.floor(local_h).astype(int)
    frac = local_h - lo
    diurnal = (1 - frac) * shape[lo % 24] + frac * shape[(lo + 1) % 24]  # (R, T)
    weight = r_pop / r_pop.sum()
    allowed = np.where(deferrable[None, None, :], True, worst <= slo[None, None, :])
    min_g = np.where(allowed, gpu_s[:, None, :], np.inf).min(axis=0)  # (R, C)
    inter = ~deferrable
    req_share = shares / shares[inter].sum()
    # Busy GPUs per unit of national interactive rate (req/s) at each step.
    unit_load = np.einsum("jt,j,jc,c->t", diurnal, weight, min_g[:, inter], req_share[inter])
    capacity = float((u_max * gpus).sum())
    busy = TARGET_PEAK_UTILISATION * capacity
    national_rps = (1.0 - BATCH_SHARE) * busy / unit_load.max()
    demand = np.zeros((regions, C, steps))
    demand[:, inter, :] = (
        national_rps * weight[:, None, None] * req_share[inter][None, :, None] * diurnal[:, None]
    )
    demand = np.round(demand, 6)
    batch_gpu_s = BATCH_SHARE * busy * steps * 3600.0
    batch_requests = np.zeros((regions, C))
    for k in np.flatnonzero(deferrable):
        batch_requests[:, k] = np.round(
            batch_gpu_s * (shares[k] / shares[deferrable].sum()) * weight / min_g[:, k]
        )

    scenario = Scenario(
        name=name or f"synth-{sites}x{regions}-s{seed}",
        start=times[0],
        step_hours=1.0,
        objective=SYNTH_OBJECTIVE,
        sites=site_table,
        regions=region_table,
        classes=class_table,
        gpu_s=gpu_s,
        energy_j=energy,
        prefill_ms=prefill,
        rtt_ms=rtt,
        times=times,
        dry_bulb_c=dry,
        wet_bulb_c=wet,
        price_aud_per_mwh=price,
        carbon_kg_per_kwh=carbon,
        ewif_l_per_kwh=ewif,
        demand_rps=demand,
        batch_requests=batch_requests,
        metadata={"seed": seed, "target_peak_utilisation": TARGET_PEAK_UTILISATION},
    )
    return _make_servable(scenario)


def _make_servable(scenario: Scenario) -> Scenario:
    """Scale demand down until the load-time servability checks pass (rarely needed).

    With few sites, one region's class may only be reachable by a small site whose capacity
    is below that region's share of the national demand.
    """
    from dataclasses import replace

    from thermoroute.common.servability import check_servable

    for _ in range(60):
        if not check_servable(scenario):
            return scenario
        scenario = replace(
            scenario,
            demand_rps=np.round(scenario.demand_rps * 0.9, 6),
            batch_requests=np.round(scenario.batch_requests * 0.9),
        )
    raise RuntimeError("could not make the synthetic scenario servable")  # pragma: no cover


__all__ = ["CITIES", "DEFAULT_START", "synthesize"]
