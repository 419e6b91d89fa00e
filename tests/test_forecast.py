"""A site's own forecasts of its series (site_agent/forecast.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from thermoroute.common.scenario import Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.synth import synthesize
from thermoroute.site_agent.data import load_site
from thermoroute.site_agent.forecast import SiteForecast


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, Scenario]:
    directory = write_scenario(synthesize(3, 2, 4, steps=25), tmp_path_factory.mktemp("fc") / "s")
    return load_site(directory, "s0000"), load_site(directory, "s0001")


def test_current_hour_is_observed_and_later_hours_are_not(sites) -> None:
    site, _ = sites
    planned = SiteForecast(seed=1).apply(site)
    for name in ("dry_bulb_c", "wet_bulb_c", "price_aud_per_mwh", "carbon_kg_per_kwh"):
        real, fc = getattr(site, name)[0], getattr(planned, name)[0]
        assert fc[0] == real[0], name
        assert np.all(fc[1:] != real[1:]), name
    # The wet bulb moves with the dry bulb: still never above it.
    np.testing.assert_allclose(
        planned.dry_bulb_c - planned.wet_bulb_c, site.dry_bulb_c - site.wet_bulb_c, atol=1e-12
    )
    np.testing.assert_array_equal(planned.ewif_l_per_kwh, site.ewif_l_per_kwh)
    assert np.all(np.sign(planned.price_aud_per_mwh) == np.sign(site.price_aud_per_mwh))


def test_reproducible_per_site_and_window(sites) -> None:
    a, b = sites
    fc = SiteForecast(seed=7)
    np.testing.assert_array_equal(fc.apply(a).dry_bulb_c, fc.apply(a).dry_bulb_c)
    error_a = fc.apply(a).dry_bulb_c - a.dry_bulb_c
    error_b = fc.apply(b).dry_bulb_c - b.dry_bulb_c
    assert not np.allclose(error_a, error_b)  # independent streams per site
    later = replace(a, start=a.start + timedelta(hours=1))
    assert not np.allclose(fc.apply(later).dry_bulb_c - a.dry_bulb_c, error_a)
    other_seed = SiteForecast(seed=8).apply(a).dry_bulb_c - a.dry_bulb_c
    assert not np.allclose(other_seed, error_a)


def test_perfect_forecast_is_the_real_series(sites) -> None:
    site, _ = sites
    assert SiteForecast.perfect().apply(site) is site


def test_errors_grow_like_the_square_root_of_lead_time_and_are_unbiased(sites) -> None:
    """Over many windows: σ of the temperature error at lead 24 h is σ_T, at 6 h σ_T/2; the
    multiplicative price and carbon factors have mean 1 and log-σ σ_P, σ_C at 24 h."""
    site, _ = sites
    fc = SiteForecast(dry_bulb_sigma_c=2.0, price_sigma=0.3, carbon_sigma=0.05, seed=3)
    temp, price, carbon = [], [], []
    for k in range(2000):
        window = replace(site, start=site.start + timedelta(hours=k))
        planned = fc.apply(window)
        temp.append(planned.dry_bulb_c[0] - site.dry_bulb_c[0])
        price.append(planned.price_aud_per_mwh[0] / site.price_aud_per_mwh[0])
        carbon.append(planned.carbon_kg_per_kwh[0] / site.carbon_kg_per_kwh[0])
    temp, price, carbon = np.array(temp), np.array(price), np.array(carbon)
    # 2000 samples: the standard error of a σ estimate is ~1.6 %, of a mean ~0.7 %.
    assert temp[:, 24].std() == pytest.approx(2.0, rel=0.06)
    assert temp[:, 6].std() == pytest.approx(1.0, rel=0.06)
    assert abs(temp[:, 24].mean()) < 0.15
    assert price[:, 24].mean() == pytest.approx(1.0, abs=0.03)
    assert np.log(price[:, 24]).std() == pytest.approx(0.3, rel=0.06)
    assert carbon[:, 24].mean() == pytest.approx(1.0, abs=0.005)
    # Correlated from hour to hour, as a random walk: corr(e_12, e_24) = sqrt(12/24).
    assert np.corrcoef(temp[:, 12], temp[:, 24])[0, 1] == pytest.approx(np.sqrt(0.5), abs=0.05)


def test_negative_sigma_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        SiteForecast(price_sigma=-0.1)


def test_agent_plans_with_its_forecast(tmp_path: Path) -> None:
    from thermoroute.site_agent.agent import SiteAgent

    directory = write_scenario(synthesize(2, 2, 5, steps=30), tmp_path / "s")
    real = SiteAgent(directory, "s0000", steps=24)
    noisy = SiteAgent(directory, "s0000", steps=24, forecast=SiteForecast(seed=2))
    assert noisy.site.dry_bulb_c[0, 0] == real.site.dry_bulb_c[0, 0]
    assert not np.allclose(noisy.site.dry_bulb_c[0, 1:], real.site.dry_bulb_c[0, 1:])
    real.shift(1)
    noisy.shift(1)  # the next window is forecast afresh from the real series
    expected = SiteForecast(seed=2).apply(real.site)
    np.testing.assert_array_equal(noisy.site.dry_bulb_c, expected.dry_bulb_c)
