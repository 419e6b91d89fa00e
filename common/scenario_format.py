"""The scenario directory format, input format v1 (docs/model.md §8): its files, their
columns, what an id may look like, and which files are a site's and which the coordinator's.

Reading and checking them is :mod:`thermoroute.common.scenario_readers`' job, writing them
:mod:`thermoroute.common.scenario_writing`'s.
"""

from __future__ import annotations

import re

__all__ = [
    "BATCH_COLUMNS",
    "CLASS_COLUMNS",
    "COORDINATOR_FILES",
    "DEMAND_COLUMNS",
    "ID_PATTERN",
    "ID_RULE",
    "NETWORK_COLUMNS",
    "PPUE_CURVE_COLUMNS",
    "PPUE_CURVE_FILE",
    "PROFILE_COLUMNS",
    "REGION_COLUMNS",
    "SCENARIO_FILES",
    "SERIES_COLUMNS",
    "SITE_COLUMNS",
    "SITE_OPTIONAL_FILES",
    "SITE_PRIVATE_FILES",
]


SCENARIO_FILES = (
    "scenario.toml",
    "sites.csv",
    "regions.csv",
    "classes.csv",
    "profiles.csv",
    "network.csv",
    "site_series.csv",
    "demand.csv",
    "batch.csv",
)

SITE_COLUMNS = (
    "site_id",
    "name",
    "lat",
    "lon",
    "grid_region",
    "gpus",
    "idle_w",
    "u_max",
    "max_wait_ms",
    "ref_gpu_s",
    "ppue_a",
    "ppue_b",
    "ppue_c",
    "wue_model",
    "wue_p1",
    "wue_p2",
)
REGION_COLUMNS = ("region_id", "name", "lat", "lon", "population")
CLASS_COLUMNS = (
    "class_id",
    "model",
    "prompt_tokens",
    "output_tokens",
    "ttft_slo_ms",
    "deferrable",
)
PROFILE_COLUMNS = ("site_id", "class_id", "gpu_s", "energy_j", "prefill_ms")
NETWORK_COLUMNS = ("site_id", "region_id", "rtt_ms")
SERIES_COLUMNS = (
    "time",
    "site_id",
    "dry_bulb_c",
    "wet_bulb_c",
    "price_aud_per_mwh",
    "carbon_kg_per_kwh",
    "ewif_l_per_kwh",
)
#: Model v1.1's optional file (docs/model.md §12): measured pPUE curves, private to each site.
PPUE_CURVE_FILE = "ppue_curve.csv"
PPUE_CURVE_COLUMNS = ("site_id", "dry_bulb_c", "ppue")
DEMAND_COLUMNS = ("time", "region_id", "class_id", "requests_per_s")
BATCH_COLUMNS = ("region_id", "class_id", "requests")

#: What an id may look like (docs/model.md §8): it names per-site directories, Ray resources
#: and metric labels, so nothing that climbs out of a directory, hides as a dot file or needs
#: quoting.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
ID_RULE = "letters, digits, '-', '_' and '.', not starting with '.', at most 64 characters"

#: The files that hold a site's private data: each site gets only its own rows of them
#: (:func:`thermoroute.common.scenario_split.site_slice_files`).
SITE_PRIVATE_FILES = ("sites.csv", "profiles.csv", "network.csv", "site_series.csv")
#: A site's own optional files (model v1.1), sliced like the others where present.
SITE_OPTIONAL_FILES = (PPUE_CURVE_FILE,)
#: The coordinator's files (the demand side and the public definitions).
COORDINATOR_FILES = ("scenario.toml", "regions.csv", "classes.csv", "demand.csv", "batch.csv")
