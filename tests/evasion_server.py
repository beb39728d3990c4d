#!/usr/bin/env python3
"""The receiving application of the evasion cases (run inside the server namespace).

Accepts ONE connection on --bind:--port (SO_RCVBUF set before listen when --rcvbuf is
given) and then reads only when told to on stdin, so the truth does not depend on when
the scheduler ran it:

  drain        read everything readable now without blocking; answer {"drained": N}
  finish T     read until EOF, an error or T seconds without progress; answer the report
  exit         close the socket and exit

Stdout gets one JSON line per command ("listening" first).  The report:
  {"peer": "ip:port", "data": hex of every byte recv() returned, in order,
   "oob": [hex byte, ...]     bytes read with recv(MSG_OOB), in the order read,
   "marks": [offset, ...]     in-band offsets at which sockatmark() was true,
   "end": "eof" | "reset" | "timeout" | "error:<errno name>"}
Urgent handling is the default (SO_OOBINLINE off): the kernel takes the urgent byte out of
the stream; the byte is read with MSG_OOB as soon as poll() reports POLLPRI.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import select
import socket
import struct
import sys
import time

SIOCATMARK = 0x8905


class Reader:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.data = bytearray()
        self.oob: list[str] = []
        self.marks: list[int] = []
        self.end: str | None = None

    def at_mark(self) -> bool:
        buf = fcntl.ioctl(self.conn.fileno(), SIOCATMARK, struct.pack("i", 0))
        return struct.unpack("i", buf)[0] != 0

    def step(self, timeout: float) -> bool:
        """One poll, then the urgent byte and in-band bytes; True when anything was read."""
        p = select.poll()
        p.register(self.conn, select.POLLIN | select.POLLPRI)
        ev = p.poll(timeout * 1000)
        if not ev:
            return False
        progress = False
        if ev[0][1] & select.POLLPRI:
            # Take the urgent byte before the in-band read passes the mark (which would
            # discard it).
            try:
                self.oob.append(self.conn.recv(1, socket.MSG_OOB).hex())
                progress = True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EINVAL):
                    raise
        if self.at_mark() and (not self.marks or self.marks[-1] != len(self.data)):
            self.marks.append(len(self.data))
        try:
            b = self.conn.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return progress
        except ConnectionResetError:
            self.end = "reset"
            return True
        except OSError as e:
            self.end = "error:" + errno.errorcode.get(e.errno or 0, str(e.errno))
            return True
        if not b:
            self.end = "eof"
        self.data += b
        return True

    def drain(self) -> int:
        before = len(self.data)
        while self.end is None and self.step(0):
            pass
        return len(self.data) - before

    def finish(self, idle: float) -> None:
        """Read until the stream ends or nothing arrives for ``idle`` seconds."""
        deadline = time.monotonic() + idle
        while self.end is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.end = "timeout"
                break
            if self.step(left):
                deadline = time.monotonic() + idle
            else:
                time.sleep(0.005)  # poll woke us without anything to read (at a mark)


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rcvbuf", type=int, default=0)
    a = ap.parse_args()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.rcvbuf:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)  # inherited by accept()
    ls.bind((a.bind, a.port))
    ls.listen(1)
    say({"listening": a.port})
    conn, peer = ls.accept()
    ls.close()
    r = Reader(conn)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "drain":
            say({"drained": r.drain()})
        elif cmd[0] == "finish":
            r.finish(float(cmd[1]))
            say(
                {
                    "peer": f"{peer[0]}:{peer[1]}",
                    "data": r.data.hex(),
                    "oob": r.oob,
                    "marks": r.marks,
                    "end": r.end,
                    "rcvbuf": conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                }
            )
        elif cmd[0] == "exit":
            break
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
