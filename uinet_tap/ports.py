"""The two ports of the inline bump in the wire: AF_PACKET sockets that read every frame on an
interface (with the VLAN tag the kernel stripped put back) and send frames as given."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import subprocess
from typing import Any

from .live import CAPABILITY_ADVICE, interface_problem
from .programs import HELPER_ENV, MissingProgram, system_program
from .stack.fastpath import ffi, lib

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_QDISC_BYPASS = 20
PACKET_OUTGOING = 4
PACKET_STATISTICS = 6
TP_STATUS_CSUMNOTREADY = 1 << 3  # the checksum is partial (the sender offloaded it)
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_AUX_SPACE = socket.CMSG_SPACE(_AUX.size)
RECV_SIZE = 65536 + 512  # a GSO super-frame with its headers
RING_BYTES = 16 << 20  # a receive ring's memory, as the socket buffer it replaces
RING_OVERHEAD = 128  # a ring frame's header, its address, the room for a tag put back
# Behind its traffic (Port.behind): this many frames waiting past the batch just read, or a
# socket queue an eighth full. Kept small: a passed flow's frame waits behind the backlog.
BEHIND_FRAMES = 512
SO_MEMINFO = 55  # struct: rmem_alloc, rcvbuf, ... (u32 each)


class RxBatch:
    """Frames read by C (uinet_tap/_ports.c ut_rx) into C's buffer, where they stay until the
    next read: C runs the data plane over them and sends the ones it forwards from there."""

    SLOTS = lib.UT_RX_MAX if lib is not None else 0  # frames a batch holds

    def __init__(self, in_ring: bool = False) -> None:
        """``in_ring``: its port reads into a ring, which recv_batch() points it at (the
        batch's own buffer is made only if the port leaves the ring)."""
        slots = self.SLOTS
        self.buf: Any = ffi.NULL
        self.data = memoryview(b"")
        self._own: Any = None
        if not in_ring:
            self.own_buffer()
        self.offsets = ffi.new("uint32_t[]", slots)
        self.lengths = ffi.new("uint32_t[]", slots)
        self.times = ffi.new("double[]", slots)
        self.flags = ffi.new("uint8_t[]", slots)
        self.count = 0
        self._follow = ffi.new("uint32_t[4]")

    def own_buffer(self) -> None:
        """Read into the batch's own buffer (where recvmmsg puts frames)."""
        if self._own is None:
            self._own = ffi.new("uint8_t[]", lib.UT_RX_MAX * lib.UT_RX_SLOT)
        self.buf = self._own
        self.data = memoryview(ffi.buffer(self._own))

    def complete_partial(self) -> int:
        """Complete in place the checksums the senders' offloads left partial, in C (the
        frames' flags lose UT_RX_PARTIAL): how many frames that was."""
        return lib.ut_complete_partial(self.buf, self.offsets, self.lengths, self.flags,  # type: ignore[no-any-return]
                                       self.count)  # fmt: skip

    def follow_on(self, first: int, max_bytes: int) -> tuple[bytes, int, int, int]:
        """The payloads of the frames after ``first`` that continue its TCP segment as a
        receive offload would merge them (stack/_offload.c ut_follow_on; at most
        ``max_bytes`` with the first's), joined; how many frames that is, and their length
        in all; the last one's TCP flags."""
        out = self._follow
        k = lib.ut_follow_on(self.buf, self.offsets, self.lengths, self.flags, first,
                             self.count, max_bytes, out, out + 1)  # fmt: skip
        if not k:
            return b"", 0, 0, 0
        data, offsets, lengths, hdr = self.data, self.offsets, self.lengths, out[0]
        span = range(first + 1, first + 1 + k)
        payload = b"".join([data[offsets[j] + hdr : offsets[j] + lengths[j]] for j in span])
        return payload, k, len(payload) + k * hdr, out[1]

    def ack_run(self, first: int) -> tuple[int, int, int, bytes]:
        """How many frames after ``first`` are, with it, pure ACKs of one connection that only
        move it on (stack/_offload.c ut_ack_run), and the last one's ACK number, window and
        options: all a TCP needs of the run. (0, 0, 0, b"") where none is."""
        out = self._follow
        k = lib.ut_ack_run(self.buf, self.offsets, self.lengths, self.flags, first, self.count,
                           out)  # fmt: skip
        if not k:
            return 0, 0, 0, b""
        at = self.offsets[first + k]
        return k, out[0], out[1], bytes(self.data[at + out[2] : at + out[3]])

    def frame(self, i: int) -> tuple[bytes, bool]:
        """Frame ``i`` as Port.recv gives it: (frame, its checksum is partial)."""
        off = self.offsets[i]
        partial = bool(self.flags[i] & lib.UT_RX_PARTIAL)
        return bytes(self.data[off : off + self.lengths[i]]), partial


class PortError(Exception):
    """A one-line reason an interface cannot be used."""


def interface_mtu(ifname: str) -> int:
    try:
        with open(f"/sys/class/net/{ifname}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1500


def disable_receive_offloads(ifname: str) -> str:
    """Turn GRO and LRO off, so the frames read are the frames on the wire; say what happened."""
    try:
        r = subprocess.run(
            [system_program("ethtool"), "-K", ifname, "gro", "off", "lro", "off"],
            capture_output=True,
            text=True,
            timeout=10,
            env=HELPER_ENV,
        )
    except MissingProgram as exc:
        return f"could not turn GRO/LRO off on {ifname}: {exc}; super-frames are resegmented"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not turn GRO/LRO off on {ifname} ({exc}); super-frames are resegmented"
    if r.returncode not in (0, 80):  # 80: some feature cannot be changed (fixed off)
        why = (r.stderr or r.stdout).strip().splitlines()
        return f"could not turn GRO/LRO off on {ifname} ({why[-1] if why else r.returncode})"
    return f"GRO and LRO off on {ifname}"


class Port:
    """One interface: frames in (ours excluded), frames out."""

    def __init__(self, ifname: str, index: int) -> None:
        self.name = ifname
        self.index = index
        problem = interface_problem(ifname)
        if problem is not None:
            raise PortError(problem)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise PortError(
                f"inline needs root or the CAP_NET_RAW and CAP_NET_ADMIN capabilities: "
                f"{CAPABILITY_ADVICE}"
            ) from None
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
            with contextlib.suppress(OSError):  # root may go past rmem_max
                s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
                s.setsockopt(socket.SOL_SOCKET, 32, 16 << 20)  # SO_SNDBUFFORCE
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            with contextlib.suppress(OSError):
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            with contextlib.suppress(OSError):
                # Frames go straight to the driver, past the qdisc layer (a bump in the
                # wire queues nothing of its own; Linux >= 3.14): fewer cycles per frame.
                s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            s.bind((ifname, ETH_P_ALL))
        except OSError as exc:
            s.close()
            raise PortError(f"cannot open {ifname}: {exc.strerror or exc}") from None
        self._set_promiscuous(s)
        s.setblocking(False)
        self.sock = s
        self.mtu = interface_mtu(ifname)
        self.received = 0
        self.sent = 0
        self.send_errors: dict[str, int] = {}
        self._drops = 0
        self.batch_bytes = 0  # of the frames the last send_batch() was given
        self._tx_errors: Any = ffi.new("int64_t[6]") if ffi is not None else None
        self.batch_cut = 0  # super-frames the last send_batch() cut to the MTU
        self.batch_whole = 0  # frames longer than the MTU it could not cut: sent as they were
        self._ring: Any = None  # a receive ring (use_ring), read by recv_batch
        self.ring_cut = 0  # frames lost cut in the ring (the port then left it)
        # the longest frame the ring must hold: the MTU, its Ethernet header, two tags
        self.max_frame = self.mtu + 14 + 8
        self._ring_view: memoryview = memoryview(b"")

    def _set_promiscuous(self, s: socket.socket) -> None:
        # struct packet_mreq { int ifindex; unsigned short type, alen; unsigned char addr[8]; }
        mreq = struct.pack("iHH8s", socket.if_nametoindex(self.name), 1, 0, b"")  # PROMISC
        s.setsockopt(SOL_PACKET, 1, mreq)  # PACKET_ADD_MEMBERSHIP

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, limit: int) -> list[tuple[bytes, bool]]:
        """Up to ``limit`` frames waiting now: (frame, its checksum is partial)."""
        frames: list[tuple[bytes, bool]] = []
        recvmsg = self.sock.recvmsg
        while len(frames) < limit:
            try:
                data, anc, _flags, addr = recvmsg(RECV_SIZE, _AUX_SPACE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            partial = False
            for level, kind, cdata in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                    status, _len, _snap, _mac, _net, tci, tpid = _AUX.unpack_from(cdata)
                    partial = bool(status & TP_STATUS_CSUMNOTREADY)
                    if status & TP_STATUS_VLAN_VALID or tci:
                        # the receiving kernel took the outer tag off; libpcap puts it back too
                        if not status & TP_STATUS_VLAN_TPID_VALID:
                            tpid = 0x8100
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
            frames.append((data, partial))
        self.received += len(frames)
        return frames

    def use_ring(self) -> bool:
        """Receive into a TPACKET_V2 ring read in place (recv_batch only, from now on: the
        socket's queue stays empty). False, and recvmmsg as before, where the kernel refuses
        it. A ring saves a system call's per-frame work on the way in (about a fifth more
        throughput passed, bench/inline_bench.py); its frames are sized for this port's
        MTU, so a longer frame ends it (see recv_batch)."""
        if os.environ.get("UINET_TAP_RX_RING") == "off":  # benchmarks compare the two
            return False
        frame = 4096
        while frame < self.max_frame + RING_OVERHEAD:
            frame *= 2
        ring = ffi.new("ut_ring *")
        if lib.ut_ring_open(self.sock.fileno(), ring, frame, RING_BYTES // frame) < 0:
            return False
        self._ring = ring
        self._ring_view = memoryview(ffi.buffer(ring.map, ring.size))
        return True

    @property
    def in_ring(self) -> bool:
        return self._ring is not None

    def waiting(self) -> bool:
        """Whether a frame waits to be read."""
        ring = self._ring
        if ring is not None:
            return bool(lib.ut_ring_waiting(ring, 0))
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed
            return False

    def behind(self) -> bool:
        """Whether frames pile up waiting to be read (more than BEHIND_FRAMES in the ring;
        without one, the socket's queue an eighth of its buffer)."""
        ring = self._ring
        if ring is not None:
            return bool(lib.ut_ring_waiting(ring, min(BEHIND_FRAMES, ring.frame_nr // 2)))
        try:
            info = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 8)
        except OSError:
            return False
        queued, room = struct.unpack("II", info)
        return queued > room // 8

    def recv_batch(self, batch: RxBatch, max_l3: int) -> int:
        """Read up to a batch of the frames waiting now into ``batch`` (in C); frames longer
        than ``max_l3`` past their layer-2 header are flagged (UT_RX_BIG). With a ring, the
        frames stay in it until release_batch()."""
        ring = self._ring
        if ring is not None:
            batch.buf, batch.data = ring.map, self._ring_view
            n = lib.ut_ring_rx(ring, lib.UT_RX_MAX, batch.offsets, batch.lengths, batch.times,
                               batch.flags, max_l3)  # fmt: skip
            if ring.cut:
                # A frame longer than the ring's (a GSO super-frame from a veth peer whose
                # sender offloads segmentation) arrived cut and is lost: counted, and this
                # port reads with recvmmsg (64 KiB a frame) once the ring is drained.
                self.ring_cut += ring.cut
                ring.cut = 0
            batch.count = n
            self.received += n
            return n  # type: ignore[no-any-return]
        if batch.buf != batch._own:
            batch.own_buffer()  # the port left its ring
        n = lib.ut_rx(self.sock.fileno(), batch.buf, lib.UT_RX_MAX, batch.offsets,
                      batch.lengths, batch.times, batch.flags, max_l3)  # fmt: skip
        if n < 0:
            raise OSError(-n, os.strerror(-n))
        batch.count = n
        self.received += n
        return n  # type: ignore[no-any-return]

    def release_batch(self) -> None:
        """The last batch is done with (sent, or copied by whoever took a frame)."""
        ring = self._ring
        if ring is not None:
            drained = ring.held < lib.UT_RX_MAX
            lib.ut_ring_release(ring)
            if self.ring_cut and drained:
                # Taking the ring off unhooks the socket for a moment (the kernel's
                # synchronize_net): frames arriving then are not delivered. Once per port.
                self._leave_ring()

    def _leave_ring(self) -> None:
        self._ring_view.release()
        lib.ut_ring_close(self.sock.fileno(), self._ring)
        self._ring = None

    def send_batch(self, batch: RxBatch, start: int, stop: int) -> int:
        """Send frames [start, stop) of ``batch`` (in C, from its buffer), a GSO super-frame
        cut to this port's MTU first (batch_cut, batch_whole); what cannot go is counted by
        reason, as send() counts it."""
        sent = self._tx(batch.buf, batch.offsets, batch.lengths, batch.flags, start, stop)
        errors = self._tx_errors
        self.batch_bytes = errors[3]
        self.batch_cut, self.batch_whole = errors[4], errors[5]
        return sent

    def send_frames(self, frames: list[bytes]) -> int:
        """Send ``frames`` in order, in one sendmmsg where C is built; counted as send()
        counts. Returns how many went."""
        if lib is None or len(frames) == 1:
            return sum(self.send(f) for f in frames)
        n = len(frames)
        offsets = ffi.new("uint32_t[]", n)
        lengths = ffi.new("uint32_t[]", n)
        at = 0
        for k, f in enumerate(frames):
            offsets[k], lengths[k] = at, len(f)
            at += len(f)
        return self._tx(b"".join(frames), offsets, lengths, ffi.NULL, 0, n)

    def _tx(self, buf: Any, offsets: Any, lengths: Any, flags: Any, start: int, stop: int) -> int:
        errors = self._tx_errors
        errors[0] = errors[1] = errors[2] = errors[4] = errors[5] = 0  # [3]: set by ut_tx
        sent: int = lib.ut_tx(self.sock.fileno(), buf, offsets, lengths, flags, start, stop,
                              self.mtu, errors)  # fmt: skip
        self.sent += sent
        if errors[0]:
            self.send_errors["EAGAIN"] = self.send_errors.get("EAGAIN", 0) + errors[0]
        if errors[1]:
            reason = errno.errorcode.get(errors[2], str(errors[2]))
            self.send_errors[reason] = self.send_errors.get(reason, 0) + errors[1]
        return sent

    def send(self, frame: bytes) -> bool:
        """Send one frame; a frame that cannot go is counted by reason, never silently lost."""
        for _ in range(50):
            try:
                self.sock.send(frame)
                self.sent += 1
                return True
            except (BlockingIOError, InterruptedError):
                select.select([], [self.sock], [], 0.01)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    select.select([], [], [], 0.001)
                    continue
                reason = errno.errorcode.get(exc.errno or 0, str(exc))
                self.send_errors[reason] = self.send_errors.get(reason, 0) + 1
                return False
        self.send_errors["EAGAIN"] = self.send_errors.get("EAGAIN", 0) + 1
        return False

    def drops(self) -> int:
        """Frames the kernel dropped because this socket's buffer was full (the counter is
        reset by each read, so it is summed here)."""
        with contextlib.suppress(OSError):
            _packets, dropped = struct.unpack(
                "II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            )
            self._drops += dropped
        return self._drops

    def close(self) -> None:
        if self._ring is not None:
            self._leave_ring()
        self.sock.close()
