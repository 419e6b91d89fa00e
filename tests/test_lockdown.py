"""A local run is locked down: nothing it starts listens beyond loopback, its token is the
owner's only, and a generated token is always a new one.

Real runs of the command line (a local Ray cluster, the coordinator's metrics endpoint) with
the host's listening sockets listed by ``ss`` while they run.
"""

from __future__ import annotations

import os
import re
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


def test_token_generate_writes_a_new_owner_only_token_every_time(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "ray_token"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tokens = []
    for _ in range(2):
        done = subprocess.run([*CLI, "token", "generate", str(path)], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert path.stat().st_mode & 0o777 == 0o600
        tokens.append(path.read_text().strip())
    assert tokens[0] != tokens[1] and all(len(t) == 64 for t in tokens)
    assert [p.name for p in path.parent.iterdir()] == ["ray_token"]  # no temporary left


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """The TCP sockets listening in this network namespace that processes ``pids`` hold, as
    (address, port).

    Only the run's own processes count: the session's Ray cluster (tests/conftest.py) may
    start a worker, with a port of its own, while the run is watched.
    """
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            local = line.split()[3]
            address, _, port = local.rpartition(":")
            found.add((address.strip("[]"), int(port)))
    return found


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


# A run of its own, not the session's Ray cluster: what is tested is the Ray a run starts (in
# its private network) and what is left when its driver is killed.
@pytest.mark.ray
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.skipif(not isolation_available(), reason="no network namespaces here")
def test_a_local_run_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    # A home of its own, with a token file as Ray itself leaves it: readable by everyone.
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("a" * 64)
    (home / ".ray" / "auth_token").chmod(0o644)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home)}
    env = {k: v for k, v in env.items() if not k.startswith("RAY_")}
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
        seen |= _listening({run.pid, *_descendants(run.pid)})
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
    assert (home / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600


def _process_table() -> dict[int, tuple[int, str, str]]:
    """``{pid: (parent pid, state, command line)}`` of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry.name)] = (int(ppid), state, cmdline)
    return table


def _descendants(root: int) -> dict[int, str]:
    table = _process_table()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, cmdline) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = cmdline
                frontier.append(pid)
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _process_table()
    return {pid for pid in pids if pid in table and table[pid][1] not in ("Z", "X")}


@pytest.mark.ray
@pytest.mark.skipif(not isolation_available(), reason="no network namespaces here")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_killing_the_driver_leaves_no_process_of_the_run(tmp_path: Path, how: str) -> None:
    """A killed driver (SIGKILL) or a Ctrl-C (SIGINT): no process of the run survives it
    and nothing is written; Ctrl-C says "interrupted" in one line, exit status 130."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env = {k: v for k, v in env.items() if not k.startswith("RAY_")}
    run = subprocess.Popen(
        [*CLI, "run", "australia", "--method", "admm", "--quiet", "--no-compare",
         "--out", str(tmp_path / "out")],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    started: dict[int, str] = {}
    while not any("raylet" in c for c in started.values()):
        assert run.poll() is None, "the run ended before Ray was up"
        assert time.monotonic() < deadline, "Ray never started"
        started = _descendants(run.pid)
        time.sleep(0.2)
    time.sleep(2.0)  # agents and workers up too
    started = _descendants(run.pid)
    run.send_signal(getattr(signal, how))
    _, stderr = run.communicate(timeout=60)
    if how == "SIGINT":
        assert run.returncode == 130
        assert [line for line in stderr.splitlines() if "interrupted" in line] == ["interrupted"]
        assert "Traceback" not in stderr
    deadline = time.monotonic() + 20
    while _alive(set(started)):
        assert time.monotonic() < deadline, {pid: started[pid][:80] for pid in _alive(set(started))}
        time.sleep(0.2)
    assert not (tmp_path / "out").exists()
