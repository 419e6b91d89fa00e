"""``thermoroute fleet``: a local Ray and one scenario's site agents kept up for the runs that
join it (issue 22: a run's start-up without Ray's and nine workers' start). A real fleet
process on its own local Ray, real ``thermoroute run --address`` processes against it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from thermoroute.cluster import AgentSetup, create_inline_groups
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenarios import embedded_path
from thermoroute.coordinator.actor import Coordinator
from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.coordinator.fleet import InlineFleet
from thermoroute.launch import solve_distributed
from thermoroute.local_fleet import Lease, fleet_key

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]
GROUPS = [("syd",), ("mel",)]
#: The tiny scenario's sites (tests/conftest.py).
TINY = ("syd", "mel", "per")


def test_a_lease_is_held_renewed_released_and_lapses() -> None:
    now = [0.0]
    lease = Lease(clock=lambda: now[0])
    assert lease.acquire("a", 30.0)
    assert not lease.acquire("b", 30.0)  # held
    now[0] = 20.0
    assert lease.renew("a", 30.0)  # now until 50
    now[0] = 45.0
    assert not lease.acquire("b", 30.0)
    now[0] = 51.0
    assert lease.acquire("b", 30.0)  # a's lapsed: its driver stopped renewing
    assert not lease.renew("a", 30.0)
    lease.release("a")  # not a's to release
    assert not lease.acquire("c", 30.0)
    lease.release("b")
    assert lease.acquire("c", 30.0)


def test_the_key_follows_the_files_the_groups_and_the_setup(tmp_path: Path) -> None:
    source = tmp_path / "fleet"
    shutil.copytree(embedded_path("australia"), source)
    key = fleet_key(source, GROUPS, AgentSetup())
    assert fleet_key(source, GROUPS, AgentSetup()) == key
    assert fleet_key(source, GROUPS[:1], AgentSetup()) != key
    assert fleet_key(source, GROUPS, AgentSetup(threads=2)) != key
    sites = source / "sites.csv"
    sites.write_text(sites.read_text() + "\n")  # an edited file
    assert fleet_key(source, GROUPS, AgentSetup()) != key


@dataclass(frozen=True)
class Fleet:
    address: str
    process: subprocess.Popen[str]
    scratch: Path


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """``thermoroute fleet australia`` under a private TMPDIR (its Ray's session is there);
    stopped by SIGTERM at the end, which must leave nothing behind."""
    scratch = Path(tempfile.mkdtemp(prefix="trf-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    process = subprocess.Popen(
        [*CLI, "fleet", "australia"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the agents hold their data
        if "is up at" not in line:
            process.kill()
            pytest.fail(f"the fleet did not come up: {line!r} {process.communicate()[1]}")
        address = line.split("is up at ")[1].split(": ")[0]  # host:port, then the hint
        yield Fleet(address, process, scratch)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1:] == ["terminated"], err
    left = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*") if not p.is_dir())
    assert left == [], left  # the Ray it started stopped with it, its session removed
    shutil.rmtree(scratch)


def _run(
    fleet: Fleet, out: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", "australia", "--address", fleet.address, "--no-compare", "--json",
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600, cwd=out.parent,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )  # fmt: skip


def test_runs_on_the_fleet_use_its_agents_and_reach_the_run_s_own_optimum(
    fleet: Fleet, tmp_path: Path
) -> None:
    own = solve_distributed("australia", executor="inline")
    for k in range(2):  # the same agents, run after run
        done = _run(fleet, tmp_path / f"on-fleet-{k}")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["kept_agents"] is True
        assert summary["objective_aud"] == pytest.approx(own.objective_aud, rel=1e-9)
        assert done.stderr.strip() == "", done.stderr  # no Ray chatter on joining


def test_a_run_with_other_settings_starts_its_own_agents(fleet: Fleet, tmp_path: Path) -> None:
    done = _run(fleet, tmp_path / "twelve", "--steps", "12")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert "kept_agents" not in summary
    assert summary["solver_stats"]["converged"] is True


def test_a_leased_fleet_refuses_a_second_run_in_one_line(fleet: Fleet, tmp_path: Path) -> None:
    """Another run holds the lease (a driver joined the fleet's cluster and took it): a run
    fails in one line and writes nothing; once released, runs go on."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, fleet.address], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        done = _run(fleet, tmp_path / "refused")
        assert done.returncode == 4, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another run" in lines[0], done.stderr
        assert not (tmp_path / "refused").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=120)
    done = _run(fleet, tmp_path / "after")
    assert done.returncode == 0 and json.loads(done.stdout)["kept_agents"], done.stderr


# Joins the fleet's cluster, takes its lease as another run would, says "held", and
# releases it when stdin closes.
HOLD = """
import sys
from pathlib import Path
from thermoroute import api
from thermoroute.cli import resolve_scenario
from thermoroute.cluster import discover, ensure_ray, plan_groups
from thermoroute.local_fleet import find_fleet
from thermoroute.options import RunOptions
options = RunOptions(address=sys.argv[1])
directory, scen = api.resolve_source(resolve_scenario("australia"), options, start=None)
spec = options.launch_spec(scen)
ensure_ray(sys.argv[1])
kept = find_fleet(Path(directory), plan_groups(discover(directory)[1], 1), spec.agent_setup)
with kept.leased():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_driver_without_the_token_is_refused_in_one_line(fleet: Fleet, tmp_path: Path) -> None:
    done = _run(fleet, tmp_path / "stranger", env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr


def _admm(groups: list, scenario: Scenario) -> list[tuple[float, float]]:
    """60 ADMM iterations on ``groups`` in this process; each iteration's residuals."""
    coordinator = Coordinator(DemandView.of(scenario), AdmmSettings(max_iter=60))
    coordinator.attach(InlineFleet(groups, [list(g.site_ids) for g in groups]))
    coordinator.register()
    result = coordinator.run().result
    return [(h.residuals.primal, h.residuals.dual) for h in result.history]


def test_agents_started_afresh_run_as_new_ones(
    tiny_scenario: Scenario, tiny_scenario_dir: Path
) -> None:
    """What a fleet does to its agents when a run leases them (``start_afresh``): the next
    run is the one new agents would run, iteration for iteration — and without it, ADMM's
    kept subproblems (OSQP warm start, penalty updated in place) make a different one."""

    def agents() -> list:
        return create_inline_groups(tiny_scenario_dir, [(s,) for s in TINY], AgentSetup())

    new = _admm(agents(), tiny_scenario)
    kept = agents()
    _admm(kept, tiny_scenario)
    for group in kept:
        group.start_afresh()
    assert _admm(kept, tiny_scenario) == new
    stale = agents()
    _admm(stale, tiny_scenario)
    assert _admm(stale, tiny_scenario) != new
