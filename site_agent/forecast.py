"""A site's own forecasts of its weather and grid signals, for receding-horizon operation.

In operation a site plans the next horizon with forecasts of its private series; only the
current hour is observed. :class:`SiteForecast` turns the real series of a window into such
a forecast, inside the site agent (the data never leave the site, nor does the noise).

Error model
-----------
Step 0 of a window is the current hour and is left as observed. For step ``t ≥ 1`` the error
is a random walk in the lead time, so it grows like ``sqrt(t)`` and is correlated from hour to
hour as real forecast errors are:

* dry bulb: additive, ``σ_T`` °C at a lead of 24 h (default 1.5 °C, the order of the Bureau of
  Meteorology's next-day maximum-temperature error [1]_); the wet bulb moves by the same
  amount, so ``wet ≤ dry`` still holds;
* spot price: multiplicative log-normal, ``σ_P`` at 24 h (default 0.30: NEM pre-dispatch
  prices miss the dispatch price by tens of percent outside spikes [2]_); the sign of a
  negative price is kept;
* grid carbon intensity: multiplicative log-normal, ``σ_C`` at 24 h (default 0.05: the mix
  moves with demand and renewables, but slowly).

Each window's errors are drawn from a generator seeded by ``(seed, site id, window start)``,
so a run is reproducible and two sites' errors are independent. The errors are unbiased in
the mean (log-normal factors ``exp(σε − σ²/2)``).

References
----------
.. [1] Bureau of Meteorology, "Forecast performance" (verification of the official
   next-day maximum temperature forecasts, mean absolute errors of about 1–2 °C).
.. [2] AEMO, "Pre-dispatch and P5MIN price forecast accuracy" reports (NEM regions).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from thermoroute.common.scenario import Scenario

#: Default 1-σ errors at a lead time of 24 h.
DRY_BULB_SIGMA_C = 1.5
PRICE_SIGMA = 0.30
CARBON_SIGMA = 0.05


@dataclass(frozen=True)
class SiteForecast:
    """Forecast errors a site adds to its own series (module docstring).

    Parameters
    ----------
    dry_bulb_sigma_c : float
        Additive σ of the dry- (and wet-) bulb temperature at 24 h lead [°C].
    price_sigma : float
        Log-normal σ of the spot price at 24 h lead [-].
    carbon_sigma : float
        Log-normal σ of the grid carbon intensity at 24 h lead [-].
    seed : int
        Seed shared by the fleet; each site and window derives its own stream.
    """

    dry_bulb_sigma_c: float = DRY_BULB_SIGMA_C
    price_sigma: float = PRICE_SIGMA
    carbon_sigma: float = CARBON_SIGMA
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.dry_bulb_sigma_c, self.price_sigma, self.carbon_sigma) < 0:
            raise ValueError("forecast error sigmas must be >= 0")

    @classmethod
    def perfect(cls) -> SiteForecast:
        """No error at all: the real series."""
        return cls(0.0, 0.0, 0.0)

    def _rng(self, site: Scenario) -> np.random.Generator:
        key = f"{self.seed}|{site.sites.site_id[0]}|{site.start.isoformat()}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def apply(self, site: Scenario) -> Scenario:
        """The forecast of a one-site window: step 0 as observed, later steps perturbed.

        Parameters
        ----------
        site : Scenario
            One site's real data over the window.

        Returns
        -------
        Scenario
            The same window with forecast series; unchanged if every σ is 0.
        """
        if len(site.sites) != 1:
            raise ValueError("a site forecasts its own one-site window")
        if self.dry_bulb_sigma_c == self.price_sigma == self.carbon_sigma == 0.0:
            return site
        steps = site.steps
        rng = self._rng(site)
        per_step = np.sqrt(site.step_hours / 24.0)  # σ of one step's increment, per unit σ
        increments = rng.standard_normal((3, steps)) * per_step
        increments[:, 0] = 0.0  # the current hour is observed
        walks = np.cumsum(increments, axis=1)
        lead = np.arange(steps) * per_step**2  # variance of the walk at each step, per σ²
        d_temp = self.dry_bulb_sigma_c * walks[0]
        price_factor = np.exp(self.price_sigma * walks[1] - 0.5 * self.price_sigma**2 * lead)
        carbon_factor = np.exp(self.carbon_sigma * walks[2] - 0.5 * self.carbon_sigma**2 * lead)
        return replace(
            site,
            dry_bulb_c=site.dry_bulb_c + d_temp[None, :],
            wet_bulb_c=site.wet_bulb_c + d_temp[None, :],
            price_aud_per_mwh=site.price_aud_per_mwh * price_factor[None, :],
            carbon_kg_per_kwh=site.carbon_kg_per_kwh * carbon_factor[None, :],
        )
