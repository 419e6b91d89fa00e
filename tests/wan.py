"""An emulated Australian WAN for the network-namespace hosts of :mod:`tests.netns`.

The round-trip table
--------------------
:data:`RTT_MS` holds one round-trip time per pair of the eight capitals, the one table the
WAN test (tests/test_multihost.py, tests/test_wan.py) and the bench (bench/wan_bench.py) use.

Source and date. No public table measured between all eight capitals was found (searched
2026-12-07). The published figures found are: WonderProxy's city-pair pings of
9 February 2011 (https://wonderproxy.com/blog/miles-per-milisecond/: Sydney–Brisbane
33.5 / 43.0 ms over the 2011 public internet, i.e. with access networks and detours), and
the method of "Latency can cause havoc for remote customers" (itfault.com.au, 4 September
2017: RTT = 2 × route length / 200,000 km/s). Every value below is therefore **derived**,
not measured: ``2 × 1.5 × great-circle km / 200,000 km/s + 2 ms`` — the product's own path
model (:func:`thermoroute.common.physics.latency.modelled_rtt_ms` with the capitals'
coordinates of ``common/scenarios/australia/sites.csv``; route factor 1.5 for fibre
following roads and rail, 2 ms of switching), which gives the usual backbone figures
(Sydney–Melbourne 12.7 ms, Sydney–Perth 51.4 ms) and is what the ``australia`` scenario's
``network.csv`` already assumes between sites and regions. Darwin's fibre runs through
Adelaide, so its real round trips are likely a few ms longer than derived here. Two hosts in
the same city are :data:`SAME_CITY_RTT_MS` apart (metro fibre; derived too).

The switch
----------
The kernel here has no ``sch_netem``, so delays are added in user space: every emulated
host's ``eth0`` is a TUN device, and one forwarder process (:func:`forward`, run inside the
network's own "switch" namespace, so that :meth:`tests.netns.VirtualNetwork.close` ends it
by namespace) reads each IPv4 packet a host sends, holds it for the one-way delay of its
(source city, destination city) pair — half the pair's RTT — and writes it to the
destination host's TUN device. Kernel TCP, Ray's gRPC and every packet in both directions
see the delay; packets between processes of one host stay on its loopback (no delay), as on
a real VM. The forwarder opens each host's TUN device inside the host's namespace itself
(libc ``setns``; Python 3.11 has no ``os.setns``), on request over a unix socket from
:class:`WanSwitch`, so hosts can be added while the network runs. The switch needs nothing
but ``/dev/net/tun``, so it is the one path everywhere, even on a kernel that has netem: the
delays tested are the delays the bench measures with. It holds ~0.5 ms more than the table
per round trip (measured by tests/test_wan.py) and passes packets at once when its delays
are turned off (:meth:`WanSwitch.set_delays`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CITIES", "RTT_MS", "SAME_CITY_RTT_MS", "WanSwitch", "city_of", "rtt_ms"]

#: The capitals, by the lower-case name the table uses.
CITIES = (
    "sydney", "melbourne", "brisbane", "adelaide", "perth", "hobart", "darwin", "canberra",
)  # fmt: skip

_PAIRS: list[tuple[str, str, float]] = [
    ("sydney", "melbourne", 12.7), ("sydney", "brisbane", 13.0),
    ("sydney", "adelaide", 19.4), ("sydney", "perth", 51.4),
    ("sydney", "hobart", 17.9), ("sydney", "darwin", 49.2),
    ("sydney", "canberra", 5.7), ("melbourne", "brisbane", 22.6),
    ("melbourne", "adelaide", 11.8), ("melbourne", "perth", 42.8),
    ("melbourne", "hobart", 11.0), ("melbourne", "darwin", 49.2),
    ("melbourne", "canberra", 9.0), ("brisbane", "adelaide", 26.0),
    ("brisbane", "perth", 56.1), ("brisbane", "hobart", 28.8),
    ("brisbane", "darwin", 44.7), ("brisbane", "canberra", 16.2),
    ("adelaide", "perth", 34.0), ("adelaide", "hobart", 19.4),
    ("adelaide", "darwin", 41.3), ("adelaide", "canberra", 16.4),
    ("perth", "hobart", 47.2), ("perth", "darwin", 41.8),
    ("perth", "canberra", 48.3), ("hobart", "darwin", 58.0),
    ("hobart", "canberra", 14.9), ("darwin", "canberra", 49.0),
]  # fmt: skip
#: Round-trip time between two capitals [ms]; derived, see the module docstring.
RTT_MS: dict[frozenset[str], float] = {frozenset((a, b)): rtt for a, b, rtt in _PAIRS}

#: Round-trip time between two hosts in one city [ms] (derived: metro fibre and switching).
SAME_CITY_RTT_MS = 1.0


def rtt_ms(a: str, b: str) -> float:
    """Round-trip time [ms] between cities ``a`` and ``b`` (names of :data:`CITIES`)."""
    for city in (a, b):
        if city not in CITIES:
            raise ValueError(f"unknown city {city!r}; known: {', '.join(CITIES)}")
    return SAME_CITY_RTT_MS if a == b else RTT_MS[frozenset((a, b))]


def city_of(site_name: str) -> str:
    """The table's city for a site whose ``sites.csv`` name is a capital (``Perth``, …)."""
    city = site_name.strip().lower()
    if city not in CITIES:
        raise ValueError(f"site {site_name!r} is not at a capital of the RTT table")
    return city


# Linux ABI constants (<linux/if_tun.h>, <sched.h>).
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000
_MAX_PACKET = 65_536
#: Below this wait [s] the forwarder sleeps with the fine timer instead of epoll's.
_FINE_SLEEP_S = 0.0012


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _open_tun_in(netns: str, home: int, ifname: str = "eth0") -> int:
    """A TUN device ``ifname`` created in namespace ``netns``; this thread returns to ``home``."""
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            request = struct.pack("16sH22x", ifname.encode(), _IFF_TUN | _IFF_NO_PI)
            fcntl.ioctl(tun, _TUNSETIFF, request)
        finally:
            _setns(home)
    finally:
        os.close(target)
    return tun


@dataclass(frozen=True)
class _Port:
    fd: int
    city: str


def forward(control_path: str) -> None:
    """The forwarder's loop (runs until killed): attach hosts asked for on ``control_path``,
    deliver each IPv4 packet to its destination host after the pair's one-way delay.

    A control request is one JSON line: ``{"netns", "ip", "city"}`` attaches a host,
    ``{"delays": bool}`` turns the cities' delays on or off (off: packets pass at once);
    the answer ``ok`` (or ``error: …``) follows once done. Packets that are not IPv4 or are
    addressed to no attached host are dropped, as a switch without a route would.
    """
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(control_path)
    server.listen()
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, "accept")
    by_address: dict[bytes, _Port] = {}
    # (due time [s, monotonic], arrival sequence, destination fd, packet): a constant delay
    # per pair keeps each pair's packets in order.
    pending: list[tuple[float, int, int, bytes]] = []
    sequence = 0
    delays = True
    while True:
        timeout = None
        if pending:
            # epoll sleeps whole milliseconds, rounded up: wake a millisecond early and
            # sleep the rest with the nanosecond timer, so a packet is held no longer than due.
            remaining = pending[0][0] - time.monotonic()
            if remaining < _FINE_SLEEP_S:
                time.sleep(max(0.0, remaining))
                timeout = 0.0
            else:
                timeout = remaining - _FINE_SLEEP_S
        for key, _ in selector.select(timeout):
            if key.data == "accept":
                connection, _ = server.accept()
                selector.register(connection, selectors.EVENT_READ, "control")
            elif key.data == "control":
                connection = key.fileobj  # type: ignore[assignment]
                line = connection.recv(4096)
                if not line:
                    selector.unregister(connection)
                    connection.close()
                    continue
                try:
                    request = json.loads(line)
                    if "delays" in request:
                        delays = bool(request["delays"])
                        connection.sendall(b"ok\n")
                        continue
                    port = _Port(_open_tun_in(request["netns"], home), request["city"])
                    by_address[socket.inet_aton(request["ip"])] = port
                    selector.register(port.fd, selectors.EVENT_READ, port)
                    connection.sendall(b"ok\n")
                except (OSError, ValueError, KeyError) as error:
                    connection.sendall(f"error: {error}\n".encode())
            else:
                source: _Port = key.data
                while True:
                    try:
                        packet = os.read(source.fd, _MAX_PACKET)
                    except BlockingIOError:
                        break
                    if len(packet) < 20 or packet[0] >> 4 != 4:
                        continue
                    destination = by_address.get(packet[16:20])
                    if destination is None:
                        continue
                    delay_s = rtt_ms(source.city, destination.city) / 2000.0 if delays else 0.0
                    sequence += 1
                    heapq.heappush(
                        pending, (time.monotonic() + delay_s, sequence, destination.fd, packet)
                    )
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, fd, packet = heapq.heappop(pending)
            # A full queue on the host, or its device going away: a lost packet.
            with contextlib.suppress(OSError):
                os.write(fd, packet)


class WanSwitch:
    """The forwarder process, started in namespace ``switch_netns``, and its control channel.

    Parameters
    ----------
    switch_netns : str
        The namespace the forwarder runs in (the network's own; killed with it).
    control_dir : Path
        A private directory for the control socket.
    """

    def __init__(self, switch_netns: str, control_dir: Path) -> None:
        path = control_dir / "wan.sock"
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", switch_netns, sys.executable, __file__, str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30.0
        self._control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self._control.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"the WAN forwarder did not start: {stderr}") from None
                time.sleep(0.05)
        self._answers = self._control.makefile("r")

    def _ask(self, request: dict[str, object]) -> None:
        self._control.sendall(json.dumps(request).encode() + b"\n")
        answer = self._answers.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"the WAN forwarder refused {request}: {answer!r}")

    def attach(self, netns: str, ip: str, city: str) -> None:
        """Create ``eth0`` (a TUN device) in ``netns`` for the host at ``ip`` in ``city``;
        the caller gives it its address and brings it up."""
        rtt_ms(city, city)  # an unknown city fails here, not in the forwarder
        self._ask({"netns": netns, "ip": ip, "city": city})

    def set_delays(self, on: bool) -> None:
        """Delay packets by their cities' round trips (``True``, the start) or not at all:
        a cluster can start and run its other checks at LAN speed and pay the WAN's
        latency where it is measured."""
        self._ask({"delays": on})

    def close(self) -> None:
        """Close the control channel (the forwarder itself ends with its namespace)."""
        self._answers.close()
        self._control.close()


if __name__ == "__main__":
    forward(sys.argv[1])
