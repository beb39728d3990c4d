"""Server-first text protocols: SMTP, IMAP and POP3 (and the "220" logic FTP shares).

All three wait for the server's greeting line, so the greeting decides whenever it is there;
the client's first command only helps when the greeting is ambiguous (SMTP and FTP both greet
with "220") or when the capture missed the server side (midstream pickup).

Every check looks at a bounded prefix (``MAX_LINE`` bytes) and uses ``bytes.find`` / slicing
only, so a call is O(n) in the early bytes and never backtracks.
"""

from __future__ import annotations

from typing import Literal

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

# RFC 5321 caps a reply line at 512 bytes and RFC 3501 IMAP greetings carrying a CAPABILITY
# list run to a few hundred; anything longer without a line end is not a greeting.
MAX_LINE = 4096

# First client commands that only make sense for one protocol. USER and AUTH are shared by
# FTP and POP3, so they are decided per detector (see ftp.py and Pop3 below).
SMTP_VERBS = frozenset({"EHLO", "HELO", "LHLO"})
FTP_VERBS = frozenset({"USER", "AUTH", "FEAT", "SYST", "OPTS", "HOST", "CLNT", "PBSZ"})
POP3_VERBS = frozenset({"USER", "APOP", "CAPA", "STLS", "AUTH"})
IMAP_COMMANDS = frozenset(
    {"CAPABILITY", "LOGIN", "STARTTLS", "AUTHENTICATE", "ID", "NOOP", "ENABLE", "LOGOUT"}
)
# Words that look like an IMAP tag but are really another protocol's verb ("AUTH LOGIN").
_NOT_IMAP_TAGS = SMTP_VERBS | FTP_VERBS | POP3_VERBS | {"PASS", "QUIT", "NOOP", "RSET"}


def first_line(buf: bytes, limit: int = MAX_LINE) -> tuple[bytes | None, bool]:
    """The first line of ``buf`` without its line end.

    Returns (line, complete). (None, False) when the line is longer than ``limit``: no
    greeting or command line is that long, so the caller treats it as "not this protocol".
    """
    end = buf.find(b"\n", 0, limit + 1)
    if end < 0:
        if len(buf) > limit:
            return None, False
        # A CR already in means only the LF is missing; it is not part of the text.
        return buf.removesuffix(b"\r"), False
    line = buf[:end]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, True


def is_text(line: bytes) -> bool:
    """Printable text (UTF-8 allowed, tab allowed); control bytes mean binary garbage."""
    return all((b >= 0x20 and b != 0x7F) or b == 0x09 for b in line)


def decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def client_verb(c2s: bytes) -> tuple[str | None, bool]:
    """The client's first command word. (verb, complete): complete once a space or line end
    follows it; None when the first bytes are not a plausible command word at all."""
    head = c2s[:16]
    for i, b in enumerate(head):
        if b in (0x20, 0x0D, 0x0A):
            word = head[:i]
            if not word or not word.isalpha():
                return None, False
            return decode(word).upper(), True
        if not (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A):
            return None, False
    if len(head) >= 16:  # no command word is 16 letters long
        return None, False
    return decode(head).upper(), False


Kind = Literal["smtp", "ftp", "neither"]


def classify_220(flow: FlowView) -> Kind | Detection:
    """Decide between SMTP and FTP for a flow, both of which greet with "220".

    Returns "smtp", "ftp", "neither" (this is not a 220-greeting protocol), or NEED_MORE while
    the greeting is incomplete or says nothing and the client has not spoken yet.
    """
    s2c, c2s = flow.s2c, flow.c2s
    cverb, ccomplete = client_verb(c2s) if c2s else (None, False)
    if not s2c:
        if not c2s:
            return NEED_MORE
        # Midstream or missed greeting: only the client's first command can tell.
        if cverb is None:
            return "neither"
        if not ccomplete:
            return NEED_MORE if _any_prefix(cverb, SMTP_VERBS | FTP_VERBS) else "neither"
        if cverb in SMTP_VERBS:
            return "smtp"
        if cverb in FTP_VERBS - POP3_VERBS:
            return "ftp"
        if cverb in FTP_VERBS:
            return NEED_MORE  # USER / AUTH: POP3 too; wait for the server's greeting
        return "neither"
    if len(s2c) < 4:
        # Need "220" and the separator; anything else is not a 220 greeting.
        return NEED_MORE if b"220 ".startswith(s2c) or b"220-".startswith(s2c) else "neither"
    if s2c[:3] != b"220" or s2c[3:4] not in (b" ", b"-", b"\r", b"\n"):
        return "neither"
    line, complete = first_line(s2c)
    if line is None or not is_text(line):
        return "neither"
    if not complete:
        return NEED_MORE
    up = decode(line).upper()
    smtp_hint = "SMTP" in up  # also ESMTP
    ftp_hint = "FTP" in up.replace("SMTP", "")  # "220 ftp.example.com ESMTP" is both
    # The client's first command is stronger evidence than words in a free-text greeting.
    if cverb is not None and ccomplete:
        if cverb in SMTP_VERBS:
            return "smtp"
        if cverb in FTP_VERBS:
            return "ftp"
    if smtp_hint != ftp_hint:
        return "smtp" if smtp_hint else "ftp"
    if c2s and (cverb is None or ccomplete):
        # The client spoke something that is neither's opening command and the greeting does
        # not say: some other 220-greeting protocol (or a confused client).
        return "neither"
    return NEED_MORE


def _any_prefix(partial: str, words: frozenset[str]) -> bool:
    return any(w.startswith(partial) for w in words)


class Smtp(Plugin):
    """SMTP / submission: "220" greeting plus EHLO/HELO (or "ESMTP"/"SMTP" in the greeting)."""

    name = "smtp"
    ports = {25, 587, 465, 2525}

    def detect(self, flow: FlowView) -> Match | Detection:
        kind = classify_220(flow)
        if kind == "smtp":
            return self.match("smtp", greeting=_greeting(flow.s2c))
        if kind in ("ftp", "neither"):
            return NO_MATCH
        return NEED_MORE


def _greeting_match(plugin: Plugin, protocol: str, s2c: bytes) -> Match | Detection:
    """The server's first line as the greeting: text, and whole before it is reported."""
    line, complete = first_line(s2c)
    if line is None or not is_text(line):
        return NO_MATCH
    if not complete:
        return NEED_MORE
    return plugin.match(protocol, greeting=decode(line))


class Imap(Plugin):
    """IMAP: untagged "* OK" / "* PREAUTH" / "* BYE" greeting, or a tagged first command."""

    name = "imap"
    ports = {143, 993}

    _GREETINGS = (b"* OK", b"* PREAUTH", b"* BYE")

    def detect(self, flow: FlowView) -> Match | Detection:
        s2c = flow.s2c
        if s2c:
            up = s2c[:10].upper()
            g = next((g for g in self._GREETINGS if up.startswith(g)), None)
            if g is None:
                # "* O" may still become "* OK"; anything else is not an IMAP greeting.
                partial = len(up) < 10 and any(g.startswith(up) for g in self._GREETINGS)
                return NEED_MORE if partial else NO_MATCH
            nxt = s2c[len(g) : len(g) + 1]
            if not nxt:
                return NEED_MORE
            if nxt not in (b" ", b"\r", b"\n"):
                return NO_MATCH
            return _greeting_match(self, "imap", s2c)
        # No server bytes (midstream): a tagged first command still identifies IMAP.
        c2s = flow.c2s
        if not c2s:
            return NEED_MORE
        line, complete = first_line(c2s, 1024)
        if line is None or not is_text(line):
            return NO_MATCH
        parts = line.split(b" ", 2)
        tag = parts[0]
        # RFC 3501 tag: ASTRING-CHARs except "+"; never "*" (that is the untagged marker).
        if not tag or any(b in b'+*(){%"\\]' for b in tag):
            return NO_MATCH
        if decode(tag).upper() in _NOT_IMAP_TAGS:
            return NO_MATCH
        if len(parts) < 2:
            return NEED_MORE if not complete else NO_MATCH
        cmd = decode(parts[1]).upper()
        if len(parts) == 2 and not complete:
            return NEED_MORE if _any_prefix(cmd, IMAP_COMMANDS) else NO_MATCH
        return self.match("imap") if cmd in IMAP_COMMANDS else NO_MATCH


class Pop3(Plugin):
    """POP3: "+OK" greeting, or a POP3-only first command (CAPA, STLS, APOP, AUTH <sasl>)."""

    name = "pop3"
    ports = {110, 995}

    def detect(self, flow: FlowView) -> Match | Detection:
        s2c = flow.s2c
        if s2c:
            if len(s2c) < 4:
                partial = b"+OK ".startswith(s2c) or b"+OK\r".startswith(s2c)
                return NEED_MORE if partial else NO_MATCH
            if s2c[:3] != b"+OK" or s2c[3:4] not in (b" ", b"\r", b"\n"):
                return NO_MATCH
            # Redis also answers "+OK", but only after the client spoke, while POP3 speaks
            # first: when the client spoke first, insist on a POP3 command from it.
            if flow.first_speaker == "client":
                cverb, complete = client_verb(flow.c2s)
                if not complete or cverb not in ("USER", "APOP", "CAPA", "STLS"):
                    return NO_MATCH
            return _greeting_match(self, "pop3", s2c)
        c2s = flow.c2s
        if not c2s:
            return NEED_MORE
        cverb, complete = client_verb(c2s)
        if cverb is None:
            return NO_MATCH
        if not complete:
            return NEED_MORE if _any_prefix(cverb, POP3_VERBS) else NO_MATCH
        if cverb in ("CAPA", "STLS", "APOP"):
            return self.match("pop3")
        if cverb == "AUTH":
            # FTP's first AUTH asks for TLS/SSL; POP3's names a SASL mechanism (or nothing).
            line, lcomplete = first_line(c2s, 1024)
            if line is None:
                return NO_MATCH
            if not lcomplete:
                return NEED_MORE
            arg = decode(line[5:]).strip().upper()
            if arg.startswith(("TLS", "SSL")):
                return NO_MATCH
            return self.match("pop3")
        if cverb == "USER":
            return NEED_MORE  # FTP opens with USER too: wait for the greeting to decide
        return NO_MATCH


def _greeting(s2c: bytes) -> str | None:
    line, complete = first_line(s2c)
    return decode(line) if line is not None and complete and s2c else None
