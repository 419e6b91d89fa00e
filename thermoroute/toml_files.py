"""Reading an operator's TOML file (the follower's and serve's mapping), refused in one line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def read_toml(path: Path, flag: str, error: type[ValueError]) -> dict[str, Any]:
    """The tables of the TOML file ``path``, given with ``flag``.

    Raises
    ------
    error
        One line naming the flag and the file: unreadable, or not TOML (its parser's first
        line of reason).
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{flag} {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise error(f"{flag} {path}: not TOML ({reason})") from None
