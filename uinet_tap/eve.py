"""Suricata-EVE-compatible events from uinet-tap's flow records (Suricata 7's shapes).

``eve_events(record)`` turns one native flow record (README.md, "Flow records") into the EVE
events Suricata 7 would log for the same TCP connection: the application events first (``http``,
``tls``, ``ssh``, ``ftp``, ``dns``), then one ``flow`` event, as Suricata logs a flow after its
transactions. ``EveWriter`` writes them as JSON lines. Flows are matched across tools by
``community_id``; the per-capture agreement with Suricata 7 is measured by tests/test_eve.py.

Deliberate differences from Suricata's EVE (a record holds less than Suricata's flow table):

- ``flow_id``: Suricata derives its id from its flow table (hash bucket and time) and no other
  tool can reproduce it. Ours is the top 51 bits of SHA-256 over client, server, VLAN IDs and
  the start time in microseconds: stable across runs, the same integer range; correlate with
  Suricata by ``community_id``, not ``flow_id``.
- ``flow.bytes_toserver`` / ``bytes_toclient``: Suricata counts whole link-layer frames; a
  record holds TCP payload bytes (retransmissions included), so ours are payload bytes and
  lower by the headers of every packet. ``pkts_*`` count the same thing (TCP segments, pure
  ACKs included).
- ``flow.reason``: ``timeout`` (close ``timeout``), ``forced`` (``evicted``), ``shutdown``
  (``eof``). A FIN/RST-closed flow gets ``timeout``: Suricata reaps closed flows when the
  closed-flow timeout passes, but says ``shutdown`` for those still in its table when a capture
  ends, which one record cannot tell apart.
- The flow event's ``timestamp`` is the flow's last packet. Suricata stamps it when it logs
  the flow: at the closed/idle timeout after that packet, or the capture's last packet for
  flows still in its table at the end (the same time when the flow ends the capture).
- ``flow.state``: ``closed`` (fin/rst), else ``established`` after a handshake, else ``new``.
  No ``app_proto_ts`` / ``app_proto_tc`` / ``app_proto_orig``: a record has one protocol.
- ``app_proto``: only on the flow event (as Suricata). Our protocol names are mapped to
  Suricata's; protocols Suricata 7 has no parser for (redis, mysql, socks, pop3,
  proxy-protocol, plugins') and port-only guesses become ``failed`` when both sides sent
  payload, as Suricata gives up then; absent when a side stayed silent (Suricata is still
  waiting) or inspection was off. ``imap`` maps to Suricata 7's detection-only ``imap``,
  which recognises only a client opening with ``1 capability``. Behind a PROXY header or a
  SOCKS handshake Suricata may name the tunnelled protocol (``http``), we say ``failed``.
  Our own name is in ``uinet_tap.protocol``.
- ``tcp``: only the flags a record proves were seen (``syn`` unless midstream, ``ack`` after a
  handshake, ``fin`` for a FIN close, ``rst`` for a RST close), each ``true`` when present as
  in Suricata; no ``tcp_flags`` hex (PSH, URG, ECN are not recorded); ``state`` only as
  ``closed`` after a RST (after both FINs Suricata says ``closed``, ``last_ack`` or
  ``time_wait`` by whether it saw the last ACK, which a record does not say); ``ts_gap`` /
  ``tc_gap`` from the record's gaps (Suricata sets them only while its app layer follows the
  stream).
- Application events carry the record's ``timestamp`` (the connection's first packet), not the
  packet that completed the transaction; a transaction's own ``timestamp`` wins if it has one.
  No ``pcap_cnt`` / ``pkt_src``.
- ``http``: only what the findings hold (``hostname``, ``http_port`` from the Host header,
  ``url``, ``http_user_agent``, ``http_method``, ``status``; ``protocol`` and ``length`` only
  when a transaction carries them). HTTP/2 events have ``version: "2"`` as Suricata's, plus
  ``hostname`` (Suricata 7 leaves it in ``request_headers`` as ``:authority``) and no
  ``tx_id`` (Suricata counts SETTINGS-only transactions too). One event per entry of
  ``transactions`` when a record has them, else one from the findings (the first request).
- ``tls``: ``sni``, ``version`` (Suricata's spelling), ``ja3.hash`` (no ``ja3.string``),
  ``ja4``; no certificate fields, no ``ja3s``. ALPN and cipher stay in
  ``uinet_tap.findings``.
- ``ssh``: software and protocol versions parsed from the banners, no ``hassh``.
- ``ftp``: one event, Suricata's transaction 0 (the greeting); commands are not recorded.
- ``smtp``: no event: Suricata logs HELO / MAIL FROM / RCPT TO, a record only the greeting.
- ``dns``: one ``query`` event per query (``rrname``, ``rrtype``), no ``id`` and no answers.
- Timestamps are always UTC (``+0000``); Suricata writes the sensor's local offset.
- ``uinet_tap`` (flow event only): the record's own fields Suricata has no place for:
  ``id``, ``verdict``, ``decided_by``, ``bypassed``, ``protocol``, ``confidence``, ``close``,
  ``midstream``, ``c2s`` / ``s2c`` (bytes, sha256, gaps, ...), ``anomalies``, ``limits``,
  ``findings`` and, when present, ``findings_truncated`` and ``plugin_errors``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter
from typing import IO, Any

import orjson

from .records import iso_time  # the record's own: an event's times and its timestamp agree

Event = dict[str, Any]
Record = dict[str, Any]

FLOW_ID_BITS = 51

# Our protocol names -> Suricata 7's app-layer names (only parsers Suricata 7 ships).
APP_PROTO = {
    "http": "http",
    "http2": "http2",
    "tls": "tls",
    "ssh": "ssh",
    "smtp": "smtp",
    "imap": "imap",
    "ftp": "ftp",
    "dns": "dns",
    "postgresql": "pgsql",
    "mqtt": "mqtt",
    "rdp": "rdp",
    "smb": "smb",
}

# Our TLS version names -> Suricata's (TLS 1.1 and later are spelled alike).
TLS_VERSIONS = {"SSL 2.0": "SSLv2", "SSL 3.0": "SSLv3", "TLS 1.0": "TLSv1"}

# Record keys kept verbatim under "uinet_tap" on the flow event.
UINET_KEYS = (
    "id",
    "verdict",
    "decided_by",
    "bypassed",
    "protocol",
    "confidence",
    "close",
    "midstream",
    "c2s",
    "s2c",
    "anomalies",
    "limits",
    "findings",
    "findings_truncated",
    "plugin_errors",
)

FTP_REPLY = re.compile(r"(\d{3})[ -]?(.*)", re.DOTALL)
SSH_BANNER = re.compile(r"SSH-([^-]+)-([^ \r\n]*)")


def endpoint(text: str) -> tuple[str, int]:
    """``"ip:port"`` / ``"[v6]:port"`` -> (address as Suricata 7 prints it, port).
    Suricata 7 writes IPv6 addresses fully expanded."""
    host, _, port = text.rpartition(":")
    addr = ipaddress.ip_address(host.strip("[]"))
    return (addr.exploded if addr.version == 6 else str(addr)), int(port)


def flow_id(rec: Record) -> int:
    """A stable positive 51-bit id: SHA-256 of client, server, VLANs and start (microseconds)."""
    vlans = ",".join(str(v) for v in rec.get("vlan") or [])
    key = f"{rec['client']}|{rec['server']}|{vlans}|{round(rec['start'] * 1_000_000)}"
    digest = hashlib.sha256(key.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - FLOW_ID_BITS)) or 1


def app_proto(rec: Record) -> str | None:
    """Suricata's ``app_proto`` for the record (see the module docstring)."""
    proto = rec.get("protocol")
    if proto is None:
        return None  # inspection was off: nothing was tried
    if rec.get("confidence") == "detected" and proto in APP_PROTO:
        return APP_PROTO[proto]
    # Suricata gives up (``failed``) once both sides sent bytes it cannot place; with one
    # side silent it is still waiting and logs no app_proto.
    both = rec["c2s"]["payload_bytes"] and rec["s2c"]["payload_bytes"]
    return "failed" if both else None


def header(rec: Record, event_type: str, timestamp: str) -> Event:
    """The fields every event shares, in Suricata's order."""
    src_ip, src_port = endpoint(rec["client"])
    dest_ip, dest_port = endpoint(rec["server"])
    ev: Event = {"timestamp": timestamp, "flow_id": flow_id(rec), "event_type": event_type}
    if rec.get("vlan"):
        ev["vlan"] = list(rec["vlan"])
    ev.update(src_ip=src_ip, src_port=src_port, dest_ip=dest_ip, dest_port=dest_port, proto="TCP")
    if rec.get("community_id"):
        ev["community_id"] = rec["community_id"]
    return ev


def record_time(rec: Record) -> str:
    return rec.get("timestamp") or iso_time(rec["start"])


def flow_state(rec: Record) -> str:
    if rec["close"] in ("fin", "rst"):
        return "closed"
    return "established" if rec.get("handshake") else "new"


REASONS = {"timeout": "timeout", "evicted": "forced", "eof": "shutdown"}


def tcp_object(rec: Record) -> dict[str, Any]:
    """Only what the record proves; absent flags are unknown, not false."""
    tcp: dict[str, Any] = {}
    if not rec.get("midstream"):
        tcp["syn"] = True
    if rec["close"] == "fin":
        tcp["fin"] = True
    if rec["close"] == "rst":
        tcp["rst"] = True
    if rec.get("handshake"):
        tcp["ack"] = True  # the SYN-ACK carries it
    if rec["close"] == "rst":
        tcp["state"] = "closed"
    if rec["c2s"].get("gap_count"):
        tcp["ts_gap"] = True
    if rec["s2c"].get("gap_count"):
        tcp["tc_gap"] = True
    return tcp


def flow_event(rec: Record) -> Event:
    """Suricata logs a flow event stamped with the flow's last packet."""
    start, end = rec["start"], rec["end"]
    c2s, s2c = rec["c2s"], rec["s2c"]
    ev = header(rec, "flow", iso_time(end))
    proto = app_proto(rec)
    if proto is not None:
        ev["app_proto"] = proto
    ev["flow"] = {
        "pkts_toserver": c2s["packets"],
        "pkts_toclient": s2c["packets"],
        "bytes_toserver": c2s["payload_bytes"],
        "bytes_toclient": s2c["payload_bytes"],
        "start": iso_time(start),
        "end": iso_time(end),
        "age": int(end) - int(start),  # Suricata subtracts whole seconds
        "state": flow_state(rec),
        "reason": REASONS.get(rec["close"], "timeout"),
        "alerted": False,
    }
    ev["tcp"] = tcp_object(rec)
    ev["uinet_tap"] = {k: rec[k] for k in UINET_KEYS if k in rec}
    return ev


def split_host(host: str) -> tuple[str, int | None]:
    """A Host header -> (hostname as libhtp normalises it, port or None)."""
    name, port = host, None
    head, sep, tail = host.rpartition(":")
    # "[v6]:port" or "name:port"; a bare "[v6]" has its last colon inside the brackets.
    if sep and tail.isdigit() and (not head.startswith("[") or head.endswith("]")):
        name, port = head, int(tail)
    return name.lower().rstrip("."), port


def http_object(tx: dict[str, Any], http2: bool) -> dict[str, Any]:
    http: dict[str, Any] = {"version": "2"} if http2 else {}
    if tx.get("host"):
        hostname, port = split_host(tx["host"])
        http["hostname"] = hostname
        if port is not None:
            http["http_port"] = port
    if tx.get("path") is not None:
        http["url"] = tx["path"]
    if tx.get("user_agent") is not None:
        http["http_user_agent"] = tx["user_agent"]
    if tx.get("method") is not None:
        http["http_method"] = tx["method"]
    if not http2 and tx.get("protocol"):
        http["protocol"] = tx["protocol"]
    if tx.get("status") is not None:
        http["status"] = tx["status"]
    if tx.get("length") is not None:
        http["length"] = tx["length"]
    return http


def http_events(rec: Record) -> list[Event]:
    txs = rec.get("transactions")
    if txs is None:
        findings = rec.get("findings") or {}
        txs = [findings] if findings.get("method") or findings.get("status") else []
    http2 = rec.get("protocol") == "http2"
    out = []
    for tx_id, tx in enumerate(txs):
        ev = header(rec, "http", tx.get("timestamp") or record_time(rec))
        if not http2:  # Suricata numbers HTTP/2 transactions by frames we do not record
            ev["tx_id"] = tx_id
        ev["http"] = http_object(tx, http2)
        out.append(ev)
    return out


def tls_events(rec: Record) -> list[Event]:
    f = rec.get("findings") or {}
    tls: dict[str, Any] = {}
    if f.get("sni"):
        tls["sni"] = f["sni"]
    if f.get("tls_version"):
        tls["version"] = TLS_VERSIONS.get(f["tls_version"], f["tls_version"])
    if f.get("ja3"):
        tls["ja3"] = {"hash": f["ja3"]}
    if f.get("ja4"):
        tls["ja4"] = f["ja4"]
    if not tls:
        return []
    ev = header(rec, "tls", record_time(rec))
    ev["tls"] = tls
    return [ev]


def ssh_side(banner: str | None) -> dict[str, str]:
    """``SSH-2.0-OpenSSH_9.2p1 Debian-2`` -> proto 2.0, software up to the first space."""
    m = SSH_BANNER.match(banner or "")
    return {"proto_version": m[1], "software_version": m[2]} if m else {}


def ssh_events(rec: Record) -> list[Event]:
    f = rec.get("findings") or {}
    ssh = {
        side: parsed
        for side, key in (("client", "client_banner"), ("server", "server_banner"))
        if (parsed := ssh_side(f.get(key)))
    }
    if not ssh:
        return []
    ev = header(rec, "ssh", record_time(rec))
    ev["tx_id"] = 0
    ev["ssh"] = ssh
    return [ev]


def ftp_events(rec: Record) -> list[Event]:
    """The greeting is Suricata's FTP transaction 0 (a reply without a command)."""
    m = FTP_REPLY.fullmatch((rec.get("findings") or {}).get("greeting") or "")
    if not m:
        return []
    ev = header(rec, "ftp", record_time(rec))
    ev["tx_id"] = 0
    ev["ftp"] = {"completion_code": [m[1]], "reply": [m[2]], "reply_received": "yes"}
    return [ev]


def dns_events(rec: Record) -> list[Event]:
    out = []
    for tx_id, query in enumerate((rec.get("findings") or {}).get("queries") or []):
        name, _, rrtype = query.rpartition(" ")
        # Our "TYPE65" for an unnamed type is Suricata's bare number.
        if rrtype.startswith("TYPE") and rrtype[4:].isdigit():
            rrtype = rrtype[4:]
        ev = header(rec, "dns", record_time(rec))
        ev["dns"] = {"version": 2, "type": "query", "rrname": name, "rrtype": rrtype}
        ev["dns"]["tx_id"] = tx_id
        out.append(ev)
    return out


APP_EVENTS = {
    "http": http_events,
    "http2": http_events,
    "tls": tls_events,
    "ssh": ssh_events,
    "ftp": ftp_events,
    "dns": dns_events,
}


def eve_events(rec: Record) -> list[Event]:
    """The EVE events of one flow record: application events, then the flow event."""
    make = APP_EVENTS.get(rec.get("protocol") or "")
    events = make(rec) if make else []
    events.append(flow_event(rec))
    return events


class EveWriter:
    """Callable record sink: writes each record's events as compact JSON lines to ``out``
    (a binary file object) and counts them by ``event_type`` in ``counts``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.counts: Counter[str] = Counter()

    def __call__(self, rec: Record) -> None:
        for ev in eve_events(rec):
            self.out.write(orjson.dumps(ev) + b"\n")
            self.counts[ev["event_type"]] += 1
