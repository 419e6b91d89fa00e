"""Shared fixtures: small scenarios built by hand, synthetic fleets and embedded scenarios.

Hand-made scenarios are built directly from the :mod:`thermoroute.common.scenario` dataclasses so
that tests can be checked with pencil and paper; :func:`make_scenario` takes keyword overrides of
any table so a test can state exactly what it changes. A missing embedded scenario fails
the test that asks for it: it is part of the product.

One local Ray cluster serves every test of the session that runs Ray in this process
(:func:`ray_cluster`); a test that needs a cluster of its own starts it in another process
and says why.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import chdir
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thermoroute.common.physics.cooling import DEFAULT_PPUE_A, DEFAULT_PPUE_B, DEFAULT_PPUE_C
from thermoroute.common.scenario import Classes, Objective, Regions, Scenario, Sites, step_times

AEST = timezone(timedelta(hours=10))
START = datetime(2023, 1, 16, 0, 0, tzinfo=AEST)


def make_scenario(**overrides: Any) -> Scenario:
    """A three-site, two-region, three-class, four-step scenario with realistic magnitudes.

    Sites ``syd`` (H100, economiser), ``mel`` (H100, cooling tower) and ``per`` (A100, dry
    coolers); regions ``syd`` and ``mel``; classes ``chat`` (70B, 400 ms SLO), ``code``
    (8B, 250 ms SLO) and ``batch`` (deferrable). Forbidden pairs by construction:
    ``per`` cannot serve ``code`` at all (45 + 160 + 50 > 250 ms) nor ``chat`` from ``syd``
    (52 + 300 + 50 > 400 ms). Peak load is about 61 of the fleet's 72 busy GPUs.

    Parameters
    ----------
    **overrides
        Any :class:`Scenario` field (``sites=…``, ``demand_rps=…``, ``objective=…``); or the
        convenience keys ``steps`` (truncate to the first ``steps`` steps).
    """
    steps = overrides.pop("steps", 4)
    sites = Sites(
        site_id=("syd", "mel", "per"),
        name=("Sydney", "Melbourne", "Perth"),
        lat=np.array([-33.87, -37.81, -31.95]),
        lon=np.array([151.21, 144.96, 115.86]),
        grid_region=("NSW1", "VIC1", "WEM"),
        gpus=np.array([40.0, 30.0, 20.0]),
        idle_w=np.array([150.0, 150.0, 120.0]),
        u_max=np.array([0.8, 0.8, 0.8]),
        max_wait_ms=np.array([50.0, 50.0, 50.0]),
        ref_gpu_s=np.array([0.8, 0.8, 1.2]),
        ppue_a=np.full(3, DEFAULT_PPUE_A),
        ppue_b=np.full(3, DEFAULT_PPUE_B),
        ppue_c=np.full(3, DEFAULT_PPUE_C),
        wue_model=("economizer", "tower", "dry"),
        wue_p1=np.array([18.0, 6.0, 0.0]),
        wue_p2=np.array([0.05, 0.0, 0.0]),
    )
    regions = Regions(
        region_id=("syd", "mel"),
        name=("Sydney", "Melbourne"),
        lat=np.array([-33.87, -37.81]),
        lon=np.array([151.21, 144.96]),
        population=np.array([5.3e6, 5.1e6]),
    )
    classes = Classes(
        class_id=("chat", "code", "batch"),
        model=("llama-2-70b", "llama-3.1-8b", "llama-2-70b"),
        prompt_tokens=np.array([1155.0, 2048.0, 1155.0]),
        output_tokens=np.array([211.0, 28.0, 211.0]),
        ttft_slo_ms=np.array([400.0, 250.0, np.inf]),
        deferrable=np.array([False, False, True]),
    )
    # (S, C): per request GPU-seconds, incremental energy [J] and prefill [ms].
    gpu_s = np.array([[1.5, 0.2, 1.0], [1.5, 0.2, 1.0], [2.4, 0.35, 1.6]])
    energy_j = np.array([[500.0, 80.0, 300.0], [500.0, 80.0, 300.0], [620.0, 110.0, 380.0]])
    prefill_ms = np.array([[190.0, 70.0, 190.0], [190.0, 70.0, 190.0], [300.0, 160.0, 300.0]])
    rtt_ms = np.array([[2.0, 14.0], [14.0, 2.0], [52.0, 45.0]])
    series = {
        "dry_bulb_c": [[22.0, 25.0, 30.0, 27.0], [15.0, 18.0, 33.0, 20.0], [28, 35, 38, 30]],
        "wet_bulb_c": [[18.0, 20.0, 22.0, 21.0], [11.0, 13.0, 19.0, 14.0], [16, 19, 20, 17]],
        "price_aud_per_mwh": [[80.0, 120.0, 300.0, 90.0], [60, 100, -20, 70], [110.0] * 4],
        "carbon_kg_per_kwh": [[0.66, 0.64, 0.6, 0.65], [0.77, 0.75, 0.7, 0.76], [0.51] * 4],
        "ewif_l_per_kwh": [[1.9, 1.8, 1.7, 1.9], [2.2, 2.1, 2.0, 2.2], [1.2] * 4],
    }
    demand = np.zeros((2, 3, 4))
    demand[:, 0] = [[10.0, 14.0, 18.0, 12.0], [8.0, 10.0, 13.0, 9.0]]  # chat [req/s]
    demand[:, 1] = [[20.0, 30.0, 25.0, 15.0], [10.0, 18.0, 12.0, 8.0]]  # code [req/s]
    batch = np.array([[0.0, 0.0, 36_000.0], [0.0, 0.0, 20_000.0]])  # [requests]
    scenario = Scenario(
        name="tiny",
        start=START,
        step_hours=1.0,
        objective=Objective(
            carbon_aud_per_kg=0.035, water_aud_per_l=0.003, latency_aud_per_req_s=1e-4
        ),
        sites=sites,
        regions=regions,
        classes=classes,
        gpu_s=gpu_s,
        energy_j=energy_j,
        prefill_ms=prefill_ms,
        rtt_ms=rtt_ms,
        times=step_times(START, 1.0, 4),
        demand_rps=demand,
        batch_requests=batch,
        **{k: np.array(v, dtype=float) for k, v in series.items()},
    )
    if overrides:
        scenario = replace(scenario, **overrides)
    if steps != 4:
        # Batch volume scales with the horizon so the fleet stays equally busy.
        scenario = replace(
            scenario.window(0, steps), batch_requests=scenario.batch_requests * steps / 4
        )
    return scenario


def two_site_scenario(demand_rps: float = 10.0, **objective: float) -> Scenario:
    """Two sites, one region, one interactive class, one step: optimum derivable by hand.

    Site ``a``: pPUE 1.0 (``ppue_a = 1``), price 100 AUD/MWh, 20 GPUs. Site ``b``: pPUE 1.5,
    price 50 AUD/MWh, 10 GPUs. Both: ``u_max`` 0.8, ``gpu_s`` 1, ``energy_j`` 300 J,
    ``idle_w`` 100 W, RTT 5 ms, prefill 100 ms, no congestion (``max_wait_ms`` 0), dry
    cooling (no on-site water), no off-site water, carbon 0. Objective weights default to 0.
    """
    one = np.ones(1)
    start = START
    objective_weights = {
        "carbon_aud_per_kg": 0.0,
        "water_aud_per_l": 0.0,
        "latency_aud_per_req_s": 0.0,
        **objective,
    }
    return Scenario(
        name="two-site",
        start=start,
        step_hours=1.0,
        objective=Objective(**objective_weights),
        sites=Sites(
            site_id=("a", "b"),
            name=("A", "B"),
            lat=np.array([-33.0, -34.0]),
            lon=np.array([151.0, 150.0]),
            grid_region=("X", "Y"),
            gpus=np.array([20.0, 10.0]),
            idle_w=np.array([100.0, 100.0]),
            u_max=np.array([0.8, 0.8]),
            max_wait_ms=np.zeros(2),
            ref_gpu_s=np.ones(2),
            ppue_a=np.array([1.0, 1.5]),
            ppue_b=np.zeros(2),
            ppue_c=np.zeros(2),
            wue_model=("dry", "dry"),
            wue_p1=np.zeros(2),
            wue_p2=np.zeros(2),
        ),
        regions=Regions(("r",), ("R",), np.array([-33.5]), np.array([150.5]), one * 1e6),
        classes=Classes(("chat",), ("llama-2-70b",), one * 1000, one * 200, one * 400, one < 0),
        gpu_s=np.ones((2, 1)),
        energy_j=np.full((2, 1), 300.0),
        prefill_ms=np.full((2, 1), 100.0),
        rtt_ms=np.full((2, 1), 5.0),
        times=step_times(start, 1.0, 1),
        dry_bulb_c=np.full((2, 1), 20.0),
        wet_bulb_c=np.full((2, 1), 15.0),
        price_aud_per_mwh=np.array([[100.0], [50.0]]),
        carbon_kg_per_kwh=np.zeros((2, 1)),
        ewif_l_per_kwh=np.zeros((2, 1)),
        demand_rps=np.full((1, 1, 1), demand_rps),
        batch_requests=np.zeros((1, 1)),
    )


@pytest.fixture(scope="session")
def scenario_builder() -> Callable[..., Scenario]:
    """:func:`make_scenario`, for tests that need a variant of the tiny scenario."""
    return make_scenario


@pytest.fixture
def tiny_scenario() -> Scenario:
    """The hand-made three-site scenario of :func:`make_scenario`."""
    return make_scenario()


@pytest.fixture(scope="session")
def two_site() -> Callable[..., Scenario]:
    """:func:`two_site_scenario`, the hand-checkable two-site case."""
    return two_site_scenario


@pytest.fixture
def tiny_scenario_dir(tmp_path: Path, tiny_scenario: Scenario) -> Path:
    """The tiny scenario written as an input-format-v1 directory."""
    from thermoroute.common.scenario_writing import write_scenario

    return write_scenario(tiny_scenario, tmp_path / "tiny")


@pytest.fixture(scope="session")
def synth_scenario() -> Scenario:
    """A small synthetic fleet (5 sites, 4 regions, seed 7)."""
    from thermoroute.common import synth

    return synth.synthesize(sites=5, regions=4, seed=7)


def embedded_scenario(name: str) -> Scenario:
    """Load an embedded scenario (a missing one fails the test: it is part of the product)."""
    from thermoroute.common import scenarios
    from thermoroute.common.scenario_loading import load_scenario

    return load_scenario(scenarios.embedded_path(name))


@pytest.fixture(scope="session")
def australia() -> Scenario:
    """The embedded ``australia`` scenario (8 sites, 24 steps)."""
    return embedded_scenario("australia")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """The session's local Ray cluster (2 CPUs, no dashboard), started on first use.

    One start for the session instead of one per module: each start and shutdown costs
    10-15 s on the 2-core machine. Product code joins it (``ensure_ray`` joins a Ray that
    is already up and then leaves it running).
    """
    import shutil

    import ray
    from ray._private import worker  # the session's path has no public accessor

    from thermoroute.cluster import INLINE_ANSWER_BYTES

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        # As a product run's local Ray (thermoroute.cluster.ensure_ray).
        _system_config={"max_direct_call_object_size": INLINE_ANSWER_BYTES},
    )
    session = worker._global_node.get_session_dir_path()
    try:
        yield ray
    finally:
        ray.shutdown()
        # Like a product run's local Ray, the session's leaves no session directory behind.
        shutil.rmtree(session, ignore_errors=True)


#: How long a test's actors may take to end once their last handle is gone (Ray ends an
#: actor asynchronously, and slowly when the machine is loaded).
ACTOR_EXIT_S = 30.0


@pytest.fixture
def ray_cluster(ray_session: Any) -> Iterator[Any]:
    """The session's Ray cluster, for one test; the ``ray`` module.

    The modules of tests/ (which Ray's workers cannot import) are pickled by value, so the
    test-only classes they define reach the actors. A test must leave no actor alive: the
    next test shares the cluster, and a stray actor holds a process and may still answer
    (an agent, a coordinator). Actors the test started that outlive it are killed and the
    test fails in its teardown, naming them.
    """
    import gc
    import time

    from ray import ActorID, cloudpickle

    # Ray's own actor table: its public state API needs the dashboard, which this cluster
    # runs without.
    from ray._private import state

    here = Path(__file__).resolve().parent
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if origin is not None and Path(origin).resolve().parent == here:
            cloudpickle.register_pickle_by_value(module)

    def alive() -> dict[str, str]:
        return {
            actor_id: info["ActorClassName"]
            for actor_id, info in state.actors().items()
            if info["State"] != "DEAD"
        }

    before = set(alive())
    yield ray_session
    # Actors whose handles the test dropped end once the handles are collected (a failed
    # run's handles live on in its traceback until then).
    gc.collect()
    deadline = time.monotonic() + ACTOR_EXIT_S
    while (left := {a: c for a, c in alive().items() if a not in before}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    if left:
        worker = ray_session._private.worker.global_worker
        for actor_id in left:
            worker.core_worker.kill_actor(ActorID.from_hex(actor_id), True)
        pytest.fail(f"the test left Ray actors alive: {sorted(left.values())}")


def thermoroute_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``thermoroute <args>`` run in ``cwd`` through the command line's Typer app in this
    process, answered as :func:`subprocess.run` would answer.

    For tests of what a command computes and prints: a new process would only add seconds
    of imports (2-4 s on the 2-core machine). Tests of the entry point itself (its one-line
    errors, signals, a process tree) start the real one.
    """
    from typer.testing import CliRunner

    from thermoroute.cli import app

    with chdir(cwd):
        result = CliRunner().invoke(app, list(args))
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)


def wait_for_serve(
    serve: subprocess.Popen[str], port: int, cycles: int, within_s: float = 120.0
) -> dict[str, Any]:
    """Poll a ``serve`` process's ``/status`` until it has run ``cycles`` cycles; its status.

    Fails the test with serve's stderr if it exits first, or after ``within_s`` seconds.
    """
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + within_s
    status: dict[str, Any] = {}
    while status.get("cycles", 0) < cycles:
        assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
        assert time.monotonic() < deadline, f"serve never ran {cycles} cycle(s)"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                status = json.loads(r.read())
        except OSError:
            pass
        time.sleep(0.1)
    return status
