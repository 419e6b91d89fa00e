"""``thermoroute scenario init``: a template that validates, solves and explains itself."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from thermoroute.common.scenario_format import SCENARIO_FILES
from thermoroute.common.scenario_loading import load_scenario
from thermoroute.scenario_template import FILES


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoroute.cli", *args], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_template_validates_solves_and_explains_every_file(tmp_path: Path) -> None:
    target = tmp_path / "fleet"
    done = _cli("scenario", "init", str(target), "--sites", "4", "--regions", "2")
    assert done.returncode == 0, done.stderr
    scenario = load_scenario(target)
    assert len(scenario.sites) == 4 and len(scenario.regions) == 2
    toml_text = (target / "scenario.toml").read_text()
    assert tomllib.loads(toml_text)["objective"]["carbon_aud_per_kg"] == 0.075
    # Every key has its comment, with its range where the loader bounds it.
    assert toml_text.count("Allowed:") == 5
    readme = (target / "README.md").read_text()
    assert set(FILES) == set(SCENARIO_FILES) - {"scenario.toml"}
    for name in FILES:
        assert f"## {name}" in readme
    assert "[-1,000, 20,300] AUD/MWh" in readme  # the NEM floor and cap, from the bounds
    run = _cli("run", str(target), "--solver", "central", "--no-compare", "--out",
               str(tmp_path / "run"))  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_template_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me\n")
    done = _cli("scenario", "init", str(tmp_path))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
