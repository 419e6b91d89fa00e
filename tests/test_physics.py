"""Each physical function of ``thermoroute.common.physics`` against values computed by hand.

The arithmetic of every expected value is written out in the comment beside it, so a reader
can check it with a pencil; none of the expected values was produced by running the code.
"""

from __future__ import annotations

import numpy as np
import pytest

from thermoroute.common.physics.cooling import cooling_energy_kwh, partial_pue
from thermoroute.common.physics.energy import (
    carbon_kg,
    energy_cost_aud,
    facility_energy_kwh,
    it_power_kw,
)
from thermoroute.common.physics.latency import (
    congestion_latency_req_s,
    great_circle_km,
    mean_ttft_ms,
    modelled_rtt_ms,
    path_latency_req_s,
)
from thermoroute.common.physics.psychrometrics import (
    PSYCHROMETER_A,
    PSYCHROMETER_A_SLOPE,
    saturation_vapour_pressure_hpa,
    wet_bulb_psychrometric,
    wet_bulb_stull,
)
from thermoroute.common.physics.water import (
    ewif_from_generation,
    offsite_water_l,
    onsite_wue,
    wue_dry,
    wue_economizer,
    wue_tower,
)

# --------------------------------------------------------------------------------------------
# Partial PUE (docs/model.md §3)


def test_ppue_default_curve_matches_the_papers_end_points():
    # a + b·T + c·T², a = 1.0743, b = 0.0041, c = 7.1705e-5
    # T = −3.9 °C: 1.0743 − 0.01599 + 7.1705e-5 · 15.21 (= 0.00109063...) = 1.05940063...
    # T = 35 °C:  1.0743 + 0.1435 + 7.1705e-5 · 1225 (= 0.087838625)    = 1.305638625
    # (Xu et al. quote "about 1.05" and "1.30" for these temperatures.)
    assert partial_pue(-3.9) == pytest.approx(1.0594006, abs=1e-7)
    assert partial_pue(35.0) == pytest.approx(1.305638625, rel=1e-12)
    # T = 0: just a.
    assert partial_pue(0.0) == pytest.approx(1.0743, rel=1e-12)


def test_ppue_is_floored_at_one_for_custom_coefficients():
    # a = 0.9, b = c = 0: 0.9 < 1 -> 1 at every temperature.
    assert np.all(partial_pue([-10.0, 0.0, 40.0], 0.9, 0.0, 0.0) == 1.0)
    # a = 1.0, b = −0.01, c = 0: T = 10 -> 0.9 -> 1; T = −10 -> 1.1 (not floored).
    got = partial_pue(np.array([10.0, -10.0]), 1.0, -0.01, 0.0)
    assert got == pytest.approx([1.0, 1.1], rel=1e-12)


def test_ppue_per_site_coefficients_broadcast_over_steps():
    # Two sites (rows) × two steps (columns), coefficients as (S, 1) columns.
    t = np.array([[0.0, 10.0], [0.0, 10.0]])
    a = np.array([[1.0743], [1.2]])
    b = np.array([[0.0041], [0.01]])
    c = np.array([[7.1705e-5], [0.0]])
    # site 0, T = 10: 1.0743 + 0.041 + 0.0071705 = 1.1224705; site 1, T = 10: 1.2 + 0.1 = 1.3
    got = partial_pue(t, a, b, c)
    assert got.shape == (2, 2)
    assert got == pytest.approx(np.array([[1.0743, 1.1224705], [1.2, 1.3]]), rel=1e-12)


def test_cooling_energy_is_the_overhead_above_it():
    # (1.25 − 1) · 40 kWh = 10 kWh; pue 1 -> none.
    assert cooling_energy_kwh([1.25, 1.0], [40.0, 40.0]) == pytest.approx([10.0, 0.0])


# --------------------------------------------------------------------------------------------
# On-site water (docs/model.md §4)


def test_tower_wue_hand_computed():
    # Tw = 20 °C: F = 68; 6e-5·314432 = 18.86592; 0.01·4624 = 46.24; 0.61·68 = 41.48
    #   cubic = 18.86592 − 46.24 + 41.48 − 10.4 = 3.70592; S = 6: ·6/5 -> 4.447104
    # Tw = 10 °C: F = 50; 7.5 − 25 + 30.5 − 10.4 = 2.6; ·1.2 -> 3.12
    # Tw = 0 °C:  F = 32; 1.96608 − 10.24 + 19.52 − 10.4 = 0.84608; ·1.2 -> 1.015296
    got = wue_tower([20.0, 10.0, 0.0], 6.0)
    assert got == pytest.approx([4.447104, 3.12, 1.015296], rel=1e-12)
    # Tw = 30 °C, S = 3: F = 86; 38.16336 − 73.96 + 52.46 − 10.4 = 6.26336; ·3/2 -> 9.39504
    assert wue_tower(30.0, 3.0) == pytest.approx(9.39504, rel=1e-12)


def test_tower_wue_floor():
    # Tw = −6.6 °C: F = 20.12, cubic ≈ 0.4887 − 4.0481 + 12.2732 − 10.4 = −1.686 -> floor 0.05.
    # Tw = −20 °C: F = −4, cubic = −0.00384 − 0.16 − 2.44 − 10.4 = −13.00384 -> floor 0.05.
    assert wue_tower([-6.6, -20.0], 6.0) == pytest.approx([0.05, 0.05])
    # The floor is not applied above it: Tw = 0 gives 1.015296 (above).
    assert wue_tower(0.0, 6.0) > 0.05


def test_tower_wue_rises_with_wet_bulb_and_falls_with_cycles():
    # d(cubic)/dF = 1.8e-4 F² − 0.02 F + 0.61 has a negative discriminant
    # (0.0004 − 4·1.8e-4·0.61 < 0), so the curve rises monotonically with wet bulb.
    w = wue_tower(np.linspace(-2.0, 32.0, 50), 6.0)
    assert np.all(np.diff(w) > 0)
    # More cycles of concentration, less blowdown: S/(S−1) falls from 2 (S=2) to 1.2 (S=6).
    assert wue_tower(20.0, 2.0) == pytest.approx(3.70592 * 2.0, rel=1e-12)


def test_economizer_wue_below_at_and_above_threshold():
    # Tw0 = 18 °C, k = 0.2 L/kWh/°C: Tw 15 -> 0; 18 -> 0; 23 -> 0.2·5 = 1.0; 18.5 -> 0.1
    got = wue_economizer([15.0, 18.0, 23.0, 18.5], 18.0, 0.2)
    assert got == pytest.approx([0.0, 0.0, 1.0, 0.1], rel=1e-12, abs=1e-15)


def test_dry_wue_is_zero_with_the_input_shape():
    got = wue_dry(np.array([[35.0, -5.0, 20.0]]))
    assert got.shape == (1, 3)
    assert np.all(got == 0.0)


def test_onsite_wue_mixed_models_per_site_2d():
    # Rows are sites, columns steps.
    tw = np.array([[20.0, 0.0, -20.0], [23.0, 10.0, 18.5], [30.0, 30.0, 30.0]])
    models = ("tower", "economizer", "dry")
    p1 = np.array([6.0, 18.0, 0.0])  # cycles, threshold, unused
    p2 = np.array([0.0, 0.2, 0.0])  # unused, slope, unused
    got = onsite_wue(models, tw, p1, p2)
    expected = np.array(
        [
            [4.447104, 1.015296, 0.05],  # tower S=6 (see test_tower_wue_hand_computed)
            [1.0, 0.0, 0.1],  # economizer: 0.2·(23−18), 0, 0.2·0.5
            [0.0, 0.0, 0.0],  # dry
        ]
    )
    assert got.shape == tw.shape
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_onsite_wue_interleaved_models_keep_their_own_parameters():
    # Two tower sites with different cycles around an economizer site: each row must use its
    # own p1. Tw = 20: S=6 -> 4.447104, S=3 -> 3.70592·1.5 = 5.55888.
    tw = np.array([[20.0], [23.0], [20.0]])
    got = onsite_wue(["tower", "economizer", "tower"], tw, [6.0, 18.0, 3.0], [0.0, 0.2, 0.0])
    assert got[:, 0] == pytest.approx([4.447104, 1.0, 5.55888], rel=1e-12)


def test_onsite_wue_one_dimensional_and_scalar():
    # One entry per site.
    got = onsite_wue(["economizer", "tower"], [23.0, 10.0], [18.0, 6.0], [0.2, 0.0])
    assert got.shape == (2,)
    assert got == pytest.approx([1.0, 3.12], rel=1e-12)
    # One model for every site; a scalar wet bulb gives a scalar.
    assert float(onsite_wue("tower", 20.0, 6.0, 0.0)) == pytest.approx(4.447104, rel=1e-12)
    assert np.ndim(onsite_wue("tower", 20.0, 6.0, 0.0)) == 0


def test_onsite_wue_unknown_model_is_refused():
    with pytest.raises(ValueError, match="wue_model"):
        onsite_wue(["tower", "swamp"], [20.0, 20.0], [6.0, 6.0], [0.0, 0.0])


# --------------------------------------------------------------------------------------------
# Wet bulb (Stull 2011)


def test_stull_wet_bulb_paper_example():
    # Stull (2011) worked example: T = 20 °C, RH = 50 % -> Tw = 13.7 °C.
    # 20·atan(0.151977·√58.313659) = 20·atan(1.160548) = 20·0.859571 = 17.191413
    # + atan(70) = 1.556512, − atan(48.323669) = −1.550105,
    # + 0.00391838·50^1.5·atan(1.15505) = 1.385357·0.857222 = 1.187558, − 4.686035
    # = 13.699343
    assert wet_bulb_stull(20.0, 50.0) == pytest.approx(13.699, abs=2e-3)
    assert round(float(wet_bulb_stull(20.0, 50.0)), 1) == 13.7


def test_psychrometric_wet_bulb_solves_the_wmo_equation():
    # The root satisfies the psychrometer equation it solves, on a grid of real conditions.
    t = np.linspace(-5.0, 47.0, 27)[:, None, None]
    rh = np.array([3.0, 15.0, 40.0, 70.0, 99.0])[None, :, None]
    p = np.array([900.0, 1013.25])[None, None, :]
    tw = wet_bulb_psychrometric(t, rh, p)
    vapour = rh / 100.0 * saturation_vapour_pressure_hpa(t, p)
    coefficient = PSYCHROMETER_A * (1.0 + PSYCHROMETER_A_SLOPE * tw)
    residual = saturation_vapour_pressure_hpa(tw, p) - coefficient * p * (t - tw) - vapour
    assert np.max(np.abs(residual)) < 1e-9
    assert np.all(tw <= t) and np.all(np.diff(tw, axis=1) > 0)  # wetter air, warmer wet bulb


def test_psychrometric_wet_bulb_matches_psychrometric_tables():
    # Sea level: 20 °C / 50 % -> 13.8 °C and 30 °C / 60 % -> 23.9 °C (ASHRAE chart readings);
    # saturated air's wet bulb is its temperature; Stull's sea-level fit agrees within 0.2 °C.
    assert wet_bulb_psychrometric(20.0, 50.0, 1013.25) == pytest.approx(13.8, abs=0.1)
    assert wet_bulb_psychrometric(30.0, 60.0, 1013.25) == pytest.approx(23.9, abs=0.1)
    assert wet_bulb_psychrometric(25.0, 100.0, 1013.25) == pytest.approx(25.0, abs=1e-9)
    assert wet_bulb_psychrometric(30.0, 60.0, 1013.25) == pytest.approx(
        wet_bulb_stull(30.0, 60.0), abs=0.2
    )
    # Lower pressure evaporates more readily: the wet bulb falls (Canberra ~940 hPa).
    assert wet_bulb_psychrometric(30.0, 30.0, 940.0) < wet_bulb_psychrometric(30.0, 30.0, 1013.25)


def test_stull_wet_bulb_never_above_dry_bulb():
    t = np.array([-15.0, 0.0, 10.0, 25.0, 30.0, 40.0, 49.0])
    rh = np.array([5.0, 20.0, 50.0, 80.0, 99.0, 100.0])
    tt, rr = np.meshgrid(t, rh)
    tw = wet_bulb_stull(tt, rr)
    assert tw.shape == tt.shape
    assert np.all(tw <= tt)
    # Saturated air: the wet bulb equals the dry bulb within Stull's ±1 °C.
    assert wet_bulb_stull(30.0, 100.0) == pytest.approx(30.0, abs=1.0)
    # Dry air is far cooler: T = 40 °C, RH = 5 % -> about 17–18 °C (psychrometric chart).
    assert 15.0 < wet_bulb_stull(40.0, 5.0) < 20.0


# --------------------------------------------------------------------------------------------
# Off-site water


def test_offsite_water_is_ewif_times_facility_energy():
    # 1.9 L/kWh · 120 kWh = 228 L; 0 · 50 = 0
    assert offsite_water_l([1.9, 0.0], [120.0, 50.0]) == pytest.approx([228.0, 0.0])


def test_ewif_is_generation_weighted_mean():
    # coal 300 MW at 2.0 L/kWh, wind 100 MW at 0, CCGT 100 MW at 0.8:
    # (600 + 0 + 80) / 500 = 1.36 L/kWh
    assert ewif_from_generation([300.0, 100.0, 100.0], [2.0, 0.0, 0.8]) == pytest.approx(1.36)


def test_ewif_ignores_negative_generation():
    # battery charging −50 MW at a (meaningless) 9 L/kWh is dropped:
    # (100·2 + 50·0.5) / 150 = 225 / 150 = 1.5
    got = ewif_from_generation([100.0, 50.0, -50.0], [2.0, 0.5, 9.0])
    assert got == pytest.approx(1.5)


def test_ewif_zero_generation_gives_zero_and_keeps_shape():
    gen = np.array([[0.0, 0.0], [1.0, 3.0], [-5.0, 0.0]])
    # row 0: nothing -> 0; row 1: (1·1 + 3·2)/4 = 1.75; row 2: only negative -> 0
    got = ewif_from_generation(gen, [1.0, 2.0])
    assert got.shape == (3,)
    assert got == pytest.approx([0.0, 1.75, 0.0])
    assert np.all(np.isfinite(got))


# --------------------------------------------------------------------------------------------
# Energy


def test_it_power():
    # 100 GPUs idle at 75 W = 7.5 kW, plus 3 req/s · 400 J = 1200 W -> 8.7 kW
    assert it_power_kw(75.0, 100.0, 3.0 * 400.0) == pytest.approx(8.7)
    # (S=2, T=2): per-site idle power and GPUs as columns, dynamic power per step
    got = it_power_kw([[75.0], [63.0]], [[10.0], [20.0]], [[0.0, 1000.0], [740.0, 0.0]])
    # site 0: 750 W -> 0.75 kW, 750 + 1000 W -> 1.75 kW; site 1: 1260 + 740 W -> 2 kW, 1.26 kW
    assert got == pytest.approx(np.array([[0.75, 1.75], [2.0, 1.26]]))


def test_facility_energy_cost_and_carbon():
    # 1.2 · 50 kWh = 60 kWh facility
    e_fac = facility_energy_kwh(1.2, 50.0)
    assert e_fac == pytest.approx(60.0)
    # 85 AUD/MWh · 60 kWh = 85 · 0.06 = 5.1 AUD
    assert energy_cost_aud(85.0, e_fac) == pytest.approx(5.1)
    # a negative price earns money: −40 AUD/MWh · 60 kWh = −2.4 AUD
    assert energy_cost_aud(-40.0, e_fac) == pytest.approx(-2.4)
    # 0.66 kg/kWh · 60 kWh = 39.6 kg
    assert carbon_kg(0.66, e_fac) == pytest.approx(39.6)


# --------------------------------------------------------------------------------------------
# Latency


def test_path_latency():
    # 10 req/s · (20 + 180) ms / 1000 · 3600 s = 10 · 0.2 · 3600 = 7200 request-seconds
    assert path_latency_req_s(10.0, 20.0, 180.0, 3600.0) == pytest.approx(7200.0)
    # half-hour step, broadcast (regions) × (classes): x (2, 1), rtt (2, 1), prefill (1, 2)
    got = path_latency_req_s([[1.0], [2.0]], [[10.0], [30.0]], [[90.0, 190.0]], 1800.0)
    # [1·0.1·1800, 1·0.2·1800], [2·0.12·1800, 2·0.22·1800]
    assert got == pytest.approx(np.array([[180.0, 360.0], [432.0, 792.0]]))


def test_congestion_reaches_max_wait_at_u_max():
    # G = 100, u_max = 0.8, ref 0.5 GPU-s, max wait 120 ms, Δs = 3600 s
    # At L = u_max·G = 80: Λ = 0.12 · 80² / (0.5 · 100 · 0.8) · 3600 = 0.12 · 160 · 3600
    #   = 69120 request-seconds; requests = L/ref·Δs = 160 · 3600 = 576000
    #   -> mean wait 69120 / 576000 = 0.12 s = max_wait.
    g, u, ref, wait, step = 100.0, 0.8, 0.5, 120.0, 3600.0
    lam = congestion_latency_req_s(80.0, wait, ref, g, u, step)
    assert lam == pytest.approx(69120.0)
    requests = 80.0 / ref * step
    assert lam / requests * 1000.0 == pytest.approx(wait)
    # Linear in utilisation: at half of u_max the mean wait is half of max_wait.
    lam_half = congestion_latency_req_s(40.0, wait, ref, g, u, step)
    assert lam_half / (40.0 / ref * step) * 1000.0 == pytest.approx(wait / 2)
    # No load, no queue.
    assert congestion_latency_req_s(0.0, wait, ref, g, u, step) == 0.0


def test_congestion_vectorised_per_site():
    load = np.array([[8.0, 4.0], [3.0, 0.0]])  # (S=2, T=2)
    got = congestion_latency_req_s(
        load, [[100.0], [50.0]], [[0.5], [1.0]], [[10.0], [5.0]], [[0.8], [0.6]], 3600.0
    )
    # site 0: 0.1·64/(0.5·10·0.8)·3600 = 0.1·16·3600 = 5760; 0.1·16/4·3600 = 1440
    # site 1: 0.05·9/(1·5·0.6)·3600 = 0.05·3·3600 = 540; 0
    assert got == pytest.approx(np.array([[5760.0, 1440.0], [540.0, 0.0]]))


def test_mean_ttft():
    # 7200 request-seconds over 36000 requests = 0.2 s = 200 ms; no requests (or a residue
    # of 1e-6 of one) -> no mean at all, not 0 and not 5e9 ms
    got = mean_ttft_ms([7200.0, 5.0, 4.5], [36000.0, 0.0, 1e-6])
    assert got[0] == pytest.approx(200.0)
    assert np.isnan(got[1]) and np.isnan(got[2])
    assert mean_ttft_ms(7200.0, 36000.0) == pytest.approx(200.0)


def test_haversine_and_modelled_rtt_sydney_melbourne():
    # geo/PROVENANCE.md and distances_and_modelled_rtt.csv: Sydney (−33.8688, 151.2093) to
    # Melbourne (−37.8136, 144.9631): 713.4 km great circle; rtt_model_ms
    # = 2 · 1.5 · 713.4 / 200000 · 1000 + 2 = 10.701 + 2 = 12.7 ms
    d = great_circle_km(-33.8688, 151.2093, -37.8136, 144.9631)
    assert d == pytest.approx(713.4, abs=0.05)
    assert modelled_rtt_ms(d) == pytest.approx(12.7, abs=0.05)
    # Symmetric, zero to itself.
    assert great_circle_km(-37.8136, 144.9631, -33.8688, 151.2093) == pytest.approx(d)
    assert great_circle_km(-33.8688, 151.2093, -33.8688, 151.2093) == pytest.approx(0.0)
    # A quarter of a meridian: R·π/2 = 6371.0088 · 1.5707963 = 10007.56 km
    assert great_circle_km(0.0, 0.0, 90.0, 0.0) == pytest.approx(10007.56, abs=0.01)


def test_rtt_model_parameters():
    # 1000 km, route factor 2, 1 ms fixed: 2·2·1000/200000·1000 + 1 = 21 ms
    assert modelled_rtt_ms(1000.0, route_factor=2.0, fixed_ms=1.0) == pytest.approx(21.0)
    # zero distance: just the fixed part
    assert modelled_rtt_ms(0.0) == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------
# Vectorisation: arrays in, same shape out


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_every_function_keeps_the_input_shape(shape):
    rng = np.random.default_rng(7)
    t = rng.uniform(-5.0, 40.0, shape)
    rh = rng.uniform(5.0, 99.0, shape)
    e = rng.uniform(0.0, 100.0, shape)
    outputs = {
        "partial_pue": partial_pue(t),
        "cooling_energy_kwh": cooling_energy_kwh(partial_pue(t), e),
        "wet_bulb_stull": wet_bulb_stull(t, rh),
        "wue_tower": wue_tower(t),
        "wue_economizer": wue_economizer(t, 18.0, 0.2),
        "wue_dry": wue_dry(t),
        "onsite_wue": onsite_wue("tower", t, 6.0, 0.0),
        "offsite_water_l": offsite_water_l(e, e),
        "ewif_from_generation": ewif_from_generation(np.stack([e, e], axis=-1), [1.0, 2.0]),
        "it_power_kw": it_power_kw(75.0, e, e),
        "facility_energy_kwh": facility_energy_kwh(t, e),
        "energy_cost_aud": energy_cost_aud(t, e),
        "carbon_kg": carbon_kg(e, e),
        "path_latency_req_s": path_latency_req_s(e, e, e, 3600.0),
        "congestion_latency_req_s": congestion_latency_req_s(e, 100.0, 0.5, 200.0, 0.8, 3600.0),
        "mean_ttft_ms": mean_ttft_ms(e, e),
        "great_circle_km": great_circle_km(t, t, rh, rh),
        "modelled_rtt_ms": modelled_rtt_ms(e),
    }
    for name, out in outputs.items():
        assert np.shape(out) == shape, name
    # Element-wise: each entry equals the function applied to that entry alone.
    k = (0,) * len(shape)
    assert outputs["partial_pue"][k] == pytest.approx(partial_pue(float(t[k])))
    assert outputs["wet_bulb_stull"][k] == pytest.approx(wet_bulb_stull(float(t[k]), rh[k]))
    assert outputs["wue_tower"][k] == pytest.approx(wue_tower(float(t[k])))
