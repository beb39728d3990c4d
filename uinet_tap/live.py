"""Live capture from an interface through pcapy-ng (libpcap), in batches, never blocking the
caller for longer than it asks. Capture only: nothing here can send a frame."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import time
from array import array

import pcapy

from .pcapfile import Batch, CaptureError, meta_times
from .stack.decode import SUPPORTED_LINKTYPES

BATCH = 4096
# The kernel's capture ring (TPACKET_V3 through libpcap), per handle: Zeek's AF_Packet default.
# It is what absorbs a burst faster than the engine: at 32 MiB, a capture of 1,000,000 frames
# sent at tcpreplay's top speed lost a third of them here; at 128 MiB none (README).
CAPTURE_BUFFER = 128 << 20
# Never "setcap the interpreter": capabilities on a shared python are every Python program's
# (a virtualenv's bin/python is a link to one; a pyenv shim is a script, where they do
# nothing). The README's "Privileges" gives the commands.
CAPABILITY_ADVICE = (
    "run it as root with --user NAME (it drops to NAME for good once its interfaces and "
    "outputs are open), or give the capabilities to a dedicated copy of the interpreter "
    '(cp "$(readlink -f .venv/bin/python)" .venv/bin/python-caps, then setcap on that copy, '
    "executable only by the tool's user) or to a systemd unit (AmbientCapabilities= with a "
    "dedicated User=); never to /usr/bin/python3 or what .venv/bin/python links to, where "
    'every Python program would get them (README, "Privileges")'
)


def interfaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/sys/class/net"))
    except OSError:
        return sorted(pcapy.findalldevs())


def _has_net_raw() -> bool:
    """CAP_NET_RAW (bit 13) in this process's effective capabilities."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 13))
    except (OSError, ValueError):
        pass
    return False


def _is_up(iface: str) -> bool | None:
    try:
        with open(f"/sys/class/net/{iface}/flags") as f:
            return bool(int(f.read(), 16) & 0x1)  # IFF_UP
    except (OSError, ValueError):
        return None


class StdinCapture:
    """``watch -``: a live pcap stream on stdin (``tcpdump -U -w - | uinet-tap watch -``, or
    any program writing pcap or pcapng, compressed or not), read as it arrives. Its BPF filter
    is applied here, as libpcap would apply it to an interface."""

    iface = "stdin"

    def __init__(self, bpf: str | None = None) -> None:
        from .inputs import StreamCapture, _Filter  # only for a stream: keep watch's import small

        if sys.stdin.isatty():
            raise CaptureError("-: stdin is a terminal, not a capture (pipe one in)")
        self._stream = StreamCapture(sys.stdin.buffer, "stdin", prefetch=False)
        self.linktype = self._stream.linktype
        self._batches = self._stream.batches()
        self._filter = _Filter(bpf) if bpf else None
        if self._filter is not None:
            self._filter.program(self.linktype)  # a bad expression is an error now
        self._fd = sys.stdin.fileno()
        self.packets = 0
        self.ended = False  # the writer closed the stream: the run ends
        self._last_ts: float | None = None  # the latest capture time read, and when
        self._arrived = 0.0

    def poll(self, timeout: float) -> Batch | None:
        """The next batch once stdin is readable (waiting at most ``timeout`` for that)."""
        if self.ended:
            time.sleep(timeout)
            return None
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
        except (InterruptedError, OSError):
            return None
        if not ready:
            return None
        batch = next(self._batches, None)
        if batch is None:
            self.ended = True
            if self._stream.truncated is not None:
                raise CaptureError(f"stdin: the stream broke off ({self._stream.truncated})")
            return None
        self.packets += len(batch.lengths)
        if len(batch.times):
            self._last_ts = max(batch.times[-1], self._last_ts or batch.times[-1])
            self._arrived = time.monotonic()
        if self._filter is not None:
            batch = self._filter.apply(batch)
        return batch

    def clock(self) -> float:
        """Now, for timeouts: the stream's capture time, running on with the wall clock while
        nothing comes. A stream is not always live (a file piped in, a remote tcpdump's
        clock): its own times say how long a connection was idle."""
        if self._last_ts is None:
            return time.time()
        return self._last_ts + (time.monotonic() - self._arrived)

    def stats(self) -> tuple[int, int, int]:
        return self.packets, 0, 0  # nothing is dropped: the writer waits for the pipe

    def close(self) -> None:
        pass


VXLAN_PORT = 4789  # RFC 7348 (what cloud traffic mirroring sends)
TZSP_PORT = 37008
_TZSP_ETHERNET = 1
_TZSP_TAGS = 64  # tagged fields read before the frame: a datagram cannot make it loop


def decapsulate(datagram: bytes, sender: int) -> tuple[bytes, int] | str:
    """(inner Ethernet frame, mirror session) of a mirrored copy, or why not (a reason to
    count): VXLAN (RFC 7348: the I flag, the VNI as the session) or TZSP (version 1,
    Ethernet; the session is ``sender``, the index of the address it came from)."""
    if len(datagram) < 8 + 14:
        return "short"
    first = datagram[0]
    if first & 0x08 and not first & 0xF7 and datagram[1:4] == b"\0\0\0":
        return datagram[8:], int.from_bytes(datagram[4:7], "big") or (1 << 24)
    if first == 1 and datagram[2:4] == _TZSP_ETHERNET.to_bytes(2, "big"):
        pos = 4
        for _ in range(_TZSP_TAGS):
            if pos >= len(datagram):
                return "tzsp_truncated"
            tag = datagram[pos]
            if tag == 1:  # END
                return datagram[pos + 1 :], (1 << 25) + sender
            if tag == 0:  # PADDING
                pos += 1
                continue
            if pos + 1 >= len(datagram):
                return "tzsp_truncated"
            pos += 2 + datagram[pos + 1]
        return "tzsp_too_many_tags"
    return "unknown_encapsulation"


class _MirrorSocket:
    """A socket that receives mirrored copies (watch udp:, watch gre:): bound, given its
    receive buffer, read without blocking in batches; ``_frame`` says what each datagram
    carries (the frame to track and its mirror session) or why it carries nothing. Frames are
    timed as they arrive: the encapsulations carry no capture time. Nothing is ever sent."""

    linktype = 1
    # /proc/net files whose last column is this socket's drop count (none: not reported)
    DROP_FILES: tuple[str, ...] = ()

    def __init__(
        self, spec: str, sock: socket.socket, address: tuple[str, int], bpf: str | None,
        buffer_size: int,
    ) -> None:  # fmt: skip
        from .inputs import _Filter

        self.iface = spec
        self._sock = sock
        try:
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
                    break
                except OSError:
                    continue  # SO_RCVBUFFORCE needs CAP_NET_ADMIN: the capped size then
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise CaptureError(f"cannot receive on {spec}: {exc.strerror}") from exc
        sock.setblocking(False)
        self._filter = _Filter(bpf) if bpf else None
        if self._filter is not None:
            self._filter.program(self.linktype)
        self.packets = 0
        self.datagrams = 0
        self._senders: dict[str, int] = {}
        self._unusable: dict[str, int] = {}  # datagrams that carried no frame, by reason

    def _frame(self, datagram: bytes, sender: int) -> tuple[bytes, int] | str:
        raise NotImplementedError

    def poll(self, timeout: float) -> Batch | None:
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
        except (InterruptedError, OSError):
            return None
        if not ready:
            return None
        frames: list[bytes] = []
        tunnels: list[int] = []
        now = time.time()
        while len(frames) < BATCH:
            try:
                datagram, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            self.datagrams += 1
            sender = self._senders.setdefault(addr[0], len(self._senders))
            found = self._frame(datagram, sender)
            if isinstance(found, str):
                self._unusable[found] = self._unusable.get(found, 0) + 1
                continue
            frames.append(found[0])
            tunnels.append(found[1])
        if not frames:
            return None
        offsets, pos = [], 0
        for f in frames:
            offsets.append(pos)
            pos += len(f)
        self.packets += len(frames)
        batch = Batch(
            b"".join(frames), array("d", [now] * len(frames)), array("I", offsets),
            array("I", [len(f) for f in frames]), self.linktype, None, tunnels,
        )  # fmt: skip
        return self._filter.apply(batch) if self._filter is not None else batch

    def stats(self) -> tuple[int, int, int]:
        """(frames received, datagrams the socket dropped (its queue full), 0)."""
        return self.packets, self._socket_drops(), 0

    def _socket_drops(self) -> int:
        """The kernel's drop count of this socket (the last column of its /proc/net line)."""
        inode = str(os.fstat(self._sock.fileno()).st_ino)
        for name in self.DROP_FILES:
            try:
                with open(name) as f:
                    for line in f:
                        fields = line.split()
                        if len(fields) > 12 and fields[9] == inode:
                            return int(fields[-1])
            except OSError:
                continue
        return 0

    def close(self) -> None:
        self._sock.close()


class UdpCapture(_MirrorSocket):
    """``watch udp:ADDR:PORT``: mirrored traffic that arrives encapsulated over UDP (VXLAN from
    cloud traffic mirroring or a switch, TZSP from a router), decapsulated here; each mirror
    session (VNI, TZSP sender) keys its flows apart."""

    linktype = 1  # the inner frames are Ethernet
    DROP_FILES = ("/proc/net/udp", "/proc/net/udp6")

    def __init__(self, spec: str, bpf: str | None = None, buffer_size: int = CAPTURE_BUFFER):
        host, sep, port_text = spec.removeprefix("udp:").rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise CaptureError(f"{spec}: expected udp:ADDR:PORT (VXLAN is on {VXLAN_PORT})")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        super().__init__(spec, sock, (host, int(port_text)), bpf, buffer_size)

    @property
    def undecapsulated(self) -> dict[str, int]:
        """Datagrams that were no mirrored frame, by reason."""
        return self._unusable

    def _frame(self, datagram: bytes, sender: int) -> tuple[bytes, int] | str:
        return decapsulate(datagram, sender)


_GRE_ERSPAN_1_2 = 0x88BE
_GRE_ERSPAN_3 = 0x22EB
_GRE_TEB = 0x6558  # transparent Ethernet bridging (gretap)


def gre_session(packet: bytes, sender: int) -> int:
    """The mirror session of an IPv4 packet carrying GRE: the ERSPAN session ID (types II and
    III), else the GRE key, else ``sender`` (the index of the address it came from); each in
    a range of its own, so they never meet."""
    ihl = (packet[0] & 0x0F) * 4 if packet else 0
    gre = packet[ihl:]
    if len(gre) < 4:
        return (1 << 28) + sender
    flags, proto = gre[0], int.from_bytes(gre[2:4], "big")
    pos = 4 + (4 if flags & 0x80 else 0)  # the checksum and reserved word
    key = None
    if flags & 0x20:
        if len(gre) >= pos + 4:
            key = int.from_bytes(gre[pos : pos + 4], "big")
        pos += 4
    pos += 4 if flags & 0x10 else 0  # the sequence number
    has_header = proto == _GRE_ERSPAN_3 or (proto == _GRE_ERSPAN_1_2 and flags & 0x10)
    if has_header and len(gre) >= pos + 4:  # ERSPAN II/III: session in the second half-word
        return (1 << 26) + (int.from_bytes(gre[pos + 2 : pos + 4], "big") & 0x3FF)
    if key is not None:
        return (1 << 27) + key
    return (1 << 28) + sender


class GreCapture(_MirrorSocket):
    """``watch gre:ADDR``: mirrored traffic arriving as GRE over IPv4 to ADDR (ERSPAN I, II,
    III from a switch, or Ethernet over GRE), received on a raw socket (root) and handed on as
    raw IP: the decoder takes the GRE and ERSPAN headers off as it does in a capture. The
    mirror session (ERSPAN session ID, else GRE key, else sender) keys the flows. It only
    receives: a raw GRE socket that is never written to."""

    linktype = 101  # raw IP: the outer IPv4 header, then GRE

    def __init__(self, spec: str, bpf: str | None = None, buffer_size: int = CAPTURE_BUFFER):
        host = spec.removeprefix("gre:")
        try:
            socket.inet_aton(host)
        except OSError:
            raise CaptureError(f"{spec}: expected gre:IPv4-ADDRESS") from None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
        except PermissionError:
            raise CaptureError(f"receiving GRE on {host} needs root or CAP_NET_RAW") from None
        super().__init__(spec, sock, (host, 0), bpf, buffer_size)

    def _frame(self, datagram: bytes, sender: int) -> tuple[bytes, int]:
        return datagram, gre_session(datagram, sender)


def interface_problem(iface: str) -> str | None:
    """Why ``iface`` cannot be opened, where that shows before trying: absent, or down."""
    if iface not in interfaces() and iface != "any":
        return f"no such interface: {iface} (interfaces here: {', '.join(interfaces())})"
    if _is_up(iface) is False:
        return f"interface {iface} is down (bring it up: ip link set {iface} up)"
    return None


def explain_capture_error(iface: str, message: str) -> str:
    """One line for a capture on ``iface`` that could not start (libpcap's or the kernel's
    ``message``)."""
    low = message.lower()
    denied = "permission" in low or "not permitted" in low or "eperm" in low
    if denied or (os.geteuid() != 0 and not _has_net_raw()):
        return (
            f"capturing on {iface} needs root or the CAP_NET_RAW and CAP_NET_ADMIN "
            f"capabilities: {CAPABILITY_ADVICE}"
        )
    if "no such device" in low:
        return f"no such interface: {iface} (interfaces here: {', '.join(interfaces())})"
    if "down" in low:
        return f"interface {iface} is down (bring it up: ip link set {iface} up)"
    return f"cannot capture on {iface}: {message}"


class LiveCapture:
    def __init__(
        self,
        iface: str,
        bpf: str | None = None,
        snaplen: int = 262144,
        buffer_size: int = CAPTURE_BUFFER,
        promisc: bool = True,
        fanout_group: int | None = None,
    ) -> None:
        self.iface = iface
        problem = interface_problem(iface)
        if problem is not None:
            raise CaptureError(problem)
        try:
            r = pcapy.create(iface)
            r.set_snaplen(snaplen)
            r.set_promisc(1 if promisc else 0)
            r.set_timeout(100)
            r.set_buffer_size(buffer_size)
            r.activate()
            # A refused activation does not always raise: the first call on the handle does.
            r.setnonblock(1)
            self._fd = r.getfd()
        except pcapy.PcapError as exc:
            raise CaptureError(explain_capture_error(iface, str(exc))) from exc
        if bpf:
            try:
                r.setfilter(bpf)
            except pcapy.PcapError as exc:
                raise CaptureError(f"bad BPF filter {bpf!r}: {exc}") from exc
        if fanout_group is not None:
            try:
                r.set_fanout(fanout_group, pcapy.PACKET_FANOUT_HASH)
            except Exception as exc:
                raise CaptureError(f"cannot join fanout group on {iface}: {exc}") from exc
        self._reader = r
        self.linktype = r.datalink()
        if self.linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(f"{iface}: unsupported link type {self.linktype}")
        self.packets = 0

    def poll(self, timeout: float) -> Batch | None:
        """The frames that arrived, waiting at most ``timeout`` seconds for the first."""
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
        except InterruptedError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return None
            raise
        try:
            data, meta = self._reader.next_batch(BATCH)
        except pcapy.PcapError as exc:
            raise CaptureError(f"capture on {self.iface} failed: {exc}") from exc
        if not meta:
            return None
        m = array("I", meta)
        lengths = m[3::4]
        self.packets += len(lengths)
        return Batch(data, meta_times(m), m[2::4], lengths, self.linktype)

    def stats(self) -> tuple[int, int, int]:
        """(received, dropped by the kernel, dropped by the interface) from libpcap."""
        try:
            recv, drop, ifdrop = self._reader.stats()
        except (pcapy.PcapError, ValueError):  # ValueError: the handle is closed already
            return (self.packets, 0, 0)
        return recv, drop, ifdrop

    def close(self) -> None:
        with contextlib.suppress(pcapy.PcapError):  # closed already: nothing to release
            self._reader.close()
