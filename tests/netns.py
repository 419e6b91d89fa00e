"""Emulated hosts for multi-host tests: Linux network namespaces on a private bridge.

Each :class:`Host` is a network namespace with one veth interface ``eth0`` plugged into a
bridge that lives in a namespace of its own (the "switch"), so nothing is added to the
root namespace's network and no packet can leave the emulated network: every address
used is inside namespaces this module created. A host also gets its own *filesystem
view*: every command run on it starts in a private mount namespace where the directories
it must not see are covered by an empty tmpfs and the directories it owns are
bind-mounted at the paths a real VM would have them. The view is rebuilt identically for
each command, so all processes of a host (``ray start``'s daemons and their workers
included) see the same files.

In WAN mode (``VirtualNetwork(wan=True)``) there is no bridge: each host is placed in a city
and its ``eth0`` is a TUN device of the user-space WAN switch of :mod:`tests.wan`, which
delays every packet by half the round-trip time between the two hosts' cities.

Cleanup is strictly by process id and namespace: :meth:`VirtualNetwork.close` lists the
processes of each namespace (``ip netns pids``), sends them SIGTERM, then SIGKILL after a
deadline, and deletes the namespaces (which deletes their veth pairs and bridge). It never
runs ``ray stop``, which would kill every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wan import WanSwitch

__all__ = ["Host", "NetnsUnavailable", "VirtualNetwork", "netns_unavailable_reason"]

# Namespace names: "<prefix><creator pid>-<host>"; the pid lets a later run remove what a
# crashed run left behind without touching anyone else's namespaces.
PREFIX = "trmh"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[a-z0-9]+$")


class NetnsUnavailable(RuntimeError):
    """This machine cannot create network namespaces (not root, no iproute2, no privilege)."""


def _ip(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], check=check, capture_output=True, text=True, timeout=timeout
    )


def netns_unavailable_reason() -> str | None:
    """Why network-namespace tests cannot run here, or ``None`` when they can.

    Checks root, ``ip`` and ``unshare`` on PATH, and that a namespace can really be
    created and removed (a container may lack CAP_SYS_ADMIN).
    """
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install iproute2 / util-linux)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_pids(name: str) -> list[int]:
    """Process ids running in namespace ``name`` (empty if it does not exist)."""
    out = _ip("netns", "pids", name, check=False)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def kill_netns_processes(*names: str, grace_s: float = 10.0) -> None:
    """SIGTERM every process of the namespaces ``names``, then SIGKILL what is left after
    ``grace_s``. Several namespaces are stopped together (as every VM of a fleet would be at
    once): each Ray node takes a second or two to exit, which one after the other added up."""
    deadline = time.monotonic() + grace_s
    sent: set[int] = set()
    while True:
        pids = [pid for name in names for pid in netns_pids(name)]
        if not pids:
            return
        late = time.monotonic() > deadline
        for pid in pids:
            if late or pid not in sent:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
                sent.add(pid)
        if late and time.monotonic() > deadline + 10.0:
            return  # unkillable (uninterruptible sleep): give up rather than hang the suite
        time.sleep(0.2)


def remove_stale_namespaces() -> list[str]:
    """Delete this module's namespaces whose creating process is gone (a crashed run)."""
    listing = _ip("netns", "list", check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            kill_netns_processes(name, grace_s=2.0)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Host:
    """One emulated VM.

    Attributes
    ----------
    name : str
        Short logical name (``head``, a site id, …).
    netns : str
        Its network namespace.
    ip : str
        Its address on the emulated network.
    city : str or None
        Where it is on the emulated WAN (a city of :data:`tests.wan.CITIES`); ``None`` on
        the bridge.
    fresh : list of Path
        Directories replaced by an empty tmpfs first (roots of the host's own layout).
    dirs : list of Path
        Empty directories made next (inside ``fresh`` roots, so only this host has them).
    binds : dict
        ``{path on the host: real directory}``, mounted next (targets may lie in ``fresh``).
    hidden : list of Path
        Directories covered by an empty tmpfs last (e.g. where every site's data really is).
    """

    name: str
    netns: str
    ip: str
    city: str | None = None
    fresh: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    binds: dict[Path, Path] = field(default_factory=dict)
    hidden: list[Path] = field(default_factory=list)

    def view_script(self) -> str:
        """Shell commands that build this host's filesystem view in a fresh mount namespace."""

        def tmpfs(path: Path) -> str:
            return f"mount -t tmpfs -o size=16m,mode=0755 tmpfs {shlex.quote(str(path))}"

        steps = [tmpfs(path) for path in self.fresh]
        steps += [f"mkdir -p {shlex.quote(str(path))}" for path in self.dirs]
        for target, source in self.binds.items():
            steps.append(f"mkdir -p {shlex.quote(str(target))}")
            steps.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
        steps += [tmpfs(path) for path in self.hidden]
        return " && ".join(steps) if steps else "true"


class VirtualNetwork:
    """Hosts on one emulated layer-2 network (see the module docstring).

    Parameters
    ----------
    subnet : str
        The first three octets of the /24 used inside the namespaces.
    tag : str, optional
        Distinguishes namespaces of concurrent runs; default the current pid.
    wan : bool
        Hosts in cities on the emulated WAN (:mod:`tests.wan`) instead of one bridge.
    control_dir : Path, optional
        A private directory for the WAN switch's control socket (WAN mode only; default a
        directory under /tmp named after the tag, removed by :meth:`close`).
    """

    def __init__(
        self,
        subnet: str = "10.200.0",
        tag: str | None = None,
        *,
        wan: bool = False,
        control_dir: Path | None = None,
    ) -> None:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        remove_stale_namespaces()
        self.subnet = subnet
        self.tag = tag or str(os.getpid())
        self.switch = f"{PREFIX}{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._add_netns(self.switch)
        self.wan: WanSwitch | None = None
        self._control_dir: Path | None = None
        if wan:
            if control_dir is None:
                control_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.tag}-wan", dir="/tmp"))
                self._control_dir = control_dir
            try:
                self.wan = WanSwitch(self.switch, control_dir)
            except BaseException:
                self.close()
                raise
        else:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, city: str | None = None) -> Host:
        """Create a host ``name`` with the next address of the subnet (``.1``, ``.2``, …),
        in ``city`` on the WAN (required in WAN mode, refused on the bridge)."""
        if (city is None) != (self.wan is None):
            raise ValueError("a host has a city exactly when the network is a WAN")
        if not re.fullmatch(r"[a-z0-9]{1,8}", name):
            raise ValueError(f"host name must be 1-8 lowercase letters/digits: {name!r}")
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        index = len(self.hosts) + 1
        netns = f"{PREFIX}{self.tag}-{name}"
        self._add_netns(netns)
        ip = f"{self.subnet}.{index}"
        if self.wan is not None and city is not None:
            self.wan.attach(netns, ip, city)
        else:
            port = f"p{index}"  # the switch-side end, named inside the switch namespace
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", netns)  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name=name, netns=netns, ip=ip, city=city)
        self.hosts[name] = host
        return host

    def argv(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run in ``host``'s network namespace and filesystem view."""
        script = f'{host.view_script()} && exec "$@"'
        return ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation",
                "private", "sh", "-c", script, "sh", *argv]  # fmt: skip

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        cwd: str | os.PathLike[str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` and wait (bounded by ``timeout`` seconds)."""
        proc = subprocess.run(
            self.argv(host, argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    def pids(self, host: Host) -> list[int]:
        """Processes running on ``host``."""
        return netns_pids(host.netns)

    def close(self) -> None:
        """Kill every process of every namespace by pid (the WAN switch's forwarder runs in
        the switch namespace), then delete the namespaces."""
        if self.wan is not None:
            self.wan.close()
            self.wan = None
        # Ray's runtime-env agents, its GCS and its monitor outlive a SIGTERM: a test's hosts
        # need no graceful exit, so they get two seconds, not ten.
        kill_netns_processes(*reversed(self._namespaces), grace_s=2.0)
        for name in reversed(self._namespaces):
            _ip("netns", "del", name, check=False)
        self._namespaces.clear()
        if self._control_dir is not None:
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None

    def __enter__(self) -> VirtualNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
