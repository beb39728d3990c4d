"""Hostile plugins: files written here, run through the command line on shipped captures.

A plugin that fails at run time (raises anything, returns the wrong thing, gives findings that
are not JSON or too large, runs past its time limit, changes the view) loses its say on the
flow and nothing else: exit 0, one warning line naming it, every connection's record written
and valid JSON, the streams as without it. A plugin that cannot be loaded is one error line
naming it and exit 2, for every command. Inline intercept handlers are held to the same."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from uinet_tap.plugins import Plugin, Verdict, registry
from uinet_tap.plugins.registry import Loaded, PluginError, builtin_detectors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frames import Conversation, ethernet, opt_timestamps  # noqa: E402

from uinet_tap.engine import Options  # noqa: E402
from uinet_tap.inline import Inline  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
KEEPALIVE = CAPTURES / "http-keepalive.pcap"  # one HTTP connection to :8080
MANY = CAPTURES / "many-short.pcap"  # 40 connections to :7000, no known protocol
UINET_TAP = str(Path(sys.executable).parent / "uinet-tap")

HEAD = "from uinet_tap.plugins import NEED_MORE, NO_MATCH, Match, Plugin, Verdict\n"


def plugin_file(tmp_path: Path, body: str, name: str = "hostile.py") -> Path:
    f = tmp_path / name
    f.write_text(HEAD + textwrap.dedent(body))
    return f


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([UINET_TAP, *args], capture_output=True, text=True, timeout=timeout)


def replay(capture: Path, tmp_path: Path, *extra: str) -> tuple[list[dict], dict, Any]:
    flows, stats = tmp_path / "flows.jsonl", tmp_path / "stats.json"
    r = run("replay", str(capture), "--flows", str(flows), "--stats", str(stats), "-q", *extra)
    lines = flows.read_text().splitlines() if flows.exists() else []
    records = [json.loads(line) for line in lines]  # every line is JSON, or this raises
    return records, json.loads(stats.read_text()) if stats.exists() else {}, r


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, list[dict]]:
    """Each capture's records without any plugin of ours."""
    out = {}
    for capture in (KEEPALIVE, MANY):
        records, _, r = replay(capture, tmp_path_factory.mktemp("base"))
        assert r.returncode == 0 and r.stderr == "", r.stderr
        out[capture] = sorted(records, key=lambda rec: rec["id"])
    assert len(out[KEEPALIVE]) == 1 and len(out[MANY]) == 40
    return out


# -- failures at run time: (capture, the plugin's class body, words of the warning) -----------

CLASS = "class Hostile(Plugin):\n    name = 'hostile'\n    ports = {7000}\n\n"

RUNTIME = {
    "detect raises SystemExit": (
        MANY,
        """\
        def detect(self, flow):
            raise SystemExit(3)
    """,
        "SystemExit: 3",
    ),
    "detect raises GeneratorExit": (
        MANY,
        """\
        def detect(self, flow):
            raise GeneratorExit("gone")
    """,
        "GeneratorExit: gone",
    ),
    "detect raises a custom BaseException": (
        MANY,
        """\
        def detect(self, flow):
            class Doom(BaseException):
                pass
            raise Doom("the end")
    """,
        "Doom: the end",
    ),
    "detect returns a bool": (
        MANY,
        """\
        def detect(self, flow):
            return True
    """,
        "detect() returned True, not a Match",
    ),
    "decide returns a str": (
        MANY,
        """\
        def decide(self, flow):
            return "pass"
    """,
        "decide() returned 'pass', not a Verdict",
    ),
    "findings with bytes": (
        MANY,
        """\
        def detect(self, flow):
            return self.match("evil", raw=b"\\xff\\x00")
    """,
        "findings['raw'] is of type bytes",
    ),
    "findings with a non-str key": (
        MANY,
        """\
        def detect(self, flow):
            return Match("evil", {1: "one"})
    """,
        "key of type int",
    ),
    "findings with a set": (
        MANY,
        """\
        def detect(self, flow):
            return self.match("evil", ports={1, 2})
    """,
        "findings['ports'] is of type set",
    ),
    "findings with NaN": (
        MANY,
        """\
        def detect(self, flow):
            return self.match("evil", score=float("nan"))
    """,
        "findings['score'] is nan",
    ),
    "findings nested deep": (
        MANY,
        """\
        def detect(self, flow):
            deep = []
            for _ in range(50):
                deep = [deep]
            return self.match("evil", deep=deep)
    """,
        "nested too deep",
    ),
    "50 MB of findings": (
        MANY,
        """\
        def detect(self, flow):
            return self.match("evil", blob="x" * 50_000_000)
    """,
        "over 1,024 characters",
    ),
    "decide changes flow.findings to non-JSON": (
        KEEPALIVE,
        """\
        def decide(self, flow):
            if flow.protocol is None:
                return Verdict.NEED_MORE  # after detection: the view holds HTTP findings
            flow.findings["raw"] = b"\\x00"
            flow.findings["method"] = object()
            return None
    """,
        "changed flow.findings",
    ),
    "decide changes flow.protocol": (
        KEEPALIVE,
        """\
        def decide(self, flow):
            if flow.protocol is None:
                return Verdict.NEED_MORE
            flow.protocol = "evil"
            return Verdict.BLOCK
    """,
        "changed flow.protocol",
    ),
    "decide loops catching Exception": (
        KEEPALIVE,
        """\
        def decide(self, flow):
            while True:
                try:
                    sum(range(100))
                except Exception:
                    pass
    """,
        "ran longer than 1 s",
    ),
    "decide loops with a bare except": (
        KEEPALIVE,
        """\
        def decide(self, flow):
            while True:
                try:
                    sum(range(100))
                except:  # noqa: E722
                    pass
    """,
        "ran longer than 1 s",
    ),
}


@pytest.mark.parametrize("case", list(RUNTIME))
def test_a_failing_plugin_loses_its_say_and_nothing_else(case, tmp_path, baseline):
    capture, body, words = RUNTIME[case]
    f = plugin_file(tmp_path, CLASS + textwrap.indent(textwrap.dedent(body), "    "))
    records, stats, r = replay(capture, tmp_path, "--plugin-file", str(f))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    # Where: the line that raised; for a wrong answer (nothing raised) the hook's def; for
    # a timeout, a line of the hook where it was stopped. Read off the file written here.
    source = f.read_text().splitlines()
    hook = "detect" if "def detect" in body else "decide"
    first = next(i for i, line in enumerate(source, 1) if f"def {hook}(" in line)
    raising = [i for i, line in enumerate(source, 1) if line.strip().startswith("raise ")]
    m = re.fullmatch(rf"warning: plugin 'hostile' failed in {hook} \((.+):(\d+)\): (.+) "
                     r"\(its flows get the default verdict; later errors are counted in the "
                     r"summary\)", lines[0])  # fmt: skip
    assert m is not None and words in m[3], lines[0]
    assert m[1] == str(f), lines[0]
    at = int(m[2])
    if raising:
        assert at == raising[0], (lines[0], source)
    elif "ran longer" in words:
        assert first < at <= len(source), (lines[0], source)
    else:
        assert at == first, (lines[0], source)
    failure = {"plugin": "hostile", "hook": hook, "at": f"{f}:{at}", "error": m[3]}
    ref = baseline[capture]
    assert len(records) == len(ref)
    for rec, want in zip(sorted(records, key=lambda x: x["id"]), ref, strict=True):
        assert rec["plugin_errors"] == ["hostile"], rec
        (got,) = rec["plugin_failures"]
        assert got["plugin"] == "hostile" and got["hook"] == hook and words in got["error"]
        if "ran longer" not in words:  # a timeout stops each flow's call at its own line
            assert got == failure, (got, failure)
        assert rec["decided_by"] == "default" and rec["verdict"] == "pass", rec
        for d in ("c2s", "s2c"):
            assert rec[d] == want[d]  # the streams as without the plugin
        if "changes" in case:  # the view was put back: the record says what was detected
            assert rec["protocol"] == want["protocol"] == "http"
            # as far as it went: decided before the response, so no status yet
            assert rec["findings"]["method"] == "GET"
            assert rec["findings"].items() <= want["findings"].items()
    assert stats["plugin_errors"] == {"hostile": len(ref)}
    assert stats["plugin_failures"] == {"hostile": {k: failure[k] for k in ("hook", "at", "error")}}


def test_verbose_adds_the_failures_traceback_and_says_file_and_line(tmp_path):
    """A plugin whose helper raises: the warning names the helper's line (the last frame in
    the plugin's code), and with -v its traceback follows on stderr, both frames in it."""
    f = plugin_file(tmp_path, CLASS + textwrap.indent(textwrap.dedent("""\
        def detect(self, flow):
            return self.lookup({})

        def lookup(self, table):
            return table["nope"]
    """), "    "))  # fmt: skip
    source = f.read_text().splitlines()
    call = next(i for i, x in enumerate(source, 1) if "self.lookup({})" in x)
    raised = next(i for i, x in enumerate(source, 1) if 'table["nope"]' in x)
    want = f"warning: plugin 'hostile' failed in detect ({f}:{raised}): KeyError: 'nope'"
    _, stats, plain = replay(MANY, tmp_path, "--plugin-file", str(f))
    (line,) = plain.stderr.splitlines()
    assert line.startswith(want + " ("), line
    assert stats["plugin_failures"]["hostile"]["at"] == f"{f}:{raised}"
    _, _, verbose = replay(MANY, tmp_path, "--plugin-file", str(f), "-v")
    err = verbose.stderr
    assert verbose.returncode == 0 and want in err, err
    trace = err[err.index("debug: plugin 'hostile' failed in detect:\nTraceback") :]
    assert f'File "{f}", line {call}, in detect' in trace, trace
    assert f'File "{f}", line {raised}, in lookup' in trace, trace
    assert "guard.py" not in trace  # the guard's own frames are left out
    assert err.count("Traceback") == 1  # the first failure's; the other 39 are counted


def test_ctrl_c_during_a_plugin_that_swallows_everything_still_ends_the_run(tmp_path):
    """SIGTERM (as Ctrl-C) while a plugin sits in a bare ``except:`` loop: held back until
    the plugin call ends (its time limit), then the run ends as interrupted, every record
    written."""
    marker = tmp_path / "inside"
    f = plugin_file(
        tmp_path,
        f"""\
        import time
        from pathlib import Path

        class Stubborn(Plugin):
            name = "stubborn"

            def decide(self, flow):
                if flow.id < 20:
                    return None
                Path({str(marker)!r}).touch()
                while True:
                    try:
                        time.sleep(0.01)
                    except:  # noqa: E722
                        pass
    """,
    )
    flows = tmp_path / "flows.jsonl"
    argv = [UINET_TAP, "replay", str(MANY), "--plugin-file", str(f), "--flows", str(flows), "-q"]
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert p.poll() is None and time.monotonic() < deadline, "the plugin never ran"
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err, err
    records = [json.loads(line) for line in flows.read_text().splitlines()]
    ids = sorted(r["id"] for r in records)
    assert ids == list(range(len(ids))) and len(ids) > 20  # every connection seen so far


# -- failures at load: one error line naming the plugin, exit 2, for every command -------------

LOAD = {
    "ports = None": ("class P(Plugin):\n    name = 'p'\n    ports = None\n", "ports"),
    "ports a str": ("class P(Plugin):\n    name = 'p'\n    ports = '80'\n", "ports"),
    "ports of floats": ("class P(Plugin):\n    name = 'p'\n    ports = {80.0}\n", "80.0"),
    "a port past 65535": ("class P(Plugin):\n    name = 'p'\n    ports = {70000}\n", "70000"),
    "name not a str": ("class P(Plugin):\n    name = 5\n", "name must be a string"),
    "a reserved name": ("class P(Plugin):\n    name = 'default'\n", "reserved"),
    "protocol not a str": ("class P(Plugin):\n    protocol = 7\n", "protocol"),
    "detect not a method": ("class P(Plugin):\n    detect = None\n", "detect must be a method"),
    "sys.exit(0) at import": ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
    "an import that raises": ("raise RuntimeError('no config')\n", "RuntimeError: no config"),
    "a BaseException at import": (
        "class Doom(BaseException):\n    pass\nraise Doom('x')\n", "Doom: x"),
    "a constructor that raises": (
        "class P(Plugin):\n    def __init__(self):\n        raise ValueError('bad')\n",
        "P() failed"),
    "a constructor that exits": (
        "class P(Plugin):\n    def __init__(self):\n        raise SystemExit(4)\n",
        "P() failed"),
    "no plugin class": ("X = 1\n", "defines no Plugin subclass"),
}  # fmt: skip

COMMANDS = {
    "replay": ["replay", str(KEEPALIVE), "-q"],
    "watch": ["watch", "lo", "--no-tui", "--duration", "1", "-q"],
    "inline": ["inline", "no-such-if-a", "no-such-if-b", "--no-tui", "--duration", "1", "-q"],
    "plugins": ["plugins"],
}


def one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def inline_ports():
    """Two real interfaces for `inline` (it opens them, as root, before it loads plugins):
    the ends of a veth pair in a namespace of its own."""
    from netnslib import NetnsSession, netns_available

    ok, why = netns_available()
    if not ok:
        pytest.skip(f"inline needs two interfaces: {why}")
    with NetnsSession("plg") as session:
        ns = session.ns("bump", ipv6=False)
        session.veth(ns, "pa", ns, "pb")
        yield session.cmd(ns)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(LOAD))
def test_a_plugin_that_cannot_load_is_one_error_line(case, command, tmp_path, request):
    source, words = LOAD[case]
    f = tmp_path / "bad.py"
    f.write_text(HEAD + source)
    argv = [*COMMANDS[command], "--plugin-file", str(f)]
    if command == "inline":
        # Plugins load after the ports are open (README "Privileges"): real ones are needed
        # for the plugin's error to be the one reported.
        prefix = request.getfixturevalue("inline_ports")
        argv = ["inline", "pa", "pb", *argv[3:]]
        r = subprocess.run([*prefix, UINET_TAP, *argv], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        # its notes on the offloads it turned off come first
        r.stderr = "".join(x for x in r.stderr.splitlines(keepends=True)
                           if not x.startswith("uinet-tap: GRO and LRO off on "))  # fmt: skip
    else:
        r = run(*argv, timeout=60)
    line = one_error(r)
    assert f"--plugin-file {f}" in line and words in line, line
    # Code that raised (at import, in the constructor) is named by its file and line.
    lines = (HEAD + source).splitlines()
    raising = [i for i, x in enumerate(lines, 1) if x.strip().startswith(("raise ", "sys.exit"))]
    if raising:
        assert f"failed ({f}:{raising[0]}): " in line, line
        if "constructor" in case:
            assert line.endswith(("ValueError: bad", "SystemExit: 4")), line


def test_a_module_plugin_that_cannot_load_names_module_and_class(tmp_path):
    (tmp_path / "badmod.py").write_text(HEAD + "class P(Plugin):\n    ports = [1, None]\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([UINET_TAP, "replay", str(KEEPALIVE), "--plugin", "badmod:P", "-q"],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    line = one_error(r)
    assert "--plugin badmod:P" in line and "None" in line, line


def test_a_class_made_with_type_loads_in_definition_order(tmp_path):
    f = plugin_file(
        tmp_path,
        """\
        class First(Plugin):
            name = "first"

        def _decide(self, flow):
            return Verdict.BLOCK

        Made = type("Made", (Plugin,), {"name": "made", "decide": _decide, "ports": {8080}})

        class Last(Plugin):
            name = "last"
    """,
    )
    r = run("plugins", "--plugin-file", str(f))
    assert r.returncode == 0, r.stderr
    names = [line.split()[1] for line in r.stdout.splitlines()[:3]]
    assert names == ["first", "made", "last"]
    records, _, r = replay(KEEPALIVE, tmp_path, "--plugin-file", str(f))
    assert r.returncode == 0 and [rec["decided_by"] for rec in records] == ["made"], r.stderr


class _EntryPoint:
    def __init__(self, load: Any) -> None:
        self.name, self.value, self.load = "hostile", "hostile_pkg:Hostile", load
        self.dist = type("Dist", (), {"name": "hostile-pkg"})()


@pytest.mark.parametrize(
    ("load", "words"),
    [
        (lambda: sys.exit(0), "SystemExit: 0"),
        (lambda: type("Bad", (Plugin,), {"ports": None}), "ports"),
        (lambda: type("Bad", (Plugin,), {"name": b"x"}), "name must be a string"),
    ],
)
def test_an_entry_point_plugin_that_cannot_load(monkeypatch, load, words):
    monkeypatch.setattr(registry, "entry_points", lambda group: [_EntryPoint(load)])
    with pytest.raises(PluginError) as e:
        registry.load_all([], [])
    msg = str(e.value)
    assert msg.startswith("entry point hostile (hostile-pkg): ") and words in msg, msg
    assert "\n" not in msg


# -- inline: the intercept handler of a plugin ---------------------------------------------


class FakePort:
    def __init__(self, name: str) -> None:
        self.name, self.mtu, self.received = name, 1500, 0
        self.sent: list[bytes] = []
        self.send_errors: dict[str, int] = {}
        self.in_ring, self.ring_cut = False, 0

    def use_ring(self) -> bool:
        return False  # frames are handed to Inline.frame() directly

    def send(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return True

    def send_frames(self, frames: list[bytes]) -> int:
        self.sent += frames
        return len(frames)

    def drops(self) -> int:
        return 0


class Cuts(Plugin):
    """Intercepts every flow at its first data; the handler is the case's."""

    name = "cuts"

    def decide(self, flow):  # type: ignore[no-untyped-def]
        return Verdict.INTERCEPT if flow.c2s else Verdict.NEED_MORE


async def _handler_raises(self, conn):  # type: ignore[no-untyped-def]
    raise SystemExit(5)


async def _handler_blocks(self, conn):  # type: ignore[no-untyped-def]
    conn.flow.findings["mine"] = b"handlers get their own copy of the view"
    while True:
        try:  # noqa: SIM105 (the hostile shape itself)
            time.sleep(0.01)  # holds the event loop: the bridge would stop
        except:  # noqa: E722
            pass


async def _handler_will_not_stop(self, conn):  # type: ignore[no-untyped-def]
    while True:
        try:  # noqa: SIM105 (the hostile shape itself)
            await asyncio.sleep(0.01)
        except BaseException:  # swallows the cancellation at exit too
            pass


def _handler_not_async(self, conn):  # type: ignore[no-untyped-def]
    return 42


HANDLERS = {
    "raises SystemExit": (_handler_raises, "SystemExit: 5"),
    "blocks the event loop": (_handler_blocks, "ran longer than 1 s"),
    "returns no coroutine": (_handler_not_async, "not a coroutine"),
    "swallows cancellation": (_handler_will_not_stop, None),
}


@pytest.mark.parametrize("case", list(HANDLERS))
def test_a_failing_intercept_handler_is_contained(case):
    handler, words = HANDLERS[case]
    plugin = type("Case", (Cuts,), {"intercept": handler})()
    errors: list[tuple[str, str]] = []
    records: list[dict] = []

    async def session() -> None:
        a, b = FakePort("a"), FakePort("b")
        inline = Inline((a, b), [Loaded(plugin, "test"), *builtin_detectors()], None,  # type: ignore[arg-type]
                        Options(), records.append, lambda n, m: errors.append((n, m)))  # fmt: skip
        conv = Conversation()
        mac_c, mac_s = bytes.fromhex("02aa00000001"), bytes.fromhex("02bb00000002")

        def feed(seg: Any, from_client: bool) -> None:
            src, dst = (mac_c, mac_s) if from_client else (mac_s, mac_c)
            inline.frame(0 if from_client else 1, ethernet(seg.l3(), src_mac=src, dst_mac=dst),
                         False)  # fmt: skip

        feed(conv.handshake(wscale=7, ts=(1000, 0))[0], True)
        feed(conv.synack(wscale=7, ts=(9000, 1000)), False)
        feed(conv.ack("c", options=opt_timestamps(1001, 9000)), True)
        feed(conv.c(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", options=opt_timestamps(1002, 9000)),
             True)  # fmt: skip
        assert inline.sessions, "cut in"
        for _ in range(300):  # until the handler failed (the blocking one takes its limit)
            await asyncio.sleep(0.01)
            if words is None or errors:
                break
        inline.shutdown()
        await asyncio.sleep(0.05)
        stats = inline.finish()
        if words is not None:
            assert stats["plugin_errors"] == {"cuts": 1}

    asyncio.run(session())  # returns: no handler outlives the run
    (rec,) = records
    assert rec["verdict"] == "intercept" and rec["decided_by"] == "cuts"
    assert rec["findings"] == {"method": "GET", "path": "/", "host": "a"}
    if words is None:
        assert errors == [] and rec["intercept"]["result"] == "aborted at exit"
        return
    assert [n for n, _ in errors] == ["cuts"] and words in errors[0][1], errors
    (failure,) = rec["plugin_failures"]
    assert failure["plugin"] == "cuts" and failure["hook"] == "intercept", failure
    assert errors[0][1].startswith("plugin 'cuts' failed in intercept"), errors
    assert errors[0][1].endswith(f": {failure['error']}"), (errors, failure)
    assert rec["intercept"]["result"] == f"handler error: {failure['error']}"
    assert rec["plugin_errors"] == ["cuts"]
    if case == "raises SystemExit":  # the handler's raise, in this file
        line = _handler_raises.__code__.co_firstlineno + 1
        assert failure["at"] == f"{os.path.relpath(__file__)}:{line}", failure


def test_the_record_writer_never_fails_on_a_record(capsys):
    """Findings are made JSON at the record; should anything else in a record not be (a bug),
    the writer still writes it, converted, and says so once."""
    import io

    from uinet_tap.cli import _RecordWriter

    out = io.BytesIO()
    writer = _RecordWriter([out])
    writer({"id": 0, "c2s": {"data": b"\x00\xff"}, "odd": {1: {"x"}}, "nan": float("nan")})
    writer({"id": 1, "odd": object()})
    writer({"id": 2, "fine": [1, "two"]})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"id": 0, "c2s": {"data": "\x00\\xff"}, "odd": {"1": ["x"]}, "nan": "NaN"},
        {"id": 1, "odd": "<object>"},
        {"id": 2, "fine": [1, "two"]},
    ]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: a flow record held a value"), err
