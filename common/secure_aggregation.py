"""Secure aggregation: the coordinator learns the sum of the parties' vectors and nothing else.

Pairwise additive masking (Bonawitz et al. 2017) over a sparse random graph of neighbours
(Bell et al. 2020), with an exact fixed-point encoding so that the masks cancel to the bit.

Encoding
--------
A float ``v`` becomes the integer ``round_toward_zero(v · 2^64)`` modulo ``2^128``, held as two
``uint64`` words (low, high): 64 fractional bits and 63 integer bits with two's complement
for the sign. Every float whose last bit is worth at least ``2^-64`` (``|v| ≥ 2^-11``) is
encoded exactly; smaller values lose less than ``2^-64`` in absolute terms. Sums are exact
integers modulo ``2^128``, and the decoded sum is the correctly rounded float of that integer:
relative error ≤ 2^-53 wherever the terms are ≥ 2^-11, whatever the dynamic range between
entries (an interior point's Schur entries span 20 orders of magnitude as μ → 0, where float
masks would drown the small entries). Values and sums must stay below :data:`LIMIT` (2^62).

Masks
-----
Each pair of neighbouring parties agrees on a key by X25519 (public keys relayed by the
coordinator, which cannot derive the key) and HKDF-SHA256 bound to the run id. The mask of
a message is the ChaCha20 keystream of that key under a nonce made of the message's
``(message number, round)``, which the protocol makes unique for every message under a key
(reproducible by both ends); a masker refuses to mask twice under one nonce, since two
messages under one keystream would give away their difference. The party with
the lower index adds the mask, the other subtracts it, so the masks cancel in the sum. Every
masked vector a party sends is uniformly distributed over ``Z_{2^128}^n`` to anyone without
one of its pairwise keys.

Threat model (docs/model.md §11): an honest-but-curious coordinator sees only the sum over
all parties. Collusion of the coordinator with *all* neighbours of a party reveals that
party's vector; with a random graph of degree ``O(log N)`` a coalition of a small fraction
of parties rarely covers a whole neighbourhood. A sum can still reveal a single party's
value where only that party contributes (a coupling row only one site can serve), and it
reveals the count of parties on which the sum is taken. A party that drops out mid-round
leaves its masks uncancelled: the round must be repeated (the caller's job).

References
----------
.. [1] K. Bonawitz, V. Ivanov, B. Kreuter, A. Marcedone, H. B. McMahan, S. Patel, D. Ramage,
   A. Segal, K. Seth, "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
   ACM CCS 2017.
.. [2] J. Bell, K. A. Bonawitz, A. Gascón, T. Lepoint, M. Raykova, "Secure Single-Server
   Aggregation with (Poly)Logarithmic Overhead", ACM CCS 2020.
.. [3] D. J. Bernstein, "ChaCha, a variant of Salsa20", 2008; RFC 7748 (X25519); RFC 5869
   (HKDF).
"""

from __future__ import annotations

import math
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: Fractional bits of the fixed-point encoding.
FRACTION_BITS = 64
#: Largest magnitude a value or a sum may have (63 integer bits, one for the sign, one spare).
LIMIT = 2.0**62
_TWO_64 = 2.0**64


class NonceReuse(RuntimeError):
    """A second message masked under one nonce and key (it would reveal the difference)."""


class EncodingError(ValueError):
    """A value that the fixed-point encoding cannot hold (not finite, or too large)."""


# ----------------------------------------------------------------------------------------
# Exact fixed point modulo 2^128: arrays of shape (2, n), row 0 the low word, row 1 the high.


def _negate(words: np.ndarray) -> np.ndarray:
    """Two's complement negation modulo 2^128."""
    lo = ~words[0] + np.uint64(1)
    hi = ~words[1] + (lo == 0).astype(np.uint64)
    return np.stack([lo, hi])


def encode(values: np.ndarray) -> np.ndarray:
    """Floats to fixed point modulo 2^128, shape ``(2, n)`` of ``uint64``.

    Raises
    ------
    EncodingError
        A value is NaN, infinite or of magnitude ≥ :data:`LIMIT`.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)) or np.any(np.abs(v) >= LIMIT):
        bad = v[~np.isfinite(v) | (np.abs(v) >= LIMIT)][0]
        raise EncodingError(f"cannot encode {bad!r}: values must be finite and below 2^62")
    mag = np.abs(v)
    whole = np.floor(mag)  # exact
    frac = np.ldexp(mag - whole, FRACTION_BITS)  # mag − whole is exact for mag < 2^52
    words = np.stack([frac.astype(np.uint64), whole.astype(np.uint64)])
    negative = v < 0
    if negative.any():
        words[:, negative] = _negate(words[:, negative])
    return words


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` modulo 2^128."""
    lo = a[0] + b[0]  # uint64 arithmetic wraps
    carry = (lo < a[0]).astype(np.uint64)
    return np.stack([lo, a[1] + b[1] + carry])


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a − b`` modulo 2^128."""
    return add(a, _negate(b))


def decode(words: np.ndarray) -> np.ndarray:
    """Fixed point modulo 2^128 to floats (the high word's top bit is the sign).

    Raises
    ------
    EncodingError
        The value is beyond :data:`LIMIT`: a sum overflowed, or the masks did not cancel
        (a party's contribution is missing).
    """
    negative = (words[1] >> np.uint64(63)).astype(bool)
    mag = words.copy()
    if negative.any():
        mag[:, negative] = _negate(words[:, negative])
    out = mag[1].astype(np.float64) + np.ldexp(mag[0].astype(np.float64), -FRACTION_BITS)
    if np.any(out >= LIMIT):
        raise EncodingError(
            "an aggregate is out of range: a sum overflowed or the masks did not cancel "
            "(a party's contribution is missing)"
        )
    return np.where(negative, -out, out)


def total(parts: Iterable[np.ndarray]) -> np.ndarray:
    """Sum of encoded vectors modulo 2^128."""
    acc: np.ndarray | None = None
    for part in parts:
        acc = part.copy() if acc is None else add(acc, part)
    if acc is None:
        raise ValueError("nothing to sum")
    return acc


# ----------------------------------------------------------------------------------------
# The neighbour graph


def mask_degree(n_parties: int) -> int:
    """Neighbours each party masks with: everyone for small fleets, else ~``2 log2 N + 2``."""
    if n_parties <= 1:
        return 0
    return min(n_parties - 1, 2 * math.ceil(math.log2(n_parties)) + 2)


def neighbour_graph(n_parties: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """A connected random graph of degree ``≈ mask_degree(N)`` (Bell et al. 2020).

    A ring (connectivity, so the masks leave nothing but the total) plus, for every party,
    ``mask_degree/2 − 1`` partners drawn uniformly by a generator seeded with ``seed`` (the
    coordinator draws it fresh per run). Complete when the fleet is small. The ring also
    keeps the graph connected without any one party, which is what keeps a relay of tree
    aggregation from reading its members (:mod:`thermoroute.common.aggregation_tree`).

    Returns
    -------
    tuple of tuple of int
        The sorted neighbours of each party.
    """
    if n_parties < 1:
        raise ValueError("at least one party")
    k = mask_degree(n_parties)
    if k >= n_parties - 1:
        return tuple(tuple(j for j in range(n_parties) if j != i) for i in range(n_parties))
    rng = np.random.default_rng(seed)
    edges: set[tuple[int, int]] = set()
    for i in range(n_parties):
        j = (i + 1) % n_parties
        edges.add((min(i, j), max(i, j)))
        others = rng.choice(n_parties - 1, size=max(k // 2 - 1, 0), replace=False)
        for o in others:
            j = int(o) + (o >= i)  # skip i itself
            edges.add((min(i, j), max(i, j)))
    near: list[set[int]] = [set() for _ in range(n_parties)]
    for i, j in edges:
        near[i].add(j)
        near[j].add(i)
    return tuple(tuple(sorted(s)) for s in near)


# ----------------------------------------------------------------------------------------
# Keys and masks


def _public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class MaskingSetup:
    """What the coordinator relays to one party after every party sent its public key.

    Attributes
    ----------
    run_id : str
        Binds the keys to one run: a new run derives new keys.
    index : int
        The party's position in the fleet (the lower of two indices adds the pair's mask).
    peer_keys : dict
        ``{neighbour index: its X25519 public key (32 raw bytes)}``.
    """

    run_id: str
    index: int
    peer_keys: Mapping[int, bytes]


def masking_setups(run_id: str, keys: Sequence[bytes]) -> dict[int, MaskingSetup] | None:
    """What the coordinator relays to each party, given every party's public key: the keys
    of its neighbours in a graph drawn fresh (:func:`neighbour_graph`). ``None`` for a single
    party — its "sum" is its own value, which no mask can hide."""
    if len(keys) < 2:
        return None
    graph = neighbour_graph(len(keys), secrets.randbits(63))
    return {g: MaskingSetup(run_id, g, {j: keys[j] for j in graph[g]}) for g in range(len(keys))}


class PairwiseMasker:
    """One party's side of secure aggregation: a key pair, then masks for its messages.

    Created with a fresh X25519 key pair; :attr:`public_key` goes to the coordinator, which
    relays the neighbours' keys in a :class:`MaskingSetup`; :meth:`mask` then encodes and
    masks any vector of floats for one ``(message, round)``, once.
    """

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self._keys: dict[int, bytes] = {}
        self._index: int | None = None
        self._used: set[tuple[int, int]] = set()

    @property
    def public_key(self) -> bytes:
        """The 32-byte X25519 public key to relay to the neighbours."""
        return _public_bytes(self._private.public_key())

    @property
    def ready(self) -> bool:
        return self._index is not None

    def configure(self, setup: MaskingSetup) -> None:
        """Derive one key per neighbour (X25519 then HKDF-SHA256, bound to the run)."""
        own = self.public_key
        keys = {}
        for peer, public in setup.peer_keys.items():
            if peer == setup.index:
                raise ValueError("a party is not its own neighbour")
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(public))
            low, high = sorted((own, public))
            info = b"thermoroute/mask/v1|" + setup.run_id.encode() + b"|" + low + high
            keys[int(peer)] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=info
            ).derive(shared)
        self._keys = keys
        self._index = int(setup.index)
        self._used = set()  # new keys, new keystreams

    def mask(self, values: np.ndarray, message: int, round_id: int) -> np.ndarray:
        """``encode(values)`` plus this party's pairwise masks for ``(message, round_id)``.

        Raises
        ------
        NonceReuse
            This masker masked under ``(message, round_id)`` before.
        """
        if self._index is None:
            raise RuntimeError("configure the masker with its neighbours' keys first")
        used = (int(message), int(round_id))
        if used in self._used:
            raise NonceReuse(f"masks for message {message}, round {round_id} were used already")
        self._used.add(used)
        words = encode(values)
        n = words.shape[1]
        nonce = struct.pack("<IQI", 0, *used)  # block counter, then the 12-byte nonce
        for peer, key in self._keys.items():
            stream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
            raw = stream.update(bytes(16 * n))
            pad = np.frombuffer(raw, dtype=np.uint64).reshape(n, 2).T
            words = add(words, pad) if self._index < peer else subtract(words, pad)
        return words


def unmask_sum(masked: Sequence[np.ndarray]) -> np.ndarray:
    """The float sum of every party's masked vector (the masks cancel)."""
    return decode(total(masked))
