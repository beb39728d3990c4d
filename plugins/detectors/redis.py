"""Redis: RESP arrays of bulk strings ("*<n>\\r\\n$<len>\\r\\n<cmd>\\r\\n...") from the client,
or inline commands ("PING\\r\\n"); the server answers with a RESP type byte.

The client speaks first. One "*" or "+" byte says little on its own (POP3 greets with "+OK"),
so the array's structure is validated element by element, over the bytes present only.
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

# Inline commands people (and replication links) send first. GET/SET are left out on purpose:
# "GET / HTTP/1.1" must stay HTTP's.
INLINE = frozenset(
    {
        "PING", "AUTH", "HELLO", "INFO", "SELECT", "ECHO", "QUIT", "MONITOR", "CLIENT",
        "COMMAND", "CONFIG", "DBSIZE", "KEYS", "FLUSHALL", "FLUSHDB", "SUBSCRIBE",
        "PSUBSCRIBE", "REPLCONF", "PSYNC", "SYNC", "SLAVEOF", "REPLICAOF", "SCAN",
    }
)  # fmt: skip
# Inline commands other server-first text protocols also use first; they need a RESP reply.
AMBIGUOUS_INLINE = frozenset({"AUTH", "QUIT"})
# RESP2 and RESP3 reply type bytes.
REPLY_TYPES = b"+-:$*_,#(!=%~>|"
MAX_ARRAY = 1 << 20  # far above any real command's argument count
MAX_BULK = 512 * 1024 * 1024  # Redis's proto-max-bulk-len default


class _Short(Exception):
    """The bytes end before the structure does: a valid prefix so far."""


def _read_int(buf: bytes, pos: int, limit: int = 12) -> tuple[int, int]:
    """A decimal integer terminated by CRLF at ``pos``. Returns (value, position after CRLF).
    Raises _Short when the buffer ends first, ValueError when it is not a RESP integer."""
    end = buf.find(b"\r\n", pos, pos + limit + 2)
    if end < 0:
        tail = buf[pos : pos + limit + 2]
        digits = tail.removesuffix(b"\r").removeprefix(b"-")
        if len(tail) <= limit + 1 and (digits == b"" or digits.isdigit()):
            raise _Short
        raise ValueError("not an integer")
    text = buf[pos:end]
    if not text or not text.lstrip(b"-").isdigit():
        raise ValueError("not an integer")
    return int(text), end + 2


def _is_command_name(name: bytes) -> bool:
    # Command names are letters; module commands add "." ("JSON.SET"), ACL-style "|" too.
    return (
        0 < len(name) <= 64
        and all(0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in b"._|-" for b in name)
        and name[:1].isalpha()
    )


def parse_resp_command(buf: bytes) -> str:
    """Validate a client RESP array of bulk strings; return the command name (upper case).
    Raises _Short for a valid prefix, ValueError otherwise. Each element consumes at least
    four bytes, so the loop is bounded by len(buf)."""
    if buf[:1] != b"*":
        raise ValueError("not an array")
    n, pos = _read_int(buf, 1)
    if not 1 <= n <= MAX_ARRAY:
        raise ValueError("bad array length")
    command = ""
    for i in range(n):
        if pos >= len(buf):
            if command:
                return command  # the first element is complete; enough to be sure
            raise _Short
        if buf[pos : pos + 1] != b"$":
            raise ValueError("not a bulk string")
        size, pos = _read_int(buf, pos + 1)
        if not 0 <= size <= MAX_BULK:
            raise ValueError("bad bulk length")
        data = buf[pos : pos + size]
        if i == 0:
            if len(data) < size:
                # The name is still arriving: its letters so far must look like one.
                if data and not _is_command_name(data):
                    raise ValueError("not a command name")
                raise _Short
            if not _is_command_name(data):
                raise ValueError("not a command name")
            command = data.decode("ascii").upper()
        elif len(data) < size:
            return command
        end = pos + size
        crlf = buf[end : end + 2]
        if len(crlf) < 2:
            if b"\r\n".startswith(crlf):
                if command:
                    return command
                raise _Short
            raise ValueError("bulk string not terminated")
        if crlf != b"\r\n":
            raise ValueError("bulk string not terminated")
        pos = end + 2
    return command


def valid_reply_start(s2c: bytes) -> bool:
    """The server's first bytes look like a RESP reply: a type byte, then a short line."""
    if not s2c or s2c[0] not in REPLY_TYPES:
        return False
    end = s2c.find(b"\r\n", 0, 1024)
    line = s2c[1:end] if end >= 0 else s2c[1:1024]
    return all(0x20 <= b < 0x7F or b == 0x09 for b in line)


class Redis(Plugin):
    name = "redis"
    ports = {6379}

    def detect(self, flow: FlowView) -> Match | Detection:
        # A Redis server never speaks first; a server greeting rules Redis out.
        if flow.first_speaker == "server":
            return NO_MATCH
        c2s, s2c = flow.c2s, flow.s2c
        if not c2s:
            if not s2c:
                return NEED_MORE
            # Only the reply side was captured: wait for the client, if it could be RESP.
            return NEED_MORE if valid_reply_start(s2c) else NO_MATCH
        if c2s[:1] == b"*":
            try:
                command = parse_resp_command(c2s)
            except _Short:
                return NEED_MORE
            except ValueError:
                return NO_MATCH
            return self.match("redis", command=command)
        return self._inline(c2s, s2c)

    def _inline(self, c2s: bytes, s2c: bytes) -> Match | Detection:
        end = c2s.find(b"\n", 0, 4096)
        line = c2s[:end] if end >= 0 else c2s[:4096]
        if end < 0 and len(c2s) > 4096:
            return NO_MATCH
        word = line.split(b" ", 1)[0].rstrip(b"\r")
        if not word or not word.isalpha() or len(word) > 16:
            return NO_MATCH
        name = word.decode("ascii").upper()
        complete = end >= 0 or b" " in line
        if not complete:
            return NEED_MORE if any(c.startswith(name) for c in INLINE) else NO_MATCH
        if name not in INLINE:
            return NO_MATCH
        if not all(0x20 <= b < 0x7F or b in (0x09, 0x0D) for b in line):
            return NO_MATCH
        if name in AMBIGUOUS_INLINE:
            # POP3/FTP clients also say AUTH/QUIT: a RESP reply settles it.
            if not s2c:
                return NEED_MORE
            if not valid_reply_start(s2c):
                return NO_MATCH
        return self.match("redis", command=name)
