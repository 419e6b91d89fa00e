"""A real Prometheus server scrapes a real ADMM run, and the series are read back.

The Prometheus binary (Debian's ``prometheus`` package) is started on a free loopback port with a
generated configuration (a 0.5 s scrape interval) and a temporary TSDB. An ADMM solve of the
three-site scenario runs through the product's composition root
(:func:`thermoroute.launch.solve_distributed`) with
:class:`thermoroute.coordinator.metrics.CoordinatorMetrics` serving ``/metrics``; the residual,
objective, iteration and state series are then read back through Prometheus' HTTP API
(``/api/v1/query``) and compared with what the run returned.

The three-site run converges in well under a second, faster than any scrape interval, so
an observer adds 60 ms per iteration (the order of a fan-out over real VMs): Prometheus
then sees the residuals while they fall, not only their final values.

When ``thermoroute run``'s ADMM path exists, a second test runs the command line with
``--metrics-port`` and ``--metrics-linger`` and reads the same series.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.events import IterationRecord, NullObserver

pytestmark = [pytest.mark.prometheus]

SCRAPE_INTERVAL = "500ms"
PACE_S = 0.06  # added per ADMM iteration, see the module docstring


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    """A running Prometheus server."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict]:
        """Result of an instant query (``/api/v1/query``)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout_s: float, accept=bool) -> list[dict]:
        """Poll ``promql`` until ``accept(result)`` holds; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if accept(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Prometheus: {promql!r} still {result!r} after {timeout_s:g} s\n"
                    f"log tail:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.25)


def start_prometheus(workdir: Path, targets: dict[str, str]) -> Prometheus:
    """Start Prometheus on loopback scraping ``{job: "host:port"}`` every 0.5 s."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("the prometheus server is not installed (apt-get install prometheus)")
    jobs = "\n".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']"
        for job, target in targets.items()
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        f"scrape_configs:\n{jobs}\n"
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60.0
    while True:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_prometheus(server)
            raise AssertionError(f"prometheus not ready after 60 s:\n{log.read_text()}")
        time.sleep(0.25)


def stop_prometheus(server: Prometheus) -> None:
    """Terminate the server (by its pid), kill it if it lingers."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=15)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator:
    """Start Prometheus servers for a test; stop them at the end."""
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        workdir = tmp_path / f"prometheus{len(started)}"
        workdir.mkdir()
        server = start_prometheus(workdir, targets)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_prometheus(server)


class PaceAndRecord(NullObserver):
    """Adds a fixed delay to every ADMM iteration (see the module docstring) and keeps the
    records, so the test compares Prometheus with exactly what the loop reported."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.records: list[IterationRecord] = []

    def on_iteration(self, record: IterationRecord) -> None:
        self.records.append(record)
        time.sleep(self.seconds)


def _value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_prometheus_reads_back_a_real_admm_run(prometheus_factory, tiny_scenario_dir: Path):
    from thermoroute.coordinator.metrics import CoordinatorMetrics, MetricsEndpoint
    from thermoroute.launch import solve_distributed

    metrics = CoordinatorMetrics(endpoint=MetricsEndpoint(0, "127.0.0.1"))
    server = metrics.ensure_serving()
    assert server is not None
    prom = prometheus_factory({"thermoroute-coordinator": f"127.0.0.1:{server.port}"})
    prom.wait_for('up{job="thermoroute-coordinator"} == 1', 60.0)

    pace = PaceAndRecord(PACE_S)
    run = solve_distributed(
        tiny_scenario_dir, executor="inline", settings=AdmmSettings(), observers=[metrics, pace]
    )
    assert run.converged
    # The process stays up until Prometheus has scraped the final values twice.
    assert server.linger(30.0, scrapes=2)
    run_id = run.outcome.result.run_id
    sel = f'{{run="{run_id}"}}'
    last = pace.records[-1]
    assert {r.run_id for r in pace.records} == {run_id}
    # What the loop reported is what the run's own history says.
    logged = {h.iteration: h for h in run.outcome.result.history}
    assert logged[last.iteration].residuals.primal == last.primal_residual

    prom.wait_for(f"thermoroute_admm_iterations_total{sel}", 30.0,
                  lambda r: bool(r) and _value(r) == len(pace.records))  # fmt: skip
    assert _value(prom.query(f"thermoroute_admm_iteration{sel}")) == last.iteration
    primal = _value(prom.query(f"thermoroute_admm_primal_residual{sel}"))
    dual = _value(prom.query(f"thermoroute_admm_dual_residual{sel}"))
    assert primal == pytest.approx(last.primal_residual, rel=1e-12)
    assert dual == pytest.approx(last.dual_residual, rel=1e-12)
    assert primal <= _value(prom.query(f"thermoroute_admm_primal_tolerance{sel}"))
    assert _value(prom.query(f"thermoroute_admm_rho{sel}")) == pytest.approx(last.rho)
    state = prom.query(f"thermoroute_run_state{sel} == 1")
    assert [s["metric"]["thermoroute_run_state"] for s in state] == ["converged"]

    # Live progress: Prometheus stored the residual while it fell, not just its end value.
    samples = prom.query(f"thermoroute_admm_primal_residual{sel}[5m]")
    values = [float(v) for _, v in samples[0]["values"]]
    assert len(set(values)) >= 3, f"only {values} scraped during the run"
    assert values[0] > values[-1]
    iterations = [float(v) for _, v in prom.query(f"thermoroute_admm_iteration{sel}[5m]")[0][
        "values"
    ]]  # fmt: skip
    assert iterations == sorted(iterations) and iterations[0] < iterations[-1]

    # The objective and its parts are known when the sites report their totals (the end).
    objective = prom.wait_for(f"thermoroute_objective_aud{sel}", 10.0)
    assert _value(objective) == pytest.approx(run.objective_aud, rel=1e-9)
    parts = prom.query(f"thermoroute_objective_part_aud{sel}")
    by_part = {p["metric"]["part"]: float(p["value"][1]) for p in parts}
    assert set(by_part) == {"energy_cost", "carbon", "water", "latency"}
    assert sum(by_part.values()) == pytest.approx(run.objective_aud, rel=1e-6)


def test_prometheus_reads_back_a_real_interior_point_run(
    prometheus_factory, tiny_scenario_dir: Path
):
    """μ, the coupling residual, the step and the iteration of a ``--method ipm`` run, read
    back from a real Prometheus under the run's label; per-site answer times too."""
    from thermoroute.coordinator.ipm import IpmSettings
    from thermoroute.coordinator.metrics import CoordinatorMetrics, MetricsEndpoint
    from thermoroute.launch import solve_distributed

    metrics = CoordinatorMetrics(endpoint=MetricsEndpoint(0, "127.0.0.1"))
    server = metrics.ensure_serving()
    assert server is not None
    prom = prometheus_factory({"thermoroute-coordinator": f"127.0.0.1:{server.port}"})
    prom.wait_for('up{job="thermoroute-coordinator"} == 1', 60.0)

    # An interior point takes ~10 iterations: pace them so that Prometheus scrapes several.
    pace = PaceAndRecord(0.4)
    run = solve_distributed(
        tiny_scenario_dir, executor="inline", settings=IpmSettings(), observers=[metrics, pace]
    )
    assert run.converged
    assert server.linger(30.0, scrapes=2)
    result = run.outcome.result
    sel = f'{{run="{result.run_id}"}}'
    last, history = pace.records[-1], result.history
    assert [r.iteration for r in pace.records] == [h.iteration for h in history]
    assert all(r.method == "ipm" for r in pace.records)

    # The counter counts iterations as the summary does: the start (iterate 0) is none.
    assert run.iterations == len(history) - 1
    prom.wait_for(f"thermoroute_ipm_iterations_total{sel}", 30.0,
                  lambda r: bool(r) and _value(r) == run.iterations)  # fmt: skip
    assert _value(prom.query(f"thermoroute_ipm_iteration{sel}")) == run.iterations
    assert _value(prom.query(f"thermoroute_ipm_mu{sel}")) == pytest.approx(history[-1].mu)
    coupling = _value(prom.query(f"thermoroute_ipm_coupling_residual{sel}"))
    assert coupling == pytest.approx(history[-1].coupling, rel=1e-12)
    assert coupling <= _value(prom.query(f"thermoroute_ipm_coupling_tolerance{sel}"))
    # The last iterate takes no step: the gauge holds the step of the one before.
    assert _value(prom.query(f"thermoroute_ipm_step{sel}")) == pytest.approx(history[-2].step)
    assert _value(prom.query(f"thermoroute_ipm_sites_dual_pending{sel}")) == 0
    # Nothing of ADMM's families for an interior-point run.
    assert prom.query(f"thermoroute_admm_iteration{sel}") == []
    # μ fell while Prometheus watched.
    samples = prom.query(f"thermoroute_ipm_mu{sel}[5m]")
    values = [float(v) for _, v in samples[0]["values"]]
    assert len(set(values)) >= 3 and values[0] > values[-1]
    # Each site's answer time per iteration, as the coordinator measured it.
    solve = prom.query(f"thermoroute_site_solve_seconds_count{sel}")
    assert {s["metric"]["site"] for s in solve} == set(last.site_solve_s)
    assert all(float(s["value"][1]) == len(history) for s in solve)
    state = prom.query(f"thermoroute_run_state{sel} == 1")
    assert [s["metric"]["thermoroute_run_state"] for s in state] == ["converged"]


# The command's own Ray, in its own process: the metrics a running ``thermoroute run`` serves.
@pytest.mark.ray
def test_thermoroute_run_serves_live_metrics(prometheus_factory, tiny_scenario_dir, tmp_path):
    """``thermoroute run --metrics-port P --metrics-linger S``: Prometheus reads it back."""
    port = free_port()
    prom = prometheus_factory({"thermoroute-coordinator": f"127.0.0.1:{port}"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    # The checkout under test: the run's child in its private network imports nothing from
    # the working directory.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    command = [
        sys.executable, "-m", "thermoroute.cli", "run", str(tiny_scenario_dir),
        "--solver", "admm", "--executor", "ray", "--no-compare", "--quiet",
        "--out", str(tmp_path / "out"),
        "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--metrics-linger", "30",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        up = prom.wait_for('up{job="thermoroute-coordinator"} == 1', 240.0)
        assert up
        state = prom.wait_for(
            'thermoroute_run_state{thermoroute_run_state="converged"} == 1', 240.0
        )
        run_id = state[0]["metric"]["run"]
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    sel = f'{{run="{run_id}"}}'

    def last(metric: str) -> float:
        # The process has exited, so its series are stale now: read their last samples.
        return _value(prom.query(f"last_over_time({metric}{sel}[10m])"))

    # The summary counts ADMM iterations proper; the polishing solves after them (at most
    # AdmmSettings.polish_steps) are reported apart and are not seen by the observers.
    stats = summary["solver_stats"]
    assert 0 <= stats["polish_iterations"] <= AdmmSettings().polish_steps
    assert last("thermoroute_admm_iterations_total") == stats["iterations"]
    assert last("thermoroute_objective_aud") == pytest.approx(summary["objective_aud"], rel=1e-9)
    assert last("thermoroute_admm_primal_residual") >= 0


# --------------------------------------------------------------------------------------------
# The observers on their own (fast; scraped over HTTP from their own servers)


def _scrape(url: str) -> dict[str, float]:
    """``{sample line key: value}`` of a ``/metrics`` page (comments dropped)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_coordinator_metrics_keep_recent_runs_and_survive_pickling() -> None:
    import pickle

    from prometheus_client import CollectorRegistry

    from thermoroute.common.metrics_server import start_metrics_server
    from thermoroute.coordinator.events import RunState
    from thermoroute.coordinator.metrics import CoordinatorMetrics

    registry = CollectorRegistry()
    metrics = CoordinatorMetrics(registry, keep_runs=2)
    server = start_metrics_server(0, "127.0.0.1", registry)
    try:
        for run in ("a", "b", "c"):
            metrics.on_state(run, RunState.STARTING)
            metrics.on_iteration(
                IterationRecord(run, 0, 2.0, 1.0, 0.1, 0.1, 1.0, float("nan"), 0.01,
                                site_solve_s={"syd": 0.002}, late_sites=("mel",),
                                crashed_sites=("mel",))
            )  # fmt: skip
            metrics.on_site_timeout(run, "mel")
        page = _scrape(server.url)
        runs = {k.split('run="')[1].split('"')[0] for k in page if 'run="' in k}
        assert runs == {"b", "c"}, "the oldest run's series must be removed"
        assert page['thermoroute_late_sites_total{run="c",site="mel"}'] == 1
        assert page['thermoroute_site_timeouts_total{run="c",site="mel"}'] == 1
        assert page['thermoroute_site_crashes_total{run="c",site="mel"}'] == 1
        assert page['thermoroute_site_solve_seconds_count{run="c",site="syd"}'] == 1
        assert not any(k.startswith("thermoroute_objective_aud") for k in page), "NaN objective"
        # No scrape after the call: linger waits for one, then gives up at its deadline.
        t0 = time.monotonic()
        assert not server.linger(0.3)
        assert time.monotonic() - t0 >= 0.3
    finally:
        server.close()
    clone = pickle.loads(pickle.dumps(CoordinatorMetrics(keep_runs=3)))
    assert clone.keep_runs == 3 and clone.endpoint is None


def test_site_agent_metrics_from_telemetry_and_environment() -> None:
    from prometheus_client import CollectorRegistry

    from thermoroute.site_agent.metrics import PORT_ENV, SiteAgentMetrics

    metrics = SiteAgentMetrics(CollectorRegistry(), economics=True)  # the operator opted in
    assert metrics.serve_from_env({}) is None
    with pytest.raises(ValueError, match=PORT_ENV):
        metrics.serve_from_env({PORT_ENV: "http"})
    server = metrics.serve_from_env({PORT_ENV: "0"})
    assert server is not None
    try:
        snapshot = {
            "site_id": "syd", "registered": True, "iteration": 4, "solve_s": 0.0003,
            "osqp_iterations": 25, "solved": True, "refactorizations": 2,
            "objective": {"energy_cost": 1.5, "carbon": 0.5, "water": 0.25, "latency": 0.75,
                          "total": 3.0},
        }  # fmt: skip
        metrics.record_telemetry("r", snapshot)
        metrics.record_telemetry("r", snapshot)  # same iteration: not counted twice
        metrics.record_telemetry("r", {**snapshot, "iteration": 5, "refactorizations": 3})
        page = _scrape(server.url)
        sel = '{run="r",site="syd"}'
        assert page[f"thermoroute_agent_solve_seconds_count{sel}"] == 2
        assert page[f"thermoroute_agent_osqp_iterations_total{sel}"] == 50
        assert page[f"thermoroute_agent_refactorizations_total{sel}"] == 3
        assert page[f"thermoroute_agent_admm_iteration{sel}"] == 5
        assert page[f"thermoroute_agent_objective_aud{sel}"] == 3.0
        assert page['thermoroute_agent_objective_part_aud{part="water",run="r",site="syd"}'] == 0.25
    finally:
        server.close()


@pytest.mark.parametrize("method", ["ipm", "admm"])
def test_iterations_agree_in_summary_counter_and_convergence_file(
    method: str, tiny_scenario_dir: Path, tmp_path: Path
) -> None:
    """One iteration count: the summary's, the method's iterations counter and
    ``convergence.csv``'s rows (docs/model.md §9: the interior point's rows include the
    start, ADMM's a kept polishing step)."""
    from prometheus_client import CollectorRegistry

    from thermoroute.common.metrics_server import start_metrics_server
    from thermoroute.coordinator.admm import AdmmSettings
    from thermoroute.coordinator.ipm import IpmSettings
    from thermoroute.coordinator.metrics import CoordinatorMetrics
    from thermoroute.launch import solve_distributed

    registry = CollectorRegistry()
    metrics = CoordinatorMetrics(registry)
    server = start_metrics_server(0, "127.0.0.1", registry)
    settings = IpmSettings() if method == "ipm" else AdmmSettings()
    try:
        run = solve_distributed(
            tiny_scenario_dir, executor="inline", settings=settings, observers=[metrics]
        )
        page = _scrape(server.url)
    finally:
        server.close()
    summary = json.loads((run.outputs.write(tmp_path / "out") / "summary.json").read_text())
    stats = summary["solver_stats"]
    rows = (tmp_path / "out" / "convergence.csv").read_text().splitlines()[1:]
    counter = page[f'thermoroute_{method}_iterations_total{{run="{run.outcome.run.run_id}"}}']
    assert stats["iterations"] == counter == run.iterations > 0
    if method == "ipm":
        assert len(rows) - 1 == stats["iterations"]  # row 0 is the start
        assert stats["tolerances_met"] == ["primal", "dual", "gap"]
    else:
        kept_polish = stats["report_iteration"] >= stats["iterations"]
        assert len(rows) - kept_polish == stats["iterations"]
        # Converged is true of the iterate the stopping test saw (its row of
        # convergence.csv); the reported one is the last row, its tolerances named apart.
        by_iteration = {int(float(r.split(",")[0])): r.split(",") for r in rows}
        _, primal, dual = (float(v) for v in by_iteration[stats["decided_iteration"]][:3])
        assert (primal, dual) == (stats["primal_residual"], stats["dual_residual"])
        assert primal <= stats["eps_primal"] and dual <= stats["eps_dual"]
        assert stats["tolerances_met"] == ["primal", "dual"]
        assert int(float(rows[-1].split(",")[0])) == stats["report_iteration"]
        assert "primal" in stats["reported_tolerances_met"]
    assert stats["converged"] is True
