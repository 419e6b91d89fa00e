"""A local run is locked down: nothing it starts listens beyond loopback.

Real runs of the command line (a local Ray cluster, the coordinator's metrics endpoint) with
the host's listening sockets listed by ``ss`` while they run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_prometheus import free_port
from thermoroute.isolation import isolation_available

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)"),
]


def _listening() -> set[tuple[str, int]]:
    """Every TCP socket listening in this network namespace, as (address, port)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        found.add((address.strip("[]"), int(port)))
    return found


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


@pytest.mark.skipif(not isolation_available(), reason="no network namespaces here")
def test_a_local_run_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    before = _listening()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(
        [*CLI, "run", "australia", "--quiet", "--no-compare", "--out", str(tmp_path / "out"),
         "--metrics-port", str(port), "--metrics-linger", "30"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: set[tuple[str, int]] = set()
    scraped = ""
    deadline = time.monotonic() + 240
    while run.poll() is None:
        assert time.monotonic() < deadline, "the run did not end"
        seen |= _listening() - before
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                scraped = r.read().decode()
        except OSError:
            pass
        time.sleep(0.3)
    _, stderr = run.communicate()
    assert run.returncode == 0, stderr
    exposed = sorted(s for s in seen if not _loopback(s[0]))
    assert exposed == [], f"listening beyond loopback during the run: {exposed}"
    # Ray's GCS, raylets, workers and agents are in the run's own network: the host sees
    # only the forwarded metrics endpoint, and Prometheus can read it there.
    assert {p for _, p in seen} == {port}
    assert "thermoroute_objective_aud" in scraped
    assert "warning" not in stderr.lower()
