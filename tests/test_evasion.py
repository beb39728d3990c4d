"""What the tool records must be what a Linux application read: crafted client segments
(overlaps, RSTs, SYN data, urgent data, window, ACK, PAWS and FIN tricks) were played
against a real Linux receiver by captures/make_evasion.py; captures/evasion/NAME.pcap is
the wire as the server's interface saw it and NAME.json what the server application read
with recv() (schema in captures/README.md, the observed behaviour in
captures/evasion/README.md).

- every committed case is replayed through ``uinet_tap.api.reconstruct`` with the
  ``linux`` overlap policy and its client-to-server stream must equal the bytes read;
- the committed captures are checked with tshark (handshake first, every crafted segment
  present in the order sent, checksums valid);
- a netns test plays a fresh seeded set of random overlap cases against this machine's
  kernel and checks the tool against that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from evasion_cases import named_cases, random_cases  # noqa: E402
from evasionlib import SERVER_PORT, Topology, run_case  # noqa: E402
from frames import write_pcap  # noqa: E402
from netnslib import NetnsSession, netns_available  # noqa: E402

from uinet_tap.api import reconstruct  # noqa: E402

EVASION = TESTS.parent / "captures" / "evasion"
COMMITTED = sorted(p.stem for p in EVASION.glob("*.json"))
LIVE_CASES, LIVE_SEED = 30, 1001
LIVE_BASE_PORT = 45000


def truth_of(name: str) -> dict:
    return json.loads((EVASION / f"{name}.json").read_text())


def read_pcap(path: Path) -> tuple[list[tuple[float, bytes]], int]:
    with path.open("rb") as f:
        r = dpkt.pcap.Reader(f)
        return [(ts, bytes(buf)) for ts, buf in r], r.datalink()


def show(b: bytes) -> str:
    return "".join(chr(x) if 32 <= x < 127 else "." for x in b)


def diff(expected: bytes, got: bytes) -> str:
    """Both streams as ASCII with the first differing offset marked."""
    at = next(
        (i for i, (x, y) in enumerate(zip(expected, got, strict=False)) if x != y),
        min(len(expected), len(got)),
    )
    lo = max(0, at - 40)
    return (
        f"first difference at offset {at} (expected {len(expected)} B, got {len(got)} B)\n"
        f"  expected [{lo}:] {show(expected[lo : lo + 100])!r}\n"
        f"  got      [{lo}:] {show(got[lo : lo + 100])!r}"
    )


def tool_streams(frames: list, linktype: int, truth: dict) -> tuple[bytes, bytes, str]:
    """(c2s, s2c, remark) of the tool's first record for the case's connection."""
    res = reconstruct(frames, linktype, keep_streams=True, overlap_policy="linux")
    mine = [
        r for r in res.records if r["client"] == truth["client"] and r["server"] == truth["server"]
    ]
    if not mine:
        return b"", b"", f"no record for {truth['client']} -> {truth['server']}"
    others = f"; {len(mine) - 1} more record(s) for the tuple" if len(mine) > 1 else ""
    return bytes(mine[0]["c2s"]["data"]), bytes(mine[0]["s2c"]["data"]), others


def mismatch(truth: dict, frames: list, linktype: int) -> str | None:
    """None when the tool's streams equal what the application read, else a report."""
    want_c2s, want_s2c = bytes.fromhex(truth["c2s"]["hex"]), bytes.fromhex(truth["s2c"]["hex"])
    c2s, s2c, remark = tool_streams(frames, linktype, truth)
    errs = []
    if c2s != want_c2s:
        errs.append("c2s " + diff(want_c2s, c2s))
    if s2c != want_s2c:
        errs.append("s2c " + diff(want_s2c, s2c))
    if not errs:
        return None
    oob = f", OOB {truth['oob']}" if truth["oob"] else ""
    return (
        f"{truth['case']}: {truth['description']}\n  Linux {truth['kernel']}: "
        f"read {len(want_c2s)} B{oob}, ended {truth['end']}{remark}\n  " + "\n  ".join(errs)
    )


# --------------------------------------------------------------------------- committed cases


def test_committed_set_is_complete() -> None:
    """Every named case of the catalogue has its capture and truth committed."""
    assert COMMITTED, f"no truths in {EVASION}"
    missing = [c.name for c in named_cases() if c.name not in COMMITTED]
    assert not missing, f"named cases without a committed truth: {missing}"
    assert any(n.startswith("random-") for n in COMMITTED)
    for name in COMMITTED:
        assert (EVASION / f"{name}.pcap").exists(), name


# Cases whose truth the wire cannot tell: the capture of each is the same, byte for byte and
# segment for segment, as that of the case named, whose application read at another moment.
# The tool models an application that reads as data arrives (the named case's truth) and
# counts the ambiguity on the connection.
TIMING_DEPENDENT = {
    # Linux keeps one urgent mark: a second pointer replaces the first unless the
    # application already read past it (tcp_check_urg), which no segment shows.
    "urg-two-segments": ("urg-two-segments-read-between", "urgent_ambiguous"),
}


@pytest.mark.parametrize("name", COMMITTED)
def test_tool_reads_what_linux_read(name: str) -> None:
    truth = truth_of(name)
    frames, linktype = read_pcap(EVASION / truth["capture"])
    if name in TIMING_DEPENDENT:
        twin, anomaly = TIMING_DEPENDENT[name]
        twin_truth = truth_of(twin)
        assert [
            (s["rel"], s["flags"], s.get("ascii"), s.get("urg"))
            for s in truth["sent"]
            if s["kind"] == "segment"
        ] == [
            (s["rel"], s["flags"], s.get("ascii"), s.get("urg"))
            for s in twin_truth["sent"]
            if s["kind"] == "segment"
        ], f"{name} and {twin} no longer send the same segments"
        assert mismatch(truth, frames, linktype) is not None, f"{name} became decidable"
        truth = dict(twin_truth, client=truth["client"], server=truth["server"])
        res = reconstruct(frames, linktype, overlap_policy="linux")
        assert res.records[0]["anomalies"].get(anomaly), f"{name}: {anomaly} not counted"
    problem = mismatch(truth, frames, linktype)
    assert problem is None, problem


TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}
TSHARK_FIELDS = (
    "ip.src",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.flags",
    "tcp.len",
    "tcp.urgent_pointer",
    "tcp.checksum.status",
    "ip.checksum.status",
)


@pytest.fixture(scope="module")
def tshark_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[list[str]]]:
    """tshark's view of every committed capture, by client port (one tshark run over all
    of them concatenated: every case has its own client port)."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    frames: list[tuple[float, bytes]] = []
    for name in COMMITTED:
        frames += read_pcap(EVASION / truth_of(name)["capture"])[0]
    merged = tmp_path_factory.mktemp("evasion") / "all.pcap"
    write_pcap(merged, frames)
    argv = [
        "tshark",
        "-n",
        "-r",
        str(merged),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=,",
    ]
    argv += [w for f in TSHARK_FIELDS for w in ("-e", f)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    by_port: dict[int, list[list[str]]] = {}
    for line in r.stdout.splitlines():
        row = line.split(",")
        port = int(row[1]) if int(row[2]) == SERVER_PORT else int(row[2])
        by_port.setdefault(port, []).append(row)
    return by_port


@pytest.mark.parametrize("name", COMMITTED)
def test_capture_is_sane_for_tshark(name: str, tshark_rows: dict) -> None:
    """Handshake first, every crafted segment on the wire in the order sent (seq, flags,
    length, urgent pointer), IP and TCP checksums good in both directions."""
    truth = truth_of(name)
    client_ip, client_port = truth["client"].rsplit(":", 1)
    rows = tshark_rows[int(client_port)]
    hs = truth["handshake"]
    bad = [r for r in rows if r[7:9] != ["1", "1"]]
    assert not bad, f"checksums not good: {bad}"
    assert [int(r[4], 16) for r in rows[:3]] == [0x02, 0x12, 0x10], rows[:3]
    assert int(rows[0][3]) == hs["client_isn"] and int(rows[1][3]) == hs["server_isn"]
    assert int(rows[0][5]) == len(bytes.fromhex(hs["syn_data_hex"]))
    want = [
        (
            (hs["client_isn"] + 1 + s["rel"]) % 2**32,
            sum(TCP_FLAG_BITS[f] for f in s["flags"]),
            s["len"],
            s.get("urg", 0),
        )
        for s in truth["sent"]
        if s["kind"] == "segment"
    ]
    got = [
        (int(r[3]), int(r[4], 16), int(r[5]), int(r[6] or 0)) for r in rows[3:] if r[0] == client_ip
    ]
    assert got == want, f"client segments on the wire differ from the script:\n{got}\n{want}"


# --------------------------------------------------------------------------- live


@pytest.mark.netns
def test_live_random_cases_match_linux() -> None:
    """A fresh seeded set of random overlap cases against this machine's kernel."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"the live evasion cases need network namespaces: {why}")
    if shutil.which("ethtool") is None:
        pytest.skip("the live evasion cases need ethtool")
    cases = random_cases(LIVE_CASES, LIVE_SEED)
    results = []
    with NetnsSession("evt") as session:
        topo = Topology(session)
        try:
            for i, case in enumerate(cases):
                results.append(run_case(topo, case, LIVE_BASE_PORT + i))
        finally:
            topo.close()
    problems = []
    for (frames, truth), case in zip(results, cases, strict=True):
        # The harness ran the case to its end: every hole filled, the FIN accepted.
        span = max(s + n for s, n, _ in case.params["chunks"])
        assert (truth["end"], truth["c2s"]["bytes"], truth["notes"]) == ("eof", span, []), truth
        problem = mismatch(truth, frames, 1)
        if problem:
            problems.append(problem)
    assert not problems, (
        f"{len(problems)} of {len(cases)} random cases differ from what "
        f"Linux delivered:\n" + "\n".join(problems)
    )
