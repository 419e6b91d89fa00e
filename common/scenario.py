"""The scenario: typed, validated, in memory (input format v1, docs/model.md §8).

A :class:`Scenario` holds every table of a scenario directory as NumPy arrays indexed by
site ``i``, region ``j``, class ``c`` and step ``t``. The directory format is
:mod:`thermoroute.common.scenario_format`, reading it :mod:`thermoroute.common.scenario_loading`
and writing it :mod:`thermoroute.common.scenario_writing`; this module only defines the data and
the derived quantities every solver needs (forbidden pairs, coupling rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

SECONDS_PER_HOUR = 3600.0

WUE_MODELS = ("tower", "economizer", "dry")

#: The optional ``sites.csv`` columns of model v1.1 (docs/model.md §12).
COOLING_COLUMNS = ("cooling_design_c", "cooling_derate_per_c", "cooling_min_fraction")
PLANT_COLUMNS = (*COOLING_COLUMNS, "grid_limit_kw", "water_cap_l_per_day")


@dataclass(frozen=True)
class Objective:
    """Weights that turn carbon, water and latency into AUD (docs/model.md §6)."""

    carbon_aud_per_kg: float
    water_aud_per_l: float
    latency_aud_per_req_s: float


@dataclass(frozen=True)
class Sites:
    """The rows of ``sites.csv``; every array has one entry per site."""

    site_id: tuple[str, ...]
    name: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    grid_region: tuple[str, ...]
    gpus: np.ndarray
    idle_w: np.ndarray
    u_max: np.ndarray
    max_wait_ms: np.ndarray
    ref_gpu_s: np.ndarray
    ppue_a: np.ndarray
    ppue_b: np.ndarray
    ppue_c: np.ndarray
    wue_model: tuple[str, ...]
    wue_p1: np.ndarray
    wue_p2: np.ndarray
    # Model v1.1 plant data (docs/model.md §12), each absent by default. A column is None
    # when no site gives it (the scenario is then written back without it, byte for byte
    # as read) and NaN for a site that leaves its cell empty.
    cooling_design_c: np.ndarray | None = None
    cooling_derate_per_c: np.ndarray | None = None
    cooling_min_fraction: np.ndarray | None = None
    grid_limit_kw: np.ndarray | None = None
    water_cap_l_per_day: np.ndarray | None = None
    #: Per site, its measured pPUE curve as a (K, 2) array of (dry bulb °C, pPUE) rows with
    #: strictly increasing dry bulb, or None; None altogether without ``ppue_curve.csv``.
    ppue_curve: tuple[np.ndarray | None, ...] | None = None

    def __len__(self) -> int:
        return len(self.site_id)

    def plant_data(self) -> tuple[str, ...]:
        """The model v1.1 inputs any site gives: its columns of ``sites.csv`` and
        ``ppue_curve.csv``. Empty for a v1 scenario."""
        given = tuple(
            name
            for name in PLANT_COLUMNS
            if (value := getattr(self, name)) is not None and not np.all(np.isnan(value))
        )
        if self.ppue_curve is not None and any(c is not None for c in self.ppue_curve):
            given += ("ppue_curve.csv",)
        return given

    def without_plant(self) -> Sites:
        """The same sites as model v1 sees them: every v1.1 input dropped (docs/model.md
        §12), so a v1.1 scenario's earlier findings can be measured again."""
        # Every v1.1 field is optional; the keywords are built from PLANT_COLUMNS so that the
        # list stays in one place, which mypy can only check field by field, hence Any.
        cleared: dict[str, Any] = dict.fromkeys((*PLANT_COLUMNS, "ppue_curve"))
        return replace(self, **cleared)

    def take(self, index: np.ndarray | list[int]) -> Sites:
        """The sites at ``index``, in that order."""
        index = list(np.asarray(index, dtype=int))
        # One entry per field, each of its field's type (a tuple, an array or None).
        values: dict[str, Any] = {}
        for name, value in vars(self).items():
            if value is None:
                values[name] = None
            elif isinstance(value, tuple):
                values[name] = tuple(value[k] for k in index)
            else:
                values[name] = np.asarray(value)[index]
        return Sites(**values)


@dataclass(frozen=True)
class Regions:
    """The rows of ``regions.csv``."""

    region_id: tuple[str, ...]
    name: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray

    def __len__(self) -> int:
        return len(self.region_id)


@dataclass(frozen=True)
class Classes:
    """The rows of ``classes.csv``.

    ``ttft_slo_ms`` is ``inf`` for deferrable classes, which have no TTFT target.
    """

    class_id: tuple[str, ...]
    model: tuple[str, ...]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_slo_ms: np.ndarray
    deferrable: np.ndarray

    def __len__(self) -> int:
        return len(self.class_id)

    @property
    def interactive(self) -> np.ndarray:
        return ~self.deferrable


@dataclass(frozen=True)
class Scenario:
    """A whole scenario over its horizon.

    Shapes: ``S`` sites, ``R`` regions, ``C`` classes, ``T`` steps.

    Attributes
    ----------
    times : tuple of datetime, length T
        Start of each step (timezone-aware).
    gpu_s, energy_j, prefill_ms : ndarray (S, C)
        Serving profile: GPU-seconds, incremental IT energy in J and prefill time in ms per
        request of class ``c`` at site ``i``.
    rtt_ms : ndarray (S, R)
        Round-trip time between site and region.
    dry_bulb_c, wet_bulb_c, price_aud_per_mwh, carbon_kg_per_kwh, ewif_l_per_kwh : (S, T)
        Site series over the horizon.
    demand_rps : ndarray (R, C, T)
        Interactive demand in requests per second (zero for deferrable classes).
    batch_requests : ndarray (R, C)
        Deferrable volume over the horizon in requests (zero for interactive classes).
    """

    name: str
    start: datetime
    step_hours: float
    objective: Objective
    sites: Sites
    regions: Regions
    classes: Classes
    gpu_s: np.ndarray
    energy_j: np.ndarray
    prefill_ms: np.ndarray
    rtt_ms: np.ndarray
    times: tuple[datetime, ...]
    dry_bulb_c: np.ndarray
    wet_bulb_c: np.ndarray
    price_aud_per_mwh: np.ndarray
    carbon_kg_per_kwh: np.ndarray
    ewif_l_per_kwh: np.ndarray
    demand_rps: np.ndarray
    batch_requests: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def steps(self) -> int:
        return len(self.times)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(S, R, C, T)``: the shape of a schedule ``x``."""
        return (len(self.sites), len(self.regions), len(self.classes), self.steps)

    @property
    def step_seconds(self) -> float:
        return self.step_hours * SECONDS_PER_HOUR

    def v1_view(self) -> Scenario:
        """The scenario without its model v1.1 plant data (:meth:`Sites.without_plant`),
        kept in memory: a v1 scenario, solved as §2–§6 say; itself for v1 data."""
        if not self.sites.plant_data():
            return self
        return replace(self, sites=self.sites.without_plant())

    def allowed(self) -> np.ndarray:
        """Boolean (S, R, C): may site ``i`` serve region ``j``'s class ``c`` at all?

        Interactive pairs are forbidden when ``rtt + prefill + max_wait > ttft_slo``
        (docs/model.md §2); deferrable pairs are always allowed.
        """
        return allowed_pairs(
            self.rtt_ms,
            self.prefill_ms,
            self.sites.max_wait_ms,
            self.classes.ttft_slo_ms,
            self.classes.deferrable,
        )

    def window(self, first_step: int, steps: int) -> Scenario:
        """The scenario restricted to ``steps`` steps starting at ``first_step``.

        Batch volumes are kept as given (they are defined per horizon).
        """
        if first_step < 0 or first_step + steps > self.steps or steps <= 0:
            raise ValueError(
                f"window [{first_step}, {first_step + steps}) outside the {self.steps} "
                "steps available"
            )
        sl = slice(first_step, first_step + steps)
        return replace(
            self,
            start=self.times[first_step],
            times=self.times[sl],
            dry_bulb_c=self.dry_bulb_c[:, sl],
            wet_bulb_c=self.wet_bulb_c[:, sl],
            price_aud_per_mwh=self.price_aud_per_mwh[:, sl],
            carbon_kg_per_kwh=self.carbon_kg_per_kwh[:, sl],
            ewif_l_per_kwh=self.ewif_l_per_kwh[:, sl],
            demand_rps=self.demand_rps[:, :, sl],
        )

    def persisted(self, steps: int) -> Scenario:
        """The scenario extended to ``steps`` steps by repeating its last step (a
        persistence forecast), for a site that must plan past the data it holds."""
        extra = steps - self.steps
        if extra <= 0:
            return self
        step = timedelta(hours=self.step_hours)
        times = self.times + tuple(self.times[-1] + step * (k + 1) for k in range(extra))

        def longer(values: np.ndarray) -> np.ndarray:
            last = values[..., -1:]
            return np.concatenate([values, np.repeat(last, extra, axis=-1)], axis=-1)

        return replace(
            self,
            times=times,
            dry_bulb_c=longer(self.dry_bulb_c),
            wet_bulb_c=longer(self.wet_bulb_c),
            price_aud_per_mwh=longer(self.price_aud_per_mwh),
            carbon_kg_per_kwh=longer(self.carbon_kg_per_kwh),
            ewif_l_per_kwh=longer(self.ewif_l_per_kwh),
            demand_rps=longer(self.demand_rps),
        )


def allowed_pairs(
    rtt_ms: np.ndarray,
    prefill_ms: np.ndarray,
    max_wait_ms: np.ndarray,
    ttft_slo_ms: np.ndarray,
    deferrable: np.ndarray,
) -> np.ndarray:
    """Boolean (S, R, C) mask of the site/region/class triples a site may serve.

    Parameters
    ----------
    rtt_ms : ndarray (S, R)
    prefill_ms : ndarray (S, C)
    max_wait_ms : ndarray (S,)
    ttft_slo_ms : ndarray (C,)
    deferrable : ndarray of bool (C,)
    """
    worst_ttft = (
        rtt_ms[:, :, None] + prefill_ms[:, None, :] + np.asarray(max_wait_ms)[:, None, None]
    )
    within = worst_ttft <= np.asarray(ttft_slo_ms)[None, None, :]
    return within | np.asarray(deferrable, dtype=bool)[None, None, :]


def step_times(start: datetime, step_hours: float, steps: int) -> tuple[datetime, ...]:
    """The start time of each of ``steps`` steps."""
    return tuple(start + timedelta(hours=step_hours * t) for t in range(steps))


@dataclass(frozen=True)
class DemandView:
    """What the coordinator knows: the demand side of a scenario, and nothing of the sites.

    Attributes mirror :class:`Scenario`; ``demand_rps`` is (R, C, T), ``batch_requests``
    (R, C).
    """

    name: str
    start: datetime
    step_hours: float
    objective: Objective
    regions: Regions
    classes: Classes
    times: tuple[datetime, ...]
    demand_rps: np.ndarray
    batch_requests: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.times)

    @property
    def step_seconds(self) -> float:
        return self.step_hours * SECONDS_PER_HOUR

    @classmethod
    def of(cls, scenario: Scenario) -> DemandView:
        """The coordinator's view of a whole scenario."""
        return cls(
            name=scenario.name,
            start=scenario.start,
            step_hours=scenario.step_hours,
            objective=scenario.objective,
            regions=scenario.regions,
            classes=scenario.classes,
            times=scenario.times,
            demand_rps=scenario.demand_rps,
            batch_requests=scenario.batch_requests,
        )
