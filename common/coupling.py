"""The coupling rows of the model (docs/model.md §5) and their scaling.

The coordinator enforces, and each site contributes to, one row per interactive
``(region j, class c, step t)`` — ``Σ_i x[i,j,c,t] = D[j,c,t]`` — and one row per
deferrable ``(j, c)`` — ``Σ_i Σ_t x[i,j,c,t] · 3600Δ = V[j,c]``. Both sides must agree on the
order of the rows and on their scaling, so both live here.

Rows are scaled so that every right-hand side is of order one: an interactive row is divided
by its demand (or, where the demand is zero, by a small floor for its class), a deferrable
row by its volume. Unscaled rows differ by orders of magnitude between regions and ADMM
then converges slowly (Boyd et al. 2011, §3.4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A zero-demand interactive row is scaled by this fraction of its class's mean demand.
ZERO_ROW_SCALE_FRACTION = 1e-2


@dataclass(frozen=True)
class CouplingLayout:
    """The order of the coupling rows.

    Interactive rows come first, in ``(j, c, t)`` order over the interactive classes,
    then deferrable rows in ``(j, c)`` order over the deferrable classes.

    Parameters
    ----------
    regions : int
        ``R``.
    deferrable : tuple of bool
        One flag per class (length ``C``).
    steps : int
        ``T``.
    """

    regions: int
    deferrable: tuple[bool, ...]
    steps: int

    @property
    def classes(self) -> int:
        return len(self.deferrable)

    @property
    def interactive_classes(self) -> np.ndarray:
        return np.flatnonzero(~np.asarray(self.deferrable, dtype=bool))

    @property
    def deferrable_classes(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.deferrable, dtype=bool))

    @property
    def n_interactive(self) -> int:
        return self.regions * len(self.interactive_classes) * self.steps

    @property
    def n_rows(self) -> int:
        return self.n_interactive + self.regions * len(self.deferrable_classes)

    def interactive_row(self, j: int, c: int, t: int) -> int:
        """Row of interactive class ``c`` (an index into all classes)."""
        k = int(np.searchsorted(self.interactive_classes, c))
        if k >= len(self.interactive_classes) or self.interactive_classes[k] != c:
            raise ValueError(f"class {c} is not interactive")
        return (j * len(self.interactive_classes) + k) * self.steps + t

    def deferrable_row(self, j: int, c: int) -> int:
        """Row of deferrable class ``c`` (an index into all classes)."""
        k = int(np.searchsorted(self.deferrable_classes, c))
        if k >= len(self.deferrable_classes) or self.deferrable_classes[k] != c:
            raise ValueError(f"class {c} is not deferrable")
        return self.n_interactive + j * len(self.deferrable_classes) + k

    def row_of_entry(self) -> np.ndarray:
        """Integer (R, C, T) array: the row each ``x[·, j, c, t]`` contributes to."""
        R, C, T = self.regions, self.classes, self.steps
        rows = np.empty((R, C, T), dtype=np.int64)
        inter = self.interactive_classes
        defer = self.deferrable_classes
        if len(inter):
            j, k, t = np.meshgrid(np.arange(R), np.arange(len(inter)), np.arange(T), indexing="ij")
            rows[:, inter, :] = (j * len(inter) + k) * T + t
        if len(defer):
            jd, kd = np.meshgrid(np.arange(R), np.arange(len(defer)), indexing="ij")
            rows[:, defer, :] = (self.n_interactive + jd * len(defer) + kd)[:, :, None]
        return rows

    def support(self, allowed_rc: np.ndarray) -> np.ndarray:
        """Sorted rows a site may contribute to, given its allowed (R, C) mask."""
        mask = np.broadcast_to(
            np.asarray(allowed_rc, dtype=bool)[:, :, None], (self.regions, self.classes, self.steps)
        )
        return np.unique(self.row_of_entry()[mask])

    def right_hand_side(self, demand_rps: np.ndarray, batch_requests: np.ndarray) -> np.ndarray:
        """Unscaled ``b``: demand [req/s] on interactive rows, volume [requests] on deferrable."""
        b = np.empty(self.n_rows)
        inter = self.interactive_classes
        b[: self.n_interactive] = np.asarray(demand_rps)[:, inter, :].reshape(-1)
        b[self.n_interactive :] = np.asarray(batch_requests)[:, self.deferrable_classes].reshape(-1)
        return b

    def row_scale(self, demand_rps: np.ndarray, batch_requests: np.ndarray) -> np.ndarray:
        """Positive scale ``s_r`` of every row; the scaled row is ``(Σ_i A_i x_i) / s_r``."""
        b = self.right_hand_side(demand_rps, batch_requests)
        scale = b.copy()
        inter = self.interactive_classes
        n_int = self.n_interactive
        if len(inter):
            per_class = np.asarray(demand_rps)[:, inter, :]  # (R, Ci, T)
            positive = np.where(per_class > 0, per_class, np.nan)
            mean = np.nanmean(positive, axis=(0, 2)) if np.isfinite(positive).any() else None
            floor = np.ones(len(inter))
            if mean is not None:
                floor = np.where(np.isfinite(mean), mean * ZERO_ROW_SCALE_FRACTION, 1.0)
            floor_rows = np.broadcast_to(floor[None, :, None], per_class.shape).reshape(-1)
            scale[:n_int] = np.maximum(scale[:n_int], floor_rows)
        scale[n_int:] = np.maximum(scale[n_int:], 1.0)
        return scale

    def shifted_rows(self, steps: int) -> np.ndarray:
        """For every row of the horizon ``steps`` later, the row of this horizon it continues.

        Interactive row ``(j, c, t)`` continues ``(j, c, t + steps)``; rows past the end
        repeat the last step (a persistence forecast); deferrable rows are themselves.
        """
        source = np.arange(self.n_rows)
        n_int, T = self.n_interactive, self.steps
        if n_int:
            t = source[:n_int] % T
            source[:n_int] = source[:n_int] - t + np.minimum(t + steps, T - 1)
        return source

    def unpack(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split a per-row vector into (R, C, T) interactive and (R, C) deferrable arrays.

        Entries of classes of the other kind are zero.
        """
        R, C, T = self.regions, self.classes, self.steps
        inter, defer = self.interactive_classes, self.deferrable_classes
        per_step = np.zeros((R, C, T))
        per_horizon = np.zeros((R, C))
        per_step[:, inter, :] = np.asarray(rows[: self.n_interactive]).reshape(R, len(inter), T)
        per_horizon[:, defer] = np.asarray(rows[self.n_interactive :]).reshape(R, len(defer))
        return per_step, per_horizon


def coefficient_of_entry(layout: CouplingLayout, step_seconds: float) -> np.ndarray:
    """(C,) unscaled coefficient of ``x`` in its row: 1 (interactive) or ``3600Δ`` (deferrable)."""
    return np.where(np.asarray(layout.deferrable, dtype=bool), step_seconds, 1.0)


def shift_steps(values: np.ndarray, steps: int) -> np.ndarray:
    """``values`` with its last axis (time steps) moved ``steps`` to the left and the last
    step repeated to fill the end: the receding horizon's persistence forecast."""
    k = min(int(steps), values.shape[-1] - 1)
    if k <= 0:
        return values.copy()
    return np.concatenate([values[..., k:], np.repeat(values[..., -1:], k, axis=-1)], axis=-1)
