"""The registry of distributed methods: each registered once, by name (``--method``).

A method is a coordinator class following
:class:`~thermoroute.coordinator.method_contract.DistributedMethod` (its site side is named in the
:class:`~thermoroute.common.method_protocol.MethodBegin` it sends). Registering it here (or, for a
method of one's own, with :func:`register_method` before the run) is all that makes it
selectable: by its settings' type (:func:`method_for`) or by its name (:data:`METHODS`).
"""

from __future__ import annotations

from thermoroute.coordinator.admm import AdmmMethod
from thermoroute.coordinator.ipm import InteriorPointMethod
from thermoroute.coordinator.method_contract import DistributedMethod, RunSettings

#: The distributed methods by name.
METHODS: dict[str, type[DistributedMethod]] = {}

#: Settings of any method: each method's own type (:attr:`DistributedMethod.settings_type`).
MethodSettings = RunSettings


def register_method(method: type[DistributedMethod]) -> type[DistributedMethod]:
    """Make ``method`` selectable by its name and its settings type; returns it (so it can
    decorate the class).

    Raises
    ------
    ValueError
        Another method has its name or its settings type.
    """
    for other in METHODS.values():
        if other is method:
            return method
        if other.name == method.name or other.settings_type is method.settings_type:
            raise ValueError(f"method {method.name!r} clashes with the registered {other.name!r}")
    METHODS[method.name] = method
    return method


def method_for(settings: object) -> type[DistributedMethod]:
    """The registered method whose settings type ``settings`` is."""
    for method in METHODS.values():
        if isinstance(settings, method.settings_type):
            return method
    raise TypeError(f"no distributed method takes settings of type {type(settings).__name__}")


for _method in (AdmmMethod, InteriorPointMethod):
    register_method(_method)

#: The method a run uses when none is asked for: the one the benchmark shows faster at equal
#: accuracy (BENCHMARKS.md).
DEFAULT_METHOD: str = InteriorPointMethod.name
