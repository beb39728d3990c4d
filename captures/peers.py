#!/usr/bin/env python3
"""Real-socket peers used by make_captures.py (run inside network namespaces).

Content is seeded: content(label, direction, idx, size) = SHAKE-256 of
"uinet-tap/{label}/{direction}/{idx}" truncated to size bytes.  Both peers (and the tests)
can regenerate it.

  exchange-server  accept --count connections; for each, idx = peer port - --base-port;
                   send content(label,"s2c",idx,s2c_size(idx)) while reading the client's
                   bytes to EOF, then shutdown(WR) and close.  Writes a JSON report.
  exchange-client  open --count connections from ports --base-port+idx in parallel; send
                   content(label,"c2s",idx,c2s_size(idx)) while reading to EOF; shutdown(WR)
                   after sending; close.  Writes a JSON report.
  http-server      HTTP/1.1 (keep-alive) SimpleHTTPRequestHandler serving --dir.
  gen              write content(label, direction, idx, size) to a file.

sizes: c2s_size(idx) = --c2s + idx * --c2s-step, same for s2c.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import socket
import sys
import threading
from pathlib import Path


def content(label: str, direction: str, idx: int, size: int) -> bytes:
    return hashlib.shake_256(f"uinet-tap/{label}/{direction}/{idx}".encode()).digest(size)


def family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def fmt(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def exchange(sock: socket.socket, payload: bytes) -> tuple[bytes, dict]:
    """Send payload (then shutdown WR) while receiving to EOF."""
    err: list[BaseException] = []

    def sender():
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=sender)
    t.start()
    chunks = []
    while True:
        b = sock.recv(65536)
        if not b:
            break
        chunks.append(b)
    t.join()
    if err:
        raise err[0]
    got = b"".join(chunks)
    return got, {
        "sent_bytes": len(payload),
        "sent_sha256": hashlib.sha256(payload).hexdigest(),
        "recv_bytes": len(got),
        "recv_sha256": hashlib.sha256(got).hexdigest(),
    }


def sizes(a, idx):
    return a.c2s + idx * a.c2s_step, a.s2c + idx * a.s2c_step


def cmd_server(a) -> int:
    ls = socket.socket(family(a.bind), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(256)
    ls.settimeout(a.timeout)
    results, lock, threads = [], threading.Lock(), []

    def handle(conn, peer):
        try:
            conn.settimeout(a.timeout)
            idx = peer[1] - a.base_port
            c2s_n, s2c_n = sizes(a, idx)
            got, rep = exchange(conn, content(a.label, "s2c", idx, s2c_n))
            rep.update(
                idx=idx,
                peer=fmt(peer[0], peer[1]),
                recv_ok=(got == content(a.label, "c2s", idx, c2s_n)),
            )
        except BaseException as e:  # noqa: BLE001
            rep = {"peer": fmt(peer[0], peer[1]), "error": repr(e)}
        finally:
            conn.close()
        with lock:
            results.append(rep)

    if a.ready:
        Path(a.ready).write_text("ok")
    for _ in range(a.count):
        conn, peer = ls.accept()
        t = threading.Thread(target=handle, args=(conn, peer))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    ls.close()
    Path(a.report).write_text(json.dumps(sorted(results, key=lambda r: r.get("idx", -1)), indent=1))
    return 0 if all("error" not in r and r["recv_ok"] for r in results) else 1


def cmd_client(a) -> int:
    results, lock = [], threading.Lock()

    def one(idx):
        c2s_n, s2c_n = sizes(a, idx)
        s = socket.socket(family(a.connect), socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(a.timeout)
            s.bind((a.src, a.base_port + idx))
            s.connect((a.connect, a.port))
            got, rep = exchange(s, content(a.label, "c2s", idx, c2s_n))
            rep.update(
                idx=idx,
                client=fmt(a.src, a.base_port + idx),
                server=fmt(a.connect, a.port),
                recv_ok=(got == content(a.label, "s2c", idx, s2c_n)),
            )
        except BaseException as e:  # noqa: BLE001
            rep = {"idx": idx, "error": repr(e)}
        finally:
            s.close()
        with lock:
            results.append(rep)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(a.report).write_text(json.dumps(sorted(results, key=lambda r: r["idx"]), indent=1))
    return 0 if all("error" not in r and r["recv_ok"] for r in results) else 1


class KeepAliveHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def cmd_http(a) -> int:
    handler = functools.partial(KeepAliveHandler, directory=a.dir)

    class Server(http.server.ThreadingHTTPServer):
        address_family = family(a.bind)

    srv = Server((a.bind, a.port), handler)
    if a.ready:
        Path(a.ready).write_text("ok")
    srv.serve_forever()
    return 0


def cmd_gen(a) -> int:
    Path(a.out).write_bytes(content(a.label, a.direction, a.idx, a.size))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("exchange-server", "exchange-client"):
        p = sub.add_parser(name)
        p.add_argument("--label", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--base-port", type=int, required=True)
        p.add_argument("--count", type=int, default=1)
        p.add_argument("--c2s", type=int, required=True)
        p.add_argument("--s2c", type=int, required=True)
        p.add_argument("--c2s-step", type=int, default=0)
        p.add_argument("--s2c-step", type=int, default=0)
        p.add_argument("--report", required=True)
        p.add_argument("--timeout", type=float, default=60.0)
        if name == "exchange-server":
            p.add_argument("--bind", required=True)
            p.add_argument("--ready")
        else:
            p.add_argument("--src", required=True)
            p.add_argument("--connect", required=True)
    p = sub.add_parser("http-server")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--ready")
    p = sub.add_parser("gen")
    p.add_argument("--label", required=True)
    p.add_argument("--direction", required=True)
    p.add_argument("--idx", type=int, default=0)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    return {
        "exchange-server": cmd_server,
        "exchange-client": cmd_client,
        "http-server": cmd_http,
        "gen": cmd_gen,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
