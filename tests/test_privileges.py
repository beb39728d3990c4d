"""Privileges: helper programs by absolute path (uinet_tap/programs.py) and dropping root for
good (uinet_tap/privileges.py). The drop is exercised in child processes, never in the test
process; `watch --user` and `inline --user` on real traffic are in test_watch.py and
test_inline.py; here `watch --tui --user` in a real terminal, and the advice the tool gives
when privileges are missing."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from uinet_tap import programs
from uinet_tap.ports import disable_receive_offloads
from uinet_tap.privileges import PrivilegeError, resolve_identity
from uinet_tap.programs import SYSTEM_DIRS, MissingProgram, system_program

EXE = Path(sys.executable).parent / "uinet-tap"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (drops to nobody)")


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user named nobody here")


# -- helper programs ---------------------------------------------------------------------


def test_a_helper_is_found_in_the_system_directories_whatever_path_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not any(os.access(os.path.join(d, "ethtool"), os.X_OK) for d in SYSTEM_DIRS):
        pytest.skip("ethtool is not installed")
    fake = tmp_path / "ethtool"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    assert shutil.which("ethtool") == str(fake)  # the poisoned PATH would pick the fake
    path = system_program("ethtool")
    assert os.path.dirname(path) in SYSTEM_DIRS and os.path.isabs(path)


def test_a_missing_helper_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "SYSTEM_DIRS", (str(tmp_path),))
    with pytest.raises(MissingProgram) as exc:
        system_program("ethtool")
    assert str(exc.value) == f"ethtool is not installed (looked in {tmp_path})"
    # offloads stay on then, and the run says so (super-frames are cut by the tool anyway)
    assert disable_receive_offloads("ta") == (
        f"could not turn GRO/LRO off on ta: ethtool is not installed (looked in {tmp_path}); "
        "super-frames are resegmented"
    )


# -- who to become -----------------------------------------------------------------------


def test_identity_of_a_user_is_its_ids_and_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = _nobody()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    who = resolve_identity("nobody")
    assert (who.uid, who.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert set(who.groups) == set(os.getgrouplist("nobody", nobody.pw_gid))


@pytest.mark.parametrize(
    "user,group,message",
    [
        ("no-such-user-here", None, "unknown user: no-such-user-here"),
        ("nobody", "no-such-group-here", "unknown group: no-such-group-here"),
        ("root", None, "--user root is root (uid 0): name an unprivileged user"),
        ("nobody", "root", "--user nobody would keep group 0 (root): use another --group"),
    ],
)
def test_identities_that_cannot_be_used(
    monkeypatch: pytest.MonkeyPatch, user: str, group: str | None, message: str
) -> None:
    _nobody()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(PrivilegeError) as exc:
        resolve_identity(user, group)
    assert str(exc.value) == message


def test_user_needs_the_tool_to_start_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError, match=r"needs the tool to start as root \(it runs as uid"):
        resolve_identity("nobody")


def test_group_without_user_is_one_error_line() -> None:
    for command in ("watch", "inline"):
        argv = [str(EXE), command, "no-such-if0", *(["no-such-if1"] if command == "inline"
                                                    else []), "--group", "nogroup"]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and r.stderr == "error: --group needs --user\n", r.stderr


# -- the drop, in a child process ------------------------------------------------------------

# Imports first: after the drop the interpreter's own library may be out of the user's reach.
DROP_THEN_TRY = """
import os, subprocess, sys
from uinet_tap.privileges import drop_privileges, resolve_identity
drop_privileges(resolve_identity("nobody"))
try:
    os.setresuid(0, 0, 0)
    print("setresuid(0) worked")
except PermissionError:
    print("setresuid(0) refused")
print("set-user-ID program runs as uid",
      subprocess.run([sys.argv[1], "-u"], capture_output=True, text=True).stdout.strip())
"""


@needs_root
def test_after_the_drop_root_cannot_come_back_not_even_through_a_set_user_id_program() -> None:
    """A set-user-ID-root copy of `id` (which, run by nobody in the ordinary way, reports
    uid 0) reports nobody's uid after the drop: no-new-privileges holds, and the ids
    cannot be set back to root."""
    nobody = _nobody()
    setpriv, id_prog = shutil.which("setpriv"), shutil.which("id")
    if setpriv is None or id_prog is None:
        pytest.skip("needs setpriv and id")
    with tempfile.TemporaryDirectory(prefix="uinet-tap-suid-") as d:
        os.chmod(d, 0o755)
        suid_id = Path(d) / "id"
        shutil.copy(id_prog, suid_id)
        os.chown(suid_id, 0, 0)
        suid_id.chmod(0o4755)
        plain = subprocess.run(
            [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
             str(suid_id), "-u"], capture_output=True, text=True, cwd="/",
        )  # fmt: skip
        if plain.stdout.strip() != "0":
            pytest.skip(f"set-user-ID programs do not run as root here ({plain.stdout!r})")
        r = subprocess.run(
            [sys.executable, "-c", DROP_THEN_TRY, str(suid_id)],
            capture_output=True, text=True, cwd="/",
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "setresuid(0) refused",
        f"set-user-ID program runs as uid {nobody.pw_uid}",
    ], r.stdout


# -- watch --user with the live view, in a real terminal ------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netnslib import (  # noqa: E402
    NetnsSession,
    Tmux,
    child_pids,
    netns_available,
    process_identity,
    web_pair,
)


def _status(pid: int) -> dict[str, list[str]]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.split()
    return out


FAILS = """\
from uinet_tap.plugins import Plugin


class Fails(Plugin):
    name = "fails"
    ports = {8000}

    def detect(self, flow):
        raise LookupError("held")
"""


@needs_root
def test_watch_with_the_live_view_drops_to_the_user_after_opening_capture_and_outputs(
    tmp_path: Path,
) -> None:
    """`watch --tui --user nobody -v` in tmux on a veth while curl fetches from http.server:
    the --flows, --eve and --stats files live in a directory only root can enter (so they
    were opened before the drop), the process is nobody for good while the view runs (ids,
    no capability, no-new-privileges), the view works, -v says the drop, and what is logged
    while the view holds the terminal (a plugin's failure: its warning and traceback) is
    held and written when it closes."""
    nobody = _nobody()
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"needs network namespaces: {why}")
    for prog in ("tmux", "curl"):
        if shutil.which(prog) is None:
            pytest.skip(f"needs {prog}")
    www = tmp_path / "www"
    www.mkdir()
    (www / "page.html").write_bytes(b"<p>hello</p>\n" * 500)
    out = tmp_path / "root-only"
    out.mkdir(mode=0o700)
    flows, eve, stats = out / "flows.jsonl", out / "eve.json", out / "stats.json"
    pidfile = tmp_path / "pid"
    # loaded after the drop: readable by nobody
    plugin_dir = Path(tempfile.mkdtemp(prefix="uinet-tap-plugin-"))
    plugin_dir.chmod(0o755)
    plugin = plugin_dir / "fails.py"
    plugin.write_text(FAILS)
    plugin.chmod(0o644)
    raised = next(i for i, x in enumerate(FAILS.splitlines(), 1) if "raise " in x)
    with NetnsSession("prv") as s, Tmux("priv") as term:
        web = web_pair(s, "upc0", "ups0", "10.93.0", www)
        # `ip netns exec` execs the tool, so the shell's pid is the tool's
        term.start(f"sh -c 'echo $$ > {pidfile}; exec ip netns exec {web.client_ns} {EXE} watch "
                   f"upc0 --tui --no-bypass --user nobody -v -q --flows {flows} --eve {eve} "
                   f"--stats {stats} --plugin-file {plugin}'")  # fmt: skip
        try:
            # -v's lines before the view name upc0 too; the view's screen replaces them
            term.wait(lambda t: "upc0" in t and "info:" not in t, "the live view",
                      timeout=30, history=100)  # fmt: skip
            pid = int(pidfile.read_text())
            ident = _status(pid)
            uid, gid = str(nobody.pw_uid), str(nobody.pw_gid)
            assert ident["Uid"] == [uid] * 4 and ident["Gid"] == [gid] * 4, ident
            for caps in ("CapPrm", "CapEff", "CapAmb"):
                assert int(ident[caps][0], 16) == 0, (caps, ident)
            assert ident["NoNewPrivs"] == ["1"], ident
            web.fetch("page.html", tmp_path / "got")
            assert (tmp_path / "got").read_bytes() == (www / "page.html").read_bytes()
            # closed: its data, where the plugin failed, came before
            screen = term.wait(lambda t: re.search(r"CLOSED .*10\.93\.0\.2:8000", t),
                               "the flow, closed", timeout=30, history=100)  # fmt: skip
            for logged in ("info:", "debug:", "warning:", "Traceback"):  # held
                assert logged not in screen, screen
            term.keys("q")
            done = term.wait_exit("watch to exit", timeout=30, history=100)
        finally:
            shutil.rmtree(plugin_dir)
    assert "EXITED=0" in done, done
    want = f"warning: plugin 'fails' failed in detect ({plugin}:{raised}): LookupError: held"
    assert want in done, done
    assert "debug: plugin 'fails' failed in detect:" in done and "Traceback" in done, done
    assert f"info: privileges dropped to nobody (uid {uid}, gid {gid}" in done, done
    assert "info: capture on upc0: 1 handle(s)" in done, done
    assert f"info: writing flow records to {flows}" in done, done
    assert done.count("Traceback") == 1 and "error:" not in done, done  # the plugin's only
    records = [json.loads(line) for line in flows.read_text().splitlines()]
    http = [r for r in records if r["server"] == "10.93.0.2:8000"]
    assert len(http) == 1, records
    failure = {"plugin": "fails", "hook": "detect", "at": f"{plugin}:{raised}",
               "error": "LookupError: held"}  # fmt: skip
    assert http[0]["plugin_failures"] == [failure], http
    events = [json.loads(line) for line in eve.read_text().splitlines()]
    assert any(e.get("event_type") == "flow" for e in events), events
    assert json.loads(stats.read_text())["connections"] >= 1


REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
COPY = 'cp "$(readlink -f .venv/bin/python)" .venv/bin/python-caps'


@needs_root
@pytest.mark.parametrize("command", ["watch", "inline"])
def test_missing_privileges_give_the_readmes_advice_never_a_shared_interpreter(
    command: str,
) -> None:
    """Run as nobody with no capability (setpriv), watch and inline on real interfaces of a
    namespace: one error line that advises root with --user or a dedicated copy of the
    interpreter, with the very command the README gives, and names the shared interpreters
    as where the capabilities must not go."""
    nobody = _nobody()
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"needs network namespaces: {why}")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    assert COPY in README.read_text()
    with NetnsSession("pre") as s:
        ns = s.ns("x", ipv6=False)
        s.veth(ns, "pra", ns, "prb")
        ifaces = ["pra", "prb"] if command == "inline" else ["pra"]
        r = subprocess.run(
            s.cmd(ns, setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                  "--clear-groups", "--inh-caps=-all", str(EXE), command, *ifaces,
                  "--no-tui"),
            capture_output=True, text=True, cwd="/", timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    line = lines[0]
    assert "CAP_NET_RAW and CAP_NET_ADMIN" in line and "as root with --user NAME" in line, line
    assert COPY in line and "then setcap on that copy" in line, line
    assert "never to /usr/bin/python3 or what .venv/bin/python links to" in line, line


# -- the README's capability copy, as a user that is not root --------------------------------

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _readme_copy_lines() -> list[str]:
    """The README's sh block that makes the capability copy, one command a line."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "python-caps" in b]
    return [line for line in block.splitlines() if line.strip()]


def _name_taken(name: str) -> bool:
    """A user or a group of that name exists."""
    for lookup in (pwd.getpwnam, grp.getgrnam):
        try:
            lookup(name)
        except KeyError:
            continue
        return True
    return False


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = child_pids(todo.pop())
        out += kids
        todo += kids
    return out


@needs_root
def test_the_readmes_capability_copy_lets_a_plain_user_watch(tmp_path: Path) -> None:
    """The README's commands for a dedicated interpreter copy with CAP_NET_RAW and
    CAP_NET_ADMIN, run as they stand (a throwaway user for uinet-tap, a copy of this checkout
    for /opt/uinet-tap, a veth for eth0): only the copy has the capabilities, the tool runs as
    that user with exactly those two, and it captures curl's download from http.server (the
    record against what curl got)."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"needs network namespaces: {why}")
    for prog in ("useradd", "userdel", "setcap", "getcap", "sudo", "curl"):
        if shutil.which(prog, path=SBIN_PATH) is None:
            pytest.skip(f"needs {prog}" + (" (libcap2-bin)" if "cap" in prog else ""))
    if subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("needs the system's /usr/bin/python3 with venv (python3-venv)")
    lines = _readme_copy_lines()
    assert lines[0].startswith("useradd ") and lines[1] == "cd /opt/uinet-tap", lines
    run_line = lines[-1]
    assert run_line == "sudo -u uinet-tap .venv/bin/python-caps -I -m uinet_tap watch eth0"
    names = (f"ut-caps-{os.getpid()}-{n}" for n in range(100))
    user = next(name for name in names if not _name_taken(name))  # never one we did not make
    # out of pytest's tmp_path, which only root may enter
    base = Path(tempfile.mkdtemp(prefix="uinet-tap-caps-"))
    base.chmod(0o755)
    checkout = base / "uinet-tap"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.so", "__pycache__", "*.egg-info", "build", ".*cache*"))  # fmt: skip

    def ours(line: str) -> str:
        held = line.replace("/opt/uinet-tap", "\0")  # the path is no user name
        return held.replace("uinet-tap", user).replace("\0", str(checkout))

    www = tmp_path / "www"
    www.mkdir()
    body = bytes(range(256)) * 800
    (www / "blob.bin").write_bytes(body)
    out, err = tmp_path / "flows.jsonl", tmp_path / "stderr.txt"
    env = {**os.environ, "PATH": SBIN_PATH}
    try:
        setup = subprocess.run(
            ["sh", "-ec", "\n".join(ours(line) for line in lines[:-1])],
            capture_output=True, text=True, timeout=900, env=env, cwd="/",
        )  # fmt: skip
        assert setup.returncode == 0, setup.stderr[-3000:]
        copy = checkout / ".venv" / "bin" / "python-caps"
        real = (checkout / ".venv" / "bin" / "python").resolve()
        assert real.is_relative_to("/usr"), real  # the system's interpreter, not pyenv's
        # getcap (the README's last set-up line) names the copy alone
        granted = [line for line in setup.stdout.splitlines() if "cap_" in line]
        assert granted == [f"{copy.relative_to(checkout)} cap_net_admin,cap_net_raw=ep"], granted
        assert str(real) not in setup.stdout
        st = copy.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o750, grp.getgrnam(user).gr_gid)
        pw = pwd.getpwnam(user)
        with NetnsSession("cap") as s:
            web = web_pair(s, "ukc0", "uks0", "10.95.0", www)
            watch = ours(run_line).replace(" eth0", " ukc0 --no-tui --no-bypass --flows -")
            p = s.popen(web.client_ns, "sh", "-c", f"exec {watch} >{out} 2>{err}", cwd=checkout,
                        env=env)  # fmt: skip
            deadline = time.monotonic() + 60
            while not (err.exists() and "capturing on ukc0: ready" in err.read_text()):
                assert p.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            (tool,) = [pid for pid in _descendants(p.pid)
                       if Path(f"/proc/{pid}/exe").resolve() == copy]  # fmt: skip
            ident = process_identity(tool)
            assert ident["Uid"] == [str(pw.pw_uid)] * 4, ident
            for caps in ("CapPrm", "CapEff"):  # CAP_NET_ADMIN (12) and CAP_NET_RAW (13) alone
                assert int(ident[caps][0], 16) == (1 << 12) | (1 << 13), (caps, ident)
            got = tmp_path / "got"
            assert web.fetch("blob.bin", got).returncode == 0
            assert got.read_bytes() == body
            time.sleep(0.5)  # the last ACK on the wire
            os.kill(tool, signal.SIGINT)  # the tool alone: sudo would pass on a second one
            assert p.wait(30) == 0, err.read_text()
    finally:
        subprocess.run(["userdel", user], capture_output=True, env=env)
        if subprocess.run(["getent", "group", user], capture_output=True).returncode == 0:
            subprocess.run(["groupdel", user], capture_output=True, env=env)
        shutil.rmtree(base)
    assert "Traceback" not in err.read_text(), err.read_text()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    (rec,) = [r for r in records if r["server"] == "10.95.0.2:8000"]
    assert rec["protocol"] == "http" and rec["findings"]["path"] == "/blob.bin", rec
    assert rec["client"].startswith("10.95.0.1:") and rec["close"] == "fin", rec
    assert rec["s2c"]["payload_bytes"] > len(body)  # headers + body
