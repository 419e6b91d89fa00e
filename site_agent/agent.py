"""The site agent: one edge data centre taking part in a distributed method.

A :class:`SiteAgent` holds its site's private data and its subproblem. It is a plain Python
class; the composition root wraps it (or a :class:`~thermoroute.site_agent.group.SiteGroup` of them)
with ``ray.remote``, so nothing here imports Ray.

What leaves the agent, and when:

* :meth:`SiteAgent.register` — the site's support rows (which coupling rows it can serve:
  structural, not private);
* :meth:`SiteAgent.solve` — every exchange-ADMM iteration (called by
  :mod:`thermoroute.site_agent.admm`), ``(iteration, A_i x_i)`` and nothing else (the interior
  point's rounds go through :mod:`thermoroute.site_agent.ipm`, every answer masked);
* :meth:`SiteAgent.final_report` — once, at the end, the site's schedule and totals
  (results);
* :meth:`SiteAgent.telemetry` — the site's own solver and objective figures, for its own
  metrics and its operator; never sent to the coordinator.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from thermoroute.common.admm_protocol import DEFAULT_PENALTY, Penalty
from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.evaluate import SiteSteps, evaluate
from thermoroute.common.scenario import Scenario
from thermoroute.site_agent.cleaning import CleanedFlows, drop_small_flows
from thermoroute.site_agent.cost_privacy import CostNoise, CostPrivacy
from thermoroute.site_agent.data import load_horizons
from thermoroute.site_agent.forecast import SiteForecast
from thermoroute.site_agent.subproblem import InnerSettings, SiteSubproblem

log = logging.getLogger(__name__)

#: Answers kept per agent for idempotency (a retried call may arrive one iteration late).
CACHED_ANSWERS = 2


@dataclass
class SiteReport:
    """A site's result, reported once at the end of a run.

    Attributes
    ----------
    site_id : str
    iteration : int or None
        The ADMM iteration whose iterate this is (``None`` if the site never solved).
    best : bool
        Whether it is the best-iterate snapshot (else the last iterate).
    times : tuple of datetime
        Start of each step (as ``site_steps.csv`` wants them).
    x : ndarray (R, C, T)
        Requests per second routed to the site.
    n : ndarray (T,)
        Active GPUs.
    active_gpus, load_gpus, it_kw, pue, cooling_kw, wue : ndarray (T,)
        The per-step columns of ``site_steps.csv`` (``wue`` is ``wue_l_per_kwh``).
    totals : dict
        Every key of :data:`thermoroute.common.evaluate.TOTAL_KEYS`, plus ``interactive_requests``
        and ``objective_aud``.
    objective_history : list of float
        The site's objective [AUD] after each iteration it solved, in order.
    history_iterations : list of int
        The iteration ids of ``objective_history``.
    inner_approximate, inner_failed : int
        Inner solves that ended inaccurate or at a limit (iterate used), and that failed
        (previous iterate kept).
    inner_fallbacks : int
        Inner solves that OSQP did not finish and the interior-point fallback did.
    """

    site_id: str
    iteration: int | None
    best: bool
    times: tuple[datetime, ...]
    x: np.ndarray
    n: np.ndarray
    active_gpus: np.ndarray
    load_gpus: np.ndarray
    it_kw: np.ndarray
    pue: np.ndarray
    cooling_kw: np.ndarray
    wue: np.ndarray
    totals: dict[str, float]
    objective_history: list[float] = field(default_factory=list)
    history_iterations: list[int] = field(default_factory=list)
    inner_approximate: int = 0
    inner_failed: int = 0
    inner_fallbacks: int = 0

    def steps(self) -> SiteSteps:
        """The per-step arrays as the one-site :class:`~thermoroute.common.evaluate.SiteSteps`
        (1, T)."""
        return SiteSteps(
            active_gpus=self.active_gpus[None],
            load_gpus=self.load_gpus[None],
            it_kw=self.it_kw[None],
            pue=self.pue[None],
            cooling_kw=self.cooling_kw[None],
            wue_l_per_kwh=self.wue[None],
        )


@dataclass
class _Snapshot:
    iteration: int
    x: np.ndarray
    n: np.ndarray


class SiteAgent:
    """One site's agent: its data, its subproblem, and the per-iteration protocol.

    Parameters
    ----------
    source : str or path
        Where the site's data are: its per-site directory, the output root of
        :func:`thermoroute.common.scenario_split.split_scenario`, a full scenario directory
        (only this site's rows are read) or an embedded scenario name.
    site_id : str
    start : datetime or ISO-8601 str, optional
        First step of the horizon; the scenario's start by default.
    steps : int, optional
        Steps of the horizon; the scenario's by default.
    settings : InnerSettings, optional
        OSQP settings of the subproblem.
    data : Scenario, optional
        The site's data already loaded (one site, starting at the horizon's first step,
        possibly longer than the horizon); used instead of reading ``source`` — a
        :class:`~thermoroute.site_agent.group.SiteGroup` loads its sites in one pass.
    forecast : SiteForecast, optional
        Plan every window with forecasts of the site's own series instead of the real
        series (receding-horizon operation); the current hour stays as observed.
    cost_privacy : CostPrivacy, optional
        Plan with a private noise on the cost of IT energy
        (:mod:`thermoroute.site_agent.cost_privacy`). The node's own
        ``THERMOROUTE_COST_PRIVACY_EPSILON`` also asks for it; the stricter setting wins.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        site_id: str,
        *,
        start: datetime | str | None = None,
        steps: int | None = None,
        settings: InnerSettings | None = None,
        data: Scenario | None = None,
        forecast: SiteForecast | None = None,
        cost_privacy: CostPrivacy | None = None,
    ) -> None:
        self.source = source
        self.forecast = forecast
        privacy = CostPrivacy.stricter(cost_privacy, CostPrivacy.from_env())
        #: The setting this site plans with (the node's or the run's, the stricter).
        self.cost_privacy = privacy
        self._cost_noise = None if privacy is None else CostNoise(privacy)
        self.site_id = site_id
        self.settings = settings or InnerSettings()
        if data is None:
            series, horizon = load_horizons(source, [site_id], start=start, steps=steps)
            data = series[site_id]
        else:
            horizon = int(steps) if steps is not None else data.steps
        if data.sites.site_id != (site_id,):
            raise ValueError(f"data are for {data.sites.site_id}, not site {site_id!r}")
        self._series = data
        self._horizon = horizon
        self._offset = 0
        self.site = self._planned(data.window(0, horizon))
        self._sub: SiteSubproblem | None = None
        # Whether the subproblem was built by the last registration and not solved since.
        self._fresh = False
        self._answers: OrderedDict[int, np.ndarray] = OrderedDict()
        self._last_iteration: int | None = None
        self._best: _Snapshot | None = None
        self._history: list[float] = []
        self._history_iterations: list[int] = []
        self._objective_cache: tuple[tuple[object, ...], dict[str, float]] | None = None
        #: The pending cleaning of the reported iterate: (iteration, best, CleanedFlows).
        self._cleaning: tuple[int | None, bool, CleanedFlows] | None = None

    # ----------------------------------------------------------------------------------
    # Protocol

    def register(self, layout: CouplingLayout, row_scale: np.ndarray) -> np.ndarray:
        """Build (or refresh) the subproblem; return the site's support rows.

        Registering again with the same layout keeps the OSQP object: new row scales only
        update its values. A new run starts: the iteration cache, best snapshot and
        objective history are cleared. The subproblem's penalty is the one it had, or
        :data:`~thermoroute.common.admm_protocol.DEFAULT_PENALTY` (a run that solves
        proximal subproblems sets its own: :meth:`set_penalty`).

        Parameters
        ----------
        layout : CouplingLayout
        row_scale : ndarray (n_rows,)

        Returns
        -------
        ndarray of int64
            Sorted global ids of the coupling rows this site can serve.
        """
        if self._sub is not None and self._sub.layout == layout:
            self._sub.set_row_scale(row_scale)
            self._fresh = False
        else:
            self._sub = SiteSubproblem(
                self.site,
                layout,
                row_scale,
                rho=DEFAULT_PENALTY,
                settings=self.settings,
                cost_noise=self._cost_noise,
            )
            self._fresh = True
        self.reset_cache()
        return self._sub.support.astype(np.int64, copy=True)

    def forget_run(self) -> None:
        """Forget what earlier runs left: the subproblem (the next :meth:`register` builds it
        as a new agent's first does — no OSQP warm start, no penalty carried over) and the
        iteration cache. For an agent kept between runs (``thermoroute fleet``)."""
        self._sub = None
        self._fresh = False
        self.reset_cache()

    def set_penalty(self, rho: Penalty) -> None:
        """The outer penalty ``ρ`` of the subproblem's proximal term from now on.

        A subproblem built by the last :meth:`register` and not yet solved is built again
        with a new scalar penalty (OSQP scales its data from the penalty it is set up with,
        so the run matches one whose sites were built with it); otherwise the values are
        updated (one refactorisation; none when ``rho`` is the current one).
        """
        sub = self._require()
        if self._fresh and np.ndim(rho) == 0 and not np.all(sub.rho == float(rho)):
            self._sub = SiteSubproblem(
                self.site,
                sub.layout,
                sub.row_scale,
                rho=rho,
                settings=self.settings,
                cost_noise=self._cost_noise,
            )
        else:
            sub.set_rho(rho)

    def solve(
        self,
        iteration: int,
        rho: Penalty | None,
        target: np.ndarray,
        eps: float | None = None,
        best_iteration: int | None = None,
    ) -> tuple[int, np.ndarray]:
        """Solve iteration ``iteration``; return ``(iteration, A_i x_i on the support)``.

        Idempotent per iteration id: a repeated call for an iteration already answered
        (one of the last :data:`CACHED_ANSWERS`) returns the cached answer without solving.

        Parameters
        ----------
        iteration : int
        rho : float or ndarray (n_rows,) or None
            Outer ADMM penalty; ``None``: unchanged since the last call (the coordinator
            sends the penalties only when they change).
        target : ndarray (len(support),)
            The coordinator's target for the site's served demand [scaled units].
        eps : float, optional
            Inner tolerance (absolute and relative) from now on; the settings' by default.
        best_iteration : int, optional
            The coordinator's best iteration so far. When it is the iteration this site
            solved last, that iterate is kept as the best (one copy, replacing the previous).

        Returns
        -------
        tuple
            ``(iteration, served)`` — nothing else leaves the site.
        """
        iteration = int(iteration)
        cached = self._answers.get(iteration)
        if cached is not None:
            return iteration, cached.copy()
        sub = self._require()
        if (
            best_iteration is not None
            and best_iteration == self._last_iteration
            and (self._best is None or self._best.iteration != best_iteration)
        ):
            self._best = _Snapshot(best_iteration, sub.x, sub.n)
        served = sub.solve(target, rho, eps)
        self._fresh = False
        self._last_iteration = iteration
        self._history.append(sub.objective_value())
        self._history_iterations.append(iteration)
        self._answers[iteration] = served
        while len(self._answers) > CACHED_ANSWERS:
            self._answers.popitem(last=False)
        return iteration, served.copy()

    def telemetry(self, economics: bool = True) -> dict[str, object]:
        """The site's own figures (for its metrics and operator; never for the coordinator).

        Parameters
        ----------
        economics : bool
            Include ``objective`` (the site's costs); off, only solver figures.

        Returns
        -------
        dict
            ``site_id``, ``iteration`` (last solved), ``objective`` (the parts of
            :meth:`SiteSubproblem.local_objective`, AUD; with ``economics``), ``solve_s``,
            ``osqp_iterations``, ``status``, ``solved``, ``inner_approximate``,
            ``inner_failed``, ``inner_fallbacks``, ``setup_count`` and ``refactorizations``.
        """
        if self._sub is None:
            return {"site_id": self.site_id, "iteration": None, "registered": False}
        sub, info = self._sub, self._sub.info
        costs: dict[str, object] = {}
        if economics:
            # Charging the iterate under the true model costs ~0.1 ms: once per new iterate.
            key = (info.solves, sub.setup_count, sub.px_updates, self.site.start)
            if self._objective_cache is None or self._objective_cache[0] != key:
                self._objective_cache = (key, sub.local_objective())
            costs["objective"] = dict(self._objective_cache[1])
        return {
            "site_id": self.site_id,
            "registered": True,
            "iteration": self._last_iteration,
            **costs,
            "solve_s": info.solve_s,
            "osqp_iterations": info.iterations,
            "status": info.status,
            "solved": info.ok,
            "inner_approximate": info.approximate,
            "inner_fallbacks": info.fallbacks,
            "inner_failed": info.failed,
            "setup_count": sub.setup_count,
            "refactorizations": sub.px_updates,
        }

    def final_report(self, iteration: int | None) -> SiteReport:
        """The site's result: the best snapshot if ``iteration`` is its iteration, else the last.

        Parameters
        ----------
        iteration : int or None
            The iteration the coordinator reports (its best or its last).

        Returns
        -------
        SiteReport
        """
        sub = self._require()
        chosen, x, n, best = self._reported(iteration)
        ev = evaluate(self.site, x[None], n[None])
        totals = ev.site_totals(0)
        for key in ("interactive_requests", "objective_aud"):
            totals[key] = float(ev.per_site_step[key][0].sum())
        steps = ev.steps
        return SiteReport(
            site_id=self.site_id,
            iteration=chosen,
            best=best,
            times=self.site.times,
            x=x,
            n=n,
            active_gpus=np.array(steps.active_gpus[0]),
            load_gpus=np.array(steps.load_gpus[0]),
            it_kw=np.array(steps.it_kw[0]),
            pue=np.array(steps.pue[0]),
            cooling_kw=np.array(steps.cooling_kw[0]),
            wue=np.array(steps.wue_l_per_kwh[0]),
            totals=totals,
            objective_history=list(self._history),
            history_iterations=list(self._history_iterations),
            inner_approximate=sub.info.approximate,
            inner_failed=sub.info.failed,
            inner_fallbacks=sub.info.fallbacks,
        )

    def _reported(self, iteration: int | None) -> tuple[int | None, np.ndarray, np.ndarray, bool]:
        """``(iteration, x, n, best)`` of the iterate reported for ``iteration``: the best
        snapshot if that is its iteration, else the last."""
        sub = self._require()
        if self._best is not None and iteration is not None and iteration == self._best.iteration:
            return self._best.iteration, self._best.x, self._best.n, True
        if iteration is not None and iteration != self._last_iteration:
            log.warning(
                "site %s: report for iteration %s requested, have only %s (last) and %s "
                "(best); reporting the last",
                self.site_id,
                iteration,
                self._last_iteration,
                None if self._best is None else self._best.iteration,
            )
        return self._last_iteration, sub.x, sub.n, False

    def clean_reported(
        self, iteration: int | None, demand: np.ndarray, share: float
    ) -> dict[str, np.ndarray]:
        """Drop the residues of the iterate reported for ``iteration``
        (:func:`thermoroute.site_agent.cleaning.drop_small_flows`), pending :meth:`finish_reported`.

        Returns ``served``, ``dropped`` and ``absorb`` on the site's support rows [scaled
        units] — for the group's masked sum, never sent alone.
        """
        sub = self._require()
        chosen, x, n, best = self._reported(iteration)
        qp = sub.qp()
        xi = sub.xi_of(x, n)
        threshold = share * np.abs(np.asarray(demand, dtype=float)[qp.support[qp.position]])
        cleaning = drop_small_flows(qp, xi, threshold)
        self._cleaning = (chosen, best, cleaning)
        return {"served": qp.served(xi), "dropped": cleaning.dropped, "absorb": cleaning.absorb}

    def finish_reported(self, factors: np.ndarray, restore: np.ndarray) -> None:
        """Apply the coordinator's row factors: the cleaned iterate becomes the reported one
        (and the subproblem's, for a warm start). A repeated call changes nothing."""
        if self._cleaning is None:
            raise RuntimeError(f"site {self.site_id!r}: finish_reported before clean_reported")
        sub = self._require()
        chosen, best, cleaning = self._cleaning
        qp = sub.qp()
        rows = qp.support[qp.position]
        sub.adopt(
            cleaning.finished(
                np.asarray(factors, dtype=float)[rows], np.asarray(restore, dtype=bool)[rows]
            )
        )
        self._last_iteration = chosen
        if best and chosen is not None:
            self._best = _Snapshot(chosen, sub.x, sub.n)

    def shift(
        self,
        steps: int,
        start: datetime | str | None = None,
        *,
        row_scale: np.ndarray | None = None,
        data: Scenario | None = None,
        persist: bool = False,
    ) -> None:
        """Move to the next receding horizon.

        The data are re-windowed (read again only past the preloaded steps), the warm
        start shifted by ``steps``, and the subproblem's vectors rebuilt; the OSQP object
        is kept. The iteration cache, best snapshot and history are cleared (a new run).

        Parameters
        ----------
        steps : int
            Steps the horizon moved (≥ 0), used to shift the warm start.
        start : datetime or ISO-8601 str, optional
            First step of the new horizon; ``steps`` after the current one by default.
        row_scale : ndarray (n_rows,), optional
            New coupling-row scales (also accepted later by :meth:`register`).
        data : Scenario, optional
            The site's data starting at the new horizon (a group loads them in one pass).
        persist : bool
            Plan with the data held, without reading the files: steps past their end repeat
            the last one (a persistence forecast; a site whose new data were refused).
        """
        if steps < 0:
            raise ValueError("steps must be >= 0")
        new_start = self._next_start(steps, start)
        if data is not None:
            if data.sites.site_id != (self.site_id,) or data.times[0] != new_start:
                raise ValueError("data must be this site's, starting at the new horizon")
            self._series, self._offset = data, 0
        elif persist:
            step = timedelta(hours=self._series.step_hours)
            self._offset = round((new_start - self._series.times[0]) / step)
            self._series = self._series.persisted(self._offset + self._horizon)
        else:
            offset = self._offset_of(new_start)
            if offset is None:
                series, _ = load_horizons(
                    self.source, [self.site_id], start=new_start, steps=self._horizon
                )
                self._series, self._offset = series[self.site_id], 0
            else:
                self._offset = offset
        self.site = self._planned(self._series.window(self._offset, self._horizon))
        if self._sub is not None:
            self._sub.shift(self.site, steps, row_scale)
        self.reset_cache()

    def needs_data(self, steps: int, start: datetime | str | None = None) -> bool:
        """Whether :meth:`shift` would have to read the data again."""
        return self._offset_of(self._next_start(steps, start)) is None

    def next_start(self, steps: int, start: datetime | str | None = None) -> datetime:
        """First step of the horizon after a shift by ``steps`` (or to ``start``)."""
        return self._next_start(steps, start)

    def reset_cache(self) -> None:
        """Forget answered iterations, the best snapshot and the objective history.

        Call it before iteration ids start again (a new run on the same registration).
        """
        self._answers.clear()
        self._last_iteration = None
        self._best = None
        self._cleaning = None
        self._history.clear()
        self._history_iterations.clear()

    # ----------------------------------------------------------------------------------
    # Helpers

    def _planned(self, window: Scenario) -> Scenario:
        """The data the site plans with: the window, or its forecast."""
        return window if self.forecast is None else self.forecast.apply(window)

    @property
    def subproblem(self) -> SiteSubproblem:
        """The registered subproblem."""
        return self._require()

    @property
    def horizon(self) -> int:
        return self._horizon

    def _require(self) -> SiteSubproblem:
        if self._sub is None:
            raise RuntimeError(f"site {self.site_id!r} is not registered; call register first")
        return self._sub

    def _next_start(self, steps: int, start: datetime | str | None) -> datetime:
        if start is None:
            return self.site.start + timedelta(hours=self.site.step_hours * steps)
        return datetime.fromisoformat(start) if isinstance(start, str) else start

    def _offset_of(self, start: datetime) -> int | None:
        times = self._series.times
        try:
            offset = times.index(start)
        except ValueError:
            return None
        return offset if offset + self._horizon <= len(times) else None
