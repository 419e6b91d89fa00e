"""Scenarios shipped with the package (package data), built by ``data_build/build_scenarios.py``.

- ``australia`` — the 8 capital cities as sites and regions, real NEM prices and emissions of
  the week 2023-01-17 … 2023-01-24 and the real hourly weather of the same hours.
- ``australia-20`` — 20 sites (capitals, regional cities, airport campuses) and 16 regions.
- ``australia-heatwave-2020`` — the sites of ``australia`` over 28 Jan – 2 Feb 2020 (default
  horizon 31 Jan: Melbourne 42 °C, VIC1 at the price cap), real AEMO prices and weather.
- ``australia-winter-2020`` — the sites of ``australia`` over 6–12 July 2020.

See docs/data.md and each scenario's ``PROVENANCE.md`` for sources and methods.

Examples
--------
>>> from thermoroute.common.scenarios import embedded_path, embedded_scenarios
>>> "australia" in embedded_scenarios()
True
>>> from thermoroute.common.scenario_loading import load_scenario
>>> load_scenario(embedded_path("australia")).shape
(8, 8, 3, 24)
"""

from __future__ import annotations

import os
import pathlib
from importlib import resources

from thermoroute.common.errors import Problem, ScenarioError

__all__ = ["embedded_path", "embedded_scenarios", "scenario_directory"]


def _root() -> pathlib.Path:
    # The package is installed as plain files (setuptools package data), so the traversable
    # is a real directory; load_scenario needs a filesystem path.
    return pathlib.Path(str(resources.files(__name__)))


def embedded_scenarios() -> list[str]:
    """Names of the embedded scenarios, sorted.

    Returns
    -------
    list of str
        Every sub-directory of the package that holds a ``scenario.toml``.
    """
    root = _root()
    return sorted(p.name for p in root.iterdir() if (p / "scenario.toml").is_file())


def embedded_path(name: str) -> pathlib.Path:
    """Directory of the embedded scenario ``name``, for
    :func:`thermoroute.common.scenario_loading.load_scenario`.

    Parameters
    ----------
    name : str
        One of :func:`embedded_scenarios`.

    Raises
    ------
    KeyError
        For an unknown name; the message lists the embedded scenarios.
    """
    names = embedded_scenarios()
    if name not in names:
        raise KeyError(
            f"unknown embedded scenario {name!r}; embedded scenarios: {', '.join(names) or 'none'}"
        )
    return _root() / name


def scenario_directory(source: str | os.PathLike[str]) -> pathlib.Path:
    """The directory behind a scenario argument: a directory path, or an embedded name.

    Parameters
    ----------
    source : str or path
        A scenario directory (or any directory a caller understands, such as the output
        root of :func:`thermoroute.common.scenario_split.split_scenario`), or one of
        :func:`embedded_scenarios`.

    Raises
    ------
    ScenarioError
        When ``source`` is neither; the problem lists the embedded scenarios.
    """
    path = pathlib.Path(source)
    if path.is_dir():
        return path
    names = embedded_scenarios()
    if str(source) in names:
        return _root() / str(source)
    what = "not a directory" if path.exists() else "no such scenario directory"
    raise ScenarioError(
        Problem(
            str(source),
            f"{what}, and not an embedded scenario (embedded: {', '.join(names) or 'none'})",
        ),
        str(source),
    )
