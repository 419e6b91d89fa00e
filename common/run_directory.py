"""A run's output directory: checked before any work, written whole, owned and locked.

A run writes into a fresh staging directory beside its target and swaps it in whole at the
end (the previous output is moved aside first and removed after), so a reader sees the old
run or the new one, never a mix, and a failed run changes nothing. Rules (docs/model.md §9):

* the target is refused before any work if it is a file, if its parent cannot be written,
  or if it is a non-empty directory that no thermoroute run wrote (no :data:`MARKER` file):
  a mistaken ``--out`` never deletes a user's files;
* an earlier run's directory is replaced whole: no stale file of it survives;
* a lock file beside the target serialises two runs with the same target;
* files and directories get the user's umask (0644 and 0755 by default), as any tool's
  output would.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from thermoroute.common.atomic_files import write_directory_atomic

#: The file that marks a directory as a thermoroute run's output (it may be replaced).
MARKER = ".thermoroute-run"


class OutputDirectoryError(ValueError):
    """The target cannot take a run's output (the message says why, in one line)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_file_whole(target: str | os.PathLike[str], content: str | bytes) -> Path:
    """Replace one output file (a report, a plot) whole, with the umask's mode.

    Raises
    ------
    OutputDirectoryError
        ``target`` is a directory, or its directory cannot be written.
    """
    path = Path(target).expanduser()
    if path.is_dir():
        raise OutputDirectoryError(f"{path} is a directory; name a file")
    try:
        write_directory_atomic(path.parent, {path.name: content})
        os.chmod(path, 0o666 & ~_umask())
    except OSError as exc:
        raise OutputDirectoryError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_output_directory(target: str | os.PathLike[str]) -> Path:
    """Refuse a target no run may write (see the module docstring); return it resolved.

    Raises
    ------
    OutputDirectoryError
    """
    path = Path(target).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirectoryError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise OutputDirectoryError(
            f"{path} is a non-empty directory that no thermoroute run wrote; choose an empty "
            "or new directory, or an earlier run's output"
        )
    parent = path.absolute().parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirectoryError(f"cannot create {path}: {existing} is not writable")
    return path.absolute()


class RunDirectory:
    """Stage a run's output and swap it in whole (a context manager).

    Usage::

        with RunDirectory(out, command="run") as run_dir:
            ... write into run_dir.staging (sites may write into run_dir.staging / "sites") ...
            run_dir.commit()

    Leaving without :meth:`commit` (an error, Ctrl-C) removes the staging directory and
    leaves the target as it was. The lock is held from entering to leaving.
    """

    def __init__(self, target: str | os.PathLike[str], *, command: str = "run") -> None:
        self.target = check_output_directory(target)
        self.command = command
        self.staging: Path | None = None
        self._lock: int | None = None
        self._committed = False

    @property
    def _lock_path(self) -> Path:
        return self.target.parent / f".{self.target.name}.lock"

    def __enter__(self) -> RunDirectory:
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._lock = self._acquire()
            # Checked again under the lock: the first run may have changed the target.
            check_output_directory(self.target)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.new-", dir=parent))
        except OSError as error:
            self._release()
            raise OutputDirectoryError(
                f"cannot write in {parent}: {error.strerror or error}"
            ) from None
        except BaseException:
            self._release()
            raise
        return self

    def _acquire(self) -> int:
        """The lock file, opened and locked: a second run waits for the first.

        The holder removes the file when it leaves (no ``.lock`` stays beside the output), so
        a waiter may wake holding a file no longer at the path: it then locks the path's
        new file instead.
        """
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self._lock_path)):
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _release(self) -> None:
        if self._lock is None:
            return
        # Unlinked while still held: a waiter that opened it sees it gone and retries.
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        os.close(self._lock)
        self._lock = None

    def write(self, files: dict[str, str | bytes]) -> None:
        """Write ``files`` (relative name -> content) into the staging directory."""
        write_directory_atomic(self._require(), files)

    def commit(self) -> Path:
        """Mark the staged output as a run's, give it the umask's modes, swap it in whole."""
        staging = self._require()
        marker = {"command": self.command, "written": datetime.now(UTC).isoformat()}
        write_directory_atomic(staging, {MARKER: json.dumps(marker) + "\n"})
        mask = _umask()
        for base, dirs, files in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(base, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(base, name), 0o666 & ~mask)
        os.chmod(staging, 0o777 & ~mask)
        parent = self.target.parent
        if self.target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=parent))
            os.rename(self.target, aside / self.target.name)
            try:
                os.rename(staging, self.target)
            except BaseException:
                os.rename(aside / self.target.name, self.target)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(staging, self.target)
        with contextlib.suppress(OSError):
            fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._committed = True
        self.staging = None
        return self.target

    def _require(self) -> Path:
        if self.staging is None:
            raise RuntimeError("enter the RunDirectory first (and not after commit)")
        return self.staging

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        self._release()
