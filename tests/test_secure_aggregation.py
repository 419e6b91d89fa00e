"""Secure aggregation: exact fixed point, masks that cancel, messages that look random."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from thermoroute.common.secure_aggregation import (
    LIMIT,
    EncodingError,
    MaskingSetup,
    PairwiseMasker,
    add,
    decode,
    encode,
    mask_degree,
    neighbour_graph,
    subtract,
    total,
    unmask_sum,
)


def _fleet(n: int, run_id: str = "run-a", seed: int = 3) -> list[PairwiseMasker]:
    maskers = [PairwiseMasker() for _ in range(n)]
    keys = [m.public_key for m in maskers]
    graph = neighbour_graph(n, seed)
    for i, m in enumerate(maskers):
        m.configure(MaskingSetup(run_id, i, {j: keys[j] for j in graph[i]}))
    return maskers


def test_encoding_is_exact_over_twenty_orders_of_magnitude() -> None:
    """Exact for every float whose last bit is worth 2^-64 or more (|v| ≥ 2^-11)."""
    rng = np.random.default_rng(0)
    values = rng.choice([-1.0, 1.0], 5000) * 10.0 ** rng.uniform(-3, 17, 5000)
    assert np.array_equal(decode(encode(values)), values)


def test_tiny_values_lose_less_than_the_last_fixed_point_bit() -> None:
    values = np.array([1e-30, -1e-30, 3e-19, -3e-19, 2.0**-64, -(2.0**-64)])
    assert np.all(np.abs(decode(encode(values)) - values) <= 2.0**-64)


def test_encoding_refuses_what_it_cannot_hold() -> None:
    for bad in (math.nan, math.inf, -math.inf, LIMIT, -2 * LIMIT):
        with pytest.raises(EncodingError):
            encode(np.array([1.0, bad]))


def test_modular_add_and_subtract_invert_each_other() -> None:
    rng = np.random.default_rng(1)
    a = encode(rng.standard_normal(100) * 1e6)
    b = rng.integers(0, 2**64, size=(2, 100), dtype=np.uint64)  # uniform 128-bit words
    assert np.array_equal(subtract(add(a, b), b), a)


def test_sum_of_encodings_is_the_correctly_rounded_exact_sum() -> None:
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal(300) * 10.0 ** rng.uniform(-4, 9, 300) for _ in range(7)]
    got = decode(total(encode(p) for p in parts))
    exact = np.array([math.fsum(col) for col in zip(*parts, strict=True)])
    assert np.allclose(got, exact, rtol=1e-15, atol=7 * 2.0**-64)


def test_masked_sums_equal_plain_sums_to_1e_12() -> None:
    rng = np.random.default_rng(3)
    maskers = _fleet(12)
    values = [rng.standard_normal(500) * 10.0 ** rng.uniform(-8, 8, 500) for _ in maskers]
    masked = [m.mask(v, message=4, round_id=1) for m, v in zip(maskers, values, strict=True)]
    exact = np.array([math.fsum(col) for col in zip(*values, strict=True)])
    assert np.allclose(unmask_sum(masked), exact, rtol=1e-12, atol=12 * 2.0**-64)


def test_masked_messages_look_uniform_whatever_they_hold() -> None:
    """Every bit of every masked word is a fair coin, for zeros as for real values, and the
    same values masked under fresh keys share nothing."""
    n = 4000
    zeros = _fleet(3, "run-z")[0].mask(np.zeros(n), 0, 0)
    real = _fleet(3, "run-r")[1].mask(np.linspace(-5.0, 5.0, n), 0, 0)
    again = _fleet(3, "run-r")[1].mask(np.linspace(-5.0, 5.0, n), 0, 0)
    for words in (zeros, real):
        bits = np.unpackbits(words.T.copy().view(np.uint8), axis=1)  # (n, 128)
        freq = bits.mean(axis=0)
        sigma = math.sqrt(0.25 / n)
        assert np.all(np.abs(freq - 0.5) < 5.5 * sigma)
    assert np.mean(real == again) < 0.01


def test_a_missing_party_leaves_masks_that_do_not_cancel() -> None:
    maskers = _fleet(5)
    masked = [m.mask(np.ones(50), 1, 0) for m in maskers]
    with pytest.raises(EncodingError):
        unmask_sum(masked[:-1])


def test_masks_differ_per_round_and_iteration() -> None:
    m = _fleet(2)[0]
    a, b, c = m.mask(np.zeros(64), 1, 0), m.mask(np.zeros(64), 1, 1), m.mask(np.zeros(64), 2, 0)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_masker_never_masks_twice_under_one_nonce() -> None:
    """Two messages under one keystream would give away their difference to the coordinator."""
    from thermoroute.common.secure_aggregation import NonceReuse

    m = _fleet(2)[0]
    first = m.mask(np.arange(8.0), 3, 3)
    with pytest.raises(NonceReuse):
        m.mask(np.arange(8.0) + 1.0, 3, 3)
    assert first.shape == (2, 8)


@pytest.mark.parametrize("correctors", [0, 2])
def test_interior_point_rounds_mask_under_distinct_nonces(
    tiny_scenario_dir: Path, correctors: int
) -> None:
    """Every round of a run (the opening exchange; Gondzio's two correctors give two
    ``centre`` rounds in one iteration) carries its own sequence number, so no group ever
    reuses a nonce."""
    from dataclasses import replace

    from thermoroute.coordinator.ipm import IpmSettings
    from thermoroute.launch import solve_distributed

    seen: list[tuple[int, str, int]] = []
    original = PairwiseMasker.mask

    def recording(self, values, message, round_id):  # the product's masker, watched
        seen.append((id(self), message, round_id))
        return original(self, values, message, round_id)

    PairwiseMasker.mask = recording  # type: ignore[method-assign]
    try:
        run = solve_distributed(
            tiny_scenario_dir, executor="inline",
            settings=replace(IpmSettings(), centrality_correctors=correctors),
        )  # fmt: skip
    finally:
        PairwiseMasker.mask = original  # type: ignore[method-assign]
    assert run.converged and seen
    assert len(set(seen)) == len(seen)
    # Every answered exchange is masked: one message per group for each round, the opening
    # exchange and the final report.
    stats = run.outcome.run.extra_stats
    assert len(seen) == len(run.groups) * (stats["rounds"] + 2)


def test_a_masker_needs_its_neighbours_keys_first() -> None:
    with pytest.raises(RuntimeError):
        PairwiseMasker().mask(np.zeros(3), 0, 0)


@pytest.mark.parametrize("n", [2, 5, 17, 100, 1000])
def test_neighbour_graph_is_symmetric_connected_and_logarithmic(n: int) -> None:
    graph = neighbour_graph(n, seed=11)
    for i, near in enumerate(graph):
        assert i not in near
        assert all(i in graph[j] for j in near)
    seen, todo = {0}, [0]
    while todo:
        for j in graph[todo.pop()]:
            if j not in seen:
                seen.add(j)
                todo.append(j)
    assert len(seen) == n
    degrees = [len(near) for near in graph]
    assert max(degrees) <= min(n - 1, 4 * mask_degree(n))
    if n >= 100:
        assert np.mean(degrees) <= 2 * mask_degree(n)
