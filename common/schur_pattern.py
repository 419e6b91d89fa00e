"""Where the coupling rows' Schur complement can be non-zero: one fixed pattern per layout.

In the distributed interior-point method (:mod:`thermoroute.coordinator.ipm`) each site contributes
``A_i K_i⁻¹ A_iᵀ`` to the coordinator's ``m × m`` matrix. A site's variables of step ``t``
touch the interactive rows of step ``t`` and the deferrable rows, and ``K_i⁻¹`` couples them
only within a step (its Hessian is diagonal plus one rank-one term per step). So whatever the
sites, the sum lives in the union over ``t`` of the blocks ``I_t × I_t`` with ``I_t`` the
interactive rows of ``t`` plus every deferrable row. The pattern depends on the layout only,
so every site can write its contribution into the same vector and the contributions can be
summed — and masked — entry by entry (:mod:`thermoroute.common.secure_aggregation`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from thermoroute.common.coupling import CouplingLayout


class SchurPattern:
    """The lower triangle of the union of the per-step blocks, as one flat vector.

    A site with a model v1.1 water allowance (docs/model.md §12) has a constraint over a
    day of steps, which couples the rows of those steps in its ``K⁻¹``: with
    ``across_steps`` the pattern is the whole lower triangle. The coordinator picks it for a
    run when the masked count of such sites is not zero (:mod:`thermoroute.coordinator.ipm`).

    Parameters
    ----------
    layout : CouplingLayout
    across_steps : bool
        One block over every row (default: one per step).

    Attributes
    ----------
    rows, cols : ndarray of int64 (nnz,)
        Entry ``k`` is ``(rows[k], cols[k])`` with ``rows[k] ≥ cols[k]``, sorted by key.
    """

    def __init__(self, layout: CouplingLayout, *, across_steps: bool = False) -> None:
        self.n_rows = layout.n_rows
        self.across_steps = across_steps
        row_of = layout.row_of_entry()  # (R, C, T)
        defer_rows = np.arange(layout.n_interactive, layout.n_rows, dtype=np.int64)
        inter = layout.interactive_classes
        keys = []
        blocks = [range(layout.steps)] if across_steps else [[t] for t in range(layout.steps)]
        for steps in blocks:
            block = np.concatenate([row_of[:, inter][:, :, list(steps)].reshape(-1), defer_rows])
            r, c = np.meshgrid(block, block, indexing="ij")
            lower = r >= c
            keys.append(r[lower] * self.n_rows + c[lower])
        self._keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        self.rows = self._keys // self.n_rows
        self.cols = self._keys % self.n_rows

    @property
    def size(self) -> int:
        """Entries of the flat vector."""
        return int(self._keys.size)

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether each entry ``(rows, cols)`` (either triangle) is in the pattern."""
        r, c = np.maximum(rows, cols), np.minimum(rows, cols)
        keys = np.asarray(r, dtype=np.int64) * self.n_rows + c
        pos = np.minimum(np.searchsorted(self._keys, keys), max(self.size - 1, 0))
        return self._keys[pos] == keys if self.size else np.zeros(keys.shape, dtype=bool)

    def positions(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Flat positions of the entries ``(rows, cols)`` (either triangle).

        Raises
        ------
        ValueError
            An entry outside the pattern.
        """
        r, c = np.maximum(rows, cols), np.minimum(rows, cols)
        keys = np.asarray(r, dtype=np.int64) * self.n_rows + c
        pos = np.searchsorted(self._keys, keys)
        if keys.size and (pos.max() >= self.size or np.any(self._keys[pos] != keys)):
            raise ValueError("an entry outside the Schur pattern of the layout")
        return pos

    def dense(self, values: np.ndarray) -> np.ndarray:
        """The symmetric ``m × m`` matrix of a flat vector."""
        out = np.zeros((self.n_rows, self.n_rows))
        out[self.rows, self.cols] = values
        out[self.cols, self.rows] = values
        return out


def factor(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cholesky factor of a symmetric positive definite matrix, for :func:`solve`.

    A tiny diagonal shift (1e-13 relative) guards against round-off as the interior point
    converges; rows without any entry (no site serves them) get a unit diagonal, which
    leaves their price unchanged.
    """
    m = matrix.copy()
    diag = np.diag(m).copy()
    empty = diag == 0
    diag[empty] = 1.0
    scale = max(float(np.abs(diag).max(initial=1.0)), 1.0)
    np.fill_diagonal(m, diag + 1e-13 * scale)
    return scipy.linalg.cho_factor(m, lower=True, check_finite=False)


def solve(factored: tuple[np.ndarray, bool], rhs: np.ndarray) -> np.ndarray:
    """Solve with a factor from :func:`factor`."""
    return scipy.linalg.cho_solve(factored, rhs, check_finite=False)
