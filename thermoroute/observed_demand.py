"""Observed demand: the request rates a Prometheus server saw, for the current step.

``thermoroute serve --demand-from-prometheus URL --demand-query Q`` asks the Prometheus HTTP
API (``/api/v1/query``, an instant query) for the operator's PromQL every cycle, e.g.
``sum by (region, class) (rate(requests_total[1h]))`` — the rate over the last step. Each
series' labels name a region and a class (:class:`DemandConfig`: the labels ``region`` and
``class`` holding the ids by default); series naming the same pair are added up, series of an
unknown region or class or of a deferrable class are ignored.

:func:`apply_observed` then makes the cycle's demand: the observed rate at the current step of
each interactive region and class, and ``demand.csv``'s forecast for the later steps scaled so
that it continues from what was observed (see :func:`continuation`). Deferrable classes keep
``batch.csv``'s volume: a rate of batch requests says nothing of the volume still to serve.

A pair whose rate is missing or absurd keeps the forecast and is flagged with a reason
(:data:`REASONS`): the service shows it in ``/status``, a metric and the cycle's reason. Only
the service (the coordinator's process) talks to Prometheus: demand is the coordinator's data.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.toml_files import read_toml

#: Seconds the query may take; a cycle waits for it before solving.
TIMEOUT_S = 5.0
#: An observed rate above this many times the largest forecast rate of its region and class
#: over the horizon is absurd (a unit error: per minute for per second; a counter reset
#: misread) and the forecast is kept. Real surges of 10× in a step are not what a day-ahead
#: forecast plans capacity for either.
ABSURD_FACTOR = 10.0
#: An observed rate above this is absurd whatever the forecast [requests/s] (a region and
#: class whose forecast is 0 has no other bound).
ABSURD_RPS = 1.0e6
#: The ratio observed / forecast that scales the later steps is kept within
#: ``[1 / RATIO_BOUND, RATIO_BOUND]``: one step's surprise may not multiply a day by more.
RATIO_BOUND = 4.0
#: The scaling's time constant [h]: a step ``t`` hours after the current one is scaled by
#: ``ratio ** exp(-t / DECAY_HOURS)``, so a level surprise fades into the forecast's own
#: shape over a few hours.
DECAY_HOURS = 6.0

#: Why a region and class kept the forecast.
UNREACHABLE = "unreachable"  # HTTP error, timeout, refused connection
BAD_ANSWER = "bad_answer"  # a refused query (400, 422), or an answer with no instant vector
NO_SERIES = "no_series"  # the query named no series of this region and class
NOT_FINITE = "not_finite"  # NaN or ±Inf
NEGATIVE = "negative"
ABOVE_BOUND = "above_bound"  # above ABSURD_FACTOR × the forecast's maximum, or ABSURD_RPS
REASONS = (UNREACHABLE, BAD_ANSWER, NO_SERIES, NOT_FINITE, NEGATIVE, ABOVE_BOUND)
#: Region/class pairs a cycle's reason names per fallback reason.
NAMED = 4


class DemandConfigError(ValueError):
    """The ``[demand]`` table is unusable; the message is one line naming the file and key."""


@dataclass(frozen=True)
class DemandConfig:
    """How a series' labels name a region and a class.

    Attributes
    ----------
    region_label, class_label : str
        The labels holding the region and the class.
    regions, classes : dict of str to str
        Label value → region id / class id; a value not listed is taken as the id itself.
    """

    region_label: str = "region"
    class_label: str = "class"
    regions: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)

    def pair_of(self, labels: Mapping[str, str]) -> tuple[str, str] | None:
        """The ``(region_id, class_id)`` a series' labels name (``None``: a label is missing)."""
        region = labels.get(self.region_label)
        class_value = labels.get(self.class_label)
        if region is None or class_value is None:
            return None
        return self.regions.get(region, region), self.classes.get(class_value, class_value)


def load_demand_config(path: Path) -> DemandConfig:
    """The ``[demand]`` table of the TOML file ``path`` (the route follower's mapping file,
    deploy/route.toml; its other tables are the follower's and are not read here).

    Example::

        [demand]
        region_label = "region"        # the default
        class_label = "class"          # the default
        [demand.regions]
        "ap-southeast-2" = "sydney"    # label value = region id
        [demand.classes]
        "chat-v1" = "chat"

    A file without a ``[demand]`` table gives the defaults.

    Raises
    ------
    DemandConfigError
        One line: the file, the key and what is allowed there.
    """
    table = read_toml(path, "--demand-config", DemandConfigError)
    demand = table.get("demand", {})
    if not isinstance(demand, dict):
        kind = type(demand).__name__
        raise DemandConfigError(f"{path}: demand: a table ([demand]), not a {kind}")
    keys = {"region_label", "class_label", "regions", "classes"}
    unknown = sorted(set(demand) - keys)
    if unknown:
        raise DemandConfigError(
            f"{path}: [demand] {unknown[0]}: unknown key; the keys are {', '.join(sorted(keys))}"
        )
    labels = {}
    for key in ("region_label", "class_label"):
        value = demand.get(key, key.removesuffix("_label"))
        if not (isinstance(value, str) and value.isidentifier()):
            raise DemandConfigError(f"{path}: [demand] {key} = {value!r}: a label name")
        labels[key] = value
    maps = {}
    for key in ("regions", "classes"):
        value = demand.get(key, {})
        if not isinstance(value, dict):
            raise DemandConfigError(
                f"{path}: [demand.{key}]: a table of label value = id, not a {type(value).__name__}"
            )
        for label_value, ident in value.items():
            if not (isinstance(ident, str) and ident):
                raise DemandConfigError(
                    f'{path}: [demand.{key}] "{label_value}" = {ident!r}: an id (a string)'
                )
        maps[key] = dict(value)
    return DemandConfig(
        region_label=labels["region_label"], class_label=labels["class_label"],
        regions=maps["regions"], classes=maps["classes"],
    )  # fmt: skip


def check_url(url: str) -> str:
    """``url`` if it is an ``http(s)://host[:port][/path]`` of a Prometheus server, without a
    trailing ``/``.

    Raises
    ------
    ValueError
        One line saying what is wrong.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL of a Prometheus server")
    if parts.query or parts.fragment:
        raise ValueError("the server's base URL, without ?query or #fragment")
    try:
        parts.port  # noqa: B018 (parsing it raises for a bad port)
    except ValueError:
        raise ValueError("a port in 1–65535") from None
    return url.rstrip("/")


@dataclass(frozen=True)
class Answer:
    """One query's answer.

    Attributes
    ----------
    rates : dict of (str, str) to float
        ``(region_id, class_id)`` → the rate its series add up to [requests/s], as answered
        (possibly NaN, negative or absurd: :func:`apply_observed` judges).
    failure : str or None
        :data:`UNREACHABLE` or :data:`BAD_ANSWER` when there is no answer at all.
    detail : str or None
        What failed, in one line (for the cycle's reason).
    """

    rates: dict[tuple[str, str], float]
    failure: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PrometheusDemand:
    """Reads the observed rates from a Prometheus server.

    Parameters
    ----------
    url : str
        The server's base URL (``/api/v1/query`` is appended).
    query : str
        The operator's PromQL: one series per region and class, a rate [requests/s].
    config : DemandConfig
    token : str, optional
        A bearer token the server (or its proxy) asks for.
    timeout_s : float
    """

    url: str
    query: str
    config: DemandConfig = field(default_factory=DemandConfig)
    token: str | None = None
    timeout_s: float = TIMEOUT_S

    def read(self) -> Answer:
        """Ask the server; never raises for what the server or the network does."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': self.query})}"
        request = urllib.request.Request(address)
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 422):  # Prometheus' answer to a query it cannot run
                return Answer({}, BAD_ANSWER, f"Prometheus refused the query ({_error_of(exc)})")
            return Answer({}, UNREACHABLE, f"Prometheus answered {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            return Answer({}, UNREACHABLE, f"Prometheus did not answer ({reason})")
        except ValueError as exc:  # not JSON
            return Answer({}, BAD_ANSWER, f"Prometheus answered no JSON ({exc})")
        return self._rates(body)

    def _rates(self, body: Any) -> Answer:
        data = body.get("data") if isinstance(body, dict) else None
        if not (
            isinstance(data, dict)
            and body.get("status") == "success"
            and data.get("resultType") == "vector"
            and isinstance(data.get("result"), list)
        ):
            kind = data.get("resultType") if isinstance(data, dict) else None
            return Answer({}, BAD_ANSWER, f"the query's answer is no instant vector ({kind})")
        rates: dict[tuple[str, str], float] = {}
        for series in data["result"]:
            try:
                pair = self.config.pair_of(series["metric"])
                value = float(series["value"][1])  # Prometheus writes NaN and ±Inf as text
            except (KeyError, IndexError, TypeError, ValueError):
                return Answer({}, BAD_ANSWER, "a series of the answer has no value")
            if pair is not None:
                rates[pair] = rates.get(pair, 0.0) + value
        return Answer(rates)


def _error_of(refusal: urllib.error.HTTPError) -> str:
    """The first line of the ``error`` Prometheus gives with a refusal, else its status."""
    try:
        error = json.loads(refusal.read()).get("error")
    except (OSError, ValueError, AttributeError):
        error = None
    if not isinstance(error, str) or not error.strip():
        return f"{refusal.code} {refusal.reason}"
    return error.strip().splitlines()[0]


@dataclass(frozen=True)
class Observed:
    """What a cycle made of an answer, for ``/status`` and the metrics.

    Attributes
    ----------
    rates : dict of (str, str) to float
        The interactive pairs planned with an observed rate [requests/s].
    fallbacks : dict of (str, str) to str
        The interactive pairs that kept the forecast, and why (:data:`REASONS`).
    detail : str or None
        What failed when nothing was answered.
    """

    rates: dict[tuple[str, str], float]
    fallbacks: dict[tuple[str, str], str]
    detail: str | None = None

    def reason(self) -> str | None:
        """The cycle's reason part (``None``: every pair was observed), e.g. ``observed
        demand: the forecast kept for 3 of 16 region/class (no_series: sydney/code,
        perth/chat; above_bound: hobart/chat)``; at most :data:`NAMED` pairs per reason are
        named (``/status`` lists them all), to keep a log line a line."""
        if not self.fallbacks:
            return None
        by_reason: dict[str, list[str]] = {}
        for (region, class_id), why in self.fallbacks.items():
            by_reason.setdefault(why, []).append(f"{region}/{class_id}")
        parts = []
        for why, pairs in by_reason.items():
            more = len(pairs) - NAMED
            parts.append(
                f"{why}: {', '.join(pairs[:NAMED])}" + (f" and {more} more" if more > 0 else "")
            )
        whole = len(self.fallbacks) + len(self.rates)
        return (
            f"observed demand: the forecast kept for {len(self.fallbacks)} of {whole} "
            f"region/class ({'; '.join(parts)})" + (f": {self.detail}" if self.detail else "")
        )


def continuation(ratio: float, hours_ahead: np.ndarray) -> np.ndarray:
    """The factors scaling the forecast's later steps after an observed/forecast ``ratio``.

    ``ratio`` is first bounded to ``[1 / RATIO_BOUND, RATIO_BOUND]``; a step ``h`` hours
    after the current one is scaled by ``ratio ** exp(-h / DECAY_HOURS)``: the current
    step's surprise carries on and fades into the forecast's own shape (after 6 h, ``e⁻¹``
    of it in log terms; after a day, 2 %). Multiplicative in log space, so a halving and a
    doubling fade alike, and the factor stays positive.

    Parameters
    ----------
    ratio : float
        Observed / forecast rate at the current step (> 0, finite).
    hours_ahead : ndarray
        Hours from the current step [h].

    Returns
    -------
    ndarray
        One factor per step [1].
    """
    bounded = min(max(ratio, 1.0 / RATIO_BOUND), RATIO_BOUND)
    return np.asarray(bounded ** np.exp(-np.asarray(hours_ahead, float) / DECAY_HOURS))


def apply_observed(
    demand_rps: np.ndarray,
    answer: Answer,
    region_ids: Sequence[str],
    class_ids: Sequence[str],
    deferrable: Sequence[bool],
    step_hours: float,
) -> tuple[np.ndarray, Observed]:
    """The cycle's demand: the observed rates at the current step, the forecast continued.

    Per interactive region and class: an observed rate that is finite, non-negative and not
    above the bound (:data:`ABSURD_FACTOR` × the forecast's largest rate of the pair over the
    horizon, and :data:`ABSURD_RPS`) replaces the current step's forecast, and the later steps
    are multiplied by :func:`continuation` of observed / forecast (unscaled when either is 0:
    no ratio says how a zero continues). Anything else keeps the forecast of the pair,
    flagged with its reason. Deferrable classes are left as they are.

    Parameters
    ----------
    demand_rps : ndarray (R, C, T)
        The forecast [requests/s]; step 0 is the current step.
    answer : Answer
    region_ids, class_ids : sequence of str
    deferrable : sequence of bool
        Per class.
    step_hours : float
        The step's length [h].

    Returns
    -------
    demand : ndarray (R, C, T)
        A new array [requests/s].
    observed : Observed
    """
    demand = np.array(demand_rps, dtype=float)
    hours_ahead = np.arange(demand.shape[-1]) * step_hours
    rates: dict[tuple[str, str], float] = {}
    fallbacks: dict[tuple[str, str], str] = {}
    for j, region in enumerate(region_ids):
        for c, class_id in enumerate(class_ids):
            if deferrable[c]:
                continue
            pair = (region, class_id)
            value = answer.rates.get(pair)
            forecast = demand[j, c]
            most = float(forecast.max())
            bound = min(ABSURD_FACTOR * most, ABSURD_RPS) if most > 0 else ABSURD_RPS
            if answer.failure is not None:
                fallbacks[pair] = answer.failure
            elif value is None:
                fallbacks[pair] = NO_SERIES
            elif not math.isfinite(value):
                fallbacks[pair] = NOT_FINITE
            elif value < 0:
                fallbacks[pair] = NEGATIVE
            elif value > bound:
                fallbacks[pair] = ABOVE_BOUND
            else:
                rates[pair] = value
                now = float(forecast[0])
                if now > 0 and value > 0:
                    demand[j, c] = forecast * continuation(value / now, hours_ahead)
                demand[j, c, 0] = value
    return demand, Observed(rates, fallbacks, answer.detail)
