"""Small helpers for tests and capture scripts that drive real kernel TCP stacks in
network namespaces.

Everything is tracked by a :class:`NetnsSession`: the namespaces it created and the
processes it started.  Leaving the session (``with`` block or :meth:`close`) stops
every process it started, by PID (SIGTERM, then SIGKILL), and deletes every namespace
it created.  Namespace names carry a unique prefix (``ut-<tag>-<pid>-``) so parallel
runs never collide and a cleanup never touches anybody else's namespaces.

:func:`web_pair` sets up the usual scene of the live tests: a client and a server namespace
on a veth, python's http.server in the server's; :class:`Tmux` is a real terminal (tmux on a
socket of its own) to run the tool in and read its screen.

Needs root and iproute2 (``ip netns``); :class:`Tmux` needs tmux.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def netns_available() -> tuple[bool, str]:
    """(True, "") when namespaces can be used here, else (False, reason)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return False, "iproute2 `ip` not installed"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"`ip netns` unavailable: {r.stderr.strip()}"
    return True, ""


def run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stderr}")
    return r


class NetnsSession:
    """Namespaces + processes with guaranteed cleanup."""

    def __init__(self, tag: str = "cap"):
        self.prefix = f"ut-{tag}-{os.getpid()}-"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []

    # -- context manager -------------------------------------------------
    def __enter__(self) -> NetnsSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- namespaces ------------------------------------------------------
    def ns(self, short: str, ipv6: bool = True) -> str:
        """Create namespace PREFIX+short with loopback up; return its full name."""
        name = self.prefix + short
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.sh(name, "ip", "link", "set", "lo", "up")
        if not ipv6:
            self.disable_ipv6(name)
        return name

    def disable_ipv6(self, ns: str) -> None:
        self.sh(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.sh(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")

    def cmd(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def sh(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.cmd(ns, *argv), check=check)

    # -- links -----------------------------------------------------------
    def veth(
        self, ns1: str, if1: str, ns2: str, if2: str, mtu: int | None = None, offloads: bool = False
    ) -> tuple[str, str]:
        """veth pair if1 (in ns1) <-> if2 (in ns2), both up.

        offloads=False turns TSO/GSO/GRO/checksum/SG offloads off on both ends (needed
        whenever a userspace AF_PACKET bridge forwards the frames, and for captures of
        plain wire-size segments)."""
        run(
            ["ip", "link", "add", if1, "netns", ns1, "type", "veth"]
            + ["peer", "name", if2, "netns", ns2]
        )
        for ns, ifn in ((ns1, if1), (ns2, if2)):
            if mtu:
                self.sh(ns, "ip", "link", "set", ifn, "mtu", str(mtu))
            if not offloads:
                self.offloads_off(ns, ifn)
            self.sh(ns, "ip", "link", "set", ifn, "up")
        return if1, if2

    def offloads_off(self, ns: str, ifn: str) -> None:
        features = ("tso", "gso", "gro", "tx", "rx", "sg")
        self.sh(ns, "ethtool", "-K", ifn, *(w for f in features for w in (f, "off")))
        # not every kernel lets these change on veth; best effort
        self.sh(ns, "ethtool", "-K", ifn, "rxvlan", "off", "txvlan", "off", check=False)

    def addr(self, ns: str, ifn: str, cidr: str) -> None:
        argv = ["ip", "addr", "add", cidr, "dev", ifn]
        if ":" in cidr:
            argv.append("nodad")
        self.sh(ns, *argv)

    # -- processes -------------------------------------------------------
    def popen(self, ns: str | None, *argv: str, **kw) -> subprocess.Popen:
        """Start argv (inside ns if given) in its own session; tracked for cleanup."""
        full = self.cmd(ns, *argv) if ns else list(argv)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(full, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def popen_shell(self, ns: str, script: str, **kw) -> subprocess.Popen:
        return self.popen(ns, "sh", "-c", script, **kw)

    @staticmethod
    def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal p's process group (it is its own session leader), wait, SIGKILL if needed."""
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        return p.returncode

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(p, signal.SIGTERM, timeout=5)
            for f in (p.stdout, p.stderr):
                if f:
                    with contextlib.suppress(Exception):
                        f.close()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()


def wait_for_file(
    path: str | Path, timeout: float = 10.0, proc: subprocess.Popen | None = None
) -> None:
    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)


def wait_for_port(session: NetnsSession, ns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = session.sh(ns, "ss", "-Hltn", f"sport = :{port}", check=False)
        if r.stdout.strip():
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port} in {ns}")


class Tcpdump:
    """tcpdump writing a pcap inside a namespace; start() returns once it is listening."""

    def __init__(
        self,
        session: NetnsSession,
        ns: str,
        ifname: str,
        path: str | Path,
        bpf: str = "tcp",
        snaplen: int = 0,
    ):
        """``snaplen``: bytes kept of each frame (0: all); headers alone are far less to
        write, so a capture of a fast transfer on a busy machine keeps up."""
        self.session, self.ns, self.ifname = session, ns, ifname
        self.path, self.bpf, self.snaplen = str(path), bpf, snaplen
        self.proc: subprocess.Popen | None = None
        self.stderr_text = ""

    def start(self, timeout: float = 10.0) -> Tcpdump:
        argv = ["tcpdump", "-i", self.ifname, "-n", "-s", str(self.snaplen), "-B", "65536", "-U"]
        argv += ["--immediate-mode", "-Z", "root", "-w", self.path]
        if self.bpf:
            argv.append(self.bpf)
        self.proc = self.session.popen(
            self.ns, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        buf = b""
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while b"listening on" not in buf:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"tcpdump did not start: {buf.decode(errors='replace')}")
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                buf += chunk
        self.stderr_text = buf.decode(errors="replace")
        return self

    def stop(self, settle: float = 0.3) -> str:
        """Stop (SIGINT), return tcpdump's stderr; raise if the kernel dropped packets."""
        time.sleep(settle)
        assert self.proc is not None
        NetnsSession.stop(self.proc, signal.SIGINT)
        assert self.proc.stderr is not None
        self.stderr_text += self.proc.stderr.read().decode(errors="replace")
        for line in self.stderr_text.splitlines():
            if "dropped by kernel" in line and not line.strip().startswith("0 "):
                raise RuntimeError(f"tcpdump dropped packets: {line}")
        return self.stderr_text


def process_identity(pid: int) -> dict[str, list[str]]:
    """The identity lines of /proc/PID/status (Uid, Gid: real, effective, saved, fs; Groups;
    CapInh/CapPrm/CapEff/CapAmb; NoNewPrivs), each split into its fields."""
    keys = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs")
    out: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = value.split()
    return out


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is pid (from /proc/*/stat)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return sorted(kids)


@dataclass(frozen=True)
class WebPair:
    """Two namespaces on one veth, python's http.server serving a directory in the server's."""

    session: NetnsSession
    client_ns: str
    server_ns: str
    client_if: str
    server_if: str
    client_ip: str
    server_ip: str
    port: int
    server: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.server_ip}:{self.port}"

    def fetch(self, path: str, out: str | Path, tries: int = 50) -> subprocess.CompletedProcess:
        """curl URL/path into out from the client's namespace, again while the server is
        still starting (every 0.2 s, at most `tries` times); the last attempt's result."""
        for _ in range(tries):
            r = subprocess.run(
                self.session.cmd(self.client_ns, "curl", "-s", "-o", str(out),
                                 f"{self.url}/{path.lstrip('/')}"),
                capture_output=True, timeout=10,
            )  # fmt: skip
            if r.returncode == 0:
                break
            time.sleep(0.2)
        return r


def web_pair(
    session: NetnsSession,
    client_if: str,
    server_if: str,
    subnet: str,
    www: str | Path,
    port: int = 8000,
) -> WebPair:
    """Namespaces "c" and "s" of the session (IPv6 off: no ND/RS noise) joined by a veth
    (client_if -- server_if, offloads off), SUBNET.1/24 on the client, SUBNET.2/24 on the
    server, and ``python -m http.server`` there serving www (stopped with the session)."""
    cli = session.ns("c", ipv6=False)
    srv = session.ns("s", ipv6=False)
    session.veth(cli, client_if, srv, server_if)
    client_ip, server_ip = f"{subnet}.1", f"{subnet}.2"
    session.addr(cli, client_if, f"{client_ip}/24")
    session.addr(srv, server_if, f"{server_ip}/24")
    server = session.popen(srv, sys.executable, "-m", "http.server", str(port), "--bind",
                           server_ip, "--directory", str(www), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    return WebPair(session, cli, srv, client_if, server_if, client_ip, server_ip, port, server)


class Tmux:
    """One tmux window ("w") on a server of its own (socket ``ut-<tag>-<pid>-<n>``): a real
    terminal for the tool. Leaving it (``with`` or :meth:`close`) kills that server."""

    _count = itertools.count()

    def __init__(self, tag: str, width: int = 160, height: int = 40) -> None:
        self.socket = f"ut-{tag}-{os.getpid()}-{next(self._count)}"
        self.width, self.height = width, height

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                           timeout=10)  # fmt: skip
        return r.stdout

    def start(self, command: str) -> None:
        """Run the shell command in the window, then ``echo EXITED=<status>`` (what
        :meth:`wait_exit` waits for) and stay a while so the screen can still be read."""
        self.tmux("new-session", "-d", "-s", "w", "-x", str(self.width), "-y",
                  str(self.height), f"{command}; echo EXITED=$?; sleep 30")  # fmt: skip

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "w", *keys)

    def screen(self, history: int = 0) -> str:
        """The window's text, with up to `history` lines scrolled off above it."""
        return self.tmux("capture-pane", "-p", *(("-S", f"-{history}") if history else ()),
                         "-t", "w")  # fmt: skip

    def wait(
        self, pred: Callable[[str], object], what: str, timeout: float = 20.0, history: int = 0
    ) -> str:
        """The screen once pred holds for it (checked every 0.2 s); AssertionError naming
        `what`, with the last screen, after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen(history)
            if pred(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def wait_exit(self, what: str, timeout: float = 20.0, history: int = 0) -> str:
        """The screen once the command has ended (its EXITED= line is shown)."""
        return self.wait(lambda t: "EXITED=" in t, what, timeout, history)

    def close(self) -> None:
        self.tmux("kill-server")
