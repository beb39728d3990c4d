"""Protocol detection on REAL application traffic: for every captures/app/NAME.expected.json
(made by captures/make_app_captures.py from real clients and servers talking between
network namespaces), run `uinet-tap replay NAME.pcap --flows F -q` and check that every
expected connection is reported with the expected `protocol` and that each expected
finding key has the expected value (records may carry more findings than listed).
`alternatives` in an expectation lists other accepted values for a key (e.g. a cipher as
"0x1302" or its IANA name, MariaDB's version with or without the "5.5.5-" prefix).

One netns test regenerates two cheap scenarios live, so CI proves the generator works.
"""

from __future__ import annotations

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
APP = REPO / "captures" / "app"
MAKE = REPO / "captures" / "make_app_captures.py"
EXPECTED = sorted(APP.glob("*.expected.json"))
CONTRACT_PROTOCOLS = {
    "http",
    "http2",
    "tls",
    "ssh",
    "smtp",
    "imap",
    "pop3",
    "ftp",
    "redis",
    "postgresql",
    "mysql",
    "mqtt",
    "dns",
    "socks4",
    "socks5",
    "rdp",
    "smb",
    "proxy-protocol",
}
LIVE = ["http", "redis-on-8080"]


def tool_argv() -> list[str]:
    exe = Path(sys.executable).parent / "uinet-tap"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "uinet_tap"]


def replay(pcap: Path, tmp_path: Path) -> list[dict]:
    flows = tmp_path / f"{pcap.stem}.flows.jsonl"
    argv = [*tool_argv(), "replay", str(pcap), "--flows", str(flows), "-q"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}: {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    return [json.loads(line) for line in flows.read_text().splitlines() if line.strip()]


def check(expected: dict, records: list[dict]) -> list[str]:
    errs = []
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by_key.setdefault((r.get("client"), r.get("server")), []).append(r)
    for c in expected["connections"]:
        name = f"{c['client']} -> {c['server']}"
        got = by_key.get((c["client"], c["server"]))
        if not got:
            errs.append(f"{name}: connection missing (have {sorted(by_key)})")
            continue
        r = got[0]
        if r.get("protocol") != c["protocol"]:
            errs.append(
                f"{name}: protocol {r.get('protocol')!r} != {c['protocol']!r} "
                f"(confidence {r.get('confidence')!r}, findings {r.get('findings')})"
            )
        findings = r.get("findings") or {}
        alts = c.get("alternatives", {})
        for k, v in c.get("findings", {}).items():
            if k not in findings:
                errs.append(f"{name}: finding {k!r} missing (expected {v!r}; have {findings})")
            elif findings[k] != v and findings[k] not in alts.get(k, []):
                ok = [v, *alts.get(k, [])]
                errs.append(
                    f"{name}: finding {k!r} = {findings[k]!r}, expected "
                    f"{ok[0]!r}" + (f" (or one of {ok[1:]})" if ok[1:] else "")
                )
    return errs


def check_file(exp_path: Path, tmp_path: Path) -> None:
    expected = json.loads(exp_path.read_text())
    records = replay(exp_path.parent / expected["capture"], tmp_path)
    errs = check(expected, records)
    assert not errs, f"{expected['capture']} ({expected['how'][:300]}...):\n  " + "\n  ".join(errs)


def test_app_capture_set():
    assert EXPECTED, f"no captures in {APP}: run `sudo .venv/bin/python {MAKE}`"
    total = 0
    for e in EXPECTED:
        exp = json.loads(e.read_text())
        pcap = APP / exp["capture"]
        assert pcap.exists(), f"{pcap} missing"
        total += pcap.stat().st_size
        assert exp["connections"], e.name
        for c in exp["connections"]:
            assert c["protocol"] in CONTRACT_PROTOCOLS, (e.name, c["protocol"])
            json.dumps(c["findings"])
    assert total < 5 << 20, f"app captures too large: {total} B"


@pytest.mark.parametrize(
    "exp_path", EXPECTED, ids=[p.name[: -len(".expected.json")] for p in EXPECTED]
)
def test_app_capture(exp_path: Path, tmp_path: Path):
    check_file(exp_path, tmp_path)


@pytest.mark.netns
def test_regenerate_app_captures_live(tmp_path: Path):
    """make_app_captures.py still works with the installed software (two cheap scenarios),
    and the tool detects what it captured."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"live app capture regeneration: {why}")
    try:
        import dpkt  # noqa: F401
    except ImportError:
        pytest.skip("live app capture regeneration needs dpkt")
    for prog in ("tcpdump", "ethtool", "tshark", "curl", "redis-server", "redis-cli"):
        if shutil.which(prog) is None:
            pytest.skip(f"live app capture regeneration needs `{prog}` (Debian package)")
    argv = [sys.executable, str(MAKE), "--out", str(tmp_path)]
    for n in LIVE:
        argv += ["--only", n]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"make_app_captures.py failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    for n in LIVE:
        check_file(tmp_path / f"{n}.expected.json", tmp_path)
