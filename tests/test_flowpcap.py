"""Per-connection pcaps (--export-pcap, --pcap-for; uinet_tap/flowpcap.py): each file holds its
connection's frames and nothing else, so replaying it alone gives that connection's record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_cli_input import assert_one_line_error, cli  # noqa: E402

from uinet_tap.engine import Engine, Options
from uinet_tap.flowpcap import FlowPcaps, SelectorError, parse_selector
from uinet_tap.inputs import Capture

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
EXE = Path(sys.executable).parent / "uinet-tap"
# What a connection's record says that depends on the rest of the capture, not on its frames.
CONTEXT = {"id", "pcap"}


def replay(*args: object) -> list[dict]:
    p = subprocess.run(
        [str(EXE), "replay", "-q", "--flows", "-", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def alone(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in CONTEXT}


@pytest.mark.parametrize(
    "captures",
    [
        ["many-short.pcap"],
        ["impaired-bridge.pcap"],
        ["tap-loss.pcap"],
        ["ipv6.pcap", "qinq.pcap", "app/tls13.pcap", "app/http.pcap"],
    ],
)
def test_each_connections_file_replays_to_its_record(tmp_path: Path, captures: list[str]):
    out = tmp_path / "pcaps"
    recs = replay("--export-pcap", out, *[CAPTURES / c for c in captures])
    assert recs
    files = sorted(p.name for p in out.iterdir())
    assert sorted(r["pcap"] for r in recs) == files  # one file per connection, each named
    for rec in recs:
        (own,) = replay(out / rec["pcap"])
        assert alone(own) == alone(rec), rec["pcap"]
        assert (
            own["c2s"]["packets"] + own["s2c"]["packets"]
            == rec["c2s"]["packets"] + rec["s2c"]["packets"]
        )
    # The export changes no record.
    assert [alone(r) for r in recs] == [alone(r) for r in replay(*[CAPTURES / c for c in captures])]


def test_pcap_for_keeps_only_matching_connections(tmp_path: Path):
    out = tmp_path / "pcaps"
    caps = [CAPTURES / "app" / n for n in ("http.pcap", "tls13.pcap", "ssh.pcap")]
    recs = replay("--export-pcap", out, "--pcap-for", "proto:tls port:443", *caps)
    kept = [r for r in recs if "pcap" in r]
    assert [r["protocol"] for r in kept] == ["tls"]
    assert [p.name for p in out.iterdir()] == [kept[0]["pcap"]]
    recs = replay("--export-pcap", out / "b", "--pcap-for", "!proto:tls", *caps)
    assert sorted(r["protocol"] for r in recs if "pcap" in r) == ["http", "ssh"]


@pytest.mark.parametrize(
    "expr, protocols",
    [
        ("host:10.77.0.0/24", ["http", "ssh", "tls"]),
        ("host:example.test", ["tls"]),  # the SNI
        ("host:*.nowhere", []),
        ("verdict:pass port:80", ["http"]),
    ],
)
def test_selector_terms(expr: str, protocols: list[str]):
    keep = parse_selector(expr)
    caps = [CAPTURES / "app" / n for n in ("http.pcap", "tls13.pcap", "ssh.pcap")]
    recs = replay(*caps)
    assert sorted(r["protocol"] for r in recs if keep(r)) == protocols


@pytest.mark.parametrize("expr", ["", "proto", "color:red", "port:http", "port:70000"])
def test_bad_selectors(expr: str):
    with pytest.raises(SelectorError):
        parse_selector(expr)


def test_bad_options_are_one_line_errors(tmp_path: Path):
    cap = CAPTURES / "vlan.pcap"
    assert_one_line_error(cli("--pcap-for", "proto:tls", cap))
    p = cli("--export-pcap", tmp_path / "x", "--pcap-for", "color:red", cap)
    assert_one_line_error(p)
    assert "color:red" in p.stderr


def test_open_files_are_bounded(tmp_path: Path):
    """40 connections, at most 3 files open: files are reopened to append, none is cut."""
    out = tmp_path / "pcaps"
    out.mkdir()
    pcaps = FlowPcaps(out, max_open=3)
    recs: list[dict] = []
    source = Capture([str(CAPTURES / "many-short.pcap")])
    engine = Engine(source.linktype, Options(), recs.append, flow_pcaps=pcaps)
    for batch in source.batches():
        engine.feed_batch(batch)
        assert len(pcaps._open) <= 3
    engine.finish()
    assert len(recs) == 40 and len(list(out.iterdir())) == 40
    for rec in recs:
        (own,) = replay(out / rec["pcap"])
        assert own["c2s"]["sha256"] == rec["c2s"]["sha256"]
        assert own["s2c"]["sha256"] == rec["s2c"]["sha256"]
