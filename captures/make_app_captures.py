#!/usr/bin/env python3
"""Regenerate the application-protocol captures in captures/app/ from REAL client and server
software talking between network namespaces (run as root).

    sudo .venv/bin/python captures/make_app_captures.py                  # all, into captures/app/
    sudo .venv/bin/python captures/make_app_captures.py --only tls13 --out /tmp/x
    sudo .venv/bin/python captures/make_app_captures.py --list           # names + programs

For every scenario NAME it writes NAME.pcap and NAME.expected.json:

    {"capture": "NAME.pcap", "how": "...exact commands...",
     "connections": [{"client": "10.77.0.1:41000", "server": "10.77.0.2:80",
                      "protocol": "http",
                      "findings": {...},            # subset the tool's findings must match
                      "alternatives": {...}}]}      # optional: key -> other accepted values

The findings come from what the programs themselves printed or were told (curl -v, ssh -v,
openssl s_client, swaks, select version(), command-line arguments), never from the tool
under test; every capture is cross-checked with tshark before it is written.  The client
port of a connection is read from its SYN in the capture (programs such as psql or ssh
cannot pin it).  Handshake bytes (keys, randoms, ISNs) differ on every run: always ship a
pcap together with the expected.json made in the same run.

Topology: client netns 10.77.0.1 (c0) -veth- server netns 10.77.0.2 (s0); proxy-protocol
adds a backend netns 10.77.1.2 (b0) behind the server netns (s1 10.77.1.1).  Offloads off,
IPv6 off (except the ipv6 scenario: fd00:77::1 -> fd00:77::2).  tcpdump on the server side
veth filtered to the scenario's port, so each pcap holds just that application traffic.
Namespaces/processes come from tests/netnslib.py (unique prefix, cleaned up by PID).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from netnslib import NetnsSession, Tcpdump, netns_available, wait_for_port  # noqa: E402

PY = sys.executable
C4, S4 = "10.77.0.1", "10.77.0.2"
S1, B4 = "10.77.1.1", "10.77.1.2"
C6, S6 = "fd00:77::1", "fd00:77::2"


class ScenarioError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class App:
    def __init__(self, session: NetnsSession, work: Path):
        self.s, self.work = session, work
        self.cmds: list[str] = []  # commands recorded for "how"

    def direct(self, v6: bool = False, backend: bool = False):
        c = self.s.ns("c", ipv6=v6)
        sv = self.s.ns("s", ipv6=v6)
        self.s.veth(c, "c0", sv, "s0")
        if v6:
            self.s.addr(c, "c0", C6 + "/64")
            self.s.addr(sv, "s0", S6 + "/64")
        else:
            self.s.addr(c, "c0", C4 + "/24")
            self.s.addr(sv, "s0", S4 + "/24")
        if not backend:
            return c, sv
        b = self.s.ns("b", ipv6=False)
        self.s.veth(sv, "s1", b, "b0")
        self.s.addr(sv, "s1", S1 + "/24")
        self.s.addr(b, "b0", B4 + "/24")
        return c, sv, b

    def server(
        self, ns: str, *argv: str, port: int, show: str | None = None, timeout: float = 20.0, **kw
    ) -> subprocess.Popen:
        """Start a server (tracked by the session), wait until it listens on port."""
        self.cmds.append("server: " + (show or shlex.join(argv)))
        log = open(self.work / f"srv-{len(self.cmds)}.log", "wb")  # noqa: SIM115
        kw.setdefault("stdout", log)
        kw.setdefault("stderr", subprocess.STDOUT)
        p = self.s.popen(ns, *argv, **kw)
        try:
            wait_for_port(self.s, ns, port, timeout)
        except TimeoutError as e:
            NetnsSession.stop(p)
            raise ScenarioError(
                f"{argv[0]} did not listen on {port}: "
                f"{(self.work / log.name).read_text(errors='replace')[-2000:]}"
            ) from e
        return p

    def client(
        self,
        ns: str,
        *argv: str,
        show: str | None = None,
        ok_rc=(0,),
        timeout: float = 60,
        input: str | None = None,
        env=None,
    ) -> str:
        """Run a client to completion; return stdout+stderr."""
        self.cmds.append("client: " + (show or shlex.join(argv)))
        r = subprocess.run(
            self.s.cmd(ns, *argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        out = r.stdout + r.stderr
        if ok_rc is not None and r.returncode not in ok_rc:
            raise ScenarioError(f"{argv[0]} exited {r.returncode}: {out[-3000:]}")
        return out

    def run(self, *argv: str, user: str | None = None, **kw) -> str:
        if user:
            argv = ("runuser", "-u", user, "--", *argv)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
        if r.returncode != 0:
            raise ScenarioError(
                f"{' '.join(argv)} exited {r.returncode}: {(r.stdout + r.stderr)[-3000:]}"
            )
        return r.stdout

    def capture(self, ns: str, ifname: str, bpf: str) -> Tcpdump:
        self.cmds.append(f"capture: tcpdump -i {ifname} -s 0 -w X.pcap '{bpf}'")
        return Tcpdump(self.s, ns, ifname, self.work / "cap.pcap", bpf=bpf).start()

    def file(self, name: str, text: str, mode: int = 0o644) -> Path:
        p = self.work / name
        p.write_text(textwrap.dedent(text).lstrip())
        p.chmod(mode)
        return p

    def how(self, intro: str) -> str:
        return (intro + " | " + " | ".join(self.cmds)).replace(str(self.work), "$WORK")


def fmt(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def syn_connections(pcap: Path) -> list[tuple[str, str]]:
    """(client, server) of every connection whose SYN is in the capture, in order."""
    import dpkt

    out = []
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
                a = fmt(str(ipaddress.ip_address(ip.src)), tcp.sport)
                b = fmt(str(ipaddress.ip_address(ip.dst)), tcp.dport)
                if (a, b) not in out:
                    out.append((a, b))
    return out


def first_speakers(pcap: Path) -> dict[tuple[str, str], str]:
    """(client, server) -> "client" | "server": who sent the first payload byte."""
    import dpkt

    conns_ = syn_connections(pcap)
    out: dict[tuple[str, str], str] = {}
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
                continue
            a = fmt(str(ipaddress.ip_address(ip.src)), tcp.sport)
            b = fmt(str(ipaddress.ip_address(ip.dst)), tcp.dport)
            if (a, b) in conns_:
                out.setdefault((a, b), "client")
            elif (b, a) in conns_:
                out.setdefault((b, a), "server")
    return out


def tshark(
    pcap: Path, dfilter: str, fields: list[str] | None = None, decode_as: list[str] = ()
) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(pcap), "-Y", dfilter]
    for d in decode_as:
        argv += ["-d", d]
    if fields:
        argv += ["-T", "fields", "-E", "separator=\t"]
        for f in fields:
            argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise ScenarioError(f"tshark failed: {r.stderr}")
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]


def require(pcap: Path, dfilter: str, want=None, field: str | None = None, decode_as=()):
    """Assert tshark finds dfilter in the capture (and, if given, that field == want)."""
    rows = tshark(pcap, dfilter, [field] if field else None, decode_as)
    if not rows:
        raise ScenarioError(f"tshark: nothing matches {dfilter!r} in the capture")
    if field is not None:
        vals = {r[0] for r in rows}
        if str(want) not in vals and not any(str(want) in v.split(",") for v in vals):
            raise ScenarioError(f"tshark: {field} = {vals}, expected {want!r}")


def conns(
    pcap: Path,
    protocol: str,
    findings: dict,
    count: int = 1,
    alternatives: dict | None = None,
    per_conn: list[dict] | None = None,
) -> list[dict]:
    got = syn_connections(pcap)
    if len(got) != count:
        raise ScenarioError(f"expected {count} connection(s) in the capture, got {got}")
    out = []
    for i, (cl, sv) in enumerate(got):
        f = dict(findings)
        if per_conn:
            f.update(per_conn[i])
        c = {"client": cl, "server": sv, "protocol": protocol, "findings": f}
        if alternatives:
            c["alternatives"] = alternatives
        out.append(c)
    return out


def grab(pattern: str, text: str, what: str) -> str:
    m = re.search(pattern, text, re.M)
    if not m:
        raise ScenarioError(f"could not find {what} ({pattern!r}) in:\n{text[-3000:]}")
    return m.group(1)


def curl_http(out: str) -> dict:
    """HTTP findings from curl -v output (what curl sent and got)."""
    m = re.search(r"^> (\w+) (\S+) HTTP/", out, re.M)
    if not m:
        raise ScenarioError(f"no request line in curl -v output:\n{out[-2000:]}")
    return {
        "method": m.group(1),
        "path": m.group(2),
        "host": grab(r"(?i)^> Host: (.+?)\r?$", out, "Host"),
        "user_agent": grab(r"(?i)^> User-Agent: (.+?)\r?$", out, "User-Agent"),
        "status": int(grab(r"^< HTTP/[\d.]+ (\d{3})", out, "status")),
    }


def www(app: App) -> Path:
    d = app.work / "www"
    d.mkdir(exist_ok=True)
    (d / "hello.txt").write_text("hello from uinet-tap app captures\n")
    return d


# ---------------------------------------------------------------------------
# scenarios: each returns (intro for "how", connections); the pcap is work/cap.pcap
# ---------------------------------------------------------------------------


def sc_http(app: App, v6: bool = False):
    c, sv = app.direct(v6=v6)
    srv_ip = S6 if v6 else S4
    d = www(app)
    app.server(
        sv,
        PY,
        "-m",
        "http.server",
        "80",
        "--bind",
        srv_ip,
        "-d",
        str(d),
        port=80,
        show=f"python3 -m http.server 80 --bind {srv_ip} -d www",
    )
    td = app.capture(sv, "s0", "tcp port 80")
    host = f"[{srv_ip}]" if v6 else srv_ip
    out = app.client(
        c,
        "curl",
        "-sS",
        "-v",
        "--fail",
        "-o",
        "/dev/null",
        "--local-port",
        "41000",
        "-A",
        "curl/7.88.1 uinet-tap",
        f"http://{host}/hello.txt",
    )
    td.stop()
    pcap = app.work / "cap.pcap"
    f = curl_http(out)
    require(pcap, 'http.request.method == "GET"', f["path"], "http.request.uri")
    require(pcap, "http.response.code == 200")
    return "curl (Debian 7.88.1) -> python3 http.server (HTTP/1.0)", conns(pcap, "http", f)


def sc_http_ipv6(app: App):
    intro, cs = sc_http(app, v6=True)
    return intro + " over IPv6", cs


def sc_http2(app: App):
    c, sv = app.direct()
    d = www(app)
    app.server(sv, "nghttpd", "--no-tls", f"--address={S4}", "-d", str(d), "80", port=80)
    td = app.capture(sv, "s0", "tcp port 80")
    out = app.client(
        c,
        "curl",
        "-sS",
        "-v",
        "--fail",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "--local-port",
        "41001",
        f"http://{S4}/hello.txt",
    )
    td.stop()
    pcap = app.work / "cap.pcap"
    f = curl_http(out)
    if "HTTP/2" not in out:
        raise ScenarioError("curl did not use HTTP/2")
    require(
        pcap, "http2.type == 1", f["path"], "http2.headers.path", decode_as=["tcp.port==80,http2"]
    )
    require(
        pcap, "http2.type == 1", "200", "http2.headers.status", decode_as=["tcp.port==80,http2"]
    )
    return (
        "curl --http2-prior-knowledge (7.88.1, nghttp2 1.52) -> nghttpd --no-tls "
        "(Debian nghttp2-server 1.52.0), h2c prior knowledge"
    ), conns(pcap, "http2", f)


def iana_cipher(openssl_name: str) -> tuple[str, str]:
    """(IANA name, "0xXXXX") of an OpenSSL cipher name, from `openssl ciphers -stdname -V`."""
    out = subprocess.run(
        ["openssl", "ciphers", "-stdname", "-V", "ALL:@SECLEVEL=0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        m = re.match(r"\s*0x([0-9A-F]{2}),0x([0-9A-F]{2})\s+-\s+(\S+)\s+-\s+(\S+)", line)
        if m and openssl_name in (m.group(3), m.group(4)):
            return m.group(3), f"0x{m.group(1)}{m.group(2)}".lower()
    raise ScenarioError(f"unknown cipher {openssl_name}")


def sc_tls(app: App, tls12: bool):
    c, sv = app.direct()
    key, crt = app.work / "key.pem", app.work / "crt.pem"
    app.run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-days",
        "2",
        "-subj",
        "/CN=example.test",
    )
    app.cmds.append(
        "cert: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        "-nodes -days 2 -subj /CN=example.test"
    )
    app.server(
        sv,
        "openssl",
        "s_server",
        "-accept",
        f"{S4}:443",
        "-cert",
        str(crt),
        "-key",
        str(key),
        "-alpn",
        "http/1.1",
        "-naccept",
        "1",
        port=443,
        stdin=subprocess.PIPE,
    )  # s_server drops the client when its stdin hits EOF
    td = app.capture(sv, "s0", "tcp port 443")
    argv = [
        "openssl",
        "s_client",
        "-connect",
        f"{S4}:443",
        "-servername",
        "example.test",
        "-alpn",
        "h2,http/1.1",
    ] + (["-tls1_2"] if tls12 else [])
    out = app.client(c, *argv, show=shlex.join(argv) + " </dev/null")
    td.stop()
    pcap = app.work / "cap.pcap"
    proto = grab(r"^New, (TLSv1\.\d), Cipher is ", out, "protocol")
    name = grab(r"^New, TLSv1\.\d, Cipher is (\S+)", out, "cipher")
    want = "TLSv1.2" if tls12 else "TLSv1.3"
    if proto != want:
        raise ScenarioError(f"negotiated {proto}, wanted {want}")
    iana, code = iana_cipher(name)
    f = {
        "sni": "example.test",
        "alpn": ["h2", "http/1.1"],
        "tls_version": "TLS " + proto[4:],
        "cipher": iana,
    }
    require(pcap, "tls.handshake.type == 1", "example.test", "tls.handshake.extensions_server_name")
    require(pcap, "tls.handshake.type == 1", "h2", "tls.handshake.extensions_alpn_str")
    require(pcap, "tls.handshake.type == 2", code, "tls.handshake.ciphersuite")
    if not tls12:
        require(
            pcap, "tls.handshake.type == 2", "0x0304", "tls.handshake.extensions.supported_version"
        )
    else:
        require(pcap, "tls.handshake.type == 2", "0x0303", "tls.handshake.version")
    return (
        f"openssl s_client -> openssl s_server (OpenSSL 3.0), {want}, self-signed P-256 "
        f"cert made on the fly; s_client quits at EOF on stdin after the handshake; "
        f"negotiated {name} ({code})"
    ), conns(pcap, "tls", f, alternatives={"cipher": [code, name]})


def sc_tls13(app: App):
    return sc_tls(app, False)


def sc_tls12(app: App):
    return sc_tls(app, True)


def sc_ssh(app: App, port: int = 22):
    c, sv = app.direct()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep directory
    hk, ck = app.work / "hostkey", app.work / "clientkey"
    app.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk))
    app.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ck))
    shutil.copyfile(str(ck) + ".pub", app.work / "authorized_keys")
    cfg = app.file(
        "sshd_config",
        f"""
        Port {port}
        ListenAddress {S4}
        HostKey {hk}
        PidFile {app.work}/sshd.pid
        AuthorizedKeysFile {app.work}/authorized_keys
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        StrictModes no
        UsePAM no
        """,
    )
    app.cmds.append("keys: ssh-keygen -t ed25519 -N '' (host and client keys, on the fly)")
    app.server(
        sv,
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-f",
        str(cfg),
        port=port,
        show=f"/usr/sbin/sshd -D -e -f sshd_config (Port {port}, ListenAddress {S4}, "
        f"HostKey, AuthorizedKeysFile, UsePAM no)",
    )
    td = app.capture(sv, "s0", f"tcp port {port}")
    out = app.client(
        c,
        "ssh",
        "-vv",
        "-p",
        str(port),
        "-i",
        str(ck),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        f"root@{S4}",
        "true",
        ok_rc=None,
    )
    td.stop()
    pcap = app.work / "cap.pcap"
    cb = grab(r"Local version string (SSH-2\.0-\S.*?)\r?$", out, "client banner")
    sb = "SSH-2.0-" + grab(r"remote software version (.+?)\r?$", out, "server banner")
    f = {"client_banner": cb, "server_banner": sb}
    decode = [f"tcp.port=={port},ssh"] if port != 22 else []
    require(pcap, "ssh.protocol", cb, "ssh.protocol", decode)
    require(pcap, "ssh.protocol", sb, "ssh.protocol", decode)
    ok = "Authenticated to" in out
    return (
        f"OpenSSH ssh client -> OpenSSH sshd (Debian 9.2p1) on port {port}, public-key "
        f"auth with an ed25519 key made on the fly "
        f"({'authenticated, ran `true`' if ok else 'auth did not complete'})"
    ), conns(pcap, "ssh", f)


def sc_ssh_on_443(app: App):
    intro, cs = sc_ssh(app, 443)
    return "WRONG PORT: " + intro, cs


def sc_redis(app: App, port: int = 6379):
    c, sv = app.direct()
    app.server(
        sv,
        "redis-server",
        "--bind",
        S4,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        str(app.work),
        port=port,
    )
    td = app.capture(sv, "s0", f"tcp port {port}")
    out = app.client(c, "redis-cli", "-h", S4, "-p", str(port), "SET", "greeting", "hello")
    out2 = app.client(c, "redis-cli", "-h", S4, "-p", str(port), "GET", "greeting")
    td.stop()
    if "OK" not in out or "hello" not in out2:
        raise ScenarioError(f"redis-cli: {out} {out2}")
    pcap = app.work / "cap.pcap"
    require(pcap, 'tcp.payload contains "greeting"')
    require(pcap, 'tcp.payload contains "+OK"')
    return (
        f"redis-cli -> redis-server (Debian 7.0) on port {port}: one connection SET, one GET"
    ), conns(pcap, "redis", {}, count=2)


def sc_redis_on_8080(app: App):
    intro, cs = sc_redis(app, 8080)
    return "WRONG PORT: " + intro, cs


def postgres_up(app: App, sv: str, ssl: bool = False) -> Path:
    os.chmod(app.work, 0o755)
    data, sock = app.work / "pgdata", app.work / "pgsock"
    for d in (data, sock):
        d.mkdir(mode=0o700)
        shutil.chown(d, "postgres", "postgres")
    bindir = Path(
        subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        or "/usr/lib/postgresql/15/bin"
    )
    if not (bindir / "initdb").exists():
        cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        bindir = cands[-1].parent
    app.run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "alice",
        "-A",
        "trust",
        "--no-sync",
        user="postgres",
    )
    app.cmds.append("initdb -D pgdata -U alice -A trust (as user postgres)")
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 10.77.0.0/16 trust\n")
    app.server(
        sv,
        "runuser",
        "-u",
        "postgres",
        "--",
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-c",
        f"listen_addresses={S4}",
        "-c",
        f"unix_socket_directories={sock}",
        "-c",
        "ssl=off",
        "-c",
        "fsync=off",
        port=5432,
        show=f"postgres -D pgdata -c listen_addresses={S4} -c ssl=off (as user postgres)",
    )
    app.run(str(bindir / "createdb"), "-h", str(sock), "-U", "alice", "shop", user="postgres")
    app.cmds.append("createdb -U alice shop (unix socket)")
    return sock


def sc_postgresql(app: App, sslmode: str):
    c, sv = app.direct()
    postgres_up(app, sv)
    td = app.capture(sv, "s0", "tcp port 5432")
    out = app.client(
        c,
        "psql",
        f"host={S4} user=alice dbname=shop sslmode={sslmode}",
        "-Atc",
        "select current_user || '@' || current_database()",
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    td.stop()
    if "alice@shop" not in out:
        raise ScenarioError(f"psql: {out}")
    pcap = app.work / "cap.pcap"
    f = {"user": "alice", "database": "shop"}
    require(pcap, 'pgsql.parameter_name == "user"', "alice", "pgsql.parameter_value")
    require(pcap, 'pgsql.parameter_name == "database"', "shop", "pgsql.parameter_value")
    if sslmode == "prefer":
        f["ssl_request"] = True
        require(pcap, "tcp.payload == 00:00:00:08:04:d2:16:2f")  # SSLRequest
        require(pcap, 'tcp.srcport == 5432 && tcp.payload == "N"')  # refused
    return (
        f"psql (PostgreSQL 15 client) sslmode={sslmode} -> postgres 15 (initdb'd into a "
        f"temp dir, ssl=off so an SSLRequest is refused with 'N' and the startup follows "
        f"in clear)"
    ), conns(pcap, "postgresql", f)


def sc_postgresql_sslprefer(app: App):
    return sc_postgresql(app, "prefer")


def sc_postgresql_nossl(app: App):
    return sc_postgresql(app, "disable")


def sc_mysql(app: App):
    c, sv = app.direct()
    data = app.work / "mydata"
    app.run(
        "mariadb-install-db",
        "--no-defaults",
        f"--datadir={data}",
        "--user=root",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    )
    app.cmds.append(
        "mariadb-install-db --no-defaults --datadir=mydata --user=root "
        "--auth-root-authentication-method=normal --skip-test-db"
    )
    app.server(
        sv,
        "mariadbd",
        "--no-defaults",
        f"--datadir={data}",
        "--user=root",
        f"--bind-address={S4}",
        "--port=3306",
        f"--socket={app.work}/my.sock",
        f"--pid-file={app.work}/my.pid",
        "--skip-log-bin",
        port=3306,
        timeout=60,
    )
    app.client(
        sv,
        "mariadb",
        "--no-defaults",
        f"--socket={app.work}/my.sock",
        "-u",
        "root",
        "-e",
        "CREATE USER 'alice'@'%' IDENTIFIED BY 'secret'; GRANT ALL ON *.* TO 'alice'@'%'",
        show="mariadb --socket=my.sock -u root -e \"CREATE USER 'alice'@'%' IDENTIFIED "
        "BY 'secret'; GRANT ALL ON *.* TO 'alice'@'%'\"",
    )
    td = app.capture(sv, "s0", "tcp port 3306")
    out = app.client(
        c,
        "mariadb",
        "--no-defaults",
        "-h",
        S4,
        "-P",
        "3306",
        "-u",
        "alice",
        "-psecret",
        "--skip-ssl",
        "-N",
        "-B",
        "-e",
        "select version()",
    )
    td.stop()
    version = out.strip().splitlines()[-1].strip()
    pcap = app.work / "cap.pcap"
    rows = tshark(pcap, "mysql.version", ["mysql.version"])
    if not rows:
        raise ScenarioError("tshark: no mysql.version")
    wire = rows[0][0]
    if not wire.endswith(version):  # MariaDB 10.x sends "5.5.5-" + version()
        raise ScenarioError(f"handshake version {wire!r} vs select version() {version!r}")
    return (
        f"mariadb client -> mariadbd {version} (temp datadir made by mariadb-install-db), "
        f"`select version()`; the handshake carries {wire!r} (MariaDB 10 prefixes "
        f"'5.5.5-'), either form is accepted"
    ), conns(pcap, "mysql", {"server_version": wire}, alternatives={"server_version": [version]})


def sc_mqtt(app: App, v5: bool = False):
    c, sv = app.direct()
    cfg = app.file(
        "mosquitto.conf",
        f"""
        listener 1883 {S4}
        allow_anonymous true
        persistence false
        """,
    )
    app.server(
        sv,
        "mosquitto",
        "-c",
        str(cfg),
        port=1883,
        show=f"mosquitto -c mosquitto.conf (listener 1883 {S4}, allow_anonymous true)",
    )
    td = app.capture(sv, "s0", "tcp port 1883")
    cid = "sensor-42-v5" if v5 else "sensor-42"
    app.client(
        c,
        "mosquitto_pub",
        "-h",
        S4,
        "-p",
        "1883",
        "-i",
        cid,
        "-V",
        "mqttv5" if v5 else "mqttv311",
        "-t",
        "uinet/test",
        "-m",
        "hello",
        "-q",
        "1",
    )
    td.stop()
    pcap = app.work / "cap.pcap"
    level = 5 if v5 else 4
    require(pcap, "mqtt.msgtype == 1", cid, "mqtt.clientid")
    require(pcap, "mqtt.msgtype == 1", str(level), "mqtt.ver")
    return (
        f"mosquitto_pub -V {'mqttv5' if v5 else 'mqttv311'} -i {cid} (QoS 1) -> mosquitto 2.0.11"
    ), conns(pcap, "mqtt", {"client_id": cid, "protocol_level": level})


def sc_mqtt5(app: App):
    return sc_mqtt(app, True)


def sc_dns(app: App):
    c, sv = app.direct()
    app.server(
        sv,
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--listen-address={S4}",
        "--bind-interfaces",
        "--port=53",
        "--user=root",
        f"--pid-file={app.work}/dnsmasq.pid",
        "--address=/example.test/10.77.0.99",
        "--txt-record=example.test,uinet-tap",
        port=53,
    )
    td = app.capture(sv, "s0", "tcp port 53")
    out = app.client(c, "dig", "+tcp", "+norecurse", f"@{S4}", "example.test", "A")
    td.stop()
    if "10.77.0.99" not in out:
        raise ScenarioError(f"dig: {out}")
    pcap = app.work / "cap.pcap"
    require(pcap, "dns.flags.response == 0", "example.test", "dns.qry.name")
    require(pcap, "dns.flags.response == 1", "10.77.0.99", "dns.a")
    return (
        "dig +tcp (BIND 9.18) example.test A -> dnsmasq 2.90 (--address=/example.test/10.77.0.99)"
    ), conns(pcap, "dns", {"queries": ["example.test A"]})


def sc_smtp(app: App):
    c, sv = app.direct()
    app.server(
        sv,
        PY,
        "-m",
        "aiosmtpd",
        "-n",
        "-l",
        f"{S4}:25",
        "-c",
        "aiosmtpd.handlers.Sink",
        port=25,
        show=f"python3 -m aiosmtpd -n -l {S4}:25 -c aiosmtpd.handlers.Sink "
        f"(aiosmtpd 1.4.6 from PyPI)",
    )
    td = app.capture(sv, "s0", "tcp port 25")
    out = app.client(
        c,
        "swaks",
        "--server",
        f"{S4}:25",
        "--from",
        "alice@client.test",
        "--to",
        "bob@server.test",
        "--helo",
        "client.test",
    )
    td.stop()
    greeting = grab(r"^<-  (220 .*?)\r?$", out, "greeting")
    pcap = app.work / "cap.pcap"
    require(pcap, "smtp.response.code == 220")
    require(pcap, 'smtp.req.command == "MAIL"')
    return "swaks -> aiosmtpd (Sink handler), one message", conns(
        pcap, "smtp", {"greeting": greeting}
    )


def sc_ftp(app: App):
    c, sv = app.direct()
    d = www(app)
    app.server(
        sv,
        PY,
        "-m",
        "pyftpdlib",
        "-i",
        S4,
        "-p",
        "21",
        "-d",
        str(d),
        port=21,
        show=f"python3 -m pyftpdlib -i {S4} -p 21 -d www (pyftpdlib 2.2.0 from PyPI)",
    )
    td = app.capture(sv, "s0", "tcp port 21")
    out = app.client(c, "curl", "-sS", "-v", "--fail", "-o", "/dev/null", f"ftp://{S4}/hello.txt")
    td.stop()
    greeting = grab(r"^< (220 .*?)\r?$", out, "greeting")
    pcap = app.work / "cap.pcap"
    require(pcap, "ftp.response.code == 220")
    require(pcap, 'ftp.request.command == "RETR"')
    return (
        "curl ftp:// (anonymous, passive RETR) -> pyftpdlib; capture filtered to the "
        "control connection (port 21)"
    ), conns(pcap, "ftp", {"greeting": greeting})


def dovecot_up(app: App, sv: str, proto: str, port: int):
    for d in ("run", "mail", "home"):
        (app.work / d).mkdir(exist_ok=True)
        if d != "run":
            shutil.chown(app.work / d, "nobody", "nogroup")
    os.chmod(app.work, 0o755)
    cfg = app.file(
        "dovecot.conf",
        f"""
        protocols = {proto}
        listen = {S4}
        base_dir = {app.work}/run
        log_path = {app.work}/dovecot.log
        ssl = no
        disable_plaintext_auth = no
        auth_mechanisms = plain login
        mail_location = maildir:{app.work}/mail/%u
        default_internal_user = dovecot
        default_login_user = dovenull
        passdb {{
          driver = static
          args = password=secret
        }}
        userdb {{
          driver = static
          args = uid=nobody gid=nogroup home={app.work}/home/%u
        }}
        """,
    )
    app.server(
        sv,
        "dovecot",
        "-F",
        "-c",
        str(cfg),
        port=port,
        show=f"dovecot -F -c dovecot.conf (protocols = {proto}, listen = {S4}, "
        f"ssl = no, static passdb password=secret)",
    )


def sc_imap(app: App):
    c, sv = app.direct()
    dovecot_up(app, sv, "imap", 143)
    td = app.capture(sv, "s0", "tcp port 143")
    out = app.client(c, "curl", "-sS", "-v", "--fail", "-u", "alice:secret", f"imap://{S4}/")
    td.stop()
    greeting = grab(r"^< (\* OK .*?)\r?$", out, "greeting")
    pcap = app.work / "cap.pcap"
    require(pcap, "imap.isrequest == 0", decode_as=[])
    return "curl imap:// -u alice:secret (LIST) -> dovecot-imapd 2.3.19", conns(
        pcap, "imap", {"greeting": greeting}
    )


def sc_pop3(app: App):
    c, sv = app.direct()
    dovecot_up(app, sv, "pop3", 110)
    td = app.capture(sv, "s0", "tcp port 110")
    out = app.client(c, "curl", "-sS", "-v", "--fail", "-u", "alice:secret", f"pop3://{S4}/")
    td.stop()
    greeting = grab(r"^< (\+OK .*?)\r?$", out, "greeting")
    pcap = app.work / "cap.pcap"
    require(pcap, 'pop.response.indicator == "+OK"')
    return "curl pop3:// -u alice:secret (LIST) -> dovecot-pop3d 2.3.19", conns(
        pcap, "pop3", {"greeting": greeting}
    )


def sc_socks(app: App, version: int, hostname: bool = False):
    c, sv = app.direct()
    d = www(app)
    bind = "0.0.0.0" if hostname else S4
    app.server(
        sv,
        PY,
        "-m",
        "http.server",
        "8000",
        "--bind",
        bind,
        "-d",
        str(d),
        port=8000,
        show=f"python3 -m http.server 8000 --bind {bind} -d www (the target)",
    )
    cfg = app.file(
        "danted.conf",
        f"""
        logoutput: stderr
        internal: {S4} port = 1080
        external: {S4}
        clientmethod: none
        socksmethod: none
        user.privileged: root
        user.unprivileged: nobody
        client pass {{
          from: 0.0.0.0/0 to: 0.0.0.0/0
        }}
        socks pass {{
          from: 0.0.0.0/0 to: 0.0.0.0/0
          protocol: tcp
        }}
        """,
    )
    app.server(
        sv,
        "danted",
        "-f",
        str(cfg),
        "-p",
        str(app.work / "danted.pid"),
        port=1080,
        show=f"danted -f danted.conf (Dante 1.4.2; internal {S4} port 1080, socksmethod none)",
    )
    td = app.capture(sv, "s0", "tcp port 1080")
    opt = {
        (5, False): "--socks5",
        (4, False): "--socks4",
        (5, True): "--socks5-hostname",
        (4, True): "--socks4a",
    }[version, hostname]
    target = "localhost" if hostname else S4  # with *-hostname danted resolves it
    out = app.client(
        c,
        "curl",
        "-sS",
        "-v",
        "--fail",
        "-o",
        "/dev/null",
        opt,
        f"{S4}:1080",
        f"http://{target}:8000/hello.txt",
    )
    td.stop()
    if "200" not in grab(r"^< (HTTP/\S+ \d+)", out, "status"):
        raise ScenarioError(out)
    pcap = app.work / "cap.pcap"
    require(pcap, "socks", decode_as=["tcp.port==1080,socks"])
    require(pcap, "socks", "8000", "socks.dstport", decode_as=["tcp.port==1080,socks"])
    if hostname:
        require(pcap, "socks", target, "socks.remote_name", decode_as=["tcp.port==1080,socks"])
    return (
        f"curl {opt} {S4}:1080 http://{target}:8000/hello.txt -> danted -> python3 "
        f"http.server; capture on the client-facing veth, port 1080 only"
    ), conns(pcap, f"socks{version}", {"target": f"{target}:8000"})


def sc_socks5(app: App):
    return sc_socks(app, 5)


def sc_socks4(app: App):
    return sc_socks(app, 4)


def sc_socks5_hostname(app: App):
    return sc_socks(app, 5, True)


def sc_rdp(app: App):
    c, sv = app.direct()
    w = app.work
    key, crt = w / "rdp.key", w / "rdp.crt"
    app.run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-days",
        "2",
        "-subj",
        "/CN=rdp.test",
    )
    app.cmds.append("cert: openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rdp.test")
    cfg = app.file(
        "xrdp.ini",
        f"""
        [Globals]
        ini_version=1
        fork=true
        port=tcp://{S4}:3389
        security_layer=negotiate
        crypt_level=high
        certificate={crt}
        key_file={key}
        ssl_protocols=TLSv1.2, TLSv1.3
        [Logging]
        LogFile={w}/xrdp.log
        LogLevel=INFO
        EnableSyslog=false
        [Channels]
        [Xorg]
        name=Xorg
        lib=libxup.so
        username=ask
        password=ask
        ip=127.0.0.1
        port=-1
        code=20
        """,
    )
    app.server(
        sv,
        "xrdp",
        "--nodaemon",
        "--config",
        str(cfg),
        port=3389,
        timeout=20,
        show=f"xrdp --nodaemon --config xrdp.ini (xrdp 0.9.21; port=tcp://{S4}:3389, "
        f"security_layer=negotiate, RSA cert made on the fly)",
    )
    td = app.capture(sv, "s0", "tcp port 3389")
    app.client(
        c,
        "xvfb-run",
        "-a",
        "xfreerdp",
        f"/v:{S4}:3389",
        "/u:alice",
        "/p:secret",
        "/cert:ignore",
        "/auth-only",
        ok_rc=None,
        timeout=60,
    )
    td.stop()
    pcap = app.work / "cap.pcap"
    require(pcap, 'tcp.payload contains "Cookie: mstshash=alice"')
    require(pcap, "tpkt && tcp.srcport == 3389")
    return (
        "xfreerdp 2.x (under xvfb-run) /auth-only -> xrdp 0.9.21: X.224 connection "
        "request with RDP negotiation, then TLS"
    ), conns(pcap, "rdp", {})


def sc_smb(app: App):
    c, sv = app.direct()
    w = app.work
    for d in ("private", "lock", "state", "cache", "run", "ncalrpc", "share"):
        (w / d).mkdir()
    (w / "share" / "hello.txt").write_text("hello over smb\n")
    os.chmod(w, 0o755)
    os.chmod(w / "share", 0o755)
    cfg = app.file(
        "smb.conf",
        f"""
        [global]
          workgroup = UTTEST
          netbios name = UTSERVER
          server role = standalone server
          interfaces = {S4}/24
          bind interfaces only = yes
          smb ports = 445
          disable netbios = yes
          private dir = {w}/private
          lock directory = {w}/lock
          state directory = {w}/state
          cache directory = {w}/cache
          pid directory = {w}/run
          ncalrpc dir = {w}/ncalrpc
          log file = {w}/smbd.log
          map to guest = bad user
          load printers = no
          printing = bsd
          printcap name = /dev/null
          disable spoolss = yes
        [share]
          path = {w}/share
          guest ok = yes
          read only = yes
        """,
    )
    app.server(
        sv,
        "smbd",
        "-F",
        "--no-process-group",
        f"--configfile={cfg}",
        port=445,
        timeout=30,
        show="smbd -F --no-process-group --configfile=smb.conf (Samba 4.17; "
        f"standalone, interfaces {S4}, smb ports 445, guest share)",
    )
    td = app.capture(sv, "s0", "tcp port 445")
    out = app.client(
        c,
        "smbclient",
        "--configfile=/dev/null",
        f"//{S4}/share",
        "-N",
        "-p",
        "445",
        "-c",
        "get hello.txt /dev/null; ls",
    )
    td.stop()
    if "hello.txt" not in out:
        raise ScenarioError(f"smbclient: {out}")
    pcap = app.work / "cap.pcap"
    require(pcap, "smb2.cmd == 0")  # NEGOTIATE
    require(pcap, "smb2.cmd == 8")  # READ
    return "smbclient (Samba 4.17) //server/share -N -c 'get hello.txt; ls' -> smbd", conns(
        pcap, "smb", {}
    )


def sc_proxy_protocol(app: App, v2: bool):
    c, sv, b = app.direct(backend=True)
    back = app.file(
        "backend.cfg",
        f"""
        defaults
          timeout connect 5s
          timeout client 10s
          timeout server 10s
        frontend web
          mode http
          bind {B4}:8081 accept-proxy
          http-request return status 200 content-type text/plain string "ok"
        """,
    )
    send = "send-proxy-v2" if v2 else "send-proxy"
    front = app.file(
        "front.cfg",
        f"""
        defaults
          mode tcp
          timeout connect 5s
          timeout client 10s
          timeout server 10s
        frontend fe
          bind {S4}:8080
          default_backend be
        backend be
          server b1 {B4}:8081 {send}
        """,
    )
    app.server(
        b,
        "haproxy",
        "-db",
        "-f",
        str(back),
        port=8081,
        show=f"haproxy -db -f backend.cfg (bind {B4}:8081 accept-proxy, http-request "
        f"return status 200)",
    )
    app.server(
        sv,
        "haproxy",
        "-db",
        "-f",
        str(front),
        port=8080,
        show=f"haproxy -db -f front.cfg (mode tcp, bind {S4}:8080, server {B4}:8081 {send})",
    )
    td = app.capture(sv, "s1", "tcp port 8081")
    out = app.client(
        c, "curl", "-sS", "-v", "--fail", "--local-port", "41600", f"http://{S4}:8080/"
    )
    td.stop()
    if "ok" not in out:
        raise ScenarioError(out)
    pcap = app.work / "cap.pcap"
    if v2:
        require(pcap, "tcp.payload contains 0d:0a:0d:0a:00:0d:0a:51:55:49:54:0a:21")
    else:
        require(pcap, f'tcp.payload contains "PROXY TCP4 {C4} {S4} 41600 8080"')
    return (
        f"curl --local-port 41600 http://{S4}:8080/ -> haproxy 2.6 (tcp mode, {send}) -> "
        f"haproxy 2.6 (accept-proxy, returns 200) in a third netns; capture on the "
        f"haproxy->backend veth"
    ), conns(pcap, "proxy-protocol", {"src": f"{C4}:41600", "dst": f"{S4}:8080"})


def sc_proxy_v1(app: App):
    return sc_proxy_protocol(app, False)


def sc_proxy_v2(app: App):
    return sc_proxy_protocol(app, True)


# name -> (function, programs it needs)
SCENARIOS = {
    "http": (sc_http, ["curl"]),
    "http-ipv6": (sc_http_ipv6, ["curl"]),
    "http2": (sc_http2, ["curl", "nghttpd"]),
    "tls13": (sc_tls13, ["openssl"]),
    "tls12": (sc_tls12, ["openssl"]),
    "ssh": (sc_ssh, ["ssh", "ssh-keygen", "/usr/sbin/sshd"]),
    "ssh-on-443": (sc_ssh_on_443, ["ssh", "ssh-keygen", "/usr/sbin/sshd"]),
    "redis": (sc_redis, ["redis-server", "redis-cli"]),
    "redis-on-8080": (sc_redis_on_8080, ["redis-server", "redis-cli"]),
    "postgresql-sslprefer": (sc_postgresql_sslprefer, ["psql", "pg_config", "runuser"]),
    "postgresql-nossl": (sc_postgresql_nossl, ["psql", "pg_config", "runuser"]),
    "mysql": (sc_mysql, ["mariadb", "mariadbd", "mariadb-install-db"]),
    "mqtt": (sc_mqtt, ["mosquitto", "mosquitto_pub"]),
    "mqtt5": (sc_mqtt5, ["mosquitto", "mosquitto_pub"]),
    "dns": (sc_dns, ["dig", "dnsmasq"]),
    "smtp": (sc_smtp, ["swaks", "py:aiosmtpd"]),
    "ftp": (sc_ftp, ["curl", "py:pyftpdlib"]),
    "imap": (sc_imap, ["curl", "dovecot"]),
    "pop3": (sc_pop3, ["curl", "dovecot"]),
    "socks5": (sc_socks5, ["curl", "danted"]),
    "socks4": (sc_socks4, ["curl", "danted"]),
    "socks5-hostname": (sc_socks5_hostname, ["curl", "danted"]),
    "smb": (sc_smb, ["smbd", "smbclient"]),
    "rdp": (sc_rdp, ["xrdp", "xfreerdp", "xvfb-run"]),
    "proxy-v1": (sc_proxy_v1, ["curl", "haproxy"]),
    "proxy-v2": (sc_proxy_v2, ["curl", "haproxy"]),
}
COMMON_TOOLS = ["ip", "ethtool", "tcpdump", "tshark"]


def missing_tools(name: str) -> list[str]:
    import importlib.util

    miss = []
    for t in COMMON_TOOLS + SCENARIOS[name][1]:
        if t.startswith("py:"):
            if importlib.util.find_spec(t[3:]) is None:
                miss.append(t)
        elif shutil.which(t) is None and not (t.startswith("/") and os.path.exists(t)):
            miss.append(t)
    try:
        import dpkt  # noqa: F401
    except ImportError:
        miss.append("py:dpkt")
    return miss


def make(name: str, out: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix=f"ut-app-{name}-"))
    try:
        with NetnsSession("app") as session:
            app = App(session, work)
            intro, connections = SCENARIOS[name][0](app)
        pcap = work / "cap.pcap"
        out.mkdir(parents=True, exist_ok=True)
        dst = out / f"{name}.pcap"
        shutil.copyfile(pcap, dst)
        fs = first_speakers(pcap)
        spoke = "; ".join(
            f"{c['client']}->{c['server']}: {fs.get((c['client'], c['server']), 'nobody')}"
            for c in connections
        )
        exp = {
            "capture": dst.name,
            "how": app.how(intro) + f" | first payload from: {spoke}",
            "connections": sorted(connections, key=lambda c: (c["client"], c["server"])),
        }
        (out / f"{name}.expected.json").write_text(json.dumps(exp, indent=1) + "\n")
        return dst
    except Exception:
        if (work / "cap.pcap").exists() and os.environ.get("UT_APP_KEEP_FAILED"):
            shutil.copyfile(work / "cap.pcap", f"/tmp/failed-{name}.pcap")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to generate (repeatable; default all)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "app")
    ap.add_argument("--list", action="store_true", help="list scenarios and their programs")
    ap.add_argument(
        "--keep-going",
        action="store_true",
        help="continue after a failed scenario (exit 1 at the end)",
    )
    a = ap.parse_args()
    if a.list:
        for n, (_f, tools) in SCENARIOS.items():
            print(f"{n}: {' '.join(tools)}")
        return 0
    ok, why = netns_available()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 2
    failed = []
    t_all = time.monotonic()
    for name in a.only or list(SCENARIOS):
        miss = missing_tools(name)
        if miss:
            print(f"error: {name} needs {', '.join(miss)}", file=sys.stderr)
            failed.append(name)
            if not a.keep_going:
                return 1
            continue
        t0 = time.monotonic()
        try:
            dst = make(name, a.out)
        except Exception as e:  # noqa: BLE001
            print(f"error: {name}: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
            if not a.keep_going:
                return 1
            continue
        print(f"{name}: {dst} ({dst.stat().st_size} B, {time.monotonic() - t0:.1f}s)")
    print(f"total {time.monotonic() - t_all:.1f}s" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
