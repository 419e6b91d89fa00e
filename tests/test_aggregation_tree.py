"""Tree aggregation (issue 24, item 3): relays sum masked answers; the coordinator reads the
same fleet sum from fewer, constant-size messages, and a relay reads nothing.

Real keys and masks (``common/secure_aggregation.py``), real site groups in process
(``InlineFleet`` follows the same tree as the Ray fleet; tests/test_aggregation_tree_ray.py
runs it on Ray).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thermoroute.cluster import AgentSetup, create_inline_groups, plan_groups
from thermoroute.common.aggregation_tree import AggregationTree, sum_aggregates
from thermoroute.common.ipm_protocol import Aggregate
from thermoroute.common.scenario import DemandView, Scenario
from thermoroute.common.scenario_writing import write_scenario
from thermoroute.common.secure_aggregation import (
    EncodingError,
    MaskingSetup,
    PairwiseMasker,
    decode,
    encode,
    neighbour_graph,
    total,
)
from thermoroute.common.synth import synthesize
from thermoroute.coordinator.actor import Coordinator, CoordinatorOutcome
from thermoroute.coordinator.fleet import InlineFleet
from thermoroute.coordinator.ipm import IpmSettings

# ---------------------------------------------------------------------------------------
# The tree's shape


@pytest.mark.parametrize(("n", "fan_in"), [(1, 16), (16, 16), (17, 16), (100, 4), (1000, 16)])
def test_k_ary_tree_covers_every_group_once_and_bounds_every_fan_in(n: int, fan_in: int) -> None:
    tree = AggregationTree.k_ary(n, fan_in)
    covered = [g for top in tree.top for g in tree.subtree(top)]
    assert sorted(covered) == list(range(n))
    assert 1 <= len(tree.top) <= fan_in
    assert tree.is_flat == (n <= fan_in)
    # A relay takes in fewer than fan_in answers per level of relays below it.
    for g, children in enumerate(tree.children):
        assert len(children) <= (fan_in - 1) * tree.height(g)
    if not tree.is_flat:
        assert len(tree.top) >= 2  # no relay's subtree is the whole fleet


def test_the_coordinators_answers_grow_with_the_top_of_the_tree_not_the_groups() -> None:
    tops = {n: len(AggregationTree.k_ary(n).top) for n in (17, 100, 1000, 10_000)}
    assert tops == {17: 2, 100: 7, 1000: 4, 10_000: 3}
    with pytest.raises(ValueError, match="fan-in"):
        AggregationTree.k_ary(10, 1)


# ---------------------------------------------------------------------------------------
# Masked sums through the tree, real keys


def _masked_fleet(
    values: list[np.ndarray], graph: tuple[tuple[int, ...], ...], message: int = 3
) -> tuple[list[PairwiseMasker], list[bytes], list[np.ndarray]]:
    """Each party's masker configured on ``graph``, and its masked ``values``."""
    maskers = [PairwiseMasker() for _ in values]
    keys = [m.public_key for m in maskers]
    for i, m in enumerate(maskers):
        m.configure(MaskingSetup("run-tree", i, {j: keys[j] for j in graph[i]}))
    return maskers, keys, [m.mask(v, message, 0) for m, v in zip(maskers, values, strict=True)]


def _through(tree: AggregationTree, answers: list[Aggregate], g: int) -> Aggregate:
    return sum_aggregates([answers[g]] + [_through(tree, answers, c) for c in tree.children[g]])


def test_the_fleet_sum_through_the_tree_equals_the_flat_sum_bit_for_bit() -> None:
    n = 40
    rng = np.random.default_rng(5)
    # Entries over twenty orders of magnitude, as an interior point's Schur entries.
    values = [rng.choice([-1.0, 1.0], 300) * 10.0 ** rng.uniform(-3, 15, 300) for _ in range(n)]
    _, _, masked = _masked_fleet(values, neighbour_graph(n, seed=2))
    answers = [Aggregate(7, "newton", words, masked=True) for words in masked]
    tree = AggregationTree.k_ary(n, 4)  # 40 → 10 → 3: relays of relays
    relayed = [_through(tree, answers, g) for g in tree.top]
    assert len(relayed) == 3 and all(a.masked for a in relayed)
    via_tree = total(a.values for a in relayed)
    assert np.array_equal(via_tree, total(masked))
    assert np.array_equal(decode(via_tree), decode(total(encode(v) for v in values)))


def test_a_subtree_sum_is_still_masked() -> None:
    """Short of the whole fleet, a relay's sum does not decode: the masks on the edges that
    leave its subtree are still in it."""
    n = 40
    values = [np.full(50, float(i)) for i in range(n)]
    _, _, masked = _masked_fleet(values, neighbour_graph(n, seed=4))
    tree = AggregationTree.k_ary(n, 4)
    answers = [Aggregate(0, "newton", words, masked=True) for words in masked]
    for g in tree.top:
        with pytest.raises(EncodingError):
            decode(_through(tree, answers, g).values)


def _relay_attack(
    relay: int,
    children: list[int],
    maskers: list[PairwiseMasker],
    keys: list[bytes],
    masked: list[np.ndarray],
) -> np.ndarray:
    """What relay ``relay`` makes of its children's masked answers with every key it holds:
    their sum with its own pairwise masks with each child taken out."""
    own = maskers[relay]
    words = total(masked[c] for c in children)
    for c in children:
        # The relay's side of the pair's mask (added by the lower index, subtracted by the
        # other) cancels the child's side of it.
        own.configure(MaskingSetup("run-tree", relay, {c: keys[c]}))
        words = total([words, own.mask(np.zeros(masked[c].shape[1]), 3, 0)])
    return decode(words)


def test_a_relay_cannot_unmask_its_members_when_the_graph_holds_a_ring() -> None:
    """The relay's best try, with its own pairwise keys, on its members' sum: it stays
    masked because the members have mask neighbours outside the subtree that are not the
    relay (the masking graph stays connected without any one group). The same attack on a
    graph where the members' only way out is the relay recovers their sum exactly — the
    condition is what protects them."""
    n, relay = 24, 0
    rng = np.random.default_rng(9)
    values = [rng.uniform(1.0, 100.0, 40) for _ in range(n)]
    members = list(range(1, 8))
    truth = np.sum([values[c] for c in members], axis=0)

    maskers, keys, masked = _masked_fleet(values, neighbour_graph(n, seed=8))
    try:
        guess = _relay_attack(relay, members, maskers, keys, masked)
    except EncodingError:
        guess = None
    assert guess is None or not np.allclose(guess, truth)

    # Members 1..7 mask only with each other and with the relay; the relay links the rest.
    cut: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            inside = i in members and j in members
            if inside or (i == relay) or (i not in members and j not in members):
                cut[i].add(j)
                cut[j].add(i)
    cut_graph = tuple(tuple(sorted(s)) for s in cut)
    maskers, keys, masked = _masked_fleet(values, cut_graph)
    guess = _relay_attack(relay, members, maskers, keys, masked)
    assert np.allclose(guess, truth, rtol=1e-15)


@pytest.mark.parametrize("n", [3, 4, 5, 17, 40, 300])
def test_the_masking_graph_stays_connected_without_any_one_group(n: int) -> None:
    """What keeps every relay blind (docs/model.md §11): removing a relay's own edges never
    cuts a set of groups off the rest."""
    for seed in range(3):
        graph = neighbour_graph(n, seed)
        for gone in range(n):
            start = 1 if gone == 0 else 0
            seen, todo = {start}, [start]
            while todo:
                for j in graph[todo.pop()]:
                    if j != gone and j not in seen:
                        seen.add(j)
                        todo.append(j)
            assert len(seen) == n - 1, (n, seed, gone)


# ---------------------------------------------------------------------------------------
# A whole interior-point run in process, flat and through the tree

SITES = 12
FAN_IN = 3  # 12 groups → 4 relays → 2 top nodes: relays of relays


def _run(
    source: Path, scenario: Scenario, tree: AggregationTree
) -> tuple[CoordinatorOutcome, list[tuple[str, int, bytes]], list[tuple[int, int, Aggregate]]]:
    groups = plan_groups(list(scenario.sites.site_id), 1)
    agents = create_inline_groups(source, groups, AgentSetup())
    inbound: list[tuple[str, int, bytes]] = []
    relayed: list[tuple[int, int, Aggregate]] = []
    coordinator = Coordinator(DemandView.of(scenario), IpmSettings())
    coordinator.attach(
        InlineFleet(
            agents,
            groups,
            tap=lambda kind, g, m: inbound.append((kind, g, pickle.dumps(m))),
            tree=tree,
            relay_tap=lambda relay, child, m: relayed.append((relay, child, m)),
        )
    )
    coordinator.register()
    try:
        return coordinator.run(), inbound, relayed
    finally:
        for agent in agents:
            agent.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scenario = synthesize(SITES, 4, 7)
    source = write_scenario(scenario, tmp_path_factory.mktemp("tree") / "synth")
    return {
        "flat": _run(source, scenario, AggregationTree.flat(SITES)),
        "tree": _run(source, scenario, AggregationTree.k_ary(SITES, FAN_IN)),
    }


def test_an_interior_point_run_through_the_tree_is_the_flat_run(runs: dict[str, Any]) -> None:
    """The fleet sums are the same to the bit, so the whole run is: every iterate's prices,
    the iterations, the objective."""
    flat, tree = runs["flat"][0], runs["tree"][0]
    assert flat.converged and tree.converged
    assert tree.result.iterations == flat.result.iterations
    assert tree.objective_aud == flat.objective_aud
    assert np.array_equal(tree.result.prices, flat.result.prices)
    assert [h.mu for h in tree.result.history] == [h.mu for h in flat.result.history]


def test_the_coordinator_takes_in_one_answer_per_top_node(runs: dict[str, Any]) -> None:
    tree = AggregationTree.k_ary(SITES, FAN_IN)
    flat_out, flat_in, _ = runs["flat"]
    tree_out, tree_in, _ = runs["tree"]
    rounds = tree_out.result.rounds + 1  # and the start
    assert rounds == flat_out.result.rounds + 1

    def summed(inbound: list[tuple[str, int, bytes]]) -> list[tuple[int, bytes]]:
        out = []
        for kind, g, raw in inbound:
            if kind in ("method_round", "method_start") and pickle.loads(raw).values.size:
                out.append((g, raw))
        return out

    flat_msgs, tree_msgs = summed(flat_in), summed(tree_in)
    assert len(flat_msgs) == SITES * rounds
    assert len(tree_msgs) == len(tree.top) * rounds
    assert {g for g, _ in tree_msgs} == set(tree.top) == {0, 9}
    # Each answer is as long as one group's: the bytes fall with the top nodes' count.
    flat_bytes = sum(len(raw) for _, raw in flat_msgs)
    tree_bytes = sum(len(raw) for _, raw in tree_msgs)
    assert tree_bytes / flat_bytes == pytest.approx(len(tree.top) / SITES, rel=0.01)


def test_a_relay_sees_only_masked_answers_that_look_uniform(runs: dict[str, Any]) -> None:
    tree = AggregationTree.k_ary(SITES, FAN_IN)
    _, _, relayed = runs["tree"]
    assert {(r, c) for r, c, _ in relayed} == {
        (r, c) for r, children in enumerate(tree.children) for c in children
    }
    answered = [(r, c, m) for r, c, m in relayed if m.phase != "finish"]
    assert answered and all(m.masked for _, _, m in answered)
    for relay, child in {(r, c) for r, c, _ in answered}:
        words = np.concatenate([m.values for r, c, m in answered if (r, c) == (relay, child)], 1)
        assert words.dtype == np.uint64 and words.shape[0] == 2
        bits = np.unpackbits(words.T.copy().view(np.uint8), axis=1)
        sigma = math.sqrt(0.25 / bits.shape[0])
        assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 5.5 * sigma)
        # No subtree's sum is the fleet's: what a relay holds never decodes.
        with pytest.raises(EncodingError):
            decode(words[:, :1000])
