"""What every window of a receding horizon repeats, for ``thermoroute simulate``
(:mod:`thermoroute.simulation`) and ``thermoroute serve`` (:mod:`thermoroute.service`) alike.

The model — demand forecasts, the batch backlog, draining — is
:mod:`thermoroute.coordinator.receding`. This is the bookkeeping around the coordinator once
its fleet has moved to the next window: give it the window's view and register the fleet again
(:meth:`RecedingWindows.open`), warm-start the method from its state at the end of the last
window shifted to this one, or start cold, keep the state the solve ends with
(:meth:`RecedingWindows.remember`), and take what the applied first step served off the
deferrable backlog (:func:`serve_first_step`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from thermoroute.common.scenario import DemandView
from thermoroute.common.state_files import HeaderValue
from thermoroute.coordinator.actor import Coordinator, CoordinatorOutcome
from thermoroute.coordinator.methods import METHODS
from thermoroute.coordinator.receding import BatchBacklog
from thermoroute.coordinator.structure import ExchangeStructure


@dataclass
class RecedingWindows:
    """The method's state carried from one window to the next (small: the service writes
    it to its state file after every cycle, :meth:`to_arrays`).

    Attributes
    ----------
    method : str
        The registry name of the method whose state it is (empty before the first solve).
    state : object
        Its :attr:`~thermoroute.coordinator.method_contract.MethodRun.state` at the end of the
        last window solved.
    structure : ExchangeStructure or None
        The coupling structure that window was solved on.
    step : int
        That window's first step (``-1`` before the first solve).
    """

    method: str = ""
    state: Any = None
    structure: ExchangeStructure | None = None
    step: int = -1

    def open(
        self, coordinator: Coordinator, view: DemandView, step: int, *, warm: bool = True
    ) -> Any:
        """Give ``coordinator`` the view of the window from ``step`` and register its fleet
        (moved to that window already); returns the warm start for its run (``None``: cold).

        The carried state is shifted to the new window when ``warm``, when it is the same
        method's and when ``step`` is later than the last window's first step and within
        the new window's length — a one-step window still takes the previous step's state,
        whose last step the method repeats. A state that no longer fits the fleet or the
        layout (the shift raises) starts the window cold.
        """
        coordinator.set_view(view)
        coordinator.register()
        new = coordinator.structure
        # ``register`` has just built the structure; the check keeps its type exact.
        if not warm or self.state is None or self.structure is None or new is None:
            return None
        method = coordinator.method
        age = step - self.step
        if self.method != method.name or not 0 < age < max(coordinator.layout.steps, 2):
            return None
        try:
            return method.shift(self.state, self.structure, new, coordinator.layout, age)
        except (ValueError, IndexError):
            return None

    def to_arrays(self) -> tuple[dict[str, HeaderValue], dict[str, np.ndarray]]:
        """The windows as plain fields and named arrays, for a state file
        (common/state_files.py); :meth:`from_arrays` gives them back exactly.

        Returns
        -------
        fields : dict
            ``method``, ``step`` and ``state`` (whether a method state is carried).
        arrays : dict of str to ndarray
            ``structure.<name>`` (:meth:`ExchangeStructure.to_arrays`) and ``state.<name>``:
            the method's own arrays for its state
            (:meth:`~thermoroute.coordinator.method_contract.DistributedMethod.state_arrays`),
            so that nothing here knows any method's state.

        Raises
        ------
        KeyError
            A state is carried for a method that is not registered.
        """
        fields: dict[str, HeaderValue] = {
            "method": self.method,
            "step": self.step,
            "state": self.state is not None,
        }
        arrays: dict[str, np.ndarray] = {}
        if self.structure is not None:
            arrays.update({f"structure.{k}": v for k, v in self.structure.to_arrays().items()})
        if self.state is not None:
            own = METHODS[self.method].state_arrays(self.state)
            arrays.update({f"state.{k}": v for k, v in own.items()})
        return fields, arrays

    @classmethod
    def from_arrays(
        cls, fields: Mapping[str, HeaderValue], arrays: Mapping[str, np.ndarray]
    ) -> RecedingWindows:
        """The windows :meth:`to_arrays` gave.

        Raises
        ------
        ValueError
            The fields or arrays are not such windows (a field or an array missing or of the
            wrong type, or a state of a method that is not registered).
        """
        method, step, carried = fields.get("method"), fields.get("step"), fields.get("state")
        if (
            not isinstance(method, str)
            or not isinstance(step, int)
            or not isinstance(carried, bool)
        ):
            raise ValueError("the receding windows' method, step or state flag is missing")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

        structure = part("structure.")
        state = None
        try:
            if carried:
                if method not in METHODS:
                    raise ValueError(f"a state of method {method!r}, which is not registered")
                state = METHODS[method].state_from_arrays(part("state."))
            return cls(
                method=method,
                state=state,
                structure=ExchangeStructure.from_arrays(structure) if structure else None,
                step=step,
            )
        except KeyError as missing:
            raise ValueError(f"the receding windows lack the array {missing}") from None

    def remember(self, outcome: CoordinatorOutcome, step: int) -> None:
        """Carry the state ``outcome`` ended with (the window from ``step``) to the next
        window; even an iterate that stopped unconverged is a better start than a cold one."""
        self.method, self.state = outcome.method, outcome.run.state
        self.structure, self.step = outcome.structure, step


def serve_first_step(
    backlog: BatchBacklog, x: np.ndarray, step_seconds: float, deferrable: np.ndarray
) -> np.ndarray:
    """Apply the first step of the plan ``x`` (S, R, C, T) [requests/s] to ``backlog``: what it
    serves of the deferrable classes (``deferrable``, a mask over the classes) is taken off.

    Returns
    -------
    ndarray (R, C)
        The requests the step serves, of every class.
    """
    served = x[:, :, :, 0].sum(axis=0) * step_seconds
    backlog.serve(served * deferrable[None, :])
    return served
