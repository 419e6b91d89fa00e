"""Output directories are whole and owned (common/run_directory.py, docs/model.md §9).

The command line (``--executor inline`` and the centralised solver: real solves, no Ray) and
:class:`RunDirectory` itself: a foreign directory is refused before any work, an earlier
run's output is replaced whole, two runs on one target are serialised, modes follow the
umask, and a failed run leaves the target as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from thermoroute.common.run_directory import MARKER, OutputDirectoryError, RunDirectory

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from thermoroute.cli import main; main()"]


def _cli(*args: str, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    command = [*CLI, *args]
    if umask is not None:
        code = f"import os; os.umask({umask}); from thermoroute.cli import main; main()"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_foreign_directory_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")
    t0 = time.monotonic()
    done = _cli("run", "australia", "--solver", "central", "--out", str(out), cwd=tmp_path)
    _one_line_exit_2(done, "--out", "no thermoroute run wrote")
    assert time.monotonic() - t0 < 30  # refused up front, not after a solve
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("kind", ["file", "under a file"])
def test_an_output_path_that_cannot_be_a_directory_is_refused(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if kind == "file" else blocker / "run"
    done = _cli("run", "australia", "--solver", "central", "--out", str(out), cwd=tmp_path)
    _one_line_exit_2(done, "--out")
    assert blocker.read_text() == "x"


def test_simulate_checks_its_output_before_simulating(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    (out / "keep.csv").write_text("1\n")
    t0 = time.monotonic()
    done = _cli("simulate", "australia", "--executor", "inline", "--days", "1", "--out",
                str(out), cwd=tmp_path)  # fmt: skip
    _one_line_exit_2(done, "--out")
    assert time.monotonic() - t0 < 30


def test_an_earlier_run_is_replaced_whole_with_the_umask_modes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _cli("run", "australia", "--executor", "inline", "--no-compare", "--quiet",
                 "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert (out / "convergence.csv").is_file() and (out / "sites").is_dir()
    assert (out / MARKER).is_file()
    second = _cli("run", "australia", "--solver", "central", "--no-compare", "--quiet",
                  "--out", str(out), cwd=tmp_path, umask=0o027)  # fmt: skip
    assert second.returncode == 0, second.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [MARKER, "schedule.csv", "shadow_prices.csv", "site_steps.csv", "summary.json"]
    )  # no stale convergence.csv or sites/ of the distributed run
    assert all((p.stat().st_mode & 0o777) == 0o640 for p in out.iterdir())
    assert out.stat().st_mode & 0o777 == 0o750
    # Neither the staging directory nor the lock file stays beside the output.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")] == []


def test_a_failed_run_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with RunDirectory(target) as run_dir:
        run_dir.write({"a.txt": "first\n"})
        run_dir.commit()
    with pytest.raises(RuntimeError), RunDirectory(target) as run_dir:
        run_dir.write({"b.txt": "half\n"})
        raise RuntimeError("the solve failed")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no lock


def test_two_runs_on_one_target_are_serialised(tmp_path: Path) -> None:
    target = tmp_path / "out"
    events: list[tuple[str, str]] = []

    def run(name: str, hold_s: float) -> None:
        with RunDirectory(target) as run_dir:
            events.append((name, "enter"))
            run_dir.write({f"{name}.txt": name})
            time.sleep(hold_s)
            run_dir.commit()
            events.append((name, "commit"))

    first = threading.Thread(target=run, args=("first", 0.5))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=run, args=("second", 0.0))
    second.start()
    first.join()
    second.join()
    assert events == [("first", "enter"), ("first", "commit"), ("second", "enter"),
                      ("second", "commit")]  # fmt: skip
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "second.txt"]
    # The first removed its lock file while the second waited on it: the second then
    # locked the path's new file, and removed that one too.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_many_runs_on_one_target_never_overlap(tmp_path: Path) -> None:
    target = tmp_path / "out"
    inside: list[int] = []
    overlaps: list[int] = []

    def run(k: int) -> None:
        with RunDirectory(target) as run_dir:
            inside.append(k)
            if len(inside) > 1:
                overlaps.append(k)
            time.sleep(0.01)
            run_dir.write({"k.txt": str(k)})
            run_dir.commit()
            inside.remove(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_target_where_nothing_can_be_written_is_one_error(tmp_path: Path) -> None:
    # Root passes the permission check (os.access) and meets the kernel's refusal when it
    # writes; others are refused by the check. Either way: one OutputDirectoryError.
    with pytest.raises(OutputDirectoryError, match=r"/proc"):
        RunDirectory("/proc/thermoroute-out").__enter__()
    assert not Path("/proc/.thermoroute-out.lock").exists()


def test_a_directory_check_refuses_without_touching_anything(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    with pytest.raises(OutputDirectoryError):
        RunDirectory(foreign)
    assert [p.name for p in tmp_path.iterdir()] == ["foreign"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (CI runs as root)")
def test_a_full_disk_is_one_line_and_the_earlier_output_stays(tmp_path: Path) -> None:
    """ENOSPC while writing a central and an in-process distributed run's outputs, on a
    real 2 MB tmpfs filled to the brim (in a private mount namespace)."""
    mount = tmp_path / "small"
    mount.mkdir()
    out = mount / "out"
    cli = f"{sys.executable} -c 'from thermoroute.cli import main; main()'"
    script = f"""
        set -u
        mount -t tmpfs -o size=2m tmpfs {mount}
        {cli} run australia --solver central --no-compare --quiet --out {out} >/dev/null || exit 90
        sha256sum {out}/* > {tmp_path}/before
        dd if=/dev/zero of={mount}/fill bs=64k count=100 2>/dev/null
        {cli} run australia --solver central --no-compare --out {out} 2> {tmp_path}/central
        echo $? > {tmp_path}/central.rc
        {cli} run australia --executor inline --no-compare --quiet --out {out} 2> {tmp_path}/inline
        echo $? > {tmp_path}/inline.rc
        sha256sum {out}/* > {tmp_path}/after
        ls -a {mount} > {tmp_path}/left
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for kind in ("central", "inline"):
        assert (tmp_path / f"{kind}.rc").read_text().strip() == "4"
        lines = [x for x in (tmp_path / kind).read_text().splitlines() if x.startswith("error")]
        assert len(lines) == 1 and "Traceback" not in (tmp_path / kind).read_text()
        assert lines[0].startswith(f"error: --out {out}: cannot write {out}/")
        assert "No space left on device; the earlier output there is intact" in lines[0]
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()
    # Nothing of the failed runs stays: no staging directory, no lock.
    assert (tmp_path / "left").read_text().split() == [".", "..", "fill", "out"]
