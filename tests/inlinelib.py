"""Test topology for a layer-2 "bump in the wire" (``uinet-tap inline IF_A IF_B``).

::

    client ns --veth-- [imp-a ns: bridge.py] --veth-- tool ns (IF_A .. IF_B)
              --veth-- [imp-b ns: bridge.py] --veth-- server ns

* client (10.77.0.1/24, fd77::1/64) and server (10.77.0.2/24, fd77::2/64) share one
  subnet, so every frame between them crosses the tool ns at layer 2, untouched.  Both
  families are configured; ``Topology.client_ip``/``server_ip`` pick one (``ipv6=``).
* The tool ns has no addresses and IPv6 disabled: the kernel there sends nothing of its
  own and does not forward, so nothing passes until the tool (or the stand-in) runs.
  Its interfaces are ``ta`` (client side, IF_A) and ``tb`` (server side, IF_B).
* imp-a / imp-b exist only when impairment (``loss``/``reorder``/``dup``) or tags are
  asked for.  Each runs ``captures/bridge.py`` with its ``--b`` side facing the tool,
  seeded (imp-a ``seed``, imp-b ``seed + 1``), impairing TCP frames in both directions
  (a frame meets both stages, so the path loss is about ``1 - (1 - loss)**2``) and
  pushing/popping the tag stack on the tool-facing side: the tool sees tagged frames on
  both interfaces and must forward them with their tags.  Tagged veths get MTU 1600
  (QinQ frames are 1522 bytes); endpoints stay at 1500.
* Offloads: bridge.py needs them off on every veth it touches, so with stages they are
  off everywhere.  Without stages ``offloads=True`` (default) leaves the kernel defaults
  on every veth (TSO/GSO/checksum offload on: the tool sees GSO super-frames and partial
  checksums); ``offloads=False`` turns them off everywhere.

Everything lives in one :class:`netnslib.NetnsSession`: closing it stops every process by
PID and deletes every namespace.  Use one topology per session (the ``topology`` fixture
in conftest.py does that and checks nothing is left behind).  Nothing here knows how the
tool works: it is any argv run in the tool ns.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from netnslib import NetnsSession, Tcpdump, run, wait_for_file, wait_for_port

HERE = Path(__file__).resolve().parent
BRIDGE = HERE.parent / "captures" / "bridge.py"
HTTP_SERVER = HERE / "inline_http_server.py"

CLIENT_IP4, SERVER_IP4 = "10.77.0.1", "10.77.0.2"
CLIENT_IP6, SERVER_IP6 = "fd77::1", "fd77::2"
IF_A, IF_B = "ta", "tb"  # tool ns: client side, server side
CLIENT_IF, SERVER_IF = "cl", "sv"
ENDPOINT_MTU = 1500
TAGGED_MTU = 1600

Tags = Literal[None, "vlan", "qinq"]
#: tag stacks, outermost first, as (TPID, VID)
TAG_STACKS: dict[str | None, list[tuple[int, int]]] = {
    None: [],
    "vlan": [(0x8100, 100)],
    "qinq": [(0x88A8, 200), (0x8100, 100)],
}
Side = Literal["client", "server", "tool", "imp_a", "imp_b"]

#: NetnsSession tag of every topology; stale namespaces carry it (see sweep_stale_namespaces)
NS_TAG = "inl"

# UDP to a closed port on the server; ECONNREFUSED (the ICMP error came back) = path works.
_PROBE = r"""
import socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    s.connect((sys.argv[1], 9))
    try:
        s.send(b"probe")
        s.recv(1)
    except ConnectionRefusedError:
        sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
sys.exit(1)
"""


@dataclass
class Stage:
    """One impairment/tagging bridge.py (imp-a or imp-b)."""

    name: str
    ns: str
    a: str  # endpoint-facing interface
    b: str  # tool-facing interface (tags pushed/popped here)
    proc: subprocess.Popen
    stats_path: Path


# A capture's snaplen that keeps Ethernet, two VLAN tags, IPv6 and TCP with options and no
# payload: for captures read only for flags and headers. The kernel's capture ring (64 MiB)
# then holds hundreds of thousands of frames rather than a thousand GSO super-frames, and
# tcpdump keeps up with a fast transfer on a busy 2-core machine instead of dropping.
HEADERS = 256


@dataclass
class Topology:
    session: NetnsSession
    client_ns: str
    server_ns: str
    tool_ns: str
    if_a: str
    if_b: str
    client_ip: str
    server_ip: str
    client_if: str
    server_if: str
    ipv6: bool
    tags: list[tuple[int, int]]  # (TPID, VID) outermost first, as seen on if_a/if_b
    offloads: bool  # effective endpoint offload setting
    workdir: Path
    stages: list[Stage] = field(default_factory=list)
    setup_seconds: float = 0.0
    _logs: dict[int, Path] = field(default_factory=dict, repr=False)
    _http_log: Path | None = field(default=None, repr=False)
    _seq: int = field(default=0, repr=False)

    # -- namespaces and commands -------------------------------------------
    def ns_of(self, side: Side) -> str:
        if side in ("client", "server", "tool"):
            return getattr(self, f"{side}_ns")
        for st in self.stages:
            if st.name == side:
                return st.ns
        raise ValueError(f"no {side!r} namespace in this topology")

    def _next(self, stem: str) -> Path:
        self._seq += 1
        return self.workdir / f"{stem}-{self._seq}"

    def exec(
        self, side: Side, *argv: str, check: bool = True, timeout: float = 60, **kw
    ) -> subprocess.CompletedProcess:
        """Run argv in that namespace to completion (output captured, text unless
        ``text=False``); raise with its stderr when ``check`` and it fails."""
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        r = subprocess.run(
            self.session.cmd(self.ns_of(side), *argv), capture_output=True, timeout=timeout, **kw
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"[{side}] {' '.join(argv)} exited {r.returncode}:\n{r.stderr}")
        return r

    def client(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.exec("client", *argv, **kw)

    def server(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.exec("server", *argv, **kw)

    def popen(self, side: Side, *argv: str, **kw) -> subprocess.Popen:
        """Start argv in that namespace in the background (stopped by PID at teardown)."""
        return self.session.popen(self.ns_of(side), *argv, **kw)

    def ss(self, side: Side) -> str:
        """``ss -tan`` in that namespace."""
        return self.exec(side, "ss", "-tan").stdout

    def tcp_sockets(self, side: Side) -> list[tuple[str, str, str]]:
        """(state, local, peer) of every TCP socket there except listeners."""
        out = []
        for line in self.exec(side, "ss", "-Htan").stdout.splitlines():
            f = line.split()
            if len(f) >= 5 and f[0] != "LISTEN":
                out.append((f[0], f[3], f[4]))
        return out

    def offload_state(self, side: Side, ifname: str | None = None) -> dict[str, bool]:
        """``ethtool -k`` of an interface (default: the endpoint's) as {feature: on}."""
        ifname = ifname or {"client": self.client_if, "server": self.server_if}[side]
        out = {}
        for line in self.exec(side, "ethtool", "-k", ifname).stdout.splitlines()[1:]:
            name, _, val = line.partition(":")
            if val.strip():
                out[name.strip()] = val.split()[0] == "on"
        return out

    # -- the path ------------------------------------------------------------
    def path_works(self, timeout: float = 0.0) -> bool:
        """True when a datagram from client reaches the server and its ICMP error comes
        back (non-TCP, so stages never impair it) within timeout (one try when 0)."""
        r = self.exec(
            "client",
            sys.executable,
            "-c",
            _PROBE,
            self.server_ip,
            str(max(timeout, 0.2)),
            check=False,
            timeout=timeout + 30,
        )
        return r.returncode == 0

    def wait_path(self, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not self.path_works(0.5):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"tool exited ({proc.returncode}) before traffic passed:\n"
                    + self.tool_stderr(proc)
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"client -> server path not working after {timeout}s")

    # -- the tool ------------------------------------------------------------
    def start_tool(
        self, argv: list[str], ready_timeout: float = 20, ready: str | None = "ready"
    ) -> subprocess.Popen:
        """Run argv in the tool namespace, its stdout and stderr to files (tool_stdout(),
        tool_stderr()).

        With ``ready`` (default "ready") wait for a stderr line containing it; otherwise
        wait until traffic passes client -> server -> client.  Raises with the stderr so far
        if the process exits or ready_timeout passes first."""
        log = self._next("tool").with_suffix(".stderr")
        with open(log, "wb") as err, open(log.with_suffix(".stdout"), "wb") as out:
            p = self.session.popen(self.tool_ns, *argv, stdout=out, stderr=err)
        self._logs[p.pid] = log
        if ready is None:
            try:
                self.wait_path(ready_timeout, proc=p)
            except TimeoutError as e:
                raise RuntimeError(f"{e}; tool stderr:\n{self.tool_stderr(p)}") from None
            return p
        deadline = time.monotonic() + ready_timeout
        while True:
            text = self.tool_stderr(p)
            if any(ready in line for line in text.splitlines()):
                return p
            if p.poll() is not None:
                raise RuntimeError(f"tool exited ({p.returncode}) before {ready!r}:\n{text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tool not {ready!r} after {ready_timeout}s:\n{text}")
            time.sleep(0.02)

    def tool_stderr(self, proc: subprocess.Popen) -> str:
        """Everything the tool wrote on stderr so far."""
        return self._logs[proc.pid].read_text(errors="replace")

    def tool_stdout(self, proc: subprocess.Popen) -> str:
        """Everything the tool wrote on stdout so far."""
        return self._logs[proc.pid].with_suffix(".stdout").read_text(errors="replace")

    def stop_tool(
        self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20
    ) -> tuple[int, str]:
        """Signal the tool's process group, wait (SIGKILL after timeout): (returncode, stderr)."""
        rc = NetnsSession.stop(proc, sig, timeout)
        assert rc is not None
        return rc, self.tool_stderr(proc)

    def start_standin(self, *extra: str, seed: int = 0) -> tuple[subprocess.Popen, Path]:
        """Stand-in for the tool: captures/bridge.py between if_a and if_b, no impairment
        (forwards every frame, tags included).  Returns (process, path of the JSON stats
        it writes when stopped).  Needs offloads off (it forwards frames as read)."""
        stats = self._next("standin").with_suffix(".stats.json")
        argv = [sys.executable, str(BRIDGE), "--a", self.if_a, "--b", self.if_b]
        argv += ["--seed", str(seed), "--stats", str(stats), *extra]
        return self.start_tool(argv, ready=None), stats

    # -- stages ----------------------------------------------------------------
    def stop_stages(self) -> dict[str, dict]:
        """Stop imp-a/imp-b and return their bridge.py counters {name: {"ab":..,"ba":..}}."""
        import json

        out = {}
        for st in self.stages:
            rc = NetnsSession.stop(st.proc)
            if rc != 0:
                raise RuntimeError(f"{st.name} bridge exited {rc}")
            out[st.name] = json.loads(st.stats_path.read_text())
        return out

    # -- observation -----------------------------------------------------------
    @contextlib.contextmanager
    def capture(
        self, side: Literal["client", "server", "a", "b"], bpf: str = "", snaplen: int = 0
    ) -> Iterator[Path]:
        """tcpdump -w on the endpoint's interface ("client"/"server") or on if_a/if_b in
        the tool ns ("a"/"b"; libpcap puts kernel-stripped VLAN tags back), ``snaplen``
        bytes of each frame (0: all).  Yields the pcap path, complete once the block exits.
        Raises if the kernel dropped packets."""
        ns, ifname = {
            "client": (self.client_ns, self.client_if),
            "server": (self.server_ns, self.server_if),
            "a": (self.tool_ns, self.if_a),
            "b": (self.tool_ns, self.if_b),
        }[side]
        path = self._next(f"cap-{side}").with_suffix(".pcap")
        td = Tcpdump(self.session, ns, ifname, path, bpf=bpf, snaplen=snaplen).start()
        ok = False
        try:
            yield path
            ok = True
        finally:
            if ok:
                td.stop()
            else:
                with contextlib.suppress(Exception):
                    td.stop(settle=0)

    def http_server(self, directory: str | Path, port: int = 8080) -> str:
        """Serve directory over HTTP/1.1 (keep-alive) from the server ns on server_ip:port;
        return the base URL (v6 bracketed: pass ``-g`` to curl).  Request log: http_log()."""
        log = self._next("http").with_suffix(".log")
        argv = [sys.executable, str(HTTP_SERVER), "--bind", self.server_ip]
        argv += ["--port", str(port), "--directory", str(directory)]
        with open(log, "wb") as f:
            self.session.popen(self.server_ns, *argv, stdout=subprocess.DEVNULL, stderr=f)
        self._http_log = log
        wait_for_port(self.session, self.server_ns, port)
        host = f"[{self.server_ip}]" if self.ipv6 else self.server_ip
        return f"http://{host}:{port}"

    def http_log(self) -> list[tuple[str, int, str]]:
        """(client ip, client port, request line) of every request served so far."""
        assert self._http_log is not None, "no http_server() started"
        out = []
        for line in self._http_log.read_text(errors="replace").splitlines():
            m = re.match(r'(\S+) (\d+) "([^"]*)"', line)
            if m:
                out.append((m[1], int(m[2]), m[3]))
        return out


def build_topology(
    session: NetnsSession,
    *,
    ipv6: bool = False,
    tags: Tags = None,
    loss: float = 0.0,
    reorder: float = 0.0,
    dup: float = 0.0,
    seed: int = 1,
    offloads: bool = True,
    workdir: str | Path | None = None,
) -> Topology:
    """Build the topology in session (see module docstring) and start the stages.

    workdir holds logs, captures and stats (default: a new temp dir, left in place).
    If building fails, the session is torn down (see teardown()) before the error
    propagates."""
    import tempfile

    if tags not in TAG_STACKS:
        raise ValueError(f"tags must be one of {list(TAG_STACKS)}, not {tags!r}")
    if session.prefix + "tool" in session.namespaces:
        raise ValueError("one topology per NetnsSession")
    t0 = time.monotonic()
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="inline-topo-"))
    wd.mkdir(parents=True, exist_ok=True)
    try:
        topo = _build(session, wd, ipv6, TAG_STACKS[tags], loss, reorder, dup, seed, offloads)
    except BaseException:
        teardown(session)
        raise
    topo.setup_seconds = time.monotonic() - t0
    return topo


def _build(
    session: NetnsSession,
    wd: Path,
    ipv6: bool,
    stack: list[tuple[int, int]],
    loss: float,
    reorder: float,
    dup: float,
    seed: int,
    offloads: bool,
) -> Topology:
    staged = bool(stack) or loss > 0 or reorder > 0 or dup > 0
    client = session.ns("client")
    server = session.ns("server")
    tool = session.ns("tool", ipv6=False)
    for ns in (client, server):
        # link-local usable at once; no ICMP rate limit slowing the path probe
        session.sh(
            ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0", "net.ipv4.icmp_ratelimit=0",
            "net.ipv6.icmp.ratelimit=0",
        )  # fmt: skip

    stages: list[tuple[str, str, str, str, int]] = []
    if not staged:
        session.veth(client, CLIENT_IF, tool, IF_A, mtu=ENDPOINT_MTU, offloads=offloads)
        session.veth(tool, IF_B, server, SERVER_IF, mtu=ENDPOINT_MTU, offloads=offloads)
    else:
        offloads = False
        imp_a = session.ns("imp-a", ipv6=False)
        imp_b = session.ns("imp-b", ipv6=False)
        mtu = TAGGED_MTU if stack else ENDPOINT_MTU
        session.veth(client, CLIENT_IF, imp_a, "ia_c", mtu=ENDPOINT_MTU)
        session.veth(imp_a, "ia_t", tool, IF_A, mtu=mtu)
        session.veth(tool, IF_B, imp_b, "ib_t", mtu=mtu)
        session.veth(imp_b, "ib_s", server, SERVER_IF, mtu=ENDPOINT_MTU)
        stages = [
            ("imp_a", imp_a, "ia_c", "ia_t", seed),
            ("imp_b", imp_b, "ib_s", "ib_t", seed + 1),
        ]

    for ns, ifn, ip4, ip6 in (
        (client, CLIENT_IF, CLIENT_IP4, CLIENT_IP6),
        (server, SERVER_IF, SERVER_IP4, SERVER_IP6),
    ):
        # ARP/ND retried every 100 ms instead of 1 s: a probe sent before the tool
        # forwards does not stall the path check for a second
        session.sh(
            ns, "sysctl", "-qw", f"net.ipv4.neigh.{ifn}.retrans_time_ms=100",
            f"net.ipv6.neigh.{ifn}.retrans_time_ms=100",
        )  # fmt: skip
        session.addr(ns, ifn, f"{ip4}/24")
        session.addr(ns, ifn, f"{ip6}/64")

    topo = Topology(
        session=session,
        client_ns=client,
        server_ns=server,
        tool_ns=tool,
        if_a=IF_A,
        if_b=IF_B,
        client_ip=CLIENT_IP6 if ipv6 else CLIENT_IP4,
        server_ip=SERVER_IP6 if ipv6 else SERVER_IP4,
        client_if=CLIENT_IF,
        server_if=SERVER_IF,
        ipv6=ipv6,
        tags=stack,
        offloads=offloads,
        workdir=wd,
    )
    spec = ",".join(f"0x{tpid:04x}:{vid}" for tpid, vid in stack)
    for name, ns, a, b, s in stages:
        ready = wd / f"{name}.ready"
        stats = wd / f"{name}.stats.json"
        argv = [sys.executable, str(BRIDGE), "--a", a, "--b", b, "--seed", str(s)]
        argv += ["--loss", str(loss), "--dup", str(dup), "--reorder", str(reorder)]
        argv += ["--ready", str(ready), "--stats", str(stats)]
        if spec:
            argv += ["--tag-b", spec]
        p = session.popen(ns, *argv)
        topo.stages.append(Stage(name, ns, a, b, p, stats))
    for st in topo.stages:
        wait_for_file(wd / f"{st.name}.ready", 10, st.proc)
    return topo


def sweep_stale_namespaces() -> list[str]:
    """Delete topology namespaces left behind by test processes that no longer exist
    (killed before their teardown ran), after killing, by PID, what still runs in them.
    Returns the names removed.  Only touches names ``ut-inl<N>-<pid>-*`` of dead pids."""
    removed = []
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"ut-{NS_TAG}\d*-(\d+)-", name)
        if not m or _pid_alive(int(m[1])):
            continue
        for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def teardown(session: NetnsSession) -> list[str]:
    """Stop the session's processes (SIGTERM, then SIGKILL), SIGKILL by PID whatever else
    still runs inside its namespaces (e.g. a daemonized child of the tool), delete the
    namespaces.  Returns the namespaces that survived (should be [])."""
    for p in reversed(session.procs):
        with contextlib.suppress(Exception):
            NetnsSession.stop(p, signal.SIGTERM, timeout=5)
    for ns in session.namespaces:
        for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    session.close()
    return leftover_namespaces(session)


def leftover_namespaces(session: NetnsSession) -> list[str]:
    """Namespaces with this session's prefix that still exist (should be none after close)."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(session.prefix)]
