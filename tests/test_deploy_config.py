"""The deployment files are valid and agree with the product.

- ``docker-compose.yml`` passes ``docker-compose config`` (Debian's docker-compose; no
  Docker engine is needed) and has one site-agent service per site of ``australia``, each
  mounting only its own data directory;
- ``deploy/prometheus.yml`` (with its rules) passes ``promtool check config`` and reads
  Ray's service-discovery file where Ray writes it;
- the Grafana provisioning points at the dashboards and datasource that exist, and every
  metric name in the dashboard's and the alert rules' PromQL is one the product exports —
  read from the product's own ``/metrics`` served in-process, not from a list kept here;
- the guide's port table matches ``deploy/commands.sh``;
- ``deploy/haproxy.cfg`` passes ``haproxy -c`` and has a backend per region and class of
  ``australia`` with a server per site, ``deploy/route.toml`` names only those, and the
  compose file's follower drives that HAProxy from the plan;
- the loop is closed: Prometheus scrapes HAProxy's exporter, and the compose file's serve
  plans from its request counters (the query bench/loop_bench.py measures) with
  ``deploy/route.toml`` mounted for the labels.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = REPO / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "thermoroute-convergence.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards"
PROMETHEUS = DEPLOY / "prometheus.yml"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
ROUTE_TOML = DEPLOY / "route.toml"
# Where a node of docker-compose.yml sees the split scenario (the same path on every node,
# as on every VM of deploy/GUIDE.md).
SPLIT_ROOT = "/srv/thermoroute/split"

# PromQL words that are not metric names.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}  # fmt: skip
# Series Prometheus itself makes for every target.
_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, labels, keywords removed).

    Grafana's ``$variables`` and ``$__interval``-style macros count as neither.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"\$\w+", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d*)?([eE][-+]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0) not in _KEYWORDS:
            names.add(match.group(0))
    return names


def test_promql_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, site) (rate(a_bucket{run=~"$run"}'
        "[$__rate_interval]))) / on (run) b_total offset 5m > 1e-3 and c"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c"}


def exposition_names(text: str) -> set[str]:
    """Every series name a ``/metrics`` text can produce, from its ``# TYPE`` lines and samples.

    A labelled family with no child yet has no sample line, so its TYPE line is what lists
    it; a histogram's TYPE line stands for its ``_bucket``, ``_count`` and ``_sum`` series.
    """
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind.strip() == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            if kind.strip() == "summary":
                names |= {f"{name}_count", f"{name}_sum"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def exported() -> Iterator[set[str]]:
    """Series names the product serves: the coordinator's and a site agent's ``/metrics``,
    each started in-process on a free loopback port and scraped over HTTP."""
    from thermoroute.common.metrics_server import start_metrics_server
    from thermoroute.coordinator.metrics import CoordinatorMetrics
    from thermoroute.service_metrics import ServiceMetrics
    from thermoroute.site_agent.metrics import SiteAgentMetrics

    coordinator = CoordinatorMetrics()
    agent = SiteAgentMetrics()
    service = ServiceMetrics()
    servers = [
        start_metrics_server(0, "127.0.0.1", coordinator.registry),
        agent.serve(0),
        start_metrics_server(0, "127.0.0.1", service.registry),
    ]
    try:
        names: set[str] = set()
        for server in servers:
            with urllib.request.urlopen(server.url, timeout=10) as response:
                names |= exposition_names(response.read().decode("utf-8"))
        yield names
    finally:
        for server in servers:
            server.close()


# --------------------------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict:
    """``docker-compose config`` output (validated and normalised by docker-compose)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    proc = subprocess.run(
        [exe, "-f", str(COMPOSE), "config"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def australia_site_ids() -> list[str]:
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenarios import embedded_path

    return list(load_scenario(embedded_path("australia")).sites.site_id)


def test_compose_has_head_prometheus_grafana_and_one_agent_per_site(compose: dict) -> None:
    services = compose["services"]
    sites = australia_site_ids()
    assert {"ray-head", "prometheus", "grafana"} <= set(services)
    agents = {name for name in services if name.startswith("site-")}
    assert agents == {f"site-{s}" for s in sites}
    for site in sites:
        service = services[f"site-{site}"]
        command = " ".join(service["command"])
        assert "thermoroute_site_start ray-head" in command and f" {site} " in command
        data = [v for v in service.get("volumes", []) if f":{SPLIT_ROOT}" in str(v)]
        assert len(data) == 1, f"site-{site} must mount exactly one data directory: {data}"
        source, target = str(data[0]).split(":")[:2]
        assert source.endswith(f"/deploy/data/sites/{site}")
        assert target == f"{SPLIT_ROOT}/sites/{site}"
        assert str(data[0]).endswith(":ro")
    head = services["ray-head"]
    head_data = [str(v).split(":")[:2] for v in head["volumes"] if f":{SPLIT_ROOT}" in str(v)]
    assert [(Path(src).name, dst) for src, dst in head_data] == [
        ("coordinator", f"{SPLIT_ROOT}/coordinator")
    ]
    # The head learns the site ids from empty directories on a tmpfs: no site file.
    assert head.get("tmpfs") == [f"{SPLIT_ROOT}/sites"]
    # The head serves: a cycle every hour, the plan on :8808 for this host's load balancer.
    assert f'thermoroute_serve "$$(hostname -i)" {SPLIT_ROOT}' in " ".join(head["command"])
    assert any(str(p).startswith("127.0.0.1:8808:8808") for p in head["ports"]), head["ports"]


def _secrets(service: dict) -> list[str]:
    return [s["source"] if isinstance(s, dict) else s for s in service.get("secrets", [])]


def test_compose_ray_nodes_have_shm_and_the_token(compose: dict) -> None:
    for name, service in compose["services"].items():
        if name == "ray-head" or name.startswith("site-"):
            assert service.get("shm_size"), f"{name}: Ray's object store needs shm_size"
            # The plan API's token only where the plan is served and scraped.
            expected = ["ray_token", "plan_token"] if name == "ray-head" else ["ray_token"]
            assert _secrets(service) == expected, name
    # Prometheus (user nobody) reads its own owner-only copy: serve refuses a token file
    # readable by group or others, so one file cannot serve both users.
    assert _secrets(compose["services"]["prometheus"]) == ["prometheus_plan_token"]
    assert {"ray_token", "plan_token", "prometheus_plan_token"} <= set(compose["secrets"])


def test_compose_prometheus_and_grafana_mount_the_deploy_files(compose: dict) -> None:
    prom = compose["services"]["prometheus"]["volumes"]
    assert any(str(v).startswith(f"{PROMETHEUS}:") for v in prom)
    assert any(":/tmp/ray" in str(v) for v in prom), "Prometheus must read Ray's SD file"
    grafana = [str(v) for v in compose["services"]["grafana"]["volumes"]]
    provider = yaml.safe_load(next(PROVIDERS.glob("*.yml")).read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.startswith(f"{DASHBOARD.parent}:{path}") for v in grafana)
    assert any(v.startswith(f"{DEPLOY / 'grafana' / 'provisioning'}:") for v in grafana)


def test_compose_routes_through_haproxy_driven_by_the_follower(compose: dict) -> None:
    services = compose["services"]
    haproxy = services["haproxy"]
    assert any(
        str(v).startswith(f"{HAPROXY_CFG}:/usr/local/etc/haproxy/haproxy.cfg")
        for v in haproxy["volumes"]
    )
    assert any(str(p).startswith("127.0.0.1:8000:8000") for p in haproxy["ports"])
    follower = services["route-haproxy"]
    command = " ".join(follower["command"])
    assert command.startswith("thermoroute route haproxy ")
    assert "--address=ray-head:8808" in command
    assert "--token-file=/run/secrets/plan_token" in command
    assert _secrets(follower) == ["plan_token"]
    # The runtime API has no authentication: on HAProxy's loopback, which only the follower
    # shares (its network namespace).
    assert "--haproxy=127.0.0.1:9999" in command
    assert follower["network_mode"] == "service:haproxy"
    assert "stats socket ipv4@127.0.0.1:9999 level admin" in HAPROXY_CFG.read_text()
    config = next(
        str(v).split(":")[1] for v in follower["volumes"] if str(v).startswith(f"{ROUTE_TOML}:")
    )
    assert f"--config={config}" in command


def test_compose_serve_plans_from_the_request_counters_prometheus_scrapes(compose: dict) -> None:
    from bench.loop_bench import QUERY

    head = compose["services"]["ray-head"]
    command = " ".join(head["command"])
    assert "--demand-from-prometheus http://prometheus:9090" in command
    # The query the bench measured, over an hour (the step); docker-compose config keeps
    # compose's $$ escape.
    query = QUERY.format(window="1h").replace("$", "$$")
    assert f"--demand-query '{query}'" in command
    config = next(
        str(v).split(":")[1] for v in head["volumes"] if str(v).startswith(f"{ROUTE_TOML}:")
    )
    assert f"--demand-config {config}" in command
    # Its counters: HAProxy's exporter, which Prometheus scrapes.
    assert re.search(
        r"^frontend prometheus\n\s+bind :8405\n\s+http-request use-service prometheus-exporter",
        HAPROXY_CFG.read_text(), re.M,
    )  # fmt: skip
    jobs = {
        job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    }
    assert jobs["haproxy"]["static_configs"][0]["targets"] == ["haproxy:8405"]


def test_haproxy_cfg_has_a_backend_per_region_and_class_and_passes_haproxy(
    tmp_path: Path,
) -> None:
    from thermoroute.common.scenario_loading import load_scenario
    from thermoroute.common.scenarios import embedded_path
    from thermoroute.haproxy import RouteConfig, load_config

    scen = load_scenario(embedded_path("australia"))
    sites = list(scen.sites.site_id)
    text = HAPROXY_CFG.read_text()
    backends: dict[str, list[str]] = {}
    for block in re.split(r"^backend ", text, flags=re.M)[1:]:
        name = block.split()[0]
        backends[name] = re.findall(r"^\s+server (\S+) ", block, re.M)
    default = RouteConfig()
    expected = {
        default.backend_of(r, c) for r in scen.regions.region_id for c in scen.classes.class_id
    }
    assert set(backends) == expected
    assert all(servers == [default.server_of(s) for s in sites] for servers in backends.values())
    # What deploy/route.toml names is in the configuration.
    route = load_config(ROUTE_TOML)
    assert set(route.backends.values()) <= set(backends)
    assert set(route.servers) <= set(sites) and set(route.servers.values()) <= set(sites)
    exe = shutil.which("haproxy")
    if exe is None:
        pytest.fail("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    # Checked without resolving the sites' endpoint names (placeholders, which a DNS lookup
    # per server would take a minute to fail on): everything else as written.
    assert text.count("init-addr last,libc,none") == 1
    check = tmp_path / "haproxy.cfg"
    check.write_text(text.replace("init-addr last,libc,none", "init-addr none"))
    proc = subprocess.run(
        [exe, "-c", "-f", str(check)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Configuration file is valid" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    # promtool reads the credentials file: check a copy that names a token file that exists.
    config = yaml.safe_load(PROMETHEUS.read_text())
    workdir = tmp_path / "prom"
    workdir.mkdir()
    for rule_file in config["rule_files"]:
        shutil.copy(DEPLOY / rule_file, workdir / rule_file)
    for job in config["scrape_configs"]:
        if "authorization" in job:
            (workdir / "plan_token").write_text("x" * 64)
            job["authorization"]["credentials_file"] = str(workdir / "plan_token")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", str(workdir / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "rules found" in proc.stdout


def test_prometheus_scrapes_the_coordinator_and_ray_not_the_sites() -> None:
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"thermoroute-coordinator", "thermoroute-service", "ray", "haproxy"}
    assert jobs["thermoroute-coordinator"]["static_configs"][0]["targets"] == ["ray-head:9464"]
    service = jobs["thermoroute-service"]
    assert service["static_configs"][0]["targets"] == ["ray-head:8808"]
    assert service["authorization"]["credentials_file"] == "/run/secrets/prometheus_plan_token"
    ray_files = jobs["ray"]["file_sd_configs"][0]["files"]
    assert ray_files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


def test_alert_rules_use_exported_metrics(exported: set[str]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    for rule_file in config["rule_files"]:
        rules = yaml.safe_load((DEPLOY / rule_file).read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                names = promql_metric_names(rule["expr"])
                assert names, rule["alert"]
                unknown = names - exported - _SYNTHETIC
                assert not unknown, f"{rule['alert']}: unknown metrics {sorted(unknown)}"


# --------------------------------------------------------------------------------------------
# Grafana


def _targets(dashboard: dict) -> Iterator[tuple[str, dict]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def test_dashboard_references_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = list(_targets(dashboard))
    assert len(exprs) >= 10
    for title, target in exprs:
        names = promql_metric_names(target["expr"])
        assert names, f"panel {title!r}: no metric in {target['expr']!r}"
        unknown = names - exported
        assert not unknown, f"panel {title!r}: not exported by the product: {sorted(unknown)}"
    for var in dashboard["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
        assert inner and inner.group(1) in exported, query


def test_dashboard_shows_what_the_issue_asks(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    residuals = next(p for t, p in panels.items() if t.lower().startswith("residuals"))
    scale = residuals["fieldConfig"]["defaults"]["custom"]["scaleDistribution"]
    assert scale == {"type": "log", "log": 10}
    used = {n for _, t in _targets(dashboard) for n in promql_metric_names(t["expr"])}
    for needed in (
        "thermoroute_admm_primal_residual",
        "thermoroute_admm_dual_residual",
        "thermoroute_admm_rho",
        "thermoroute_objective_part_aud",
        "thermoroute_site_last_solve_seconds",
        "thermoroute_late_sites_total",
        # thermoroute serve's cycles over hours
        "thermoroute_service_cycles_total",
        "thermoroute_service_last_cycle_iterations",
        "thermoroute_service_plan_age_seconds",
        "thermoroute_service_stale_forecasts",
        "thermoroute_service_sites_up",
    ):
        assert needed in used and needed in exported


def test_grafana_datasource_and_provider() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    sources = [yaml.safe_load(p.read_text()) for p in DATASOURCES.glob("*.yml")]
    uids = {d["uid"] for doc in sources for d in doc["datasources"]}
    used = {t["datasource"]["uid"] for _, t in _targets(dashboard)}
    assert used <= uids and used
    ds = next(d for doc in sources for d in doc["datasources"])
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = [yaml.safe_load(p.read_text()) for p in PROVIDERS.glob("*.yml")]
    assert [p["type"] for doc in providers for p in doc["providers"]] == ["file"]


# --------------------------------------------------------------------------------------------
# Guide, commands and Dockerfile


def test_commands_parse_and_guide_lists_every_port() -> None:
    commands = (DEPLOY / "commands.sh").read_text()
    subprocess.run(["bash", "-n", str(DEPLOY / "commands.sh")], check=True, timeout=30)
    ports = dict(re.findall(r'^: "\$\{(THERMOROUTE_\w+_PORT):=(\d+)\}"', commands, re.M))
    assert len(ports) >= 10
    guide = (DEPLOY / "GUIDE.md").read_text()
    table = {row.split("|")[1].strip() for row in guide.splitlines() if row.startswith("| ")}
    for name, port in ports.items():
        if name in ("THERMOROUTE_MIN_WORKER_PORT", "THERMOROUTE_MAX_WORKER_PORT"):
            continue
        assert port in table, f"{name}={port} missing from GUIDE.md's port table"
    low, high = ports["THERMOROUTE_MIN_WORKER_PORT"], ports["THERMOROUTE_MAX_WORKER_PORT"]
    assert f"{low}–{high}" in table


def test_dockerfile_copies_existing_paths() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", dockerfile, re.M)
    assert copies
    for line in copies:
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert re.search(r"^USER\s+(?!root)\S+", dockerfile, re.M), "the image must not run as root"
