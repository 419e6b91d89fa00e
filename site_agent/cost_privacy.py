"""Cost privacy: a site plans with a privately perturbed energy cost (docs/model.md §11).

At the optimum the coordinator's outputs — the schedule and the shadow prices of demand —
give, for every flow to a site with room, that site's marginal cost per request in that
hour (the KKT conditions), and from it the site's cost of a kWh of IT energy ``κ_t``
(``SiteSubproblem.energy_weight``). In model v1 every hourly series a site keeps private
(price, dry and wet bulb, carbon and water intensity) reaches its problem only through
``κ_t``, so knowing the site's static specification an observer of the outputs recovers
the hourly price given the weather, or the dry bulb given the price, to within the
solver's tolerance. Secure aggregation cannot help: the leak is in the published answer.

With cost privacy each site plans with ``κ_t + η_t``, where ``η_t`` is drawn by the site
from a Laplace distribution of scale ``b = Δ / ε`` (in AUD per MWh of IT energy) and never
leaves it. Everything the site sends, and therefore everything the coordinator computes and
publishes, is a function of ``κ + η`` and of the site's static data only, so by the
Laplace mechanism and post-processing [1]_ the whole run is ε-differentially private with
respect to a change of at most ``Δ`` in one site-hour's ``κ`` (a change in ``k`` site-hours
costs ``kε``). A price change of ``δ`` AUD/MWh moves ``κ`` by ``pPUE · δ``; a dry-bulb change
moves it through the pPUE curve.

The noise of a site-hour is a keyed hash of the hour (HMAC-SHA256 under a key the site draws
at start), so re-planning the same hour in a receding horizon reuses the same noise instead
of averaging fresh draws away; a restarted agent draws a new key (spending ε again on the
hours it re-plans). The site charges its plan with its true data: the reported totals and
objective are true costs of the (slightly worse) perturbed plan.

Not covered: model v1.1's limits (a derated capacity or a grid or water limit that binds
shows in the schedule itself), the sites' static data, and the fleet's totals, which the
coordinator receives as exact sums (§11).

References
----------
.. [1] C. Dwork, A. Roth, "The Algorithmic Foundations of Differential Privacy",
   Foundations and Trends in Theoretical Computer Science 9(3–4), 2014, §3.3 (the Laplace
   mechanism) and Proposition 2.1 (post-processing).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

__all__ = [
    "DEFAULT_SENSITIVITY_AUD_PER_MWH",
    "ENV_EPSILON",
    "ENV_SENSITIVITY",
    "CostNoise",
    "CostPrivacy",
    "CostPrivacyInvalid",
]

#: Δ by default: a site-hour's cost of IT energy hidden to within 10 AUD/MWh (a tenth of a
#: typical NEM summer price).
DEFAULT_SENSITIVITY_AUD_PER_MWH = 10.0
#: The site node's own demand: set there, it holds whatever the driver asks (the stricter wins).
ENV_EPSILON = "THERMOROUTE_COST_PRIVACY_EPSILON"
ENV_SENSITIVITY = "THERMOROUTE_COST_PRIVACY_SENSITIVITY"


class CostPrivacyInvalid(ValueError):
    """A privacy setting out of range (the message names the setting and what is allowed)."""


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise CostPrivacyInvalid(f"{name} {value:g}: a positive finite number is required")
    return value


@dataclass(frozen=True)
class CostPrivacy:
    """How much noise a site adds to its planned cost of IT energy.

    Parameters
    ----------
    epsilon : float
        Privacy loss per site-hour, ε > 0 (smaller hides more).
    sensitivity_aud_per_mwh : float
        Δ: the change of a site-hour's cost of IT energy that is hidden [AUD per MWh of IT
        energy].
    """

    epsilon: float
    sensitivity_aud_per_mwh: float = DEFAULT_SENSITIVITY_AUD_PER_MWH

    def __post_init__(self) -> None:
        _positive("cost privacy epsilon", self.epsilon)
        _positive("cost privacy sensitivity", self.sensitivity_aud_per_mwh)

    @property
    def scale_aud_per_mwh(self) -> float:
        """The Laplace scale ``b = Δ/ε`` [AUD per MWh of IT energy]."""
        return self.sensitivity_aud_per_mwh / self.epsilon

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CostPrivacy | None:
        """The setting the site's node asks for (:data:`ENV_EPSILON`), or ``None``.

        Raises
        ------
        CostPrivacyInvalid
            The variables hold something other than positive numbers.
        """
        env = os.environ if environ is None else environ
        raw = env.get(ENV_EPSILON, "").strip()
        if not raw:
            return None
        try:
            epsilon = float(raw)
            sensitivity = float(env.get(ENV_SENSITIVITY, "") or DEFAULT_SENSITIVITY_AUD_PER_MWH)
        except ValueError:
            raise CostPrivacyInvalid(
                f"{ENV_EPSILON}/{ENV_SENSITIVITY}: positive numbers are required"
            ) from None
        return cls(epsilon, sensitivity)

    @staticmethod
    def stricter(*settings: CostPrivacy | None) -> CostPrivacy | None:
        """The setting with the most noise (the largest scale) among those given."""
        given = [s for s in settings if s is not None]
        return max(given, key=lambda s: s.scale_aud_per_mwh, default=None)


class CostNoise:
    """One site's noise on its cost of IT energy, a fixed function of the hour.

    Parameters
    ----------
    privacy : CostPrivacy
    key : bytes, optional
        The HMAC key (32 random bytes drawn here by default). It never leaves the site.
    """

    def __init__(self, privacy: CostPrivacy, key: bytes | None = None) -> None:
        self.privacy = privacy
        self._key = secrets.token_bytes(32) if key is None else bytes(key)

    def _uniform(self, site_id: str, time: datetime) -> float:
        """A uniform draw in (0, 1) for the site-hour: 53 bits of its HMAC."""
        tag = f"{site_id}|{time.isoformat()}".encode()
        digest = hmac.new(self._key, tag, hashlib.sha256).digest()
        (word,) = struct.unpack(">Q", digest[:8])
        return ((word >> 11) + 0.5) / float(1 << 53)

    def offsets(self, site_id: str, times: Sequence[datetime]) -> np.ndarray:
        """``η_t`` for each step [AUD per kWh of IT energy], shape (T,).

        Laplace(0, b) by the inverse of its distribution function at each hour's uniform
        draw (``b`` from :attr:`CostPrivacy.scale_aud_per_mwh`, divided by 1000 per kWh).
        """
        u = np.array([self._uniform(site_id, t) for t in times]) - 0.5
        scale = self.privacy.scale_aud_per_mwh / 1000.0
        return -scale * np.sign(u) * np.log1p(-2.0 * np.abs(u))
