"""What replay reads: one capture or several (files, directories of rotated files, ``-`` for
stdin), compressed or not, read as one capture in time order, optionally through a BPF filter.

A plain classic pcap or pcapng file goes to :class:`PcapFile` (mapped and indexed in C where
built). Everything else is read front to back as a stream: gzip, xz, bzip2 and zstd
(recognised by their magic bytes, not their names) and stdin.

Several inputs are merged by capture time, each input's own order kept: a rotated set
(``tcpdump -G``/``-C``) reads as the capture it was cut from, and a connection spanning files is
one connection. An input is opened only when the merge reaches its first packet, so a day of
rotated files holds one or two open at a time.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import struct
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import pcapy

from .pcapfile import _MAGIC, BATCH, MAX_SNAPLEN, Batch, CaptureError, PcapFile, ng_batch
from .pcapng import PcapngError, is_pcapng, read_packets
from .stack import fastpath
from .stack.decode import SUPPORTED_LINKTYPES

CHUNK = 1 << 20  # bytes read from a stream at a time
# Magic bytes -> compression (RFC 1952 gzip, the xz and zstd frame formats, bzip2's "BZh").
COMPRESSIONS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# What a broken compressed stream raises, read as a truncation (a cut download, a disk full).
try:
    import zstandard
except ImportError:  # optional: only .zst inputs need it
    zstandard = None  # type: ignore[assignment]
_STREAM_ERRORS: tuple[type[Exception], ...] = (EOFError, OSError, lzma.LZMAError) + (
    (zstandard.ZstdError,) if zstandard is not None else ()
)
_CORRUPT: tuple[type[Exception], ...] = (PcapngError, *_STREAM_ERRORS)


def compression(head: bytes) -> str | None:
    for magic, name in COMPRESSIONS:
        if head.startswith(magic):
            return name
    return None


def _decompressed(raw: BinaryIO, kind: str, name: str) -> BinaryIO:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if zstandard is None:
        raise CaptureError(f"{name}: zstd-compressed, and the zstandard module is not installed")
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return io.BufferedReader(reader, CHUNK)  # type: ignore[arg-type]


class StreamCapture:
    """A capture read once, front to back, from a stream: stdin or a compressed file. Classic
    pcap records are indexed as :class:`PcapFile` indexes a mapped file (in C where built);
    nothing in a record is trusted (a captured length past libpcap's limit ends the read)."""

    def __init__(self, raw: BinaryIO, name: str, size: int = 0, prefetch: bool = True) -> None:
        """``prefetch``: read the first batch now (a file corrupt at its first record is an
        error); a live stream (``watch -``) must not wait here for its first packet."""
        self.name = name
        self.size = size  # of the raw (compressed) input, for progress; 0: unknown
        self.packets = 0
        self.truncated: str | None = None
        self._raw = raw
        head = _peek(raw, 6)
        kind = compression(head)
        self._f: BinaryIO = _decompressed(raw, kind, name) if kind else raw
        try:
            magic = _read_exact(self._f, 4)
        except _STREAM_ERRORS as exc:
            raise CaptureError(f"{name}: corrupt {kind} stream ({exc})") from exc
        self._ng: Iterator[tuple[float, bytes, int, int]] | None = None
        self._rest: Iterator[Batch]
        if is_pcapng(magic):
            self._ng = read_packets(_Prefixed(magic, self._f))  # type: ignore[arg-type]
            first = self._first_ng()
            self.linktype = first[3] if first else 1
            self._rest = self._ng_batches(first)
        else:
            try:
                hdr = magic + _read_exact(self._f, 20)
            except _STREAM_ERRORS as exc:
                raise CaptureError(f"{name}: corrupt {kind} stream ({exc})") from exc
            order = _MAGIC.get(int.from_bytes(magic, "little"))
            if order is None or len(hdr) < 24:
                what = f"{kind}-compressed data" if kind else "data"
                raise CaptureError(f"{name} is not a pcap or pcapng capture ({what})")
            self._swap, self._nsec = order
            end = ">" if self._swap else "<"
            snaplen, self.linktype = struct.unpack(end + "II", hdr[16:24])
            self.linktype &= 0x0FFFFFFF  # the upper bits carry FCS information
            self._snaplen = snaplen if 0 < snaplen <= MAX_SNAPLEN else MAX_SNAPLEN
            self._rest = self._pcap_batches()
        if self.linktype not in SUPPORTED_LINKTYPES:
            names = ", ".join(f"{k} ({v})" for k, v in sorted(SUPPORTED_LINKTYPES.items()))
            raise CaptureError(f"{name}: unsupported link type {self.linktype}; supported: {names}")
        # The first batch now: a stream corrupt at its first record is an error, not a capture.
        self._head = next(self._rest, None) if prefetch else None
        if self._head is None and self.truncated is not None:
            raise CaptureError(f"{name}: corrupt capture ({self.truncated})")

    @property
    def bytes_read(self) -> int:
        try:
            return self._raw.tell() if self.size else 0
        except (OSError, ValueError):
            return 0

    def batches(self) -> Iterator[Batch]:
        if self._head is not None:
            yield self._head
        yield from self._rest

    def _first_ng(self) -> tuple[float, bytes, int, int] | None:
        assert self._ng is not None
        try:
            return next(self._ng, None)
        except _CORRUPT as exc:
            raise CaptureError(f"{self.name}: corrupt pcapng ({exc})") from exc

    def _ng_batches(self, first: tuple[float, bytes, int, int] | None) -> Iterator[Batch]:
        assert self._ng is not None
        pending = [first] if first else []
        try:
            for pkt in self._ng:
                if len(pending) >= BATCH or (pending and pkt[3] != pending[0][3]):
                    yield self._batch(pending)
                    pending = []
                pending.append(pkt)
        except _CORRUPT as exc:
            self.truncated = str(exc)
        if pending:
            yield self._batch(pending)

    def _batch(self, pkts: list[tuple[float, bytes, int, int]]) -> Batch:
        self.packets += len(pkts)
        return ng_batch(pkts)

    def _pcap_batches(self) -> Iterator[Batch]:
        buf, pos = b"", 0
        while True:
            try:
                # read1: what one read of the stream gives, so a stream cut short loses only
                # what follows the cut, not the chunk being gathered
                more = self._f.read1(CHUNK)  # type: ignore[attr-defined]
            except _STREAM_ERRORS as exc:
                self.truncated = str(exc) or type(exc).__name__
                more = b""
            buf, pos = buf[pos:] + more, 0
            while True:
                n, offsets, lengths, times, why, end = self._index(buf, pos)
                if n:
                    self.packets += n
                    # offsets count from the batch's first record
                    yield Batch(buf[pos:end], times, offsets, lengths, self.linktype)
                pos = end
                if why == "bad":
                    self.truncated = f"a record's captured length passes {self._snaplen}"
                    return
                if why != "full" or pos >= len(buf):
                    break
            if not more:
                if pos < len(buf) and self.truncated is None:
                    self.truncated = "the stream ends inside a record"
                return

    def _index(
        self, buf: bytes, pos: int
    ) -> tuple[int, Sequence[int], Sequence[int], Sequence[float], str, int]:
        """Index records of ``buf`` from ``pos``: ut_pcap_index's contract, and where the
        index ended."""
        if fastpath.AVAILABLE:
            return fastpath.index_pcap(buf, pos, self._swap, self._nsec, self._snaplen, BATCH)
        rec = struct.Struct(">IIII" if self._swap else "<IIII")
        p = pos
        offs: list[int] = []
        lens: list[int] = []
        tms: list[float] = []
        why = "full"
        while len(offs) < BATCH and p < len(buf):
            if len(buf) - p < 16:
                why = "more"
                break
            sec, sub, caplen, _wire = rec.unpack_from(buf, p)
            if caplen > self._snaplen:
                why = "bad"
                break
            if len(buf) - p - 16 < caplen:
                why = "more"
                break
            offs.append(p + 16 - pos)
            lens.append(caplen)
            tms.append(sec + (sub // 1000 if self._nsec else sub) / 1e6)
            p += 16 + caplen
        return len(offs), offs, lens, tms, why, p

    def close(self) -> None:
        self._f.close()
        if self._raw is not sys.stdin.buffer:
            self._raw.close()


class _Prefixed:
    """A stream with bytes already read put back in front (the magic read to tell formats)."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return _read_exact(self._f, n) if n >= 0 else self._f.read()
        out, self._head = self._head[:n], self._head[n:]
        if n > len(out):
            out += _read_exact(self._f, n - len(out))
        return out


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """``n`` bytes, fewer only at the end (a pipe or a decompressor may return less)."""
    out = f.read(n)
    while len(out) < n:
        more = f.read(n - len(out))
        if not more:
            break
        out += more
    return out


def _peek(raw: BinaryIO, n: int) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return peek(n)[:n]  # type: ignore[no-any-return]
    pos = raw.tell()
    head = raw.read(n)
    raw.seek(pos)
    return head


Source = PcapFile | StreamCapture


def open_one(path: str) -> Source:
    """One input: stdin (``-``), a plain file (PcapFile) or a compressed one (a stream)."""
    if path == "-":
        if sys.stdin.isatty():
            raise CaptureError("-: stdin is a terminal, not a capture (pipe one in)")
        return StreamCapture(sys.stdin.buffer, "stdin")
    if not os.path.exists(path):
        raise CaptureError(f"no such file: {path}")
    try:
        f = open(path, "rb")  # noqa: SIM115 (the stream's until it is read)
    except PermissionError as exc:
        raise CaptureError(f"cannot read {path}: permission denied") from exc
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror}") from exc
    if compression(f.read(6)) is None and stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        return PcapFile(path)
    f.seek(0)
    try:
        return StreamCapture(f, path, os.fstat(f.fileno()).st_size)
    except BaseException:
        f.close()
        raise


def expand(args: Sequence[str]) -> list[str]:
    """The inputs named: files as given, each directory's regular files (not hidden, not
    recursive), ``-`` alone."""
    if "-" in args and len(args) > 1:
        raise CaptureError("-: stdin must be the only input")
    paths: list[str] = []
    for arg in args:
        if arg != "-" and os.path.isdir(arg):
            names = sorted(n for n in os.listdir(arg) if not n.startswith("."))
            found = [os.path.join(arg, n) for n in names if os.path.isfile(os.path.join(arg, n))]
            if not found:
                raise CaptureError(f"{arg}: a directory with no files in it")
            paths += found
        else:
            paths.append(arg)
    return paths


class Capture:
    """Several inputs read as one capture, merged by capture time (see the module's doc)."""

    def __init__(self, args: Sequence[str], bpf: str | None = None) -> None:
        self.paths = expand(args)
        self.name = args[0] if len(args) == 1 else f"{len(self.paths)} inputs"
        self._firsts: list[tuple[float, int, str]] = []
        self._only: Source | None = None
        if len(self.paths) == 1:
            self._only = open_one(self.paths[0])
            self.linktype, self.size = self._only.linktype, self._only.size
        else:
            # Each input opened once now: its format, its link type and its first packet's
            # time checked (a bad one is an error before anything is read); then closed
            # again until the merge reaches it, so open inputs stay few.
            self.size = 0
            for i, path in enumerate(self.paths):
                src = open_one(path)
                if i == 0:
                    self.linktype = src.linktype
                self.size += src.size
                head = next(src.batches(), None)
                if head is not None and len(head.times):
                    self._firsts.append((head.times[0], i, path))
                _close(src)
        self._firsts.sort()
        self.packets = 0
        self._done_bytes = 0
        self._open: list[Source] = []
        self.truncated: str | None = None
        self.truncated_inputs: list[str] = []
        self.filtered = 0  # frames the BPF filter left out
        self._filter = _Filter(bpf) if bpf else None
        if self._filter is not None:
            self._filter.program(self.linktype)  # a bad expression is an error now

    @property
    def bytes_read(self) -> int:
        return self._done_bytes + sum(s.bytes_read for s in self._open)

    def batches(self) -> Iterator[Batch]:
        merged = self._only_batches() if self._only is not None else self._merged()
        if self._filter is None:
            yield from merged
            return
        for batch in merged:
            kept = self._filter.apply(batch)
            self.filtered += len(batch.lengths) - len(kept.lengths)
            if len(kept.lengths):
                yield kept

    def _only_batches(self) -> Iterator[Batch]:
        src = self._only
        assert src is not None
        self._open = [src]
        for batch in src.batches():
            self.packets = src.packets
            yield batch
        self.packets = src.packets
        self._ended(src)

    def _merged(self) -> Iterator[Batch]:
        """k-way merge by capture time: from the input whose next frame is earliest, the run of
        frames up to the next frame of any other (ties to the input opened first)."""
        pending = list(self._firsts)
        live: list[list] = []  # [source, batches, batch, index]
        while live or pending:
            if pending and (not live or pending[0][0] <= min(_next_time(e) for e in live)):
                src = open_one(pending.pop(0)[2])
                it = src.batches()
                first = next(it, None)
                self._open.append(src)
                if first is None:
                    self._ended(src)
                    continue
                live.append([src, it, first, 0])
                continue
            live.sort(key=_next_time)  # stable: ties stay with the input opened first
            entry = live[0]
            src, it, batch, i = entry
            bound = min(
                [_next_time(e) for e in live[1:]] + ([pending[0][0]] if pending else [])
                or [float("inf")]
            )
            times = batch.times
            j = i
            if max(times[i:]) <= bound:
                j = len(times)
            else:
                while j < len(times) and times[j] <= bound:
                    j += 1
                j = max(j, i + 1)  # the earliest frame always goes
            self.packets += j - i
            yield batch if (i, j) == (0, len(times)) else _slice(batch, i, j)
            if j < len(times):
                entry[3] = j
                continue
            nxt = next(it, None)
            if nxt is None:
                live.remove(entry)
                self._ended(src)
            else:
                entry[2], entry[3] = nxt, 0

    def _ended(self, src: Source) -> None:
        if src in self._open:
            self._open.remove(src)
        self._done_bytes += src.size
        if src.truncated is not None:
            name = getattr(src, "name", None) or getattr(src, "path", "?")
            self.truncated_inputs.append(f"{name}: {src.truncated}")
            one = self._only is not None
            self.truncated = src.truncated if one else "; ".join(self.truncated_inputs)
        _close(src)


def _next_time(entry: list) -> float:
    return entry[2].times[entry[3]]  # type: ignore[no-any-return]


def _slice(batch: Batch, i: int, j: int) -> Batch:
    return Batch(
        batch.data, batch.times[i:j], batch.offsets[i:j], batch.lengths[i:j], batch.linktype,
        batch.wirelens[i:j] if batch.wirelens is not None else None,
    )  # fmt: skip


def _close(src: Source) -> None:
    close: Callable[[], None] | None = getattr(src, "close", None)
    if close is not None:
        close()


class _Filter:
    """A BPF filter compiled by libpcap (through pcapy-ng) per link type, applied to every
    frame as ``tcpdump -r FILE EXPR`` applies it."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self._programs: dict[int, pcapy.BPFProgram] = {}

    def program(self, linktype: int) -> pcapy.BPFProgram:
        prog = self._programs.get(linktype)
        if prog is None:
            try:
                prog = pcapy.compile(linktype, MAX_SNAPLEN, self.expr, 1, 0xFFFFFFFF)
            except pcapy.PcapError as exc:
                raise CaptureError(f"--filter {self.expr!r}: {exc}") from exc
            self._programs[linktype] = prog
        return prog

    def apply(self, batch: Batch) -> Batch:
        match = self.program(batch.linktype).filter
        data = batch.data
        keep = [
            k
            for k, (off, n) in enumerate(zip(batch.offsets, batch.lengths, strict=True))
            if match(bytes(data[off : off + n]))
        ]
        if len(keep) == len(batch.lengths):
            return batch
        wl = batch.wirelens
        return Batch(
            data,
            array("d", [batch.times[k] for k in keep]),
            array("I", [batch.offsets[k] for k in keep]),
            array("I", [batch.lengths[k] for k in keep]),
            batch.linktype,
            [wl[k] for k in keep] if wl is not None else None,
        )
