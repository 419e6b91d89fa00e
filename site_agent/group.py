"""A group of site agents in one process, so a thousand sites run in a few processes.

:class:`SiteGroup` hosts several :class:`~thermoroute.site_agent.agent.SiteAgent` objects and speaks
for all of them at once: one call per round carries every hosted site's part, and one answer
comes back. It knows no method: a run begins with a
:class:`~thermoroute.common.method_protocol.MethodBegin` naming the method's site handler
(:mod:`thermoroute.site_agent.methods`), which then answers the run's ``method_start``,
``method_round`` and ``method_scatter`` calls. The end of a run (reports, cleaning) and the
moves of the horizon are the group's own, the same for every method. The sites' problems are
solved in a thread pool: OSQP's C solve and the linear algebra release the GIL, so threads run
them in parallel.

Like the agent it is a plain class; the composition root wraps it with ``ray.remote``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from thermoroute.common.aggregation_tree import RelayAnswer, RelayPlan
from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.errors import ScenarioError, SiteDataInvalid
from thermoroute.common.method_protocol import (
    EmptyRound,
    MethodBegin,
    PackedCalls,
    ScatterAnswer,
    ScatterRequest,
)
from thermoroute.common.report_protocol import (
    CLEAN_FIELDS,
    CLEAN_ROUND,
    REPORT_ROUND,
    CleanFinish,
    CleanRequest,
    GroupReport,
    ReportRequest,
    SiteDecision,
    pack_report,
    report_fields,
)
from thermoroute.common.scenario import Scenario
from thermoroute.common.secure_aggregation import PairwiseMasker
from thermoroute.common.service_protocol import RefreshAnswer
from thermoroute.site_agent.agent import SiteAgent, SiteReport
from thermoroute.site_agent.cost_privacy import CostPrivacy
from thermoroute.site_agent.data import load_horizons
from thermoroute.site_agent.forecast import SiteForecast
from thermoroute.site_agent.methods import (
    HostedSites,
    ScatterHandler,
    SiteHandler,
    site_handler_factory,
)
from thermoroute.site_agent.metrics import SiteAgentMetrics
from thermoroute.site_agent.outputs import output_root, site_files, write_site_files
from thermoroute.site_agent.relay import relay_round
from thermoroute.site_agent.subproblem import InnerSettings

log = logging.getLogger(__name__)

_In = TypeVar("_In")
_Out = TypeVar("_Out")


class SiteGroup(PackedCalls):
    """Several sites' agents behind one interface, solved in a thread pool.

    Parameters
    ----------
    source : str or path
        Where the sites' data are (as for :class:`SiteAgent`); a full scenario directory
        is read once for the whole group.
    site_ids : sequence of str
        The hosted sites, in the order used for concatenated targets and answers.
    start, steps : optional
        The horizon (as for :class:`SiteAgent`).
    settings : InnerSettings, optional
        OSQP settings of every subproblem.
    threads : int
        Solver threads (1 solves in the calling thread).
    forecast : SiteForecast, optional
        Every site plans with forecasts of its own series (:class:`SiteAgent`).
    cost_privacy : CostPrivacy, optional
        Every site plans with private noise on its cost of IT energy (:class:`SiteAgent`).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        site_ids: Sequence[str],
        *,
        start: datetime | str | None = None,
        steps: int | None = None,
        settings: InnerSettings | None = None,
        threads: int = 2,
        forecast: SiteForecast | None = None,
        cost_privacy: CostPrivacy | None = None,
    ) -> None:
        ids = tuple(site_ids)
        if not ids:
            raise ValueError("a site group needs at least one site")
        if len(set(ids)) != len(ids):
            raise ValueError("site ids of a group must be distinct")
        self.source = source
        self.site_ids = ids
        self.threads = max(1, int(threads))
        try:
            data, horizon = load_horizons(source, ids, start=start, steps=steps)
        except ScenarioError as error:
            # The problems quote the sites' private cells: they stay in this node's log.
            log.error("site data of %s failed validation:\n%s", ", ".join(ids), error)
            raise SiteDataInvalid(ids, len(error.problems)) from None
        self.agents: dict[str, SiteAgent] = {
            sid: SiteAgent(
                source,
                sid,
                steps=horizon,
                settings=settings,
                data=data[sid],
                forecast=forecast,
                cost_privacy=cost_privacy,
            )
            for sid in ids
        }
        self._pool: ThreadPoolExecutor | None = None
        self._method: SiteHandler | None = None
        self._reporter: PairwiseMasker | None = None
        # The sites' own metrics, on this node, only where its operator asked for them.
        self._metrics = SiteAgentMetrics.from_env()
        self._run_label = uuid.uuid4().hex[:12]
        #: Drawn once per process: a restarted group answers a new one (serve's cycles).
        self.incarnation = uuid.uuid4().hex

    # ----------------------------------------------------------------------------------

    def _map(self, fn: Callable[[_In], _Out], items: Iterable[_In]) -> list[_Out]:
        items = list(items)
        if self.threads == 1 or len(items) == 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="site-solve")
        return list(self._pool.map(fn, items))

    def start_afresh(self) -> None:
        """Forget what earlier runs left (an agent a ``thermoroute fleet`` keeps between
        runs): every site's subproblem and cache, the method's handler with its kept
        iterates, the report's key. The next run is then as on a newly started agent."""
        for agent in self.agents.values():
            agent.forget_run()
        self._method = None
        self._reporter = None

    def register(self, layout: CouplingLayout, row_scale: np.ndarray) -> dict[str, np.ndarray]:
        """Register every site; return ``{site_id: support rows}`` (int64, sorted)."""
        supports = dict(
            zip(
                self.site_ids,
                self._map(lambda a: a.register(layout, row_scale), self.agents.values()),
                strict=True,
            )
        )
        self._run_label = uuid.uuid4().hex[:12]  # a registration starts a run
        return supports

    # ----------------------------------------------------------------------------------
    # A run of a method (site_agent/methods.py, common/method_protocol.py)

    def import_site_handlers(self, names: Sequence[str]) -> None:
        """Import the site handler factories ``names`` (``"module:factory"``) before a run's
        begin needs them: an import costs a new agent process 0.1 s of an idle core, more on
        a loaded one, and a begin waits for the slowest agent."""
        for name in names:
            site_handler_factory(name)

    def method_begin(self, message: MethodBegin) -> bytes:
        """Set up a new run on every hosted site: the method's site handler, built by the
        factory ``message`` names from this group's sites; a fresh masking key.

        Returns the handler's public key (the coordinator relays it to the group's
        neighbours for secure aggregation; it reveals nothing of the sites), empty when the
        method does not mask.
        """
        factory = site_handler_factory(message.site_handler)
        layout = self.agents[self.site_ids[0]].subproblem.layout
        sites = HostedSites(tuple(self.agents[s] for s in self.site_ids), layout, self._map)
        for agent in self.agents.values():
            agent.reset_cache()
        self._method = factory(sites, self._method, message.settings)
        return self._method.new_key()

    def method_rejoin(self, message: MethodBegin) -> bytes:
        """After a group of the fleet crashed: a fresh masking key, keeping this group's
        iterate if it has one of the run (a restarted group begins anew)."""
        if self._method is None or not self._method.started:
            return self.method_begin(message)
        return self._method.new_key()

    def method_start(self, message: object, group_index: int) -> object:
        """The run's starting point (and, when it masks, this group's neighbours' keys);
        the handler's (masked) answer."""
        return self._require_method().start(message, group_index)

    def method_round(self, request: object) -> object:
        """One round on every hosted site; the group's (masked) answer."""
        return self._require_method().handle(request)

    def relay(self, message: Sequence[Any], plan: RelayPlan, indexed: bool = False) -> RelayAnswer:
        """Relay one round on Ray: this group's answer to the packed call in ``message``
        plus its children's subtree sums, masked
        (:func:`thermoroute.site_agent.relay.relay_round`)."""
        return relay_round(self, message, plan, indexed)

    def method_scatter(self, request: ScatterRequest) -> ScatterAnswer:
        """One scatter round: every hosted site's slice answered (each site's own figures
        go to this node's metrics, where its operator asked for them)."""
        handler = self._require_method()
        if not isinstance(handler, ScatterHandler):
            raise TypeError("this run's method has no scatter rounds")
        answer = handler.scatter(request)
        if self._metrics is not None:
            for sid in self.site_ids:
                telemetry = self.agents[sid].telemetry(economics=self._metrics.economics)
                self._metrics.record_telemetry(self._run_label, telemetry)
        return answer

    def _require_method(self) -> SiteHandler:
        if self._method is None:
            raise RuntimeError("no run of a method in progress: call method_begin first")
        return self._method

    # ----------------------------------------------------------------------------------
    # The end of a run (common/report_protocol.py)

    def report_keys(self, run_id: str) -> bytes:
        """A fresh masking key pair for this run's report; the public half to relay."""
        self._reporter = PairwiseMasker()
        return self._reporter.public_key

    def site_reports(self, iteration: int | None) -> list[SiteReport]:
        """Every hosted site's full :class:`SiteReport` (for this node; never sent)."""
        return [self.agents[s].final_report(iteration) for s in self.site_ids]

    def clean_report(self, request: CleanRequest, group_index: int) -> np.ndarray:
        """Drop the residues of every hosted site's reported iterate; answer the sums over
        the sites of :data:`~thermoroute.common.report_protocol.CLEAN_FIELDS` per coupling row,
        masked
        with the report's key when the request masks."""
        m = int(np.asarray(request.demand).size)
        sums = np.zeros(len(CLEAN_FIELDS) * m)
        for sid in self.site_ids:
            agent = self.agents[sid]
            parts = agent.clean_reported(request.iteration, request.demand, request.share)
            support = agent.subproblem.support
            for k, name in enumerate(CLEAN_FIELDS):
                sums[k * m + support] += parts[name]
        setup = None if request.masking is None else request.masking.get(group_index)
        if setup is None:
            return sums
        if self._reporter is None:
            raise RuntimeError("no report key: call report_keys first")
        self._reporter.configure(setup)
        return self._reporter.mask(sums, request.iteration or 0, CLEAN_ROUND)

    def finish_report(self, request: CleanFinish) -> None:
        """Every hosted site applies the coordinator's row factors to its reported iterate."""
        for agent in self.agents.values():
            agent.finish_reported(request.factors, request.restore)

    def final_report(self, request: ReportRequest, group_index: int) -> GroupReport:
        """The sites' decisions and the group's masked sums; each site's detail written on
        this node (or, with ``request.share_details``, carried in its decision)."""
        reports = self.site_reports(request.iteration)
        masker, self._reporter = self._reporter, None
        answer = answer_report(reports, request, group_index, masker)
        answer.written = self._write_details(request, reports)
        return answer

    def _write_details(self, request: ReportRequest, reports: list[SiteReport]) -> tuple[str, ...]:
        root = output_root(request.output)
        if root is None:
            return ()
        for report in reports:
            files = site_files(report, self.agents[report.site_id].site, request.run_id)
            write_site_files(root, report.site_id, files)
        return tuple(r.site_id for r in reports)

    def empty_round(self, request: EmptyRound) -> np.ndarray:
        """A round without computing: the zeros ``request`` asks for (a round's floor)."""
        return request.answer()

    def telemetry(self, economics: bool = True) -> dict[str, dict[str, object]]:
        """``{site_id: SiteAgent.telemetry()}`` — the sites' own figures, for this node's
        metrics and operator (never sent to the coordinator)."""
        return {s: self.agents[s].telemetry(economics=economics) for s in self.site_ids}

    def shift(
        self,
        steps: int,
        start: datetime | str | None = None,
        *,
        row_scale: np.ndarray | None = None,
    ) -> None:
        """Move every site to the next horizon (see :meth:`SiteAgent.shift`).

        Sites whose preloaded data do not cover the new horizon are read again, all in
        one pass.
        """
        first = self.agents[self.site_ids[0]]
        new_start, _ = self._move_method(steps, start)
        stale = [s for s in self.site_ids if self.agents[s].needs_data(steps, new_start)]
        data: dict[str, Scenario] = {}
        if stale:
            data, _ = load_horizons(self.source, stale, start=new_start, steps=first.horizon)
        self._map(
            lambda sid: self.agents[sid].shift(
                steps, new_start, row_scale=row_scale, data=data.get(sid)
            ),
            self.site_ids,
        )

    def _move_method(self, steps: int, start: datetime | str | None) -> tuple[datetime, int]:
        """The new horizon's start and the steps it lies ahead; the method's kept iterates
        (the interior point's warm points) move with it."""
        first = self.agents[self.site_ids[0]]
        new_start = first.next_start(steps, start)
        moved = round((new_start - first.site.start) / timedelta(hours=first.site.step_hours))
        if self._method is not None:
            self._method.shift(moved)
        return new_start, moved

    def refresh(self, start: datetime | str) -> RefreshAnswer:
        """Move every site to the horizon from ``start``, each re-reading its own data (the
        operator's pipeline appends forecasts there; ``thermoroute serve``).

        A site whose new data fail validation keeps planning with what it held (steps past
        its end repeat the last one); the problems go to this node's log, since they quote
        the site's cells. Answers which sites planned with data read now, and this
        group's incarnation (:class:`~thermoroute.common.service_protocol.RefreshAnswer`).
        """
        new_start, moved = self._move_method(0, start)
        horizon = self.agents[self.site_ids[0]].horizon
        try:  # one pass over the files for the whole group: the usual case
            data, _ = load_horizons(
                self.source, self.site_ids, start=new_start, steps=horizon, preload=0
            )
        except (ScenarioError, ValueError):
            data = {}

        def one(sid: str) -> bool:
            agent = self.agents[sid]
            own = data.get(sid)
            if own is None:  # the group's pass failed: find out which site's data did
                try:
                    own = load_horizons(
                        self.source, [sid], start=new_start, steps=horizon, preload=0
                    )[0][sid]
                except (ScenarioError, ValueError) as error:
                    log.error(
                        "site %s: its new data failed validation; it keeps its previous "
                        "forecast:\n%s",
                        sid,
                        error,
                    )
                    agent.shift(moved, new_start, persist=True)
                    return False
            agent.shift(moved, new_start, data=own)
            return True

        fresh = dict(zip(self.site_ids, self._map(one, self.site_ids), strict=True))
        return RefreshAnswer(self.incarnation, fresh)

    def reset_cache(self) -> None:
        """:meth:`SiteAgent.reset_cache` on every site."""
        for agent in self.agents.values():
            agent.reset_cache()

    def close(self) -> None:
        """Stop the solver threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def answer_report(
    reports: Sequence[SiteReport],
    request: ReportRequest,
    group_index: int,
    masker: PairwiseMasker | None,
) -> GroupReport:
    """A group's answer to ``request`` from its sites' full reports: the decisions, and the
    sums masked with ``masker`` (its key from ``report_keys``) when the request masks."""
    history = request.history_iterations
    sums = sum(
        (pack_report(_summed(r, history), len(history)) for r in reports),
        start=np.zeros(sum(size for _, size in report_fields(len(history)))),
    )
    setup = None if request.masking is None else request.masking.get(group_index)
    if setup is not None:
        if masker is None:
            raise RuntimeError("no report key: call report_keys first")
        masker.configure(setup)
        sums = masker.mask(sums, request.iteration or 0, REPORT_ROUND)
    decisions = [
        SiteDecision(
            site_id=r.site_id,
            iteration=r.iteration,
            best=r.best,
            x=r.x,
            inner_approximate=r.inner_approximate,
            inner_failed=r.inner_failed,
            inner_fallbacks=r.inner_fallbacks,
            detail=r if request.share_details else None,
        )
        for r in reports
    ]
    return GroupReport(decisions, sums, masked=setup is not None)


def _summed(report: SiteReport, history: tuple[int, ...]) -> dict[str, Any]:
    """One site's contribution to the group's sums (:func:`report_fields`)."""
    own = dict(zip(report.history_iterations, report.objective_history, strict=True))
    return {
        **report.totals,
        "objective_at": [own.get(k, 0.0) for k in history],
        "solved_at": [1.0 if k in own else 0.0 for k in history],
    }
