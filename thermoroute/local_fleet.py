"""A local fleet kept up between runs: ``thermoroute fleet SCENARIO``.

A run on a local Ray of its own spends most of its wall starting Ray and nine Python workers
— 15.5 s of CPU on a 2-core machine for a 0.7 s solve (BENCHMARKS.md, issue 22). A fleet
starts them once: a local Ray, and one scenario's site agents as *named* actors of the
fleet's process, kept until it stops. ``thermoroute run SCENARIO --address ADDRESS`` finds
them (:func:`find_fleet`) and runs on them instead of starting its own; only its
coordinator actor is new.

The agents are the very ``SiteGroup`` actors a run would start, with the same setup: their
names carry a key of the scenario's files (paths, sizes, modification times), the groups and
the :class:`~thermoroute.cluster.AgentSetup` (:func:`fleet_key`). A run whose scenario,
grouping or setup differs finds no agents under its key and starts its own, as before.

One run at a time: a run leases the fleet (:class:`Lease`, held by an actor of the fleet),
renewing it while it runs; a second run finds it leased and fails in one line
(:class:`FleetBusy`). A lease not renewed for :data:`LEASE_TTL_S` lapses: its driver died.

Ray kills an actor with the process that owns it: stopping the fleet (Ctrl-C, SIGTERM) takes
its agents and the Ray it started with it; nothing is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thermoroute.cluster import AgentSetup

log = logging.getLogger(__name__)

#: The Ray namespace of every fleet's named actors.
NAMESPACE = "thermoroute-fleet"
#: Seconds a run's lease lasts unless renewed, and how often a run renews it.
LEASE_TTL_S = 30.0
LEASE_RENEW_S = 5.0


class FleetBusy(RuntimeError):
    """The fleet is leased by another run, or its agents do not answer (a lease taken just
    before lapses by itself)."""


def fleet_key(source: Path, groups: Sequence[tuple[str, ...]], setup: AgentSetup) -> str:
    """What a fleet's agents were started from.

    The scenario directory's files (relative path, size, modification time: an edited file
    changes it), the product's own code the same way (agents run the code they imported),
    this process's ``THERMOROUTE_*`` environment (an agent reads its own: site metrics,
    site output, a node's cost privacy), the groups and the setup. A fleet's agents restart
    without limit (:func:`keep_agents`), so the setup's restart limit is left out: a run
    applies its own (the fleet's per-run crash count).
    """
    digest = hashlib.sha256(str(source.resolve()).encode())
    code = Path(__file__).resolve().parent
    # In a checkout the subpackages (common/, coordinator/, site_agent/) are links, which
    # rglob does not follow: each is walked where it is.
    linked = sorted(p.resolve() for p in code.iterdir() if p.is_dir() and p.is_symlink())
    for root in (source, code, *linked):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc"):
            stat = path.stat()
            digest.update(f"|{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("THERMOROUTE_"))
    digest.update(repr(env).encode())
    digest.update(repr(tuple(groups)).encode())
    digest.update(repr(replace(setup, max_restarts=0)).encode())
    return digest.hexdigest()[:16]


def agent_name(key: str, group: int) -> str:
    """The named actor of a fleet's group ``group``."""
    return f"agents-{key}-{group}"


def lease_name(key: str) -> str:
    """The named actor of a fleet's :class:`Lease`."""
    return f"lease-{key}"


class Lease:
    """Who runs on the fleet now: a token and the time its lease ends.

    Parameters
    ----------
    clock : callable
        Seconds, monotonic (``time.monotonic``; a test gives its own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._holder: str | None = None
        self._until = 0.0

    def acquire(self, token: str, ttl_s: float) -> bool:
        """Lease to ``token`` for ``ttl_s`` seconds, unless another holds a lease not lapsed.

        Parameters
        ----------
        token : str
            The run's own (unique per run).
        ttl_s : float
            Seconds until the lease lapses unless renewed.
        """
        now = self._clock()
        if self._holder not in (None, token) and now < self._until:
            return False
        self._holder, self._until = token, now + ttl_s
        return True

    def renew(self, token: str, ttl_s: float) -> bool:
        """Extend ``token``'s lease; False when it is not (or no longer) the holder's."""
        if self._holder != token:
            return False
        self._until = self._clock() + ttl_s
        return True

    def release(self, token: str) -> None:
        """End ``token``'s lease (nothing when another holds it)."""
        if self._holder == token:
            self._holder = None


@dataclass(frozen=True)
class KeptAgents:
    """A fleet's agents found by a run, and the fleet's lease.

    Attributes
    ----------
    handles : list
        One ``SiteGroup`` actor handle per group, in the run's group order.
    lease : actor handle
        The fleet's :class:`Lease`.
    """

    handles: list[Any]
    lease: Any

    @contextlib.contextmanager
    def leased(self) -> Iterator[None]:
        """Hold the fleet's lease for the block (renewed in the background); the agents
        first forget what earlier runs left (``SiteGroup.start_afresh``).

        Raises
        ------
        FleetBusy
            Another run holds it, or the fleet stopped answering.
        """
        import ray

        token = ray.get_runtime_context().get_job_id() + f"-{time.time_ns()}"
        try:
            acquired = ray.get(self.lease.acquire.remote(token, LEASE_TTL_S), timeout=60.0)
            if acquired:
                ray.get([h.start_afresh.remote() for h in self.handles], timeout=60.0)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            first = str(error).strip().splitlines()[0]
            raise FleetBusy(f"the fleet's site agents do not answer: {first}") from None
        if not acquired:
            raise FleetBusy(
                "the fleet's site agents are in use by another run (one run at a time); "
                "wait for it, or start a run without --address"
            )
        done = threading.Event()

        def renew() -> None:
            while not done.wait(LEASE_RENEW_S):
                try:
                    held = ray.get(self.lease.renew.remote(token, LEASE_TTL_S), timeout=60.0)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    return  # the fleet is gone: the run's own rounds say so
                if not held:  # lapsed (this driver stalled) and maybe taken by another run
                    log.warning(
                        "this run's lease on the fleet lapsed: another run may use the same "
                        "site agents; the results are not to be trusted"
                    )
                    return

        renewer = threading.Thread(target=renew, name="fleet-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            # The fleet stopped: its lease went with it, and the run's own error stands.
            with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ray.get(self.lease.release.remote(token), timeout=60.0)


def find_fleet(
    source: Path, groups: Sequence[tuple[str, ...]], setup: AgentSetup
) -> KeptAgents | None:
    """The agents a fleet on the joined cluster keeps for exactly this scenario, grouping
    and setup; ``None`` when there are none (the run starts its own)."""
    import ray

    try:
        key = fleet_key(source, groups, setup)
    except OSError:  # a part of the directory this driver may not read (a deployment's)
        return None
    try:
        lease = ray.get_actor(lease_name(key), namespace=NAMESPACE)
        handles = [
            ray.get_actor(agent_name(key, g), namespace=NAMESPACE) for g in range(len(groups))
        ]
    except ValueError:  # no actor of that name: no fleet, or another scenario's
        return None
    return KeptAgents(handles, lease)


def keep_agents(source: Path, groups: Sequence[tuple[str, ...]], setup: AgentSetup) -> KeptAgents:
    """Start a fleet's agents and lease on the Ray this process started or joined, named
    for :func:`find_fleet`; wait until every agent has loaded its sites' data.

    Keep what this returns for as long as the fleet is to stay up: Ray ends an actor (named
    or not) when its owner drops the last handle to it, and with its owner's process.
    """
    import ray

    from thermoroute.cluster import create_group_actors, wait_ready

    key = fleet_key(source, groups, setup)
    # Ray counts an actor's restarts over its life, a run its crashes per run (RayFleet):
    # a fleet's agents outlive many runs, so Ray restarts them without limit.
    setup = replace(setup, max_restarts=-1)
    lease = ray.remote(Lease).options(name=lease_name(key), namespace=NAMESPACE, num_cpus=0)
    kept = KeptAgents(
        create_group_actors(
            source, groups, set(), setup, names=lambda g: agent_name(key, g), namespace=NAMESPACE
        ),
        lease.remote(),
    )
    wait_ready(kept.handles, groups)
    return kept
