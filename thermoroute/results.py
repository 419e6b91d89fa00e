"""A run's outputs read back as one typed object: what the Python API returns, what the
terminal summary and ``thermoroute report`` are built from.

A run directory (docs/model.md §9) always holds ``summary.json`` and ``schedule.csv``; the
rest depends on the run: ``site_steps.csv`` beside them (central runs, or distributed runs
whose sites shared their detail), or each site's own ``sites/<id>/`` (distributed runs whose
sites kept their detail, when this machine holds those directories — a local run), or
neither (the sites' directories are on their own VMs). :class:`Solution` says which
(:attr:`Solution.site_detail`) and never invents what is missing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thermoroute.common.compare import GainDecomposition
from thermoroute.common.evaluate import load_gpus
from thermoroute.common.outputs import SCHEDULE_COLUMNS, SITE_STEP_COLUMNS
from thermoroute.common.scenario import Scenario

#: Where the per-site detail of a run came from.
SITE_DETAIL_SOURCES = ("run", "site directories", "missing")
#: The sites tables' pPUE columns (terminal and report): :func:`site_pue`'s key → header.
PUE_COLUMNS = {"pue_plan": "pPUE paid", "pue_climate": "pPUE climate"}
#: What the two differ by, under the tables.
PUE_NOTE = (
    "pPUE paid: the plan's mean, weighted by the IT energy it put in each step (facility ÷ "
    "IT energy); pPUE climate: the mean of every step alike, the same under every plan"
)


class RunDirectoryInvalid(ValueError):
    """A directory is not a readable thermoroute run (one line: the file and the problem)."""


@dataclass(frozen=True)
class Solution:
    """One run's outputs.

    Attributes
    ----------
    directory : Path or None
        Where they were read from (``None``: a run the API wrote to a temporary directory).
    summary : dict
        ``summary.json`` as written.
    schedule : DataFrame
        ``time, site_id, region_id, class_id, requests_per_s`` — the decision.
    site_steps : DataFrame or None
        ``time, site_id, active_gpus, load_gpus, it_kw, pue, cooling_kw, wue_l_per_kwh``
        for every site whose detail is at hand.
    site_totals : dict or None
        ``{site_id: totals}`` (the keys of :attr:`totals`) where at hand.
    shadow_prices : DataFrame or None
        ``time, region_id, class_id, aud_per_request``.
    convergence : DataFrame or None
        The distributed method's iterates (``convergence.csv``).
    site_detail : str
        ``"run"`` (the run wrote it), ``"site directories"`` (gathered from
        ``sites/<id>/``), or ``"missing"`` (the sites kept it on their own nodes).
    reference : dict or None
        The temperature-unaware plan's totals and objective, when the run compared.
    decomposition : GainDecomposition or None
        When the run compared and plans with the hourly temperatures (central, distributed):
        its gain over temperature-unaware [AUD], per objective term, split into the sites'
        differences (temperature-unaware − mean-efficiency) and the hourly weather
        (mean-efficiency − this run).
    wall_s : float or None
        The run's wall time, when this process ran it.
    """

    directory: Path | None
    summary: dict[str, Any]
    schedule: pd.DataFrame
    site_steps: pd.DataFrame | None
    site_totals: dict[str, dict[str, float]] | None
    shadow_prices: pd.DataFrame | None
    convergence: pd.DataFrame | None
    site_detail: str
    reference: dict[str, float] | None = None
    decomposition: GainDecomposition | None = None
    wall_s: float | None = None

    @classmethod
    def read(cls, directory: str | Path) -> Solution:
        """Read a run directory; :class:`RunDirectoryInvalid` if it is not one."""
        root = Path(directory)
        summary = _json(root / "summary.json")
        if not isinstance(summary, dict) or "totals" not in summary:
            raise RunDirectoryInvalid(f"{root / 'summary.json'}: not a thermoroute run summary")
        schedule = _csv(root / "schedule.csv", SCHEDULE_COLUMNS)
        steps, totals, source = _site_detail(root, summary)
        return cls(
            directory=root,
            summary=summary,
            schedule=schedule,
            site_steps=steps,
            site_totals=totals,
            shadow_prices=_optional_csv(root / "shadow_prices.csv"),
            convergence=_optional_csv(root / "convergence.csv"),
            site_detail=source,
        )

    # ----------------------------------------------------------------------------------
    # The summary's figures

    @property
    def scenario_name(self) -> str:
        return str(self.summary.get("scenario", "?"))

    @property
    def solver(self) -> str:
        return str(self.summary.get("solver", "?"))

    @property
    def objective_aud(self) -> float:
        return float(self.summary["objective_aud"])

    @property
    def totals(self) -> dict[str, float | None]:
        """The fleet's totals (``summary.json``); ``ttft_mean_ms`` may be ``None``."""
        return dict(self.summary["totals"])

    @property
    def totals_with_objective(self) -> dict[str, float | None]:
        """:attr:`totals` and ``objective_aud``: the figures a comparison lists."""
        return {**self.totals, "objective_aud": self.objective_aud}

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.summary.get("solver_stats", {}))

    @property
    def converged(self) -> bool:
        return bool(self.stats.get("converged", False))

    @property
    def iterations(self) -> int | None:
        value = self.stats.get("iterations")
        return None if value is None else int(value)

    @property
    def step_hours(self) -> float:
        return float(self.summary.get("step_hours", 1.0))

    @property
    def site_ids(self) -> list[str]:
        """Every site of the run, in the order of its files (the schedule's, then the detail's)."""
        seen = dict.fromkeys(self.schedule["site_id"])
        if self.site_steps is not None:
            seen.update(dict.fromkeys(self.site_steps["site_id"]))
        seen.update(dict.fromkeys(self.summary.get("site_outputs", ())))
        return list(seen)

    # ----------------------------------------------------------------------------------
    # Who serves whom

    def served_requests(self) -> pd.DataFrame:
        """Requests served over the horizon per ``class_id, region_id, site_id``
        (``requests``), from the schedule: ``Σ_t requests_per_s · step_hours · 3600``."""
        seconds = self.step_hours * 3600.0
        frame = self.schedule.assign(requests=self.schedule["requests_per_s"] * seconds)
        return (
            frame.groupby(["class_id", "region_id", "site_id"], sort=False)["requests"]
            .sum()
            .reset_index()
        )

    def served_matrix(self, class_id: str) -> pd.DataFrame:
        """Requests of ``class_id`` served over the horizon: regions × sites (zeros where
        a site serves none of a region's)."""
        served = self.served_requests()
        one = served[served["class_id"] == class_id]
        matrix = one.pivot_table(
            index="region_id", columns="site_id", values="requests", aggfunc="sum", sort=False
        )
        return matrix.reindex(columns=[s for s in self.site_ids if s in matrix.columns]).fillna(0.0)

    def shares(self) -> pd.DataFrame:
        """Per region and class, each site's share of the requests served (0–1)."""
        served = self.served_requests()
        total = served.groupby(["class_id", "region_id"], sort=False)["requests"].transform("sum")
        return served.assign(share=served["requests"] / total.where(total > 0, math.nan))

    def x(self, scenario: Scenario) -> np.ndarray:
        """The schedule as ``x[i, j, c, t]`` [requests/s] in ``scenario``'s order (rows of
        ids or times the scenario does not have are left out)."""
        x = np.zeros(scenario.shape)
        index = {
            "site_id": {v: k for k, v in enumerate(scenario.sites.site_id)},
            "region_id": {v: k for k, v in enumerate(scenario.regions.region_id)},
            "class_id": {v: k for k, v in enumerate(scenario.classes.class_id)},
            "time": {t.isoformat(): k for k, t in enumerate(scenario.times)},
        }
        frame = self.schedule
        coords = [frame[col].astype(str).map(index[col]) for col in index]
        known: np.ndarray = np.logical_and.reduce([c.notna().to_numpy() for c in coords])
        at = tuple(c[known].astype(int).to_numpy() for c in coords)
        np.add.at(x, at, frame["requests_per_s"].to_numpy(dtype=float)[known])
        return x

    def site_load(self, scenario: Scenario | None = None) -> pd.DataFrame:
        """Per site: ``requests`` served over the horizon; with the run's ``scenario`` its
        mean ``utilisation`` (busy GPUs over ``u_max`` × installed GPUs); where the sites'
        detail is at hand :func:`site_pue`'s ``pue_plan`` and ``pue_climate``."""
        served = self.served_requests().groupby("site_id", sort=False)["requests"].sum()
        order = list(scenario.sites.site_id) if scenario is not None else self.site_ids
        out = pd.DataFrame({"requests": served}).reindex(order).fillna(0.0)
        if scenario is not None:
            # Mean over the horizon of busy GPUs over usable GPUs u_max·G, per site.
            busy = load_gpus(scenario, self.x(scenario)).mean(axis=1)
            usable = scenario.sites.u_max * scenario.sites.gpus
            out["utilisation"] = pd.Series(busy / usable, index=scenario.sites.site_id)
        if self.site_steps is not None:
            out = out.join(site_pue(self.site_steps))
        return out

    def sites_table(
        self, scenario: Scenario | None = None
    ) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """The sites table as text (the terminal's after ``run`` and the report's): per site
        its requests [M], share of the fleet's, utilisation and the two pPUE means of
        :func:`site_pue`, "—" where a figure is not at hand (no scenario, or the sites kept
        their detail)."""
        load = self.site_load(scenario)
        fleet = float(load["requests"].sum()) or 1.0
        header = ("site", "requests [M]", "of fleet", "utilisation", *PUE_COLUMNS.values())
        rows = [
            (
                str(site_id),
                f"{row['requests'] / 1e6:,.2f}",
                f"{row['requests'] / fleet:.1%}",
                dash_nan(row.get("utilisation", math.nan), ".1%"),
                *(dash_nan(row.get(key, math.nan), ".3f") for key in PUE_COLUMNS),
            )
            for site_id, row in load.iterrows()
        ]
        return header, rows


def dash_nan(value: float, fmt: str) -> str:
    """``value`` formatted, or "—" for a figure that is not at hand (NaN)."""
    return "—" if math.isnan(value) else format(value, fmt)


def site_pue(site_steps: pd.DataFrame) -> pd.DataFrame:
    """Two means of each site's partial PUE over the horizon, from its ``site_steps.csv``.

    Parameters
    ----------
    site_steps : DataFrame
        ``site_id, it_kw, pue`` per site and step (steps of equal length).

    Returns
    -------
    DataFrame
        Indexed by ``site_id``:

        - ``pue_plan`` [–]: weighted by the IT energy the plan put in each step,
          ``Σ_t pPUE·E_IT / Σ_t E_IT`` = facility ÷ IT energy — what the plan paid; it
          moves with where and when the plan places load. NaN for a site the plan left
          without IT energy.
        - ``pue_climate`` [–]: the unweighted mean over every step — the site's climate,
          the same under every plan.
    """
    frame = site_steps.assign(weighted=site_steps["pue"] * site_steps["it_kw"])
    by_site = frame.groupby("site_id", sort=False)
    it_kw = by_site["it_kw"].sum()
    return pd.DataFrame(
        {
            "pue_plan": by_site["weighted"].sum() / it_kw.where(it_kw > 0.0),
            "pue_climate": by_site["pue"].mean(),
        }
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryInvalid(f"{path}: missing (not a thermoroute run directory)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirectoryInvalid(f"{path}: unreadable ({exc})") from None


def _csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"time": str, "site_id": str, "region_id": str})
    except FileNotFoundError:
        raise RunDirectoryInvalid(f"{path}: missing (not a thermoroute run directory)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise RunDirectoryInvalid(f"{path}: unreadable ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RunDirectoryInvalid(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def _optional_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _site_detail(
    root: Path, summary: dict[str, Any]
) -> tuple[pd.DataFrame | None, dict[str, dict[str, float]] | None, str]:
    """The per-site steps and totals, from the run's own files or the sites' directories."""
    if (root / "site_steps.csv").is_file():
        return _csv(root / "site_steps.csv", SITE_STEP_COLUMNS), summary.get("sites"), "run"
    frames, totals = [], {}
    for site_id in summary.get("site_outputs", ()):
        own = root / "sites" / site_id
        if (own / "site_steps.csv").is_file() and (own / "summary.json").is_file():
            frames.append(_csv(own / "site_steps.csv", SITE_STEP_COLUMNS))
            totals[site_id] = _json(own / "summary.json")["totals"]
    if frames:
        return pd.concat(frames, ignore_index=True), totals, "site directories"
    return None, None, "missing"
