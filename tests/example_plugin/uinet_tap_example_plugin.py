"""An example third-party plugin: intercept an HTTP keep-alive connection at its second
request, pass everything else. It waits with NEED_MORE until it can tell."""

from uinet_tap.plugins import Plugin, Verdict


class SecondRequest(Plugin):
    name = "second-request"
    ports = {80, 8080, 8000}

    def decide(self, flow):
        if flow.protocol is None:
            return Verdict.NEED_MORE  # detection still under way
        if flow.protocol != "http":
            return Verdict.PASS
        if flow.c2s.count(b" HTTP/1.") >= 2:
            return Verdict.INTERCEPT
        return Verdict.NEED_MORE
