"""HTTP/1.x detector: the request line and a few headers.

What is recognised
    c2s starts with ``METHOD SP request-target SP HTTP/1.x CRLF`` (a bare LF is tolerated)
    for the RFC 9110 methods, PATCH, and the WebDAV/DeltaV/CalDAV ones. The request line
    decides; the detector then waits for the end of the header block (blank line) so that
    ``host`` and ``user_agent`` are in the findings, unless the server has already answered
    or the early-bytes budget is spent. ``status`` (int) comes from s2c's status line: until
    it is there the match is ``complete=False`` and the inspector asks again as data arrives
    (with the request findings in ``flow.findings``: only s2c is read then). A response that
    is not an HTTP/1.x status line completes the match without ``status``.
    The HTTP/2 preface (``PRI * HTTP/2.0``) is not HTTP/1: PRI is not in the method list.
    Unknown extension methods are not accepted: the list keeps false positives down.
"""

from __future__ import annotations

from typing import Any

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

BUDGET = 8192  # the inspector's default early-bytes budget per direction

METHODS = frozenset(
    {
        # RFC 9110 + PATCH (RFC 5789)
        b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
        b"PATCH",
        # WebDAV (RFC 4918, 3253 DeltaV, 3648, 3744, 4791 CalDAV, 5323, 5842)
        b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK",
        b"VERSION-CONTROL", b"REPORT", b"CHECKOUT", b"CHECKIN", b"UNCHECKOUT",
        b"MKWORKSPACE", b"UPDATE", b"LABEL", b"MERGE", b"BASELINE-CONTROL", b"MKACTIVITY",
        b"ORDERPATCH", b"ACL", b"MKCALENDAR", b"SEARCH", b"BIND", b"UNBIND", b"REBIND",
        b"MKREDIRECTREF", b"UPDATEREDIRECTREF",
    }
)  # fmt: skip
MAX_METHOD = max(len(m) for m in METHODS)
_METHOD_PREFIXES = frozenset(m[:i] for m in METHODS for i in range(1, len(m) + 1))
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


def _visible(raw: bytes) -> bool:
    """Every byte is visible ASCII (a request-target never holds spaces or controls)."""
    return all(0x21 <= b <= 0x7E for b in raw)


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _line_end(data: bytes, start: int) -> int:
    """Index of the LF ending the line that starts at ``start`` (-1 if not there yet)."""
    return data.find(b"\n", start)


def parse_request_line(data: bytes) -> tuple[str, tuple[bytes, bytes] | None]:
    """("ok", (method, target)) / ("partial", None) / ("invalid", None)."""
    space = data.find(b" ", 0, MAX_METHOD + 1)
    if space < 0:
        # Still a possible method prefix?  Anything else is not HTTP.
        head = data[: MAX_METHOD + 1]
        return ("partial", None) if head in _METHOD_PREFIXES else ("invalid", None)
    method = data[:space]
    if method not in METHODS:
        return "invalid", None
    end = _line_end(data, space)
    line = data[space + 1 : end if end >= 0 else len(data)]
    if end >= 0:
        line = line.removesuffix(b"\r")
    target, sep, version = line.partition(b" ")
    if not _visible(target) or (not sep and end >= 0):
        return "invalid", None
    if end < 0:
        # The version is still arriving: it must be a prefix of "HTTP/1.x".
        partial_version = version.removesuffix(b"\r")  # the LF may be next
        if sep and not any(v.startswith(partial_version) for v in _VERSIONS):
            return "invalid", None
        return "partial", None
    if version not in _VERSIONS or not target:
        return "invalid", None
    return "ok", (method, target)


def parse_headers(data: bytes) -> tuple[bool, dict[str, str]]:
    """(complete, {lowercased name: value}) for the header lines after the request line."""
    headers: dict[str, str] = {}
    pos = _line_end(data, 0) + 1
    while pos < len(data):
        end = _line_end(data, pos)
        if end < 0:
            return False, headers
        line = data[pos:end].removesuffix(b"\r")
        pos = end + 1
        if not line:
            return True, headers
        name, sep, value = line.partition(b":")
        if not sep:
            return True, headers  # not a header any more: stop, keep what we have
        key = _text(name.strip()).lower()
        headers.setdefault(key, _text(value.strip()))
    return False, headers


_STATUS_PREFIX = b"HTTP/1."
_STATUS_LEN = 13  # "HTTP/1.1 200 "


def response_status(s2c: bytes) -> tuple[bool, dict[str, Any]]:
    """(final, findings) for the start of s2c: final is False while s2c may still become an
    HTTP/1.x status line (empty, or a prefix of one); findings holds ``status`` once read."""
    head = s2c[:_STATUS_LEN]
    if len(head) < _STATUS_LEN:
        # Still arriving, as long as what is there fits "HTTP/1.x NNN".
        if not _STATUS_PREFIX.startswith(head[:7]):
            return True, {}
        shape = (b"01", b" ", b"0123456789", b"0123456789", b"0123456789")
        fits = all(b in ok for b, ok in zip(head[7:], shape, strict=False))
        return not fits, {}
    return True, response_findings(s2c)


def response_findings(s2c: bytes) -> dict[str, Any]:
    """``status`` from an HTTP/1.x status line at the start of s2c ({} if none yet)."""
    if not s2c.startswith(_STATUS_PREFIX) or len(s2c) < _STATUS_LEN:
        return {}
    code = s2c[9:12]
    if s2c[8:9] != b" " or not code.isdigit() or s2c[12:13] not in (b" ", b"\r", b"\n"):
        return {}
    return {"status": int(code)}


class Http(Plugin):
    name = "http"
    ports = {80, 8080, 8000, 8008, 3128}

    def _odd_request(self, data: bytes) -> Match | None:
        """A known method, a space and a path that starts cleanly, then bytes no request
        line holds: an exploit in a request (the WebDAV SEARCH overflows of 2001 put binary
        in the URL). It is still HTTP to the server that parses it, as Zeek's and
        Suricata's detection also say."""
        method, sep, rest = data[: MAX_METHOD + 1 + 4096].partition(b" ")
        if not sep or method not in METHODS or not rest.startswith((b"/", b"http://")):
            return None
        clean = 0
        while clean < len(rest) and 0x21 <= rest[clean] <= 0x7E:
            clean += 1
        if clean < 16:  # too little to tell it from chance
            return None
        return self.match("http", method=_text(method), path=_text(rest[:clean]))

    def _from_response(self, s2c: bytes) -> Match | Detection:
        """Only the server's side so far: an HTTP/1.x status line names the protocol."""
        if not s2c:
            return NEED_MORE
        final, found = response_status(s2c)
        if found:
            return self.match("http", **found)
        return NO_MATCH if final else NEED_MORE

    def detect(self, flow: FlowView) -> Match | Detection:
        if "method" in flow.findings:
            # Matched already (the inspector asks again while the status is missing): the
            # request is not parsed again, only s2c is read.
            final, found = response_status(flow.s2c)
            return self.match("http", complete=final, **found)
        data = flow.c2s
        if not data:
            # The client speaks first, unless the capture holds only the server's side or
            # picked the connection up at a response (Suricata detects HTTP from either side).
            return self._from_response(flow.s2c)
        status, request = parse_request_line(data)
        if status == "invalid":
            odd = self._odd_request(data)
            if odd is not None:
                return odd
            return self._from_response(flow.s2c) if flow.s2c else NO_MATCH
        spent = len(data) >= BUDGET or flow.c2s_bytes > len(data) or flow.budget_spent
        if request is None:
            if not spent:
                return NEED_MORE
            # A request line longer than the budget (a long WebDAV SEARCH, an overflow
            # attempt): a known method and a visible target so far are enough.
            method, _, target = data.partition(b" ")
            target = target.partition(b" ")[0]
            if method in METHODS and target and _visible(target):
                return self.match("http", method=_text(method), path=_text(target))
            return NO_MATCH
        complete, headers = parse_headers(data)
        if not complete and not flow.s2c and not spent:
            return NEED_MORE
        method, target = request
        final, found = response_status(flow.s2c)
        return self.match(
            "http",
            complete=final,
            method=_text(method),
            path=_text(target),
            host=headers.get("host"),
            user_agent=headers.get("user-agent"),
            **found,
        )
