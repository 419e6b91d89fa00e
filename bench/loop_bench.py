"""The whole loop measured: traffic through HAProxy to the sites, HAProxy's request counters
scraped by Prometheus, ``serve`` planning from what Prometheus observed, the follower
applying the plan to HAProxy (issue 23, item 3).

    python -m bench.loop_bench [--scenario australia] [--steps 6] [--step-seconds 15]
                               [--requests 1000] [--period 1] [--scrape-interval 1]

Run by hand; nothing is asserted. Everything runs on loopback and stops by itself:

* one small HTTP server per site of the scenario stands for its inference endpoint: it
  answers 200 and counts each request by its region, class and the step it was sent in;
* a real HAProxy (``haproxy`` 2.6+, built with its Prometheus exporter) with a frontend that
  picks the backend ``be_<region>_<class>`` from two request headers, as
  ``deploy/haproxy.cfg`` does, one server per site in every backend (all at weight 1 at the
  start), and its exporter on ``/metrics``;
* a real Prometheus scraping HAProxy's request counters every ``--scrape-interval`` seconds;
* ``thermoroute serve SCENARIO --executor inline --step-seconds S
  --demand-from-prometheus … --demand-query Q``, ``Q`` being ``docker-compose.yml``'s query
  (:data:`QUERY`: HAProxy's requests per backend, the backend's name split into region and
  class) over a window of one step, times ``M`` (which turns the bench's requests back into
  the scenario's requests/s): each cycle plans the current step for the rates observed over
  the last step;
* ``thermoroute route haproxy --period P`` following the service's ``/plan``.

During step k the bench sends a fixed number of requests per region and interactive class,
spaced evenly over the step: step k's forecast (``demand.csv``) scaled so that the first
step totals ``--requests``. (Batch is left out: its arrivals are not what the service plans
for — batch.csv's volume and the backlog are.) So each cycle from the second on plans for the
traffic Prometheus saw in the step before, and the plan it publishes routes the next step's.

Per step the table gives: the requests sent; ``cycle``, from the step's start to the plan's
``made_at`` (the Prometheus query and the method); ``to HAProxy``, from ``made_at`` to the
first time the bench saw every backend's weights in the runtime API's ``show servers
state`` equal the plan's shares rounded as the follower rounds them (polled every 25 ms); the
split of the requests sent after that moment ("settled") against the plan's shares: the
total variation distance over all (backend, site) pairs (Σ|observed − planned| / 2N, the
share of requests sent to another site than planned), the least any router could do with
those whole requests (each backend's planned counts rounded by largest remainder), the
largest |observed share − planned share| of a site in a backend of at least
``MIN_BACKEND`` settled requests, and the TVD of all the step's requests (those routed by the
previous weights before the new plan arrived included); how far the demand this step's
cycle planned for (``/status`` ``observed_demand``) is from what was sent in the step before:
the sum over the region/class pairs of |observed − sent| over the requests sent (the rates
taken back to requests of a step); and how long after the step's end its last request was
sent (more than 0: the sender could not keep up, and the step's requests spilled into the
next one's window).
Step 0 is a warm-up (no traffic observed before it; the follower starts with it, and its
traffic only once the bench is up, squeezed into the rest of the step) and is left out of the
medians, as is step 1's demand error (of step 0's traffic).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from thermoroute.haproxy import RuntimeApi, weights_from_shares

CLI = [sys.executable, "-m", "thermoroute"]
#: The largest |Δshare| is taken over backends with at least this many settled requests: in
#: a smaller one a single request moves a share by more than 2 %.
MIN_BACKEND = 50
#: How often the bench reads ``/plan`` and HAProxy's weights while it waits for a plan.
POLL_S = 0.025
#: The demand query of docker-compose.yml (there over ``[1h]``): HAProxy's requests per
#: second to each backend ``be_<region>_<class>``, labelled with the region and the class.
QUERY = (
    "sum by (region, class) (label_replace(label_replace(rate(haproxy_backend_http_requests_total"
    '{{proxy=~"be_.+_.+"}}[{window}]), "region", "$1", "proxy", "be_(.+)_[^_]+"), "class", "$1", '
    '"proxy", "be_.+_([^_]+)"))'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------
# The sites


class _Site(ThreadingHTTPServer):
    """A loopback HTTP server standing for a site's inference endpoint; ``hits`` counts
    requests by ``(step, region, class, settled)`` (from the bench's headers)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hits: Counter[tuple[int, str, str, bool]] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _SiteHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _SiteHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        site = self.server
        assert isinstance(site, _Site)
        region = self.headers["x-thermoroute-region"]
        class_id = self.headers["x-thermoroute-class"]
        step, settled = int(self.headers["x-bench-step"]), self.headers["x-bench-settled"]
        with site.lock:
            site.hits[(step, region, class_id, settled == "1")] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # quiet
        pass


# ------------------------------------------------------------------------------------------
# The processes


def _wait(what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``ready()`` until true; stop with the log's tail if ``proc`` exits or 60 s pass."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if ready():
                return
        except (OSError, http.client.HTTPException):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{what} did not start:\n{tail}")
        time.sleep(0.1)


@contextmanager
def _process(command: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running with its output in ``log``; terminated (by its pid) on exit."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _haproxy_cfg(
    sock: str, frontend: int, exporter: int, backends: list[str], sites: dict[str, int]
) -> str:
    lines = [
        "global", f"    stats socket {sock} level admin", "    nbthread 1",
        "defaults", "    mode http", "    timeout connect 2s", "    timeout client 10s",
        "    timeout server 10s",
        "frontend fe", f"    bind 127.0.0.1:{frontend}",
        # The backend named by the request's region and class (deploy/haproxy.cfg lists
        # them one by one; the same choice).
        "    use_backend be_%[req.hdr(x-thermoroute-region)]_%[req.hdr(x-thermoroute-class)]",
        "frontend prometheus", f"    bind 127.0.0.1:{exporter}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
    ]  # fmt: skip
    for backend in backends:
        lines += [f"backend {backend}", "    balance roundrobin"]
        lines += [f"    server {s} 127.0.0.1:{port} weight 1" for s, port in sites.items()]
    return "\n".join(lines) + "\n"


def _prometheus_yml(interval: float, target: str) -> str:
    # scope=backend: the backends' series only (not every server's), all the query reads.
    return (
        f"global:\n  scrape_interval: {interval:g}s\n  scrape_timeout: {interval:g}s\n"
        f"scrape_configs:\n  - job_name: haproxy\n    params: {{scope: [backend]}}\n"
        f"    static_configs:\n      - targets: [{json.dumps(target)}]\n"
    )


def _get(url: str) -> dict[str, Any] | None:
    """JSON at ``url``; ``None`` on a 503 (no plan yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body: dict[str, Any] = json.loads(answer.read())
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise


# ------------------------------------------------------------------------------------------
# One step


@dataclass
class Step:
    """What the bench measured of one step."""

    k: int
    sent: dict[tuple[str, str], int]
    settled_at: float = math.nan  # when the plan's weights were seen in HAProxy
    cycle_s: float = math.nan
    to_haproxy_s: float = math.nan
    late_s: float = 0.0  # how long after the step's end its last request was sent
    shares: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)  # /status' observed_demand
    figures: dict[str, float] = field(default_factory=dict)


def _traffic(counts: dict[tuple[str, str], int], k: int) -> list[tuple[str, str]]:
    """The step's requests in a fixed random order (so every backend's are spread out)."""
    order = [pair for pair, n in counts.items() for _ in range(n)]
    random.Random(k).shuffle(order)
    return order


def _send(frontend: int, order: list[tuple[str, str]], k: int, start: float, end: float,
          step: Step) -> None:  # fmt: skip
    """Send ``order`` evenly spaced over [start, end) (wall clock), tagged with the step and
    whether the plan's weights were already in HAProxy."""
    gap = (end - start) / max(1, len(order))
    for i, (region, class_id) in enumerate(order):
        delay = start + i * gap - time.time()
        if delay > 0:
            time.sleep(delay)
        settled = "1" if time.time() >= step.settled_at else "0"  # NaN compares False
        conn = http.client.HTTPConnection("127.0.0.1", frontend, timeout=10)
        conn.request("GET", "/", headers={
            "x-thermoroute-region": region, "x-thermoroute-class": class_id,
            "x-bench-step": str(k), "x-bench-settled": settled, "Connection": "close",
        })  # fmt: skip
        conn.getresponse().read()
        conn.close()
    # A sender that could not keep up spills the step's requests into the next step's window.
    step.late_s = max(0.0, time.time() - end)


def _expected_weights(plan: dict[str, Any], site_ids: list[str]) -> dict[str, dict[str, int]]:
    """Each backend's weights as the follower sets them (backends it keeps left out)."""
    out = {}
    for route in plan["routes"]:
        shares = {s["site_id"]: float(s["share"]) for s in route["sites"]}
        weights = weights_from_shares([shares.get(s, 0.0) for s in site_ids])
        if any(weights):
            out[f"be_{route['region_id']}_{route['class_id']}"] = dict(
                zip(site_ids, weights, strict=True)
            )
    return out


def _all_weights(api: RuntimeApi) -> dict[str, dict[str, int]]:
    """Every backend's servers and weights, from one ``show servers state``."""
    lines = api.command("show servers state").splitlines()
    header = next(ln for ln in lines if ln.startswith("# be_id"))
    columns = header[2:].split()
    be, srv, w = (columns.index(c) for c in ("be_name", "srv_name", "srv_uweight"))
    out: dict[str, dict[str, int]] = {}
    for ln in lines[lines.index(header) + 1 :]:
        fields = ln.split()
        if len(fields) == len(columns):
            out.setdefault(fields[be], {})[fields[srv]] = int(fields[w])
    return out


def _split(step: Step, sites: dict[str, _Site], settled_only: bool) -> dict[str, float]:
    """The step's requests per backend and site against the plan's shares."""
    observed: Counter[tuple[str, str, str]] = Counter()
    for site_id, site in sites.items():
        with site.lock:
            for (k, region, class_id, settled), n in site.hits.items():
                if k == step.k and (settled or not settled_only):
                    observed[(region, class_id, site_id)] += n
    total = diff = floor = 0.0
    worst = math.nan
    for pair, shares in step.shares.items():
        got = {s: observed[(*pair, s)] for s in sites}
        n = sum(got.values())
        if n == 0:
            continue
        planned = {s: n * shares.get(s, 0.0) for s in sites}
        total += n
        diff += sum(abs(got[s] - planned[s]) for s in sites)
        # The closest whole counts: each site's floor, the rest to the largest remainders.
        whole = {s: math.floor(v) for s, v in planned.items()}
        rest = sorted(sites, key=lambda s: planned[s] - whole[s], reverse=True)
        for s in rest[: n - sum(whole.values())]:
            whole[s] += 1
        floor += sum(abs(whole[s] - planned[s]) for s in sites)
        if n >= MIN_BACKEND:
            gap = max(abs(got[s] / n - shares.get(s, 0.0)) for s in sites)
            worst = gap if math.isnan(worst) else max(worst, gap)
    if total == 0:
        return {"tvd": math.nan, "floor": math.nan, "max": math.nan, "n": 0.0}
    return {"tvd": diff / (2 * total), "floor": floor / (2 * total), "max": worst, "n": total}


# ------------------------------------------------------------------------------------------


def _scenario(name: str) -> Any:
    from thermoroute.common import scenarios
    from thermoroute.common.scenario_loading import load_scenario

    path = Path(name)
    return load_scenario(path if path.is_dir() else scenarios.embedded_path(name))


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's options (``None``: ``sys.argv``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.loop_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", default="australia")
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after step 0)")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="requests of the first step (the later follow the forecast)",
    )
    parser.add_argument("--period", type=float, default=1.0, help="the follower's --period")
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> list[Step]:
    """Run the loop for ``args.steps`` + 1 steps (printing a row per step) and stop
    everything it started; the steps measured."""
    for exe in ("haproxy", "prometheus"):
        if shutil.which(exe) is None:
            raise SystemExit(f"{exe} is not installed (apt-get install {exe})")
    scenario = _scenario(args.scenario)
    regions = list(scenario.regions.region_id)
    classes = list(scenario.classes.class_id)
    interactive = [c for c, d in zip(classes, scenario.classes.deferrable, strict=True) if not d]
    site_ids = list(scenario.sites.site_id)
    demand = np.asarray(scenario.demand_rps)  # (regions, classes, steps), requests/s
    inter = [classes.index(c) for c in interactive]
    # Requests sent per requests/s of the scenario, fixed for the run: the first step totals
    # --requests, the later ones rise and fall with the forecast.
    per_rps = args.requests / float(demand[:, inter, 0].sum())
    S = args.step_seconds
    # The query's rate is the bench's requests/s; × S / per_rps is the scenario's.
    query = f"{QUERY.format(window=f'{S:g}s')} * {S / per_rps:.6g}"
    total_steps = args.steps + 1
    if total_steps > demand.shape[2]:
        raise SystemExit(f"--steps: the scenario has {demand.shape[2]} steps")

    def counts_of(k: int) -> dict[tuple[str, str], int]:
        return {(r, c): round(per_rps * demand[j, classes.index(c), k])
                for j, r in enumerate(regions) for c in interactive}  # fmt: skip

    print(f"{args.scenario}: {len(site_ids)} sites, {len(regions)} regions × "
          f"{len(interactive)} interactive classes; step {S:g} s; follower --period "
          f"{args.period:g} s; scrape every {args.scrape_interval:g} s")  # fmt: skip
    print(f"query: {query}")
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loop-bench-")))
        sites = {s: _Site() for s in site_ids}
        for site in sites.values():
            stack.callback(site.server_close)
            stack.callback(site.shutdown)
        ports = {s: site.server_address[1] for s, site in sites.items()}
        frontend, exporter, api_port = _free_port(), _free_port(), _free_port()
        sock = str(scratch / "admin.sock")
        backends = [f"be_{r}_{c}" for r in regions for c in classes]
        cfg = scratch / "haproxy.cfg"
        cfg.write_text(_haproxy_cfg(sock, frontend, exporter, backends, ports))
        haproxy = stack.enter_context(_process(["haproxy", "-f", str(cfg), "-db"],
                                               scratch / "haproxy.log", scratch))  # fmt: skip
        api = RuntimeApi(sock)
        _wait("HAProxy", lambda: api.command("show info"), haproxy, scratch / "haproxy.log")
        prom_port = _free_port()
        prom_yml = _prometheus_yml(args.scrape_interval, f"127.0.0.1:{exporter}")
        (scratch / "prometheus.yml").write_text(prom_yml)
        prometheus = stack.enter_context(_process([
            "prometheus", f"--config.file={scratch / 'prometheus.yml'}",
            f"--storage.tsdb.path={scratch / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], scratch / "prometheus.log", scratch))  # fmt: skip
        prom_url = f"http://127.0.0.1:{prom_port}"
        _wait("Prometheus", lambda: urllib.request.urlopen(f"{prom_url}/-/ready", timeout=2),
              prometheus, scratch / "prometheus.log")  # fmt: skip
        serve = stack.enter_context(_process([
            *CLI, "serve", args.scenario, "--executor", "inline", "--port", str(api_port),
            "--step-seconds", f"{S:g}",
            "--demand-from-prometheus", prom_url, "--demand-query", query,
        ], scratch / "serve.log", scratch))  # fmt: skip
        base = f"http://127.0.0.1:{api_port}"
        _wait("serve", lambda: _get(f"{base}/status"), serve, scratch / "serve.log")
        stack.enter_context(_process([
            *CLI, "route", "haproxy", "--address", f"127.0.0.1:{api_port}", "--haproxy", sock,
            "--period", f"{args.period:g}",
        ], scratch / "follower.log", scratch))  # fmt: skip
        status = _get(f"{base}/status")
        assert status is not None
        # The service's clock started with it (its cycle k is due at origin + k · S).
        origin = time.time() - float(status["uptime_s"])
        steps: list[Step] = []
        for k in range(total_steps):
            step = Step(k, counts_of(k))
            steps.append(step)
            start, end = origin + k * S, origin + (k + 1) * S
            sender = threading.Thread(
                target=_send,
                args=(frontend, _traffic(step.sent, k), k, max(start, time.time()), end, step),
            )
            sender.start()
            _watch(step, base, api, site_ids, start, end)
            sender.join()
            prev = steps[k - 1] if k else None
            _report(step, prev, sites, per_rps)
        print(f"\nlogs were in {scratch} (removed); serve's last lines:")
        print("\n".join((scratch / "serve.log").read_text().splitlines()[-3:]))
    return steps


def main(argv: Sequence[str] | None = None) -> None:
    _table(measure(parse(argv)))


def _watch(step: Step, base: str, api: RuntimeApi, site_ids: list[str], start: float,
           end: float) -> None:  # fmt: skip
    """Wait for the plan of cycle ``step.k``, then for its weights in HAProxy (until the
    step ends); note when each came."""
    plan = None
    while time.time() < end:
        plan = _get(f"{base}/plan")
        if plan is not None and plan["plan_cycle"] >= step.k:
            break
        time.sleep(POLL_S)
    if plan is None or plan["plan_cycle"] != step.k:
        return
    made_at = datetime.fromisoformat(plan["plan_made_at"]).timestamp()
    step.cycle_s = made_at - start
    step.shares = {(r["region_id"], r["class_id"]): {s["site_id"]: float(s["share"])
                   for s in r["sites"]} for r in plan["routes"]}  # fmt: skip
    # The demand the cycle planned for, read now: the next cycle replaces it.
    step.observed = (_get(f"{base}/status") or {}).get("observed_demand") or {}
    expected = _expected_weights(plan, site_ids)
    while time.time() < end:
        now = _all_weights(api)
        seen = time.time()
        if all(now.get(b) == w for b, w in expected.items()):
            step.settled_at = seen
            step.to_haproxy_s = seen - made_at
            return
        time.sleep(POLL_S)


def _report(step: Step, prev: Step | None, sites: dict[str, _Site], per_rps: float) -> None:
    """The step's figures: its split, and the demand its cycle observed of ``prev``'s traffic."""
    settled, whole = _split(step, sites, True), _split(step, sites, False)
    step.figures = {
        "tvd": settled["tvd"], "floor": settled["floor"], "max": settled["max"],
        "settled": settled["n"], "tvd_all": whole["tvd"], "demand": math.nan,
    }  # fmt: skip
    if prev is not None:
        # This step's cycle planned for what Prometheus saw of the previous step's traffic.
        observed = step.observed
        if observed.get("cycle") == step.k:
            rates = {(o["region_id"], o["class_id"]): o["requests_per_s"]
                     for o in observed["observed"]}  # fmt: skip
            # In the bench's requests: |observed − sent| summed over the pairs, over all sent
            # (a pair Prometheus did not answer for counts as wholly missed).
            missed = sum(abs(rates.get(p, 0.0) * per_rps - n) for p, n in prev.sent.items())
            step.figures["demand"] = missed / sum(prev.sent.values())
    print(_row(step), flush=True)


_HEADER = ("step | sent | cycle [s] | to HAProxy [s] | settled | TVD settled | TVD floor | "
           f"max Δshare (≥{MIN_BACKEND}) | TVD all | demand error | sent late [s]")  # fmt: skip


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def _cells(sent: float, cycle: float, lag: float, figures: dict[str, float]) -> str:
    f = figures
    return " | ".join([
        _fmt(sent, 0), _fmt(cycle, 2), _fmt(lag, 3), _fmt(f["settled"], 0), _fmt(f["tvd"], 4),
        _fmt(f["floor"], 4), _fmt(f["max"], 4), _fmt(f["tvd_all"], 4), _fmt(f["demand"], 4),
    ])  # fmt: skip


def _row(step: Step) -> str:
    sent = sum(step.sent.values())
    label = f"{step.k} (warm-up)" if step.k == 0 else str(step.k)
    cells = _cells(sent, step.cycle_s, step.to_haproxy_s, step.figures)
    return f"{label} | {cells} | {step.late_s:.2f}"


def _table(steps: list[Step]) -> None:
    print("\n" + _HEADER)
    for step in steps:
        print(_row(step))
    measured = steps[1:]

    def median(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return statistics.median(finite) if finite else math.nan

    keys = ("settled", "tvd", "floor", "max", "tvd_all")
    figures = {key: median([s.figures[key] for s in measured]) for key in keys}
    # Step 1's demand is step 0's traffic, which began only once the bench was up.
    figures["demand"] = median([s.figures["demand"] for s in steps[2:]])
    cells = _cells(
        median([sum(s.sent.values()) for s in measured]),
        median([s.cycle_s for s in measured]),
        median([s.to_haproxy_s for s in measured]),
        figures,
    )
    print(f"median | {cells} | {median([s.late_s for s in measured]):.2f}")


if __name__ == "__main__":
    main()
