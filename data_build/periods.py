"""The spans of time the embedded scenarios cover, shared by the trimming and the build.

Every time is NEM market time (AEST, UTC+10:00, no daylight saving). A period's series hold
``steps`` hourly steps from ``first``; ``scenario.toml`` selects the 24-step default horizon
from ``default_start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

NEM_TZ = timezone(timedelta(hours=10))


@dataclass(frozen=True)
class Period:
    """The span of one set of embedded series.

    Attributes
    ----------
    key : str
        Short name (``2023-01``, ``2020-01``, ``2020-07``).
    first : datetime
        First step, NEM time.
    steps : int
        Hourly steps.
    default_start : datetime
        First step of the default 24-step horizon.
    grid : str
        ``opennem-5min`` (5-minute prices, emissions and fuel mix) or ``aemo-30min``
        (30-minute prices, daily CDEII intensity, monthly fuel mix).
    daylight_saving : bool
        Whether the south-eastern states keep daylight saving during the period (local clocks
        of the demand shapes).
    label : str
        One line for the provenance: what happened in these days.
    """

    key: str
    first: datetime
    steps: int
    default_start: datetime
    grid: str
    daylight_saving: bool
    label: str

    @property
    def last(self) -> datetime:
        """The last step, NEM time."""
        return self.first + timedelta(hours=self.steps - 1)

    def weather_hours_utc(self) -> tuple[datetime, datetime]:
        """First and last hourly weather label (UTC) the period needs: each step is the mean
        of the two hours that bound it."""
        return self.first.astimezone(UTC), (self.last + timedelta(hours=1)).astimezone(UTC)


PERIODS = {
    "2023-01": Period(
        key="2023-01",
        first=datetime(2023, 1, 17, 12, tzinfo=NEM_TZ),
        steps=168,
        default_start=datetime(2023, 1, 18, 0, tzinfo=NEM_TZ),
        grid="opennem-5min",
        daylight_saving=True,
        label="an ordinary January week (the span of the real NEM 5-minute data)",
    ),
    "2020-01": Period(
        key="2020-01",
        first=datetime(2020, 1, 28, 0, tzinfo=NEM_TZ),
        # 28 Jan – 2 Feb: the daily emissions intensity (AEMO CDEII) in the data ends on 2 Feb.
        steps=144,
        default_start=datetime(2020, 1, 31, 0, tzinfo=NEM_TZ),
        grid="aemo-30min",
        daylight_saving=True,
        label=(
            "the 2020 heatwave: 30–31 Jan Victoria and South Australia above 40 °C, SA islanded "
            "on 31 Jan after the Heywood interconnector's towers fell, 1 Feb New South Wales"
        ),
    ),
    "2020-07": Period(
        key="2020-07",
        first=datetime(2020, 7, 6, 0, tzinfo=NEM_TZ),
        steps=168,
        default_start=datetime(2020, 7, 6, 0, tzinfo=NEM_TZ),
        grid="aemo-30min",
        daylight_saving=False,
        label="a winter week, Monday 6 to Sunday 12 July 2020",
    ),
}

__all__ = ["NEM_TZ", "PERIODS", "UTC", "Period"]
