"""Reading pcap and pcapng files in batches, streaming: a classic pcap file is read in chunks
and indexed in place by C where the data plane is built (stack/_pcap.c), else read through
pcapy-ng (libpcap), which also takes over wherever a record is not plainly well formed;
pcapng is read by pcapng.py."""

from __future__ import annotations

import io
import os
import stat
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pcapy

from .pcapng import PcapngError, is_pcapng, read_packets
from .stack import fastpath
from .stack.decode import SUPPORTED_LINKTYPES

BATCH = 4096
# Classic pcap magic numbers as a little-endian read gives them: (byte swap, nanoseconds).
_MAGIC = {
    0xA1B2C3D4: (False, False), 0xD4C3B2A1: (True, False),
    0xA1B23C4D: (False, True), 0x4D3CB2A1: (True, True),
}  # fmt: skip
MAX_SNAPLEN = 262144  # libpcap's limit for every link type read here
# A classic pcap file is read this much at a time into a few buffers used in turn: a read
# into a buffer that stays mapped and fits the cache costs less than mapping the file (a page
# fault per few pages: 0.20 s against 0.08 s for the 841 MB bench capture here).
CHUNK = 4 << 20


def meta_times(meta: array) -> Sequence[float]:
    """Capture times from libpcap's (sec, usec, offset, caplen) records."""
    if fastpath.AVAILABLE:
        return fastpath.meta_times(meta)
    return [s + u / 1e6 for s, u in zip(meta[0::4], meta[1::4], strict=True)]


class CaptureError(Exception):
    """Bad input that stops a run before it starts: a one-line message for the user."""


@dataclass(slots=True)
class Batch:
    """``count`` packets: packet i is ``data[offsets[i]:offsets[i]+lengths[i]]`` at
    ``times[i]``. ``data`` may be a view of a reader's buffer, good until the reader is asked
    for the batch after next: what is kept is copied out of it."""

    data: bytes | memoryview
    times: Sequence[float]
    offsets: Sequence[int]
    lengths: Sequence[int]
    linktype: int
    wirelens: list[int] | None = None
    # Per frame, the mirror session a tunnelled copy came in (Segment.tunnel); None: none.
    tunnels: list[int] | None = None


class PcapFile:
    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            raise CaptureError(f"no such file: {path}")
        if os.path.isdir(path):
            raise CaptureError(f"{path} is a directory, not a capture file")
        try:
            self.size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(4)
        except PermissionError as exc:
            raise CaptureError(f"cannot read {path}: permission denied") from exc
        self.packets = 0
        self.bytes_read = 0  # record headers included, for progress
        self.truncated: str | None = None
        self._ng: Iterator[tuple[float, bytes, int, int]] | None = None
        self._first: tuple[float, bytes, int, int] | None = None
        if is_pcapng(head):
            # libpcap refuses sections whose interfaces differ in snap length or link type,
            # which real multi-interface captures have: read pcapng ourselves.
            self._file = open(path, "rb")  # noqa: SIM115 (closed in batches())
            self._ng = read_packets(self._file)
            try:
                self._first = next(self._ng, None)
            except PcapngError as exc:
                self._file.close()
                raise CaptureError(f"{path}: corrupt pcapng ({exc})") from exc
            self.linktype = self._first[3] if self._first else 1
        else:
            try:
                self._reader = pcapy.open_offline(path)
            except pcapy.PcapError as exc:
                raise CaptureError(f"{path} is not a pcap or pcapng capture ({exc})") from exc
            self.linktype = self._reader.datalink()
        if self.linktype not in SUPPORTED_LINKTYPES:
            names = ", ".join(f"{k} ({v})" for k, v in sorted(SUPPORTED_LINKTYPES.items()))
            raise CaptureError(f"{path}: unsupported link type {self.linktype}; supported: {names}")
        self._raw: io.FileIO | None = None
        if self._ng is None and fastpath.AVAILABLE:
            self._raw = self._opened(path)
        self.indexed = self._raw is not None  # read by stack/_pcap.c, not libpcap
        if self._ng is None:
            # Read the first batch now: a file whose first record is already corrupt has
            # nothing to show, which is an error rather than a truncated capture.
            self._pcap = self._indexed_batches() if self._raw else self._pcap_batches()
            self._head = next(self._pcap, None)
            if self._head is None and self.truncated is not None:
                raise CaptureError(f"{path}: corrupt pcap ({self.truncated})")

    def close(self) -> None:
        """Let go of the file now: a merge of many inputs must not wait for the collector (a
        suspended reader and its mapping refer to each other)."""
        pcap = getattr(self, "_pcap", None)
        if pcap is not None:
            pcap.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._ng is not None:
            self._file.close()
        elif hasattr(self, "_reader"):
            self._reader.close()

    def batches(self) -> Iterator[Batch]:
        if self._ng is not None:
            yield from self._ng_batches()
            return
        if self._head is not None:
            yield self._head
        yield from self._pcap

    def _pcap_batches(self) -> Iterator[Batch]:
        while True:
            try:
                data, meta = self._reader.next_batch(BATCH)
            except pcapy.PcapError as exc:
                # A record cut short (the file ends mid-record): next_batch loses the whole
                # batch, so read that stretch again one packet at a time.
                yield from self._salvage(str(exc))
                return
            if not meta:
                return
            m = array("I", meta)
            offsets = m[2::4]
            lengths = m[3::4]
            times = meta_times(m)
            self.packets += len(lengths)
            self.bytes_read += len(data) + 16 * len(lengths)
            yield Batch(data, times, offsets, lengths, self.linktype)

    @staticmethod
    def _opened(path: str) -> io.FileIO | None:
        """The file opened for the C index: a regular, classic pcap file only."""
        try:
            f = io.FileIO(path, "rb")
        except OSError:
            return None  # libpcap reads it, or says what is wrong
        try:
            head = f.read(24)
            if (
                not stat.S_ISREG(os.fstat(f.fileno()).st_mode)
                or len(head) < 24
                or int.from_bytes(head[:4], "little") not in _MAGIC
            ):
                f.close()
                return None
        except OSError:
            f.close()
            return None
        return f

    def _indexed_batches(self) -> Iterator[Batch]:
        """Batches indexed in place by stack/_pcap.c, CHUNK bytes read at a time (a record
        cut by a chunk's end moves to the next one's start). Past the first chunk, a thread
        reads and indexes the next chunk while this one's batches are used (both release the
        GIL: the read and the index run beside the engine on the other core), into a buffer
        no batch still in use lies in. Where the index stops at a record that is not plainly
        well formed (a captured length beyond the snapshot length, the file ending inside a
        record), libpcap goes on from that record, as it would have read it."""
        f = self._raw
        assert f is not None
        f.seek(0)
        head = f.read(24)
        swap, nsec = _MAGIC[int.from_bytes(head[:4], "little")]
        snaplen = int.from_bytes(head[16:20], "big" if swap else "little")
        if not 0 < snaplen <= MAX_SNAPLEN:
            snaplen = MAX_SNAPLEN  # as libpcap takes a header's missing or huge snaplen
        chunks = _Chunks(f, swap, nsec, snaplen, max(1, min(CHUNK, self.size)))
        pool: ThreadPoolExecutor | None = None
        pending: Future[_Chunk] | None = None
        try:
            chunk = chunks.read(0, b"")
            while True:
                if chunk.more:
                    # The next chunk's buffer: neither this chunk's nor the last two batches'
                    # (a batch is good until the batch after next is asked for).
                    free = chunks.free(chunk.buf)
                    if pool is None:  # only a file longer than a chunk starts the thread
                        pool = ThreadPoolExecutor(1, thread_name_prefix="pcap-read")
                    pending = pool.submit(chunks.read, free, chunk.carried)
                for data, offsets, lengths, times, size in chunk.batches:
                    self.packets += len(lengths)
                    self.bytes_read += size
                    chunks.used(chunk.buf)
                    yield Batch(data, times, offsets, lengths, self.linktype)
                if pending is None:
                    break
                chunk, pending = pending.result(), None
        finally:
            if pending is not None:
                pending.cancel()
            if pool is not None:
                pool.shutdown(wait=True)  # the file is closed only once no read is running
        f.close()
        self._raw = None
        if chunk.carried:
            # Not plainly well formed from here: libpcap takes over at this record.
            for _ in range(self.packets):
                self._reader.next()
            yield from self._pcap_batches()

    def _salvage(self, error: str) -> Iterator[Batch]:
        reader = pcapy.open_offline(self.path)
        for _ in range(self.packets):
            reader.next()
        frames: list[bytes] = []
        times: list[float] = []
        while True:
            try:
                hdr, pkt = reader.next()
            except pcapy.PcapError as exc:
                error = str(exc)
                break
            if hdr is None:  # the end (an empty record has a header)
                break
            sec, usec = hdr.getts()
            frames.append(pkt)
            # pcapy gives the file's unsigned 32-bit fields as signed ints here (not in
            # next_batch's records): read them as the file has them.
            times.append((sec & 0xFFFFFFFF) + (usec & 0xFFFFFFFF) / 1e6)
        self.truncated = error
        if frames:
            offsets, pos = [], 0
            for f in frames:
                offsets.append(pos)
                pos += len(f)
            self.packets += len(frames)
            yield Batch(b"".join(frames), times, offsets, [len(f) for f in frames], self.linktype)

    def _ng_batches(self) -> Iterator[Batch]:
        assert self._ng is not None
        pending: list[tuple[float, bytes, int, int]] = [self._first] if self._first else []
        try:
            for pkt in self._ng:
                if len(pending) >= BATCH or (pending and pkt[3] != pending[0][3]):
                    yield self._ng_batch(pending)
                    pending = []
                pending.append(pkt)
        except PcapngError as exc:
            self.truncated = str(exc)
        finally:
            self._file.close()
        if pending:
            yield self._ng_batch(pending)

    def _ng_batch(self, pkts: list[tuple[float, bytes, int, int]]) -> Batch:
        batch = ng_batch(pkts)
        self.packets += len(pkts)
        self.bytes_read += len(batch.data) + 32 * len(pkts)
        return batch


def ng_batch(pkts: list[tuple[float, bytes, int, int]]) -> Batch:
    """One batch of pcapng reader packets ``(ts, frame, wirelen, linktype)``, all of one
    link type."""
    offsets, pos = [], 0
    for p in pkts:
        offsets.append(pos)
        pos += len(p[1])
    return Batch(
        b"".join(p[1] for p in pkts),
        [p[0] for p in pkts],
        offsets,
        [len(p[1]) for p in pkts],
        pkts[0][3],
        # Wire lengths only matter where the snap length cut a frame.
        [p[2] for p in pkts] if any(p[2] > len(p[1]) for p in pkts) else None,
    )


@dataclass(slots=True)
class _Chunk:
    """One chunk read and indexed: its buffer, its batches (data, offsets, lengths, times,
    bytes of file), the bytes after its last whole record, and whether the file goes on."""

    buf: int
    batches: list[tuple[memoryview, array, array, array, int]]
    carried: bytes
    more: bool


class _Chunks:
    """Reads a classic pcap file chunk by chunk into buffers made as needed (four at most:
    the one being read, the one whose batches are handed out, and those of the last two
    batches handed out), each indexed whole by C."""

    def __init__(self, f: io.FileIO, swap: bool, nsec: bool, snaplen: int, size: int) -> None:
        self.f = f
        self.swap, self.nsec, self.snaplen = swap, nsec, snaplen
        self.size = size
        # Room for a chunk after the largest record a chunk's end can cut.
        self.bufs: list[memoryview] = []
        self.recent = [-1, -1]  # the buffers of the last two batches handed out

    def free(self, current: int) -> int:
        busy = (current, *self.recent)
        for i in range(len(self.bufs)):
            if i not in busy:
                return i
        return len(self.bufs)

    def used(self, buf: int) -> None:
        self.recent = [self.recent[1], buf]

    def read(self, i: int, carried: bytes) -> _Chunk:
        if i == len(self.bufs):
            self.bufs.append(memoryview(bytearray(self.size + 16 + self.snaplen)))
        buf = self.bufs[i]
        buf[: len(carried)] = carried
        got = 0
        while got < self.size:  # a short read is the file's end
            n = self.f.readinto(buf[len(carried) + got : len(carried) + self.size])
            if not n:
                break
            got += n
        end = len(carried) + got
        batches = []
        pos = 0
        why = "more"
        while pos < end:
            start = pos
            n, offsets, lengths, times, why, pos = fastpath.index_pcap(
                buf[:end], pos, self.swap, self.nsec, self.snaplen, BATCH
            )
            if n:
                # A view of the buffer, no copy (the offsets are counted from its start):
                # whatever keeps a frame copies it out of the view.
                batches.append((buf[start:pos], offsets, lengths, times, pos - start))
            if why != "full":
                break
        return _Chunk(i, batches, bytes(buf[pos:end]), got == self.size and why != "bad")
