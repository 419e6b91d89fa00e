"""A local run's private network: Ray and every listener of the run reachable on loopback only.

Ray binds its gRPC servers (GCS, raylet, object manager, workers) and its agents to all
interfaces whatever node address it is given (Ray 2.60; binding them to the node address is
ray-project/ray#59852), so a local run cannot ask Ray for loopback alone. The command line
therefore re-executes a local run in a new network namespace whose only interface is its own
loopback (``unshare --net``; with a user namespace when not root, as unprivileged users may):
every socket that Ray and the run open there is unreachable from other hosts and from the
host's own network. The one endpoint that must be reachable from the host — the
coordinator's ``/metrics``, for a local Prometheus — is forwarded: the outer process listens
on the requested host address and relays each connection through a Unix socket (a file, so
shared by both namespaces) to the same port on the namespace's loopback.

Killing the outer process, even with SIGKILL, kills the namespace's processes with it (the
parent-death signal, then ``--kill-child``), so a killed run leaves no Ray process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from thermoroute import signals

#: Set in the namespace's environment: the directory of the relay's Unix socket.
PRIVATE_NETWORK_ENV = "THERMOROUTE_PRIVATE_NETWORK"
_RELAY_SOCKET = "metrics.sock"

# ioctl numbers of <linux/sockios.h> and the interface flag of <net/if.h>.
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


def in_private_network() -> bool:
    """Whether this process already runs in a run's private network namespace."""
    return bool(os.environ.get(PRIVATE_NETWORK_ENV))


def _unshare_command() -> list[str] | None:
    """The ``unshare`` invocation that works here, or None (no util-linux, or namespaces
    refused: a container without the privilege, user namespaces disabled)."""
    binary = shutil.which("unshare")
    if binary is None:
        return None
    # A process namespace too: when its first process dies the kernel kills every other
    # one in it, so none of Ray's agents outlives a killed run.
    own = ["--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    candidates = [[binary, *own]] if os.geteuid() == 0 else []
    candidates.append([binary, "--user", "--map-root-user", *own])
    for command in candidates:
        probe = subprocess.run([*command, "true"], capture_output=True, timeout=10)
        if probe.returncode == 0:
            return command
    return None


def isolation_available() -> bool:
    """Whether a local run can have a private network here."""
    return _unshare_command() is not None


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _relay(accepted: socket.socket, connect: socket.socket, target: str | tuple[str, int]) -> None:
    """Join one accepted connection to a new one to ``target``, both ways."""
    try:
        connect.connect(target)
    except OSError:
        accepted.close()
        connect.close()
        return
    back = threading.Thread(target=_pipe, args=(connect, accepted), daemon=True)
    back.start()
    _pipe(accepted, connect)
    back.join()
    accepted.close()
    connect.close()


def _serve(listener: socket.socket, family: int, target: str | tuple[str, int]) -> None:
    while True:
        try:
            accepted, _ = listener.accept()
        except OSError:
            return
        threading.Thread(
            target=_relay,
            args=(accepted, socket.socket(family, socket.SOCK_STREAM), target),
            daemon=True,
        ).start()


def bring_loopback_up() -> None:
    """Set ``lo`` up (a new network namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


def start_inner_relay(port: int) -> None:
    """In the namespace: relay the Unix socket to ``127.0.0.1:port`` (the metrics server)."""
    path = Path(os.environ[PRIVATE_NETWORK_ENV]) / _RELAY_SOCKET
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    threading.Thread(
        target=_serve, args=(listener, socket.AF_INET, ("127.0.0.1", port)), daemon=True
    ).start()


class Interrupted(KeyboardInterrupt):
    """The run in the private network was interrupted and ended without saying so."""


class Unisolated(RuntimeError):
    """No private network can be made here (see :func:`isolation_available`)."""


def _die_with_parent() -> None:
    """In the forked child: be killed when this (outer) process dies, even by SIGKILL.

    ``unshare --kill-child`` passes the same to the run inside, and Ray's processes share
    the fate of the driver that started them: killing the command kills the whole run.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _first_child(pid: int) -> int | None:
    """The process ``unshare`` started (the run's driver), from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                return int(entry.name)
    return None


def run_isolated(argv: Sequence[str], forward: tuple[str, int] | None = None) -> int:
    """Run ``thermoroute *argv`` in a private network namespace; its exit status.

    Parameters
    ----------
    argv : sequence of str
        The command line, without the program name.
    forward : (host, port), optional
        Listen there on the host and relay to the same port on the namespace's loopback.

    Raises
    ------
    Unisolated
        No network namespace can be made here.
    OSError
        ``forward``'s address cannot be bound (in use, not an address of this host).
    """
    command = _unshare_command()
    if command is None:
        raise Unisolated("no network namespace can be made here (unshare --net failed)")
    directory = Path(tempfile.mkdtemp(prefix="thermoroute-net-"))
    listener = None
    try:
        if forward is not None:
            listener = socket.create_server(forward, reuse_port=False)
            threading.Thread(
                target=_serve,
                args=(listener, socket.AF_UNIX, str(directory / _RELAY_SOCKET)),
                daemon=True,
            ).start()
        env = {**os.environ, PRIVATE_NETWORK_ENV: str(directory)}
        # Its own process group: a Ctrl-C at the terminal reaches only this process, which
        # hands it to the run's driver alone (unshare forwards no signal, and Ray's daemons
        # must not die before the driver has shut them down).
        # -P: the working directory does not go first on the child's path, so a folder
        # holding packages of the same names (common/, coordinator/, thermoroute/) cannot
        # stand in for the installed ones.
        child = subprocess.Popen(
            [*command, sys.executable, "-P", "-m", "thermoroute.isolation", *argv],
            env=env,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )

        interrupted: int | None = None

        def relay(sig: int, _frame: object) -> None:
            nonlocal interrupted
            interrupted = interrupted or sig
            with contextlib.suppress(ProcessLookupError):
                os.kill(_first_child(child.pid) or child.pid, sig)

        previous = {sig: signal.signal(sig, relay) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # The outer process speaks for an interrupted run (a driver interrupted while Ray
        # is still starting may even crash under Ray's core worker on its way out).
        if interrupted == signal.SIGTERM:
            signals.record()
            raise signals.Terminated
        if interrupted:
            raise Interrupted
        return status
    finally:
        if listener is not None:
            listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def _main() -> None:
    """Inside the namespace: loopback up, then the command line as usual.

    This process is the namespace's first (PID 1), for which the kernel ignores signals
    without a handler: SIGTERM gets one, so the outer command can stop it. ``unshare``
    starts it with SIGINT ignored, which Python then keeps: Ctrl-C is made to interrupt.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signals.install()
    bring_loopback_up()
    sys.argv = ["thermoroute", *sys.argv[1:]]
    try:
        from thermoroute.cli import main
    except signals.Terminated:
        # Stopped while importing: nothing started; the outer process speaks for the run.
        raise SystemExit(signals.EXIT_TERMINATED) from None
    main()


if __name__ == "__main__":
    _main()
