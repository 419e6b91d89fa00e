"""``thermoroute route haproxy`` against a real HAProxy and a real service (issue 23, item 1).

Each test starts HAProxy (Debian's ``haproxy``, 2.6+) on loopback with a generated
configuration — one backend per region and class of the tiny scenario, one server per site,
an admin runtime socket in the test's directory — and a planning service in process (site
agents inline) behind its real HTTP API with a bearer token. The follower talks to both as
in production: HTTP to the service, the runtime API to HAProxy.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import thermoroute_in_process

from thermoroute import service_log
from thermoroute.haproxy import (
    PlanSource,
    RouteConfigError,
    RuntimeApi,
    load_config,
    weights_from_shares,
)

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.console import main; main()"]
SITES = ("syd", "mel", "per")
REGIONS = ("syd", "mel")
CLASSES = ("chat", "code", "batch")
#: Every server starts at this weight, so a weight the follower did not set shows.
START_WEIGHT = 7
#: The measured split of 2,000 requests may differ from the plan's shares by this fraction
#: of them: the weights are the shares rounded to 1/256 (at most 1/256 ≈ 0.4 % off, the
#: ≥ 1 rule included) and HAProxy's weighted round robin is deterministic over whole rounds
#: of 256 requests, 2,000 being 7 rounds and 208 requests of an eighth (a partial round
#: deviates by a few requests at most, < 0.3 %). 1 % leaves room for both and nothing else.
SPLIT_TOLERANCE = 0.01
REQUESTS = 2000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def haproxy_exe() -> str:
    exe = shutil.which("haproxy")
    if exe is None:
        pytest.fail(
            "haproxy is not installed: apt-get install -y --no-install-recommends haproxy "
            "(.ci/run installs it; the follower's tests need a real one)"
        )
    return exe


class _Site(ThreadingHTTPServer):
    """A loopback HTTP server standing for a site: answers 200 and counts its requests."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hits = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Count)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Count(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _Site)
        with self.server.lock:
            self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def haproxy_running(exe: str, site_ports: dict[str, int], frontend: int | None = None,
                    frontend_backend: str = "be_syd_batch") -> Iterator[str]:  # fmt: skip
    """HAProxy with a backend per region and class of the tiny scenario and a server per site
    (all at :data:`START_WEIGHT`); yields its admin socket's path."""
    # A UNIX socket's path must fit 108 bytes: pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="hap") as directory:
        sock = f"{directory}/admin.sock"
        lines = [
            "global", f"    stats socket {sock} level admin", "    nbthread 1",
            "defaults", "    mode http", "    timeout connect 2s", "    timeout client 10s",
            "    timeout server 10s",
        ]  # fmt: skip
        if frontend is not None:
            lines += ["frontend fe", f"    bind 127.0.0.1:{frontend}",
                      f"    default_backend {frontend_backend}"]  # fmt: skip
        for region in REGIONS:
            for class_id in CLASSES:
                lines += [f"backend be_{region}_{class_id}", "    balance roundrobin"]
                lines += [
                    f"    server {site} 127.0.0.1:{port} weight {START_WEIGHT}"
                    for site, port in site_ports.items()
                ]
        cfg = Path(directory) / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            api = RuntimeApi(sock)
            deadline = time.monotonic() + 10
            while True:
                try:
                    api.command("show info")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        out = proc.communicate(timeout=5)[0] if proc.poll() is not None else ""
                        pytest.fail(f"HAProxy did not start:\n{out}")
                    time.sleep(0.05)
            yield sock
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def all_weights(sock: str) -> dict[str, dict[str, int]]:
    api = RuntimeApi(sock)
    return {f"be_{r}_{c}": api.weights(f"be_{r}_{c}") for r in REGIONS for c in CLASSES}


@pytest.fixture
def service(tiny_scenario_dir: Path, tmp_path: Path) -> Iterator[tuple[Any, str, Path]]:
    """A planning service of the tiny scenario (no cycle run yet) behind its HTTP API with a
    bearer token; yields it, the API's host:port and the token file."""
    from thermoroute.cluster import discover, serve_fleet
    from thermoroute.http_api import ApiServer, create_app
    from thermoroute.options import RunOptions
    from thermoroute.service import PlanningService, ServeSettings
    from thermoroute.service_metrics import ServiceMetrics

    coordinator_dir, site_ids = discover(tiny_scenario_dir)
    metrics = ServiceMetrics()
    planning = PlanningService(
        coordinator_dir, site_ids, RunOptions(method="ipm").method_settings(),
        ServeSettings(horizon=2, step_seconds=3600.0),
        serve_fleet(tiny_scenario_dir, site_ids, executor="inline"), metrics=metrics,
    )  # fmt: skip
    token = "r" * 40
    token_file = tmp_path / "plan_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = _free_port()
    server = ApiServer(create_app(planning, metrics.registry, token), "127.0.0.1", port)
    server.start()
    try:
        yield planning, f"127.0.0.1:{port}", token_file
    finally:
        server.stop()


def _follow_once(address: str, token_file: Path, sock: str, cwd: Path, *more: str) -> Any:
    return thermoroute_in_process(
        "route", "haproxy", "--once", "--address", address, "--token-file", str(token_file),
        "--haproxy", sock, *more, cwd=cwd,
    )  # fmt: skip


#: A JSON line's ``ts``: UTC, to the millisecond.
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _follow_until_sigterm(args: list[str], lines: int, cwd: Path) -> tuple[list[str], str]:
    """``route haproxy ARGS`` following: its first ``lines`` stderr lines, then SIGTERM; the
    rest of its stderr. It must exit 143."""
    follower = subprocess.Popen(
        [*CLI, "route", "haproxy", *args], stderr=subprocess.PIPE, text=True, cwd=cwd
    )
    try:
        assert follower.stderr is not None
        first = [follower.stderr.readline() for _ in range(lines)]
        follower.send_signal(signal.SIGTERM)
        rest = follower.communicate(timeout=20)[1]
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 143, [*first, rest]
    return first, rest


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as the JSON object it must be, the common keys first."""
    lines = [json.loads(line) for line in stderr.splitlines()]
    for line in lines:
        assert list(line)[:4] == list(service_log.COMMON_KEYS), line
        assert _TS.fullmatch(line["ts"]) and line["level"] in ("info", "warning", "error"), line
    return lines


def _events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The lines of ``event``, without their time (the one key a test cannot know)."""
    return [
        {k: v for k, v in line.items() if k != "ts"} for line in lines if line["event"] == event
    ]


def _expected(plan: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each backend's weights per the documented rounding (a backend without demand: kept)."""
    out = {}
    for region in REGIONS:
        for class_id in CLASSES:
            route = next(
                (
                    r
                    for r in plan["routes"]
                    if (r["region_id"], r["class_id"]) == (region, class_id)
                ),
                None,
            )
            shares = {s["site_id"]: s["share"] for s in (route or {"sites": []})["sites"]}
            weights = weights_from_shares([shares.get(s, 0.0) for s in SITES])
            out[f"be_{region}_{class_id}"] = (
                dict(zip(SITES, weights, strict=True)) if any(weights)
                else dict.fromkeys(SITES, START_WEIGHT)
            )  # fmt: skip
    return out


def _plan(address: str, token_file: Path) -> dict[str, Any]:
    plan = PlanSource(address, token_file.read_text()).get("/plan")
    assert plan is not None
    return plan


# ------------------------------------------------------------------------------------------
# The rounding and the mapping file (pure)


def test_shares_round_to_256_keeping_every_site_with_a_share() -> None:
    assert weights_from_shares([1.0]) == [256]
    assert weights_from_shares([0.5, 0.5, 0.0]) == [128, 128, 0]  # 0 drains
    assert weights_from_shares([0.0, 0.0]) == [0, 0]  # the caller keeps the backend
    # Largest remainder: 85.33 · 3 → 86, 85, 85 (ties to the earlier server).
    assert weights_from_shares([1, 1, 1]) == [86, 85, 85]
    # A share of 0.1 % (quota 0.256) still gets 1, taken from the largest.
    assert weights_from_shares([0.999, 0.001]) == [255, 1]
    weights = weights_from_shares([0.5533, 0.4438, 0.0029])
    assert sum(weights) == 256 and weights == [142, 113, 1]
    with pytest.raises(ValueError, match="finite and non-negative"):
        weights_from_shares([0.5, -0.1])


def test_the_mapping_file_and_its_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "route.toml"
    good.write_text('[backends]\n"syd/chat" = "be_sc"\n"syd/batch" = ""\n[servers]\nper = "p1"\n')
    config = load_config(good)
    assert config.backend_of("syd", "chat") == "be_sc"
    assert config.backend_of("syd", "batch") == ""  # not routed
    assert config.backend_of("mel", "code") == "be_mel_code"  # derived from the ids
    assert (config.server_of("per"), config.server_of("syd")) == ("p1", "syd")
    for text, expected in [
        ('[backends]\nsydney = "x"\n', f'{good}: [backends] "sydney": a key is "<region>/<class>"'),
        ('[servers]\nsyd = "a b"\n', f"{good}: [servers] \"syd\" = 'a b': a name of letters"),
        ("[servers]\nsyd = 3\n", f'{good}: [servers] "syd" = 3: a name of'),
        ("[weights]\n", f"{good}: [weights]: unknown table"),
        (
            '[servers]\nsyd = "a"\nmel = "a"\n',
            f"{good}: [servers] \"mel\" = 'a': already the server of site syd",
        ),
        ("[servers\n", f"--config {good}: not TOML"),
    ]:
        good.write_text(text)
        with pytest.raises(RouteConfigError) as error:
            load_config(good)
        assert str(error.value).startswith(expected) and "\n" not in str(error.value)
    # On the command line: one line, exit 2, before anything is contacted; the table's
    # brackets shown as written.
    good.write_text('[backends]\nsydney = "x"\n')
    result = thermoroute_in_process(
        "route", "haproxy", "--once", "--config", str(good), "--address", "127.0.0.1:1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'error: {good}: [backends] "sydney": a key is "<region>/<class>" (e.g. "sydney/chat")'
    ]
    good.write_text("[servers\n")
    result = thermoroute_in_process(
        "route", "haproxy", "--once", "--config", str(good), "--address", "127.0.0.1:1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --config {good}: not TOML "
                                                  "(Expected ']' at the end of a table "
                                                  "declaration (at line 1, column 9))"]  # fmt: skip


# ------------------------------------------------------------------------------------------
# With a real HAProxy and a real service


def test_published_weights_are_the_plans_shares_and_split_real_requests(
    haproxy_exe: str, service: tuple[Any, str, Path], tmp_path: Path
) -> None:
    planning, address, token_file = service
    sites = {s: _Site() for s in SITES}
    frontend = _free_port()
    try:
        ports = {s: server.server_address[1] for s, server in sites.items()}
        with haproxy_running(haproxy_exe, ports, frontend) as sock:
            planning.cycle(0)
            result = _follow_once(address, token_file, sock, tmp_path)
            assert result.returncode == 0, result.stderr
            plan = _plan(address, token_file)
            expected = _expected(plan)
            assert all_weights(sock) == expected
            # Drained: Sydney's chat goes (all but the solver's tolerance) to syd; per, with
            # no share, gets weight 0.
            assert expected["be_syd_chat"]["per"] == 0 and expected["be_syd_chat"]["syd"] >= 255
            # One line for the applied plan: which cycle and step, how many servers changed.
            changed = sum(w != START_WEIGHT for b in expected.values() for w in b.values())
            assert f"applied the plan of cycle 0, step 0 ({plan['time']}): {changed} of 18 " \
                "servers changed weight" in result.stderr  # fmt: skip
            # A token the service refuses: one line, exit 2 (retrying would not help).
            wrong = tmp_path / "wrong_token"
            wrong.write_text("w" * 40)
            wrong.chmod(0o600)
            refused = _follow_once(address, wrong, sock, tmp_path)
            assert refused.returncode == 2
            assert refused.stderr.strip().splitlines() == [
                f"error: the service at {address} answered 401 Unauthorized"
            ]
            # An HAProxy that does not answer: one line, exit 4, nothing set.
            gone = _follow_once(address, token_file, f"{sock}.gone", tmp_path)
            assert gone.returncode == 4
            assert gone.stderr.strip().splitlines() == [
                f"error: HAProxy's runtime API at {sock}.gone: No such file or directory; "
                "weights kept"
            ]
            assert all_weights(sock) == expected
            # 2,000 requests through Sydney's batch backend (three sites with a share).
            batch = next(r for r in plan["routes"] if (r["region_id"], r["class_id"]) ==
                         ("syd", "batch"))  # fmt: skip
            assert len(batch["sites"]) == 3
            for _ in range(REQUESTS):
                conn = http.client.HTTPConnection("127.0.0.1", frontend, timeout=10)
                conn.request("GET", "/", headers={"Connection": "close"})
                assert conn.getresponse().status == 200
                conn.close()
    finally:
        for server in sites.values():
            server.shutdown()
            server.server_close()
    hits = {s: server.hits for s, server in sites.items()}
    assert sum(hits.values()) == REQUESTS
    for share in batch["sites"]:
        observed = hits[share["site_id"]] / REQUESTS
        assert abs(observed - share["share"]) <= SPLIT_TOLERANCE, (hits, batch["sites"])


def test_log_format_json_writes_each_line_as_one_json_object(
    haproxy_exe: str, service: tuple[Any, str, Path], tmp_path: Path
) -> None:
    planning, address, token_file = service
    root = logging.getLogger(service_log.ROOT)
    before = (list(root.handlers), root.level, root.propagate)
    with haproxy_running(haproxy_exe, dict.fromkeys(SITES, _free_port())) as sock:
        planning.cycle(0)
        result = _follow_once(address, token_file, sock, tmp_path, "--log-format", "json")
        assert result.returncode == 0, result.stderr
        # The command undid its logging set-up when it ended (a caller in the same process
        # keeps its own).
        assert (list(root.handlers), root.level, root.propagate) == before
        plan = _plan(address, token_file)
        expected = _expected(plan)
        assert all_weights(sock) == expected
        changed = sum(w != START_WEIGHT for b in expected.values() for w in b.values())
        assert _events(_json_lines(result.stderr), "applied") == [
            {
                "level": "info", "event": "applied",
                "message": f"applied the plan of cycle 0, step 0 ({plan['time']}): {changed} "
                "of 18 servers changed weight",
                "plan_cycle": 0, "plan_step": 0, "time": plan["time"], "changed": changed,
                "servers": 18, "backends_not_set": 0,
            }
        ]  # fmt: skip
        # A refused token: the one line, exit 2, is JSON too.
        wrong = tmp_path / "wrong_token"
        wrong.write_text("w" * 40)
        wrong.chmod(0o600)
        refused = _follow_once(address, wrong, sock, tmp_path, "--log-format", "json")
        assert refused.returncode == 2, refused.stderr
        assert [
            {k: v for k, v in line.items() if k != "ts"} for line in _json_lines(refused.stderr)
        ] == [
            {
                "level": "error", "event": "refused",
                "message": f"the service at {address} answered 401 Unauthorized",
                "peer": "service", "address": address, "backend": None,
            }
        ]  # fmt: skip
        # A backend HAProxy does not have: its line, the plan applied to the others, and
        # --once's closing line saying why it exits 4.
        config = tmp_path / "route.toml"
        config.write_text('[backends]\n"syd/chat" = "be_nowhere"\n')
        result = _follow_once(address, token_file, sock, tmp_path, "--config", str(config),
                              "--log-format", "json")  # fmt: skip
        assert result.returncode == 4, result.stderr
        logged = _json_lines(result.stderr)
        [refused_line] = _events(logged, "refused")
        assert refused_line["message"].startswith(f"HAProxy at {sock}: backend be_nowhere: ")
        assert (refused_line["level"], refused_line["peer"], refused_line["address"],
                refused_line["backend"]) == ("error", "haproxy", sock, "be_nowhere")  # fmt: skip
        [applied] = _events(logged, "applied")
        assert (applied["changed"], applied["servers"], applied["backends_not_set"]) == (0, 15, 1)
        assert _events(logged, "not_set") == [
            {
                "level": "error", "event": "not_set",
                "message": f"1 backend(s) not set: {refused_line['message']}", "backends": 1,
            }
        ]  # fmt: skip
        assert logged[-1]["event"] == "not_set"
        assert all_weights(sock) == expected
        assert (list(root.handlers), root.level, root.propagate) == before


def test_a_degraded_plan_leaves_the_weights_unchanged(
    haproxy_exe: str, service: tuple[Any, str, Path], tiny_scenario_dir: Path, tmp_path: Path
) -> None:
    planning, address, token_file = service
    with haproxy_running(haproxy_exe, dict.fromkeys(SITES, _free_port())) as sock:
        planning.cycle(0)
        assert _follow_once(address, token_file, sock, tmp_path).returncode == 0
        before = all_weights(sock)
        assert before == _expected(_plan(address, token_file))
        # Melbourne's pipeline writes a bad value into the next horizon: cycle 1 plans with
        # mel's stale forecast, degraded.
        series = tiny_scenario_dir / "site_series.csv"
        with series.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            if row["site_id"] == "mel" and datetime.fromisoformat(row["time"]) == planning.time_of(
                2
            ):
                row["dry_bulb_c"] = "hot"
        with series.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        record = planning.cycle(1)
        assert record.degraded
        # The service's clock moves to step 1 (as an hour passing would).
        planning._clock_origin -= planning.step_seconds
        plan = _plan(address, token_file)
        assert plan["plan_cycle"] == 1 and plan["degraded"]
        assert _expected(plan) != before  # applying it would have changed weights
        result = _follow_once(address, token_file, sock, tmp_path)
        assert result.returncode == 0, result.stderr
        assert all_weights(sock) == before
        held = (
            f"the plan of cycle 1, step 0 ({plan['time']}) is degraded (sites: mel (stale "
            "forecast)): every server keeps its weight until a whole, fresh plan"
        )
        assert held in result.stderr
        # In JSON (a new follower: the plan is new to it, so it says so again).
        result = _follow_once(address, token_file, sock, tmp_path, "--log-format", "json")
        assert result.returncode == 0, result.stderr
        logged = _json_lines(result.stderr)
        assert _events(logged, "held") == [
            {
                "level": "warning", "event": "held", "message": held, "plan_cycle": 1,
                "plan_step": 0, "time": plan["time"], "degraded": True, "stale": False,
                "sites_not_up": [{"site_id": "mel", "state": "stale forecast"}],
            }
        ]  # fmt: skip
        assert not _events(logged, "applied")
        assert all_weights(sock) == before


def test_an_unreachable_service_zeroes_nothing_and_is_retried(
    haproxy_exe: str, tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with haproxy_running(haproxy_exe, dict.fromkeys(SITES, _free_port())) as sock:
        before = all_weights(sock)
        # --once: one line, exit 4.
        once = subprocess.run(
            [*CLI, "route", "haproxy", "--once", "--address", nobody, "--haproxy", sock],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert once.returncode == 4, once.stderr
        assert once.stderr.strip().splitlines() == [
            f"error: the service at {nobody}: Connection refused; weights kept"
        ]
        # Following: a line when it starts, then retried after 1 s, then 2 s (bounded by
        # --max-backoff), until SIGTERM, which it says before the closing "terminated".
        lines, rest = _follow_until_sigterm(
            ["--address", nobody, "--haproxy", sock, "--max-backoff", "2"], 4, tmp_path
        )
        start = (
            f"INFO    following the plan of the service at {nobody} every 10 s into the weights "
            f"of HAProxy's runtime API at {sock}"
        )
        assert lines[0].rstrip().endswith(start), lines[0]
        for line, wait in zip(lines[1:], (1, 2, 2), strict=True):
            assert f"the service at {nobody}: Connection refused; retrying in {wait} s" in line
        stop, end = rest.strip().splitlines()
        assert stop.endswith(
            "INFO    shutting down (SIGTERM): every server keeps the weight last set (no plan "
            "was applied)"
        ), stop
        assert end == "terminated"
        assert all_weights(sock) == before


def test_an_unreachable_service_in_json_lines(haproxy_exe: str, tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with haproxy_running(haproxy_exe, dict.fromkeys(SITES, _free_port())) as sock:
        before = all_weights(sock)
        # --once: the one line is the log's, exit 4; not retried, so no delay.
        once = thermoroute_in_process(
            "route", "haproxy", "--once", "--address", nobody, "--haproxy", sock,
            "--log-format", "json", cwd=tmp_path,
        )  # fmt: skip
        assert once.returncode == 4, once.stderr
        assert _events(_json_lines(once.stderr), "unreachable") == [
            {
                "level": "error", "event": "unreachable",
                "message": f"the service at {nobody}: Connection refused; weights kept",
                "peer": "service", "address": nobody, "reason": "Connection refused",
                "retry_in_s": None, "attempt": None,
            }
        ]  # fmt: skip
        assert len(once.stderr.splitlines()) == 1, once.stderr
        # Following: start, a warning per retry with its delay, and the shutdown on SIGTERM
        # — with no closing "terminated", which is no JSON.
        lines, rest = _follow_until_sigterm(
            ["--address", nobody, "--haproxy", sock, "--max-backoff", "1", "--period", "5",
             "--log-format", "json"], 3, tmp_path,
        )  # fmt: skip
        logged = _json_lines("".join(lines) + rest)
        assert [line["event"] for line in logged] == [
            "start", "unreachable", "unreachable", "shutdown"
        ], logged  # fmt: skip
        assert _events(logged, "start") == [
            {
                "level": "info", "event": "start",
                "message": f"following the plan of the service at {nobody} every 5 s into the "
                f"weights of HAProxy's runtime API at {sock}",
                "service": nobody, "haproxy": sock, "period_s": 5.0, "max_backoff_s": 1.0,
            }
        ]  # fmt: skip
        for attempt, line in enumerate(_events(logged, "unreachable"), start=1):
            assert line == {
                "level": "warning", "event": "unreachable",
                "message": f"the service at {nobody}: Connection refused; retrying in 1 s "
                f"(attempt {attempt}); weights kept",
                "peer": "service", "address": nobody, "reason": "Connection refused",
                "retry_in_s": 1.0, "attempt": attempt,
            }  # fmt: skip
        assert _events(logged, "shutdown") == [
            {
                "level": "info", "event": "shutdown",
                "message": "shutting down (SIGTERM): every server keeps the weight last set "
                "(no plan was applied)",
                "why": "SIGTERM", "plan_cycle": None, "plan_step": None,
            }
        ]  # fmt: skip
        assert all_weights(sock) == before


def test_a_backend_the_plan_would_zero_keeps_its_weights(
    haproxy_exe: str, service: tuple[Any, str, Path], tmp_path: Path
) -> None:
    planning, address, token_file = service
    # Sydney's and Melbourne's sites have no server of that name in HAProxy: Sydney's chat
    # and code go to syd (and, within the solver's tolerance, mel), none to per, so their
    # backends would have every server at 0.
    config = tmp_path / "route.toml"
    config.write_text('[servers]\nsyd = "syd-elsewhere"\nmel = "mel-elsewhere"\n')
    with haproxy_running(haproxy_exe, dict.fromkeys(SITES, _free_port())) as sock:
        planning.cycle(0)
        result = thermoroute_in_process(
            "route", "haproxy", "--once", "--address", address, "--token-file",
            str(token_file), "--haproxy", sock, "--config", str(config), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        weights = all_weights(sock)
        logged = _json_lines(
            thermoroute_in_process(
                "route", "haproxy", "--once", "--address", address, "--token-file",
                str(token_file), "--haproxy", sock, "--config", str(config), "--log-format",
                "json", cwd=tmp_path,
            ).stderr
        )  # fmt: skip
        assert all_weights(sock) == weights
    plan = _plan(address, token_file)
    kept = {line["backend"]: line for line in _events(logged, "backend_kept")}
    unmapped = {line["backend"]: line for line in _events(logged, "no_server")}
    for backend in ("be_syd_chat", "be_syd_code"):
        route = next(
            r for r in plan["routes"] if (r["region_id"], r["class_id"]) == ("syd", backend[7:])
        )
        assert "per" not in {s["site_id"] for s in route["sites"]}  # the premise
        assert weights[backend] == dict.fromkeys(SITES, START_WEIGHT)
        assert re.search(
            rf"backend {backend}: no server for site\(s\) (syd|syd, mel|mel, syd) of "
            rf"syd/{backend[7:]}; their share goes to the others",
            result.stderr,
        ), result.stderr
        message = (
            f"backend {backend}: the plan sends none of syd/{backend[7:]}'s requests to its "
            "servers (no demand, or no server for its sites): weights kept, a backend is never "
            "zeroed"
        )
        assert message in result.stderr
        # per's is the one site server in it.
        assert kept[backend] == {
            "level": "warning", "event": "backend_kept", "message": message,
            "backend": backend, "region_id": "syd", "class_id": backend[7:], "servers": 1,
        }  # fmt: skip
        assert unmapped[backend]["level"] == "warning"
        assert (unmapped[backend]["region_id"], unmapped[backend]["class_id"]) == (
            "syd", backend[7:])  # fmt: skip
        assert unmapped[backend]["sites"] in (["syd"], ["mel", "syd"]), unmapped[backend]
    # Sydney's batch: syd's and mel's shares go to per; their servers untouched.
    batch = next(r for r in plan["routes"] if (r["region_id"], r["class_id"]) == ("syd", "batch"))
    assert {s["site_id"] for s in batch["sites"]} >= {"per"}  # the premise
    assert weights["be_syd_batch"] == {"syd": START_WEIGHT, "mel": START_WEIGHT, "per": 256}
