"""The plugin framework: policy files, rules, verdicts, budget, containment of plugin errors,
bypass, discovery (entry points, --plugin, --plugin-file) and the test helper."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from uinet_tap.plugins import NEED_MORE, NO_MATCH, Plugin, Verdict
from uinet_tap.plugins.policy import PolicyError, parse_policy

from uinet_tap.testing import run_bytes, run_capture

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
BIN = Path(sys.executable).parent
KEEPALIVE = CAPTURES / "http-keepalive.pcap"  # curl -> http.server :8080, three requests
GET = b"GET /a.bin HTTP/1.1\r\nHost: 10.99.0.2:8080\r\nUser-Agent: curl/7.88.1\r\n\r\n"


def replay(*args: str, check: bool = True) -> tuple[list[dict], subprocess.CompletedProcess]:
    r = subprocess.run(
        [str(BIN / "uinet-tap"), "replay", *args, "--flows", "-", "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check:
        assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()], r


# -- policy files ------------------------------------------------------------------------------


def test_policy_parses_every_documented_key():
    p = parse_policy(
        """
default = "pass"
[budget]
bytes = 4096
packets = 10
seconds = 2.5

[[rule]]
protocol = "http"
host = "*.example.com"
server = "10.0.0.0/8"
client = ["192.168.0.0/16", "fd00::/8"]
port = [80, 8080]
vlan = 100
action = "intercept"
handler = "rewrite"
options = { direction = "s2c", pattern = "Hello", replace = "HELLO" }

[[rule]]
port = 22
action = "block"

[[rule]]
action = "intercept"
handler = "respond"
options = { data_hex = "48490a" }
"""
    )
    assert p.budget.bytes == 4096 and p.budget.seconds == 2.5
    assert [r.action.value for r in p.rules] == ["intercept", "block", "intercept"]
    assert p.rules[0].ports == {80, 8080} and p.rules[1].ports == {22}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[rule]]\nport = 80\naction = "drop"\n', 3, "action"),
        ('[[rule]]\naction = "pass"\nsevrer = "10.0.0.1"\n', 3, "sevrer"),
        (
            '[[rule]]\naction = "pass"\n\n[[rule]]\nserver = "10.0.0.300"\naction = "pass"\n',
            5,
            "server",
        ),
        ('[[rule]]\naction = "pass"\nport = 70000\n', 3, "port"),
        ('[[rule]]\naction = "pass"\nhandler = "relay"\n', 3, "handler"),
        (
            '[[rule]]\naction = "intercept"\nhandler = "rewrite"\noptions = { pattern = "a" }\n',
            4,
            "replace",
        ),
        (
            '[[rule]]\naction = "intercept"\nhandler = "rewrite"\n'
            'options = { pattern = "", replace = "x" }\n',
            4,
            "pattern",
        ),
        ('[[rule]]\naction = "intercept"\nhandler = "tee"\n', 1, "dir"),
        (
            '[[rule]]\naction = "intercept"\nhandler = "respond"\n'
            'options = { data = "a", data_hex = "61" }\n',
            4,
            "data_hex",
        ),
        ("[budget]\nbytes = -1\n", 2, "bytes"),
        ('default = "maybe"\n', 1, "default"),
        ('[[rule]]\naction = "pass"\nport = [80,\n', 3, ""),  # TOML syntax: tomllib's line
        # every value checked: types, finite positive numbers, non-empty lists and strings
        ('[[rule]]\naction = "intercept"\noptions = 0\n', 3, "options must be a table"),
        ('[[rule]]\naction = "intercept"\noptions = false\n', 3, "options must be a table"),
        ("[budget]\nseconds = nan\n", 2, "seconds must be finite and positive"),
        ("[budget]\nbytes = 10\nseconds = inf\n", 3, "seconds must be finite"),
        ("[budget]\nseconds = -inf\n", 2, "seconds"),
        ("budget = { seconds = nan }\n", 1, "seconds"),
        ("[budget]\npackets = 0\n", 2, "packets must be finite and positive"),
        ("[budget]\nbytes = 1.5\n", 2, "bytes must be a whole number"),
        ("budget = 5\n", 1, "budget must be a table"),
        ('[[rule]]\nserver = []\naction = "pass"\n', 2, "server is an empty list"),
        ('[[rule]]\naction = "pass"\nclient = []\n', 3, "client is an empty list"),
        ('[[rule]]\naction = "pass"\nport = []\n', 3, "port is an empty list"),
        ('[[rule]]\naction = "pass"\nserver = 5\n', 3, "server must be an address"),
        ('[[rule]]\naction = "pass"\nserver = ["10.0.0.0/8", ""]\n', 3, "server"),
        ('[[rule]]\naction = "pass"\nprotocol = ""\n', 3, "protocol must not be empty"),
        ('[[rule]]\naction = "pass"\nhost = 1\n', 3, "host must be a string"),
        ('[[rule]]\naction = ["pass"]\n', 2, "action must be pass, intercept, block or watch"),
        ('[[rule]]\naction = "intercept"\nhandler = ["relay"]\n', 3, "handler must be"),
        ('[[rule]]\naction = "pass"\nport = true\n', 3, "port must be a whole number"),
        ('[[rule]]\naction = "pass"\nvlan = 1.5\n', 3, "vlan"),
        ('[[rule]]\naction = "block"\noptions = {}\n', 3, 'options apply to action = "intercept"'),
        (
            '[[rule]]\naction = "intercept"\nhandler = "respond"\noptions = { data = "" }\n',
            4,
            "option 'data' must not be empty",
        ),
        (
            '[[rule]]\naction = "intercept"\nhandler = "rewrite"\n'
            'options = { pattern = 5, replace = "x" }\n',
            4,
            "option 'pattern' must be a string",
        ),
        ("rule = []\n", 1, "[[rule]]"),
        ("default = 1\n", 1, "default must be pass, intercept or block"),
        # given twice (tomllib's own check, with its line)
        ('[[rule]]\naction = "pass"\n\n[[rule]]\nport = 80\nport = 81\naction = "pass"\n', 6, ""),
        ("[budget]\nbytes = 1\n[budget]\npackets = 2\n", 3, ""),
    ],
)
def test_bad_policy_names_line_and_key(text, line, words):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "rules.toml")
    msg = str(e.value)
    assert f"rules.toml:{line}" in msg or f"line {line}" in msg, msg
    assert words in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[[rule]]\nport = 80\naction = "explode"\n', 3),
        ('[[rule]]\naction = "intercept"\n\noptions = 0\n', 4),
        ('[[rule]]\naction = "intercept"\noptions = false\n', 3),
        ("[budget]\nseconds = nan\n", 2),
        ('[[rule]]\naction = "block"\nserver = []\n', 3),
    ],
)
def test_bad_policy_file_is_one_error_line(tmp_path, text, line):
    bad = tmp_path / "rules.toml"
    bad.write_text(text)
    records, r = replay(str(KEEPALIVE), "--policy", str(bad), check=False)
    assert r.returncode == 2 and records == []
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"rules.toml:{line}:" in lines[0]
    assert "Traceback" not in r.stderr


def test_an_empty_replacement_is_a_deletion_not_an_error():
    p = parse_policy('[[rule]]\naction = "intercept"\nhandler = "rewrite"\n'
                     'options = { pattern = "secret", replace = "" }\n')  # fmt: skip
    assert p.rules[0].options == {"pattern": "secret", "replace": ""}


# -- rules and verdicts on a real capture ------------------------------------------------------


def test_port_rule_decides_at_the_syn(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nport = 8080\naction = "block"\n')
    (rec,), _ = replay(str(KEEPALIVE), "--policy", str(rules))
    assert rec["verdict"] == "would-block" and rec["decided_by"] == "rule 1"
    assert rec["verdict_offset"] == {"c2s": 0, "s2c": 0}
    assert rec["protocol"] == "unknown"  # decided before any byte: nothing was inspected


def test_host_rule_waits_for_detection(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nprotocol = "http"\nhost = "10.99.0.*"\naction = "intercept"\n'
        '[[rule]]\nport = 8080\naction = "block"\n'
    )
    (rec,), _ = replay(str(KEEPALIVE), "--policy", str(rules))
    assert rec["protocol"] == "http" and rec["confidence"] == "detected"
    assert rec["findings"]["host"].startswith("10.99.0.2")
    assert rec["verdict"] == "would-intercept" and rec["decided_by"] == "rule 1"
    assert rec["verdict_offset"]["c2s"] > 0


def test_watch_rule_leaves_the_flow_to_plugins(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('default = "block"\n[[rule]]\nport = 8080\naction = "watch"\n'
                     '[[rule]]\nport = 8080\naction = "pass"\n')  # fmt: skip
    (rec,), _ = replay(str(KEEPALIVE), "--policy", str(rules))
    assert rec["verdict"] == "would-block" and rec["decided_by"] == "default"


def test_default_applies_once_detected_and_both_sides_spoke():
    (rec,) = run_capture([], KEEPALIVE, builtins=True)
    assert rec.protocol == "http" and rec.verdict == "pass" and rec.decided_by == "default"
    assert rec.findings["method"] == "GET" and rec.findings["status"] == 200
    assert 0 < rec.verdict_offset["c2s"] < 300 and rec.verdict_offset["s2c"] > 0


class WaitForSecondRequest(Plugin):
    name = "wait-second"

    def decide(self, flow):
        if flow.c2s.count(b" HTTP/1.1\r\n") >= 2:
            return Verdict.INTERCEPT
        return Verdict.NEED_MORE


def test_need_more_keeps_the_plugin_asked_until_the_second_request():
    (rec,) = run_capture(WaitForSecondRequest(), KEEPALIVE, builtins=True)
    assert rec.verdict == "would-intercept" and rec.decided_by == "wait-second"
    first_request = rec.verdict_offset["c2s"]
    assert first_request > 2 * 60  # two requests' worth of client bytes
    assert rec.verdict_offset["s2c"] > 50000  # the whole first response (a.bin) went by


# -- containment ---------------------------------------------------------------------------------


class Crashes(Plugin):
    name = "crashes"

    def detect(self, flow):
        raise ZeroDivisionError("nope")


class Sleeps(Plugin):
    name = "sleeps"

    def decide(self, flow):
        time.sleep(5)
        return Verdict.BLOCK


def test_crashing_plugin_gets_the_default_and_is_counted(tmp_path):
    plugin = tmp_path / "bad.py"
    plugin.write_text(
        "from uinet_tap.plugins import Plugin\n"
        "class Crashes(Plugin):\n    name = 'crashes'\n"
        "    def detect(self, flow):\n        raise ZeroDivisionError('nope')\n"
    )
    stats = tmp_path / "stats.json"
    records, r = replay(str(CAPTURES / "many-short.pcap"), "--plugin-file", str(plugin),
                        "--stats", str(stats))  # fmt: skip
    assert len(records) == 40
    assert all(rec["verdict"] == "pass" and rec["decided_by"] == "default" for rec in records)
    assert all(rec["plugin_errors"] == ["crashes"] for rec in records)
    warnings = [ln for ln in r.stderr.splitlines() if "crashes" in ln]
    assert len(warnings) == 1 and "ZeroDivisionError" in warnings[0], r.stderr
    assert json.loads(stats.read_text())["plugin_errors"] == {"crashes": 40}
    assert "Traceback" not in r.stderr


def test_plugin_that_runs_too_long_is_stopped():
    t = time.monotonic()
    r = run_bytes(Sleeps(), c2s=GET, s2c=b"HTTP/1.1 200 OK\r\n\r\n", builtins=True)
    assert time.monotonic() - t < 4
    assert r.errors == ("sleeps",) and r.verdict == "pass" and r.decided_by == "default"


# -- bypass --------------------------------------------------------------------------------------


def test_bypass_stops_reassembly_but_counters_move():
    full, _ = replay(str(CAPTURES / "bulk-both-ways.pcap"))
    byp, _ = replay(str(CAPTURES / "bulk-both-ways.pcap"), "--bypass")
    (f,), (b,) = full, byp
    assert not f["bypassed"] and b["bypassed"] and b["verdict"] == "pass"
    for d in ("c2s", "s2c"):
        assert b[d]["payload_bytes"] == f[d]["payload_bytes"] > 1_000_000
        assert b[d]["packets"] == f[d]["packets"]
        # Reassembly stopped at the verdict, yet the stream's length is the whole one (the
        # sequence numbers tell it); the hash covers only the prefix, so none is given.
        assert b[d]["bytes"] == f[d]["bytes"] >= 1_048_576
        assert 0 <= b[d]["hashed_bytes"] < b[d]["bytes"]
        assert b[d]["sha256"] is None and f[d]["sha256"] is not None
        assert "hashed_bytes" not in f[d]
        assert b[d]["gaps"] == []  # and no gap was made up after it
    assert b["close"] == f["close"] == "fin"


def test_bypass_same_on_every_path(monkeypatch):
    from uinet_tap.stack import fastpath

    if not fastpath.AVAILABLE:
        pytest.skip("C fast path not built")
    ref = [r for r in run_capture([], CAPTURES / "many-short.pcap", builtins=True)]
    monkeypatch.setenv("UINET_TAP_FASTPATH", "off")
    got = [r for r in run_capture([], CAPTURES / "many-short.pcap", builtins=True)]
    assert got == ref


# -- discovery -----------------------------------------------------------------------------------


def test_plugin_file_and_module_spec(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(
        "from uinet_tap.plugins import Plugin, Verdict\n"
        "class First(Plugin):\n    name = 'first'\n    ports = {8080}\n"
        "    def decide(self, flow):\n        return Verdict.BLOCK\n"
        "class Second(Plugin):\n    name = 'second'\n"
    )
    r = subprocess.run([str(BIN / "uinet-tap"), "plugins", "--plugin-file", str(f)],
                       capture_output=True, text=True, check=True)  # fmt: skip
    lines = r.stdout.splitlines()
    assert "first" in lines[0] and "8080" in lines[0] and str(f) in lines[0]
    assert "second" in lines[1]
    assert any(" tls " in ln and "built-in" in ln for ln in lines)
    (rec,), _ = replay(str(KEEPALIVE), "--plugin-file", str(f))
    assert rec["verdict"] == "would-block" and rec["decided_by"] == "first"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--plugin", "no_such_module:X"], "cannot import"),
        (["--plugin", "json:loads"], "not a uinet_tap.plugins.Plugin"),
        (["--plugin", "nocolon"], "module:Class"),
        (["--plugin-file", "/nonexistent.py"], "no such file"),
    ],
)
def test_bad_plugin_is_one_error_line(args, words):
    records, r = replay(str(KEEPALIVE), *args, check=False)
    assert r.returncode == 2 and records == []
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr


@pytest.fixture(scope="module")
def example_package():
    """The example third-party package, pip-installed for this test and removed after."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(REPO / "tests" / "example_plugin")],
                   check=True)  # fmt: skip
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "uinet-tap-example-plugin"], check=True)


def test_entry_point_plugin_is_found_and_decides(example_package):
    r = subprocess.run([str(BIN / "uinet-tap"), "plugins"], capture_output=True, text=True,
                       check=True)  # fmt: skip
    line = next(ln for ln in r.stdout.splitlines() if "second-request" in ln)
    assert "entry point second-request (uinet-tap-example-plugin)" in line
    (rec,), _ = replay(str(KEEPALIVE))
    assert rec["decided_by"] == "second-request" and rec["verdict"] == "would-intercept"
    assert rec["verdict_offset"]["s2c"] > 50000  # after the first response
    many, _ = replay(str(CAPTURES / "many-short.pcap"))
    assert {r["decided_by"] for r in many} == {"second-request"}  # not HTTP: it passes
    assert {r["verdict"] for r in many} == {"pass"}


def test_no_entry_points_loads_only_what_the_command_line_names(example_package, tmp_path):
    (rec,), _ = replay(str(KEEPALIVE), "--no-entry-points", "--stats", str(tmp_path / "s.json"))
    assert rec["decided_by"] == "default"  # the installed second-request plugin not loaded
    stats = json.loads((tmp_path / "s.json").read_text())
    assert all(p["origin"] == "built-in" for p in stats["plugins"])
    _, r = replay(str(KEEPALIVE), "--stats", str(tmp_path / "t.json"))
    origins = [p["origin"] for p in json.loads((tmp_path / "t.json").read_text())["plugins"]]
    assert "entry point second-request (uinet-tap-example-plugin)" in origins


OPTION_PLUGIN = """
from uinet_tap.plugins import Plugin, Verdict

class Paths(Plugin):
    name = "paths"
    option_defaults = {"deny": "/nothing", "verdict": "block"}

    def decide(self, flow):
        if flow.protocol != "http":
            return None
        for path in self.options["deny"].split(","):
            if flow.findings.get("path") == path:
                return self.decision(Verdict(self.options["verdict"]), f"{path} is denied")
        return Verdict.PASS
"""


def test_plugin_options_and_reasons(tmp_path):
    plugin = tmp_path / "paths.py"
    plugin.write_text(OPTION_PLUGIN)
    cap = str(CAPTURES / "app" / "http.pcap")  # GET /hello.txt
    (rec,), _ = replay(cap, "--plugin-file", str(plugin))
    assert rec["verdict"] == "pass" and "reason" not in rec  # the default option
    (rec,), _ = replay(cap, "--plugin-file", str(plugin), "--plugin-option",
                       "paths.deny=/x,/hello.txt")  # fmt: skip
    assert (rec["verdict"], rec["decided_by"]) == ("would-block", "paths")
    assert rec["reason"] == "/hello.txt is denied"
    opts = ["--plugin-option", "paths.deny=/hello.txt"]
    opts += ["--plugin-option", "paths.verdict=intercept"]
    (rec,), _ = replay(cap, "--plugin-file", str(plugin), *opts)
    assert rec["verdict"] == "would-intercept"


@pytest.mark.parametrize(
    "option, words",
    [
        ("paths.color=red", "has no option 'color' (it takes: deny, verdict)"),
        ("nope.deny=/", "no plugin named 'nope'"),
        ("paths=1", "expected NAME.KEY=VALUE"),
        ("http.x=1", "has no option 'x' (it takes: none)"),
    ],
)
def test_bad_plugin_options_are_one_error_line(tmp_path, option, words):
    plugin = tmp_path / "paths.py"
    plugin.write_text(OPTION_PLUGIN)
    records, r = replay(str(KEEPALIVE), "--plugin-file", str(plugin), "--plugin-option", option,
                        check=False)  # fmt: skip
    assert r.returncode == 2 and records == []
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr


def test_a_reason_that_is_not_a_string_is_a_plugin_failure():
    class Odd(Plugin):
        name = "odd"

        def decide(self, flow):
            return self.decision(Verdict.BLOCK, 42)  # type: ignore[arg-type]

    r = run_bytes(Odd(), c2s=b"GET / HTTP/1.1\r\n\r\n", s2c=b"HTTP/1.1 200 OK\r\n\r\n")
    assert r.decided_by == "default" and "odd" in r.errors


def test_the_helper_runs_the_built_in_detectors_by_default():
    class Quiet(Plugin):
        name = "quiet"

    r = run_bytes(Quiet(), c2s=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", s2c=b"HTTP/1.1 200 OK\r\n\r\n")
    assert r.protocol == "http"
    alone = run_bytes(Quiet(), c2s=b"GET / HTTP/1.1\r\n\r\n", builtins=False)
    assert alone.protocol == "unknown"


# -- the test helper -----------------------------------------------------------------------------


class Redisish(Plugin):
    name = "redisish"
    protocol = "redis"
    ports = {6379}

    def detect(self, flow):
        if not flow.c2s:
            return NEED_MORE
        return self.match("redis", command="PING") if flow.c2s.startswith(b"*1") else NO_MATCH

    def decide(self, flow):
        return Verdict.PASS if flow.protocol == "redis" else None


def test_run_bytes_reports_findings_and_verdict():
    r = run_bytes(Redisish(), c2s=b"*1\r\n$4\r\nPING\r\n", s2c=b"+PONG\r\n", server_port=6379)
    assert r.protocol == "redis" and r.findings == {"command": "PING"}
    assert r.verdict == "pass" and r.decided_by == "redisish"


def test_run_bytes_guesses_by_port_when_nothing_matches_in_budget():
    r = run_bytes(Redisish(), c2s=[], s2c=[], server_port=6379)
    assert r.protocol == "redis" and r.confidence == "guessed"


class SeesMacs(Plugin):
    name = "sees-macs"
    seen: list = []

    def decide(self, flow):
        if flow.macs[0] and flow.macs[1]:
            self.seen.append((flow.macs, flow.handshake, flow.mss))
            return Verdict.PASS
        return Verdict.NEED_MORE


def test_flow_view_carries_both_sides_macs_and_tcp_facts():
    from uinet_tap.pcapfile import PcapFile

    source = PcapFile(str(KEEPALIVE))
    batch = next(iter(source.batches()))
    syn = batch.data[batch.offsets[0] : batch.offsets[0] + batch.lengths[0]]
    synack = batch.data[batch.offsets[1] : batch.offsets[1] + batch.lengths[1]]
    plugin = SeesMacs()
    (rec,) = run_capture(plugin, KEEPALIVE, builtins=True)
    assert rec.decided_by == "sees-macs"
    (macs, handshake, mss), *_ = plugin.seen
    assert macs == (syn[6:12], synack[6:12]) and macs[0] != macs[1]
    assert handshake and mss[0] and mss[1]
