"""Unit tests for the built-in web/tunnel detectors: tls, http, http2, ssh, socks4/5 and
proxy-protocol (plugins/detectors/*.py), all driven through ``FlowView.from_bytes``.

Fixture provenance (all captured on 127.0.0.1 on 2026-11-27, Debian 12 tools; the bytes are
what the client wrote to the socket, recorded by a small Python TCP listener that read the
stream and optionally answered with scripted bytes):

* OPENSSL_CLIENT_HELLO: ``openssl s_client -connect 127.0.0.1:P -servername example.com
  -alpn h2,http/1.1`` (OpenSSL 3.0.19), the whole first flight (one record).
* PY13_* / PY12_*: Python 3.11 ``ssl`` (OpenSSL 3.0.19) client and server handshaking over
  ``ssl.MemoryBIO`` pairs with a self-signed P-256 certificate; client SNI www.example.org /
  api.example.net, ALPN [h2, http/1.1] / [http/1.1], ``maximum_version`` TLS 1.3 / TLS 1.2;
  the server offered ALPN h2, http/1.1. Only the first record of each direction is kept
  (ClientHello, ServerHello).
* CURL_HTTP_REQUEST: ``curl http://127.0.0.1:P/index.html?q=1 -H 'Host: example.com'``.
* CURL_H2_PRIOR_KNOWLEDGE: ``curl --http2-prior-knowledge http://127.0.0.1:P/h2path -H
  'Host: example.com'`` (curl 7.88.1, nghttp2 1.52.0): preface, SETTINGS, WINDOW_UPDATE,
  HEADERS.
* H2_SERVER_RESPONSE: generated (no h2 server on the machine): SETTINGS, SETTINGS ack and a
  HEADERS frame (":status: 200", content-type) encoded with the ``hpack`` package's Encoder.
* SSH_CLIENT: ``ssh -p P 127.0.0.1`` (OpenSSH 9.2p1): banner plus the start of KEXINIT. The
  server banner used with it is typed in (the same OpenSSH version string); no sshd here.
* CURL_SOCKS4 / CURL_SOCKS4A / CURL_SOCKS5_*: ``curl --socks4 / --socks4a / --socks5-hostname
  / --socks5`` through the listener (which answered ``05 00`` to the SOCKS5 greetings).
* CURL_PROXY_V1: ``curl --haproxy-protocol http://127.0.0.1:P/``.
Other inputs (SSLv2 hello, GREASE and padded ClientHellos, SOCKS5 IPv6/auth, PROXY v2) are
built in this file from the published formats, by the helpers below.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uinet_tap.plugins import NEED_MORE, NO_MATCH, FlowView, Match, Plugin
from uinet_tap.plugins.detectors import http as http_mod
from uinet_tap.plugins.detectors import http2 as http2_mod
from uinet_tap.plugins.detectors import proxy_protocol as pp_mod
from uinet_tap.plugins.detectors import ssh as ssh_mod
from uinet_tap.plugins.detectors import tls as tls_mod
from uinet_tap.plugins.detectors.http import Http, response_findings
from uinet_tap.plugins.detectors.http2 import Http2
from uinet_tap.plugins.detectors.proxy_protocol import ProxyProtocol
from uinet_tap.plugins.detectors.socks import Socks4, Socks5
from uinet_tap.plugins.detectors.ssh import Ssh
from uinet_tap.plugins.detectors.tls import Tls

from uinet_tap.testing import run_bytes

DETECTORS: list[Plugin] = [Tls(), Http(), Http2(), Ssh(), Socks4(), Socks5(), ProxyProtocol()]
# Scale the fuzz tests with DETECTOR_FUZZ_EXAMPLES (20000 passed during development).
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("DETECTOR_FUZZ_EXAMPLES", "300")),
    suppress_health_check=[HealthCheck.too_slow],
)
SERVER_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n"

# --- fixtures (hex of real bytes; see the module docstring) ---------------------------------

OPENSSL_CLIENT_HELLO = bytes.fromhex(
    "160301014a010001460303079e8277ad425b61f8acf39e4a63b57db75933eff38dcf1b222e017eb94e813920"
    "06ed6e0bf75630a671fb79a8ac7813bd7b7e492e2ef37ee3d2f320a3fb184071003e130213031301c02cc030"
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d"
    "003c0035002f00ff010000bf00000010000e00000b6578616d706c652e636f6d000b000403000102000a0016"
    "0014001d0017001e0019001801000101010201030104002300000010000e000c02683208687474702f312e31"
    "0016000000170000000d002a0028040305030603080708080809080a080b0804080508060401050106010303"
    "03010302040205020602002b0009080304030303020301002d00020101003300260024001d0020546963ac81"
    "33ff29897237fe63e1c6a0a0422267cc4fe40efa8e4f42ee442d4a"
)
PY13_CLIENT_HELLO = bytes.fromhex(
    "1603010200010001fc0303bb7cafe9750f0675c5e58a4be68c216b3000a591962f2f643a7f731190cb605d20"
    "d02ed2ea05fac12ac8803bf1cd5be0b49bbcc0b72c64bd092bea38627856b6f80024130213031301c02cc030"
    "c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000014001200000f7777772e65"
    "78616d706c652e6f7267000b000403000102000a00160014001d0017001e0019001801000101010201030104"
    "002300000010000e000c02683208687474702f312e310016000000170000000d002a00280403050306030807"
    "08080809080a080b080408050806040105010601030303010302040205020602002b00050403040303002d00"
    "020101003300260024001d00205717bfb1f12d67d23e6458c6265e64dbf18b21e4518676cb4a66b71c0cafa9"
    "7e001500cc000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000"
)
PY13_SERVER_HELLO = bytes.fromhex(
    "160303007a020000760303bb3c1d51cb64ef4c34128b89e2e5dfacdf82ed30fde7a65f8b4f8ff5b1595c7920"
    "d02ed2ea05fac12ac8803bf1cd5be0b49bbcc0b72c64bd092bea38627856b6f8130200002e002b0002030400"
    "330024001d002004e40d23a8de884cea1bf23d2023b3f119108ca8147b89b3526d8c8e476d5559"
)
PY12_CLIENT_HELLO = bytes.fromhex(
    "16030100c4010000c00303efadd7c0c05106de75526efdcea6a02ce9470100d7b75e4b1697b60b92202ab800"
    "001ec02cc030c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff010000790000001400120000"
    "0f6170692e6578616d706c652e6e6574000b000403000102000a000c000a001d0017001e0019001800230000"
    "0010000b000908687474702f312e310016000000170000000d002a0028040305030603080708080809080a08"
    "0b080408050806040105010601030303010302040205020602"
)
PY12_SERVER_HELLO = bytes.fromhex(
    "16030300500200004c03035482a556737861ae579b569e3f61415e41c4fed71443318b444f574e4752440100"
    "c02c000024ff01000100000b000403000102002300000010000b000908687474702f312e3100170000"
)
CURL_HTTP_REQUEST = bytes.fromhex(
    "474554202f696e6465782e68746d6c3f713d3120485454502f312e310d0a486f73743a206578616d706c652e"
    "636f6d0d0a557365722d4167656e743a206375726c2f372e38382e310d0a4163636570743a202a2f2a0d0a0d"
    "0a"
)
CURL_H2_PRIOR_KNOWLEDGE = bytes.fromhex(
    "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a0000120400000000000003000000640004020000"
    "0000020000000000000408000000000001ff000100002201050000000182048562715634cf8641882f91d35d"
    "055c87a77a8825b650c3abbcf2e153032a2f2a"
)
H2_SERVER_RESPONSE = bytes.fromhex(
    "00000604000000000000030000006400000004010000000000000a010400000001885f87497ca58ae819aa"
)
SSH_CLIENT = bytes.fromhex(
    "5353482d322e302d4f70656e5353485f392e3270312044656269616e2d322b646562313275360d0a00000614"
    "0814902f433b31a9f86e4b4f0fd1e5c407470000"
)
CURL_SOCKS4 = bytes.fromhex("040100505db8d82200")
CURL_SOCKS4A = bytes.fromhex("04011f9000000001006578616d706c652e636f6d00")
CURL_SOCKS5_HOSTNAME = bytes.fromhex("05020001050100030b6578616d706c652e636f6d1f90")
CURL_SOCKS5_IPV4 = bytes.fromhex("05020001050100015db8d8220050")
CURL_PROXY_V1 = bytes.fromhex(
    "50524f58592054435034203132372e302e302e31203132372e302e302e312035333133302034373030390d0a"
    "474554202f20485454502f312e310d0a486f73743a203132372e302e302e313a34373030390d0a557365722d"
    "4167656e743a206375726c2f372e38382e310d0a4163636570743a202a2f2a0d0a0d0a"
)


# --- helpers ----------------------------------------------------------------------------------


def flow(c2s: bytes = b"", s2c: bytes = b"", port: int = 443, **kw: object) -> FlowView:
    return FlowView.from_bytes(c2s, s2c, server=("10.0.0.2", port), **kw)  # type: ignore[arg-type]


def detect(plugin: Plugin, c2s: bytes = b"", s2c: bytes = b"", port: int = 443) -> object:
    return plugin.detect(flow(c2s, s2c, port))


def findings(result: object) -> dict[str, object]:
    assert isinstance(result, Match), result
    return result.findings


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def ext(ext_type: int, body: bytes) -> bytes:
    return u16(ext_type) + u16(len(body)) + body


def sni_ext(name: bytes) -> bytes:
    entry = b"\x00" + u16(len(name)) + name
    return ext(0x0000, u16(len(entry)) + entry)


def alpn_ext(*protos: bytes) -> bytes:
    vec = b"".join(bytes([len(p)]) + p for p in protos)
    return ext(0x0010, u16(len(vec)) + vec)


def u16_list_ext(ext_type: int, values: list[int]) -> bytes:
    return ext(ext_type, u16(2 * len(values)) + b"".join(u16(v) for v in values))


def build_client_hello(ciphers: list[int], extensions: list[bytes], version: int = 0x0303) -> bytes:
    """A ClientHello in one record, laid out per RFC 8446 4.1.2."""
    exts = b"".join(extensions)
    body = (
        u16(version) + bytes(range(32)) + b"\x00"
        + u16(2 * len(ciphers)) + b"".join(u16(c) for c in ciphers)
        + b"\x01\x00" + u16(len(exts)) + exts
    )  # fmt: skip
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + u16(len(handshake)) + handshake


def refragment(record: bytes, size: int) -> bytes:
    """The handshake message of one record re-cut into records of ``size`` bytes."""
    msg = record[5:]
    return b"".join(
        record[:3] + u16(len(msg[i : i + size])) + msg[i : i + size]
        for i in range(0, len(msg), size)
    )


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- TLS --------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return text.split()


# Read off the hex dump of OPENSSL_CLIENT_HELLO by hand (not by the parser under test).
OPENSSL_CIPHERS = words(
    "1302 1303 1301 c02c c030 009f cca9 cca8 ccaa c02b c02f 009e c024 c028 006b c023 c027 0067 "
    "c00a c014 0039 c009 c013 0033 009d 009c 003d 003c 0035 002f 00ff"
)
OPENSSL_EXTENSIONS = words("0000 000b 000a 0023 0010 0016 0017 000d 002b 002d 0033")
OPENSSL_SIGALGS = words(
    "0403 0503 0603 0807 0808 0809 080a 080b 0804 0805 0806 0401 0501 0601 0303 0301 0302 "
    "0402 0502 0602"
)
OPENSSL_JA3 = (
    "771,"
    + "-".join(str(int(c, 16)) for c in OPENSSL_CIPHERS) + ","
    + "-".join(str(int(e, 16)) for e in OPENSSL_EXTENSIONS) + ","
    + "29-23-30-25-24-256-257-258-259-260,0-1-2"
)  # fmt: skip


def test_tls_openssl_client_hello() -> None:
    found = findings(detect(Tls(), OPENSSL_CLIENT_HELLO))
    assert found["sni"] == "example.com"
    assert found["alpn"] == ["h2", "http/1.1"]
    assert found["client_versions"] == ["TLS 1.3", "TLS 1.2", "TLS 1.1", "TLS 1.0"]
    assert found["ja3"] == hashlib.md5(OPENSSL_JA3.encode()).hexdigest()
    sorted_exts = sorted(e for e in OPENSSL_EXTENSIONS if e not in ("0000", "0010"))
    expected_ja4 = "t13d3111h2_{}_{}".format(
        sha12(",".join(sorted(OPENSSL_CIPHERS))),
        sha12(",".join(sorted_exts) + "_" + ",".join(OPENSSL_SIGALGS)),
    )
    assert found["ja4"] == expected_ja4
    assert "tls_version" not in found  # no ServerHello yet: client-side findings only
    json.dumps(found)


@pytest.mark.parametrize("hello", [OPENSSL_CLIENT_HELLO, PY13_CLIENT_HELLO, PY12_CLIENT_HELLO])
def test_tls_ja3_agrees_with_dpkt(hello: bytes) -> None:
    """JA3 recomputed from dpkt's TLS parser (a test dependency) as the reference."""
    dpkt = pytest.importorskip("dpkt")
    client_hello = dpkt.ssl.TLSHandshake(dpkt.ssl.TLSRecord(hello).data).data
    ciphers = [c.code for c in client_hello.ciphersuites if not tls_mod.is_grease(c.code)]
    exts = dict(client_hello.extensions)
    groups = [int.from_bytes(exts[10][i : i + 2], "big") for i in range(2, len(exts[10]), 2)]
    fields = [
        str(client_hello.version),
        "-".join(map(str, ciphers)),
        "-".join(str(t) for t, _ in client_hello.extensions if not tls_mod.is_grease(t)),
        "-".join(str(g) for g in groups if not tls_mod.is_grease(g)),
        "-".join(str(p) for p in exts[11][1:]),
    ]
    expected = hashlib.md5(",".join(fields).encode()).hexdigest()
    assert findings(detect(Tls(), hello))["ja3"] == expected


@pytest.mark.parametrize(
    ("c2s", "s2c", "sni", "alpn", "versions", "negotiated", "cipher"),
    [
        (PY13_CLIENT_HELLO, PY13_SERVER_HELLO, "www.example.org", ["h2", "http/1.1"],
         ["TLS 1.3", "TLS 1.2"], "TLS 1.3", "TLS_AES_256_GCM_SHA384"),
        (PY12_CLIENT_HELLO, PY12_SERVER_HELLO, "api.example.net", ["http/1.1"],
         ["TLS 1.2"], "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ],
)  # fmt: skip
def test_tls_python_handshakes(
    c2s: bytes, s2c: bytes, sni: str, alpn: list[str], versions: list[str], negotiated: str,
    cipher: str,
) -> None:  # fmt: skip
    found = findings(detect(Tls(), c2s, s2c))
    assert (found["sni"], found["alpn"], found["client_versions"]) == (sni, alpn, versions)
    assert (found["tls_version"], found["cipher"]) == (negotiated, cipher)
    assert tls_mod.server_hello_findings(s2c) == {"tls_version": negotiated, "cipher": cipher}
    # The ServerHello arriving in pieces completes nothing until it is whole.
    assert all(tls_mod.server_hello_findings(s2c[:i]) == {} for i in range(len(s2c)))
    client_only = findings(detect(Tls(), c2s))
    assert client_only == {k: v for k, v in found.items() if k not in ("tls_version", "cipher")}


def test_tls_ja4_version_and_counts_python13() -> None:
    ja4 = findings(detect(Tls(), PY13_CLIENT_HELLO))["ja4"]
    assert str(ja4).startswith("t13d1812h2_")  # 18 ciphers, 12 extensions (padding incl.)
    ja4_12 = findings(detect(Tls(), PY12_CLIENT_HELLO))["ja4"]
    assert str(ja4_12).startswith("t12d1508h1_")  # no supported_versions: legacy 1.2


@pytest.mark.parametrize("record_size", [0, 1, 7, 100])
def test_tls_client_hello_split_at_every_byte(record_size: int) -> None:
    """NEED_MORE on every strict prefix; the whole hello gives the same findings whether in
    one record or re-cut into records of ``record_size`` bytes (0: original record)."""
    hello = refragment(OPENSSL_CLIENT_HELLO, record_size) if record_size else OPENSSL_CLIENT_HELLO
    expected = findings(detect(Tls(), OPENSSL_CLIENT_HELLO))
    for i in range(len(hello)):
        assert detect(Tls(), hello[:i]) is NEED_MORE, i
    assert findings(detect(Tls(), hello)) == expected
    # Application data after the hello does not change anything.
    assert findings(detect(Tls(), hello + b"\x17\x03\x03\x00\x01x")) == expected


def test_tls_grease_is_ignored_and_odd_alpn_is_hexed() -> None:
    def hello(grease: bool) -> bytes:
        g = [0x1A1A] if grease else []
        return build_client_hello(
            g + [0x1301, 0xC02B],
            ([ext(0x3A3A, b"")] if grease else [])
            + [sni_ext(b"grease.test"), alpn_ext(b"\x01odd-"), u16_list_ext(0x000A, g + [29]),
               ext(0x002B, b"\x04" + u16(0x0304) + u16(0x0303)),
               u16_list_ext(0x000D, [0x0403, 0x0804])],
        )  # fmt: skip

    plain, greased = findings(detect(Tls(), hello(False))), findings(detect(Tls(), hello(True)))
    assert plain["ja3"] == greased["ja3"]
    assert plain["ja4"] == greased["ja4"]
    assert str(plain["ja4"]).startswith("t13d02050d_")  # "\x01odd-": hex 016f64642d -> "0" + "d"
    assert plain["client_versions"] == ["TLS 1.3", "TLS 1.2"]


def test_tls_hello_larger_than_budget_matches_on_its_prefix() -> None:
    big = build_client_hello(
        [0x1301], [sni_ext(b"big.example"), alpn_ext(b"h2"), ext(0x0015, bytes(9000))]
    )
    assert len(big) > 8192
    assert detect(Tls(), big[:4000]) is NEED_MORE  # the budget can still hold more
    found = findings(detect(Tls(), big[:8192]))
    assert found == {"sni": "big.example", "alpn": ["h2"], "client_versions": ["TLS 1.2"]}
    view = flow(big[:5000])
    view.c2s_bytes = len(big)  # the inspector kept only 5000 bytes of a longer stream
    assert findings(Tls().detect(view))["sni"] == "big.example"
    assert "ja3" in findings(detect(Tls(), big))  # whole: fingerprints too


def test_tls_sslv2_compatible_hello() -> None:
    specs = bytes.fromhex("0000ff00002f000035010080")  # 3-byte cipher kinds
    challenge = bytes(range(16))
    body = b"\x01" + u16(0x0303) + u16(len(specs)) + u16(0) + u16(len(challenge))
    hello = bytes([0x80 | (len(body) + len(specs) + 16) >> 8, (len(body) + len(specs) + 16) & 0xFF])
    hello += body + specs + challenge
    assert findings(detect(Tls(), hello)) == {"client_versions": ["TLS 1.2"]}
    assert all(detect(Tls(), hello[:i]) is NEED_MORE for i in range(11))
    assert detect(Tls(), b"\x80\x2e\x02") is NO_MATCH  # not MSG-CLIENT-HELLO


@pytest.mark.parametrize(
    "c2s",
    [
        b"\x16\x03\x05\x00\x10",  # record version 0x0305
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x00\x30\x02\x00\x00\x2c",  # ServerHello from the client
        b"\x17\x03\x03\x00\x10" + bytes(16),  # application data first (midstream)
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # hello too short to be one
        # A session id longer than 32 is ruled out before the rest arrives.
        OPENSSL_CLIENT_HELLO[:43] + b"\x21" + OPENSSL_CLIENT_HELLO[44:60],
    ],
)
def test_tls_not_tls(c2s: bytes) -> None:
    assert detect(Tls(), c2s) is NO_MATCH


def test_tls_server_first_is_not_tls() -> None:
    assert detect(Tls(), b"", SERVER_BANNER) is NO_MATCH
    assert detect(Tls(), b"", b"") is NEED_MORE


# --- HTTP/1.x ---------------------------------------------------------------------------------


def test_http_curl_request_and_status() -> None:
    found = findings(detect(Http(), CURL_HTTP_REQUEST, port=80))
    assert found == {"method": "GET", "path": "/index.html?q=1", "host": "example.com",
                     "user_agent": "curl/7.88.1"}  # fmt: skip
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert findings(detect(Http(), CURL_HTTP_REQUEST, reply))["status"] == 404
    assert response_findings(reply) == {"status": 404}
    assert response_findings(b"HTTP/1.1 20") == {}


def test_http_request_line_prefixes_need_more() -> None:
    end_of_line = CURL_HTTP_REQUEST.index(b"\r\n") + 2
    for i in range(1, len(CURL_HTTP_REQUEST)):
        assert detect(Http(), CURL_HTTP_REQUEST[:i]) is NEED_MORE, i
    # A complete request line decides as soon as the server has answered.
    found = findings(detect(Http(), CURL_HTTP_REQUEST[:end_of_line], b"HTTP/1.1 200 OK\r\n"))
    assert found == {"method": "GET", "path": "/index.html?q=1", "status": 200}


@pytest.mark.parametrize(
    ("request_bytes", "method", "path"),
    [
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "CONNECT",
         "example.com:443"),
        (b"PROPFIND /dav/ HTTP/1.1\r\nHost: dav\r\nDepth: 1\r\n\r\n", "PROPFIND", "/dav/"),
        (b"VERSION-CONTROL /f HTTP/1.1\nHost: dav\n\n", "VERSION-CONTROL", "/f"),
        (b"OPTIONS * HTTP/1.0\r\n\r\n", "OPTIONS", "*"),
        (b"MKCALENDAR /cal/ HTTP/1.1\r\nHost: c\r\n\r\n", "MKCALENDAR", "/cal/"),
    ],
)  # fmt: skip
def test_http_methods(request_bytes: bytes, method: str, path: str) -> None:
    found = findings(detect(Http(), request_bytes))
    assert (found["method"], found["path"]) == (method, path)


@pytest.mark.parametrize(
    "c2s",
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GETX / HTTP/1.1\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n",
        b"GET /\x00 HTTP/1.1\r\n",
        b"GET / FTP/1.1",
        b"\x16\x03\x01\x02\x00\x01",
        b"SSH-2.0-x\r\n",
        bytes(range(256)),
    ],
)
def test_http_rejects(c2s: bytes) -> None:
    assert detect(Http(), c2s) is NO_MATCH


def test_http_long_request_line_is_bounded() -> None:
    assert detect(Http(), b"GET /" + b"a" * 4000) is NEED_MORE
    # Budget spent with no line end: a known method and a clean target are enough (an
    # over-long URL is an attack on an HTTP server, and still HTTP: Zeek and Suricata agree).
    m = detect(Http(), b"GET /" + b"a" * 8187)
    assert isinstance(m, Match) and m.findings["method"] == "GET"
    assert m.findings["path"].startswith("/aaa")
    assert detect(Http(), b"GET " + b"\x01" * 8188) is NO_MATCH  # not a target at all


# --- HTTP/2 -----------------------------------------------------------------------------------


def test_http2_curl_prior_knowledge() -> None:
    pytest.importorskip("hpack")
    found = findings(detect(Http2(), CURL_H2_PRIOR_KNOWLEDGE, port=80))
    assert found == {"method": "GET", "host": "example.com", "path": "/h2path",
                     "user_agent": "curl/7.88.1"}  # fmt: skip
    both = findings(detect(Http2(), CURL_H2_PRIOR_KNOWLEDGE, H2_SERVER_RESPONSE))
    assert both["status"] == 200
    assert http2_mod.response_findings(H2_SERVER_RESPONSE) == {"status": 200}


def test_http2_preface_alone_and_prefixes() -> None:
    preface = http2_mod.PREFACE
    assert CURL_H2_PRIOR_KNOWLEDGE.startswith(preface)
    for i in range(1, len(preface)):
        assert detect(Http2(), preface[:i]) is NEED_MORE, i
    # The preface decides; until the first HEADERS is whole the match is incomplete.
    alone = detect(Http2(), preface)
    assert findings(alone) == {} and alone.complete is False  # type: ignore[union-attr]
    headers_end = len(CURL_H2_PRIOR_KNOWLEDGE)
    for cut in range(25, headers_end):
        got = detect(Http2(), CURL_H2_PRIOR_KNOWLEDGE[:cut])
        assert isinstance(got, Match) and got.complete is False and got.findings == {}, cut
    # The request is whole: complete only once the server's first HEADERS is there too.
    request = detect(Http2(), CURL_H2_PRIOR_KNOWLEDGE)
    assert findings(request)["method"] == "GET" and request.complete is False  # type: ignore[union-attr]
    both = detect(Http2(), CURL_H2_PRIOR_KNOWLEDGE, H2_SERVER_RESPONSE)
    assert findings(both)["status"] == 200 and both.complete is True  # type: ignore[union-attr]


def test_http2_server_speaks_first() -> None:
    # nghttpd sends its SETTINGS before the client's preface arrives.
    settings_frame = H2_SERVER_RESPONSE[:15]
    assert detect(Http2(), b"", settings_frame[:2]) is NEED_MORE
    assert detect(Http2(), b"", settings_frame) is NEED_MORE
    assert detect(Http2(), b"", H2_SERVER_RESPONSE) is NEED_MORE
    assert detect(Http2(), http2_mod.PREFACE[:10], settings_frame) is NEED_MORE
    assert isinstance(detect(Http2(), http2_mod.PREFACE, settings_frame), Match)
    # Anything but a SETTINGS frame on stream 0 first from the server is not HTTP/2.
    assert detect(Http2(), b"", b"220 mail.example.com ESMTP\r\n") is NO_MATCH
    assert detect(Http2(), b"", b"\x00\x00\x06\x04\x01") is NO_MATCH  # an ACK first
    assert detect(Http2(), b"", b"\x00\x00\x05\x04") is NO_MATCH  # length not 6n
    assert detect(Http2(), b"", b"\x00\x00\x06\x04\x00\x00\x00\x00\x01") is NO_MATCH


def test_http2_refine_reads_only_the_response() -> None:
    request = {"method": "GET", "path": "/", "host": "h", "user_agent": "ua"}
    v = FlowView.from_bytes(b"garbage, not read again", H2_SERVER_RESPONSE[:20],
                            findings=dict(request))  # fmt: skip
    got = Http2().detect(v)
    assert isinstance(got, Match) and got.complete is False and got.findings == {}
    v.s2c = H2_SERVER_RESPONSE
    got = Http2().detect(v)
    assert isinstance(got, Match) and got.complete is True and got.findings == {"status": 200}
    # GOAWAY from the server: the status will not come.
    goaway = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8)
    v.s2c = H2_SERVER_RESPONSE[:15] + goaway
    got = Http2().detect(v)
    assert isinstance(got, Match) and got.complete is True and got.findings == {}


def test_http2_rejects() -> None:
    assert detect(Http2(), CURL_HTTP_REQUEST) is NO_MATCH
    assert detect(Http2(), b"PRI * HTTP/1.1\r\n") is NO_MATCH
    assert detect(Http2(), b"", b"HTTP/1.1 400 Bad Request\r\n") is NO_MATCH
    # A HEADERS frame whose padding exceeds it is a framing error: no header findings.
    bad = http2_mod.PREFACE + b"\x00\x00\x01\x01\x0c\x00\x00\x00\x01\x05"
    assert findings(detect(Http2(), bad)) == {}


# --- SSH --------------------------------------------------------------------------------------


def test_ssh_server_first_then_both() -> None:
    server = SERVER_BANNER.decode().strip()
    assert findings(detect(Ssh(), b"", SERVER_BANNER, port=22)) == {"server_banner": server}
    found = findings(detect(Ssh(), SSH_CLIENT, SERVER_BANNER))
    assert found == {"client_banner": "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6",
                     "server_banner": server}  # fmt: skip
    assert ssh_mod.banner_findings(SSH_CLIENT, b"SSH-2.0-") == {"client_banner": server}


def test_ssh_prefixes_and_variants() -> None:
    for i in range(len(SERVER_BANNER) - 1):
        assert detect(Ssh(), b"", SERVER_BANNER[:i]) is NEED_MORE, i
    assert findings(detect(Ssh(), b"", b"SSH-1.99-Cisco-1.25\r\n")) == {
        "server_banner": "SSH-1.99-Cisco-1.25"
    }
    assert findings(detect(Ssh(), b"SSH-2.0-paramiko_3.4\n")) == {
        "client_banner": "SSH-2.0-paramiko_3.4"
    }


@pytest.mark.parametrize(
    ("c2s", "s2c"),
    [
        (b"", b"SSH-1.5-old\r\n"),
        (b"", b"SSH-2.0-" + b"a" * 300),
        (b"", b"SSH-2.0-bad\x01\r\n"),
        (CURL_HTTP_REQUEST, SERVER_BANNER),
        (b"", b"220 mail.example.com ESMTP\r\n"),
    ],
)
def test_ssh_rejects(c2s: bytes, s2c: bytes) -> None:
    assert detect(Ssh(), c2s, s2c) is NO_MATCH


# --- SOCKS ------------------------------------------------------------------------------------


def test_socks4_and_4a() -> None:
    assert findings(detect(Socks4(), CURL_SOCKS4, port=1080)) == {"target": "93.184.216.34:80"}
    assert findings(detect(Socks4(), CURL_SOCKS4A)) == {"target": "example.com:8080"}
    assert findings(detect(Socks4(), CURL_SOCKS4, b"\x00\x5a" + bytes(6)))["target"]
    assert detect(Socks4(), CURL_SOCKS4, b"\x05\x00") is NO_MATCH  # not a SOCKS4 reply
    for data in (CURL_SOCKS4, CURL_SOCKS4A):
        for i in range(1, len(data)):
            assert detect(Socks4(), data[:i]) is NEED_MORE, i
    assert detect(Socks4(), b"\x04\x03" + bytes(7)) is NO_MATCH  # no command 3 in SOCKS4
    assert detect(Socks4(), b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00") is NO_MATCH  # 4a, no host
    assert detect(Socks4(), b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"u" * 300) is NO_MATCH


def test_socks5_greeting_reply_and_request() -> None:
    greeting_len = 2 + CURL_SOCKS5_HOSTNAME[1]
    greeting = CURL_SOCKS5_HOSTNAME[:greeting_len]
    assert detect(Socks5(), greeting) is NEED_MORE  # too weak alone
    assert findings(detect(Socks5(), greeting, b"\x05\x00", port=1080)) == {}
    assert findings(detect(Socks5(), CURL_SOCKS5_HOSTNAME, b"\x05\x00")) == {
        "target": "example.com:8080"
    }
    assert findings(detect(Socks5(), CURL_SOCKS5_IPV4, b"\x05\x00")) == {
        "target": "93.184.216.34:80"
    }
    assert findings(detect(Socks5(), CURL_SOCKS5_HOSTNAME))["target"] == "example.com:8080"
    # Confirmed by the method selection: a match, incomplete until the target is in.
    assert detect(Socks5(), greeting, b"\x05\x00").complete is False  # type: ignore[union-attr]
    for i in range(greeting_len + 1, len(CURL_SOCKS5_HOSTNAME)):  # the request is arriving
        got = detect(Socks5(), CURL_SOCKS5_HOSTNAME[:i], b"\x05\x00")
        assert isinstance(got, Match) and got.complete is False and not got.findings, i
    for i in range(greeting_len + 1, len(CURL_SOCKS5_HOSTNAME)):  # no selection: wait
        assert detect(Socks5(), CURL_SOCKS5_HOSTNAME[:i]) is NEED_MORE, i
    refused = detect(Socks5(), greeting, b"\x05\xff")  # no acceptable method: no target
    assert findings(refused) == {} and refused.complete is True  # type: ignore[union-attr]
    assert detect(Socks5(), greeting, b"\x05\x02") is NO_MATCH  # method 02 was not offered


def test_socks5_ipv6_and_user_password() -> None:
    request = b"\x05\x01\x00\x04" + bytes.fromhex("20010db8000000000000000000000001") + u16(443)
    assert findings(detect(Socks5(), b"\x05\x01\x00" + request))["target"] == "[2001:db8::1]:443"
    auth = b"\x01\x04user\x04pass"
    c2s = b"\x05\x02\x00\x02" + auth + request
    assert findings(detect(Socks5(), c2s, b"\x05\x02\x01\x00"))["target"] == "[2001:db8::1]:443"
    assert findings(detect(Socks5(), b"\x05\x02\x00\x02", b"\x05\x02")) == {}
    got = detect(Socks5(), b"\x05\x02\x00\x02" + auth[:5], b"\x05\x02")
    assert isinstance(got, Match) and got.complete is False and not got.findings
    gssapi = detect(Socks5(), b"\x05\x02\x00\x01", b"\x05\x01")  # no readable request
    assert isinstance(gssapi, Match) and gssapi.complete is True
    assert detect(Socks5(), b"\x05\x02\x00\x02\x07", b"\x05\x02") is NO_MATCH  # bad sub-version


def test_socks_versions_do_not_cross() -> None:
    assert detect(Socks5(), CURL_SOCKS4) is NO_MATCH
    assert detect(Socks4(), CURL_SOCKS5_HOSTNAME, b"\x05\x00") is NO_MATCH
    assert detect(Socks5(), b"\x05\x00") is NO_MATCH  # zero methods


# --- PROXY protocol ---------------------------------------------------------------------------


def v2_header(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return pp_mod.V2_SIGNATURE + bytes([0x20 | command, family]) + u16(len(body)) + body


def test_proxy_v1() -> None:
    found = findings(detect(ProxyProtocol(), CURL_PROXY_V1, port=80))
    assert found == {"src": "127.0.0.1:53130", "dst": "127.0.0.1:47009"}
    line_end = CURL_PROXY_V1.index(b"\r\n") + 2
    assert pp_mod.header_length(CURL_PROXY_V1) == line_end
    assert detect(Http(), CURL_PROXY_V1[line_end:]) != NO_MATCH  # what follows is HTTP
    for i in range(1, line_end):
        assert detect(ProxyProtocol(), CURL_PROXY_V1[:i]) is NEED_MORE, i
    six = b"PROXY TCP6 2001:db8::1 ::1 40000 443\r\n"
    assert findings(detect(ProxyProtocol(), six)) == {"src": "[2001:db8::1]:40000",
                                                      "dst": "[::1]:443"}  # fmt: skip
    assert findings(detect(ProxyProtocol(), b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n")) == {}


@pytest.mark.parametrize(
    "c2s",
    [
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 " + b"1" * 120,
        b"PROXX",
        pp_mod.V2_SIGNATURE + b"\x31\x11",  # version 3
        pp_mod.V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # length < INET addresses
        pp_mod.V2_SIGNATURE + b"\x21\x41",  # family 4
    ],
)
def test_proxy_rejects(c2s: bytes) -> None:
    assert detect(ProxyProtocol(), c2s) is NO_MATCH


def test_proxy_v2() -> None:
    v4 = v2_header(1, 0x11, bytes([192, 0, 2, 1, 198, 51, 100, 7]) + u16(51000) + u16(443),
                   tlvs=b"\x04\x00\x01\x00")  # fmt: skip
    assert findings(detect(ProxyProtocol(), v4 + OPENSSL_CLIENT_HELLO)) == {
        "src": "192.0.2.1:51000", "dst": "198.51.100.7:443"
    }  # fmt: skip
    assert pp_mod.header_length(v4 + OPENSSL_CLIENT_HELLO) == len(v4)
    for i in range(1, 16 + 12):
        assert detect(ProxyProtocol(), v4[:i]) is NEED_MORE, i
    v6_addrs = bytes.fromhex("20010db8" + "00" * 11 + "01") + bytes(15) + b"\x01"
    v6 = v2_header(1, 0x21, v6_addrs + u16(1) + u16(2))
    assert findings(detect(ProxyProtocol(), v6)) == {"src": "[2001:db8::1]:1", "dst": "[::1]:2"}
    assert findings(detect(ProxyProtocol(), v2_header(0, 0x00, b""))) == {}  # LOCAL
    assert findings(detect(ProxyProtocol(), v2_header(1, 0x31, bytes(216)))) == {}  # UNIX


# --- all detectors together -------------------------------------------------------------------

SAMPLES: dict[str, tuple[str, bytes, bytes]] = {
    "openssl": ("tls", OPENSSL_CLIENT_HELLO, b""),
    "py13": ("tls", PY13_CLIENT_HELLO, PY13_SERVER_HELLO),
    "py12": ("tls", PY12_CLIENT_HELLO, PY12_SERVER_HELLO),
    "http": ("http", CURL_HTTP_REQUEST, b"HTTP/1.1 200 OK\r\n\r\n"),
    "h2": ("http2", CURL_H2_PRIOR_KNOWLEDGE, H2_SERVER_RESPONSE),
    "ssh": ("ssh", SSH_CLIENT, SERVER_BANNER),
    "ssh-server-only": ("ssh", b"", SERVER_BANNER),
    "socks4": ("socks4", CURL_SOCKS4, b"\x00\x5a" + bytes(6)),
    "socks4a": ("socks4", CURL_SOCKS4A, b""),
    "socks5": ("socks5", CURL_SOCKS5_HOSTNAME, b"\x05\x00"),
    "socks5-ip": ("socks5", CURL_SOCKS5_IPV4, b"\x05\x00"),
    "proxy-v1": ("proxy-protocol", CURL_PROXY_V1, b""),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_is_claimed_by_exactly_its_detector(name: str) -> None:
    protocol, c2s, s2c = SAMPLES[name]
    for plugin in DETECTORS:
        result = detect(plugin, c2s, s2c)
        if plugin.name == protocol:
            assert isinstance(result, Match) and result.protocol == protocol, plugin.name
            assert result.plugin == plugin.name
            json.dumps(result.findings)
        else:
            assert result is NO_MATCH, (plugin.name, result)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_port_is_only_a_hint(name: str) -> None:
    protocol, c2s, s2c = SAMPLES[name]
    plugin = next(p for p in DETECTORS if p.name == protocol)
    usual = next(iter(plugin.ports), 443) if plugin.ports else 443
    assert detect(plugin, c2s, s2c, port=40404) == detect(plugin, c2s, s2c, port=usual)


def _check(result: object) -> None:
    assert result in (NEED_MORE, NO_MATCH) or isinstance(result, Match)
    if isinstance(result, Match):
        json.dumps(result.findings)


@FUZZ
@given(st.binary(max_size=700), st.binary(max_size=200))
def test_random_bytes_never_raise(c2s: bytes, s2c: bytes) -> None:
    for plugin in DETECTORS:
        _check(detect(plugin, c2s, s2c))


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
    st.booleans(),
)
def test_mutated_samples_never_raise(
    name: str, edits: list[tuple[int, int]], cut: int, mutate_server: bool
) -> None:
    _, c2s, s2c = SAMPLES[name]
    data = bytearray(s2c if mutate_server else c2s)
    for index, value in edits:
        if data:
            data[index % len(data)] = value
    data = data[: cut % (len(data) + 1)]
    c2s, s2c = (c2s, bytes(data)) if mutate_server else (bytes(data), s2c)
    for plugin in DETECTORS:
        _check(detect(plugin, c2s, s2c))
    json.dumps(tls_mod.server_hello_findings(s2c))
    json.dumps(http2_mod.response_findings(s2c))
    json.dumps(ssh_mod.banner_findings(c2s, s2c))
    json.dumps(response_findings(s2c))


def test_random_junk_rarely_matches() -> None:
    rng = random.Random(20261127)
    matches = {p.name: 0 for p in DETECTORS}
    for _ in range(3000):
        c2s = rng.randbytes(rng.randint(1, 400))
        s2c = rng.randbytes(rng.randint(0, 60))
        for plugin in DETECTORS:
            if isinstance(detect(plugin, c2s, s2c), Match):
                matches[plugin.name] += 1
    assert all(n <= 3 for n in matches.values()), matches


@pytest.mark.parametrize(
    "c2s",
    [
        b"GET /" + b"a" * 8187,
        http2_mod.PREFACE + b"\x00\x00\x00\x00\x00\x00\x00\x00\x00" * 900,
        b"\x16\x03\x01\x3f\xff\x01\x00\x3f\xfb\x03\x03" + bytes(8181),
        b"PROXY " + b"1" * 8186,
        b"\x05\xff" + bytes(8190),
        b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"u" * 8184,
        bytes(8192),
        b"\r\n" * 4096,
    ],
)
def test_worst_case_early_bytes_are_fast(c2s: bytes) -> None:
    for plugin in DETECTORS:
        start = time.perf_counter()
        for _ in range(10):
            _check(detect(plugin, c2s, b"SSH-2.0-" + b"x" * 8184))
        assert (time.perf_counter() - start) / 10 < 0.02, plugin.name


# --- split arrival through the real inspector (uinet_tap.testing.run_bytes) --------------------
# A detector that matched with complete=False is asked again as data arrives; the default
# verdict waits until the findings are in (or the budget is spent).


@pytest.mark.parametrize("builtins", [False, True])
def test_split_socks5_ends_with_the_target(builtins: bool) -> None:
    greeting, request = CURL_SOCKS5_HOSTNAME[:4], CURL_SOCKS5_HOSTNAME[4:]
    reply = b"\x05\x00\x00\x01" + bytes(4) + u16(0)
    plugin = Socks5()
    r = run_bytes(plugin, c2s=[greeting, request], s2c=[b"\x05\x00", reply],
                  server_port=1080, builtins=builtins)  # fmt: skip
    assert r.protocol == "socks5" and r.findings == {"target": "example.com:8080"}
    assert r.verdict == "pass" and r.decided_by == "default"
    assert r.verdict_offset["c2s"] == len(CURL_SOCKS5_HOSTNAME)
    # The request itself arriving in pieces.
    pieces = [greeting, request[:3], request[3:9], request[9:]]
    r = run_bytes(Socks5(), c2s=pieces, s2c=[b"\x05\x00", b"", b"", reply], server_port=1080)
    assert r.findings == {"target": "example.com:8080"}


def test_split_server_hello_ends_with_version_and_cipher(monkeypatch) -> None:
    calls = []
    real = tls_mod.parse_client_hello

    def counting(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(tls_mod, "parse_client_hello", counting)
    for cut in (3, 40, len(PY13_SERVER_HELLO) - 1):
        calls.clear()
        r = run_bytes(Tls(), c2s=[PY13_CLIENT_HELLO], server_port=443,
                      s2c=[PY13_SERVER_HELLO[:cut], PY13_SERVER_HELLO[cut:]])  # fmt: skip
        assert r.protocol == "tls" and r.verdict == "pass", cut
        assert r.findings["tls_version"] == "TLS 1.3" and "cipher" in r.findings, cut
        assert r.findings["sni"] == "www.example.org" and "ja3" in r.findings, cut
        assert r.verdict_offset["s2c"] == len(PY13_SERVER_HELLO), cut
        assert len(calls) == 1, cut  # the ClientHello is parsed once, not again per segment
    # With all the built-in detectors too.
    r = run_bytes([], c2s=[PY12_CLIENT_HELLO], server_port=8443, builtins=True,
                  s2c=[PY12_SERVER_HELLO[:50], PY12_SERVER_HELLO[50:]])  # fmt: skip
    assert r.protocol == "tls" and r.findings["tls_version"] == "TLS 1.2"


def test_tls_refine_reads_only_the_server_hello() -> None:
    # Client-side findings present: c2s is not looked at again (garbage here on purpose).
    v = FlowView.from_bytes(b"not a hello", PY13_SERVER_HELLO[:20], server=("10.0.0.2", 443),
                            findings={"ja3": "x", "client_versions": ["TLS 1.3"]})  # fmt: skip
    got = Tls().detect(v)
    assert isinstance(got, Match) and got.complete is False and got.findings == {}
    v.s2c = PY13_SERVER_HELLO
    got = Tls().detect(v)
    assert isinstance(got, Match) and got.complete is True
    assert set(got.findings) == {"tls_version", "cipher"}
    v.s2c = b"\x15\x03\x03\x00\x02\x02\x28"  # an alert instead: the hello will not come
    got = Tls().detect(v)
    assert isinstance(got, Match) and got.complete is True and got.findings == {}


def test_tls_server_never_answers_or_alerts() -> None:
    r = run_bytes(Tls(), c2s=[PY13_CLIENT_HELLO], server_port=443)
    assert r.protocol == "tls" and r.verdict == "pass" and "ja3" in r.findings
    assert "tls_version" not in r.findings
    # Nothing from the server while the client keeps sending: the budget (20 segments) ends it.
    r = run_bytes(Tls(), c2s=[PY13_CLIENT_HELLO] + [b"\x17\x03\x03\x00\x01x"] * 40,
                  server_port=443)  # fmt: skip
    assert r.protocol == "tls" and r.decided_by == "default"
    assert r.verdict_offset["c2s"] < len(PY13_CLIENT_HELLO) + 7 * 40
    alert = b"\x15\x03\x03\x00\x02\x02\x28"
    r = run_bytes(Tls(), c2s=[PY13_CLIENT_HELLO], s2c=[alert], server_port=443)
    assert r.protocol == "tls" and r.verdict_offset["s2c"] == len(alert)
    assert "tls_version" not in r.findings


@pytest.mark.parametrize("builtins", [False, True])
def test_split_http2_preface_then_headers(builtins: bool) -> None:
    preface = http2_mod.PREFACE
    rest = CURL_H2_PRIOR_KNOWLEDGE[len(preface) :]
    r = run_bytes(Http2(), c2s=[preface, rest[:30], rest[30:]], s2c=[b"", b"",
                  H2_SERVER_RESPONSE[:20], H2_SERVER_RESPONSE[20:]], builtins=builtins)  # fmt: skip
    assert r.protocol == "http2" and r.verdict == "pass"
    assert r.findings["method"] == "GET" and r.findings["path"] == "/h2path"
    assert r.findings["host"] == "example.com" and r.findings["status"] == 200
    # The server speaks first (its SETTINGS before the client's preface), as nghttpd does.
    r = run_bytes(Http2(), c2s=[preface, rest], s2c=[H2_SERVER_RESPONSE[:15],
                  H2_SERVER_RESPONSE[15:]], server_first=True, builtins=builtins)  # fmt: skip
    assert r.protocol == "http2" and r.findings["method"] == "GET"
    assert r.findings["status"] == 200


def test_http2_request_only_ends_by_close() -> None:
    r = run_bytes(Http2(), c2s=[http2_mod.PREFACE, CURL_H2_PRIOR_KNOWLEDGE[24:]])
    assert r.protocol == "http2" and r.findings["path"] == "/h2path"
    assert "status" not in r.findings and r.verdict == "pass"


@pytest.mark.parametrize("builtins", [False, True])
def test_split_http_status_line(builtins: bool) -> None:
    r = run_bytes(Http(), c2s=[CURL_HTTP_REQUEST], builtins=builtins,
                  s2c=[b"HTTP/1.", b"1 2", b"04 No Content\r\n\r\n"])  # fmt: skip
    assert r.protocol == "http" and r.findings["status"] == 204
    assert r.findings["method"] == "GET" and r.verdict_offset["s2c"] == 27  # all three
    # A response that is not HTTP/1.x ends the wait without a status.
    r = run_bytes(Http(), c2s=[CURL_HTTP_REQUEST], s2c=[b"SSH-2.0-x\r\n", b"more"])
    assert r.protocol == "http" and "status" not in r.findings
    assert r.verdict_offset["s2c"] == 11


def test_http_response_status_prefixes() -> None:
    line = b"HTTP/1.1 200 OK\r\n"
    for i in range(13):
        assert http_mod.response_status(line[:i]) == (False, {}), i
    assert http_mod.response_status(line) == (True, {"status": 200})
    assert http_mod.response_status(b"HTTP/2") == (True, {})
    assert http_mod.response_status(b"HTTP/1.1 2x") == (True, {})
    assert http_mod.response_status(b"<html>") == (True, {})


def test_split_ssh_banners() -> None:
    banner = SSH_CLIENT[: SSH_CLIENT.index(b"\n") + 1]
    r = run_bytes(Ssh(), c2s=[banner[:10], banner[10:], SSH_CLIENT[len(banner) :]],
                  s2c=[b"", SERVER_BANNER[:8], SERVER_BANNER[8:]], server_port=22)  # fmt: skip
    assert r.protocol == "ssh" and set(r.findings) == {"client_banner", "server_banner"}
    r = run_bytes(Ssh(), c2s=[b"", banner], s2c=[SERVER_BANNER], server_port=22,
                  server_first=True)  # fmt: skip
    assert set(r.findings) == {"client_banner", "server_banner"}


def test_refine_ends_when_the_rest_is_not_coming() -> None:
    # SOCKS5 confirmed by the method selection, then bytes that are not a request.
    greeting = CURL_SOCKS5_HOSTNAME[:4]
    r = run_bytes(Socks5(), c2s=[greeting, b"\x07garbage"], s2c=[b"\x05\x00", b"more"],
                  server_port=1080)  # fmt: skip
    assert r.protocol == "socks5" and r.findings == {}
    assert r.verdict_offset == {"c2s": len(greeting) + 8, "s2c": 2}
    # SSH server banner, then a client that sends something else.
    r = run_bytes(Ssh(), c2s=[b"", b"GET / HTTP/1.1\r\n", b"x"], s2c=[SERVER_BANNER, b"y"],
                  server_port=22, server_first=True)  # fmt: skip
    assert r.protocol == "ssh" and set(r.findings) == {"server_banner"}
    assert r.verdict_offset["c2s"] == 16


@FUZZ
@given(st.binary(max_size=700), st.binary(max_size=300))
def test_refine_calls_never_raise(c2s: bytes, s2c: bytes) -> None:
    # Asked again after a match (findings so far in flow.findings, protocol set): any bytes.
    known = {"tls": {"ja3": "x", "client_versions": ["TLS 1.2"]}, "http": {"method": "GET"},
             "http2": {"method": "GET"}, "ssh": {"client_banner": "SSH-2.0-x"}}  # fmt: skip
    for plugin in DETECTORS:
        v = FlowView.from_bytes(c2s, s2c, findings=dict(known.get(plugin.name, {})))
        v.protocol = plugin.name
        _check(plugin.detect(v))


def test_socks5_gssapi_selected_matches_complete_without_target() -> None:
    got = detect(Socks5(), b"\x05\x02\x00\x01" + b"\x01\x01\x00\x04tokn", b"\x05\x01")
    assert isinstance(got, Match) and got.complete is True and got.findings == {}
