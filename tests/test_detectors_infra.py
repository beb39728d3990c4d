"""Unit tests for the built-in infrastructure-protocol detectors (issue 3):
smtp, imap, pop3, ftp, redis, postgresql, mysql, mqtt, dns, rdp, smb.

Everything goes through ``FlowView.from_bytes`` and ``Plugin.detect``.

Fixture provenance (all recorded on 127.0.0.1 in this container, Debian 12 packages, with a
small Python socket listener that optionally sends canned bytes, or a recording TCP relay in
front of a real server; the bytes are kept verbatim as hex):
- REDIS_*: redis-cli 7.0.15 through a relay to a real redis-server 7.0.15
  (``redis-cli PING``, ``redis-cli SET greeting hello``, ``redis-cli -3 INFO server`` which
  opens with HELLO 3); the HELLO reply is cut to its first 24 bytes.
- PG_*: psql 15.18 against a listener. PG_SSL: ``sslmode=prefer user=alice dbname=shop``, the
  listener answered "N" and psql sent its StartupMessage; PG_PLAIN: ``sslmode=disable
  user=bob dbname=inventory`` with PGAPPNAME=uinet.
- MYSQL_S2C: the Initial Handshake of a real mariadbd 10.11.19 (Debian), through a relay;
  MYSQL_C2S: the first 40 bytes of the mariadb 10.11 client's answer.
- MQTT*: mosquitto_pub 2.0 (``-i sensor-42 -V mqttv311|mqttv5|mqttv31``) against a listener.
- DNS_*: dig 9.18 ``+tcp`` (``example.com A`` and ``www.example.org HTTPS``; both carry an
  EDNS OPT record with a cookie) against a listener.
- SMB*: smbclient 4.17 ``-L //127.0.0.1 -N`` against a listener: SMB2 Negotiate (default),
  SMB1 Negotiate (``client min protocol=NT1``), and on port 139 a NetBIOS session request
  followed by SMB2 Negotiate once the listener answered 82 00 00 00.
- FTP_*: curl 7.88 ``ftp://`` through a relay to a real vsftpd 3.0.3 (s2c cut to 64 bytes).
- SMTP_*, IMAP_*, POP3_*: the client side is real curl 7.88 (smtp://, imap://, pop3://);
  the server side is a listener sending greetings modelled on Postfix's default banner and
  Dovecot's (no real mail server was installed).
- RDP and the hand-written edge cases are built by the spec (MS-RDPBCGR 2.2.1.1/2.2.1.2,
  RFC 1035, the PostgreSQL/MySQL/MQTT/SMB message formats): no RDP client was available.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uinet_tap.plugins import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin
from uinet_tap.plugins.detectors.dns import Dns
from uinet_tap.plugins.detectors.ftp import Ftp
from uinet_tap.plugins.detectors.mail import Imap, Pop3, Smtp
from uinet_tap.plugins.detectors.mqtt import Mqtt
from uinet_tap.plugins.detectors.mysql import Mysql
from uinet_tap.plugins.detectors.postgresql import Postgresql
from uinet_tap.plugins.detectors.rdp import Rdp
from uinet_tap.plugins.detectors.redis import Redis
from uinet_tap.plugins.detectors.smb import Smb

from uinet_tap.testing import run_bytes

DETECTORS: list[Plugin] = [
    Smtp(), Imap(), Pop3(), Ftp(), Redis(), Postgresql(), Mysql(), Mqtt(), Dns(), Rdp(), Smb(),
]  # fmt: skip
BY_NAME = {d.name: d for d in DETECTORS}

# ---------------------------------------------------------------------------------------------
# Recorded fixtures (see the module docstring for how each was made).

REDIS_PING_C2S = bytes.fromhex("2a310d0a24340d0a50494e470d0a")

REDIS_PING_S2C = bytes.fromhex("2b504f4e470d0a")

REDIS_SET_C2S = bytes.fromhex(
    "2a330d0a24330d0a5345540d0a24380d0a6772656574696e670d0a24350d0a68656c6c6f0d0a"
)

REDIS_SET_S2C = bytes.fromhex("2b4f4b0d0a")

REDIS_HELLO_C2S = bytes.fromhex(
    "2a320d0a24350d0a48454c4c4f0d0a24310d0a330d0a2a320d0a24340d0a494e464f0d0a24360d0a"
    "7365727665720d0a"
)

REDIS_HELLO_S2C = bytes.fromhex(
    "25370d0a24360d0a7365727665720d0a24350d0a72656469730d0a24370d0a76657273696f6e0d0a"
    "24360d0a372e302e"
)

PG_SSL_C2S = bytes.fromhex(
    "0000000804d2162f00000038000300007573657200616c6963650064617461626173650073686f70"
    "006170706c69636174696f6e5f6e616d65007073716c0000"
)

PG_SSL_S2C = bytes.fromhex("4e")

PG_PLAIN_C2S = bytes.fromhex(
    "0000003c000300007573657200626f6200646174616261736500696e76656e746f7279006170706c"
    "69636174696f6e5f6e616d650075696e65740000"
)

MYSQL_S2C = bytes.fromhex(
    "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b64656231327531000300"
    "0000626c78394f61796000fef72d0200ff81150000000000001d000000535d5c373b615874606352"
    "4e006d7973716c5f6e61746976655f70617373776f726400"
)

MYSQL_C2S = bytes.fromhex(
    "d100000184a2bf000000100021000000000000000000000000000000000000001d0000006e6f626f"
)

MQTT311_C2S = bytes.fromhex("101500044d5154540402003c000973656e736f722d3432")

MQTT5_C2S = bytes.fromhex("101900044d5154540502003c03210014000973656e736f722d3432")

MQTT31_C2S = bytes.fromhex("101700064d51497364700302003c000973656e736f722d3432")

DNS_A_C2S = bytes.fromhex(
    "003446ab01200001000000000001076578616d706c6503636f6d000001000100002904d000000000"
    "000c000a00080637f571cc87dfbe"
)

DNS_HTTPS_C2S = bytes.fromhex(
    "0038eaf50120000100000000000103777777076578616d706c65036f7267000041000100002904d0"
    "00000000000c000a00085137b3b6149f3821"
)

SMB2_C2S = bytes.fromhex(
    "000000e2fe534d42400000000000000000001f000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000024000500010000007f000000"
    "b4e30d6bec7ccb4e9b556970c16c7b35700000000400000002021002000302031103000001002600"
    "00000000010020000100e2a804c4fd4428cd4b7a31e21d4dd5e12392745a35ffd657690781923561"
    "4694000002000a000000000004000200010004000300000000000000080008000000000003000200"
    "0100000005001200000000003100320037002e0030002e0030002e003100"
)

SMB1_C2S = bytes.fromhex(
    "00000054ff534d4272000000001843c80000000000000000000000000000feff0000000000310002"
    "4e54204c414e4d414e20312e3000024e54204c4d20302e31320002534d4220322e3030320002534d"
    "4220322e3f3f3f00"
)

SMB139_C2S = bytes.fromhex(
    "8100004420444244434448434f4441434f4441434f44424341434143414341434143414341002046"
    "47454e4341434143414341434143414341434143414341434143414341414100000000e2fe534d42"
    "400000000000000000001f0000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000024000500010000007f00000020b781b39a9a634d"
    "82115fa90df52f937000000004000000020210020003020311030000010026000000000001002000"
    "01001d4f53ce5948efbc69cb1f11be19a2ea6baa8e32f503e8012902e61d531a1f4e000002000a00"
    "00000000040002000100040003000000000000000800080000000000030002000100000005001200"
    "000000003100320037002e0030002e0030002e003100"
)

SMB139_S2C = bytes.fromhex("82000000")

SMTP_S2C = bytes.fromhex(
    "323230206d61696c2e6578616d706c652e636f6d2045534d545020506f7374666978202844656269"
    "616e2f474e55290d0a3235302d6d61696c2e6578616d706c652e636f6d0d0a32353020504950454c"
    "494e494e470d0a"
)

SMTP_C2S = bytes.fromhex(
    "45484c4f206d2e7478740d0a4d41494c2046524f4d3a3c61406578616d706c652e636f6d3e0d0a"
)

IMAP_S2C = bytes.fromhex(
    "2a204f4b205b4341504142494c49545920494d41503472657631205341534c2d4952204c4f47494e"
    "2d524546455252414c5320494420454e41424c452049444c45204c49544552414c2b205354415254"
    "544c5320415554483d504c41494e5d20446f7665636f74202844656269616e292072656164792e0d"
    "0a"
)

IMAP_C2S = bytes.fromhex("41303031204341504142494c4954590d0a")

POP3_S2C = bytes.fromhex("2b4f4b20446f7665636f74202844656269616e292072656164792e0d0a")

POP3_C2S = bytes.fromhex("434150410d0a")

FTP_S2C = bytes.fromhex(
    "323230202876734654506420332e302e33290d0a323330204c6f67696e207375636365737366756c"
    "2e0d0a32353720222f22206973207468652063757272656e"
)

FTP_C2S = bytes.fromhex(
    "5553455220616e6f6e796d6f75730d0a5057440d0a455053560d0a5459504520410d0a4c4953540d0a515549540d0a"
)

# ---------------------------------------------------------------------------------------------
# Spec-built fixtures.


def tpkt(x224: bytes) -> bytes:
    return b"\x03\x00" + struct.pack(">H", 4 + len(x224)) + x224


def x224(code: int, rest: bytes, tail: bytes = b"") -> bytes:
    body = bytes([code]) + rest + tail
    return bytes([len(body)]) + body


# mstsc-style Connection Request: cookie, then RDP_NEG_REQ asking for TLS | CredSSP.
RDP_CR = tpkt(x224(0xE0, b"\x00\x00\x00\x00\x00", b"Cookie: mstshash=alice\r\n"
                   + b"\x01\x00\x08\x00\x03\x00\x00\x00"))  # fmt: skip
# Connection Confirm with RDP_NEG_RSP selecting TLS.
RDP_CC = tpkt(x224(0xD0, b"\x00\x00\x12\x34\x00", b"\x02\x00\x08\x00\x01\x00\x00\x00"))
# S7comm / ISO-TSAP (port 102): the same TPKT + CR, but with TSAP parameters. Not RDP.
S7_CR = bytes.fromhex("0300001611e00000000100c0010ac1020100c2020102")

PG_CANCEL = struct.pack(">IIII", 16, 80877102, 4242, 0x1234ABCD)
PG_GSSENC = struct.pack(">II", 8, 80877104)


def pg_startup(**params: str) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack(">II", 8 + len(body), 0x00030000) + body


# A MySQL server refusing the host: ERR packet 1130 as the very first packet.
MYSQL_ERR = (lambda p: len(p).to_bytes(3, "little") + b"\x00" + p)(
    b"\xff\x6a\x04Host '10.0.0.1' is not allowed to connect to this MySQL server"
)


def dns_tcp(msg: bytes) -> bytes:
    return struct.pack(">H", len(msg)) + msg


def dns_query(*questions: tuple[bytes, int], flags: int = 0x0100, counts: tuple[int, ...] = ()
              ) -> bytes:  # fmt: skip
    an, ns, ar = counts or (0, 0, 0)
    head = struct.pack(">HHHHHH", 0x1234, flags, len(questions), an, ns, ar)
    qs = b"".join(name + struct.pack(">HH", qtype, 1) for name, qtype in questions)
    return head + qs


def qname(text: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in text.split(".") if p) + b"\0"


# ---------------------------------------------------------------------------------------------
# Cases: (protocol, c2s, s2c, first speaker, findings expected to be present).


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str
    c2s: bytes
    s2c: bytes
    first: str
    findings: dict[str, Any] = field(default_factory=dict)

    def view(self, port: int = 80, **kw: Any) -> FlowView:
        return FlowView.from_bytes(
            self.c2s, self.s2c, server=("10.0.0.2", port), first_speaker=self.first, **kw
        )


CASES = [
    Case("smtp-postfix", "smtp", SMTP_C2S, SMTP_S2C, "server",
         {"greeting": "220 mail.example.com ESMTP Postfix (Debian/GNU)"}),
    Case("imap-dovecot", "imap", IMAP_C2S, IMAP_S2C, "server",
         {"greeting": IMAP_S2C.split(b"\r\n")[0].decode()}),
    Case("pop3-dovecot", "pop3", POP3_C2S, POP3_S2C, "server",
         {"greeting": "+OK Dovecot (Debian) ready."}),
    Case("ftp-vsftpd", "ftp", FTP_C2S, FTP_S2C, "server", {"greeting": "220 (vsFTPd 3.0.3)"}),
    Case("redis-ping", "redis", REDIS_PING_C2S, REDIS_PING_S2C, "client", {"command": "PING"}),
    Case("redis-set", "redis", REDIS_SET_C2S, REDIS_SET_S2C, "client", {"command": "SET"}),
    Case("redis-hello3", "redis", REDIS_HELLO_C2S, REDIS_HELLO_S2C, "client",
         {"command": "HELLO"}),
    Case("redis-inline", "redis", b"PING\r\n", b"+PONG\r\n", "client", {"command": "PING"}),
    Case("pg-sslrequest", "postgresql", PG_SSL_C2S, PG_SSL_S2C, "client",
         {"ssl_request": True, "user": "alice", "database": "shop"}),
    Case("pg-startup", "postgresql", PG_PLAIN_C2S, b"", "client",
         {"user": "bob", "database": "inventory"}),
    Case("pg-cancel", "postgresql", PG_CANCEL, b"", "client", {}),
    Case("pg-gssenc", "postgresql", PG_GSSENC, b"N", "client", {}),
    Case("mariadb", "mysql", MYSQL_C2S, MYSQL_S2C, "server",
         {"server_version": "5.5.5-10.11.19-MariaDB-0+deb12u1"}),
    Case("mysql-err", "mysql", b"", MYSQL_ERR, "server", {}),
    Case("mqtt-3.1.1", "mqtt", MQTT311_C2S, b"", "client",
         {"client_id": "sensor-42", "protocol_level": 4}),
    Case("mqtt-5", "mqtt", MQTT5_C2S, b"", "client",
         {"client_id": "sensor-42", "protocol_level": 5}),
    Case("mqtt-3.1", "mqtt", MQTT31_C2S, b"", "client",
         {"client_id": "sensor-42", "protocol_level": 3}),
    Case("dns-a", "dns", DNS_A_C2S, b"", "client", {"queries": ["example.com A"]}),
    Case("dns-https", "dns", DNS_HTTPS_C2S, b"", "client", {"queries": ["www.example.org HTTPS"]}),
    Case("rdp-cr", "rdp", RDP_CR, RDP_CC, "client", {"cookie": "alice"}),
    Case("smb2", "smb", SMB2_C2S, b"", "client", {"version": "2+"}),
    Case("smb1", "smb", SMB1_C2S, b"", "client", {"version": "1"}),
    Case("smb-netbios", "smb", SMB139_C2S, SMB139_S2C, "client", {"version": "2+"}),
]  # fmt: skip
CASE_IDS = [c.id for c in CASES]


def run(det: Plugin, view: FlowView) -> Match | Detection:
    result = det.detect(view)
    assert isinstance(result, Match | Detection), (det.name, result)
    return result


def assert_match(result: Match | Detection, case: Case) -> None:
    assert isinstance(result, Match), (case.id, result)
    assert result.protocol == case.protocol
    assert result.plugin == case.protocol
    for key, value in case.findings.items():
        assert result.findings.get(key) == value, (case.id, key, result.findings)


# ---------------------------------------------------------------------------------------------
# Positive cases, on the usual port and on unusual ones (ports are hints, never gates).


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_detected_on_usual_port(case: Case) -> None:
    det = BY_NAME[case.protocol]
    port = min(det.ports)
    assert_match(run(det, case.view(port)), case)


@pytest.mark.parametrize("port", [80, 443, 8080, 40123])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_detected_on_unusual_port(case: Case, port: int) -> None:
    det = BY_NAME[case.protocol]
    assert port not in det.ports
    assert_match(run(det, case.view(port)), case)


def test_findings_are_json_serialisable() -> None:
    import json

    for case in CASES:
        result = run(BY_NAME[case.protocol], case.view())
        assert isinstance(result, Match)
        json.dumps(result.findings)


# ---------------------------------------------------------------------------------------------
# Cross matrix: no other detector in this set claims another protocol's bytes.


CROSS = [(case, det) for case in CASES for det in DETECTORS if det.name != case.protocol]


@pytest.mark.parametrize(("case", "det"), CROSS, ids=[f"{c.id}-vs-{d.name}" for c, d in CROSS])
def test_not_claimed_by_other_detectors(case: Case, det: Plugin) -> None:
    for port in (80, *sorted(BY_NAME[case.protocol].ports)):
        result = run(det, case.view(port))
        assert result is NO_MATCH, (det.name, case.id, result)
        # The flow as seen before the second speaker answered: still not claimed.
        first_only = (
            FlowView.from_bytes(case.c2s, b"", server=("10.0.0.2", port), first_speaker="client")
            if case.first == "client"
            else FlowView.from_bytes(b"", case.s2c, server=("10.0.0.2", port),
                                     first_speaker="server")
        )  # fmt: skip
        assert not isinstance(run(det, first_only), Match), (det.name, case.id)


# ---------------------------------------------------------------------------------------------
# Truncation: every prefix of a valid opening is NEED_MORE (or already the right Match), never
# NO_MATCH or an exception; the first few bytes are always NEED_MORE.


def _prefix_views(case: Case) -> list[tuple[int, FlowView]]:
    views = []
    if case.first == "client":
        for k in range(len(case.c2s)):
            views.append((k, FlowView.from_bytes(case.c2s[:k], b"", first_speaker="client")))
    else:
        for k in range(len(case.s2c)):
            views.append((k, FlowView.from_bytes(b"", case.s2c[:k], first_speaker="server")))
    return views


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_truncated_prefixes_need_more(case: Case) -> None:
    det = BY_NAME[case.protocol]
    for k, view in _prefix_views(case):
        result = run(det, view)
        if isinstance(result, Match):
            assert result.protocol == case.protocol
        else:
            assert result is NEED_MORE, (case.id, k, result)
        if k <= 3:
            assert result is NEED_MORE, (case.id, k, result)
        for other in DETECTORS:  # other detectors see the prefixes too: never raise
            run(other, view)


@pytest.mark.parametrize("case", [c for c in CASES if c.c2s and c.s2c], ids=lambda c: c.id)
def test_truncated_second_speaker_never_fails(case: Case) -> None:
    det = BY_NAME[case.protocol]
    for k in range(len(case.s2c if case.first == "client" else case.c2s) + 1):
        if case.first == "client":
            view = FlowView.from_bytes(case.c2s, case.s2c[:k], first_speaker="client")
        else:
            view = FlowView.from_bytes(case.c2s[:k], case.s2c, first_speaker="server")
        result = run(det, view)
        assert result is NEED_MORE or (
            isinstance(result, Match) and result.protocol == case.protocol
        ), (case.id, k, result)


def test_empty_flow_needs_more() -> None:
    for det in DETECTORS:
        assert run(det, FlowView.from_bytes()) is NEED_MORE, det.name


# ---------------------------------------------------------------------------------------------
# Random and mutated bytes: never an exception, and random bytes are not claimed.

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(
    c2s=st.binary(max_size=600),
    s2c=st.binary(max_size=600),
    first=st.sampled_from([None, "client", "server"]),
)
def test_random_bytes_never_raise_nor_match(c2s: bytes, s2c: bytes, first: str | None) -> None:
    view = FlowView.from_bytes(c2s, s2c, first_speaker=first)
    for det in DETECTORS:
        assert run(det, view) in (NEED_MORE, NO_MATCH), (det.name, c2s[:40], s2c[:40])


@FAST
@given(
    case=st.sampled_from(CASES),
    data=st.data(),
)
def test_mutated_fixtures_never_raise(case: Case, data: st.DataObject) -> None:
    c2s, s2c = bytearray(case.c2s), bytearray(case.s2c)
    for buf in (c2s, s2c):
        for _ in range(data.draw(st.integers(0, 4))):
            if not buf:
                break
            i = data.draw(st.integers(0, len(buf) - 1))
            op = data.draw(st.sampled_from(["flip", "cut", "insert", "max"]))
            if op == "flip":
                buf[i] ^= data.draw(st.integers(1, 255))
            elif op == "cut":
                del buf[i:]
            elif op == "insert":
                buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
            else:
                buf[i] = 0xFF
    for first in ("client", "server"):
        view = FlowView.from_bytes(bytes(c2s), bytes(s2c), first_speaker=first)
        for det in DETECTORS:
            run(det, view)


def test_large_garbage_is_fast() -> None:
    """8 KiB (the default inspection budget) of adversarial input: O(n), no backtracking."""
    n = 8192
    inputs = [
        b"\x00" * n, b"\xff" * n, b"A" * n, b"*" + b"9" * n, b"*1\r\n$" + b"9" * n,
        b"220 " + b"x" * n, b"* OK " + b"x" * n, b"+OK " + b"x" * n, b"a " * (n // 2),
        b"\x00\x00\x20\x00" + b"\xc0\x0c" * (n // 2), b"\x10\xff\xff\xff\x7f" + b"\x00" * n,
        b"\x00\x00\x1f\xfc" + b"a=b\0" * (n // 4), bytes(range(256)) * (n // 256),
    ]  # fmt: skip
    for det in DETECTORS:
        for buf in inputs:
            for first in ("client", "server"):
                t0 = time.perf_counter()
                run(det, FlowView.from_bytes(buf, buf, first_speaker=first))
                assert time.perf_counter() - t0 < 0.25, (det.name, buf[:16])


# ---------------------------------------------------------------------------------------------
# SMTP / FTP share "220": never guess.


def view(c2s: bytes = b"", s2c: bytes = b"", first: str | None = None, port: int = 80
         ) -> FlowView:  # fmt: skip
    return FlowView.from_bytes(c2s, s2c, server=("10.0.0.2", port), first_speaker=first)


@pytest.mark.parametrize("port", [21, 25, 2121])
def test_bare_220_greeting_waits_for_the_client(port: int) -> None:
    greeting = b"220 Welcome to the server\r\n"
    for det in (Smtp(), Ftp()):
        assert run(det, view(s2c=greeting, first="server", port=port)) is NEED_MORE
    # Half a client verb: still waiting.
    for det in (Smtp(), Ftp()):
        assert run(det, view(b"EH", greeting, "server", port)) is NEED_MORE
    smtp = view(b"EHLO client.example\r\n", greeting, "server", port)
    assert run(Smtp(), smtp) == Match("smtp", {"greeting": "220 Welcome to the server"}, "smtp")
    assert run(Ftp(), smtp) is NO_MATCH
    ftp = view(b"USER anonymous\r\n", greeting, "server", port)
    assert run(Ftp(), ftp) == Match("ftp", {"greeting": "220 Welcome to the server"}, "ftp")
    assert run(Smtp(), ftp) is NO_MATCH
    for verb in (b"AUTH TLS\r\n", b"FEAT\r\n", b"SYST\r\n"):
        assert isinstance(run(Ftp(), view(verb, greeting, "server", port)), Match)
    other = view(b"HELLO?\r\n", greeting, "server", port)
    assert run(Smtp(), other) is NO_MATCH and run(Ftp(), other) is NO_MATCH


def test_220_greeting_words_decide_alone() -> None:
    for s2c, proto in [
        (b"220 mx.example.net ESMTP ready\r\n", "smtp"),
        (b"220-smtp.example.net Simple Mail Transfer Service\r\n", "smtp"),
        (b"220 Microsoft FTP Service\r\n", "ftp"),
        (b"220 ProFTPD Server (Debian) [::ffff:10.0.0.2]\r\n", "ftp"),
    ]:
        results = {d.name: run(d, view(s2c=s2c, first="server")) for d in (Smtp(), Ftp())}
        assert isinstance(results[proto], Match), (s2c, results)
        assert all(r is NO_MATCH for n, r in results.items() if n != proto), (s2c, results)
    # Both words present ("ftp." host running an MTA): ask the client.
    both = b"220 ftp.example.com ESMTP\r\n"
    assert run(Smtp(), view(s2c=both, first="server")) is NEED_MORE
    assert run(Ftp(), view(s2c=both, first="server")) is NEED_MORE
    assert isinstance(run(Smtp(), view(b"HELO x\r\n", both, "server")), Match)


def test_220_greeting_incomplete_line_needs_more() -> None:
    for det in (Smtp(), Ftp()):
        assert run(det, view(s2c=b"220 mail.example.com ESM", first="server")) is NEED_MORE
        assert run(det, view(s2c=b"221 bye\r\n", first="server")) is NO_MATCH
        assert run(det, view(s2c=b"2200\r\n", first="server")) is NO_MATCH


def test_client_only_mail_commands() -> None:
    """Midstream pickup that missed the greeting: client commands that are unambiguous."""
    assert isinstance(run(Smtp(), view(b"EHLO laptop\r\n")), Match)
    assert isinstance(run(Ftp(), view(b"FEAT\r\n")), Match)
    assert isinstance(run(Pop3(), view(b"CAPA\r\n")), Match)
    assert isinstance(run(Pop3(), view(b"AUTH PLAIN\r\n")), Match)
    assert run(Pop3(), view(b"AUTH TLS\r\n")) is NO_MATCH  # FTP's
    assert isinstance(run(Imap(), view(b"a1 LOGIN alice secret\r\n")), Match)
    assert isinstance(run(Imap(), view(b"A001 CAPABILITY\r\n")), Match)
    assert run(Imap(), view(b"A001 CAPAB")) is NEED_MORE
    assert run(Imap(), view(b"AUTH LOGIN\r\n")) is NO_MATCH  # SMTP/POP3 AUTH, not a tag
    # USER opens both FTP and POP3 sessions: neither guesses without the greeting.
    assert run(Ftp(), view(b"USER bob\r\n")) is NEED_MORE
    assert run(Pop3(), view(b"USER bob\r\n")) is NEED_MORE
    assert isinstance(run(Pop3(), view(b"USER bob\r\n", b"+OK ready\r\n", "server")), Match)
    assert run(Ftp(), view(b"USER bob\r\n", b"+OK ready\r\n", "server")) is NO_MATCH


def test_imap_greetings() -> None:
    for s2c in (b"* OK IMAP4rev1 ready\r\n", b"* PREAUTH logged in\r\n", b"* BYE busy\r\n"):
        result = run(Imap(), view(s2c=s2c, first="server"))
        assert isinstance(result, Match) and result.findings["greeting"] == s2c[:-2].decode()
    assert run(Imap(), view(s2c=b"* OKAY\r\n", first="server")) is NO_MATCH
    assert run(Imap(), view(s2c=b"* O", first="server")) is NEED_MORE


def test_pop3_and_redis_both_say_plus_ok() -> None:
    """ "+OK" is a POP3 greeting and a Redis reply: who spoke first tells them apart."""
    redis_flow = view(REDIS_SET_C2S, REDIS_SET_S2C, "client")
    assert run(Pop3(), redis_flow) is NO_MATCH
    pop3_flow = view(b"", b"+OK POP3 ready\r\n", "server")
    assert run(Redis(), pop3_flow) is NO_MATCH
    assert isinstance(run(Pop3(), pop3_flow), Match)


# ---------------------------------------------------------------------------------------------
# Redis details.


def test_redis_structure_is_validated() -> None:
    assert run(Redis(), view(b"*")) is NEED_MORE
    assert run(Redis(), view(b"*1\r\n$4\r\nPI")) is NEED_MORE
    # Once the command name is complete that is enough to say Redis.
    assert isinstance(run(Redis(), view(b"*1\r\n$4\r\nPING\r")), Match)
    for bad in (b"*x\r\n", b"*0\r\n", b"*1\r\n+PING\r\n", b"*1\r\n$4\r\nP\x00NG\r\n",
                b"*1\r\n$4\r\nPINGxx", b"*2\r\n$3\r\nGET\r\nX"):  # fmt: skip
        assert run(Redis(), view(bad)) is NO_MATCH, bad
    # An inline AUTH could be POP3's: it needs a RESP reply to count.
    assert run(Redis(), view(b"AUTH hunter2\r\n")) is NEED_MORE
    assert isinstance(run(Redis(), view(b"AUTH hunter2\r\n", b"+OK\r\n")), Match)
    assert run(Redis(), view(b"AUTH hunter2\r\n", b"\x00\x01")) is NO_MATCH
    assert run(Redis(), view(b"PI")) is NEED_MORE
    assert run(Redis(), view(b"GET / HTTP/1.1\r\n")) is NO_MATCH  # HTTP's, not inline Redis
    # Module commands ("JSON.SET") are command names too.
    res = run(Redis(), view(b"*3\r\n$8\r\nJSON.GET\r\n$1\r\nk\r\n$1\r\n$\r\n"))
    assert isinstance(res, Match) and res.findings["command"] == "JSON.GET"


# ---------------------------------------------------------------------------------------------
# PostgreSQL details.


def test_postgresql_ssl_request_answers() -> None:
    ssl = PG_SSL_C2S[:8]
    # Not answered yet: a match, incomplete (after 'N' the StartupMessage would follow).
    pending = Match("postgresql", {"ssl_request": True}, "postgresql", complete=False)
    assert run(Postgresql(), view(ssl)) == pending
    assert run(Postgresql(), view(ssl, b"S")) == Match(
        "postgresql", {"ssl_request": True}, "postgresql"
    )  # TLS follows: nothing more to read
    assert isinstance(run(Postgresql(), view(ssl, b"S\x16\x03\x03")), Match)
    startup = pg_startup(user="alice", database="shop")
    for cut in range(len(startup)):
        assert run(Postgresql(), view(ssl + startup[:cut], b"N")) == pending, cut
    done = run(Postgresql(), view(ssl + startup, b"N"))
    assert done == Match("postgresql", {"user": "alice", "database": "shop",
                                        "ssl_request": True}, "postgresql")  # fmt: skip
    # GSSENCRequest refused, then SSLRequest refused, then the StartupMessage.
    gss = struct.pack(">II", 8, 80877104)
    assert run(Postgresql(), view(gss, b"G")) == Match("postgresql", {}, "postgresql")
    assert run(Postgresql(), view(gss + ssl, b"N")) == pending
    assert run(Postgresql(), view(gss + ssl + startup, b"NN")).findings == {  # type: ignore[union-attr]
        "user": "alice", "database": "shop", "ssl_request": True
    }  # fmt: skip
    gss_pending = run(Postgresql(), view(gss + startup[:5], b"N"))
    assert gss_pending == Match("postgresql", {}, "postgresql", complete=False)
    assert run(Postgresql(), view(ssl, b"HTTP/1.1 400")) is NO_MATCH
    # libpq omits database when it equals the user name.
    res = run(Postgresql(), view(pg_startup(user="carol")))
    assert res == Match("postgresql", {"user": "carol"}, "postgresql")


def test_postgresql_rejects_near_misses() -> None:
    good = pg_startup(user="u", database="d")
    for bad in (
        good[:-1] + b"x",  # no final terminator
        struct.pack(">II", len(good), 0x00020000) + good[8:],  # protocol 2
        struct.pack(">I", 20000) + good[4:],  # longer than the server accepts
        pg_startup(database="d"),  # no user
        struct.pack(">II", 8, 80877105),  # unknown request code
    ):
        assert run(Postgresql(), view(bad)) is NO_MATCH, bad
    assert run(Postgresql(), view(good[:12])) is NEED_MORE


# ---------------------------------------------------------------------------------------------
# MySQL details.


def test_mysql_client_first_is_not_mysql() -> None:
    assert run(Mysql(), view(b"\x0a\x00\x00\x00", b"", "client")) is NO_MATCH
    # The greeting's structure decides even when the view marks the client as first speaker.
    assert isinstance(run(Mysql(), view(MYSQL_C2S, MYSQL_S2C, "client")), Match)
    assert run(Mysql(), view(b"", MYSQL_S2C[:4], "server")) is NEED_MORE
    # Sequence id must be 0, protocol 10, the version must start with a digit.
    for bad in (MYSQL_S2C[:3] + b"\x01" + MYSQL_S2C[4:], MYSQL_S2C[:4] + b"\x09" + MYSQL_S2C[5:],
                MYSQL_S2C[:5] + b"x" + MYSQL_S2C[6:]):  # fmt: skip
        assert run(Mysql(), view(b"", bad, "server")) is NO_MATCH


# ---------------------------------------------------------------------------------------------
# MQTT details.


def test_mqtt5_properties_and_bounds() -> None:
    # CONNECT v5 with a 5-byte properties block (session expiry) before the client id.
    props = b"\x11\x00\x00\x00\x3c"
    body = b"\x00\x04MQTT\x05\x02\x00\x3c" + bytes([len(props)]) + props + b"\x00\x02id"
    pkt = bytes([0x10, len(body)]) + body
    assert run(Mqtt(), view(pkt)) == Match("mqtt", {"client_id": "id", "protocol_level": 5},
                                           "mqtt")  # fmt: skip
    # Properties claiming more than the packet holds.
    bad = bytes([0x10, len(body)]) + body[:10] + b"\x7f" + body[11:]
    assert run(Mqtt(), view(bad)) is NO_MATCH
    # Level 4 under the 3.1 name, reserved flag bit, a 5-byte varint: all wrong.
    assert run(Mqtt(), view(b"\x10\x0e\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x00")) is NO_MATCH
    assert run(Mqtt(), view(b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00")) is NO_MATCH
    assert run(Mqtt(), view(b"\x10\xff\xff\xff\xff\x01")) is NO_MATCH
    assert run(Mqtt(), view(b"\x10\x0c\x00\x04MQ")) is NEED_MORE


# ---------------------------------------------------------------------------------------------
# DNS details.


def test_dns_names_types_and_compression() -> None:
    two = dns_query((qname("a.example"), 28), (b"\x03www\xc0\x0c", 15))
    assert run(Dns(), view(dns_tcp(two))) == Match(
        "dns", {"queries": ["a.example AAAA", "www.a.example MX"]}, "dns"
    )
    root = dns_query((b"\x00", 2))
    assert run(Dns(), view(dns_tcp(root))).findings == {"queries": [". NS"]}  # type: ignore[union-attr]
    odd = dns_query((b"\x03a.b\x00", 999))
    assert run(Dns(), view(dns_tcp(odd))).findings == {"queries": ["a\\.b TYPE999"]}  # type: ignore[union-attr]


def test_dns_rejects_malformed() -> None:
    self_loop = dns_query((b"\xc0\x0c", 1))  # pointer to itself
    forward = dns_query((b"\xc0\x20", 1)) + b"\x00" * 8  # pointer forward
    long_label = dns_query((b"\x40" + b"a" * 64 + b"\x00", 1))  # label type 01: reserved
    too_long = dns_query((b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00", 1))
    response = dns_query((qname("example.com"), 1), flags=0x8180)
    notify = dns_query((qname("example.com"), 6), flags=0x2000)
    answers = dns_query((qname("example.com"), 1), counts=(1, 0, 0))
    trailing = dns_query((qname("example.com"), 1)) + b"junk"
    bad_class = dns_query((qname("example.com"), 1))[:-1] + b"\x09"
    for msg in (self_loop, forward, long_label, too_long, response, notify, answers, trailing,
                bad_class):  # fmt: skip
        assert run(Dns(), view(dns_tcp(msg))) is NO_MATCH, msg
    assert run(Dns(), view(b"\x00\x05abcde")) is NO_MATCH  # shorter than any query
    assert run(Dns(), view(dns_tcp(response)[:14])) is NO_MATCH  # header alone says response
    assert run(Dns(), view(b"\x00\x1d\x12\x34\x01\x00")) is NEED_MORE


# ---------------------------------------------------------------------------------------------
# RDP and SMB details.


def test_rdp_variants() -> None:
    bare = tpkt(x224(0xE0, b"\x00\x00\x00\x00\x00"))
    assert run(Rdp(), view(bare)) == Match("rdp", {}, "rdp")
    token = tpkt(x224(0xE0, b"\x00\x00\x00\x00\x00", b"Cookie: msts=3640205228.15629.0000\r\n"))
    assert run(Rdp(), view(token)).findings == {"cookie": "msts=3640205228.15629.0000"}  # type: ignore[union-attr]
    assert isinstance(run(Rdp(), view(b"", RDP_CC)), Match)  # server side only (midstream)
    assert run(Rdp(), view(S7_CR)) is NO_MATCH  # ISO-TSAP parameters, not RDP
    assert run(Rdp(), view(RDP_CR[:5] + b"\xd0" + RDP_CR[6:])) is NO_MATCH  # CC from the client
    assert run(Rdp(), view(RDP_CR[:4] + b"\x00" + RDP_CR[5:])) is NO_MATCH  # wrong LI
    assert run(Rdp(), view(b"\x03\x00\x00\x2b\x26\xe0")) is NEED_MORE


def test_smb_versions_and_netbios() -> None:
    # NetBIOS session request alone (port 139): wait for the SMB message after it.
    request = SMB139_C2S[:72]
    assert run(Smb(), view(request, port=139)) is NEED_MORE
    assert run(Smb(), view(request, b"\x82\x00\x00\x00", port=139)) is NEED_MORE
    # An SMB1 Negotiate offering SMB2 dialects, answered in SMB2: the flow speaks 2+.
    smb2_reply = b"\x00\x00\x00\x41\xfeSMB\x40\x00" + b"\x00" * 59
    assert run(Smb(), view(SMB1_C2S, smb2_reply)).findings == {"version": "2+"}  # type: ignore[union-attr]
    # Encrypted transform header (SMB3), 52-byte header plus payload.
    transform = b"\x00\x00\x00\x60\xfdSMB" + b"\x00" * 92
    assert run(Smb(), view(transform)).findings == {"version": "2+"}  # type: ignore[union-attr]
    for bad in (
        b"\x00\x00\x00\x10\xfeSMB",  # shorter than an SMB2 header
        b"\x00\x00\x00\x54\xfeSMB\x20\x00",  # wrong StructureSize
        b"\x00\x00\x00\x54\xfeSMX",
        b"\x81\x00\x00\x44\x20" + b"Z" * 32,  # names not in A..P
    ):
        assert run(Smb(), view(bad)) is NO_MATCH, bad


# ---------------------------------------------------------------------------------------------
# Split arrival through the real inspector: an incomplete match is refined as data arrives.


@pytest.mark.parametrize("builtins", [False, True])
def test_split_postgresql_ssl_refused_then_startup(builtins: bool) -> None:
    ssl, startup = PG_SSL_C2S[:8], pg_startup(user="alice", database="shop")
    r = run_bytes(Postgresql(), c2s=[ssl, startup[:10], startup[10:]], s2c=[b"N"],
                  server_port=5432, builtins=builtins)  # fmt: skip
    assert r.protocol == "postgresql" and r.verdict == "pass"
    assert r.findings == {"user": "alice", "database": "shop", "ssl_request": True}
    assert r.verdict_offset["c2s"] == 8 + len(startup)
    # Answered 'S': TLS follows, complete at once.
    r = run_bytes(Postgresql(), c2s=[ssl, b"\x16\x03\x01\x00\x05hello"], s2c=[b"S"],
                  server_port=5432)  # fmt: skip
    assert r.findings == {"ssl_request": True} and r.verdict_offset == {"c2s": 8, "s2c": 1}
    # GSSENC refused, then the StartupMessage.
    r = run_bytes(Postgresql(), c2s=[PG_GSSENC, startup], s2c=[b"N"], server_port=5432)
    assert r.findings == {"user": "alice", "database": "shop"}
