"""Reading pcap and pcapng files in batches through pcapy-ng (libpcap), streaming."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pcapy

from .pcapng import PcapngError, is_pcapng, read_packets
from .stack.decode import SUPPORTED_LINKTYPES
from .stack.fastpath import ffi as fast_ffi
from .stack.fastpath import lib as fast_lib

BATCH = 4096


def meta_times(meta: array) -> Sequence[float]:
    """Capture times from libpcap's (sec, usec, offset, caplen) records."""
    n = len(meta) // 4
    if fast_lib is not None:
        times = array("d", bytes(8 * n))
        fast_lib.ut_meta_times(
            fast_ffi.from_buffer("uint32_t[]", meta), n, fast_ffi.from_buffer("double[]", times)
        )
        return times
    return [s + u / 1e6 for s, u in zip(meta[0::4], meta[1::4], strict=True)]


class CaptureError(Exception):
    """Bad input that stops a run before it starts: a one-line message for the user."""


@dataclass(slots=True)
class Batch:
    """``count`` packets: packet i is ``data[offsets[i]:offsets[i]+lengths[i]]`` at
    ``times[i]``."""

    data: bytes
    times: Sequence[float]
    offsets: Sequence[int]
    lengths: Sequence[int]
    linktype: int
    wirelens: list[int] | None = None


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
        if self._ng is None:
            # Read the first batch now: a file whose first record is already corrupt has
            # nothing to show, which is an error rather than a truncated capture.
            self._pcap = self._pcap_batches()
            self._head = next(self._pcap, None)
            if self._head is None and self.truncated is not None:
                raise CaptureError(f"{path}: corrupt pcap ({self.truncated})")

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
            if hdr is None or (not pkt and hdr.getcaplen() == 0 and hdr.getlen() == 0):
                break
            sec, usec = hdr.getts()
            frames.append(pkt)
            times.append(sec + usec / 1e6)
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
        offsets, pos = [], 0
        for p in pkts:
            offsets.append(pos)
            pos += len(p[1])
        self.packets += len(pkts)
        self.bytes_read += pos + 32 * len(pkts)
        return Batch(
            b"".join(p[1] for p in pkts),
            [p[0] for p in pkts],
            offsets,
            [len(p[1]) for p in pkts],
            pkts[0][3],
            # Wire lengths only matter where the snap length cut a frame.
            [p[2] for p in pkts] if any(p[2] > len(p[1]) for p in pkts) else None,
        )
