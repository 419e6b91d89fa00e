"""The Python API: the README's example runs, and the API's promises hold."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

import thermoroute
from thermoroute.options import OptionError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "the README's Python API section has no example"
    exec(compile(block.group(1), str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "AUD" in printed and "temperature-unaware" in printed


def test_a_changed_scenario_is_what_every_solver_solves(tmp_path: Path) -> None:
    """A Scenario edited in memory reaches the sites' agents as edited (not the files it
    was read from)."""
    base = thermoroute.load_scenario("australia", steps=6)
    dearer = replace(base, objective=replace(base.objective, carbon_aud_per_kg=0.75))
    central = thermoroute.solve(dearer, solver="central")
    distributed = thermoroute.solve(dearer, method="ipm", executor="inline", out=tmp_path / "d")
    assert distributed.objective_aud == pytest.approx(central.objective_aud, rel=1e-4)
    assert central.objective_aud > 1.5 * thermoroute.solve(base, solver="central").objective_aud
    # out= keeps the run directory; reading it again gives the same solution.
    again = thermoroute.Solution.read(tmp_path / "d")
    assert again.totals == distributed.totals and distributed.directory == tmp_path / "d"
    assert again.site_detail == "site directories" and central.directory is None
    assert set(again.site_steps["site_id"]) == set(base.sites.site_id)


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="--eps-rel -1"):
        thermoroute.solve("australia", eps_rel=-1, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(TypeError):
        thermoroute.solve("australia", no_such_option=1)
