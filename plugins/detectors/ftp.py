"""FTP: a server-first "220" greeting, told apart from SMTP (which also greets with "220").

The greeting decides when it names FTP ("220 (vsFTPd 3.0.3)", "220 Microsoft FTP Service");
otherwise the client's first command does (USER, AUTH TLS, FEAT, SYST, ...). Until one of them
says, the answer is NEED_MORE rather than a guess. The shared logic lives in mail.py.
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin
from .mail import classify_220, decode, first_line


class Ftp(Plugin):
    name = "ftp"
    ports = {21}

    def detect(self, flow: FlowView) -> Match | Detection:
        kind = classify_220(flow)
        if kind == "ftp":
            line, complete = first_line(flow.s2c)
            greeting = decode(line) if flow.s2c and line is not None and complete else None
            return self.match("ftp", greeting=greeting)
        if kind in ("smtp", "neither"):
            return NO_MATCH
        return NEED_MORE
