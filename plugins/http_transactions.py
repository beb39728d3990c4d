"""HTTP/1.x transactions of a connection: every request and its response, as the two streams
frame them (RFC 9112 §6: Content-Length, chunked transfer coding, bodies a response to HEAD
or a 1xx/204/304 status never has, a body delimited by the close), so a keep-alive or
pipelined connection reports each exchange, as Suricata's and Zeek's HTTP logs do.

Sans-I/O: the sinks hand it each direction's bytes in stream order (``data``, ``gap``). It
reads header blocks and chunk-size lines and skips bodies by counting: ``want[d]`` is the first
offset of direction ``d`` whose bytes it still needs (bytes before it are body), so the C data
plane hashes bodies in place and hands back only what is read here.

Bounded: a header block beyond MAX_HEAD bytes, a gap where framing is read, or anything that is
not HTTP/1.x stops the follower (``stopped`` says why; what it found stays); at most
MAX_TRANSACTIONS are kept (``dropped`` counts the rest).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from .detectors.http import parse_request_line

MAX_HEAD = 16384  # a request or response header block, or a chunk-size line with its trailer
MAX_TRANSACTIONS = 64
MAX_FIELD = 1024  # characters kept of a URL, Host or User-Agent (a record stays bounded)
NEVER = 1 << 62  # want() of a direction nothing more is read from (stack/_fast.h's too)


class Framing(Enum):
    HEAD = "head"  # reading a header block
    BODY = "body"  # skipping a body of known length
    CHUNK_SIZE = "chunk-size"  # reading a chunk-size line
    CHUNK_DATA = "chunk-data"  # skipping a chunk and its CRLF
    TRAILER = "trailer"  # reading trailer lines after the last chunk
    DONE = "done"  # nothing more to read: stopped, or a body delimited by the close


_SKIPPING = (Framing.BODY, Framing.CHUNK_DATA)


class HttpTransactions:
    __slots__ = ("transactions", "dropped", "stopped", "unexpected", "_state", "_buf",
                 "_next", "_skip_to", "_pending", "_body", "_response_tx", "_close_body",
                 "_closing")  # fmt: skip

    def __init__(self) -> None:
        self.transactions: list[dict[str, Any]] = []
        self.dropped = 0
        self.stopped: str | None = None
        self._state = [Framing.HEAD, Framing.HEAD]
        self._buf = [bytearray(), bytearray()]
        self._next = [0, 0]  # the next stream offset to read
        self._skip_to = [0, 0]  # while skipping: where the body or chunk ends
        self._pending: list[dict[str, Any]] = []  # requests not answered yet, oldest first
        self._body = [0, 0]  # body bytes of the message being read
        self._response_tx: dict[str, Any] | None = None  # the one whose body is being read
        # A response whose body runs to the close, and where that body began.
        self._close_body: tuple[dict[str, Any], int] | None = None
        self._closing = [False, False]  # the other direction stopped: end this message, stop
        self.unexpected = 0  # blocks C read where this follower was elsewhere (read_head)

    def want(self, d: int) -> int:
        """The first offset of direction ``d`` whose bytes are still needed (those before it
        are body, or nothing more is read: NEVER)."""
        state = self._state[d]
        if state is Framing.DONE:
            return NEVER
        return self._skip_to[d] if state in _SKIPPING else self._next[d]

    # -- input --------------------------------------------------------------------------------

    def data(self, d: int, offset: int, data: bytes | memoryview) -> None:
        end = offset + len(data)
        while self._state[d] is not Framing.DONE:
            at = max(offset, self._next[d])
            if at >= end:
                return
            state = self._state[d]
            if state in _SKIPPING:
                # Skipped bytes need not have come: C hashes them without handing them over.
                self._next[d] = min(end, self._skip_to[d]) if at <= self._skip_to[d] else at
                if self._next[d] < self._skip_to[d]:
                    return
                self._skipped(d)
            elif at > self._next[d]:
                # Bytes before these never came (C hashed them: it saw TLS from the first
                # byte, where this would have stopped): nothing here can be framed.
                self._stop(f"{'c2s' if d == 0 else 's2c'} bytes not read", d)
            else:
                self._read(d, data[at - offset :], at)

    def stop(self, why: str) -> None:
        """Read nothing more (what was found stays)."""
        self._stop(why)

    def gap(self, d: int, offset: int, length: int) -> None:
        """Bytes the capture never held: inside a body they are skipped like the rest."""
        self._reach(d, offset)
        state = self._state[d]
        if state is Framing.DONE or offset + length <= self._next[d]:
            return
        if state in _SKIPPING and offset + length <= self._skip_to[d]:
            return
        self._stop(f"a gap where {'c2s' if d == 0 else 's2c'} framing is read", d)

    def finish(self, lengths: tuple[int, int]) -> None:
        """The streams ended at these lengths: a body delimited by the close has its length."""
        for d in (0, 1):
            self._reach(d, lengths[d])
        if self._close_body is not None:
            tx, start = self._close_body
            tx["length"] = max(0, lengths[1] - start)
            self._close_body = None

    # -- framing ------------------------------------------------------------------------------

    def _reach(self, d: int, offset: int) -> None:
        """The stream is known to reach ``offset`` (a gap starts there, or it ends there): a
        body that ends by then is over, whether its last bytes were handed over or C hashed
        them in place (as the general path would have seen them arrive)."""
        if self._state[d] in _SKIPPING and offset >= self._skip_to[d]:
            self._next[d] = self._skip_to[d]
            self._skipped(d)

    def _skipped(self, d: int) -> None:
        """The body or chunk being skipped is over."""
        if self._state[d] is Framing.BODY:
            self._message_done(d)
        else:
            self._state[d] = Framing.CHUNK_SIZE

    def _read(self, d: int, data: bytes | memoryview, at: int) -> None:
        """Gather a header block or a line from ``data`` (at stream offset ``at``)."""
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf[d]
        state = self._state[d]
        if state is Framing.HEAD and not buf and data[:1] in (b"\r", b"\n"):
            # Empty lines before a request or status line are ignored (RFC 9112 §2.2, as
            # libhtp does for both): a body one CRLF longer than its Content-Length says.
            rest = data.lstrip(b"\r\n")
            at += len(data) - len(rest)
            self._next[d] = at
            if not rest:
                return
            data = rest
        had = len(buf)
        if had:
            buf += data
            end = _find_end(buf, state, max(0, had - 3))
        else:  # the common case: the block starts here, often whole in this segment
            end = _find_end(data, state, 0)
            if end < 0:
                buf += data
        if end < 0:
            self._next[d] = at + len(data)
            if len(buf) > MAX_HEAD:
                self._stop(f"a {state.value} beyond {MAX_HEAD} bytes", d)
            elif state is Framing.HEAD and not _plausible(d, buf):
                # Not HTTP (a TLS hello, a server's banner): stop at once, not at MAX_HEAD.
                self._stop(f"{'c2s' if d == 0 else 's2c'} is not HTTP/1.x", d)
            return
        if had:
            block = bytes(buf[:end])
            buf.clear()
        else:
            block = data[:end]
        self._next[d] = at + (end - had)
        if state is Framing.HEAD:
            if d == 0:
                self._on_request(block)
            else:
                self._on_response(block)
        elif state is Framing.CHUNK_SIZE:
            self._chunk_size(d, block)
        elif not block.strip(b"\r\n"):  # TRAILER: an empty line ends the message
            self._message_done(d)

    def read_head(self, d: int, at: int, block: bytes, fields: tuple[Any, ...]) -> None:
        """A header block the C data plane read whole at offset ``at`` of direction ``d``
        (stack/_follow.c): taken as reading ``block`` here would take it, from the fields C
        found: (method, path, protocol, host, user agent, Content-Length) of a request,
        (status, Content-Length) of a response; None where absent. Where this follower is
        not where C was (which the tests hold never happens), it reads the block itself."""
        self._reach(d, at)
        if self._state[d] is not Framing.HEAD or self._next[d] != at or self._buf[d]:
            self.unexpected += 1
            self.data(d, at, block)
            return
        self._next[d] = at + len(block)
        length = fields[-1]
        if d == 0:
            method, path, protocol, host, user_agent, _ = fields
            if self._request(method, path, protocol, host, user_agent):
                self._framed(0, length, has_body=True)
        else:
            has_body = self._answered(fields[0])
            if has_body is not None:
                self._framed(1, length, has_body)

    def _on_request(self, block: bytes) -> None:
        _, request = parse_request_line(block)
        if request is None:
            self._stop("c2s is not an HTTP/1.x request", 0)
            return
        method, target = request
        version = block.split(b"\n", 1)[0].rstrip(b"\r").rsplit(b" ", 1)[-1]
        headers = _headers(block)
        if self._request(
            method.decode("latin-1"), target.decode("latin-1"), version.decode("latin-1"),
            headers.get("host"), headers.get("user-agent"),
        ):  # fmt: skip
            self._framing(0, headers, has_body=True)

    def _request(
        self, method: str, path: str, protocol: str, host: str | None, user_agent: str | None
    ) -> bool:
        """A request's transaction; whether a body may follow its head (not after CONNECT)."""
        tx: dict[str, Any] = {"method": method, "path": path[:MAX_FIELD], "protocol": protocol}
        if host is not None:
            tx["host"] = host[:MAX_FIELD]
        if user_agent is not None:
            tx["user_agent"] = user_agent[:MAX_FIELD]
        self._add(tx)
        self._pending.append(tx)
        if method == "CONNECT":
            self._state[0] = Framing.DONE  # a tunnel follows, not HTTP
            return False
        return True

    def _on_response(self, block: bytes) -> None:
        parts = block.split(b"\n", 1)[0].rstrip(b"\r").split(b" ", 2)
        if (
            len(parts) < 2
            or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            self._stop("s2c is not an HTTP/1.x response", 1)
            return
        has_body = self._answered(int(parts[1]))
        if has_body is not None:
            self._framing(1, _headers(block), has_body)

    def _answered(self, status: int) -> bool | None:
        """A response's status on its request's transaction; whether a body may follow its
        head (None: no framing to read, an interim response or a switch of protocols)."""
        if 100 <= status < 200 and status != 101:
            return None  # interim (100 Continue): the final response to the same request follows
        tx = self._pending.pop(0) if self._pending else None
        if tx is None:  # no request seen: picked up mid-stream, or c2s not read
            tx = {}
            self._add(tx)
        tx["status"] = status
        self._response_tx = tx
        method = tx.get("method")
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            tx["length"] = 0
            self._stop("the connection switched protocols")
            return None
        # RFC 9112 §6.3: no body after HEAD, or with 1xx, 204 or 304.
        return method != "HEAD" and status not in (204, 304)

    def c_state(self) -> tuple[int, int, int, int] | None:
        """What the C data plane needs to follow the framing from here (stack/_follow.c):
        each direction's ut_dir.hstate (1 reading a header block, 2 skipping a body), the
        requests not answered yet and which of them are HEAD (bit i: the i-th oldest); None
        where C cannot (stopped, a partial block, chunks, a body to the close, a queue
        longer than C's)."""
        if (
            self.stopped is not None
            or self._close_body is not None
            or self._closing[0]
            or self._closing[1]
            or self._buf[0]
            or self._buf[1]
            or len(self._pending) > 62
        ):
            return None
        hstate = []
        for state in self._state:
            if state is Framing.HEAD:
                hstate.append(1)
            elif state is Framing.BODY:
                hstate.append(2)
            else:
                return None
        heads = sum(1 << i for i, tx in enumerate(self._pending) if tx.get("method") == "HEAD")
        return hstate[0], hstate[1], len(self._pending), heads

    def _framing(self, d: int, headers: dict[str, str], has_body: bool) -> None:
        """How the body after this header block ends (RFC 9112 §6.3)."""
        coding = headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if not has_body:
            length = None
        elif coding:
            self._body[d] = 0
            if coding.rsplit(",", 1)[-1].strip() == "chunked":
                self._state[d] = Framing.CHUNK_SIZE
            elif d == 0:
                self._stop("a request body in a coding other than chunked", 0)
            else:
                self._to_close()
            return
        elif length is not None and (
            # ASCII digits only: str.isdigit() takes "²", which int() refuses.
            not (length.isascii() and length.isdigit()) or len(length) > 18
        ):
            self._body[d] = 0
            self._stop("an invalid Content-Length", d)
            return
        self._framed(d, None if length is None else int(length), has_body)

    def _framed(self, d: int, length: int | None, has_body: bool) -> None:
        """How the body ends where no transfer coding applies: ``length`` (a valid
        Content-Length) bytes, None: none for a request, to the close for a response.
        Header blocks the C data plane read come here directly (it reads no other)."""
        self._body[d] = 0
        if not has_body:
            self._message_done(d)
        elif length is not None:
            self._skip_to[d] = self._next[d] + length
            self._body[d] = length
            self._state[d] = Framing.BODY
            if not length:
                self._message_done(d)
        elif d == 1:
            self._to_close()
        else:
            self._message_done(d)  # a request with neither has no body

    def _to_close(self) -> None:
        if self._response_tx is not None:
            self._close_body = (self._response_tx, self._next[1])
        self._state[1] = Framing.DONE

    def _chunk_size(self, d: int, line: bytes) -> None:
        size = line.split(b";", 1)[0].strip()
        if not size or len(size) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in size):
            self._stop("an invalid chunk size", d)
            return
        n = int(size, 16)
        if not n:
            self._state[d] = Framing.TRAILER
            return
        self._body[d] += n
        self._skip_to[d] = self._next[d] + n + 2  # the chunk and its CRLF
        self._state[d] = Framing.CHUNK_DATA

    def _message_done(self, d: int) -> None:
        if d == 1 and self._response_tx is not None:
            self._response_tx["length"] = self._body[1]
            self._response_tx = None
        self._state[d] = Framing.DONE if self._closing[d] else Framing.HEAD

    # -- bookkeeping --------------------------------------------------------------------------

    def _add(self, tx: dict[str, Any]) -> None:
        if len(self.transactions) < MAX_TRANSACTIONS:
            self.transactions.append(tx)
        else:
            self.dropped += 1

    def _stop(self, why: str, d: int | None = None) -> None:
        """Read nothing more of direction ``d`` (None: of either). The other direction still
        ends the message it is in (a body C may have hashed in place without handing it
        over, so the general path and C agree on its length), then stops too."""
        if self.stopped is None:
            self.stopped = why
        if d is None:
            self._state = [Framing.DONE, Framing.DONE]
            return
        self._state[d] = Framing.DONE
        o = 1 - d
        if self._state[o] is Framing.HEAD:
            self._state[o] = Framing.DONE
        self._closing[o] = True


def _plausible(d: int, buf: bytearray) -> bool:
    """Whether an incomplete header block may still become a request (d 0) or a response."""
    if d == 0:
        return parse_request_line(bytes(buf[:_LINE_PEEK]))[0] != "invalid"
    head = bytes(buf[:8])
    return b"HTTP/1.1".startswith(head[:7]) and head[7:8] in (b"", b"0", b"1")


_LINE_PEEK = 4096  # of a request line being read, enough to tell it is not one


def _find_end(buf: bytes | bytearray, state: Framing, start: int) -> int:
    """One past the end of the header block (its blank line; a bare LF is tolerated, as the
    detector tolerates it) or of the line; -1 while it is not there."""
    if state is Framing.HEAD:
        crlf = buf.find(b"\n\r\n", start)
        lf = buf.find(b"\n\n", start, crlf if crlf >= 0 else len(buf))
        if lf >= 0:
            return lf + 2
        return crlf + 3 if crlf >= 0 else -1
    at = buf.find(b"\n", start)
    return at + 1 if at >= 0 else -1


_WANTED = frozenset((b"host", b"user-agent", b"content-length", b"transfer-encoding"))


def _headers(block: bytes) -> dict[str, str]:
    """The header fields framing and the record need, from a whole header block: the first
    of each (as the detector's parse_headers keeps the first), lines up to the first that is
    not a field."""
    out: dict[str, str] = {}
    for line in block.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        name, sep, value = line.partition(b":")
        if not sep:
            break  # the blank line, or not a header any more
        key = name.strip().lower()
        if key in _WANTED:
            k = key.decode()
            if k not in out:
                out[k] = value.strip().decode("latin-1")
    return out
