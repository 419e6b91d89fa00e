"""Write a set of files into a directory so that no reader ever sees one half-written.

Used for everything the product writes: scenario directories, run outputs, a service's
published plans and the coordinator's checkpoints. Nothing here is about scenarios.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath

__all__ = ["write_directory_atomic"]


def write_directory_atomic(
    directory: str | os.PathLike[str], files: Mapping[str, str | bytes], *, durable: bool = True
) -> Path:
    """Write ``files`` (name -> content) into ``directory`` so no half-written file is seen.

    Each file is written to a temporary name in the same directory, flushed and (``durable``)
    fsynced, and only then are all of them renamed into place. ``durable=False`` is for files
    that must survive a process, not a power cut (a checkpoint rewritten every few
    iterations), where a disk flush per write would be paid on a hot path. If anything fails
    before the renames, every temporary file (and any sub-directory made for one) is removed
    and existing files are untouched; targets that could not be renamed into place (an
    existing directory of that name) are found before the first rename.

    Raises
    ------
    ValueError
        For a name that is absolute or climbs out with ``..`` (nothing is written).
    """
    directory = Path(directory)
    for name in files:
        pure = PurePath(name)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ValueError(
                f"refusing to write {name!r} outside {directory}: file names must be "
                "relative, without '..'"
            )
    directory.mkdir(parents=True, exist_ok=True)
    temporary: list[tuple[Path, Path]] = []
    made: list[Path] = []
    try:
        for name, content in files.items():
            target = directory / name
            missing = [p for p in reversed(target.parents) if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            made.extend(missing)
            fd, staged = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
            )
            temporary.append((Path(staged), target))
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content.encode("utf-8") if isinstance(content, str) else content)
                    handle.flush()
                    if durable:
                        os.fsync(handle.fileno())
            except OSError as error:
                # A full disk names no file: say which one could not be written.
                raise OSError(error.errno, error.strerror, str(target)) from None
        # A rename onto a directory fails; find that now rather than after some files have
        # already been replaced.
        for _, target in temporary:
            if target.is_dir():
                raise IsADirectoryError(f"cannot replace directory {target} with a file")
        for tmp, target in temporary:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in temporary:
            tmp.unlink(missing_ok=True)
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return directory
