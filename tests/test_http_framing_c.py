"""The HTTP transaction follower's framing read in C (stack/_follow.c) against the follower
read in Python (plugins/http_transactions.py, the reference): generated exchanges of every
framing the follower knows and of shapes C must hand back (chunked, bodies to the close,
interim and switching responses, CONNECT, empty lines, odd or hostile Content-Length values,
bare LF, split header blocks, pipelining), cut into segments at random, through both data
paths: identical records (every transaction, every field) and run statistics; and C reads
the plain blocks itself."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import Conversation, frames  # noqa: E402
from uinet_tap.plugins.http_transactions import HttpTransactions  # noqa: E402
from uinet_tap.plugins.registry import builtin_detectors  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402

from uinet_tap.api import _batches  # noqa: E402
from uinet_tap.engine import Engine, Options  # noqa: E402

pytestmark = pytest.mark.skipif(not fastpath.AVAILABLE, reason="the C fast path is not built")

# A connection is plain (what C reads itself, now and then something it hands back) or
# hostile (every odd shape, often).
METHODS = ["GET", "GET", "POST", "HEAD", "PUT", "OPTIONS"]
ODD_METHODS = ["CONNECT", "BREW", "get"]
STATUSES = [200, 200, 200, 201, 204, 304, 404, 100]
ODD_STATUSES = [101, 199, 1000]
LENGTHS = ["ok", "ok", "ok", "ok", "ok", "none", "chunked", "dup"]
ODD_LENGTHS = ["²", "+5", "5 5", "", "0x10", "9" * 19]


def _pick(rng: random.Random, plain: list, odd: list, hostile: bool):  # type: ignore[no-untyped-def]
    return rng.choice(plain + odd if hostile else plain)


def _request(rng: random.Random, eol: bytes, hostile: bool) -> tuple[bytes, str]:
    method = _pick(rng, METHODS, ODD_METHODS, hostile)
    path = _pick(rng, ["/", "/a?b=c", "/" + "p" * rng.randrange(1, 2000)], ["/x y"], hostile)
    head = f"{method} {path} HTTP/1.{rng.choice('1110')}".encode() + eol
    fields = [b"Host: " + rng.choice([b"h.example", b"", b" spaced "]),
              b"User-Agent:" + rng.choice([b"t/1", b"\tua\t"])]  # fmt: skip
    body = b""
    length = _pick(rng, LENGTHS, ODD_LENGTHS, hostile)
    if method in ("POST", "PUT") or rng.random() < 0.1:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
    fields += _framing(rng, length, body)
    if rng.random() < (0.2 if hostile else 0.05):
        fields.append(rng.choice([b"Transfer-Encoding:", b"Transfer-Encoding: gzip",
                                  b"X: y", b"no colon here", b"CONTENT-LENGTH: 3"]))  # fmt: skip
    rng.shuffle(fields)
    if length == "chunked":
        body = _chunks(body, eol)
    lead = rng.choice([b"\r\n", b"\n"]) if rng.random() < (0.3 if hostile else 0.03) else b""
    return lead + head + b"".join(f + eol for f in fields) + eol + body, method


def _framing(rng: random.Random, length: str, body: bytes) -> list[bytes]:
    if length == "ok":
        return [b"Content-Length: %d" % len(body)]
    if length == "chunked":
        return [b"Transfer-Encoding: chunked"]
    if length == "dup":
        return [b"Content-Length: %d" % len(body), b"content-length: 7"]
    if length == "none":
        return []
    return [f"Content-Length: {length}".encode("latin-1")]


def _chunks(body: bytes, eol: bytes) -> bytes:
    out = b""
    for i in range(0, len(body), 700):
        part = body[i : i + 700]
        out += b"%x" % len(part) + eol + part + eol
    return out + b"0" + eol + eol


def _response(rng: random.Random, eol: bytes, method: str, hostile: bool) -> bytes:
    out = b""
    status = _pick(rng, STATUSES, ODD_STATUSES, hostile)
    if status == 100:
        out += b"HTTP/1.1 100 Continue" + eol + eol
        status = 200
    line = _pick(rng, [b"HTTP/1.1 %d OK", b"HTTP/1.0 %d"], [b"HTTP/1.1  %d X", b"HTTP/2 %d"],
                 hostile)  # fmt: skip
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4000)))
    length = _pick(rng, LENGTHS, ODD_LENGTHS, hostile)
    fields = [b"Server: t"] + _framing(rng, length, body)
    if length == "chunked":
        body = _chunks(body, eol)
    if method == "HEAD" or status in (204, 304):
        body = b""
    return out + line % status + eol + b"".join(f + eol for f in fields) + eol + body


def _connection(rng: random.Random, port: int) -> list:
    cv = Conversation(cport=port, cisn=rng.randrange(2**32), sisn=rng.randrange(2**32))
    segs = cv.handshake()
    eol = rng.choice([b"\r\n", b"\r\n", b"\n"])
    hostile = rng.random() < 0.4
    exchanges = [_request(rng, eol, hostile) for _ in range(rng.randrange(1, 7))]
    responses = [_response(rng, eol, m, hostile) for _, m in exchanges]
    pipelined = rng.random() < 0.3

    def send(side: str, data: bytes) -> None:
        at = 0
        while at < len(data):
            n = rng.choice([1, 7, 100, 3000]) if rng.random() < 0.1 else 1448
            segs.append(cv.data(side, data[at : at + n]))
            segs.append(cv.ack("s" if side == "c" else "c"))
            at += n

    if pipelined:
        send("c", b"".join(r for r, _ in exchanges))
        send("s", b"".join(responses))
    else:
        for (r, _), s in zip(exchanges, responses, strict=True):
            send("c", r)
            send("s", s)
    return segs + [cv.fin("c"), cv.fin("s"), cv.ack("c")]


def _run(frames_: list, mode: str) -> tuple[list[dict], dict]:
    records: list[dict] = []
    engine = Engine(1, Options(fastpath=mode), records.append, plugins=builtin_detectors())
    for batch in _batches(frames_, 1):
        engine.feed_batch(batch)
    engine.finish()
    return sorted(records, key=lambda r: r["id"]), engine.stats()


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """Counts the header blocks C read, checking each found the follower where C was."""
    seen = [0]
    original = HttpTransactions.read_head

    def read_head(self, *args):  # type: ignore[no-untyped-def]
        original(self, *args)
        assert self.unexpected == 0, "C read a block where the follower was not"
        seen[0] += 1

    monkeypatch.setattr(HttpTransactions, "read_head", read_head)
    return seen


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), conns=st.integers(1, 4))
def test_c_framing_gives_the_same_records(reads, seed: int, conns: int):
    rng = random.Random(seed)
    segs = [s for i in range(conns) for s in _connection(rng, 30000 + i)]
    fr = frames(segs)
    ref = _run(fr, "off")
    got = _run(fr, "c")
    assert got[1] == ref[1]
    for a, b in zip(got[0], ref[0], strict=True):
        assert a == b, b.get("transactions")


def test_c_reads_the_plain_blocks_itself(reads):
    """Not vacuous: keep-alive exchanges with Content-Length bodies are read in C, and the
    transactions are those sent."""
    rng = random.Random(5)
    segs = []
    for i in range(20):
        cv = Conversation(cport=31000 + i, cisn=rng.randrange(2**32))
        segs += cv.handshake()
        for k in range(3):
            body = bytes(rng.randrange(256) for _ in range(5000))
            segs += [cv.c(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % k), cv.ack("s")]
            data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            for at in range(0, len(data), 1448):
                segs += [cv.s(data[at : at + 1448]), cv.ack("c")]
        segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    records, _ = _run(frames(segs), "c")
    assert reads[0] >= 100, reads[0]  # 120 blocks; the first request may be the detector's
    for rec in records:
        txs = [(t["path"], t["status"], t["length"]) for t in rec["transactions"]]
        assert txs == [(f"/{k}", 200, 5000) for k in range(3)]


def test_a_content_length_python_cannot_read_stops_the_follower():
    """'²' is a digit to str.isdigit() and not to int(): the follower says why it stopped
    (it raised before), on both paths."""
    f = HttpTransactions()
    f.data(0, 0, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f.data(1, 0, "HTTP/1.1 200 OK\r\nContent-Length: ²\r\n\r\nxx".encode("latin-1"))
    assert f.stopped == "an invalid Content-Length"
    assert f.transactions == [{"method": "GET", "path": "/", "protocol": "HTTP/1.1", "host": "h",
                               "status": 200}]  # fmt: skip
