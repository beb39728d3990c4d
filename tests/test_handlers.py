"""plugins/handlers.py: relay, rewrite, respond and tee over in-memory endpoints (no network).

The test plays both remote peers: ``FakeEndpoint.feed`` / ``eof`` / ``reset`` are what the
client (or server) sends; ``written`` / ``closed`` / ``aborted`` record what the handler did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uinet_tap.plugins import conn as conn_module
from uinet_tap.plugins import handlers
from uinet_tap.plugins.api import FlowView
from uinet_tap.plugins.handlers import Rewriter, make_handler, relay, respond, rewrite

_RESET = object()


class FakeEndpoint:
    def __init__(self, drain_resets: bool = False) -> None:
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._pending = b""
        self._eof = False
        self._reset = False
        self.drain_resets = drain_resets
        self.written = bytearray()
        self.closed = False
        self.aborted = False

    # the remote peer
    def feed(self, *chunks: bytes) -> None:
        for c in chunks:
            self._inbox.put_nowait(c)

    def eof(self) -> None:
        self._inbox.put_nowait(None)

    def reset(self) -> None:
        self._inbox.put_nowait(_RESET)

    # the Endpoint protocol
    async def read(self, n: int = 65536) -> bytes:
        if self._reset:
            raise ConnectionResetError
        if not self._pending:
            if self._eof:
                return b""
            item = await self._inbox.get()
            if item is None:
                self._eof = True
                return b""
            if item is _RESET:
                self._reset = True
                raise ConnectionResetError
            assert isinstance(item, bytes)
            self._pending = item
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.aborted, "write after close/abort"
        assert data, "empty write"
        self.written += data

    async def drain(self) -> None:
        if self.drain_resets:
            raise ConnectionResetError

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


@dataclass
class FakeConn:
    client: FakeEndpoint = field(default_factory=FakeEndpoint)
    server: FakeEndpoint = field(default_factory=FakeEndpoint)
    flow: FlowView = field(
        default_factory=lambda: FlowView(7, ("10.0.0.1", 40000), ("10.0.0.2", 80))
    )


def run(make: Callable[[], Awaitable[None]], timeout: float = 5.0) -> None:
    """Run a test body on a fresh loop (queues are made inside it)."""

    async def main() -> None:
        await asyncio.wait_for(make(), timeout)

    asyncio.run(main())


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


# --------------------------------------------------------------------------- relay


def test_relay_copies_both_ways_and_closes():
    async def body() -> None:
        c = FakeConn()
        c.client.feed(b"GET / HTTP/1.0\r\n", b"\r\n")
        c.client.eof()
        c.server.feed(b"HTTP/1.0 200 OK\r\n\r\n", b"hi")
        c.server.eof()
        await make_handler("relay", {})(c)  # type: ignore[arg-type]
        assert c.server.written == b"GET / HTTP/1.0\r\n\r\n"
        assert c.client.written == b"HTTP/1.0 200 OK\r\n\r\nhi"
        assert c.client.closed and c.server.closed
        assert not c.client.aborted and not c.server.aborted

    run(body)


def test_relay_half_close_keeps_the_other_direction_open():
    async def body() -> None:
        c = FakeConn()
        c.client.feed(b"request")
        c.client.eof()
        task = asyncio.ensure_future(relay(c))  # type: ignore[arg-type]
        await until(lambda: c.server.closed)  # the client's FIN went on to the server
        assert not c.client.closed and not task.done()
        c.server.feed(b"late answer")
        c.server.eof()
        await task
        assert c.client.written == b"late answer" and c.client.closed

    run(body)


@pytest.mark.parametrize("side", ["client", "server"])
def test_relay_reset_on_one_side_aborts_the_other(side):
    async def body() -> None:
        c = FakeConn()
        reset, other = (c.client, c.server) if side == "client" else (c.server, c.client)
        reset.feed(b"some")
        reset.reset()
        await relay(c)  # type: ignore[arg-type]  # returns: the other direction is stopped
        assert other.aborted and not reset.aborted
        assert other.written == b"some" and not other.closed

    run(body)


def test_relay_reset_after_the_other_direction_finished():
    async def body() -> None:
        c = FakeConn()
        c.client.feed(b"q")
        c.client.eof()
        c.server.feed(b"partial")
        c.server.reset()
        await relay(c)  # type: ignore[arg-type]
        assert c.server.closed and c.client.aborted and c.client.written == b"partial"

    run(body)


def test_relay_reset_seen_when_writing_aborts_the_source():
    async def body() -> None:
        c = FakeConn(server=FakeEndpoint(drain_resets=True))
        c.client.feed(b"to a server that is gone")
        await relay(c)  # type: ignore[arg-type]
        assert c.client.aborted

    run(body)


def test_pipe_and_relay_still_importable_from_conn():
    assert conn_module.relay is handlers.relay and conn_module.pipe is handlers.pipe


# --------------------------------------------------------------------------- Rewriter

_ALPHABET = st.sampled_from([b"a", b"b", b"c", b"ab", b"ba"])


@settings(max_examples=400, derandomize=True)
@given(
    pattern=st.binary(min_size=1, max_size=5).map(lambda b: bytes(b"ab"[x % 2] for x in b)),
    replace=st.sampled_from([b"", b"X", b"YYYYYY", b"a"]),
    pieces=st.lists(_ALPHABET, max_size=30),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_rewriter_equals_bytes_replace_for_any_split(pattern, replace, pieces, cuts):
    stream = b"".join(pieces)
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    r = Rewriter(pattern, replace)
    out = b""
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out += r.feed(stream[lo:hi])
        # never more held back than a proper prefix of the pattern
        assert len(r.held) < len(pattern) and pattern.startswith(r.held)
    out += r.flush()
    assert out == stream.replace(pattern, replace)


def test_rewriter_holds_back_only_a_possible_start_of_the_pattern():
    r = Rewriter(b"Hello", b"HELLO")
    assert r.feed(b"abc") == b"abc" and r.held == b""
    assert r.feed(b"xxHel") == b"xx" and r.held == b"Hel"
    assert r.feed(b"lo!") == b"HELLO!"
    assert r.feed(b"HeH") == b"He" and r.held == b"H"  # "HeH" cannot be one; "H" can
    assert r.feed(b"x") == b"Hx"


def test_rewriter_rejects_an_empty_pattern():
    with pytest.raises(ValueError):
        Rewriter(b"", b"x")


# --------------------------------------------------------------------------- rewrite handler

CASES = {
    "middle": (b"Hello", b"say Hello to me"),
    "start": (b"Hello", b"Hello there"),
    "end": (b"Hello", b"there Hello"),
    "repeated": (b"Hello", b"HelloHello Hello"),
    "overlapping": (b"aba", b"ababababa"),
    "self-prefix": (b"aab", b"aaaab aab"),
    "one-byte": (b"x", b"xyx"),
}


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rewrite_at_every_split_point(case, direction):
    pattern, stream = case
    replace = b"<" + pattern.upper() + b">"
    handler = make_handler(
        "rewrite",
        {"direction": direction, "pattern": pattern.decode(), "replace": replace.decode()},
    )

    async def body() -> None:
        for k in range(len(stream) + 1):
            c = FakeConn()
            src, dst = (c.client, c.server) if direction == "c2s" else (c.server, c.client)
            other_src, other_dst = (
                (c.server, c.client) if direction == "c2s" else (c.client, c.server)
            )
            src.feed(*(x for x in (stream[:k], stream[k:]) if x))
            src.eof()
            other_src.feed(stream)  # the other direction is not rewritten
            other_src.eof()
            await handler(c)  # type: ignore[arg-type]
            assert dst.written == stream.replace(pattern, replace), k
            assert other_dst.written == stream
            assert c.client.closed and c.server.closed

    run(body)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(
    pieces=st.lists(st.sampled_from([b"He", b"llo", b"Hello", b"x", b"H", b"l"]), max_size=15),
    cuts=st.lists(st.integers(0, 50), max_size=6),
    direction=st.sampled_from(["c2s", "s2c"]),
)
def test_rewrite_handler_random_splits(pieces, cuts, direction):
    stream = b"".join(pieces)
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    async def body() -> None:
        c = FakeConn()
        src, dst = (c.client, c.server) if direction == "c2s" else (c.server, c.client)
        src.feed(*chunks)
        src.eof()
        (c.server if direction == "c2s" else c.client).eof()
        await rewrite(c, b"Hello", b"J", direction, hold=30.0)  # type: ignore[arg-type]
        assert dst.written == stream.replace(b"Hello", b"J")

    run(body)


def test_rewrite_sends_what_cannot_start_the_pattern_at_once():
    async def body() -> None:
        c = FakeConn()
        c.server.feed(b"200 OK\r\nxxHel")
        task = asyncio.ensure_future(rewrite(c, b"Hello", b"Howdy", "s2c", hold=30.0))  # type: ignore[arg-type]
        await until(lambda: c.client.written == b"200 OK\r\nxx")
        c.server.feed(b"lo")
        await until(lambda: c.client.written == b"200 OK\r\nxxHowdy")
        c.client.eof()
        c.server.eof()
        await task

    run(body)


def test_rewrite_flushes_a_held_tail_when_the_source_goes_quiet():
    # A response ending in "Hel" must not wait for bytes that only come after the client's
    # next request: after `hold` seconds of silence the tail goes out unchanged.
    async def body() -> None:
        c = FakeConn()
        c.server.feed(b"+OK Hel")
        task = asyncio.ensure_future(rewrite(c, b"Hello", b"Howdy", "s2c", hold=0.05))  # type: ignore[arg-type]
        await until(lambda: c.client.written == b"+OK Hel", timeout=2.0)
        c.server.feed(b"lo")  # too late to make a "Hello": it passes as is
        await until(lambda: c.client.written == b"+OK Hello")
        c.client.eof()
        c.server.eof()
        await task

    run(body)


# --------------------------------------------------------------------------- respond


@pytest.mark.parametrize(
    "options",
    [{"data": "HTTP/1.0 403 Forbidden\r\n\r\nnö"}, {"data_hex": "48540a00ff"}],
    ids=["data", "data_hex"],
)
def test_respond_writes_then_closes_both_and_waits_for_their_fins(options):
    want = options["data"].encode() if "data" in options else bytes.fromhex(options["data_hex"])

    async def body() -> None:
        c = FakeConn()
        c.client.feed(b"GET / HTTP/1.0\r\n\r\n")
        task = asyncio.ensure_future(make_handler("respond", options)(c))  # type: ignore[arg-type]
        await until(lambda: c.client.closed and c.server.closed)
        assert c.client.written == want and c.server.written == b""
        await asyncio.sleep(0.01)
        assert not task.done()  # the peers have not sent their FINs yet
        c.client.feed(b"more that is dropped")
        c.client.eof()
        c.server.feed(b"server's answer, dropped")
        c.server.eof()
        await task
        assert not c.client.aborted and not c.server.aborted

    run(body)


def test_respond_resets_peers_that_never_close():
    async def body() -> None:
        c = FakeConn()
        c.server.eof()
        await respond(c, b"bye", linger=0.05)  # type: ignore[arg-type]
        assert c.client.closed and c.client.aborted  # the client never sent its FIN
        assert c.server.closed and not c.server.aborted

    run(body)


def test_respond_client_reset_aborts_server():
    async def body() -> None:
        c = FakeConn(client=FakeEndpoint(drain_resets=True))
        await respond(c, b"bye", linger=5)  # type: ignore[arg-type]
        assert c.server.aborted and not c.server.closed

    run(body)


# --------------------------------------------------------------------------- tee


def test_tee_writes_what_passed(tmp_path: Path):
    c2s = [b"GET /a HTTP/1.1\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n", bytes(range(256))]
    s2c = [b"HTTP/1.1 200 OK\r\n\r\n", b"\x00\xff" * 5000]
    out = tmp_path / "tee" / "sub"

    async def body() -> None:
        c = FakeConn()
        c.client.feed(*c2s)
        c.client.eof()
        c.server.feed(*s2c)
        c.server.eof()
        await make_handler("tee", {"dir": str(out)})(c)  # type: ignore[arg-type]
        assert c.server.written == b"".join(c2s) and c.client.written == b"".join(s2c)

    run(body)
    assert (out / "7-c2s.bin").read_bytes() == b"".join(c2s)
    assert (out / "7-s2c.bin").read_bytes() == b"".join(s2c)


# --------------------------------------------------------------------------- make_handler


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("splice", {}),
        ("relay", {"dir": "x"}),
        ("rewrite", {"pattern": "a", "replace": "b", "direction": "both"}),
        ("rewrite", {"pattern": "", "replace": "b"}),
        ("rewrite", {"pattern": "a"}),
        ("respond", {}),
        ("respond", {"data": "a", "data_hex": "61"}),
        ("respond", {"data_hex": "zz"}),
        ("tee", {}),
    ],
)
def test_make_handler_rejects_bad_options(name, options):
    with pytest.raises(ValueError):
        make_handler(name, options)


def test_make_handler_relay_is_relay():
    assert make_handler("relay", {}) is relay


# --------------------------------------------------------------------------- forward


async def _service(connections: list[tuple[bytes, bytes]], answer: bytes, unix: str | None = None):
    """A local service (what nginx would be): records what each connection sent until its
    FIN, answers ``answer`` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(16)
        head += await reader.readexactly(int.from_bytes(head[14:16], "big"))
        writer.write(answer)
        await writer.drain()
        rest = await reader.read()
        connections.append((head, rest))
        writer.close()

    if unix is not None:
        return await asyncio.start_unix_server(handle, unix)
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_proxy_v2_header_bytes():
    h = handlers.proxy_v2_header(("10.0.0.1", 40000), ("10.0.0.2", 80))
    ports = (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    addrs = bytes([10, 0, 0, 1, 10, 0, 0, 2])
    assert h == b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + addrs + ports
    h6 = handlers.proxy_v2_header(("fd00::1", 1), ("fd00::2", 2))
    assert h6[12:16] == b"\x21\x21\x00\x24" and len(h6) == 16 + 36


@pytest.mark.parametrize("unix", [False, True])
def test_forward_splices_the_client_to_the_service_and_closes_the_server(unix, tmp_path):
    async def body() -> None:
        got: list[tuple[bytes, bytes]] = []
        path = str(tmp_path / "svc.sock") if unix else None
        server = await _service(got, b"from the service", path)
        to = f"unix:{path}" if unix else f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        c = FakeConn()
        c.client.feed(b"GET / HTTP/1.1\r\n\r\n")
        c.client.eof()
        c.server.eof()  # the server answers our FIN with its own
        await make_handler("forward", {"to": to})(c)  # type: ignore[arg-type]
        server.close()
        ((head, rest),) = got
        assert head == handlers.proxy_v2_header(("10.0.0.1", 40000), ("10.0.0.2", 80))
        assert rest == b"GET / HTTP/1.1\r\n\r\n"
        assert bytes(c.client.written) == b"from the service" and c.client.closed
        assert c.server.closed and not c.server.written and not c.server.aborted

    run(body)


def test_forward_both_splices_the_server_to_a_second_connection():
    async def body() -> None:
        got: list[tuple[bytes, bytes]] = []
        server = await _service(got, b"ok")
        to = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        c = FakeConn()
        c.client.feed(b"from client")
        c.client.eof()
        c.server.feed(b"from server")
        c.server.eof()
        await make_handler("forward", {"to": to, "both": True})(c)  # type: ignore[arg-type]
        server.close()
        heads = {head: rest for head, rest in got}
        assert heads == {
            handlers.proxy_v2_header(("10.0.0.1", 40000), ("10.0.0.2", 80)): b"from client",
            handlers.proxy_v2_header(("10.0.0.2", 80), ("10.0.0.1", 40000)): b"from server",
        }
        assert bytes(c.client.written) == b"ok" and bytes(c.server.written) == b"ok"

    run(body)


def test_forward_to_nothing_raises_and_the_inline_engine_resets():
    async def body() -> None:
        with socket_closed_port() as port, pytest.raises(OSError):
            await make_handler("forward", {"to": f"127.0.0.1:{port}"})(FakeConn())  # type: ignore[arg-type]

    run(body)


class socket_closed_port:
    """A port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize(
    "options, words",
    [({}, "forward needs to"), ({"to": "nohost"}, "HOST:PORT or unix:/path"),
     ({"to": "unix:"}, "socket path"), ({"to": "h:1", "color": "x"}, "no option 'color'")],
)  # fmt: skip
def test_forward_options(options, words):
    with pytest.raises(ValueError, match=words):
        make_handler("forward", options)
