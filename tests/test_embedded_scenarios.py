"""The embedded scenarios: valid, reproducible from data_build/raw, and physically sensible."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from data_build import build_scenarios
from thermoroute.common.errors import ScenarioError
from thermoroute.common.physics.psychrometrics import wet_bulb_psychrometric
from thermoroute.common.physics.water import wue_economizer, wue_tower
from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.common.scenarios import embedded_path, embedded_scenarios

RAW = Path(build_scenarios.__file__).parent / "raw"
AEST = timezone(timedelta(hours=10))
WEEK_START = datetime(2023, 1, 17, 12, 0, tzinfo=AEST)
NAMES = ("australia", "australia-20", "australia-heatwave-2020", "australia-winter-2020")
SEASONS = ("australia-heatwave-2020", "australia-winter-2020")
SHAPES = {name: (8, 8, 3) for name in NAMES} | {"australia-20": (20, 16, 3)}
#: (first step, steps, first step of the default horizon) of each scenario's series.
SPANS = {
    "australia": (WEEK_START, 168, datetime(2023, 1, 18, tzinfo=AEST)),
    "australia-20": (WEEK_START, 168, datetime(2023, 1, 18, tzinfo=AEST)),
    "australia-heatwave-2020": (
        datetime(2020, 1, 28, tzinfo=AEST),
        144,
        datetime(2020, 1, 31, tzinfo=AEST),
    ),
    "australia-winter-2020": (
        datetime(2020, 7, 6, tzinfo=AEST),
        168,
        datetime(2020, 7, 6, tzinfo=AEST),
    ),
}
CAPITALS = {
    "syd": "Sydney",
    "mel": "Melbourne",
    "bne": "Brisbane",
    "per": "Perth",
    "adl": "Adelaide",
    "cbr": "Canberra",
    "hba": "Hobart",
    "drw": "Darwin",
}


@pytest.fixture(scope="module")
def weeks() -> dict[str, Scenario]:
    """Every embedded scenario over its whole series."""
    return {n: load_scenario(embedded_path(n), start=SPANS[n][0], steps=SPANS[n][1]) for n in NAMES}


@pytest.fixture(scope="module")
def openmeteo() -> dict[tuple[str, datetime], tuple[float, float, float]]:
    """(city, UTC hour) -> (temperature, RH, surface pressure) of the Open-Meteo rows."""
    out = {}
    with (RAW / "openmeteo_8capitals_hourly_scenario_weeks.csv").open() as handle:
        for r in csv.DictReader(handle):
            when = datetime.strptime(r["time_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            out[(r["city"], when)] = (
                float(r["temperature_2m_c"]),
                float(r["relative_humidity_2m_pct"]),
                float(r["surface_pressure_hpa"]),
            )
    return out


def _expected_weather(openmeteo, city: str, times) -> tuple[np.ndarray, np.ndarray]:
    """docs/data.md §3: a step is the mean of the hourly values at its two ends, each wet bulb
    from (T, RH, p) by the WMO psychrometer equation; rounded to 0.01 °C."""
    dry, wet = [], []
    for t in times:
        ends = [openmeteo[(city, t.astimezone(UTC) + timedelta(hours=h))] for h in (0, 1)]
        temps, rhs, pressures = (np.array(v) for v in zip(*ends, strict=True))
        dry.append(temps.mean())
        wet.append(wet_bulb_psychrometric(temps, rhs, pressures).mean())
    return np.round(dry, 2), np.round(wet, 2)


@pytest.mark.parametrize("name", ("australia", *SEASONS))
def test_every_site_hour_is_the_real_hourly_weather(weeks, openmeteo, name):
    sc = weeks[name]
    for i, site in enumerate(sc.sites.site_id):
        dry, wet = _expected_weather(openmeteo, CAPITALS[site], sc.times)
        assert np.array_equal(sc.dry_bulb_c[i], dry), site
        assert np.array_equal(sc.wet_bulb_c[i], wet), site


def test_sites_away_from_capitals_are_their_nearest_capital_shifted(weeks):
    # docs/data.md §3: nearest capital's series + the monthly climatological difference.
    sc, capitals = weeks["australia-20"], weeks["australia"]
    with (RAW / "climatology_monthly_by_city_from_weatherAUS.csv").open() as handle:
        clim = {(r["location"], int(r["month"])): r for r in csv.DictReader(handle)}

    def daily(loc: str) -> float:
        return (float(clim[(loc, 1)]["mean_max_c"]) + float(clim[(loc, 1)]["mean_min_c"])) / 2

    cases = {
        "ool": ("bne", "GoldCoast", "Brisbane"),
        "lst": ("hba", "Launceston", "Hobart"),
        "asp": ("drw", "AliceSprings", "Darwin"),
        "per-apt": ("per", "PerthAirport", "Perth"),
    }
    for site, (capital, place, capital_place) in cases.items():
        i, k = sc.sites.site_id.index(site), capitals.sites.site_id.index(capital)
        shift = round(daily(place) - daily(capital_place), 2)
        expected = np.round(capitals.dry_bulb_c[k] + shift, 2)
        assert np.max(np.abs(sc.dry_bulb_c[i] - expected)) <= 0.011, site
        text = (embedded_path("australia-20") / "PROVENANCE.md").read_text(encoding="utf-8")
        row = next(line for line in text.splitlines() if line.startswith(f"| {site} |"))
        assert "SHIFTED" in row and capital_place in row


@pytest.mark.parametrize("name", SEASONS)
def test_season_prices_are_aemo_hourly_means_and_carbon_is_daily_cdeii(weeks, name):
    sc = weeks[name]
    means = {}
    with (RAW / "aemo_hourly_rrp_5regions_2020_seasons.csv").open() as handle:
        for r in csv.DictReader(handle):
            hour = datetime.strptime(r["hour_start_nem"], "%Y-%m-%d %H:%M").replace(tzinfo=AEST)
            means[(r["region"], hour)] = float(r["rrp_aud_per_mwh_mean"])
    with (RAW / "aemo_cdeii_daily_2020_seasons.csv").open() as handle:
        cdeii = {
            (r["regionid"], r["date_nem"]): float(r["co2e_intensity_index_tco2e_per_mwh"])
            for r in csv.DictReader(handle)
        }
    checked = 0
    for i, region in enumerate(sc.sites.grid_region):
        if region in ("WEM", "NT-DKIS"):
            continue
        for t, time in enumerate(sc.times):
            assert sc.price_aud_per_mwh[i, t] == pytest.approx(means[(region, time)], abs=1e-4)
            # the published index is rounded to 4 decimals; the scenario keeps 5
            daily = cdeii[(region, time.date().isoformat())]
            assert sc.carbon_kg_per_kwh[i, t] == pytest.approx(daily, abs=6e-5)
            checked += 1
    assert checked == 6 * sc.steps


def test_heatwave_holds_the_real_heat_and_prices(weeks):
    sc = weeks["australia-heatwave-2020"]
    day = [k for k, t in enumerate(sc.times) if t.date().isoformat() == "2020-01-31"]
    mel, adl = sc.sites.site_id.index("mel"), sc.sites.site_id.index("adl")
    assert sc.dry_bulb_c[mel, day].max() > 41.5  # ERA5 cell; the station read 42.9 °C
    assert sc.dry_bulb_c[adl].max() > 39.0  # 30 Jan
    assert sc.price_aud_per_mwh[mel, day].max() > 10_000  # VIC1 near the 14,700 cap
    winter = weeks["australia-winter-2020"]
    assert winter.dry_bulb_c[:, :].mean() < weeks["australia"].dry_bulb_c.mean() - 8


def test_listed_and_unknown_name_is_explained():
    assert set(NAMES) <= set(embedded_scenarios())
    with pytest.raises(KeyError, match="australia-20"):
        embedded_path("atlantis")


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_default_horizon(name):
    sc = load_scenario(embedded_path(name))
    assert sc.shape == (*SHAPES[name], 24)
    assert sc.start == SPANS[name][2]
    assert sc.step_hours == 1.0
    assert sc.classes.class_id == ("chat", "code", "batch")
    assert list(sc.classes.deferrable) == [False, False, True]
    assert sc.batch_requests[:, 2].sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_series_cover_the_period_and_no_more(name, weeks):
    sc = weeks[name]
    first, steps, _ = SPANS[name]
    assert sc.steps == steps
    assert sc.times[-1] == first + timedelta(hours=steps - 1)
    assert all(t.utcoffset() == timedelta(hours=10) for t in sc.times)
    with pytest.raises(ScenarioError, match="missing step"):
        load_scenario(embedded_path(name), start=first, steps=steps + 1)
    # any day of the period can be the horizon
    later = load_scenario(embedded_path(name), start=first + timedelta(hours=steps - 24))
    assert later.steps == 24


def test_build_is_byte_for_byte_reproducible(tmp_path):
    build_scenarios.build_all(tmp_path)
    for name in NAMES:
        package = embedded_path(name)
        built = sorted(p.name for p in (tmp_path / name).iterdir())
        assert built == sorted(p.name for p in package.iterdir() if p.is_file())
        assert "PROVENANCE.md" in built and "scenario.toml" in built
        for file in built:
            assert (tmp_path / name / file).read_bytes() == (package / file).read_bytes(), file


def _raw_nem_hour(region: str, hour: str) -> tuple[float, float]:
    """Mean price and energy-weighted intensity of the 5-min rows in one hour, from raw data."""
    prices, emissions, energy = [], 0.0, 0.0
    with (RAW / "nem_5min_2023-01-17T1200_to_2023-01-24T1130.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["region"] == region and row["timestamp"].startswith(hour):
                prices.append(float(row["price_aud_per_mwh"]))
                emissions += float(row["emissions_tco2e"])
                energy += float(row["generation_mw"]) / 12.0
    assert len(prices) == 12
    return sum(prices) / 12.0, emissions / energy


@pytest.mark.parametrize(
    ("site", "region", "hour"),
    [
        ("syd", "NSW1", "2023-01-19T18"),  # evening peak
        ("adl", "SA1", "2023-01-19T13"),  # midday, solar-depressed
        ("hba", "TAS1", "2023-01-22T07"),
    ],
)
def test_grid_signals_match_raw_nem(weeks, site, region, hour):
    sc = weeks["australia"]
    i = sc.sites.site_id.index(site)
    t = sc.times.index(datetime.fromisoformat(hour + ":00:00+10:00"))
    price, intensity = _raw_nem_hour(region, hour)
    assert sc.price_aud_per_mwh[i, t] == pytest.approx(price, abs=1e-4)
    assert sc.carbon_kg_per_kwh[i, t] == pytest.approx(intensity, abs=1e-5)


def test_prices_agree_with_independent_aemo_hourly(weeks):
    # green-dcc aggregated AEMO's own price files hourly: an independent route to the same number
    sc = weeks["australia"]
    with (RAW / "aemo_hourly_price_AU-NSW_2023-01-17_to_2023-01-24.csv").open() as handle:
        aemo = [float(r["Price (USD/MWh)"]) for r in csv.DictReader(handle)]
    syd = sc.price_aud_per_mwh[sc.sites.site_id.index("syd")]
    assert np.max(np.abs(syd[:-1] - np.array(aemo[:-1]))) < 0.05  # last hour is partial


def test_weather_and_grid_sanity(weeks):
    sc = weeks["australia-20"]
    ids = sc.sites.site_id
    dry = {s: sc.dry_bulb_c[k] for k, s in enumerate(ids)}
    wet = {s: sc.wet_bulb_c[k] for k, s in enumerate(ids)}
    assert dry["hba"].mean() + 8 < dry["drw"].mean()
    assert wet["drw"].mean() > 23 and wet["lst"].mean() < 16
    assert dry["drw"].min() > 20 and dry["hba"].min() < 12
    assert np.all(sc.wet_bulb_c <= sc.dry_bulb_c)
    assert np.all((sc.dry_bulb_c > 0) & (sc.dry_bulb_c < 48))
    # every site has a diurnal cycle
    assert np.all(np.ptp(sc.dry_bulb_c, axis=1) > 4)
    carbon = {s: sc.carbon_kg_per_kwh[k].mean() for k, s in enumerate(ids)}
    assert carbon["hba"] < carbon["adl"] < carbon["syd"] < carbon["mel"]
    ewif = {s: sc.ewif_l_per_kwh[k].mean() for k, s in enumerate(ids)}
    assert ewif["hba"] < 0.05 and 1.0 < ewif["mel"] < 2.4
    # the NEM week has negative prices (SA, VIC) and real spikes
    assert sc.price_aud_per_mwh.min() < 0 and sc.price_aud_per_mwh.max() > 150
    # estimated grids: NGA factors, flat
    assert np.all(sc.carbon_kg_per_kwh[ids.index("per")] == 0.51)
    assert np.all(sc.carbon_kg_per_kwh[ids.index("drw")] == 0.56)
    assert set(sc.sites.wue_model) == {"tower", "economizer", "dry"}


def test_estimates_are_marked_in_provenance():
    text = (embedded_path("australia") / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "**WEM** (ESTIMATE)" in text and "**NT-DKIS** (ESTIMATE)" in text
    for needle in ("Safeguard", "Sydney Water", "Bedrock", "WMO", "BurstGPT", "Azure"):
        assert needle.lower() in text.lower(), needle


def test_rtt_matches_shared_table(weeks):
    sc = weeks["australia"]
    with (RAW / "distances_and_modelled_rtt.csv").open() as handle:
        table = {(r["from"], r["to"]): float(r["rtt_model_ms"]) for r in csv.DictReader(handle)}
    checked = 0
    for i, site in enumerate(sc.sites.name):
        for j, region in enumerate(sc.regions.name):
            if (site, region) in table:
                assert sc.rtt_ms[i, j] == pytest.approx(table[(site, region)], abs=0.11)
                checked += 1
    assert checked == 56  # every ordered pair of the 8 capitals
    assert np.all(np.diag(sc.rtt_ms) == 2.0)


def test_economizer_reproduces_aws_sydney_wue():
    # Annual mean WUE of the economizer plant in Sydney's 2023 weather ≈ AWS's 0.10 L/kWh,
    # and its peak ≈ the 1.59 L/kWh evaporation bound.
    sc = load_scenario(embedded_path("australia"))
    i = sc.sites.site_id.index("syd")
    assert sc.sites.wue_model[i] == "economizer"
    t, rh, p = [], [], []
    with (RAW / "openmeteo_sydney_hourly_2023.csv").open() as handle:
        for row in csv.DictReader(handle):
            t.append(float(row["temperature_2m_c"]))
            rh.append(float(row["relative_humidity_2m_pct"]))
            p.append(float(row["surface_pressure_hpa"]))
    assert len(t) == 8760
    wet = wet_bulb_psychrometric(t, rh, p)
    wue = wue_economizer(wet, sc.sites.wue_p1[i], sc.sites.wue_p2[i])
    assert wue.mean() == pytest.approx(0.10, abs=0.003)
    assert wue.max() == pytest.approx(3.6 / 2.26, abs=0.01)


def _min_gpu_s(sc: Scenario) -> np.ndarray:
    return np.where(sc.allowed(), sc.gpu_s[:, None, :], np.inf).min(axis=0)


@pytest.mark.parametrize("name", NAMES)
def test_peak_utilisation_in_stated_band(weeks, name):
    # Stated in docs/data.md: interactive peak 55 % of Σ u_max·G, batch 12 % over 24 h.
    sc = weeks[name]
    g = _min_gpu_s(sc)
    inter = sc.classes.interactive
    cap = (sc.sites.u_max * sc.sites.gpus).sum()
    load = np.einsum("jct,jc->t", sc.demand_rps[:, inter], g[:, inter]) / cap
    batch = (sc.batch_requests[:, ~inter] * g[:, ~inter]).sum() / (24 * 3600.0) / cap
    assert load.max() == pytest.approx(0.55, abs=0.005)
    assert batch == pytest.approx(0.12, abs=0.005)
    assert 0.60 <= load.max() + batch <= 0.75


@pytest.mark.parametrize("name", NAMES)
def test_slo_rule_forbids_far_pairs_but_every_region_has_choices(name):
    sc = load_scenario(embedded_path(name))
    allowed = sc.allowed()[:, :, sc.classes.interactive]
    assert not allowed.all()  # far A100 sites cannot meet the code SLO
    assert allowed.sum(axis=0).min() >= 3  # every region: several sites for every class
    code = sc.classes.class_id.index("code")
    drw, per = sc.sites.site_id.index("drw"), sc.sites.site_id.index("per")
    sydney = sc.regions.region_id.index("sydney")
    assert not sc.allowed()[drw, sydney, code] and not sc.allowed()[per, sydney, code]


def _feasible_scale(sc: Scenario) -> float:
    """Largest λ such that λ·(interactive demand, batch volume) fits the fleet (an LP)."""
    S, R, C, T = sc.shape
    inter = sc.classes.interactive
    idx = np.argwhere(np.broadcast_to(sc.allowed()[..., None], (S, R, C, T)))
    i, j, c, t = idx.T
    n = len(idx)
    row_key = np.where(inter[c], ((j * C + c) * T + t), R * C * T + j * C + c)
    keys, rows = np.unique(row_key, return_inverse=True)
    coef = np.where(inter[c], 1.0, sc.step_seconds)
    rhs = np.where(
        keys < R * C * T,
        sc.demand_rps.reshape(-1)[np.minimum(keys, R * C * T - 1)],
        sc.batch_requests.reshape(-1)[np.maximum(keys - R * C * T, 0)],
    )
    m = len(keys)
    a_eq = sp.coo_matrix(
        (np.concatenate([coef, -rhs]), (np.concatenate([rows, np.arange(m)]),
                                        np.concatenate([np.arange(n), np.full(m, n)]))),
        shape=(m, n + 1),
    )  # fmt: skip
    a_ub = sp.coo_matrix((sc.gpu_s[i, c], (i * T + t, np.arange(n))), shape=(S * T, n + 1))
    b_ub = np.repeat(sc.sites.u_max * sc.sites.gpus, T)
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    res = linprog(cost, A_ub=a_ub.tocsr(), b_ub=b_ub, A_eq=a_eq.tocsr(), b_eq=np.zeros(m),
                  bounds=(0, None), method="highs")  # fmt: skip
    assert res.status == 0, res.message
    return -res.fun


@pytest.mark.parametrize("name", NAMES)
def test_default_horizon_is_feasible_with_headroom(name):
    # Interactive demand and the whole batch volume fit within u_max·G on allowed pairs, with
    # room to grow (docs/data.md: ~1.5x).
    sc = load_scenario(embedded_path(name))
    assert _feasible_scale(sc) > 1.3


@pytest.mark.parametrize("name", NAMES)
def test_objective_weights_follow_their_documented_derivation(name):
    o = load_scenario(embedded_path(name)).objective
    assert o.carbon_aud_per_kg == 75.0 / 1000  # Safeguard cost-containment price, AUD/t
    assert o.water_aud_per_l == 2.67 / 1000  # Sydney Water usage charge, AUD/kL
    # Revenue per interactive request at Bedrock list prices (USD per 1M tokens), chat:code
    # 19366:8819 requests, 0.6644 USD/AUD; 1.2 % revenue lost per 500 ms of delay.
    chat = (1155 * 1.95 + 211 * 2.56) / 1e6
    code = (2048 * 0.30 + 28 * 0.60) / 1e6
    revenue_aud = (19366 * chat + 8819 * code) / (19366 + 8819) / 0.6644
    assert o.latency_aud_per_req_s == pytest.approx(0.024 * revenue_aud, rel=0.01)


#: The scenarios that carry model v1.1 plant data (docs/data.md §4a); the others are v1.
PLANT = ("australia-heatwave-2020",)


@pytest.mark.parametrize("name", NAMES)
def test_only_the_heatwave_carries_plant_data(name, weeks):
    given = weeks[name].sites.plant_data()
    header = (embedded_path(name) / "sites.csv").read_text().splitlines()[0]
    if name not in PLANT:
        assert given == () and "cooling_design_c" not in header
        assert not (embedded_path(name) / "ppue_curve.csv").exists()
        return
    assert given == (
        "cooling_design_c",
        "cooling_derate_per_c",
        "cooling_min_fraction",
        "grid_limit_kw",
        "water_cap_l_per_day",
    )
    assert not (embedded_path(name) / "ppue_curve.csv").exists()


def test_heatwave_plant_data_follow_their_documented_sources(weeks):
    sc = weeks["australia-heatwave-2020"]
    s = sc.sites
    design = {
        r["city"]: r
        for r in csv.DictReader((RAW / "design_conditions_8capitals_2021-2025.csv").open())
    }
    capft = build_scenarios.air_cooled_capacity
    assert capft(35.0) == pytest.approx(1.0, abs=5e-4)  # the AHRI rating point
    for i, sid in enumerate(s.site_id):
        city = design[CAPITALS[sid]]
        td = max(35.0, float(city["dry_bulb_0p4_c"]))
        full_kw = s.gpus[i] * (s.idle_w[i] + s.u_max[i] * (sc.energy_j[i] / sc.gpu_s[i]).max())
        full_kw /= 1000.0
        pue = 1.0743 + 0.0041 * td + 7.1705e-05 * td * td
        assert s.grid_limit_kw[i] == math.ceil(full_kw * pue / 10.0) * 10.0, sid
        # the connection carries the full load on the design day, and no more than 10 kW over
        assert 0 <= s.grid_limit_kw[i] - full_kw * pue < 10.0
        if s.wue_model[i] in ("economizer", "dry"):
            assert s.cooling_design_c[i] == td
            loss = (1.0 - capft(td + 10.0) / capft(td)) / 10.0
            assert s.cooling_derate_per_c[i] == pytest.approx(loss, abs=5e-5)
            assert 0.01 <= s.cooling_derate_per_c[i] <= 0.03  # manufacturers' 1–3 %/°C
            assert s.cooling_min_fraction[i] == pytest.approx(capft(51.67) / capft(td), abs=5e-4)
        else:
            assert np.isnan(s.cooling_design_c[i]) and np.isnan(s.cooling_derate_per_c[i])
        if s.wue_model[i] == "tower":
            wue = float(wue_tower(float(city["wet_bulb_0p4_c"])))
            assert 0 <= s.water_cap_l_per_day[i] - wue * full_kw * 24.0 < 100.0, sid
        else:
            assert np.isnan(s.water_cap_l_per_day[i])


def test_heatwave_v1_view_is_the_heatwave_before_the_plant_data(weeks):
    # Dropping the plant columns gives back exactly the v1 scenario: every other input of
    # the heatwave is what it was, so the earlier finding stays comparable.
    sc = weeks["australia-heatwave-2020"]
    v1 = sc.v1_view()
    assert v1.sites.plant_data() == ()
    assert v1.sites.gpus.tolist() == weeks["australia"].sites.gpus.tolist()
    assert "design dry bulb" in (embedded_path(sc.name) / "PROVENANCE.md").read_text()
