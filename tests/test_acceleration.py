"""Safeguarded Anderson acceleration (coordinator/acceleration.py) and its use in ADMM."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_admm import OBJECTIVE_RTOL, _cvx_run
from thermoroute.common.central import solve_central
from thermoroute.common.evaluate import evaluate
from thermoroute.common.scenario import Scenario
from thermoroute.coordinator.acceleration import AndersonAccelerator
from thermoroute.coordinator.admm import AdmmSettings


def _linear_map(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A contraction ``G(v) = Mv + c`` with eigenvalues in [0, 0.99): slow for plain
    iteration, solved by Anderson in about ``n`` steps (it is GMRES on an affine map)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    m = q @ np.diag(rng.uniform(0.0, 0.99, n)) @ q.T
    c = rng.normal(size=n)
    return m, c, np.linalg.solve(np.eye(n) - m, c)


def _iterate(m, c, accel: AndersonAccelerator | None, tol=1e-8, limit=5000):
    v = np.zeros(c.size)
    for k in range(limit):
        gv = m @ v + c
        if np.linalg.norm(v - gv) < tol:
            return k, v
        v = gv if accel is None else accel.step(v, gv)[0]
    return limit, v


def test_anderson_beats_plain_iteration_on_an_affine_map() -> None:
    m, c, fixed = _linear_map()
    plain, _ = _iterate(m, c, None)
    accel = AndersonAccelerator(memory=10)
    fast, v = _iterate(m, c, accel)
    np.testing.assert_allclose(v, fixed, atol=1e-6)
    assert fast * 4 < plain
    assert accel.accepted > 0


def test_weights_are_affine_and_keep_linear_invariants() -> None:
    """Affine combinations of images keep every invariant of the images (Σ z = b)."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=6)
    accel = AndersonAccelerator(memory=4)
    v = rng.normal(size=6)
    for _ in range(8):
        gv = rng.normal(size=6)
        gv += (1.0 - a @ gv) / (a @ a) * a  # every image satisfies aᵀ G(v) = 1
        v, taken = accel.step(v, gv)
        if taken:
            assert a @ v == pytest.approx(1.0)


def test_safeguard_falls_back_when_the_residual_grows() -> None:
    """An expanding map makes every extrapolated point worse: the accelerator must fall back
    to the plain image of the point it came from and forget its history."""
    accel = AndersonAccelerator(memory=5)
    v = np.ones(3)
    gv = 2.0 * v
    v1, first = accel.step(v, gv)
    assert not first  # no history yet: plain step
    v2, second = accel.step(v1, 2.0 * v1 + 1.0)
    assert second  # an extrapolation was proposed
    image_of_v1 = 2.0 * v1 + 1.0
    v3, third = accel.step(v2, 10.0 * v2 + 50.0)  # far worse residual at v2
    assert not third
    np.testing.assert_allclose(v3, image_of_v1)
    assert accel.rejected == 1


def test_reset_forgets_history() -> None:
    accel = AndersonAccelerator(memory=3)
    v = np.zeros(2)
    for k in range(4):
        v, _ = accel.step(v, v * 0.5 + k)
    accel.reset()
    _, taken = accel.step(v, v + 1.0)
    assert not taken


def test_bound_decreases_with_accepted_steps() -> None:
    accel = AndersonAccelerator(safeguard_factor=10.0, safeguard_eps=0.5)
    accel.g0_norm = 1.0
    first = accel.bound()
    accel.accepted = 3
    assert accel.bound() == pytest.approx(10.0 * 4.0**-1.5)
    assert accel.bound() < first


def test_accelerated_admm_reaches_the_optimum_and_reports_both_counts(
    tiny_scenario: Scenario,
) -> None:
    central = solve_central(tiny_scenario).objective_aud
    counts = {}
    for mode in ("none", "anderson"):
        result, _, _, x, n, _ = _cvx_run(
            tiny_scenario, AdmmSettings(acceleration=mode, max_iter=3000)
        )
        assert result.converged
        assert evaluate(tiny_scenario, x, n).objective_aud == pytest.approx(
            central, rel=OBJECTIVE_RTOL
        )
        counts[mode] = result.iterations
        if mode == "anderson":
            assert result.anderson_accepted > 0
    print(f"iterations plain {counts['none']}, accelerated {counts['anderson']}")
