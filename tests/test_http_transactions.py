"""HTTP/1.x transactions (plugins/http_transactions.py): the follower on exchanges whose
framing is known by construction (keep-alive, pipelining, chunked, HEAD, 1xx/204/304, bodies
delimited by the close, CONNECT), under every segmentation; and the same transactions in the
records of both data paths (C skips bodies, handing over only what the follower reads)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import Conversation, frames, write_pcap  # noqa: E402
from uinet_tap.plugins.http_transactions import (
    MAX_HEAD,
    MAX_TRANSACTIONS,
    NEVER,
    HttpTransactions,
)

EXE = Path(sys.executable).parent / "uinet-tap"


def req(method: str, path: str, body: bytes = b"", chunked: bool = False, host: str = "h") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t/1\r\n"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunk(body)
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def resp(status: int, body: bytes = b"", mode: str = "length", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nServer: t\r\n{extra}"
    if mode == "length":
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    if mode == "chunked":
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunk(body)
    if mode == "close":
        return (head + "\r\n").encode() + body
    return (head + "\r\n").encode()  # none: no body by the method or the status


def chunk(body: bytes, size: int = 7) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n"
    return out + b"0\r\nTrailer: x\r\n\r\n"


# (requests, responses, the transactions they make) by construction
BODY = bytes(range(256)) * 40
CASES = {
    "keep-alive": (
        [req("GET", "/a"), req("POST", "/b", b"form=1"), req("GET", "/c")],
        [resp(200, BODY), resp(201, b""), resp(404, b"gone")],
        [("GET", "/a", 200, len(BODY)), ("POST", "/b", 201, 0), ("GET", "/c", 404, 4)],
    ),
    "chunked both ways": (
        [req("PUT", "/up", BODY[:100], chunked=True), req("GET", "/down")],
        [resp(200, b"ok"), resp(200, BODY, "chunked")],
        [("PUT", "/up", 200, 2), ("GET", "/down", 200, len(BODY))],
    ),
    "no bodies by rule": (
        [req("HEAD", "/h"), req("GET", "/nc"), req("GET", "/nm"), req("GET", "/z")],
        [
            resp(200, mode="none", extra="Content-Length: 9999\r\n"),  # HEAD: no body
            resp(204, mode="none"),
            resp(304, mode="none", extra="Content-Length: 9999\r\n"),
            resp(200, b"zz"),
        ],
        [
            ("HEAD", "/h", 200, 0),
            ("GET", "/nc", 204, 0),
            ("GET", "/nm", 304, 0),
            ("GET", "/z", 200, 2),
        ],
    ),  # fmt: skip
    "interim 100 continue": (
        [req("POST", "/p", b"x" * 50)],
        [resp(100, mode="none") + resp(200, b"done")],
        [("POST", "/p", 200, 4)],
    ),
    "body to the close": (
        [req("GET", "/old")],
        [resp(200, BODY[:3000], mode="close")],
        [("GET", "/old", 200, 3000)],
    ),
    "empty lines between messages": (
        [req("GET", "/1"), b"\r\n" + req("GET", "/2")],
        [resp(200, b"abc") + b"\r\n", b"\n" + resp(404, b"")],
        [("GET", "/1", 200, 3), ("GET", "/2", 404, 0)],
    ),
    "connect tunnel": (
        [req("CONNECT", "example:443") + b"\x16\x03\x01\x00\x05hello"],
        [resp(200, mode="none") + b"\x16\x03\x03tunnel bytes"],
        [("CONNECT", "example:443", 200, 0)],
    ),
}


def expected(case: str) -> list[dict]:
    return [{"method": m, "path": p, "status": s, "length": n} for m, p, s, n in CASES[case][2]]


def summary(txs: list[dict]) -> list[dict]:
    return [{k: tx.get(k) for k in ("method", "path", "status", "length")} for tx in txs]


def follow(c2s: bytes, s2c: bytes, cuts: list[int] | None = None) -> HttpTransactions:
    """Feed both streams (requests first, as a client speaks first), cut at ``cuts``."""
    f = HttpTransactions()
    for d, data in ((0, c2s), (1, s2c)):
        bounds = sorted({0, len(data), *[c % (len(data) + 1) for c in cuts or []]})
        for a, b in zip(bounds, bounds[1:], strict=False):
            f.data(d, a, data[a:b])
    f.finish((len(c2s), len(s2c)))
    return f


@pytest.mark.parametrize("case", CASES)
def test_transactions_by_construction(case: str):
    reqs, resps, _ = CASES[case]
    f = follow(b"".join(reqs), b"".join(resps))
    assert summary(f.transactions) == expected(case)
    assert f.transactions[0]["protocol"] == "HTTP/1.1"
    assert f.transactions[0]["host"] == "h" and f.transactions[0]["user_agent"] == "t/1"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(CASES)), st.lists(st.integers(0, 20000), max_size=12))
def test_any_segmentation_gives_the_same_transactions(case: str, cuts: list[int]):
    reqs, resps, _ = CASES[case]
    assert summary(follow(b"".join(reqs), b"".join(resps), cuts).transactions) == expected(case)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(CASES)), st.integers(0, 2**32))
def test_bytes_it_does_not_want_need_not_come(case: str, seed: int):
    """What C does: bytes before want() may be hashed in place and never handed over; the
    follower finds the same transactions from what it is handed."""
    reqs, resps, _ = CASES[case]
    rng = random.Random(seed)
    f = HttpTransactions()
    for d, stream in ((0, b"".join(reqs)), (1, b"".join(resps))):
        pos = 0
        while pos < len(stream):
            n = rng.randint(1, 1500)
            want = f.want(d)
            if pos + n <= want:  # C hashes it; nothing is handed over
                pos += n
                continue
            f.data(d, pos, stream[pos : pos + n])
            pos += n
    f.finish((len(b"".join(reqs)), len(b"".join(resps))))
    assert summary(f.transactions) == expected(case)


def test_a_body_skipped_in_place_costs_no_hand_over():
    f = HttpTransactions()
    f.data(0, 0, req("GET", "/big"))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
    f.data(1, 0, head + b"x" * 100)
    assert f.want(1) == len(head) + 1_000_000  # the body's end: C hashes up to there
    assert f.want(0) == len(req("GET", "/big"))  # the next request, whenever it comes


def test_not_http_stops_at_once():
    f = HttpTransactions()
    f.data(0, 0, b"\x16\x03\x01\x02\x00")  # a TLS ClientHello
    assert f.want(0) == f.want(1) == NEVER and f.stopped and not f.transactions
    f = HttpTransactions()
    f.data(1, 0, b"220 mail.example ESMTP\r\n")  # a server's banner
    assert f.want(1) == NEVER and not f.transactions


def test_a_gap_in_a_body_is_skipped_but_not_in_a_header():
    f = HttpTransactions()
    r = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    f.data(0, 0, req("GET", "/x") + req("GET", "/y"))
    f.data(1, 0, r + b"a" * 100)
    f.gap(1, len(r) + 100, 1000)  # inside the body
    f.data(1, len(r) + 1100, b"b" * 3900 + resp(200, b"ok"))
    f.finish((0, 0))
    assert summary(f.transactions) == [
        {"method": "GET", "path": "/x", "status": 200, "length": 5000},
        {"method": "GET", "path": "/y", "status": 200, "length": 2},
    ]
    f = HttpTransactions()
    f.data(0, 0, b"GET /x HTTP/1.1\r\nHo")
    f.gap(0, 19, 10)  # inside the header block: framing is lost
    assert f.stopped and f.want(0) == NEVER


def test_bounds():
    f = HttpTransactions()
    f.data(0, 0, b"GET /" + b"a" * (MAX_HEAD + 10))  # a header block that never ends
    assert f.stopped and "beyond" in f.stopped
    f = HttpTransactions()
    n = MAX_TRANSACTIONS + 5
    f.data(0, 0, req("GET", "/") * n)
    f.data(1, 0, resp(200, b"k") * n)
    assert len(f.transactions) == MAX_TRANSACTIONS and f.dropped == 5
    f = HttpTransactions()
    f.data(0, 0, req("GET", "/" + "u" * 5000))
    assert len(f.transactions[0]["path"]) == 1024  # a record stays bounded


# -- through the engine: both data paths, real segmentation -------------------------------------


def capture(tmp_path: Path, case: str) -> Path:
    """One connection per case; requests and responses alternate as a keep-alive client
    sends them (pipelined for the no-body case), segments of at most 1,448 bytes."""
    reqs, resps, _ = CASES[case]
    cv = Conversation()
    segs = cv.handshake()

    def send(side: str, data: bytes) -> None:
        for i in range(0, len(data), 1448):
            segs.append(cv.c(data[i : i + 1448]) if side == "c" else cv.s(data[i : i + 1448]))

    if case == "no bodies by rule":
        send("c", b"".join(reqs))
        send("s", b"".join(resps))
    else:
        for r, s in zip(reqs, resps, strict=True):
            send("c", r)
            send("s", s)
    segs += [cv.ack("c"), cv.fin("s"), cv.fin("c"), cv.ack("s")]
    path = tmp_path / "c.pcap"
    write_pcap(path, frames(segs))
    return path


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("path", ["c", "off"])
def test_records_carry_the_transactions(tmp_path: Path, case: str, path: str):
    p = subprocess.run(
        [str(EXE), "replay", "-q", "--flows", "-", str(capture(tmp_path, case))],
        capture_output=True, text=True, timeout=60, env={**os.environ, "UINET_TAP_FASTPATH": path},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    (rec,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert summary(rec["transactions"]) == expected(case)
    # a tunnel ends what HTTP there is to read, and the record says so
    stopped = rec.get("transactions_stopped")
    assert stopped == ("the connection switched protocols" if case == "connect tunnel" else None)


def test_no_transactions_leaves_them_out(tmp_path: Path):
    p = subprocess.run(
        [str(EXE), "replay", "-q", "--no-transactions", "--flows", "-",
         str(capture(tmp_path, "keep-alive"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (rec,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert "transactions" not in rec and rec["findings"]["path"] == "/a"
