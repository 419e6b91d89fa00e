"""The fleet's coupling structure: which site touches which coupling row, stacked.

Every distributed method works on it: the coordinator stacks every site's support entries in one
vector, sites in the fleet's order (:class:`ExchangeStructure`), built once the sites have
registered (:func:`build_structure`), which also refuses a fleet that cannot serve some demand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.scenario import DemandView


class CouplingError(ValueError):
    """A coupling row with demand that no site can serve."""


@dataclass(frozen=True)
class ExchangeStructure:
    """Which site touches which coupling row, in the coordinator's stacked order.

    Attributes
    ----------
    site_ids : tuple of str
        Sites in stacked order.
    rows : ndarray of int64 (n,)
        Global row of every stacked entry: site 0's support, then site 1's, …
    offsets : ndarray of int64 (S + 1,)
        Site ``k``'s entries are ``rows[offsets[k]:offsets[k+1]]``.
    counts : ndarray of int64 (m,)
        ``|S_r|``; zero for rows no site serves (their ``b_r`` is zero).
    b : ndarray (m,)
        Scaled right-hand side.
    row_scale : ndarray (m,)
        ``s_r``: a scaled row is the raw row divided by ``s_r``.
    """

    site_ids: tuple[str, ...]
    rows: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    b: np.ndarray
    row_scale: np.ndarray

    @property
    def n_entries(self) -> int:
        return int(self.rows.size)

    @property
    def n_rows(self) -> int:
        return int(self.b.size)

    def site_slice(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def support(self, k: int) -> np.ndarray:
        return self.rows[self.site_slice(k)]

    def row_sum(self, stacked: np.ndarray) -> np.ndarray:
        """``Σ_{i∈S_r} v_{i,r}`` for every row (zero where no site serves)."""
        return np.bincount(self.rows, weights=stacked, minlength=self.n_rows)

    def spread(self, per_row: np.ndarray) -> np.ndarray:
        """A per-row vector repeated once per stacked entry."""
        return per_row[self.rows]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The structure as named arrays (for a state file; the site ids as strings)."""
        return {
            "site_ids": np.array(self.site_ids, dtype=str),
            "rows": self.rows.copy(),
            "offsets": self.offsets.copy(),
            "counts": self.counts.copy(),
            "b": self.b.copy(),
            "row_scale": self.row_scale.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ExchangeStructure:
        """The structure :meth:`to_arrays` gave.

        Raises
        ------
        KeyError
            An array is missing.
        """
        return cls(
            site_ids=tuple(str(s) for s in arrays["site_ids"]),
            rows=np.asarray(arrays["rows"], dtype=np.int64),
            offsets=np.asarray(arrays["offsets"], dtype=np.int64),
            counts=np.asarray(arrays["counts"], dtype=np.int64),
            b=np.asarray(arrays["b"], dtype=float),
            row_scale=np.asarray(arrays["row_scale"], dtype=float),
        )


def row_label(view: DemandView, layout: CouplingLayout, row: int) -> str:
    """``region/class@time`` (interactive) or ``region/class`` (deferrable) of a row."""
    inter, defer = layout.interactive_classes, layout.deferrable_classes
    if row < layout.n_interactive:
        j, rest = divmod(row, len(inter) * layout.steps)
        k, t = divmod(rest, layout.steps)
        c = int(inter[k])
        when = view.times[t].isoformat()
        return f"region {view.regions.region_id[j]!r}, class {view.classes.class_id[c]!r} at {when}"
    j, k = divmod(row - layout.n_interactive, len(defer))
    c = int(defer[k])
    return f"region {view.regions.region_id[j]!r}, class {view.classes.class_id[c]!r} (volume)"


def build_structure(
    view: DemandView,
    layout: CouplingLayout,
    row_scale: np.ndarray,
    site_ids: Sequence[str],
    supports: Sequence[np.ndarray],
) -> ExchangeStructure:
    """Stack the sites' supports and check that every row with demand is served.

    Raises
    ------
    CouplingError
        Naming the region and class of every row with non-zero demand and empty ``S_r``.
    """
    b_raw = layout.right_hand_side(view.demand_rps, view.batch_requests)
    b = b_raw / row_scale
    sizes = [len(s) for s in supports]
    rows = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in supports])
        if supports
        else np.zeros(0, dtype=np.int64)
    )
    if rows.size and (rows.min() < 0 or rows.max() >= layout.n_rows):
        raise ValueError("a site reported a support row outside the coupling layout")
    for sid, s in zip(site_ids, supports, strict=True):
        s = np.asarray(s)
        if s.size > 1 and np.any(np.diff(s) <= 0):
            raise ValueError(f"site {sid!r} reported an unsorted or repeated support")
    counts = np.bincount(rows, minlength=layout.n_rows).astype(np.int64)
    orphan = np.flatnonzero((counts == 0) & (b_raw != 0))
    if orphan.size:
        shown = "; ".join(row_label(view, layout, int(r)) for r in orphan[:10])
        more = f" (and {orphan.size - 10} more)" if orphan.size > 10 else ""
        raise CouplingError(
            f"{orphan.size} coupling row(s) have demand but no site can serve them: {shown}{more}"
        )
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return ExchangeStructure(
        site_ids=tuple(site_ids),
        rows=rows,
        offsets=offsets,
        counts=counts,
        b=b,
        row_scale=np.asarray(row_scale, dtype=float),
    )
