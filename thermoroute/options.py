"""The settings of one run, as one typed object from the command line to the launcher.

:class:`RunOptions` is built once from the flags, checked by :meth:`RunOptions.check` before
any work starts (every range, the metrics port, the Ray address), and carried whole through
:mod:`thermoroute.runner` and :mod:`thermoroute.distributed_run`; only
:meth:`RunOptions.launch_spec` turns it into the launch's own object,
:class:`thermoroute.launch.DistributedRunSpec`.
A bad value is one :class:`OptionError` naming the flag, the value and what is allowed; so is
a flag the user gave that another makes meaningless (``--solver central --method admm``).
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from thermoroute.common.bounds import bound_of

if TYPE_CHECKING:
    from thermoroute.common.scenario import Scenario
    from thermoroute.coordinator.method_contract import RunSettings
    from thermoroute.launch import DistributedRunSpec
    from thermoroute.site_agent.cost_privacy import CostPrivacy

#: What a distributed method accepts as ε_rel: above this the answer is not worth having.
EPS_REL_MAX = 0.1
#: A run needs at least one iteration; beyond this it is a mistake, not a setting.
MAX_ITER_LIMIT = 100_000
AGENT_RESTARTS_LIMIT = 100
METRICS_LINGER_MAX_S = 3_600.0
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})")
#: The options only a distributed run reads (the sites' agents, their method, the
#: coordinator's metrics).
_DISTRIBUTED_ONLY = (
    "method", "executor", "address", "sites_per_agent", "penalty", "acceleration", "eps_rel",
    "max_iter", "secure_aggregation", "share_site_details", "agent_restarts", "inner_fallback",
    "metrics_port", "metrics_addr", "metrics_linger",
)  # fmt: skip
#: The options only one distributed method reads: the option, the method, its words.
_METHOD_ONLY = (
    ("penalty", "admm", "ADMM's"),
    ("acceleration", "admm", "ADMM's"),
    ("inner_fallback", "admm", "ADMM's"),
    ("secure_aggregation", "ipm", "the interior point's"),
)
#: The options only a run on Ray reads (an in-process run has no cluster, no actors).
_RAY_ONLY = ("address", "agent_restarts")


class OptionError(ValueError):
    """A flag's value is not allowed: ``--flag VALUE: what is allowed``."""

    def __init__(self, flag: str, value: object, allowed: str) -> None:
        self.flag = flag
        super().__init__(f"{flag} {value}: {allowed}")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``thermoroute run`` (and ``simulate``) was asked for, beyond the scenario.

    Attributes mirror the flags (``docs`` in ``thermoroute run --help``); ``method`` and the
    ADMM-only ones matter for distributed runs only.
    """

    solver: str = "distributed"
    #: ``None``: the default method (:data:`thermoroute.coordinator.methods.DEFAULT_METHOD`).
    method: str | None = None
    executor: str = "ray"
    address: str | None = None
    sites_per_agent: int = 1
    penalty: str = "per-row"
    acceleration: str = "none"
    eps_rel: float | None = None  # None: the method's own (docs/model.md §7)
    max_iter: int | None = None
    secure_aggregation: bool = True
    share_site_details: bool = False
    agent_restarts: int = 3
    inner_fallback: bool = False
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    metrics_linger: float = 0.0
    steps: int | None = None
    live: bool = True
    #: ε per site-hour of the sites' cost privacy (docs/model.md §11); ``None``: off.
    cost_privacy_epsilon: float | None = None
    #: Δ [AUD per MWh of IT energy]; ``None``: the default
    #: (:data:`thermoroute.site_agent.cost_privacy.DEFAULT_SENSITIVITY_AUD_PER_MWH`).
    cost_privacy_sensitivity: float | None = None
    #: The options the user gave, by attribute name (a command's other parameters may be
    #: named too; no check reads them): only these can conflict, so a default never
    #: refuses a run.
    given: frozenset[str] = frozenset()

    @property
    def distributed(self) -> bool:
        """Whether the sites solve it (``--solver distributed``, or a method's name)."""
        from thermoroute.coordinator.methods import METHODS

        return self.solver == "distributed" or self.solver in METHODS

    @property
    def effective_method(self) -> str:
        """The distributed method: ``--solver NAME`` names it whatever ``--method`` says
        (scripts of the time when only exchange ADMM ran distributed), else ``--method``,
        else the default."""
        from thermoroute.coordinator.methods import DEFAULT_METHOD, METHODS

        if self.solver in METHODS:
            return self.solver
        return self.method or DEFAULT_METHOD

    def check(self, *, probe: bool = True) -> RunOptions:
        """Raise :class:`OptionError` for the first flag whose value is not allowed.

        ``probe`` also tries what can be tried before the run: the metrics port free on its
        address, and a Ray ``--address`` answering (refusal by token or certificate is the
        run's failure, not a bad flag: :class:`~thermoroute.ray_auth.ClusterAccessError`).
        A given flag the run would ignore is refused before any probe
        (:meth:`_check_conflicts`).
        """
        if self.eps_rel is not None and not (
            math.isfinite(self.eps_rel) and 0 < self.eps_rel <= EPS_REL_MAX
        ):
            raise OptionError("--eps-rel", self.eps_rel, f"a number in (0, {EPS_REL_MAX:g}]")
        if self.max_iter is not None and not 1 <= self.max_iter <= MAX_ITER_LIMIT:
            raise OptionError("--max-iter", self.max_iter, f"an integer in [1, {MAX_ITER_LIMIT:,}]")
        if self.sites_per_agent < 1:
            raise OptionError("--sites-per-agent", self.sites_per_agent, "an integer >= 1")
        if not 0 <= self.agent_restarts <= AGENT_RESTARTS_LIMIT:
            raise OptionError(
                "--agent-restarts",
                self.agent_restarts,
                f"an integer in [0, {AGENT_RESTARTS_LIMIT}]",
            )
        if not (
            math.isfinite(self.metrics_linger) and 0 <= self.metrics_linger <= METRICS_LINGER_MAX_S
        ):
            raise OptionError(
                "--metrics-linger", self.metrics_linger, f"seconds in [0, {METRICS_LINGER_MAX_S:g}]"
            )
        steps = bound_of("scenario.toml", "steps")
        if self.steps is not None and steps is not None and not steps.admits(self.steps):
            raise OptionError("--steps", self.steps, f"an integer in {steps.describe()}")
        self._check_cost_privacy()
        self._check_conflicts()
        if self.metrics_port is not None:
            self._check_metrics_port(probe)
        if self.address is not None:
            self._check_address(probe)
        return self

    def _check_cost_privacy(self) -> None:
        for flag, value in (
            ("--cost-privacy", self.cost_privacy_epsilon),
            ("--cost-privacy-sensitivity", self.cost_privacy_sensitivity),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise OptionError(flag, value, "a positive number")
        if self.cost_privacy_epsilon is None and self.cost_privacy_sensitivity is not None:
            raise OptionError(
                "--cost-privacy-sensitivity",
                self.cost_privacy_sensitivity,
                "applies only with --cost-privacy EPSILON",
            )
        if self.cost_privacy_epsilon is not None and self.share_site_details:
            raise OptionError(
                "--cost-privacy",
                self.cost_privacy_epsilon,
                "not with --share-site-details, which sends the coordinator the sites' hourly "
                "pPUE and true costs that the noise hides",
            )
        if self.cost_privacy_epsilon is not None and not self.distributed:
            raise OptionError(
                "--cost-privacy",
                self.cost_privacy_epsilon,
                f"the sites add noise only when they solve (--solver distributed), not with "
                f"--solver {self.solver}, which reads every site's data",
            )

    def cost_privacy(self) -> CostPrivacy | None:
        """The sites' cost privacy these options ask for (``None``: off)."""
        from thermoroute.site_agent.cost_privacy import (
            DEFAULT_SENSITIVITY_AUD_PER_MWH,
            CostPrivacy,
        )

        if self.cost_privacy_epsilon is None:
            return None
        sensitivity = self.cost_privacy_sensitivity
        return CostPrivacy(
            self.cost_privacy_epsilon,
            DEFAULT_SENSITIVITY_AUD_PER_MWH if sensitivity is None else sensitivity,
        )

    def _spelled(self, name: str) -> str:
        """Option ``name`` as given: ``--penalty scalar``, ``--no-secure-aggregation``."""
        flag = "--" + name.replace("_", "-")
        value = getattr(self, name)
        if isinstance(value, bool):
            return flag if value else f"--no-{flag[2:]}"
        return f"{flag} {value}"

    def _check_conflicts(self) -> None:
        """Raise :class:`OptionError` for a given flag that the run these options describe
        would ignore (``--solver central --method admm``, ``--penalty`` with the interior
        point): silently ignored, it would look obeyed. Only :attr:`given` flags are
        refused; the flag that decides may be given or a default, and is named either way.
        """
        from thermoroute.coordinator.methods import METHODS

        def refuse(name: str, beside: str, allowed: str) -> NoReturn:
            flag, _, value = self._spelled(name).partition(" ")
            raise OptionError(flag, f"{value} {beside}".lstrip(), allowed)

        ignored = [name for name in _DISTRIBUTED_ONLY if name in self.given]
        if not self.distributed and ignored:
            refuse(ignored[0], f"with --solver {self.solver}", "only --solver distributed reads it")
        by_solver = self.solver in METHODS
        if by_solver and "method" in self.given and self.method != self.solver:
            said = f"--solver {self.solver} is --method {self.solver}; give one"
            refuse("method", f"with --solver {self.solver}", said)
        method = self.effective_method
        if by_solver:
            chosen = f"with --solver {method}"
        else:
            default = "" if "method" in self.given else " (the default)"
            chosen = f"with --method {method}{default}"
        for name, owner, whose in _METHOD_ONLY:
            if name in self.given and method != owner:
                refuse(name, chosen, f"{whose} flag, read with --method {owner} only")
        if self.executor != "ray":
            for name in _RAY_ONLY:
                if name in self.given:
                    refuse(name, f"with --executor {self.executor}", "read by a run on Ray only")
        if self.metrics_port is None:
            for name in ("metrics_addr", "metrics_linger"):
                if name in self.given:
                    refuse(name, "without --metrics-port", "it sets what --metrics-port starts")

    def _check_metrics_port(self, probe: bool) -> None:
        if not 1 <= self.metrics_port <= 65535:  # type: ignore[operator]
            raise OptionError("--metrics-port", self.metrics_port, "a port in [1, 65535]")
        if not probe:
            return
        try:
            socket.getaddrinfo(self.metrics_addr, self.metrics_port)
        except socket.gaierror as error:
            raise OptionError(
                "--metrics-addr", self.metrics_addr, f"an address of this host ({error.strerror})"
            ) from None
        try:
            with socket.create_server((self.metrics_addr, self.metrics_port)):
                pass
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise OptionError(
                "--metrics-port",
                self.metrics_port,
                f"cannot listen on {self.metrics_addr}:{self.metrics_port} ({reason}); choose a "
                "free port",
            ) from None

    def _check_address(self, probe: bool) -> None:
        address = self.address or ""
        if address == "auto":
            return
        match = _ADDRESS.fullmatch(address)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise OptionError("--address", address, "host:port (e.g. 10.0.0.10:6379) or auto")
        if not probe:
            return
        host = match["host"].strip("[]")
        try:
            with socket.create_connection((host, int(match["port"])), timeout=3.0):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise OptionError(
                "--address", address, f"no Ray cluster answers there within 3 s ({reason})"
            ) from None

    def method_settings(self) -> RunSettings:
        """The method's settings these options set; their type selects the method.

        Each method takes the flags that apply to it
        (:meth:`~thermoroute.coordinator.method_contract.DistributedMethod.settings_for`);
        ``agent_restarts`` is how often a crashed agent is restarted (Ray runs).
        """
        from thermoroute.coordinator.method_contract import MethodFlags
        from thermoroute.coordinator.methods import METHODS

        method = METHODS.get(self.effective_method)
        if method is None:
            raise ValueError(f"unknown method {self.effective_method!r}")
        return method.settings_for(
            MethodFlags(
                eps_rel=self.eps_rel,
                max_iter=self.max_iter,
                agent_restarts=self.agent_restarts,
                secure_aggregation=self.secure_aggregation,
                penalty=self.penalty,
                acceleration=self.acceleration,
            )
        )

    def launch_spec(self, scenario: Scenario | None = None) -> DistributedRunSpec:
        """How :func:`thermoroute.launch.solve_distributed` launches the run these options
        describe on ``scenario``'s horizon (given when the driver can read the whole
        scenario: local emulation); the caller adds what is not a flag: observers,
        progress. ``thermoroute fleet`` keys its agents by the same spec's agent setup."""
        from thermoroute.launch import DistributedRunSpec
        from thermoroute.site_agent.subproblem import InnerSettings

        return DistributedRunSpec(
            executor=self.executor,
            address=self.address,
            sites_per_agent=self.sites_per_agent,
            settings=self.method_settings(),
            inner=InnerSettings(fallback=self.inner_fallback),
            share_site_details=self.share_site_details,
            cost_privacy=self.cost_privacy(),
            # A command runs one job: the Ray it starts stops with it, its session
            # directory removed (a library caller keeps its Ray for the next solve).
            shutdown=True,
            start=None if scenario is None else scenario.start,
            steps=None if scenario is None else scenario.steps,
        )
