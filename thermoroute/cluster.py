"""The site agents' cluster: which sites a scenario has, which agent hosts which, and starting
the agents — Ray actors placed on the sites' nodes, or objects in this process.

Placement on Ray
----------------
When the cluster offers a custom resource named ``site:<site_id>`` (``ray start --resources
'{"site:syd": 1}'`` on the node that holds the site's data), that site's agent is created
with ``resources={"site:<site_id>": 0.01}`` and so runs on that node, alone in its actor;
sites without such a resource are grouped ``sites_per_agent`` to an actor and placed by Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from thermoroute import signals
from thermoroute.common.errors import SiteDataInvalid
from thermoroute.common.scenario_split import is_split_root
from thermoroute.common.scenarios import scenario_directory
from thermoroute.common.site_view import list_site_ids
from thermoroute.coordinator.admm import SITE_HANDLER as ADMM_SITE_HANDLER
from thermoroute.coordinator.fleet import InlineFleet, SiteGroupLost
from thermoroute.coordinator.ipm import SITE_BEGIN as IPM_SITE_BEGIN
from thermoroute.isolation import in_private_network
from thermoroute.ray_auth import (
    ClusterAccessError,
    check_access,
    enable_token_mode,
    ensure_local_token,
    token_source,
)
from thermoroute.site_agent.cost_privacy import CostPrivacy
from thermoroute.site_agent.forecast import SiteForecast
from thermoroute.site_agent.group import SiteGroup
from thermoroute.site_agent.subproblem import InnerSettings

#: Fraction of a ``site:<id>`` resource an agent asks for (any positive amount pins it).
PIN_AMOUNT = 0.01
#: The product methods' site handlers, as their begin messages name them.
PRODUCT_SITE_HANDLERS = tuple(
    name for name in (IPM_SITE_BEGIN.site_handler, ADMM_SITE_HANDLER) if isinstance(name, str)
)


# --------------------------------------------------------------------------------------------
# Where the data are


def resolve_directory(source: str | os.PathLike[str]) -> Path:
    """A scenario directory, a ``split_scenario`` output root, or an embedded name."""
    return scenario_directory(source)


def discover(source: str | os.PathLike[str]) -> tuple[Path, tuple[str, ...]]:
    """The coordinator's directory and the fleet's site ids behind ``source``.

    A full scenario directory holds both (its ``sites.csv`` lists the ids; only that one
    column is read here, by :func:`~thermoroute.common.site_view.list_site_ids` — the
    sites' data are read by their agents). The output root of ``thermoroute scenario
    split`` has ``coordinator/`` and one ``sites/<site_id>/`` each.

    Raises
    ------
    ScenarioError
        If ``sites.csv`` cannot name the sites (missing, bad header, bad or repeated ids).
    """
    directory = resolve_directory(source)
    if is_split_root(directory):
        ids = tuple(sorted(p.name for p in (directory / "sites").iterdir() if p.is_dir()))
        return directory / "coordinator", ids
    return directory, list_site_ids(directory)


def plan_groups(
    site_ids: Sequence[str], sites_per_agent: int, pinned: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, ...]]:
    """Agents' site lists: each pinned site alone, the others ``sites_per_agent`` at a time."""
    if sites_per_agent < 1:
        raise ValueError("sites_per_agent must be >= 1")
    groups: list[tuple[str, ...]] = [(s,) for s in site_ids if s in pinned]
    free = [s for s in site_ids if s not in pinned]
    groups += [tuple(free[k : k + sites_per_agent]) for k in range(0, len(free), sites_per_agent)]
    return groups


# --------------------------------------------------------------------------------------------
# Ray plumbing

#: Answers up to this size travel inside the call's reply on a Ray this process starts
#: (``max_direct_call_object_size``; Ray's default, 100 KiB, is below a masked ``newton``
#: answer: 115 kB on ``australia``, 657 kB on 1,000 sites). Above the limit an answer goes
#: through the object store: the site writes it there and the coordinator fetches it, ~6 ms
#: more per round over 8 actors on the 2-core machine (BENCHMARKS.md, issue 24).
INLINE_ANSWER_BYTES = 1 << 20


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join ``address`` or start a local Ray; returns whether this call started it.

    Joining, the cluster is first asked whether it accepts this process's token
    (:func:`thermoroute.ray_auth.check_access`); a local Ray gets token authentication with
    an owner-only token file.

    Raises
    ------
    ClusterAccessError
        The cluster refused this driver or did not answer.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        if token_source()[0] is not None and "RAY_AUTH_MODE" not in os.environ:
            # A joining driver sends its token only in token mode, which Ray never turns
            # on by itself for a driver.
            enable_token_mode()
        if address != "auto":
            check_access(address)
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,  # not Ray's "Connected to Ray cluster"
            )
        except ConnectionError as error:
            first = str(error).strip().splitlines()[0]
            raise ClusterAccessError(f"cannot join the Ray cluster at {address}: {first}") from None
    else:
        ensure_local_token()
        sessions = _ray_sessions()
        try:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 2,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,  # not Ray's "Started a local Ray instance"
                _system_config={"max_direct_call_object_size": INLINE_ANSWER_BYTES},
                # In a run's private network only loopback exists: say so rather than let Ray
                # probe for a route out and warn that there is none (``None``: Ray finds it).
                _node_ip_address="127.0.0.1" if in_private_network() else None,
            )
        except BaseException:
            # Interrupted (SIGTERM, Ctrl-C) or failed while starting: the session directory
            # Ray had begun is this process's alone — remove it with what it started.
            ray.shutdown()
            for session in _ray_sessions() - sessions:
                _remove_session(session)
            raise
        global _local_session
        _local_session = _session_directory()
    # Ray's driver puts its own SIGTERM handler (a silent exit 15): take it back.
    signals.reinstall_after_ray()
    return True


#: The session directory of the local Ray this process started (logs, sockets: a few
#: hundred kB per run), removed when it stops (:func:`stop_ray`).
_local_session: Path | None = None


def _ray_sessions() -> set[Path]:
    """This process's session directories in Ray's default temporary directory now (Ray
    names a session after the process that starts it: ``session_<time>_<pid>``)."""
    from ray._common.utils import get_default_ray_temp_dir  # where ray.init puts a session

    return set(Path(get_default_ray_temp_dir()).glob(f"session_2*_{os.getpid()}"))


def _remove_session(session: Path) -> None:
    """Remove a local session's directory, and Ray's ``session_latest`` link to it."""
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    with contextlib.suppress(OSError):
        if latest.is_symlink() and latest.resolve() == session.resolve():
            latest.unlink()


def _session_directory() -> Path | None:
    try:
        from ray._private import worker  # the session's path has no public accessor

        node = worker._global_node
        return Path(node.get_session_dir_path()) if node is not None else None
    except (ImportError, AttributeError):
        return None


def stop_ray() -> None:
    """Shut down the Ray this process started; a local one's session directory goes too
    (with Ray's ``session_latest`` link when it points there). A joined cluster's session is
    the cluster's: it stays."""
    import ray

    global _local_session
    session, _local_session = _local_session, None
    ray.shutdown()
    if session is not None and session.name.startswith("session_"):
        _remove_session(session)


def site_resources() -> set[str]:
    """Site ids for which the cluster offers a ``site:<id>`` custom resource."""
    import ray

    return {key.split(":", 1)[1] for key in ray.cluster_resources() if key.startswith("site:")}


@dataclass(frozen=True)
class AgentSetup:
    """What every site group actor of a fleet is started with.

    Attributes
    ----------
    start, steps : optional
        The horizon its sites load (the scenario's by default).
    inner : InnerSettings, optional
        The sites' OSQP settings.
    threads : int
        Solver threads per agent.
    forecast : SiteForecast, optional
        The sites plan with forecasts of their own series (real series without).
    cost_privacy : CostPrivacy, optional
        The sites plan with private noise on their cost of IT energy
        (:mod:`thermoroute.site_agent.cost_privacy`).
    max_restarts : int
        How often Ray restarts a crashed agent (its constructor runs again and reloads the
        sites' data; :class:`~thermoroute.coordinator.fleet.RayFleet` registers it again);
        ``-1`` without limit.
    site_handlers : tuple of str
        The site handlers every agent actor imports while it starts (the product's
        methods'), so that a run's first round does not wait for the agents to import one.
    """

    start: datetime | None = None
    steps: int | None = None
    inner: InnerSettings | None = None
    threads: int = 1
    forecast: SiteForecast | None = None
    cost_privacy: CostPrivacy | None = None
    max_restarts: int = 0
    site_handlers: tuple[str, ...] = PRODUCT_SITE_HANDLERS

    def group_arguments(self) -> dict[str, Any]:
        """The keyword arguments of every :class:`SiteGroup` of the fleet."""
        return {
            "start": self.start,
            "steps": self.steps,
            "settings": self.inner,
            "threads": self.threads,
            "forecast": self.forecast,
            "cost_privacy": self.cost_privacy,
        }


def create_inline_groups(
    source: str | os.PathLike[str], groups: Sequence[tuple[str, ...]], setup: AgentSetup
) -> list[SiteGroup]:
    """One :class:`SiteGroup` per group in this process, started with ``setup``."""
    return [SiteGroup(source, list(group), **setup.group_arguments()) for group in groups]


def create_group_actors(
    source: str | os.PathLike[str],
    groups: Sequence[tuple[str, ...]],
    pinned: set[str],
    setup: AgentSetup,
    names: Callable[[int], str] | None = None,
    namespace: str | None = None,
) -> list[Any]:
    """One ``SiteGroup`` actor per group, started with ``setup``; pinned to ``site:<id>``
    where offered; named ``names(g)`` in ``namespace`` when given (a kept fleet's agents:
    :mod:`thermoroute.local_fleet`)."""
    import ray

    remote_group = ray.remote(SiteGroup)
    handles = []
    for g, group in enumerate(groups):
        options: dict[str, Any] = {
            # The agents' solves are short and mostly wait for the coordinator: they need no
            # reserved CPU, so many agents share a small machine.
            "num_cpus": 0,
            "max_restarts": setup.max_restarts,
            "max_concurrency": 1,
        }
        if len(group) == 1 and group[0] in pinned:
            options["resources"] = {f"site:{group[0]}": PIN_AMOUNT}
        if names is not None:
            options.update(name=names(g), namespace=namespace)
        # Ray's stubs type the handle's methods as the class's own, without ``.remote``.
        handle: Any = remote_group.options(**options).remote(
            str(source), list(group), **setup.group_arguments()
        )
        # Runs after the constructor, before any later call; a name that fails to import
        # fails again, with its error, at the run's begin.
        handle.import_site_handlers.remote(setup.site_handlers)
        handles.append(handle)
    return handles


def wait_ready(handles: Sequence[Any], groups: Sequence[tuple[str, ...]]) -> None:
    """Wait until every group actor has loaded its sites' data (in its constructor).

    Raises
    ------
    SiteDataInvalid
        A site's data failed validation on the site (only the count of problems arrives).
    SiteGroupLost
        A group failed to start for another reason (its first line).
    """
    import ray

    for handle, group in zip(handles, groups, strict=True):
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=600.0)
        except ray.exceptions.ActorDiedError as error:
            # Ray carries a failed constructor's exception as text; its last line is ours.
            last = str(error).strip().splitlines()[-1]
            kind, _, message = last.partition(": ")
            if kind.endswith("SiteDataInvalid") and (
                invalid := SiteDataInvalid.from_message(message)
            ):
                raise invalid from None
            raise SiteGroupLost(f"site group {list(group)} failed to start: {last}") from None


# --------------------------------------------------------------------------------------------
# thermoroute serve: long-lived agents


#: A service's agents are restarted as often as they crash (over days, not one run).
SERVE_RESTARTS = 1_000_000


def serve_fleet(
    source: str | os.PathLike[str],
    site_ids: Sequence[str],
    *,
    executor: str = "ray",
    address: str | None = None,
    sites_per_agent: int = 1,
    timeout_s: float = 120.0,
    cost_privacy: CostPrivacy | None = None,
) -> Callable[[datetime, int], tuple[Any, Callable[[], None]]]:
    """A ``fleet_factory`` for :class:`thermoroute.service.PlanningService`: the site agents
    as Ray actors placed as ``run`` places them (``site:<id>`` resources pin a site to its
    VM), restarted by Ray whenever they crash, or in this process (``executor="inline"``).
    """

    def build(start: datetime, horizon: int) -> tuple[Any, Callable[[], None]]:
        setup = AgentSetup(start=start, steps=horizon, cost_privacy=cost_privacy, max_restarts=-1)
        if executor == "inline":
            groups = plan_groups(site_ids, sites_per_agent)
            agents = create_inline_groups(source, groups, setup)

            def close_inline() -> None:
                for agent in agents:
                    agent.close()

            return InlineFleet(agents, groups), close_inline
        import ray

        from thermoroute.coordinator.fleet import RayFleet

        started = ensure_ray(address)
        pinned = site_resources() & set(site_ids)
        groups = plan_groups(site_ids, sites_per_agent, pinned)
        handles = create_group_actors(source, groups, pinned, setup)
        wait_ready(handles, groups)
        fleet = RayFleet(handles, groups, timeout_s=timeout_s, restarts=SERVE_RESTARTS)

        def close_ray() -> None:
            fleet.close()
            for handle in handles:
                ray.kill(handle)
            if started:
                stop_ray()

        return fleet, close_ray

    return build


def cluster_summary() -> dict[str, Any] | None:
    """The Ray cluster as ``thermoroute status`` shows it (``None`` without Ray)."""
    import ray

    if not ray.is_initialized():
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    return {
        "nodes": len(nodes),
        "cpus": float(total.get("CPU", 0.0)),
        "site_resources": sorted(k.split(":", 1)[1] for k in total if k.startswith("site:")),
    }
