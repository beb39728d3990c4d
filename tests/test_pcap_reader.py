"""The C index of classic pcap files (stack/_pcap.c) against libpcap (pcapy-ng), frame for
frame: every capture shipped and in the corpus, every byte order and time unit, and generated
files with truncated ends, records longer than the snapshot length and odd headers, where
libpcap must take over at the right record and the file read the same either way."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import pcap_bytes  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402

from uinet_tap.pcapfile import CaptureError, PcapFile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not fastpath.AVAILABLE, reason="the C data plane is not built")


def read(path: Path, indexed: bool) -> tuple[list[tuple[float, bytes]], object, int, int]:
    """(frames with times, truncation message, packets, link type) read one way."""
    original = PcapFile.__dict__["_opened"]
    if not indexed:
        PcapFile._opened = staticmethod(lambda p: None)  # type: ignore[method-assign]
    try:
        try:
            src = PcapFile(str(path))
        except CaptureError as exc:
            return [], f"error: {exc}", 0, 0
    finally:
        PcapFile._opened = original  # type: ignore[method-assign]
    assert src.indexed is indexed
    out = []
    for b in src.batches():
        for t, o, n in zip(b.times, b.offsets, b.lengths, strict=True):
            out.append((t, bytes(b.data[o : o + n])))
    return out, src.truncated, src.packets, src.linktype


def assert_same(path: Path) -> int:
    fast = read(path, True)
    slow = read(path, False)
    assert fast[0] == slow[0]
    assert fast[1:] == slow[1:]
    return len(fast[0])


def shipped() -> list[Path]:
    found = sorted(ROOT.glob("captures/**/*.pcap")) + sorted(
        (ROOT.parent / "shared" / "corpus").glob("**/*.pcap")
    )
    return [
        p
        for p in found
        if p.read_bytes()[:4]
        in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    ]


def test_every_shipped_and_corpus_pcap_reads_the_same():
    files = shipped()
    assert len(files) >= 20, files
    assert sum(assert_same(p) for p in files) > 5_000


def frame(n: int, fill: int) -> bytes:
    return bytes((fill + i) & 0xFF for i in range(n))


@st.composite
def pcap_files(draw):
    count = draw(st.integers(0, 40))
    sizes = draw(st.lists(st.integers(0, 3000), min_size=count, max_size=count))
    times = draw(st.lists(st.floats(0, 4e9, allow_nan=False), min_size=count, max_size=count))
    frames_ = [(t, frame(n, i)) for i, (t, n) in enumerate(zip(times, sizes, strict=True))]
    raw = bytearray(
        pcap_bytes(
            frames_,
            snaplen=draw(st.sampled_from([262144, 65535, 2000, 0, 1 << 30])),
            byteorder=draw(st.sampled_from(["<", ">"])),
            nanosecond=draw(st.booleans()),
        )
    )
    big = raw[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
    if count and draw(st.booleans()):
        # One record claims more than the snapshot length (or than libpcap's maximum).
        k = draw(st.integers(0, count - 1))
        pos = 24
        for _ in range(k):
            pos += 16 + struct.unpack_from(">I" if big else "<I", raw, pos + 8)[0]
        claim = draw(st.sampled_from([2001, 65536, 262145, 0xFFFFFFFF]))
        struct.pack_into(">I" if big else "<I", raw, pos + 8, claim)
    if draw(st.booleans()):
        del raw[draw(st.integers(24, max(24, len(raw)))) :]  # the file ends anywhere
    return bytes(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=pcap_files())
def test_generated_pcaps_read_the_same(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("pcap") / "f.pcap"
    path.write_bytes(raw)
    assert_same(path)


def test_index_hands_over_at_an_oversized_record(tmp_path):
    frames_ = [(1000.0 + i, frame(100, i)) for i in range(10)]
    raw = bytearray(pcap_bytes(frames_, snaplen=1000))
    struct.pack_into("<I", raw, 24 + 5 * 116 + 8, 5000)  # the sixth record: caplen > snaplen
    path = tmp_path / "f.pcap"
    path.write_bytes(raw)
    got, truncated, packets, _ = read(path, True)
    # libpcap reads the sixth record as its (wrong) length says and stops where data ends;
    # either way the first five frames are the index's, and both readers agree.
    assert got[:5] == frames_[:5]
    assert (got, truncated, packets) == read(path, False)[:3]


def test_engine_lets_go_of_each_batch_it_reads_in_place():
    """A batch of an indexed file is a memoryview of the reader's buffer: the C view of it must
    be gone once the batch is fed, or a garbage collection may clear the memoryview under that
    view (a crash seen when several captures ran in one process, then mapped)."""
    import gc

    from uinet_tap.engine import Engine, Options

    for name in ("http-keepalive.pcap", "http-keepalive.pcap"):
        src = PcapFile(str(ROOT / "captures" / name))
        assert src.indexed
        records: list[dict] = []
        engine = Engine(src.linktype, Options(fastpath="c"), records.append, plugins=[])
        fast = engine.tracker.fast
        assert fast is not None
        for batch in src.batches():
            assert isinstance(batch.data, memoryview)
            engine.feed_batch(batch)
            assert fast._args == () and fast._data == b""
        engine.finish()
        assert records
        del engine, src, batch, fast
        gc.collect()


@pytest.mark.parametrize("chunk", [17, 700, 5000])
def test_records_cut_by_a_chunks_end_are_read_whole(chunk, monkeypatch):
    """The file is read CHUNK bytes at a time: with chunks far smaller than the records, every
    record header and body is cut somewhere, and the frames, times and counts are still
    libpcap's; a batch's bytes stay as they were while the next batch is read."""
    import uinet_tap.pcapfile as pcapfile

    monkeypatch.setattr(pcapfile, "CHUNK", chunk)
    path = ROOT / "captures" / "http-keepalive.pcap"
    assert path.stat().st_size > 20 * chunk
    assert assert_same(path) > 100
    src = PcapFile(str(path))
    before: tuple[memoryview, bytes] | None = None
    for b in src.batches():
        if before is not None:  # the batch before this one, unchanged
            assert bytes(before[0]) == before[1]
        before = (b.data, bytes(b.data))


def test_a_reader_closed_early_stops_its_read_ahead(monkeypatch):
    """Past the first chunk a thread reads the next one ahead: a reader closed after its
    first batch (a merge that stops, an interrupted run) leaves no thread behind, and the
    batch it gave stays as it was."""
    import threading

    import uinet_tap.pcapfile as pcapfile

    monkeypatch.setattr(pcapfile, "CHUNK", 4096)
    src = PcapFile(str(ROOT / "captures" / "http-keepalive.pcap"))
    batches = src.batches()
    first = next(batches)
    kept = bytes(first.data)
    second = next(batches)  # asked for: the read ahead of the chunk after it is running
    assert second.lengths
    src.close()
    batches.close()
    assert bytes(first.data) == kept
    assert not [t for t in threading.enumerate() if t.name.startswith("pcap-read")]
