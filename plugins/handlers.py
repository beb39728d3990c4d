"""The built-in intercept handlers a policy names: relay, rewrite, respond, tee, forward.

A handler is ``async def handler(conn)`` over an :class:`~.conn.InterceptedConnection`;
:func:`make_handler` builds one from a policy rule's ``handler`` and ``options`` (see
``policy.HANDLERS``). Every handler is reset-aware: a reset from one endpoint aborts the other,
so neither is left talking to a peer that is gone.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .policy import HANDLERS

if TYPE_CHECKING:
    from .api import FlowView
    from .conn import Endpoint, InterceptedConnection

Handler = Callable[["InterceptedConnection"], Awaitable[None]]

# How long rewrite holds back a tail that may be the start of the pattern when the source has
# nothing more for now. A pattern split across segments usually has its rest right behind it
# (same write, next segment); a tail left waiting longer is more likely the end of a message
# its peer now waits to see answered.
HOLD_SECONDS = 0.05
# How long respond waits for both endpoints' FINs after its own before resetting them.
LINGER_SECONDS = 30.0


class Rewriter:
    """Streaming ``bytes.replace``: every occurrence of ``pattern`` (leftmost first, not
    overlapping, as ``bytes.replace`` finds them) becomes ``replace``, also when it is split
    across reads. Only a tail that is a proper prefix of the pattern is ever held back."""

    def __init__(self, pattern: bytes, replace: bytes) -> None:
        if not pattern:
            raise ValueError("rewrite needs a non-empty pattern")
        self.pattern = pattern
        self.replace = replace
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        """The bytes that can go out now; keeps back what may still become the pattern."""
        parts = (self.held + data).split(self.pattern)
        tail = parts[-1]
        keep = self._prefix_suffix(tail)
        parts[-1] = tail[: len(tail) - keep]
        self.held = tail[len(tail) - keep :]
        return self.replace.join(parts)

    def flush(self) -> bytes:
        """Give up waiting: the held-back bytes, unchanged."""
        out, self.held = self.held, b""
        return out

    def _prefix_suffix(self, tail: bytes) -> int:
        """The length of the longest suffix of ``tail`` that is a proper prefix of the
        pattern. Splitting on the pattern left no whole occurrence in ``tail``, so a match
        that is still possible must start in this suffix."""
        p = self.pattern
        i = tail.find(p[:1], max(0, len(tail) - len(p) + 1))
        while i != -1:  # leftmost candidate first: the longest suffix
            if p.startswith(tail[i:]):
                return len(tail) - i
            i = tail.find(p[:1], i + 1)
        return 0


async def pipe(
    src: Endpoint,
    dst: Endpoint,
    *,
    rewriter: Rewriter | None = None,
    tap: Callable[[bytes], object] | None = None,
    hold: float = HOLD_SECONDS,
) -> None:
    """Copy src to dst until src's FIN, then half-close dst. ``rewriter`` edits the bytes on
    the way; ``tap`` sees what src sent, unedited. A reset on either end aborts the other and
    raises ConnectionResetError."""
    while True:
        data = await _read(src, dst, rewriter, hold)
        if tap is not None and data:
            tap(data)
        out = data
        if rewriter is not None:
            out = rewriter.feed(data) if data else rewriter.flush()
        if out:
            await _send(src, dst, out)
        if not data:
            dst.close()
            return


async def _recv(src: Endpoint, dst: Endpoint) -> bytes:
    try:
        return await src.read()
    except ConnectionResetError:
        dst.abort()
        raise


async def _send(src: Endpoint, dst: Endpoint, data: bytes) -> None:
    try:
        dst.write(data)
        await dst.drain()
    except ConnectionResetError:
        src.abort()
        raise


async def _read(src: Endpoint, dst: Endpoint, rewriter: Rewriter | None, hold: float) -> bytes:
    """The next read; while rewrite holds bytes back, send them if src stays quiet for
    ``hold`` seconds: the peer may be waiting for them before it says anything more."""
    if rewriter is None or not rewriter.held:
        return await _recv(src, dst)
    task = asyncio.ensure_future(_recv(src, dst))
    try:
        done, _ = await asyncio.wait({task}, timeout=hold)
        if not done:
            await _send(src, dst, rewriter.flush())
        return await task
    finally:
        task.cancel()
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a reset is reported once, by whoever raised first


async def relay(
    conn: InterceptedConnection,
    *,
    c2s: Rewriter | None = None,
    s2c: Rewriter | None = None,
    taps: tuple[Callable[[bytes], object], Callable[[bytes], object]] | None = None,
    hold: float = HOLD_SECONDS,
) -> None:
    """The splice: both directions, each half-closed when its source closes; returns when both
    reached EOF. A reset on either side aborts the other and ends both directions (returns)."""
    tap_c2s, tap_s2c = taps if taps is not None else (None, None)
    tasks = [
        asyncio.ensure_future(pipe(conn.client, conn.server, rewriter=c2s, tap=tap_c2s, hold=hold)),
        asyncio.ensure_future(pipe(conn.server, conn.client, rewriter=s2c, tap=tap_s2c, hold=hold)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # also when the handler itself is cancelled: no direction outlives it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, ConnectionResetError):
            raise exc


async def rewrite(
    conn: InterceptedConnection,
    pattern: bytes,
    replace: bytes,
    direction: str = "s2c",
    hold: float = HOLD_SECONDS,
) -> None:
    """Relay with ``pattern`` replaced by ``replace`` in one direction. Lengths are not fixed
    up: for protocols with length fields (HTTP Content-Length, TLS records...) use a
    replacement of the same length."""
    rewriter = Rewriter(pattern, replace)
    if direction == "c2s":
        await relay(conn, c2s=rewriter, hold=hold)
    elif direction == "s2c":
        await relay(conn, s2c=rewriter, hold=hold)
    else:
        raise ValueError(f'direction must be "c2s" or "s2c", not {direction!r}')


async def respond(conn: InterceptedConnection, data: bytes, linger: float = LINGER_SECONDS) -> None:
    """Answer the client with ``data`` and end both connections gracefully: FIN to both, then
    read (and drop) until each has sent its FIN too, so neither kernel is left half-open.
    Whoever has not closed after ``linger`` seconds is reset."""
    try:
        conn.client.write(data)
        await conn.client.drain()
    except ConnectionResetError:
        conn.server.abort()
        return
    conn.client.close()
    conn.server.close()
    await asyncio.gather(_discard(conn.client, linger), _discard(conn.server, linger))


async def _discard(ep: Endpoint, linger: float) -> None:
    try:
        async with asyncio.timeout(linger):
            while await ep.read():
                pass
    except TimeoutError:
        ep.abort()
    except ConnectionResetError:
        pass  # it is gone already


async def tee(conn: InterceptedConnection, directory: str | Path) -> None:
    """Relay, appending each direction's bytes to ``<flow id>-c2s.bin`` / ``-s2c.bin`` in
    ``directory`` (created if needed). Writes are plain blocking file writes: small, buffered,
    and the handler's whole job."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    fid = conn.flow.id
    with open(d / f"{fid}-c2s.bin", "ab") as c2s, open(d / f"{fid}-s2c.bin", "ab") as s2c:
        await relay(conn, taps=(c2s.write, s2c.write))


# PROXY protocol version 2 (HAProxy's proxy-protocol.txt §2.2): signature, then version 2
# with the PROXY command, then TCP over IPv4 (0x11) or IPv6 (0x21) and the address block.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2_header(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """The PROXY v2 header saying the connection came from ``src`` to ``dst``."""
    a, b = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    family = 0x11 if a.version == 4 else 0x21
    block = a.packed + b.packed + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
    return PROXY_V2_SIGNATURE + bytes((0x21, family)) + len(block).to_bytes(2, "big") + block


def parse_target(to: str) -> tuple[str, int] | str:
    """``HOST:PORT`` ((host, port)) or ``unix:/path`` (the path); ValueError if neither."""
    if to.startswith("unix:"):
        if not to[5:]:
            raise ValueError("to = 'unix:' needs a socket path")
        return to[5:]
    host, sep, port = to.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"to = {to!r}: expected HOST:PORT or unix:/path")
    return host.strip("[]"), int(port)


@dataclass
class StreamEndpoint:
    """An asyncio stream as an intercepted connection's Endpoint (the forward handler's local
    service looks to ``relay`` like either side of the cut-in connection)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def read(self, n: int = 65536) -> bytes:
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    def abort(self) -> None:
        self.writer.transport.abort()


@dataclass
class _Pair:
    """Two endpoints to splice, as relay() takes a connection."""

    client: Any
    server: Any
    flow: FlowView


async def _open(target: tuple[str, int] | str) -> StreamEndpoint:
    if isinstance(target, str):
        return StreamEndpoint(*await asyncio.open_unix_connection(target))
    return StreamEndpoint(*await asyncio.open_connection(*target))


async def forward(
    conn: InterceptedConnection,
    to: str,
    both: bool = False,
    proxy_protocol: bool = True,
    linger: float = LINGER_SECONDS,
) -> None:
    """Hand the cut-in connection to a local service (nginx, HAProxy, a honeypot): connect to
    ``to``, say who the client was in a PROXY v2 header, and splice the client's half to it.
    The server's half is closed cleanly (FIN, then its FIN awaited, reset after ``linger``),
    or with ``both`` spliced to a second connection, whose header names the server as the
    source. A service that cannot be reached is an error: both sides are reset."""
    target = parse_target(to)
    first = await _open(target)
    try:
        second = await _open(target) if both else None
    except OSError:
        first.abort()
        raise
    if proxy_protocol:
        first.write(proxy_v2_header(conn.flow.client, conn.flow.server))
        if second is not None:
            second.write(proxy_v2_header(conn.flow.server, conn.flow.client))
    try:
        if second is not None:
            await asyncio.gather(
                relay(_Pair(conn.client, first, conn.flow)),
                relay(_Pair(conn.server, second, conn.flow)),
            )
        else:
            conn.server.close()
            await asyncio.gather(
                relay(_Pair(conn.client, first, conn.flow)), _discard(conn.server, linger)
            )
    finally:
        for ep in (first, second):
            if ep is not None:
                ep.writer.close()


def make_handler(name: str, options: Mapping[str, Any]) -> Handler:
    """The handler a policy rule names, with its options checked (ValueError if wrong)."""
    if name not in HANDLERS:
        raise ValueError(f"unknown handler {name!r} (one of {', '.join(HANDLERS)})")
    unknown = sorted(set(options) - set(HANDLERS[name]))
    if unknown:
        raise ValueError(f"handler {name!r} takes no option {unknown[0]!r}")
    if name == "relay":
        return relay
    if name == "rewrite":
        direction = options.get("direction", "s2c")
        if direction not in ("c2s", "s2c"):
            raise ValueError(f'direction must be "c2s" or "s2c", not {direction!r}')
        if not options.get("pattern") or "replace" not in options:
            raise ValueError("rewrite needs a non-empty pattern and a replace")
        pattern, replace = options["pattern"].encode(), options["replace"].encode()

        async def rewrite_handler(conn: InterceptedConnection) -> None:
            await rewrite(conn, pattern, replace, direction)

        return rewrite_handler
    if name == "respond":
        if ("data" in options) == ("data_hex" in options):
            raise ValueError("respond needs exactly one of data, data_hex")
        data = options["data"].encode() if "data" in options else bytes.fromhex(options["data_hex"])

        async def respond_handler(conn: InterceptedConnection) -> None:
            await respond(conn, data)

        return respond_handler
    if name == "forward":
        if "to" not in options:
            raise ValueError("forward needs to = HOST:PORT or unix:/path")
        parse_target(options["to"])
        to, both = options["to"], bool(options.get("both", False))
        proxy = bool(options.get("proxy_protocol", True))

        async def forward_handler(conn: InterceptedConnection) -> None:
            await forward(conn, to, both, proxy)

        return forward_handler
    if "dir" not in options:
        raise ValueError("tee needs a dir")
    directory = options["dir"]

    async def tee_handler(conn: InterceptedConnection) -> None:
        await tee(conn, directory)

    return tee_handler
