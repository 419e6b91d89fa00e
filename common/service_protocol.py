"""The messages of ``thermoroute serve``'s cycle, coordinator ↔ site group.

Each cycle the coordinator tells every group the new horizon's start; each group moves its
sites there, every site re-reading its own data, and answers a :class:`RefreshAnswer` —
which of its sites planned with fresh data, and which incarnation of the group answered (a
group Ray restarted since the last cycle answers a new one). Nothing of the data itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RefreshAnswer:
    """A group's answer to ``refresh(start)``.

    Attributes
    ----------
    incarnation : str
        Drawn when the group's process started: a new value means the group restarted.
    fresh : dict
        ``{site_id: True}`` where the site read its new data, ``False`` where they failed
        validation at the site and it kept its previous forecast.
    """

    incarnation: str
    fresh: Mapping[str, bool]
