"""State files in a data format: a JSON header and named arrays in one ``.npz``, never pickle.

A state file (the coordinator's checkpoint, a service's state) is read back by a process that
trusts its own directory but not necessarily every byte in it: unpickling would run whatever
code a planted file carries. Here a file is NumPy's ``.npz`` (a zip of ``.npy`` arrays) read
with ``allow_pickle=False``, so it can only ever yield numbers and strings. The header is a
JSON object in the array ``__header__``: the file's ``format`` (what it is), its ``version``
and plain fields; anything else, corrupt or newer is refused with one line naming the file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: Plain header values (JSON).
HeaderValue = str | int | float | bool | None

_HEADER = "__header__"
#: How every zip archive (an .npz) begins.
_ZIP_MAGIC = b"PK\x03\x04"


class StateFileError(ValueError):
    """A state file (or the directory meant for one) that cannot be used: ``path: reason``
    on one line."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


def state_bytes(
    kind: str,
    version: int,
    header: Mapping[str, HeaderValue],
    arrays: Mapping[str, np.ndarray],
) -> bytes:
    """The bytes of a state file (write them with
    :func:`~thermoroute.common.atomic_files.write_directory_atomic`).

    Parameters
    ----------
    kind : str
        What the file is (``"thermoroute coordinator checkpoint"``).
    version : int
        The layout's version: a reader refuses a newer one.
    header : mapping
        Plain fields (JSON).
    arrays : mapping of str to ndarray
        Numeric arrays (object arrays are refused: they would need pickle to be read).
    """
    if _HEADER in arrays:
        raise ValueError(f"{_HEADER!r} is reserved for the header")
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects: not a data format")
    text = json.dumps({"format": kind, "version": version, **header}, allow_nan=True)
    named: dict[str, np.ndarray] = {_HEADER: np.array(text), **arrays}
    buffer = io.BytesIO()
    # A zip of .npy members: the same as np.savez, written here so that no keyword of
    # savez's own can collide with an array's name.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in named.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_state(
    path: str | os.PathLike[str], kind: str, version: int
) -> tuple[dict[str, HeaderValue], dict[str, np.ndarray]]:
    """Read a state file written by :func:`state_bytes`: its header and its arrays.

    Raises
    ------
    StateFileError
        The file is unreadable, not an ``.npz`` of numbers, of another ``kind`` or of a
        newer ``version`` than this reader knows.
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
        # NumPy's own refusal of anything but an archive (a lone .npy too) invites loading
        # it with pickle: say what it is instead.
        if magic == _ZIP_MAGIC:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise StateFileError(path, "no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        # ValueError: a corrupt member, or an array that would need pickle to be read.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StateFileError(path, f"not a {kind} ({reason})") from None
    if magic != _ZIP_MAGIC:
        what = "a pickle, never read" if magic[:1] == b"\x80" else "not an .npz archive"
        raise StateFileError(path, f"not a {kind} ({what})")
    if _HEADER not in arrays:
        raise StateFileError(path, f"not a {kind} (no header)")
    try:
        header = json.loads(str(arrays.pop(_HEADER)))
    except ValueError:
        raise StateFileError(path, f"not a {kind} (its header is not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != kind:
        raise StateFileError(path, f"not a {kind}")
    found = header.get("version")
    if not isinstance(found, int) or not 1 <= found <= version:
        raise StateFileError(
            path, f"a {kind} of version {found!r}; this thermoroute reads versions 1–{version}"
        )
    return header, arrays
