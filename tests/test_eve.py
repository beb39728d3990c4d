"""Suricata-EVE output (uinet_tap/eve.py): exact events for records the real tool writes on the
shipped captures, and a field-by-field comparison with Suricata 7's own EVE on the same
captures (skipped when `suricata` 7 is not on PATH).

The comparison matches flows by community_id (so it also checks our Community ID against
Suricata's), pairs application events per flow, and compares every field our event carries,
except the deliberate differences the module docstring of uinet_tap/eve.py lists; those are
checked for their documented relation instead (e.g. payload bytes <= Suricata's frame bytes).
Run with `-s` to see the agreement table.
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from test_app_captures import replay  # noqa: E402

from uinet_tap.eve import (  # noqa: E402
    FLOW_ID_BITS,
    EveWriter,
    eve_events,
    flow_id,
    iso_time,
    split_host,
    ssh_side,
)

CAPTURES = TESTS.parent / "captures"
APP = CAPTURES / "app"

Records = Callable[[str], list[dict]]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Records:
    """``records("app/http")``: the flow records of captures/app/http.pcap (replayed once)."""
    cache: dict[str, list[dict]] = {}
    out = tmp_path_factory.mktemp("flows")

    def get(name: str) -> list[dict]:
        if name not in cache:
            pcap = CAPTURES / f"{name}.pcap"
            workdir = out / name.replace("/", "_")
            workdir.mkdir()
            cache[name] = replay(pcap, workdir)
        return cache[name]

    return get


def one(records: Records, name: str) -> dict:
    recs = records(name)
    assert len(recs) == 1, recs
    return recs[0]


def by_type(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ev in events:
        out.setdefault(ev["event_type"], []).append(ev)
    return out


# --- events of real records ---------------------------------------------------------------


def test_http_events_exact(records: Records) -> None:
    rec = one(records, "app/http")
    http, flow = eve_events(rec)
    fid = flow_id(rec)
    common = {
        "flow_id": fid,
        "src_ip": "10.77.0.1",
        "src_port": 41000,
        "dest_ip": "10.77.0.2",
        "dest_port": 80,
        "proto": "TCP",
        "community_id": "1:+GMfHrYWBEVA7y+D8KAmEDzmWvE=",
    }
    assert http == {
        "timestamp": "2026-11-27T02:05:41.377311+0000",
        "event_type": "http",
        **common,
        "tx_id": 0,
        "http": {
            "hostname": "10.77.0.2",
            "url": "/hello.txt",
            "http_user_agent": "curl/7.88.1 uinet-tap",
            "http_method": "GET",
            "protocol": "HTTP/1.1",
            "status": 200,
            "length": 34,
        },
    }
    uinet = flow.pop("uinet_tap")
    assert flow == {
        "timestamp": "2026-11-27T02:05:41.399891+0000",  # the flow's last packet
        "event_type": "flow",
        **common,
        "app_proto": "http",
        "flow": {
            "pkts_toserver": 6,
            "pkts_toclient": 6,
            "bytes_toserver": 92,
            "bytes_toclient": 220,
            "start": "2026-11-27T02:05:41.377311+0000",
            "end": "2026-11-27T02:05:41.399891+0000",
            "age": 0,
            "state": "closed",
            "reason": "timeout",
            "alerted": False,
        },
        "tcp": {"syn": True, "fin": True, "ack": True},
    }
    assert uinet["id"] == 0 and uinet["verdict"] == "pass" and uinet["decided_by"] == "default"
    assert uinet["bypassed"] is False and uinet["protocol"] == "http"
    assert uinet["c2s"]["sha256"] == rec["c2s"]["sha256"] and uinet["s2c"]["gaps"] == []
    assert uinet["anomalies"] == {} and uinet["findings"] == rec["findings"]


def test_flow_id_stable_and_in_range(records: Records) -> None:
    rec = one(records, "app/http")
    fid = flow_id(rec)
    assert 0 < fid < 2**FLOW_ID_BITS
    assert fid == flow_id(dict(rec)) == flow_id(one(records, "app/http"))
    assert flow_id({**rec, "vlan": [7]}) != fid
    assert flow_id({**rec, "start": rec["start"] + 1e-6}) != fid


def test_http_ipv6_and_host_port(records: Records) -> None:
    http, flow = eve_events(one(records, "app/http-ipv6"))
    # Suricata 7 writes IPv6 addresses fully expanded; libhtp keeps the brackets.
    assert flow["src_ip"] == "fd00:0077:0000:0000:0000:0000:0000:0001"
    assert flow["dest_ip"] == "fd00:0077:0000:0000:0000:0000:0000:0002"
    assert http["http"]["hostname"] == "[fd00:77::2]" and "http_port" not in http["http"]
    *https, _ = eve_events(one(records, "http-keepalive"))
    assert [h["tx_id"] for h in https] == [0, 1, 2]  # one event per keep-alive transaction
    assert [h["http"]["url"] for h in https] == ["/a.bin", "/b.txt", "/c.bin"]
    assert [h["http"]["length"] for h in https] == [50000, 3610, 200000]
    for h in https:
        assert h["http"]["hostname"] == "10.99.0.2" and h["http"]["http_port"] == 8080


def test_http2_event(records: Records) -> None:
    http, flow = eve_events(one(records, "app/http2"))
    assert flow["app_proto"] == "http2" and "tx_id" not in http
    assert http["http"] == {
        "version": "2",
        "hostname": "10.77.0.2",
        "url": "/hello.txt",
        "http_user_agent": "curl/7.88.1",
        "http_method": "GET",
        "status": 200,
    }


@pytest.mark.parametrize(
    "name, version, ja3, ja4",
    [
        (
            "app/tls13",
            "TLS 1.3",
            "5a1edc7f170af1014fc65c994878e63c",
            "t13d3111h2_e8f1e7e78f70_1f22a2ca17c4",
        ),
        (
            "app/tls12",
            "TLS 1.2",
            "22558766122974704364c9c75c5cce0a",
            "t12d2808h2_d943125447b4_e7e480e5a997",
        ),
    ],
)
def test_tls_event(records: Records, name: str, version: str, ja3: str, ja4: str) -> None:
    tls, flow = eve_events(one(records, name))
    assert tls["event_type"] == "tls" and "tx_id" not in tls  # Suricata's tls has none
    assert tls["tls"] == {
        "sni": "example.test",
        "version": version,
        "ja3": {"hash": ja3},
        "ja4": ja4,
    }
    assert flow["app_proto"] == "tls" and flow["dest_port"] == 443


@pytest.mark.parametrize("name", ["app/ssh", "app/ssh-on-443"])
def test_ssh_event(records: Records, name: str) -> None:
    ssh, flow = eve_events(one(records, name))
    side = {"proto_version": "2.0", "software_version": "OpenSSH_9.2p1"}
    assert ssh["ssh"] == {"client": side, "server": side} and ssh["tx_id"] == 0
    assert flow["app_proto"] == "ssh"


def test_ftp_greeting_is_transaction_zero(records: Records) -> None:
    ftp, flow = eve_events(one(records, "app/ftp"))
    assert ftp["tx_id"] == 0
    assert ftp["ftp"] == {
        "completion_code": ["220"],
        "reply": ["pyftpdlib 2.2.0 ready."],
        "reply_received": "yes",
    }
    assert flow["app_proto"] == "ftp"


def test_smtp_has_flow_only(records: Records) -> None:
    events = eve_events(one(records, "app/smtp"))
    assert [e["event_type"] for e in events] == ["flow"]
    assert events[0]["app_proto"] == "smtp"
    assert events[0]["uinet_tap"]["findings"] == {"greeting": "220 localhost Python SMTP 1.4.6"}


def test_dns_query_event(records: Records) -> None:
    dns, flow = eve_events(one(records, "app/dns"))
    assert dns["dns"] == {
        "version": 2,
        "type": "query",
        "rrname": "example.test",
        "rrtype": "A",
        "tx_id": 0,
    }
    assert flow["app_proto"] == "dns"


@pytest.mark.parametrize("name, vlan", [("vlan", [100]), ("qinq", [300, 400]), ("ipv6", None)])
def test_unknown_protocol_flows(records: Records, name: str, vlan: list[int] | None) -> None:
    (flow,) = eve_events(one(records, name))
    assert flow.get("vlan") == vlan  # only when tagged, outermost first
    assert list(flow).index("vlan" if vlan else "src_ip") == 3  # Suricata's place for it
    assert flow["app_proto"] == "failed"
    assert flow["uinet_tap"]["protocol"] == "unknown"


def test_writer_lines_and_counts(records: Records) -> None:
    buf = io.BytesIO()
    write = EveWriter(buf)
    for name in ("app/http", "app/tls13", "vlan"):
        for rec in records(name):
            write(rec)
    lines = buf.getvalue().split(b"\n")
    assert lines[-1] == b"" and all(b": " not in ln and b", " not in ln for ln in lines)
    events = [json.loads(ln) for ln in lines[:-1]]
    assert [e["event_type"] for e in events] == ["http", "flow", "tls", "flow", "flow"]
    assert write.counts == Counter(http=1, tls=1, flow=3)


# --- events of synthetic records (cases the captures do not cover) -------------------------


def synthetic(**over: Any) -> dict:
    side = {"packets": 3, "payload_bytes": 10, "gap_count": 0, "gaps": [], "sha256": None}
    rec = {
        "id": 4,
        "timestamp": "2026-01-01T00:00:00.000000+0000",
        "client": "192.0.2.1:40000",
        "server": "192.0.2.2:80",
        "community_id": "1:x",
        "midstream": False,
        "handshake": True,
        "vlan": [],
        "start": 1767225600.0,
        "end": 1767225601.5,
        "close": "fin",
        "c2s": dict(side),
        "s2c": dict(side),
        "anomalies": {},
        "protocol": "http",
        "confidence": "detected",
        "findings": {},
    }
    rec.update(over)
    return rec


def flow_of(rec: dict) -> dict:
    return eve_events(rec)[-1]


@pytest.mark.parametrize(
    "close, handshake, state, reason",
    [
        ("fin", True, "closed", "timeout"),
        ("rst", True, "closed", "timeout"),
        ("timeout", True, "established", "timeout"),
        ("timeout", False, "new", "timeout"),
        ("eof", True, "established", "shutdown"),
        ("evicted", True, "established", "forced"),
    ],
)
def test_state_and_reason(close: str, handshake: bool, state: str, reason: str) -> None:
    flow = flow_of(synthetic(close=close, handshake=handshake))["flow"]
    assert (flow["state"], flow["reason"]) == (state, reason)
    assert flow["age"] == 1


def test_tcp_object_claims_only_what_is_known() -> None:
    tcp = flow_of(synthetic(close="rst"))["tcp"]
    assert tcp == {"syn": True, "rst": True, "ack": True, "state": "closed"}
    gappy = {"packets": 3, "payload_bytes": 10, "gap_count": 2, "gaps": [[0, 5]]}
    tcp = flow_of(synthetic(close="eof", midstream=True, handshake=False, c2s=gappy))["tcp"]
    assert tcp == {"ts_gap": True}


def test_app_proto_mapping() -> None:
    assert flow_of(synthetic(protocol="postgresql"))["app_proto"] == "pgsql"
    assert flow_of(synthetic(protocol="redis"))["app_proto"] == "failed"  # no Suricata 7 parser
    assert flow_of(synthetic(confidence="guessed"))["app_proto"] == "failed"
    quiet = {"packets": 1, "payload_bytes": 0, "gap_count": 0}
    # Suricata is still waiting while one side is silent: no app_proto yet.
    assert "app_proto" not in flow_of(synthetic(protocol="unknown", s2c=quiet))
    assert flow_of(synthetic(protocol="unknown"))["app_proto"] == "failed"
    no_inspection = synthetic()
    for key in ("protocol", "confidence", "findings"):
        del no_inspection[key]
    assert [e["event_type"] for e in eve_events(no_inspection)] == ["flow"]
    assert "app_proto" not in flow_of(no_inspection)


def test_transactions_give_one_http_event_each() -> None:
    txs = [
        {"method": "GET", "host": "a.test", "path": "/1", "status": 200, "length": 5},
        {"method": "POST", "host": "A.test.:8080", "path": "/2", "protocol": "HTTP/1.1"},
    ]
    rec = synthetic(findings={"method": "GET", "path": "/1"}, transactions=txs)
    events = eve_events(rec)
    assert [e["event_type"] for e in events] == ["http", "http", "flow"]
    assert [e["tx_id"] for e in events[:2]] == [0, 1]
    assert events[0]["http"] == {
        "hostname": "a.test",
        "url": "/1",
        "http_method": "GET",
        "status": 200,
        "length": 5,
    }
    assert events[1]["http"] == {
        "hostname": "a.test",
        "http_port": 8080,
        "url": "/2",
        "http_method": "POST",
        "protocol": "HTTP/1.1",
    }
    assert [e["event_type"] for e in eve_events(synthetic(transactions=[]))] == ["flow"]


def test_tls_version_spelling() -> None:
    names = {"TLS 1.0": "TLSv1", "SSL 3.0": "SSLv3", "TLS 1.1": "TLS 1.1", "0x7f1c": "0x7f1c"}
    for ours, theirs in names.items():
        rec = synthetic(protocol="tls", findings={"tls_version": ours})
        assert eve_events(rec)[0]["tls"] == {"version": theirs}
    assert eve_events(synthetic(protocol="tls", findings={"alpn": ["h2"]}))[0]["event_type"] == (
        "flow"
    )


def test_helpers() -> None:
    assert split_host("[::1]:8443") == ("[::1]", 8443)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("Example.COM.") == ("example.com", None)
    assert split_host("host:http") == ("host:http", None)
    assert ssh_side("SSH-1.99-Cisco-1.25") == {
        "proto_version": "1.99",
        "software_version": "Cisco-1.25",
    }
    assert ssh_side("not ssh") == {}
    assert iso_time(1767225600.9999996) == "2026-01-01T00:00:01.000000+0000"
    assert iso_time(1795745141.377311) == "2026-11-27T02:05:41.377311+0000"


def test_ftp_and_dns_edge_cases() -> None:
    assert eve_events(synthetic(protocol="ftp", findings={"greeting": "hello"}))[0][
        "event_type"
    ] == ("flow")
    rec = synthetic(protocol="dns", findings={"queries": ["a.test AAAA", "b.test TYPE65534"]})
    dns = [e["dns"] for e in eve_events(rec)[:-1]]
    assert [(d["rrname"], d["rrtype"], d["tx_id"]) for d in dns] == [
        ("a.test", "AAAA", 0),
        ("b.test", "65534", 1),
    ]


# --- comparison with Suricata 7 ------------------------------------------------------------

SURICATA = shutil.which("suricata")
COMPARED = [
    "app/http",
    "app/http-ipv6",
    "app/http2",
    "app/tls12",
    "app/tls13",
    "app/ssh",
    "app/ssh-on-443",
    "app/smtp",
    "app/ftp",
    "app/dns",
    "http-keepalive",
    "vlan",
    "qinq",
    "ipv6",
]

SURICATA_CONFIG = """%YAML 1.1
---
default-log-dir: .
stats:
  enabled: no
pcap-file:
  checksum-checks: no
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: eve.json
      community-id: true
      community-id-seed: 0
      types:
        - flow
        - http:
            extended: yes
        - http2
        - tls:
            extended: yes
            ja4: on
        - ssh
        - smtp
        - ftp
        - dns
app-layer:
  protocols:
    tls:
      enabled: yes
      detection-ports:
        dp: 443
      ja3-fingerprints: yes
      ja4-fingerprints: yes
    http:
      enabled: yes
    http2:
      enabled: yes
    ssh:
      enabled: yes
    smtp:
      enabled: yes
    ftp:
      enabled: yes
    dns:
      tcp:
        enabled: yes
        detection-ports:
          dp: 53
logging:
  default-log-level: warning
  outputs:
    - console:
        enabled: yes
"""

# Paths never compared: flow_id is ours by design; an app event's time is the record's.
NOT_COMPARED = {("*", "flow_id"), ("*", "uinet_tap"), ("http", "timestamp")}
NOT_COMPARED |= {(t, "timestamp") for t in ("tls", "ssh", "ftp", "dns")}


def suricata_version() -> tuple[int, ...] | None:
    if SURICATA is None:
        return None
    out = subprocess.run([SURICATA, "-V"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else None


def run_suricata(pcap: Path, workdir: Path) -> list[dict]:
    workdir.mkdir(parents=True)
    config = workdir / "suricata.yaml"
    config.write_text(SURICATA_CONFIG)
    argv = [SURICATA or "suricata", "--runmode", "single", "-k", "none", "-r", str(pcap)]
    argv += ["-l", str(workdir), "-c", str(config), "-S", "/dev/null"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr[-2000:]}"
    lines = (workdir / "eve.json").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


def leaves(obj: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every non-dict value; lists are compared whole."""
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def lookup(obj: dict, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return "<absent>"
        obj = obj[key]
    return obj


def flow_key(ev: dict) -> tuple[str, tuple[int, ...]]:
    return ev.get("community_id", ""), tuple(ev.get("vlan", ()))


# Suricata's events of a type, as the ones we could have: requests, queries, FTP's greeting.
SURICATA_COUNTERPART: dict[str, Callable[[dict], bool]] = {
    "http": lambda e: "http_method" in e["http"],
    "dns": lambda e: e["dns"].get("type") == "query",
    "ftp": lambda e: e.get("tx_id") == 0,
}


@dataclass
class Comparison:
    """What one capture's comparison found."""

    flows: int = 0
    events: int = 0  # event pairs compared, flow events included
    fields: Counter = field(default_factory=Counter)  # path -> compared
    agree: Counter = field(default_factory=Counter)  # path -> agreeing
    disagreements: list[str] = field(default_factory=list)
    documented: Counter = field(default_factory=Counter)  # documented difference -> times held
    violations: list[str] = field(default_factory=list)  # a documented relation that failed
    suricata_only: Counter = field(default_factory=Counter)  # event type -> events we lack
    missing_transactions: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # our flows or events without a peer


def compare_fields(cmp: Comparison, ours: dict, theirs: dict) -> None:
    etype = ours["event_type"]
    cmp.events += 1
    for path, value in leaves(ours):
        top = path.split(".")[0]
        if ("*", top) in NOT_COMPARED or (etype, top) in NOT_COMPARED:
            continue
        if documented_difference(cmp, f"{etype}.{path}", value, theirs):
            continue
        got = lookup(theirs, path)
        name = f"{etype}.{path}"
        cmp.fields[name] += 1
        if got == value:
            cmp.agree[name] += 1
        else:
            cmp.disagreements.append(f"{name}: ours {value!r}, suricata {got!r}")


def documented_difference(cmp: Comparison, name: str, value: Any, theirs: dict) -> bool:
    """True for the fields eve.py documents as different; checks their stated relation."""
    path = name.split(".", 1)[1]
    got = lookup(theirs, path)
    if name in ("flow.flow.bytes_toserver", "flow.flow.bytes_toclient"):
        ok = isinstance(got, int) and value <= got  # payload bytes within frame bytes
    elif name == "flow.timestamp":
        ok = value <= got  # Suricata stamps the flow when it logs it (same UTC format)
    elif name == "flow.flow.reason":
        # Flows still in Suricata's table when the capture ends say "shutdown".
        ok = got == value or (value, got) == ("timeout", "shutdown")
    elif name in ("flow.tcp.ts_gap", "flow.tcp.tc_gap"):
        ok = True  # Suricata sets these only while its app layer follows the stream
    elif name == "http.http.hostname" and theirs["http"].get("version") == "2":
        headers = theirs["http"].get("request_headers", [])
        ok = {"name": ":authority", "value": value} in headers  # Suricata 7 keeps it there
    else:
        return False
    cmp.documented[name] += 1
    if not ok:
        cmp.violations.append(f"{name}: ours {value!r}, suricata {got!r}")
    return True


def compare_capture(name: str, recs: list[dict], suri: list[dict]) -> Comparison:
    cmp = Comparison()
    theirs_by_flow: dict[tuple, list[dict]] = {}
    for ev in suri:
        if ev.get("proto") == "TCP":
            theirs_by_flow.setdefault(flow_key(ev), []).append(ev)
    seen: set[tuple] = set()
    for rec in recs:
        ours = by_type(eve_events(rec))
        key = flow_key(ours["flow"][0])
        theirs = by_type(theirs_by_flow.get(key, []))
        if "flow" not in theirs:
            cmp.unmatched.append(f"flow {key} (ours) has no Suricata flow event")
            continue
        seen.add(key)
        cmp.flows += 1
        compare_fields(cmp, ours["flow"][0], theirs["flow"][0])
        for etype in set(ours) | set(theirs):
            if etype != "flow":
                compare_app(cmp, rec, etype, ours.get(etype, []), theirs.get(etype, []))
    cmp.unmatched += [f"Suricata flow {k} not in our records" for k in theirs_by_flow.keys() - seen]
    return cmp


def compare_app(cmp: Comparison, rec: dict, etype: str, ours: list, theirs: list) -> None:
    wanted = SURICATA_COUNTERPART.get(etype, lambda e: True)
    counterparts = [e for e in theirs if wanted(e)] if ours else []
    for mine, peer in zip(ours, counterparts, strict=False):
        compare_fields(cmp, mine, peer)
    for mine in ours[len(counterparts) :]:
        cmp.unmatched.append(f"our {etype} event has no Suricata counterpart: {mine[etype]}")
    extra = counterparts[len(ours) :]
    if etype == "http" and extra and "transactions" not in rec:
        # Expected gap: a record without `transactions` carries the first request only.
        cmp.missing_transactions += [e["http"].get("url", "?") for e in extra]
    elif extra:
        cmp.unmatched += [f"Suricata {etype} event we lack: {e[etype]}" for e in extra]
    cmp.suricata_only[etype] += len(theirs) - min(len(ours), len(counterparts))  # unpaired


def test_comparator_catches_differences(records: Records) -> None:
    """The comparison itself, without Suricata: a tampered copy of our own events."""
    rec = one(records, "app/tls13")
    theirs = copy.deepcopy(eve_events(rec))
    assert compare_capture("self", [rec], theirs).disagreements == []
    theirs[0]["tls"]["sni"] = "other.test"
    theirs[1]["flow"]["bytes_toserver"] = 1
    theirs.append({**theirs[1], "community_id": "1:other"})
    cmp = compare_capture("tampered", [rec], theirs)
    assert cmp.disagreements == ["tls.tls.sni: ours 'example.test', suricata 'other.test'"]
    assert cmp.violations == ["flow.flow.bytes_toserver: ours 440, suricata 1"]
    assert cmp.unmatched == ["Suricata flow ('1:other', ()) not in our records"]


@pytest.fixture(scope="module")
def comparisons(records: Records, tmp_path_factory: pytest.TempPathFactory) -> dict:
    version = suricata_version()
    if version is None:
        pytest.skip("suricata is not on PATH: the EVE comparison needs Suricata 7")
    if version[0] != 7:
        pytest.skip(f"the EVE comparison targets Suricata 7's shapes, found {version}")
    base = tmp_path_factory.mktemp("suricata")
    out = {}
    for name in COMPARED:
        suri = run_suricata(CAPTURES / f"{name}.pcap", base / name.replace("/", "_"))
        out[name] = compare_capture(name, records(name), suri)
    return out


@pytest.mark.parametrize("name", COMPARED)
def test_agrees_with_suricata(comparisons: dict, name: str) -> None:
    cmp: Comparison = comparisons[name]
    assert cmp.flows >= 1, f"{name}: no flow matched by community_id"
    assert not cmp.unmatched, cmp.unmatched
    assert not cmp.disagreements, cmp.disagreements
    assert not cmp.violations, cmp.violations
    # Every request Suricata logs (a keep-alive connection's too) is one of our transactions.
    assert not cmp.missing_transactions, cmp.missing_transactions


def test_keepalive_all_transactions(comparisons: dict, records: Records) -> None:
    rec = one(records, "http-keepalive")
    assert comparisons["http-keepalive"].missing_transactions == []
    assert len(rec["transactions"]) == 3


def test_agreement_table(comparisons: dict) -> None:
    """Prints the tables (run with -s); every compared field must agree."""
    rows = [f"{'capture':16} {'flows':>5} {'events':>6} {'fields':>6} {'agree':>6}  suricata-only"]
    total_fields: Counter = Counter()
    total_agree: Counter = Counter()
    documented: Counter = Counter()
    for name, cmp in comparisons.items():
        only = ", ".join(f"{t}:{n}" for t, n in sorted(cmp.suricata_only.items()) if n)
        rows.append(
            f"{name:16} {cmp.flows:>5} {cmp.events:>6} {sum(cmp.fields.values()):>6} "
            f"{sum(cmp.agree.values()):>6}  {only}"
        )
        total_fields += cmp.fields
        total_agree += cmp.agree
        documented += cmp.documented
    rows += ["", f"{'field':32} {'compared':>8} {'agree':>6}"]
    rows += [f"{p:32} {n:>8} {total_agree[p]:>6}" for p, n in sorted(total_fields.items())]
    rows += ["", "documented differences (relation held):"]
    rows += [f"  {p}: {n}" for p, n in sorted(documented.items())]
    print("\n" + "\n".join(rows))
    assert total_fields == total_agree
    assert {"flow.community_id", "http.http.url", "tls.tls.ja3.hash"} <= set(total_fields)


def test_the_command_line_writes_the_events_of_its_records(tmp_path: Path) -> None:
    """`replay --flows F --eve E`: E holds exactly the events of F's records, in order."""
    exe = Path(sys.executable).parent / "uinet-tap"
    flows, eve = tmp_path / "flows.jsonl", tmp_path / "eve.json"
    caps = [CAPTURES / "http-keepalive.pcap", CAPTURES / "app" / "tls13.pcap"]
    p = subprocess.run(
        [str(exe), "replay", "-q", "--flows", str(flows), "--eve", str(eve), *map(str, caps)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    recs = [json.loads(line) for line in flows.read_text().splitlines()]
    events = [json.loads(line) for line in eve.read_text().splitlines()]
    assert events == [ev for rec in recs for ev in eve_events(rec)]
    assert [e["event_type"] for e in events] == ["http"] * 3 + ["flow", "tls", "flow"]
