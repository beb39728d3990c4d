"""watch's live capture on an Ethernet interface: an AF_PACKET socket with a TPACKET_V3 ring
that C reads in place (stack/fastpath.py RxRing), so a frame is never copied in user space
on its way to the engine. libpcap (uinet_tap/live.py LiveCapture) reads the same kind of
ring, but pcapy-ng copies every frame twice, into fresh memory: on the bench burst watch took
a third less CPU through this ring (README, "Live capture"). Capture only: nothing here can
send a frame.

Where this cannot serve, watch captures through libpcap as before: no C data plane, an
interface that is not Ethernet (the any device, tunnels), a --filter (libpcap compiles it
for the kernel with its own handling of the VLAN tags the kernel strips), or
UINET_TAP_RX_RING=off (benchmarks compare the two)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import struct

from .live import BATCH, CAPTURE_BUFFER, LiveCapture, explain_capture_error, interface_problem
from .pcapfile import Batch, CaptureError
from .stack import fastpath

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
SO_ATTACH_FILTER = 26
BPF_RET_K = 0x06  # BPF_RET | BPF_K: "keep this many bytes of the frame"
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772  # interfaces whose frames are Ethernet (DLT_EN10MB)
BLOCK = 1 << 20  # a ring block: it holds the longest frame (a 64 KiB GSO super-frame) whole
MIN_BLOCKS = 4
RETIRE_MS = 100  # a block not full is handed over after this long (libpcap's timeout in watch)


def _link_type(iface: str) -> int | None:
    """The interface's ARPHRD type; None for the any device, or one gone."""
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def ring_serves(iface: str, bpf: str | None) -> bool:
    """Whether watch reads ``iface`` through the ring rather than libpcap."""
    if not fastpath.AVAILABLE or bpf or os.environ.get("UINET_TAP_RX_RING") == "off":
        return False
    return _link_type(iface) in (ARPHRD_ETHER, ARPHRD_LOOPBACK)


def live_capture(
    iface: str,
    bpf: str | None = None,
    snaplen: int = 262144,
    buffer_size: int = CAPTURE_BUFFER,
    fanout_group: int | None = None,
) -> LiveCapture | RingCapture:
    """watch's capture on ``iface``: the ring where it serves, else libpcap."""
    if ring_serves(iface, bpf):
        return RingCapture(iface, snaplen, buffer_size, fanout_group)
    return LiveCapture(iface, bpf, snaplen, buffer_size, fanout_group=fanout_group)


class RingCapture:
    linktype = 1  # DLT_EN10MB

    def __init__(
        self, iface: str, snaplen: int = 262144, buffer_size: int = CAPTURE_BUFFER,
        fanout_group: int | None = None,
    ) -> None:  # fmt: skip
        self.iface = iface
        problem = interface_problem(iface)
        if problem is not None:
            raise CaptureError(problem)
        try:
            # Protocol 0: the socket takes no frame until it is bound below, once its ring,
            # snap length and fanout are set (none lands before, none goes elsewhere).
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise CaptureError(explain_capture_error(iface, exc.strerror or str(exc))) from None
        self._sock = sock
        self._ring: fastpath.RxRing | None = None
        try:
            if snaplen < 262144:
                # libpcap's way on Linux: a filter whose only instruction keeps snaplen bytes
                self._attach_filter([(BPF_RET_K, 0, 0, snaplen)])
            blocks = max(MIN_BLOCKS, buffer_size // BLOCK)
            # On loopback every frame goes out and comes in: libpcap keeps the second only.
            loopback = _link_type(iface) == ARPHRD_LOOPBACK
            self._ring = fastpath.RxRing(
                sock.fileno(), BLOCK, blocks, 1 << 16, RETIRE_MS, BATCH, snaplen, loopback
            )
            sock.bind((iface, ETH_P_ALL))
            index = socket.if_nametoindex(iface)
            mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if fanout_group is not None:
                # After the bind, as the kernel asks: the group's members share the flows by
                # a symmetric hash of their addresses, both directions of one to one member.
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, fanout_group | PACKET_FANOUT_HASH << 16)
        except OSError as exc:
            self.close()
            raise CaptureError(explain_capture_error(iface, exc.strerror or str(exc))) from None
        sock.setblocking(False)
        self.packets = 0
        self._received = self._dropped = 0
        self._if_drops_at_start = self._if_drops()

    def _attach_filter(self, program: list[tuple[int, int, int, int]]) -> None:
        code = b"".join(struct.pack("HBBI", *insn) for insn in program)
        buf = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(program), ctypes.addressof(buf))  # struct sock_fprog
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def poll(self, timeout: float) -> Batch | None:
        """The frames that arrived, waiting at most ``timeout`` seconds for the first."""
        ring = self._ring
        assert ring is not None
        got = ring.rx()
        if got is None:
            try:
                select.select([self._sock], [], [], timeout)
            except (InterruptedError, OSError):
                return None
            got = ring.rx()
            if got is None:
                return None
        offsets, lengths, times = got
        self.packets += len(lengths)
        return Batch(ring.data, times, offsets, lengths, self.linktype)

    def behind(self) -> bool:
        """Whether frames pile up: a whole block waits past the one being read."""
        return self._ring is not None and self._ring.behind()

    def idle(self) -> None:
        """Nothing came, and the engine holds nothing of the batches given out (Engine.
        let_go): their blocks go back to the kernel, so that the next poll sleeps."""
        if self._ring is not None:
            self._ring.release_all()

    def _if_drops(self) -> int:
        """The interface's own receive drops (libpcap's ps_ifdrop counts the same)."""
        total = 0
        for name in ("rx_dropped", "rx_missed_errors"):
            path = f"/sys/class/net/{self.iface}/statistics/{name}"
            with contextlib.suppress(OSError, ValueError), open(path) as f:
                total += int(f.read())
        return total

    def stats(self) -> tuple[int, int, int]:
        """(received, dropped by the kernel, dropped by the interface), as libpcap counts
        them: received includes the frames the full ring dropped."""
        with contextlib.suppress(OSError):
            # struct tpacket_stats_v3; the kernel zeroes it at each read, so it is summed
            packets, drops, _freezes = struct.unpack(
                "III", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            )
            self._received += packets
            self._dropped += drops
        return self._received, self._dropped, self._if_drops() - self._if_drops_at_start

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._sock.close()
