"""On the public corpus, the detected protocol matches the application protocol the upstream
test states (`app_proto` in each expectation file), wherever it states one.

Protocols outside uinet-tap's set (irc, ftp-data, krb5, ldap) must come out `unknown` (or
guessed by port): the point of sv-irc, for one, is that IRC is not taken for FTP.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from uinet_tap.testing import run_capture

CORPUS = Path(
    os.environ.get("UINET_TAP_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
OURS = {
    "http", "http2", "tls", "ssh", "smtp", "imap", "pop3", "ftp", "redis", "postgresql", "mysql",
    "mqtt", "dns", "socks4", "socks5", "rdp", "smb", "proxy-protocol",
}  # fmt: skip
CASES = sorted(p for p in CORPUS.glob("*.json") if "app_proto" in json.loads(p.read_text()))


@pytest.mark.skipif(not CASES, reason=f"reference corpus not found at {CORPUS}")
@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_detected_protocol_matches_upstream(case: Path):
    spec = json.loads(case.read_text())
    app = spec["app_proto"]
    results = run_capture([], CORPUS / spec["pcap"], builtins=True,
                          ignore_vlan=not spec.get("vlan_key", True))  # fmt: skip
    by_pair: dict[frozenset[str], list] = {}
    for r in results:
        by_pair.setdefault(frozenset((r.client, r.server)), []).append(r)
    problems = []
    for conn in spec["connections"]:
        want = app.get(str(conn["conn"])) if isinstance(app, dict) else app
        if want is None:
            continue
        got_all = by_pair.get(frozenset((conn["client"], conn["server"])), [])
        if len(got_all) <= conn.get("index", 0):
            problems.append(f"{conn['client']} {conn['server']}: no record")
            continue
        got = got_all[conn.get("index", 0)]
        if want in OURS:
            ok = got.protocol == want
        else:  # not a protocol we detect: it must not be claimed as one of ours
            ok = got.protocol == "unknown" or got.confidence == "guessed"
        if not ok:
            problems.append(
                f"{conn['client']} -> {conn['server']}: upstream says {want}, "
                f"got {got.protocol} ({got.confidence}) {got.findings}"
            )
    assert not problems, "\n".join(problems)
