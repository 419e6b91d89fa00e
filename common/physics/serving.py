r"""LLM serving performance: GPU-seconds, energy and prefill time per request.

A small, documented performance table of two GPUs (H100-80GB, A100-80GB) serving two model
classes, and pure vectorised functions that turn a request class (prompt and output tokens)
into the serving profile of ``profiles.csv`` (docs/model.md §3, §8):

- ``gpu_s`` — GPU-seconds of work per request [s]: ``TP · (prefill_s + output · step_s / B)``;
- ``energy_j`` — incremental IT energy per request above idle [J]: the idle power of every
  powered GPU is charged separately through ``idle_w · n`` (docs/model.md §3), so only the part of
  the active power above idle is attributed to requests;
- ``prefill_ms`` — time to process the prompt at batch 1 [ms], the service part of TTFT.

Models
------
``llama-2-70b`` (tensor parallel 2, FP16): measured Splitwise profile [1]_, prefill
time interpolated linearly in prompt tokens, decode time per step interpolated linearly in
batch size (and extrapolated linearly from the last segment up to batch 64).

``llama-3.1-8b`` (tensor parallel 1, BF16): derived from the 70B figures by scaling.

* Prefill is compute bound: its FLOPs are ``≈ 2 · N_params`` per token, so at equal hardware
  efficiency the time per GPU scales with the parameters *held by each GPU*:
  ``r = (8.03e9 / 1) / (68.98e9 / 2) = 0.2328``. The 8B model's smaller GEMMs run somewhat
  less efficiently, which roughly offsets the 70B's tensor-parallel all-reduce overhead, so
  ``prefill_8b(p) = r · prefill_70b(p)``.
* Decode is memory-bandwidth bound: every step streams the weights held by each GPU, again in
  the ratio ``r``. Small models reach a lower fraction of peak bandwidth (kernel-launch and
  scheduling overheads are a larger share of a short step), so
  ``step_8b(B) = r · step_70b(B) / η`` with one efficiency factor ``η = 0.63``, calibrated so
  that the 8B model on an H100 uses 0.16 J per output token at batch 64 (total decode power),
  the midpoint of the measured 0.12–0.20 J/token [4]_. Without ``η`` the pure
  bandwidth scaling gives 0.10 J/token, below the measured range.

Powers per GPU ([1]_): H100 ~75 W idle, ~700 W during prefill, ~380 W during
decode; A100 ~63 / 400 / 250 W.

GPU time of prefill uses the batch-1 prefill time of the table: prefill is close to linear in
batch × prompt tokens once the GPU is saturated, so batching prompts does not make
them cheaper; for short prompts (below ~512 tokens) this slightly over-counts.

References
----------
.. [1] P. Patel, E. Choukse, C. Zhang, A. Shah, Í. Goiri, S. Maleki, R. Bianchini,
   "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024; public
   simulator performance profile of Llama-2-70B on A100/H100 (github.com/Mutinifni/splitwise-sim).
.. [2] H. Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models",
   arXiv:2307.09288, 2023 (68.98e9 parameters for the 70B model).
.. [3] A. Grattafiori et al., "The Llama 3 Herd of Models", arXiv:2407.21783, 2024
   (8.03e9 parameters for Llama-3.1-8B).
.. [4] J. Chung et al., "The ML.ENERGY Benchmark", arXiv:2505.06371, 2025 (energy per output
   token of Llama-3.1-8B on H100).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: Prompt lengths of the measured prefill table [tokens].
PREFILL_TOKENS = np.array([128, 256, 512, 1024, 2048, 4096, 8192], dtype=float)
#: Decode batch sizes of the measured decode table [requests].
DECODE_BATCH = np.array([1, 2, 4, 8, 16, 32], dtype=float)
#: Largest decode batch accepted; beyond the table (32) the last segment is extrapolated.
MAX_DECODE_BATCH = 64.0
#: Default decode batch: the knee of the decode table (flat up to ~16).
DEFAULT_DECODE_BATCH = 16.0

#: Parameter counts [–] of the two model classes ([2]_, [3]_).
PARAMS_70B = 68.98e9
PARAMS_8B = 8.03e9
#: Ratio of parameters held per GPU, 8B on one GPU over 70B on two GPUs [–].
PARAM_RATIO_8B = (PARAMS_8B / 1.0) / (PARAMS_70B / 2.0)
#: Decode efficiency of the 8B model relative to the 70B model [–] (module docstring).
DECODE_EFFICIENCY_8B = 0.63


@dataclass(frozen=True)
class GpuSpec:
    """Measured figures of one GPU type serving Llama-2-70B with tensor parallelism 2.

    Attributes
    ----------
    name : str
        Canonical name.
    idle_w, prefill_w, decode_w : float
        Power per GPU when idle, during prefill and during decode [W].
    prefill_ms : ndarray
        Prefill time of Llama-2-70B at batch 1 for :data:`PREFILL_TOKENS` prompt tokens [ms].
    decode_ms : ndarray
        Decode time per step (one token for every request in the batch) of Llama-2-70B at
        prompt 512 for :data:`DECODE_BATCH` requests [ms].
    """

    name: str
    idle_w: float
    prefill_w: float
    decode_w: float
    prefill_ms: np.ndarray
    decode_ms: np.ndarray


GPUS: dict[str, GpuSpec] = {
    "H100": GpuSpec(
        name="H100",
        idle_w=75.0,
        prefill_w=700.0,
        decode_w=380.0,
        prefill_ms=np.array([48.0, 52.0, 84.0, 158.0, 310.0, 643.0, 1340.0]),
        decode_ms=np.array([37.0, 37.4, 40.0, 40.4, 42.0, 52.3]),
    ),
    "A100": GpuSpec(
        name="A100",
        idle_w=63.0,
        prefill_w=400.0,
        decode_w=250.0,
        prefill_ms=np.array([81.0, 113.0, 196.0, 377.0, 688.0, 1485.0, 2990.0]),
        decode_ms=np.array([54.9, 59.9, 60.5, 61.7, 65.5, 72.2]),
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A model class: tensor parallelism and its time scaling relative to Llama-2-70B.

    Attributes
    ----------
    name : str
        Canonical name, as written in ``classes.csv``.
    tensor_parallel : int
        GPUs serving one replica [–].
    prefill_scale, decode_scale : float
        Multipliers of the Llama-2-70B prefill time and decode step time [–].
    """

    name: str
    tensor_parallel: int
    prefill_scale: float
    decode_scale: float


MODELS: dict[str, ModelSpec] = {
    "llama-2-70b": ModelSpec("llama-2-70b", 2, 1.0, 1.0),
    "llama-3.1-8b": ModelSpec(
        "llama-3.1-8b", 1, PARAM_RATIO_8B, PARAM_RATIO_8B / DECODE_EFFICIENCY_8B
    ),
}

_GPU_ALIASES = {"h100": "H100", "h100-80gb": "H100", "a100": "A100", "a100-80gb": "A100"}
_MODEL_ALIASES = {
    "llama-2-70b": "llama-2-70b",
    "llama2-70b": "llama-2-70b",
    "70b": "llama-2-70b",
    "llama-3.1-8b": "llama-3.1-8b",
    "llama3.1-8b": "llama-3.1-8b",
    "8b": "llama-3.1-8b",
}


def gpu_spec(gpu: str) -> GpuSpec:
    """The :class:`GpuSpec` of ``gpu`` (``"H100"``, ``"A100"``, case-insensitive, ``-80GB``).

    Raises
    ------
    ValueError
        For an unknown GPU, listing the known ones.
    """
    key = _GPU_ALIASES.get(str(gpu).strip().lower())
    if key is None:
        raise ValueError(f"unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    return GPUS[key]


def model_spec(model: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``model``: ``"llama-2-70b"`` (``"70b"``) or ``"llama-3.1-8b"``.

    Raises
    ------
    ValueError
        For an unknown model, listing the known ones.
    """
    key = _MODEL_ALIASES.get(str(model).strip().lower())
    if key is None:
        raise ValueError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    return MODELS[key]


def idle_w(gpu: str) -> float:
    """Idle power of one powered GPU [W].

    Parameters
    ----------
    gpu : str
        ``"H100"`` or ``"A100"``.

    Returns
    -------
    float
        75 W for an H100-80GB, 63 W for an A100-80GB.

    References
    ----------
    .. [1] Patel et al., Splitwise, ISCA 2024.
    """
    return gpu_spec(gpu).idle_w


def prefill_ms(gpu: str, model: str, prompt_tokens: ArrayLike) -> np.ndarray:
    """Prefill time of a request at batch 1 [ms].

    Linear interpolation of the measured Llama-2-70B table in prompt tokens; below 128 tokens
    the 128-token time is used (the fixed cost dominates), above 8,192 tokens the last
    segment is extrapolated linearly. Other models scale the result (module docstring).

    Parameters
    ----------
    gpu : str
        ``"H100"`` or ``"A100"``.
    model : str
        ``"llama-2-70b"`` or ``"llama-3.1-8b"``.
    prompt_tokens : array_like
        Prompt length [tokens], ≥ 0.

    Returns
    -------
    ndarray
        [ms], the shape of ``prompt_tokens``.

    References
    ----------
    .. [1] Patel et al., Splitwise, ISCA 2024 (public performance profile).
    """
    spec, m = gpu_spec(gpu), model_spec(model)
    p = np.asarray(prompt_tokens, dtype=float)
    if np.any(p < 0) or np.any(~np.isfinite(p)):
        raise ValueError("prompt_tokens must be finite and >= 0")
    base = np.interp(p, PREFILL_TOKENS, spec.prefill_ms)
    slope = (spec.prefill_ms[-1] - spec.prefill_ms[-2]) / (PREFILL_TOKENS[-1] - PREFILL_TOKENS[-2])
    base = np.where(
        p > PREFILL_TOKENS[-1], spec.prefill_ms[-1] + slope * (p - PREFILL_TOKENS[-1]), base
    )
    return m.prefill_scale * base


def decode_step_ms(gpu: str, model: str, batch: ArrayLike = DEFAULT_DECODE_BATCH) -> np.ndarray:
    """Time of one decode step, which yields one token for each request in the batch [ms].

    Linear interpolation of the measured Llama-2-70B table in batch size, extrapolated
    linearly from the 16→32 segment up to :data:`MAX_DECODE_BATCH`; other models scale it.

    Parameters
    ----------
    gpu : str
        ``"H100"`` or ``"A100"``.
    model : str
        ``"llama-2-70b"`` or ``"llama-3.1-8b"``.
    batch : array_like
        Decode batch size [requests], 1 … 64.

    Returns
    -------
    ndarray
        [ms], the shape of ``batch``.

    References
    ----------
    .. [1] Patel et al., Splitwise, ISCA 2024 (public performance profile).
    """
    spec, m = gpu_spec(gpu), model_spec(model)
    b = np.asarray(batch, dtype=float)
    if np.any(~np.isfinite(b)) or np.any(b < 1) or np.any(b > MAX_DECODE_BATCH):
        raise ValueError(f"decode batch must be within [1, {MAX_DECODE_BATCH:g}]")
    base = np.interp(b, DECODE_BATCH, spec.decode_ms)
    slope = (spec.decode_ms[-1] - spec.decode_ms[-2]) / (DECODE_BATCH[-1] - DECODE_BATCH[-2])
    base = np.where(b > DECODE_BATCH[-1], spec.decode_ms[-1] + slope * (b - DECODE_BATCH[-1]), base)
    return m.decode_scale * base


def energy_per_output_token_j(
    gpu: str, model: str, batch: ArrayLike = DEFAULT_DECODE_BATCH, *, above_idle: bool = False
) -> np.ndarray:
    """Decode energy per generated token, all GPUs of the replica together [J/token].

    Parameters
    ----------
    gpu, model : str
        As in :func:`serving_profile`.
    batch : array_like
        Decode batch size [requests].
    above_idle : bool
        Count only the power above idle (as ``energy_j`` does) instead of the total power.

    Returns
    -------
    ndarray
        [J/token].
    """
    spec, m = gpu_spec(gpu), model_spec(model)
    power = spec.decode_w - (spec.idle_w if above_idle else 0.0)
    b = np.asarray(batch, dtype=float)
    return m.tensor_parallel * power * decode_step_ms(gpu, model, b) / 1000.0 / b


def serving_profile(
    gpu: str,
    model: str,
    prompt_tokens: ArrayLike,
    output_tokens: ArrayLike,
    decode_batch: ArrayLike = DEFAULT_DECODE_BATCH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Serving profile of a request class: GPU-seconds, energy above idle and prefill time.

    With tensor parallelism ``TP``, prefill time ``τ_p`` [s], decode step time ``τ_d`` [s] at
    batch ``B`` and ``o`` output tokens:

    .. math::
        \mathrm{gpu\_s} = TP\,(\tau_p + o\,\tau_d / B), \qquad
        \mathrm{energy\_j} = TP\,\big((P_{pre} - P_{idle})\,\tau_p
            + (P_{dec} - P_{idle})\,o\,\tau_d / B\big)

    Parameters
    ----------
    gpu : str
        ``"H100"`` or ``"A100"``.
    model : str
        ``"llama-2-70b"`` (TP 2) or ``"llama-3.1-8b"`` (TP 1).
    prompt_tokens, output_tokens : array_like
        Mean prompt and output length of the class [tokens]; broadcast together.
    decode_batch : array_like
        Decode batch size [requests], 1 … 64 (default 16).

    Returns
    -------
    gpu_s : ndarray
        GPU-seconds per request [s].
    energy_j : ndarray
        Incremental IT energy per request above idle [J].
    prefill_ms : ndarray
        Prefill time at batch 1 [ms].

    Examples
    --------
    >>> g, e, p = serving_profile("H100", "llama-2-70b", 1024, 100)
    >>> round(float(p), 1), round(float(g), 3)
    (158.0, 0.841)

    References
    ----------
    .. [1] Patel et al., Splitwise, ISCA 2024 (powers and tables).
    """
    spec, m = gpu_spec(gpu), model_spec(model)
    out = np.asarray(output_tokens, dtype=float)
    if np.any(out < 0) or np.any(~np.isfinite(out)):
        raise ValueError("output_tokens must be finite and >= 0")
    b = np.asarray(decode_batch, dtype=float)
    pre_ms = prefill_ms(gpu, model, prompt_tokens)
    step_s = decode_step_ms(gpu, model, b) / 1000.0
    pre_s = pre_ms / 1000.0
    decode_s = out * step_s / b  # replica-seconds of decode attributed to one request
    tp = float(m.tensor_parallel)
    gpu_s = tp * (pre_s + decode_s)
    energy = tp * (
        (spec.prefill_w - spec.idle_w) * pre_s + (spec.decode_w - spec.idle_w) * decode_s
    )
    gpu_s, energy, pre_ms = np.broadcast_arrays(gpu_s, energy, pre_ms)
    return np.array(gpu_s), np.array(energy), np.array(pre_ms)


def reference_gpu_s(gpu_s: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Reference GPU-seconds per request for the congestion term (``ref_gpu_s``, docs/model.md §3).

    The congestion term converts busy GPUs into requests per second as ``L / ref_gpu_s``; the
    natural reference is the request-weighted mean GPU-seconds of the classes a site serves.

    Parameters
    ----------
    gpu_s : array_like, shape (C,)
        GPU-seconds per request of each class at the site [s].
    weights : array_like, shape (C,), optional
        Expected share of requests of each class [–] (need not sum to 1); equal by default.

    Returns
    -------
    float
        ``Σ w·gpu_s / Σ w`` [s].
    """
    g = np.asarray(gpu_s, dtype=float).reshape(-1)
    w = np.ones_like(g) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if g.shape != w.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative, not all zero, one per class")
    return float((w * g).sum() / w.sum())


__all__ = [
    "GPUS",
    "MODELS",
    "GpuSpec",
    "ModelSpec",
    "decode_step_ms",
    "energy_per_output_token_j",
    "gpu_spec",
    "idle_w",
    "model_spec",
    "prefill_ms",
    "reference_gpu_s",
    "serving_profile",
]
