"""Benchmark of one site QP: OSQP against the interior-point fallback (run by hand).

    python -m bench.site_qp_bench [--sites 1000] [--iteration 7] [--sample 40]

The exchange-ADMM loop of a synthetic fleet (``synthesize(sites, 20, 0)``) runs in process
up to ``--iteration``; every site's QP of that iteration is captured as OSQP receives it
(``P``, ``q``, ``A``, bounds, the warm start and the inner tolerance the coordinator asked
for). On ``--sample`` of them — the hardest for OSQP in the run, then every other — it
prints, in one run:

* OSQP as the product runs it (``InnerSettings()``: warm start, iteration limit 1,000);
* OSQP with a limit of 20,000: from the same warm start, from the previous ``x`` with zero
  duals, and from a cold start;
* Clarabel through :class:`thermoroute.site_agent.interior_point.InteriorPointQP` (set up once, then
  a re-solve after a change of ``q``, which is what the fallback does per iteration), with the
  objective gap to a tightly solved reference.

Medians and percentiles over the sample; the machine has 2 cores and is noisy, so ratios
measured in the same run are what to quote (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import osqp
from rich.console import Console
from rich.table import Table

from thermoroute.coordinator.admm import AdmmSettings
from thermoroute.site_agent import subproblem as subproblem_module
from thermoroute.site_agent.interior_point import InteriorPointQP
from thermoroute.site_agent.subproblem import InnerSettings, SiteSubproblem

console = Console(width=140)


@dataclasses.dataclass
class CapturedQP:
    """One site's QP as OSQP received it at the captured iteration."""

    site_id: str
    P: Any
    q: np.ndarray
    A: Any
    lower: np.ndarray
    upper: np.ndarray
    x0: np.ndarray
    y0: np.ndarray | None
    eps: float
    product_iterations: int


def capture(sites: int, iteration: int) -> list[CapturedQP]:
    """Run ADMM in process up to ``iteration`` and capture every site's QP there."""
    from thermoroute.common.scenario_writing import write_scenario
    from thermoroute.common.synth import synthesize
    from thermoroute.launch import solve_distributed

    captured: list[CapturedQP] = []
    calls = [0]
    original = SiteSubproblem.solve

    def solve(
        self: SiteSubproblem, target: np.ndarray, rho: Any, eps: float | None = None
    ) -> np.ndarray:
        k = calls[0] // sites
        calls[0] += 1
        if k != iteration:
            return original(self, target, rho, eps)
        rho_entry = self.rho if rho is None else self._entry_rho(rho)
        qp = CapturedQP(
            site_id=self.site_id,
            P=self._p_matrix(rho_entry),
            q=np.zeros(0),
            A=self._a_matrix(),
            lower=self._l.copy(),
            upper=self._u.copy(),
            x0=self._full_of(self._xi),
            y0=None if self._y_dual is None else self._y_dual.copy(),
            eps=float(eps if eps is not None else self.settings.eps_abs),
            product_iterations=0,
        )
        served = original(self, target, rho, eps)
        qp.q = self._q_of(np.asarray(target, dtype=float), self._rho)
        qp.product_iterations = self.info.iterations
        captured.append(qp)
        return served

    with tempfile.TemporaryDirectory(prefix="thermoroute-qp-bench-") as tmp:
        source = write_scenario(synthesize(sites, 20, 0), f"{tmp}/fleet")
        subproblem_module.SiteSubproblem.solve = solve  # type: ignore[method-assign]
        try:
            solve_distributed(
                source,
                executor="inline",
                sites_per_agent=max(1, sites // 4),
                settings=AdmmSettings(max_iter=iteration + 1, polish_factor=None),
            )
        finally:
            subproblem_module.SiteSubproblem.solve = original  # type: ignore[method-assign]
    return captured


def osqp_solve(
    qp: CapturedQP, max_iter: int, warm: bool, duals: bool = True
) -> tuple[int, str, float, np.ndarray]:
    """OSQP with the product's settings (and ``max_iter``): cold, or warm-started from the
    previous iterate (with its constraint duals, or with ``y = 0``)."""
    kwargs = dataclasses.replace(InnerSettings(), max_iter=max_iter).osqp_kwargs()
    kwargs.update(eps_abs=qp.eps, eps_rel=qp.eps)
    solver = osqp.OSQP()
    solver.setup(qp.P, qp.q, qp.A, qp.lower, qp.upper, **kwargs)
    if warm:
        y0 = np.zeros(len(qp.lower)) if qp.y0 is None or not duals else qp.y0
        solver.warm_start(x=qp.x0, y=y0)
    t0 = time.perf_counter()
    result = solver.solve(raise_error=False)
    elapsed = time.perf_counter() - t0
    return int(result.info.iter), str(result.info.status), elapsed, np.asarray(result.x)


def objective(qp: CapturedQP, x: np.ndarray) -> float:
    return float(0.5 * x @ (qp.P @ x) + qp.q @ x)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.site_qp_bench", description=__doc__)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--iteration", type=int, default=7)
    parser.add_argument("--sample", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    t0 = time.perf_counter()
    qps = capture(args.sites, args.iteration)
    console.log(
        f"captured {len(qps)} site QPs of iteration {args.iteration} "
        f"({args.sites} sites) in {time.perf_counter() - t0:.0f} s"
    )
    hits = sum(q.product_iterations >= InnerSettings().max_iter for q in qps)
    console.log(
        f"in the run, OSQP (limit {InnerSettings().max_iter}): median "
        f"{statistics.median(q.product_iterations for q in qps):.0f} iterations, "
        f"{hits} of {len(qps)} sites at the limit"
    )
    ranked = sorted(qps, key=lambda q: -q.product_iterations)
    sample = (ranked[: args.sample // 2] + ranked[args.sample // 2 :: 2])[: args.sample]

    rows: dict[str, dict[str, list[float]]] = {}

    def record(name: str, iterations: float, seconds: float, solved: bool, gap: float) -> None:
        row = rows.setdefault(name, {"it": [], "ms": [], "solved": [], "gap": []})
        row["it"].append(iterations)
        row["ms"].append(1e3 * seconds)
        row["solved"].append(float(solved))
        row["gap"].append(gap)

    for qp in sample:
        reference = InteriorPointQP(qp.P, qp.A, qp.lower, qp.upper, tolerance=1e-11)
        ref = reference.solve(qp.q)
        best = objective(qp, ref.x) if ref is not None else np.nan
        scale = max(abs(best), 1.0)
        for name, limit, warm, duals in (
            ("OSQP, product (warm, limit 1,000)", InnerSettings().max_iter, True, True),
            ("OSQP, warm, limit 20,000", 20_000, True, True),
            ("OSQP, warm x with y = 0, limit 20,000", 20_000, True, False),
            ("OSQP, cold, limit 20,000", 20_000, False, False),
        ):
            it, status, seconds, x = osqp_solve(qp, limit, warm, duals)
            gap = (objective(qp, x) - best) / scale
            record(name, it, seconds, status == "solved", gap)
        ipm = InteriorPointQP(qp.P, qp.A, qp.lower, qp.upper)
        t1 = time.perf_counter()
        first = ipm.solve(qp.q)
        t2 = time.perf_counter()
        again = ipm.solve(qp.q * (1.0 + 1e-3))  # a re-solve: update(q) + solve
        t3 = time.perf_counter()
        ok = first is not None and again is not None
        gap = (objective(qp, first.x) - best) / scale if first is not None else np.nan
        record("Clarabel, set up + solve", first.iterations if first else np.nan, t2 - t1, ok, gap)
        record("Clarabel, re-solve", again.iterations if again else np.nan, t3 - t2, ok, np.nan)

    table = Table(title=f"{len(sample)} site QPs of iteration {args.iteration}, {args.sites} sites")
    for column in (
        "solver",
        "solved",
        "iterations median",
        "p90",
        "max",
        "ms median",
        "p90",
        "max |gap|",
    ):
        table.add_column(column, justify="left" if column == "solver" else "right")
    for name, row in rows.items():
        gaps = [abs(g) for g in row["gap"] if np.isfinite(g)]
        table.add_row(
            name,
            f"{int(sum(row['solved']))}/{len(row['solved'])}",
            f"{statistics.median(row['it']):.0f}",
            f"{_pct(row['it'], 90):.0f}",
            f"{max(row['it']):.0f}",
            f"{statistics.median(row['ms']):.2f}",
            f"{_pct(row['ms'], 90):.2f}",
            f"{max(gaps):.1e}" if gaps else "—",
        )
    console.print(table)
    product = statistics.median(rows["OSQP, product (warm, limit 1,000)"]["ms"])
    clarabel = statistics.median(rows["Clarabel, re-solve"]["ms"])
    console.print(
        f"median time ratio, product OSQP / Clarabel re-solve: {product / clarabel:.1f}×",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
