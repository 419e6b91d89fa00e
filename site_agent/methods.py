"""The site side of the method contract: a handler per run, built by the method's factory.

A :class:`~thermoroute.site_agent.group.SiteGroup` knows no method. At the start of a run the
coordinator sends a :class:`~thermoroute.common.method_protocol.MethodBegin` naming the method's
site factory (``"module:name"``, e.g. ``thermoroute.site_agent.ipm:begin_interior_point``); the
group imports it from its own installation (:func:`site_handler_factory`) and calls it with its
hosted sites (:class:`HostedSites`), the handler of its previous run (a receding-horizon run may
start from what that one kept) and the begin message's settings. The handler then answers the
run's rounds: ``method_start``, ``method_round`` and, for methods that scatter slices of a
stacked vector, ``method_scatter``.

Adding a method's site side: one module with a factory following :class:`SiteHandlerFactory`
whose handler follows :class:`SiteHandler` (and :class:`ScatterHandler` if it scatters). Nothing
here or in the group changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from thermoroute.common.coupling import CouplingLayout
from thermoroute.common.method_protocol import ScatterAnswer, ScatterRequest
from thermoroute.site_agent.agent import SiteAgent


@dataclass(frozen=True)
class HostedSites:
    """What a group gives a method's site side: its sites and the means to solve them.

    Attributes
    ----------
    agents : tuple of SiteAgent
        The hosted sites, in the group's order (the order of its answers).
    layout : CouplingLayout
    map : callable
        ``map(fn, items) -> list``: ``fn`` over ``items`` in the group's solver threads
        (OSQP and the linear algebra release the GIL), results in order.
    """

    agents: tuple[SiteAgent, ...]
    layout: CouplingLayout
    map: Callable[[Callable[[Any], Any], Iterable[Any]], list[Any]]


class SiteHandler(Protocol):
    """A site group's side of one run of a method.

    Messages are the method's own types (its ``common/*_protocol.py``); the group passes
    them through untouched.
    """

    @property
    def started(self) -> bool:
        """Whether the hosted sites hold an iterate of this run (a group that rejoins keeps
        it)."""
        ...

    def new_key(self) -> bytes:
        """A fresh masking key for the run (or after a group rejoined): the public half,
        empty when the method does not mask its answers."""
        ...

    def start(self, message: object, group_index: int) -> object:
        """The run's starting point; the group's answer."""
        ...

    def handle(self, request: object) -> object:
        """One round on every hosted site; the group's (masked) answer."""
        ...

    def shift(self, steps: int) -> None:
        """The horizon moved ``steps``: move what the handler keeps for a warm start."""
        ...


@runtime_checkable
class ScatterHandler(Protocol):
    """A handler of a method whose rounds scatter slices of one stacked vector."""

    def scatter(self, request: ScatterRequest) -> ScatterAnswer:
        """Answer every hosted site's slice of ``request``."""
        ...


class SiteHandlerFactory(Protocol):
    """Builds a run's :class:`SiteHandler` (the name a :class:`MethodBegin` gives)."""

    def __call__(
        self, sites: HostedSites, previous: SiteHandler | None, settings: object
    ) -> SiteHandler: ...


def site_handler_factory(name: str | Callable[..., object]) -> SiteHandlerFactory:
    """Import the factory named ``"module:attribute"`` (a factory given itself is used as
    it is).

    Raises
    ------
    ValueError
        ``name`` is not of that form, or names nothing callable.
    """
    if callable(name):
        return name  # type: ignore[return-value]
    module_name, sep, attribute = name.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"a site handler is named 'module:factory', not {name!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"no site handler {name!r} here: {error}") from None
    if not callable(factory):
        raise ValueError(f"site handler {name!r} is not callable")
    return factory
