#!/usr/bin/env python3
"""Static HTTP/1.1 file server for the inline-topology tests (run by tests/inlinelib.py).

Like ``python3 -m http.server`` but speaks HTTP/1.1, so one connection can carry several
requests (keep-alive), and logs one line per request with the client's address *and port*,
so a test can tell whether two requests shared a connection:

    <client-ip> <client-port> "<request line>" <status>

Prints ``listening <host> <port>`` on stderr once the socket is bound.  Stops cleanly on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import functools
import signal
import socket
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, code="-", size="-") -> None:
        host, port = self.client_address[:2]
        code = getattr(code, "value", code)
        print(f'{host} {port} "{self.requestline}" {code}', file=sys.stderr, flush=True)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        # errors only (requests are logged by log_request)
        print(format % args, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bind", required=True, help="address to listen on (v4 or v6)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--directory", required=True)
    args = ap.parse_args()

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
        daemon_threads = True
        allow_reuse_address = True

    httpd = Server((args.bind, args.port), functools.partial(Handler, directory=args.directory))

    def on_sig(_s, _f) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    print(f"listening {args.bind} {args.port}", file=sys.stderr, flush=True)
    httpd.serve_forever(poll_interval=0.1)
    httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
