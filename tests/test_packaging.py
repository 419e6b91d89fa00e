"""One import root: the wheel installs ``thermoroute`` alone, and an installed thermoroute runs
from any working directory — even one holding packages named like the repository's folders.

Real parts: ``pip wheel`` builds the wheel from this checkout, a fresh virtual environment
(its dependencies from this interpreter's site-packages) installs it, and its console script
runs a scenario in process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_scenario
from thermoroute.common.scenario_writing import write_scenario

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("thermoroute-*.whl")
    return built


def test_the_wheel_has_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["thermoroute"]
    assert {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")} == {
        "thermoroute"
    }
    # The embedded scenarios and every layer travel inside the root.
    assert "thermoroute/common/scenarios/australia/scenario.toml" in names
    assert "thermoroute/site_agent/ipm.py" in names and "thermoroute/coordinator/ipm.py" in names


def test_an_installed_run_ignores_packages_in_the_working_directory(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # --ignore-installed: into the venv, although this interpreter's site-packages (visible
    # to the venv) holds a thermoroute already.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         "--ignore-installed", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # A user's folder with packages named like the repository's folders, which explode.
    work = tmp_path / "work"
    for name in ("common", "coordinator", "site_agent"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"raise ImportError('the wrong {name}')\n")
    scenario = write_scenario(make_scenario(), work / "tiny")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    where = subprocess.run(
        [str(python), "-c", "import thermoroute; print(thermoroute.__file__)"],
        capture_output=True, text=True, cwd=work, env=env, timeout=120,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout + where.stderr
    done = subprocess.run(
        [str(env_dir / "bin" / "thermoroute"), "run", str(scenario), "--executor", "inline",
         "--no-compare", "--quiet", "--out", str(work / "out")],
        capture_output=True, text=True, cwd=work, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "out" / "summary.json").is_file()
