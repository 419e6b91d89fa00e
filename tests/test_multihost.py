"""Site agents on separate hosts: a real Ray cluster across network namespaces.

Each emulated VM (see :mod:`tests.netns`) is a network namespace with its own address on an
emulated Australian WAN (:mod:`tests.wan`: the head in Sydney, each site's host at its
city; every packet between two hosts delayed by half their cities' round-trip time in the
test that measures latency, passed at once in the others) and its own filesystem view:

- ``head`` (10.200.0.1) runs the Ray head and the driver (so the coordinator); it sees the
  split scenario's ``coordinator/`` directory and one *empty* ``sites/<id>/`` directory per
  site (the fleet's site ids, no files);
- one host per site (10.200.0.2, …) offers the Ray resource ``site:<id>`` and sees only
  ``sites/<id>/`` — its own private data;
- nobody sees the full scenario or the other hosts' directories.

The hosts are brought up with the functions of ``deploy/commands.sh`` — the commands
``deploy/GUIDE.md`` gives — with token authentication and Ray's mutual TLS on (a CA and one
certificate per host, made with the guide's ``openssl`` commands; each host holds only its
own key). The test then runs both methods from the head and checks that every site agent ran
on its own host, that the objective equals the local (in-process) run's, that each site
wrote its detail in its own output directory and the head holds no site's private file, that
a driver without the token, with a wrong token or without a certificate is refused in one
line, that a node with a certificate of another CA cannot join, that a warm planning cycle
pays one round trip to the slowest site per round, and that a rotated token locks the old
one out.

Cleanup is by process id and namespace only (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from netns import Host, VirtualNetwork, netns_unavailable_reason
from wan import city_of, rtt_ms

from thermoroute.common.scenario_format import COORDINATOR_FILES, SITE_PRIVATE_FILES
from thermoroute.common.scenario_split import split_scenario

# A cluster of its own across network namespaces (one Ray node per emulated host), never the
# session's local one.
pytestmark = [pytest.mark.netns, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
COMMANDS = REPO / "deploy" / "commands.sh"
GUIDE = REPO / "deploy" / "GUIDE.md"
GCS_PORT = 6379
# Small object stores: four Ray nodes share this machine's /dev/shm and memory.
OBJECT_STORE_BYTES = 80_000_000
REL_TOL = 1e-3
COORDINATOR_METRICS_PORT = 9464  # as in deploy/commands.sh (each namespace has its own ports)
PLAN_PORT = 8808  # thermoroute_serve's plan API, as in deploy/commands.sh
HEAD_CITY = "sydney"  # where the head (so the coordinator) is on the emulated WAN


@dataclass
class Cluster:
    """The running emulated cluster."""

    net: VirtualNetwork
    root: Path
    head: Host
    sites: dict[str, Host]
    split: Path  # the split scenario's path on every host (each sees only its part)
    full: Path  # the full scenario (visible only to the test process)
    env: dict[str, str]
    prometheus: str = ""  # URL of the Prometheus running on the head (head's loopback)

    def host_env(self, host: Host, **extra: str) -> dict[str, str]:
        """The environment on ``host``: the common one, its own TLS directory and, on a
        site's host, its own output directory (``THERMOROUTE_SITE_OUTPUT``)."""
        env = {**self.env, "THERMOROUTE_TLS_DIR": str(tls_dir(self.root, host))}
        if host is not self.head:
            env["THERMOROUTE_SITE_OUTPUT"] = str(site_output(self.root, host))
        return {**env, **extra}

    def sh(self, host: Host, script: str, timeout: float = 180.0, **extra: str) -> str:
        """Run ``script`` after sourcing deploy/commands.sh, on ``host``; return stdout."""
        return host_sh(self.net, host, script, self.host_env(host, **extra), timeout)

    def sh_status(
        self, host: Host, script: str, timeout: float = 180.0, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Like :meth:`sh`, but return the finished process whatever its exit status."""
        return self.net.run(
            host, ["bash", "-c", f". {COMMANDS} && {script}"], env=self.host_env(host, **extra),
            timeout=timeout, cwd=REPO, check=False,
        )  # fmt: skip


def start_sites(c: Cluster, extra: Callable[[Host], str]) -> None:
    """``thermoroute_site_start`` on every site's host at once, as each VM's operator would
    (one after the other, each node's start waited ~5 s for the last)."""
    with ThreadPoolExecutor(len(c.sites)) as pool:
        started = [
            pool.submit(
                c.sh, host, f"thermoroute_site_start {c.head.ip} {host.ip} {sid} {extra(host)}"
            )
            for sid, host in c.sites.items()
        ]
        for future in started:
            future.result()


def host_sh(
    net: VirtualNetwork, host: Host, script: str, env: dict[str, str], timeout: float
) -> str:
    """``bash -c '. deploy/commands.sh && SCRIPT'`` on ``host``, failing with its output."""
    proc = net.run(
        host,
        ["bash", "-c", f". {COMMANDS} && {script}"],
        env=env,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"on {host.name} ({host.ip}): {script!r} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc.stdout


def _base_env(root: Path) -> dict[str, str]:
    """The environment of every command on every host: this interpreter's tools first, no
    inherited Ray settings, a private HOME (``ray get-auth-token`` writes ~/.ray), and the
    token file path every host uses (copied to each VM in a real deployment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(root / "home"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        THERMOROUTE_TOKEN_FILE=str(root / "secrets" / "ray_token"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _ray_temp(root: Path, host: Host) -> Path:
    return root / "r" / host.name


def tls_dir(root: Path, host: Host) -> Path:
    """``host``'s THERMOROUTE_TLS_DIR: the CA's certificate, its own key and certificate."""
    return root / "tls" / host.name


def site_output(root: Path, host: Host) -> Path:
    """A site host's own output directory (THERMOROUTE_SITE_OUTPUT)."""
    return root / "siteout" / host.name


def make_certificates(root: Path, env: dict[str, str], hosts: list[Host]) -> None:
    """The guide's CA and one certificate per host, made on the "workstation" (this
    process): root/ca holds the CA key and is hidden from every host."""
    script = f"thermoroute_tls_ca {root / 'ca'}" + "".join(
        f" && thermoroute_tls_node {root / 'ca'} {tls_dir(root, h)} {h.ip}" for h in hosts
    )
    subprocess.run(["bash", "-c", f". {COMMANDS} && {script}"], env=env, check=True,
                   timeout=60, cwd=REPO)  # fmt: skip


@contextlib.contextmanager
def running_cluster(
    full: Path,
    cities: Mapping[str, str],
    *,
    head_city: str = HEAD_CITY,
    prometheus: bool = True,
    delays: bool = True,
) -> Iterator[Cluster]:
    """Head + one host per site of ``full`` (``cities``: site id -> its city on the emulated
    WAN, the head at ``head_city``), started with the guide's commands; torn down by pid.
    With ``delays`` off the WAN passes packets at once until ``net.wan.set_delays(True)``."""
    site_ids = tuple(cities)
    # A short root: Ray's unix sockets live under each node's temp dir (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="trmh", dir="/tmp"))
    net: VirtualNetwork | None = None
    try:
        for sub in ("home", "secrets", "split", "store", "out", "tls", "siteout"):
            (root / sub).mkdir()
        store = root / "store"
        split_scenario(full, store)
        split = root / "split"  # an empty mount point: each host mounts its own view here
        net = VirtualNetwork(wan=True)
        if not delays:
            assert net.wan is not None
            net.wan.set_delays(False)
        head = net.add_host("head", head_city)
        sites = {sid: net.add_host(sid, cities[sid]) for sid in site_ids}
        hosts = [head, *sites.values()]
        env = _base_env(root)
        make_certificates(root, env, hosts)
        for host in hosts:
            _ray_temp(root, host).mkdir(parents=True)
            site_output(root, host).mkdir(parents=True)
            others = [
                path(root, h) for h in hosts if h is not host
                for path in (_ray_temp, tls_dir, site_output)
            ]  # fmt: skip
            host.fresh = [split]
            host.hidden = [store, full.parent, root / "ca", *others]
        head.binds = {split / "coordinator": store / "coordinator"}
        head.dirs = [split / "sites" / sid for sid in site_ids]
        for sid, host in sites.items():
            host.binds = {split / "sites" / sid: store / "sites" / sid}
        c = Cluster(net, root, head, sites, split, full, env)

        token = root / "secrets" / "ray_token"
        c.sh(head, f"thermoroute_token_generate {token}")
        assert token.stat().st_mode & 0o077 == 0, "the token file must be private"
        # The plan API's bearer token (thermoroute_serve), also Prometheus' for its /metrics.
        c.sh(head, f"thermoroute_token_generate {plan_token_file(root)}")

        def extra(host: Host) -> str:
            return f"--temp-dir {_ray_temp(root, host)} --object-store-memory {OBJECT_STORE_BYTES}"

        c.sh(head, f"thermoroute_head_start {head.ip} {extra(head)}")
        start_sites(c, extra)
        joined = c.sh(head, f"thermoroute_wait_for_sites {head.ip} {len(sites)} 180")
        assert sorted(joined.split()) == sorted(f"site:{s}" for s in site_ids)
        if prometheus:
            c.prometheus = start_prometheus_on_head(c)
        yield c
    finally:
        if net is not None:
            net.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tiny_split_source: tuple[Path, dict[str, str]]) -> Iterator[Cluster]:
    """The tiny fleet's cluster: each site's host at its city, the head in Sydney; the WAN's
    delays off but in the test that measures them (the others check nothing of latency and
    would only wait for it)."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    full, cities = tiny_split_source
    with running_cluster(full, cities, delays=False) as c:
        yield c


def plan_token_file(root: Path) -> Path:
    return root / "secrets" / "plan_token"


def start_prometheus_on_head(c: Cluster) -> str:
    """Run Prometheus on the head with deploy/prometheus.yml's jobs, pointed at this cluster.

    The job names, the discovery-file name and the alert rules are the deployment's; only
    the addresses change (the coordinator on the head's address, the head's Ray temp dir
    instead of /tmp/ray) and the interval (0.5 s).
    """
    exe = shutil.which("prometheus")
    if exe is None:
        return ""
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    workdir = c.root / "prom"
    workdir.mkdir()
    for rule_file in config.get("rule_files", []):
        shutil.copy(REPO / "deploy" / rule_file, workdir / rule_file)
    config["global"].update(scrape_interval="500ms", scrape_timeout="500ms")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["thermoroute-coordinator"]["static_configs"] = [
        {"targets": [f"{c.head.ip}:{COORDINATOR_METRICS_PORT}"]}
    ]
    jobs["thermoroute-service"]["static_configs"] = [{"targets": [f"{c.head.ip}:{PLAN_PORT}"]}]
    jobs["thermoroute-service"]["authorization"]["credentials_file"] = str(plan_token_file(c.root))
    sd_name = Path(jobs["ray"]["file_sd_configs"][0]["files"][0]).name
    jobs["ray"]["file_sd_configs"] = [{"files": [str(_ray_temp(c.root, c.head) / sd_name)],
                                       "refresh_interval": "1s"}]  # fmt: skip
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("wb")
    port = 9090  # the head's own loopback: no other process can hold it in this namespace
    subprocess.Popen(
        c.net.argv(c.head, [exe, f"--config.file={workdir / 'prometheus.yml'}",
                            f"--storage.tsdb.path={workdir / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{port}"]),
        env=c.env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )  # fmt: skip
    log.close()
    return f"http://127.0.0.1:{port}"


# Polls the head's Prometheus from inside the head's namespace until every query in
# argv[3] (JSON {name: promql}) has a non-empty result, or the deadline; prints the results.
PROM_POLL = textwrap.dedent(
    """
    import json, sys, time, urllib.parse, urllib.request
    url, timeout_s, queries = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    deadline = time.monotonic() + timeout_s
    while True:
        out = {}
        for name, promql in queries.items():
            q = urllib.parse.urlencode({"query": promql})
            try:
                with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:
                    out[name] = json.load(r)["data"]["result"]
            except OSError as exc:
                out[name] = f"error: {exc}"
        done = all(isinstance(v, list) and v for v in out.values())
        if done or time.monotonic() > deadline:
            print(json.dumps(out))
            break
        time.sleep(0.5)
    """
)


@pytest.fixture(scope="module")
def tiny_split_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The hand-made three-site scenario (conftest) as a full scenario directory, and each
    site's city (Sydney, Melbourne, Perth)."""
    from conftest import make_scenario

    from thermoroute.common.scenario_writing import write_scenario

    scenario = make_scenario()
    full = write_scenario(scenario, tmp_path_factory.mktemp("full") / "tiny")
    return full, dict(zip(scenario.sites.site_id, map(city_of, scenario.sites.name), strict=True))


# The driver, run on the head: a distributed method (ADMM, or the interior point) through the
# product's composition root, then where Ray placed every actor (the GCS keeps dead actors'
# records, node included).
DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import ray
    from ray.util.state import list_actors
    from thermoroute.coordinator.events import NullObserver
    from thermoroute.coordinator.metrics import CoordinatorMetrics, MetricsEndpoint
    from thermoroute.options import RunOptions
    from thermoroute.launch import solve_distributed

    split, address, out = sys.argv[1], sys.argv[2], sys.argv[3]
    metrics_addr, metrics_port, method = sys.argv[4], int(sys.argv[5]), sys.argv[6]
    outputs = sys.argv[7]

    class Pace(NullObserver):
        # 0.1 s per iteration (a fan-out over slow WAN links), so that Prometheus scrapes
        # the coordinator several times while the short run goes. Defined in __main__, so
        # Ray pickles it by value into the coordinator actor.
        def on_iteration(self, record):
            time.sleep(0.1)

    observers = [CoordinatorMetrics(endpoint=MetricsEndpoint(metrics_port, metrics_addr)), Pace()]
    run = solve_distributed(split, executor="ray", address=address, observers=observers,
                            settings=RunOptions(method=method).method_settings())
    run.outputs.write(outputs, solver=method)
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    actors = [
        {"class_name": a.class_name, "node_ip": nodes.get(a.node_id), "node_id": a.node_id,
         "resources": dict(a.required_resources or {})}
        for a in list_actors(address=address, detail=True, limit=10000,
                             raise_on_missing_output=False)
        if a.class_name in ("SiteGroup", "Coordinator")
    ]
    result = {"converged": run.converged, "iterations": run.iterations,
              "objective_aud": run.objective_aud, "groups": [list(g) for g in run.groups],
              "method": run.outcome.method,
              "actors": actors, "driver_node": ray.get_runtime_context().get_node_id()}
    with open(out, "w") as handle:
        json.dump(result, handle)
    """
)


def _drive(c: Cluster, method: str, metrics_port: int) -> dict:
    driver = c.root / "out" / "driver.py"
    driver.write_text(DRIVER)
    result = c.root / "out" / f"result-{method}.json"
    outputs = c.root / "out" / f"run-{method}"
    c.sh(
        c.head,
        f"thermoroute_ray_env && python3 {driver} {c.split} {c.head.ip}:{GCS_PORT} {result} "
        f"{c.head.ip} {metrics_port} {method} {outputs}",
        timeout=600,
    )
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def distributed(cluster: Cluster) -> dict:
    """The ADMM run on the emulated cluster (driver on the head)."""
    return _drive(cluster, "admm", COORDINATOR_METRICS_PORT)


@pytest.fixture(scope="module")
def distributed_ipm(cluster: Cluster, distributed: dict) -> dict:
    """The interior-point run on the same cluster, after the ADMM run."""
    return _drive(cluster, "ipm", COORDINATOR_METRICS_PORT + 1)


def test_every_site_agent_runs_on_its_own_host(cluster: Cluster, distributed: dict) -> None:
    assert distributed["converged"], distributed
    site_agents = [a for a in distributed["actors"] if a["class_name"] == "SiteGroup"]
    placed: dict[str, str] = {}
    for actor in site_agents:
        pins = [k.split(":", 1)[1] for k in actor["resources"] if k.startswith("site:")]
        assert len(pins) == 1, f"a site agent not pinned to exactly one site: {actor}"
        placed[pins[0]] = actor["node_ip"]
    assert placed == {sid: host.ip for sid, host in cluster.sites.items()}
    assert sorted(tuple(g) for g in distributed["groups"]) == sorted(
        (sid,) for sid in cluster.sites
    )
    coordinators = [a for a in distributed["actors"] if a["class_name"] == "Coordinator"]
    assert [a["node_ip"] for a in coordinators] == [cluster.head.ip], (
        "the coordinator must run on the head (where thermoroute run was started)"
    )


def test_objective_equals_the_local_run(cluster: Cluster, distributed: dict) -> None:
    from thermoroute.coordinator.admm import AdmmSettings
    from thermoroute.launch import solve_distributed

    local = solve_distributed(cluster.full, executor="inline", settings=AdmmSettings())
    assert local.converged
    assert distributed["objective_aud"] == pytest.approx(local.objective_aud, rel=REL_TOL)


def test_interior_point_runs_across_hosts(cluster: Cluster, distributed_ipm: dict) -> None:
    """The interior point with secure aggregation between the site hosts: every agent on its
    own host, the same answer as the same method in one process."""
    from thermoroute.coordinator.ipm import IpmSettings
    from thermoroute.launch import solve_distributed

    assert distributed_ipm["converged"] and distributed_ipm["method"] == "ipm"
    placed = {
        k.split(":", 1)[1]: a["node_ip"]
        for a in distributed_ipm["actors"]
        if a["class_name"] == "SiteGroup"
        for k in a["resources"]
        if k.startswith("site:")
    }
    assert placed == {sid: host.ip for sid, host in cluster.sites.items()}
    local = solve_distributed(cluster.full, executor="inline", settings=IpmSettings())
    assert distributed_ipm["iterations"] == local.iterations
    assert distributed_ipm["objective_aud"] == pytest.approx(local.objective_aud, rel=1e-9)


def test_head_holds_no_site_private_file(cluster: Cluster, distributed: dict) -> None:
    del distributed  # after the run: nothing was copied to the head by it either
    probe = textwrap.dedent(
        f"""
        import json, os
        files = []
        for base, _, names in os.walk({str(cluster.root)!r}):
            files += [os.path.join(base, n) for n in names]
        print(json.dumps(files))
        """
    )
    seen = json.loads(cluster.sh(cluster.head, f"python3 -c {_quote(probe)}"))
    private = [f for f in seen if Path(f).name in SITE_PRIVATE_FILES]
    assert private == [], f"site-private files visible on the head: {private}"
    coordinator = sorted(
        Path(f).name for f in seen if Path(f).parent == cluster.split / "coordinator"
    )
    assert coordinator == sorted(COORDINATOR_FILES)
    assert not any(Path(f).is_relative_to(cluster.split / "sites") for f in seen)


def test_each_site_host_sees_only_its_own_data(cluster: Cluster) -> None:
    for sid, host in cluster.sites.items():
        listing = cluster.sh(host, f"ls -1 {cluster.split}/sites && ls -1 {cluster.split}")
        assert listing.split() == [sid, "sites"], f"{sid}: {listing!r}"


def test_prometheus_scrapes_ray_nodes_and_the_coordinator(
    cluster: Cluster, distributed: dict
) -> None:
    """deploy/prometheus.yml's jobs, on the head: every Ray node found through the discovery
    file Ray writes, and the coordinator's residuals scraped from the head during the run."""
    if not cluster.prometheus:
        pytest.skip("the prometheus server is not installed (apt-get install prometheus)")
    assert distributed["converged"]
    job = '{job="thermoroute-coordinator"}'
    queries = {
        "ray_up": 'up{job="ray"} == 1',
        "primal": f"count_over_time(thermoroute_admm_primal_residual{job}[10m])",
        "iteration": f"max_over_time(thermoroute_admm_iteration{job}[10m])",
    }
    script = cluster.root / "out" / "prom_poll.py"
    script.write_text(PROM_POLL)
    found = json.loads(
        cluster.sh(
            cluster.head,
            f"python3 {script} {cluster.prometheus} 90 {_quote(json.dumps(queries))}",
            timeout=150,
        )
    )
    up_hosts = {r["metric"]["instance"].split(":")[0] for r in found["ray_up"]}
    assert up_hosts == {cluster.head.ip, *(h.ip for h in cluster.sites.values())}, found
    assert found["primal"] and float(found["primal"][0]["value"][1]) >= 2, found
    instance = found["primal"][0]["metric"]["instance"]
    assert instance == f"{cluster.head.ip}:{COORDINATOR_METRICS_PORT}"
    assert float(found["iteration"][0]["value"][1]) > 0


def test_each_site_writes_its_detail_on_its_own_host(cluster: Cluster, distributed: dict) -> None:
    """The coordinator's outputs hold the decision and fleet sums; each site's own output
    directory (on its host, THERMOROUTE_SITE_OUTPUT) holds its physics and totals."""
    del distributed
    run = cluster.root / "out" / "run-admm"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["site_details"] == "private" and "sites" not in summary
    assert not (run / "site_steps.csv").exists()
    for sid, host in cluster.sites.items():
        own = site_output(cluster.root, host) / sid
        doc = json.loads((own / "summary.json").read_text())
        assert doc["site_id"] == sid and doc["run_id"]
        assert (own / "site_steps.csv").read_text().count(f",{sid},") == 4  # four steps
        # Nobody else sees it: not the head, not another site.
        for other in [cluster.head, *(h for h in cluster.sites.values() if h is not host)]:
            seen = cluster.sh(other, f"ls -A {site_output(cluster.root, host)} || true")
            assert seen.split() == [], f"{other.name} sees {sid}'s output: {seen!r}"


def _refused(cluster: Cluster, **env: str) -> str:
    """Run the guide's solve from the head with ``env``; the one line it ends with."""
    import time

    t0 = time.monotonic()
    proc = cluster.sh_status(
        cluster.head,
        f"thermoroute_solve {cluster.head.ip} {cluster.split} --quiet "
        f"--out {cluster.root / 'out' / 'refused'}",
        timeout=120, **env,
    )  # fmt: skip
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert time.monotonic() - t0 < 60
    assert not (cluster.root / "out" / "refused").exists()
    return lines[0]


def test_a_driver_without_the_token_or_certificate_is_refused_in_one_line(
    cluster: Cluster, distributed: dict
) -> None:
    del distributed  # the cluster is up and serves runs
    missing = str(cluster.root / "secrets" / "no_such_token")
    assert "requires a token and this driver has none" in _refused(
        cluster, THERMOROUTE_TOKEN_FILE=missing
    )
    wrong = cluster.root / "secrets" / "wrong_token"
    subprocess.run(["thermoroute", "token", "generate", str(wrong)], check=True,
                   capture_output=True, env=cluster.env, timeout=60)  # fmt: skip
    assert "refused the token" in _refused(cluster, THERMOROUTE_TOKEN_FILE=str(wrong))
    assert "requires TLS" in _refused(cluster, THERMOROUTE_TLS_DIR="")


def test_a_node_with_another_cas_certificate_cannot_join(cluster: Cluster) -> None:
    rogue = cluster.net.add_host("rogue", HEAD_CITY)
    rogue_ca, rogue_tls = cluster.root / "rogueca", cluster.root / "tls" / "rogue"
    subprocess.run(
        ["bash", "-c", f". {COMMANDS} && thermoroute_tls_ca {rogue_ca} && "
         f"thermoroute_tls_node {rogue_ca} {rogue_tls} {rogue.ip}"],
        env=cluster.env, check=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    _ray_temp(cluster.root, rogue).mkdir(parents=True)
    rogue.hidden = [cluster.root / "store", cluster.root / "ca"]
    proc = cluster.sh_status(
        rogue,
        f"thermoroute_ray_env && timeout 20 ray start --address {cluster.head.ip}:{GCS_PORT} "
        "--num-cpus 1 "
        f"--temp-dir {_ray_temp(cluster.root, rogue)} --disable-usage-stats "
        "--resources '{\"site:rogue\": 1}'",
        timeout=60, THERMOROUTE_TLS_DIR=str(rogue_tls),
    )  # fmt: skip
    assert proc.returncode != 0
    joined = cluster.sh(cluster.head, f"thermoroute_wait_for_sites {cluster.head.ip} 3 30")
    assert "site:rogue" not in joined


# Fetches URL from argv[1] with the bearer token argv[2] ("-" for none) until a plan of
# cycle >= argv[3] arrives or 120 s pass; prints {"code", "body"} of the last answer.
FETCH_PLAN = textwrap.dedent(
    """
    import json, sys, time, urllib.error, urllib.request
    url, token, cycle = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deadline = time.monotonic() + 120
    while True:
        request = urllib.request.Request(url)
        if token != "-":
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                code, body = answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            code, body = error.code, error.read().decode()
        except OSError as error:
            code, body = 0, str(error)
        done = code == 200 and json.loads(body).get("plan_cycle", -1) >= cycle
        if done or code == 401 or time.monotonic() > deadline:
            print(json.dumps({"code": code, "body": body}))
            break
        time.sleep(0.5)
    """
)


def test_serve_publishes_the_plan_to_other_hosts(cluster: Cluster, distributed: dict) -> None:
    """The guide's thermoroute_serve on the head: a load balancer on another host fetches
    the plan with the bearer token (and is refused without it), while the service re-plans
    with the agents on their own hosts."""
    c = cluster
    token_file = plan_token_file(c.root)
    log = (c.root / "out" / "serve.log").open("w")
    serve = subprocess.Popen(
        c.net.argv(c.head, ["bash", "-c", f". {COMMANDS} && thermoroute_serve {c.head.ip} "
                                          f"{c.split} --step-seconds 5 --cycles 3 --horizon 2"]),
        env=c.host_env(c.head, THERMOROUTE_PLAN_TOKEN_FILE=str(token_file)),
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        script = c.root / "out" / "fetch_plan.py"
        script.write_text(FETCH_PLAN)
        balancer = next(iter(c.sites.values()))  # another host of the network
        url = f"http://{c.head.ip}:{PLAN_PORT}/plan"

        def fetch(token: str, cycle: int) -> dict:
            proc = c.net.run(
                balancer, [sys.executable, str(script), url, token, str(cycle)], timeout=180,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            return json.loads(proc.stdout)

        token = token_file.read_text().strip()
        # The tiny fleet's 4 hours: 3 cycles of 2-hour horizons; the first plan will do (a
        # later cycle may keep it, on a loaded machine, and that is what it serves then).
        answer = fetch(token, 0)
        assert answer["code"] == 200, (answer, (c.root / "out" / "serve.log").read_text()[-3000:])
        plan = json.loads(answer["body"])
        assert plan["plan_cycle"] >= 0 and not plan["stale"]
        assert {r["region_id"] for r in plan["routes"]} == {"syd", "mel"}
        for route in plan["routes"]:
            assert sum(s["share"] for s in route["sites"]) == pytest.approx(1.0, abs=1e-9)
        assert fetch("-", 0)["code"] == 401
        assert fetch("x" * 64, 0)["code"] == 401
        assert serve.wait(timeout=180) == 0, (c.root / "out" / "serve.log").read_text()[-3000:]
    finally:
        if serve.poll() is None:
            serve.terminate()
            serve.wait(timeout=60)
        log.close()


# A warm cycle's wall against the latency its rounds must pay: never less than one round trip
# to the slowest site per round (the delays are real), at most this factor above it. Measured
# here: 4.6-5.6 (a round through the Ray fleet costs several round trips — an empty actor
# call across the WAN takes 1.07 RTT, a 200 kB argument from the head's object store 4 RTT:
# the object's pull protocol and TCP's slow start — plus the computation on a busy machine).
WAN_WALL_FACTOR_MAX = 10.0


def test_a_warm_cycle_pays_a_round_trip_per_round(cluster: Cluster) -> None:
    """The service's planning cycles (bench/wan_bench.py's, as ``thermoroute serve`` runs
    them) from the head in Sydney, the sites in Sydney, Melbourne and Perth: each warm
    cycle's wall lies between rounds × the slowest site's RTT and a stated factor of it (one
    cold cycle, then one warm: the test's whole cost is about 35 s)."""
    c = cluster
    assert c.net.wan is not None
    out = c.root / "out" / "wan-cycles.json"
    c.net.wan.set_delays(True)
    try:
        c.sh(c.head, f"thermoroute_ray_env && python3 -m bench.wan_bench cycles {c.split} "
                     f"{c.head.ip}:{GCS_PORT} ipm 2 60 {out} --horizon 2", timeout=400)  # fmt: skip
    finally:
        c.net.wan.set_delays(False)
    rows = json.loads(out.read_text())
    max_rtt_s = max(rtt_ms(HEAD_CITY, h.city or HEAD_CITY) for h in c.sites.values()) / 1e3
    assert max_rtt_s == pytest.approx(0.0514)  # Sydney–Perth
    assert len(rows) == 2
    for row in rows[1:]:
        assert row["converged"] and row["rounds"] >= row["iterations"] > 0, row
        latency_s = row["rounds"] * max_rtt_s
        assert latency_s <= row["wall_s"] <= WAN_WALL_FACTOR_MAX * latency_s, (
            f"a warm cycle of {row['rounds']} rounds took {row['wall_s']:.2f} s; its round "
            f"trips alone {latency_s:.2f} s", rows,
        )  # fmt: skip


def test_a_rotated_token_locks_the_old_one_out(cluster: Cluster, distributed: dict) -> None:
    """The guide's rotation: a new token, copied to every node, every node restarted; a
    driver with the old token is then refused, the new one admitted. (Last: it restarts
    the cluster.)"""
    del distributed
    token = Path(cluster.env["THERMOROUTE_TOKEN_FILE"])
    old = cluster.root / "secrets" / "old_token"
    shutil.copy(token, old)
    cluster.sh(cluster.head, f"thermoroute_token_generate {token}")
    assert token.read_text() != old.read_text() and token.stat().st_mode & 0o077 == 0
    from netns import kill_netns_processes

    # `ray stop` on each VM, all at once (Ray's runtime-env agents ignore the SIGTERM: they
    # are killed after two seconds, as `ray stop --force` would)
    hosts = [*cluster.sites.values(), cluster.head]
    kill_netns_processes(*(host.netns for host in hosts), grace_s=2.0)
    extra = f"--object-store-memory {OBJECT_STORE_BYTES}"
    cluster.sh(cluster.head, f"thermoroute_head_start {cluster.head.ip} "
               f"--temp-dir {_ray_temp(cluster.root, cluster.head)} {extra}")  # fmt: skip
    start_sites(cluster, lambda host: f"--temp-dir {_ray_temp(cluster.root, host)} {extra}")
    joined = cluster.sh(cluster.head, f"thermoroute_wait_for_sites {cluster.head.ip} 3 120")
    assert sorted(joined.split()) == sorted(f"site:{s}" for s in cluster.sites)
    assert "refused the token" in _refused(cluster, THERMOROUTE_TOKEN_FILE=str(old))


def test_guide_shows_the_tested_commands() -> None:
    """The guide's code blocks call the functions this test runs, with the same arguments."""
    text = GUIDE.read_text(encoding="utf-8")
    for call in (
        ". deploy/commands.sh",
        "thermoroute_token_generate",
        "thermoroute_tls_ca",
        "thermoroute_tls_node",
        "THERMOROUTE_TLS_DIR",
        "thermoroute_head_start",
        "thermoroute_site_start",
        "thermoroute_wait_for_sites",
        "thermoroute_split",
        "thermoroute_solve",
        "thermoroute_admm",
        "thermoroute_serve",
    ):
        assert call in text, f"GUIDE.md does not show {call!r}"
    functions = subprocess.run(
        ["bash", "-c", f". {COMMANDS} && declare -F"], capture_output=True, text=True,
        check=True, timeout=30,
    ).stdout  # fmt: skip
    for name in (
        "thermoroute_head_start", "thermoroute_site_start", "thermoroute_solve", "thermoroute_admm",
        "thermoroute_serve",
    ):  # fmt: skip
        assert f"declare -f {name}" in functions


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
