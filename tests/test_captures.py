"""Ground truth from real kernel TCP stacks: run `uinet-tap replay` on every capture shipped
in captures/ and compare its flow records with NAME.expected.json (made by
captures/make_captures.py from what the applications sent and received; schema in
captures/README.md).  One netns test regenerates small scenarios live, so CI proves the
generator still works.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from netnslib import netns_available  # noqa: E402

REPO = TESTS.parent
CAPTURES = REPO / "captures"
MAKE = CAPTURES / "make_captures.py"
SHIPPED = [
    "bulk-both-ways",
    "http-keepalive",
    "many-short",
    "ipv6",
    "reset-midtransfer",
    "impaired-bridge",
    "tap-loss",
    "vlan",
    "qinq",
    "offload-supersegments",
]


def tool_argv() -> list[str]:
    exe = Path(sys.executable).parent / "uinet-tap"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "uinet_tap"]


def run_replay(pcap: Path, extra: list[str], tmp_path: Path) -> list[dict]:
    flows = tmp_path / f"{pcap.stem}.flows.jsonl"
    argv = [*tool_argv(), "replay", str(pcap), "--flows", str(flows), "-q", *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}: {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    return [json.loads(line) for line in flows.read_text().splitlines() if line.strip()]


def regenerate(gen: dict, size: int) -> bytes:
    if gen["kind"] == "shake256":
        return hashlib.shake_256(gen["key"].encode()).digest(size)
    raise AssertionError(f"unknown content generator {gen}")


def check_direction(where: str, exp: dict, got: dict) -> list[str]:
    errs = []
    gbytes, gsha, ggaps = got.get("bytes"), got.get("sha256"), got.get("gaps")
    if "bytes" in exp and gbytes != exp["bytes"]:
        errs.append(f"{where}: bytes {gbytes} != expected {exp['bytes']}")
    if "sha256" in exp and gsha != exp["sha256"]:
        errs.append(f"{where}: sha256 {gsha} != expected {exp['sha256']}")
    if "gaps" in exp and [list(g) for g in (ggaps or [])] != exp["gaps"]:
        errs.append(f"{where}: gaps {ggaps} != expected {exp['gaps']}")
    if "min_bytes" in exp and (gbytes is None or gbytes < exp["min_bytes"]):
        errs.append(f"{where}: bytes {gbytes} < min_bytes {exp['min_bytes']}")
    if "prefix_of" in exp:
        p = exp["prefix_of"]
        data = regenerate(p["generator"], p["bytes"])
        assert hashlib.sha256(data).hexdigest() == p["sha256"], f"{where}: bad expectation"
        if gbytes is None or gbytes > len(data):
            errs.append(f"{where}: bytes {gbytes} longer than the {len(data)} B sent")
        elif hashlib.sha256(data[:gbytes]).hexdigest() != gsha:
            errs.append(f"{where}: the {gbytes} B stream is not a prefix of the sent content")
    return errs


def check_records(expected: dict, records: list[dict]) -> list[str]:
    def key(c):
        return (c["client"], c["server"], tuple(c.get("vlan", [])))

    errs = []
    got: dict[tuple, dict] = {}
    for r in records:
        k = key(r)
        if k in got:
            errs.append(f"connection reported twice: {k}")
        got[k] = r
    want = {key(c): c for c in expected["connections"]}
    for k in sorted(set(got) - set(want)):
        errs.append(f"unexpected connection {k} (close={got[k].get('close')})")
    for k in sorted(set(want) - set(got)):
        errs.append(f"missing connection {k}")
    for k in sorted(set(want) & set(got)):
        e, r = want[k], got[k]
        name = f"{k[0]} -> {k[1]} vlan={list(k[2])}"
        for field in ("close", "midstream"):
            if field in e and r.get(field) != e[field]:
                errs.append(f"{name}: {field} {r.get(field)!r} != expected {e[field]!r}")
        for d in ("c2s", "s2c"):
            if d in e:
                errs.extend(check_direction(f"{name} {d}", e[d], r.get(d, {})))
    return errs


def check_capture(exp_path: Path, tmp_path: Path) -> None:
    expected = json.loads(exp_path.read_text())
    pcap = exp_path.parent / expected["capture"]
    records = run_replay(pcap, expected.get("replay_args", []), tmp_path)
    errs = check_records(expected, records)
    assert not errs, f"{pcap.name} ({expected['how'][:200]}...):\n  " + "\n  ".join(errs)


def test_capture_set_complete():
    missing = [
        n
        for n in SHIPPED
        if not (CAPTURES / f"{n}.pcap").exists() or not (CAPTURES / f"{n}.expected.json").exists()
    ]
    hint = f"regenerate with `sudo .venv/bin/python {MAKE.relative_to(REPO)}`"
    assert not missing, f"{hint}: {missing}"
    total = sum((CAPTURES / f"{n}.pcap").stat().st_size for n in SHIPPED)
    assert total < 15 << 20, f"captures too large: {total} B"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_capture(name: str, tmp_path: Path):
    exp = CAPTURES / f"{name}.expected.json"
    if not exp.exists():
        pytest.fail(f"{exp} missing: run captures/make_captures.py as root")
    check_capture(exp, tmp_path)


@pytest.mark.netns
def test_regenerate_live(tmp_path: Path):
    """make_captures.py still produces valid captures from real kernel TCP (small sizes):
    the seeded impairing bridge, the tap-loss copy and QinQ push/pop."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"live capture regeneration: {why}")
    for prog in ("tcpdump", "ethtool", "socat", "curl"):
        if shutil.which(prog) is None:
            pytest.skip(f"live capture regeneration needs `{prog}` (Debian package)")
    names = ["impaired-bridge", "tap-loss", "qinq"]
    argv = [sys.executable, str(MAKE), "--small", "--out", str(tmp_path)]
    for n in names:
        argv += ["--only", n]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, f"make_captures.py failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    for n in names:
        check_capture(tmp_path / f"{n}.expected.json", tmp_path)
