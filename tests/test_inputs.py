"""What replay reads (uinet_tap/inputs.py): rotated and compressed sets, stdin, several files
in time order, and a BPF filter, each checked against the records of the one plain file they
were made from (or, for the filter, of tcpdump's own selection)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_cli_input import assert_one_line_error, cli  # noqa: E402

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
SOURCE = CAPTURES / "many-short.pcap"  # 40 connections, one after another and overlapping
COMPRESS = {
    "gz": gzip.compress,
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": lambda b: zstandard.ZstdCompressor().compress(b),
}


def records(*args: object, stdin: bytes | None = None) -> bytes:
    exe = Path(sys.executable).parent / "uinet-tap"
    p = subprocess.run(
        [str(exe), "replay", "-q", "--flows", "-", *map(str, args)],
        capture_output=True,
        input=stdin if stdin is not None else b"",
        timeout=120,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.count(b"\n") > 0
    return p.stdout


def pcap_records(data: bytes) -> tuple[bytes, list[bytes]]:
    """A classic pcap's file header and its records (header and frame), as written."""
    head, pos, out = data[:24], 24, []
    while pos < len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        out.append(data[pos : pos + 16 + caplen])
        pos += 16 + caplen
    return head, out


@pytest.fixture(scope="module")
def truth() -> bytes:
    return records(SOURCE)


@pytest.mark.parametrize("kind", COMPRESS)
def test_a_compressed_capture_reads_as_the_plain_one(tmp_path: Path, truth: bytes, kind: str):
    path = tmp_path / f"capture.pcap.{kind}"
    path.write_bytes(COMPRESS[kind](SOURCE.read_bytes()))
    assert records(path) == truth


def test_the_format_is_told_by_its_magic_not_its_name(tmp_path: Path, truth: bytes):
    path = tmp_path / "capture.pcap"  # gzip inside, a plain name outside
    path.write_bytes(gzip.compress(SOURCE.read_bytes()))
    assert records(path) == truth


def test_stdin(truth: bytes):
    assert records("-", stdin=SOURCE.read_bytes()) == truth
    assert records("-", stdin=gzip.compress(SOURCE.read_bytes())) == truth


def test_a_rotated_gzip_set_as_a_directory_reads_as_the_file_it_was_cut_from(
    tmp_path: Path, truth: bytes
):
    """Cut as tcpdump -C does (consecutive records per file), each file gzipped; connections
    span the cuts. Given as a directory and as files in reverse order: the same records."""
    head, recs = pcap_records(SOURCE.read_bytes())
    parts = tmp_path / "rotated"
    parts.mkdir()
    step = 97  # cuts inside handshakes, inside data, inside closes
    files = []
    for n, i in enumerate(range(0, len(recs), step)):
        f = parts / f"capture.pcap{n or ''}.gz"  # tcpdump -C -z gzip names: file, file1, ...
        f.write_bytes(gzip.compress(head + b"".join(recs[i : i + step])))
        files.append(f)
    assert len(files) > 10
    assert records(parts) == truth
    assert records(*reversed(files)) == truth


def test_rotated_pcapng_files_cut_by_editcap(tmp_path: Path, truth: bytes):
    """editcap writes pcapng: the same packets give the same times, so the same records."""
    if shutil.which("editcap") is None:
        pytest.skip("editcap (tshark's package) is not installed")
    subprocess.run(["editcap", "-c", "150", str(SOURCE), str(tmp_path / "part.pcapng")], check=True)
    assert len(list(tmp_path.iterdir())) > 5
    assert records(tmp_path) == truth


def test_files_overlapping_in_time_are_merged_frame_by_frame(tmp_path: Path, truth: bytes):
    """Frames dealt alternately to two files (as from two taps of one link): each file alone
    is a mess of half connections; together, merged by time, the original capture."""
    head, recs = pcap_records(SOURCE.read_bytes())
    # Frames of one capture time stay together (which of two taps saw a tie first, no file
    # says); the runs of times alternate between the files.
    sides: list[list[bytes]] = [[], []]
    side, last = 1, None
    for r in recs:
        t = struct.unpack_from("<II", r)
        if t != last:
            side, last = 1 - side, t
        sides[side].append(r)
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    a.write_bytes(head + b"".join(sides[0]))
    b.write_bytes(gzip.compress(head + b"".join(sides[1])))
    assert records(a, b) == truth
    assert records(b, a) == truth
    assert records(a) != truth


def test_many_inputs_are_not_all_held_open(tmp_path: Path, truth: bytes):
    """300 rotated files under a limit of 64 open descriptors: inputs are opened as the merge
    reaches them."""
    head, recs = pcap_records(SOURCE.read_bytes())
    step = -(-len(recs) // 300)
    for n, i in enumerate(range(0, len(recs), step)):
        (tmp_path / f"p{n:04d}.pcap").write_bytes(head + b"".join(recs[i : i + step]))
    assert len(list(tmp_path.iterdir())) >= 200
    exe = Path(sys.executable).parent / "uinet-tap"
    p = subprocess.run(
        ["sh", "-c", f'ulimit -n 64 && exec "{exe}" replay -q --flows - "{tmp_path}"'],
        capture_output=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == truth


@pytest.mark.parametrize(
    "expr",
    [
        "tcp port 42001 or tcp port 42007",
        "not (tcp port 42001 or tcp port 42002) and tcp[tcpflags] & tcp-fin == 0",
    ],
)
def test_filter_keeps_what_tcpdump_keeps(tmp_path: Path, expr: str):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    kept = tmp_path / "kept.pcap"
    subprocess.run(["tcpdump", "-r", str(SOURCE), "-w", str(kept), expr], check=True,
                   capture_output=True)  # fmt: skip
    assert records("--filter", expr, SOURCE) == records(kept)


def test_a_compressed_capture_cut_short_keeps_what_was_read(tmp_path: Path, truth: bytes):
    whole = lzma.compress(SOURCE.read_bytes())
    path = tmp_path / "cut.pcap.xz"
    path.write_bytes(whole[: len(whole) // 3])
    p = cli("-q", "--flows", tmp_path / "out.jsonl", path)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith(f"warning: {path} is truncated")
    got = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert 0 < len(got) < len(truth.splitlines())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--filter", "tcp portt 80", SOURCE], "--filter 'tcp portt 80'"),
        ([SOURCE, "-"], "stdin must be the only input"),
        (["EMPTYDIR"], "a directory with no files in it"),
        (["NOTPCAP.gz"], "is not a pcap or pcapng capture (gzip-compressed data)"),
        ([SOURCE, "NOTPCAP.gz"], "is not a pcap or pcapng capture (gzip-compressed data)"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, args: list, message: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notpcap.gz").write_bytes(gzip.compress(b"hello, not a capture\n" * 10))
    names = {"EMPTYDIR": tmp_path / "empty", "NOTPCAP.gz": tmp_path / "notpcap.gz"}
    p = cli(*[names.get(a, a) if isinstance(a, str) else a for a in args])
    assert_one_line_error(p)
    assert message in p.stderr
