"""The registry of distributed methods: each registered once, by name (``--method``).

A method is a coordinator class following
:class:`~thermoroute.coordinator.method_contract.DistributedMethod` (its site side is named in the
:class:`~thermoroute.common.method_protocol.MethodBegin` it sends). Registering it here (or, for a
method of one's own, with :func:`register_method` before the run) is all that makes it
selectable: by its settings' type (:func:`method_for`) or by its name (:data:`METHODS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Not at run time: naming the methods (the command line's choices) imports no numerics.
    from thermoroute.coordinator.method_contract import DistributedMethod, RunSettings

    #: Settings of any method: each method's own type (:attr:`DistributedMethod.settings_type`).
    MethodSettings = RunSettings


def __getattr__(name: str) -> Any:
    """``MethodSettings``, imported when first used (see the note on the imports)."""
    if name == "MethodSettings":
        from thermoroute.coordinator.method_contract import RunSettings

        return RunSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MethodRegistry(MutableMapping[str, "type[DistributedMethod]"]):
    """The methods by name, each class imported when first asked for.

    A product method is registered by name and ``"module:Class"`` (:meth:`register_lazily`),
    so that naming the methods — the command line's choices, ``--help`` — imports none of
    their numerics; a method of one's own is registered as its class
    (:func:`register_method`).
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[DistributedMethod]] = {}
        self._lazy: dict[str, str] = {}

    def register_lazily(self, name: str, reference: str) -> str:
        """Register the class ``reference`` (``"module:Class"``) under ``name``; returns
        ``name``."""
        if name in self:
            raise ValueError(f"method {name!r} is registered already")
        self._lazy[name] = reference
        return name

    def __getitem__(self, name: str) -> type[DistributedMethod]:
        if name not in self._classes:
            reference = self._lazy.get(name)
            if reference is None:
                raise KeyError(name)
            module, _, attribute = reference.partition(":")
            method: type[DistributedMethod] = getattr(importlib.import_module(module), attribute)
            if method.name != name:
                raise ValueError(f"{reference} is method {method.name!r}, not {name!r}")
            self._classes[name] = method
        return self._classes[name]

    def __setitem__(self, name: str, method: type[DistributedMethod]) -> None:
        self._lazy.pop(name, None)
        self._classes[name] = method

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._lazy.pop(name, None)
        self._classes.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._lazy, *self._classes]))

    def __len__(self) -> int:
        return len(set(self._lazy) | set(self._classes))

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._classes


#: The distributed methods by name.
METHODS = MethodRegistry()


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


METHODS.register_lazily("admm", "thermoroute.coordinator.admm:AdmmMethod")
#: The method a run uses when none is asked for: the one the benchmark shows faster at equal
#: accuracy (BENCHMARKS.md).
DEFAULT_METHOD = METHODS.register_lazily("ipm", "thermoroute.coordinator.ipm:InteriorPointMethod")

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "MethodRegistry",
    "MethodSettings",
    "method_for",
    "register_method",
]
