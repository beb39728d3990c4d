"""SSH detector: the identification strings (RFC 4253 4.2) from either side.

What is recognised
    ``SSH-2.0-...`` or ``SSH-1.99-...`` (a server still offering protocol 1 compatibility),
    ended by CRLF (a bare LF is tolerated, as OpenSSH does), at most 255 bytes, printable
    US-ASCII. The server usually speaks first. One complete banner decides; the other side's
    banner is included when it is already complete, else the match is ``complete=False`` and
    the inspector asks again as data arrives until both banners are there. Should the other
    side then send something that is not a banner, the match completes without it.
    The lines a server may send before its banner (RFC 4253 4.2) are not supported: the
    banner must start the stream. SSH-1.5 (SSH 1 only) is not recognised.
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

PREFIXES = (b"SSH-2.0-", b"SSH-1.99-")
MAX_BANNER = 255  # including CRLF (RFC 4253 4.2)

COMPLETE, PREFIX, OTHER = "complete", "prefix", "other"


def _printable(raw: bytes) -> bool:
    # Software version and comments: printable US-ASCII and spaces.
    return all(0x20 <= b <= 0x7E for b in raw)


def classify(data: bytes) -> tuple[str, str | None]:
    """(COMPLETE, banner) / (PREFIX, None) for a valid start or nothing yet / (OTHER, None)."""
    if not data:
        return PREFIX, None
    head = data[:MAX_BANNER]
    if not any(p.startswith(head[: len(p)]) for p in PREFIXES):
        return OTHER, None
    if not any(head.startswith(p) for p in PREFIXES):
        return PREFIX, None  # shorter than the prefix, and consistent with it
    end = head.find(b"\n")
    if end < 0:
        return (PREFIX, None) if len(head) < MAX_BANNER and _printable(head) else (OTHER, None)
    line = head[:end].removesuffix(b"\r")
    if not _printable(line):
        return OTHER, None
    return COMPLETE, line.decode("ascii")


def banner_findings(c2s: bytes, s2c: bytes) -> dict[str, object]:
    """``client_banner`` / ``server_banner`` for whichever side's banner is complete."""
    found: dict[str, object] = {}
    for key, data in (("client_banner", c2s), ("server_banner", s2c)):
        status, banner = classify(data)
        if status == COMPLETE:
            found[key] = banner
    return found


class Ssh(Plugin):
    name = "ssh"
    ports = {22, 2222}

    def detect(self, flow: FlowView) -> Match | Detection:
        client, _ = classify(flow.c2s)
        server, _ = classify(flow.s2c)
        if OTHER in (client, server):
            if flow.protocol == self.name:
                return self.match("ssh")  # matched already: the other banner is not coming
            return NO_MATCH
        if COMPLETE not in (client, server):
            return NEED_MORE
        both = client == server == COMPLETE
        return self.match("ssh", complete=both, **banner_findings(flow.c2s, flow.s2c))
