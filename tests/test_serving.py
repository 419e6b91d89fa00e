"""Serving profiles against values computed by hand from the performance table."""

from __future__ import annotations

import numpy as np
import pytest

from thermoroute.common.physics import serving
from thermoroute.common.physics.serving import (
    decode_step_ms,
    energy_per_output_token_j,
    idle_w,
    prefill_ms,
    reference_gpu_s,
    serving_profile,
)

# r = 8.03e9 / (68.98e9 / 2) = 8.03 / 34.49 = 0.232821...
R_8B = 8.03 / 34.49


def test_h100_70b_on_table_points():
    # prompt 1024 is a table point: prefill 158 ms. Batch 16: decode step 42.0 ms.
    # decode seconds per request = 100 tokens * 0.042 s / 16 = 0.2625 s
    # gpu_s  = TP 2 * (0.158 + 0.2625) = 0.841 GPU-s
    # energy = 2 * ((700-75) W * 0.158 s + (380-75) W * 0.2625 s) = 2 * (98.75 + 80.0625)
    #        = 357.625 J
    g, e, p = serving_profile("H100", "llama-2-70b", 1024, 100, decode_batch=16)
    assert p == pytest.approx(158.0)
    assert g == pytest.approx(0.841)
    assert e == pytest.approx(357.625)


def test_a100_70b_prefill_interpolated_in_tokens():
    # 1536 tokens is halfway between 1024 (377 ms) and 2048 (688 ms): 377 + 311/2 = 532.5 ms.
    # No output tokens: gpu_s = 2 * 0.5325 = 1.065; energy = 2 * (400-63) * 0.5325 = 358.905 J
    g, e, p = serving_profile("A100-80GB", "70b", 1536, 0)
    assert p == pytest.approx(532.5)
    assert g == pytest.approx(1.065)
    assert e == pytest.approx(358.905)


def test_prefill_outside_the_table():
    # Below 128 tokens the 128-token time holds (H100 48 ms); above 8192 the 4096->8192
    # slope (1340-643)/4096 ms/token extrapolates: 10240 -> 1340 + 2048*697/4096 = 1688.5 ms.
    assert prefill_ms("H100", "70b", [0, 64, 128]) == pytest.approx([48.0, 48.0, 48.0])
    assert prefill_ms("H100", "70b", 10240) == pytest.approx(1688.5)


def test_decode_step_interpolated_and_extrapolated_in_batch():
    # H100 batch 24: halfway between 16 (42.0) and 32 (52.3) -> 47.15 ms.
    # Batch 64: 52.3 + 32 * (52.3-42.0)/16 = 52.3 + 20.6 = 72.9 ms.
    # A100 batch 3: halfway between 2 (59.9) and 4 (60.5) -> 60.2 ms.
    assert decode_step_ms("H100", "70b", 24) == pytest.approx(47.15)
    assert decode_step_ms("H100", "70b", 64) == pytest.approx(72.9)
    assert decode_step_ms("A100", "70b", 3) == pytest.approx(60.2)


def test_8b_scaling():
    # Prefill 8B = r * prefill 70B: H100, 2048 tokens -> 0.232821 * 310 = 72.1745 ms.
    # Decode step 8B at batch 16 = r * 42.0 / 0.63 = 15.5214 ms; TP 1.
    # Code class (2048 prompt, 28 output): decode s/request = 28 * 0.0155214 / 16 = 0.0271625 s
    # gpu_s = 0.0721745 + 0.0271625 = 0.099337 GPU-s
    # energy = (700-75) * 0.0721745 + (380-75) * 0.0271625 = 45.1091 + 8.2846 = 53.3937 J
    ratio = serving.PARAM_RATIO_8B
    assert ratio == pytest.approx(R_8B)
    g, e, p = serving_profile("H100", "llama-3.1-8b", 2048, 28, decode_batch=16)
    assert p == pytest.approx(R_8B * 310.0)
    assert p == pytest.approx(72.1745, rel=1e-5)
    assert g == pytest.approx(0.099337, rel=1e-4)
    assert e == pytest.approx(53.3937, rel=1e-4)


def test_8b_energy_per_token_matches_measured_range():
    # Llama-3.1-8B on H100 uses 0.12-0.20 J per token at batch 64.
    # Ours: 380 W * (r * 72.9 ms / 0.63) / 64 = 380 * 0.026941 / 64 = 0.15996 J/token.
    e64 = float(energy_per_output_token_j("H100", "8b", 64))
    assert 0.12 <= e64 <= 0.20
    assert e64 == pytest.approx(0.15996, rel=1e-3)


def test_idle_power():
    assert idle_w("H100") == 75.0
    assert idle_w("a100") == 63.0


def test_energy_is_above_idle_only():
    # Energy must be below what the GPUs draw in total over the request's GPU time.
    for gpu in ("H100", "A100"):
        spec = serving.gpu_spec(gpu)
        g, e, _ = serving_profile(gpu, "70b", 1155, 211)
        assert e < spec.prefill_w * g
        assert e > (spec.decode_w - spec.idle_w) * g * 0.5


def test_batching_lowers_cost_and_h100_beats_a100():
    g16, e16, _ = serving_profile("H100", "70b", 1155, 211, decode_batch=16)
    g32, e32, _ = serving_profile("H100", "70b", 1155, 211, decode_batch=32)
    ga, _, pa = serving_profile("A100", "70b", 1155, 211, decode_batch=16)
    _, _, ph = serving_profile("H100", "70b", 1155, 211, decode_batch=16)
    assert g32 < g16 and e32 < e16
    assert g16 < ga and ph < pa


def test_vectorised_broadcasting():
    g, e, p = serving_profile("H100", "8b", np.array([512, 1024, 2048]), 28)
    assert g.shape == e.shape == p.shape == (3,)
    assert np.all(np.diff(p) > 0)
    g, e, p = serving_profile("H100", "8b", 512, 28, decode_batch=np.array([1.0, 8.0, 64.0]))
    assert g.shape == (3,) and np.all(np.diff(g) < 0)


def test_reference_gpu_s_is_weighted_mean():
    # (3 * 1.0 + 1 * 2.0) / 4 = 1.25
    assert reference_gpu_s([1.0, 2.0], [3.0, 1.0]) == pytest.approx(1.25)
    assert reference_gpu_s([1.0, 2.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        reference_gpu_s([1.0, 2.0], [0.0, 0.0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: serving_profile("V100", "70b", 10, 10), "unknown GPU"),
        (lambda: serving_profile("H100", "gpt-4", 10, 10), "unknown model"),
        (lambda: serving_profile("H100", "70b", 10, 10, decode_batch=0), "decode batch"),
        (lambda: serving_profile("H100", "70b", 10, 10, decode_batch=65), "decode batch"),
        (lambda: serving_profile("H100", "70b", -1, 10), "prompt_tokens"),
        (lambda: serving_profile("H100", "70b", 10, np.nan), "output_tokens"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
