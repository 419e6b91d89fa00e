"""Regenerate the stored reference solutions of tests/reference/ (osqp-python style).

Run from the repository root::

    python tests/reference/make_reference.py

Each reference is the centralised optimum of a small deterministic scenario built by hand
in tests/conftest.py, stored with the solver and library versions that produced it. Only
regenerate after a deliberate change of the model or of the fixture, and say why in the
commit: the point of a stored reference is to catch unintended changes.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

from conftest import make_scenario  # noqa: E402

from thermoroute.common.central import CLARABEL_SETTINGS, solve_central  # noqa: E402
from thermoroute.common.evaluate import evaluate  # noqa: E402

COMMAND = "python tests/reference/make_reference.py"


def tiny_central() -> dict:
    """The centralised optimum of ``make_scenario()`` (3 sites, 2 regions, 3 classes, 4 h)."""
    scenario = make_scenario()
    result = solve_central(scenario)
    evaluation = evaluate(scenario, result.x, result.n)
    return {
        "scenario": "tests/conftest.py::make_scenario()",
        "command": COMMAND,
        "solver": result.solver,
        "solver_settings": CLARABEL_SETTINGS,
        "versions": {p: version(p) for p in ("cvxpy", "clarabel", "numpy", "scipy")},
        "objective_aud": result.objective_aud,
        "totals": evaluation.totals(),
        "active_gpus": result.n.tolist(),
    }


def main() -> None:
    path = HERE / "tiny_central.json"
    path.write_text(json.dumps(tiny_central(), indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
