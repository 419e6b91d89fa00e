"""Observed demand: a real Prometheus scrapes loopback request counters, and the service plans
the current step for the rates it observed (thermoroute/observed_demand.py, docs/serve.md
"Observed demand from Prometheus").

A loopback HTTP server exposes ``requests_total{region, class}`` counters that grow at known
rates (computed from the clock at every scrape, so they are exactly linear in time); a real
Prometheus (Debian's, started as tests/test_prometheus.py starts it: a 0.5 s scrape interval)
scrapes it. The query is ``sum by (region, class) (rate(requests_total[5s]))``, asked once the
series hold more than the 5 s window. On a linear counter ``rate()`` is exact up to the time
between Prometheus' scrape timestamp and the counter's reading (milliseconds on loopback,
over a window of 4.5–5 s), so the observed rates must match the true ones within 1 %.

A second counter, ``spiky_total``, is the same but for one region and class, whose rate is
far above the bound; a third query names no series at all. Site agents run inline on the
tiny scenario (tests/test_service.py's way).
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.test_prometheus import Prometheus, start_prometheus, stop_prometheus
from thermoroute.cluster import discover, serve_fleet
from thermoroute.observed_demand import (
    ABOVE_BOUND,
    BAD_ANSWER,
    DECAY_HOURS,
    NEGATIVE,
    NO_SERIES,
    NOT_FINITE,
    RATIO_BOUND,
    UNREACHABLE,
    Answer,
    DemandConfig,
    DemandConfigError,
    Observed,
    PrometheusDemand,
    apply_observed,
    load_demand_config,
)
from thermoroute.options import RunOptions
from thermoroute.service import PLANNED, PlanningService, ServeSettings
from thermoroute.service_metrics import ServiceMetrics

#: The true rates of the counters [requests/s], per (region, class) of the tiny scenario
#: (interactive classes chat and code; its forecast at the first step: syd 10 and 20, mel 8
#: and 10).
RATES = {("syd", "chat"): 12.0, ("syd", "code"): 24.0, ("mel", "chat"): 6.0, ("mel", "code"): 15.0}
#: spiky_total's rate of mel/code: far above 10× its forecast's largest rate.
SPIKE = 50_000.0
QUERY = "sum by (region, class) (rate({}[5s]))"
TOLERANCE = 0.01  # relative; see the module docstring

pytestmark = [pytest.mark.prometheus]


class _Counters(BaseHTTPRequestHandler):
    """``/metrics``: the counters at the time of the request, Prometheus' text format."""

    started = 0.0

    def do_GET(self) -> None:
        elapsed = time.time() - self.started
        lines = ["# TYPE requests_total counter", "# TYPE spiky_total counter"]
        for (region, class_id), rate in RATES.items():
            labels = f'{{region="{region}",class="{class_id}"}}'
            spiky = SPIKE if (region, class_id) == ("mel", "code") else rate
            lines.append(f"requests_total{labels} {rate * elapsed:.6f}")
            lines.append(f"spiky_total{labels} {spiky * elapsed:.6f}")
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus scraping the counters, its series older than the query's window."""
    _Counters.started = time.time()
    counters = ThreadingHTTPServer(("127.0.0.1", 0), _Counters)
    threading.Thread(target=counters.serve_forever, daemon=True).start()
    server = start_prometheus(
        tmp_path_factory.mktemp("prometheus"), {"counters": f"127.0.0.1:{counters.server_port}"}
    )
    try:
        # 12 samples 0.5 s apart in 7 s: the series span more than the 5 s window, so rate()
        # extrapolates over the whole window.
        server.wait_for(
            "min(count_over_time(requests_total[7s]))",
            timeout_s=25.0,
            accept=lambda r: bool(r) and float(r[0]["value"][1]) >= 12,
        )
        yield server
    finally:
        stop_prometheus(server)
        counters.shutdown()
        counters.server_close()


def _service(directory: Path, observer: PrometheusDemand) -> tuple[PlanningService, ServiceMetrics]:
    coordinator_dir, site_ids = discover(directory)
    metrics = ServiceMetrics()
    service = PlanningService(
        coordinator_dir, site_ids, RunOptions(method="ipm").method_settings(),
        ServeSettings(horizon=4, step_seconds=3600.0),
        serve_fleet(directory, site_ids, executor="inline"), metrics=metrics, observer=observer,
    )  # fmt: skip
    return service, metrics


def _planned(service: PlanningService, step: int) -> dict[tuple[str, str], float]:
    """The plan's requests per second per (region, class) at ``step`` of its horizon."""
    answer = service.plan_at(service.time_of(step))
    assert answer is not None
    return {(r["region_id"], r["class_id"]): r["requests_per_s"] for r in answer["routes"]}


def _sample(metrics: ServiceMetrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def test_the_current_step_is_planned_for_the_observed_rates(
    prometheus: Prometheus, tiny_scenario_dir: Path
) -> None:
    observer = PrometheusDemand(prometheus.url, QUERY.format("requests_total"))
    service, metrics = _service(tiny_scenario_dir, observer)
    forecast = service.first.demand_rps
    record = service.cycle(0)
    assert record.outcome == PLANNED and record.reason is None
    status = service.status()["observed_demand"]
    assert status["cycle"] == 0 and status["forecast_kept"] == []
    seen = {(o["region_id"], o["class_id"]): o["requests_per_s"] for o in status["observed"]}
    assert seen.keys() == RATES.keys()
    planned_now, planned_next = _planned(service, 0), _planned(service, 1)
    for pair, rate in RATES.items():
        assert seen[pair] == pytest.approx(rate, rel=TOLERANCE)
        # The plan meets the observed demand at the current step …
        assert planned_now[pair] == pytest.approx(seen[pair], rel=1e-4)
        gauge = "thermoroute_service_observed_demand_requests_per_second"
        region, class_id = pair
        assert _sample(metrics, gauge, {"region": region, "class": class_id}) == seen[pair]
        # … and the forecast continued from it at the next (one hour later: docs/serve.md).
        j = service.first.regions.region_id.index(region)
        c = service.first.classes.class_id.index(class_id)
        ratio = seen[pair] / forecast[j, c, 0]
        expected = forecast[j, c, 1] * ratio ** math.exp(-1.0 / DECAY_HOURS)
        assert planned_next[pair] == pytest.approx(expected, rel=1e-4)


def test_a_query_naming_no_series_keeps_the_forecast_and_says_so(
    prometheus: Prometheus, tiny_scenario_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    observer = PrometheusDemand(prometheus.url, QUERY.format("no_such_total"))
    service, metrics = _service(tiny_scenario_dir, observer)
    with caplog.at_level("WARNING", logger="thermoroute.service"):
        record = service.cycle(0)
    assert record.outcome == PLANNED and record.reason is not None
    said = "observed demand: the forecast kept for 4 of 4 region/class (no_series: syd/chat"
    assert record.reason.startswith(said)
    assert any(said in r.getMessage() for r in caplog.records)
    status = service.status()
    kept = status["observed_demand"]["forecast_kept"]
    assert {(k["region_id"], k["class_id"], k["reason"]) for k in kept} == {
        (*pair, NO_SERIES) for pair in RATES
    }
    assert status["observed_demand"]["observed"] == []
    assert status["last_cycles"][-1]["reason"] == record.reason
    fallbacks = "thermoroute_service_observed_demand_fallbacks_total"
    assert _sample(metrics, fallbacks, {"reason": NO_SERIES}) == 4
    planned = _planned(service, 0)
    for j, region in enumerate(service.first.regions.region_id):
        for c, class_id in enumerate(("chat", "code")):
            assert planned[(region, class_id)] == pytest.approx(
                service.first.demand_rps[j, c, 0], rel=1e-4
            )


def test_an_absurd_rate_keeps_the_forecast_of_its_pair_only(
    prometheus: Prometheus, tiny_scenario_dir: Path
) -> None:
    observer = PrometheusDemand(prometheus.url, QUERY.format("spiky_total"))
    service, metrics = _service(tiny_scenario_dir, observer)
    record = service.cycle(0)
    assert record.reason == (
        "observed demand: the forecast kept for 1 of 4 region/class (above_bound: mel/code)"
    )
    status = service.status()["observed_demand"]
    assert [(k["region_id"], k["class_id"], k["reason"]) for k in status["forecast_kept"]] == [
        ("mel", "code", ABOVE_BOUND)
    ]
    assert len(status["observed"]) == 3
    fallbacks = "thermoroute_service_observed_demand_fallbacks_total"
    assert _sample(metrics, fallbacks, {"reason": ABOVE_BOUND}) == 1
    gauge = "thermoroute_service_observed_demand_requests_per_second"
    assert math.isnan(_sample(metrics, gauge, {"region": "mel", "class": "code"}))
    mel, code = service.first.regions.region_id.index("mel"), 1
    assert _planned(service, 0)[("mel", "code")] == pytest.approx(
        service.first.demand_rps[mel, code, 0], rel=1e-4
    )
    assert _planned(service, 0)[("syd", "chat")] == pytest.approx(12.0, rel=TOLERANCE)


def test_a_query_prometheus_refuses_or_a_scalar_is_a_bad_answer(prometheus: Prometheus) -> None:
    refused = PrometheusDemand(prometheus.url, "sum by (region (").read()
    assert refused.failure == BAD_ANSWER and refused.detail is not None
    assert (
        refused.detail.startswith("Prometheus refused the query (") and "\n" not in refused.detail
    )
    scalar = PrometheusDemand(prometheus.url, "1").read()
    assert scalar.failure == BAD_ANSWER and "no instant vector (scalar)" in str(scalar.detail)


def test_the_bearer_token_is_sent(tmp_path: Path) -> None:
    heard: list[str | None] = []

    class Vector(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            heard.append(self.headers.get("Authorization"))
            body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Vector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        answer = PrometheusDemand(url, "up", token="s3cret-token").read()
    finally:
        server.shutdown()
        server.server_close()
    assert answer.failure is None and answer.rates == {}
    assert heard == ["Bearer s3cret-token"]


def test_an_unreachable_prometheus_keeps_every_forecast() -> None:
    closed = PrometheusDemand("http://127.0.0.1:1", "up", timeout_s=2.0).read()
    assert closed.failure == UNREACHABLE and closed.rates == {}
    demand = np.ones((1, 2, 3))
    out, observed = apply_observed(demand, closed, ["r"], ["a", "b"], [False, True], 1.0)
    assert np.array_equal(out, demand)
    assert observed.fallbacks == {("r", "a"): UNREACHABLE}  # the deferrable b is not asked
    assert observed.reason() is not None and "did not answer" in observed.reason()


def test_the_later_steps_continue_from_the_observed_rate() -> None:
    """Per region and class, step t is scaled by ratio ** exp(-t h / DECAY_HOURS), the ratio
    observed / forecast bounded to [1 / RATIO_BOUND, RATIO_BOUND]; bad values keep it all."""
    forecast = np.array([[[10.0, 20.0, 30.0, 40.0], [10.0, 10.0, 10.0, 10.0]]] * 6)
    steps = np.arange(4) * 2.0  # two-hour steps
    rates = {"a": 15.0, "b": 1000.0, "c": -1.0, "d": math.nan, "e": 0.0, "f": 99.0}
    answer = Answer({(region, "x"): rate for region, rate in rates.items()})
    ids = list(rates)
    out, observed = apply_observed(forecast, answer, ids, ["x", "y"], [False, True], 2.0)
    scaled = forecast[0, 0, 1:] * 1.5 ** np.exp(-steps[1:] / DECAY_HOURS)
    assert np.allclose(out[0, 0], [15.0, *scaled])
    assert observed.fallbacks[("b", "x")] == ABOVE_BOUND  # > 10 × 40
    assert observed.fallbacks[("c", "x")] == NEGATIVE
    assert observed.fallbacks[("d", "x")] == NOT_FINITE
    for row in (1, 2, 3):
        assert np.array_equal(out[row], forecast[row])
    # A rate of 0 is planned for now; no ratio says how a zero continues.
    assert np.array_equal(out[4, 0], [0.0, 20.0, 30.0, 40.0])
    # 9.9× the forecast now: within the bound, but the continuation is bounded at 4×.
    ratio = RATIO_BOUND ** np.exp(-steps[1:] / DECAY_HOURS)
    assert np.allclose(out[5, 0], [99.0, *(forecast[5, 0, 1:] * ratio)])
    assert np.array_equal(out[:, 1], forecast[:, 1])  # deferrable: batch.csv's volume
    assert observed.rates == {("a", "x"): 15.0, ("e", "x"): 0.0, ("f", "x"): 99.0}
    assert observed.reason() == (
        "observed demand: the forecast kept for 3 of 6 region/class (above_bound: b/x; "
        "negative: c/x; not_finite: d/x)"
    )
    many = Observed({}, {(f"r{i}", "x"): NO_SERIES for i in range(6)}).reason()
    assert many is not None and many.endswith("(no_series: r0/x, r1/x, r2/x, r3/x and 2 more)")


def test_labels_are_mapped_by_the_demand_table(tmp_path: Path) -> None:
    path = tmp_path / "route.toml"
    path.write_text(
        '[servers]\nsyd = "syd"\n[demand]\nregion_label = "zone"\n'
        '[demand.regions]\n"ap-southeast-2" = "syd"\n'
    )
    config = load_demand_config(path)
    assert config.pair_of({"zone": "ap-southeast-2", "class": "chat"}) == ("syd", "chat")
    assert config.pair_of({"region": "syd", "class": "chat"}) is None
    assert load_demand_config(tmp_path / "route.toml").classes == {}
    assert DemandConfig().pair_of({"region": "mel", "class": "code"}) == ("mel", "code")
    for text, said in (
        ("[demand]\nregion = 1\n", "[demand] region: unknown key"),
        ('[demand]\nclass_label = "a b"\n', "[demand] class_label = 'a b': a label name"),
        ('[demand.classes]\n"v1" = 3\n', '[demand.classes] "v1" = 3: an id'),
    ):
        path.write_text(text)
        with pytest.raises(DemandConfigError, match=r"^" + str(path)) as refused:
            load_demand_config(path)
        assert said in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--demand-query", "up"], "--demand-query: read only with --demand-from-prometheus"),
        (["--demand-from-prometheus", "localhost:9090", "--demand-query", "up"], "an http://"),
        (["--demand-from-prometheus", "http://127.0.0.1:9090"], "needs --demand-query"),
        (
            ["--demand-from-prometheus", "http://127.0.0.1:9090", "--demand-query", "up",
             "--prometheus-token-file", "{shared}"],
            "--prometheus-token-file {shared}: readable by group or others (mode 644)",
        ),
    ],
)  # fmt: skip
def test_inconsistent_demand_flags_are_refused_in_one_line(
    args: list[str], said: str, tmp_path: Path
) -> None:
    shared = tmp_path / "token"
    shared.write_text("a-token-others-may-read\n")
    shared.chmod(0o644)
    args = [a.format(shared=shared) for a in args]
    said = said.format(shared=shared)
    done = subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", "serve", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and said in lines[0], done.stderr
