"""Public reference corpus: `uinet-tap replay` against independently derived stream expectations.

For every `<id>.json` in the corpus (the directory `shared/corpus` beside the repository checkout,
or $UINET_TAP_CORPUS), the capture it names is replayed once through the CLI with `--flows` and
`--export`, and every connection direction that has an `expected` object is checked:

* the direction's `bytes` equals `filled_length`, its `sha256` equals `filled_sha256` (the stream
  with every gap as NUL bytes), and its gaps equal the expected `[offset, length]` list, offsets
  counted in the filled stream;
* where `filled_sha256` is left out, the delivered bytes (the exported stream with the tool's gaps
  cut out) must hash to the expected `sha256`;
* the exported stream file must hash to the record's own `sha256`;
* every fact with `expected_holds` that is a statement about the bytes (`equals`, `prefix`,
  `suffix`, `contains`, `not_contains`, `length`, `sha256`, on the delivered bytes, and `gap`, on
  the tool's gaps) must hold or not hold as stated.  `expected_holds` is stated for the default
  options, so facts marked with a `policy` are checked too (they mostly must not hold).

Connections are matched by their two endpoints (orientation-free where `role_basis` is not
`syn`), by the VLAN stack where the file says `vlan_key`, and by `index` among connections with
the same key ordered by start; a tool with more or fewer records for a key than the corpus has
connections fails too.  Directions without `expected` (unresolved disputes) are skipped.  Every
problem in one capture is collected, so a failure message is a full diagnosis of that pcap.
$UINET_TAP_CMD replaces the uinet-tap command (e.g. to try another build).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(
    os.environ.get("UINET_TAP_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
if not CORPUS.is_dir():
    pytest.skip(
        f"reference corpus not found at {CORPUS} (set UINET_TAP_CORPUS)",
        allow_module_level=True,
    )

CASES = sorted(CORPUS.glob("*.json"))
if not CASES:
    pytest.skip(f"no corpus expectation files in {CORPUS}", allow_module_level=True)

DIRECTIONS = ("c2s", "s2c")
OTHER = {"c2s": "s2c", "s2c": "c2s"}
Endpoint = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def tool_command() -> list[str]:
    """$UINET_TAP_CMD (split on spaces), else the uinet-tap console script beside this
    interpreter, else the one on PATH, else `python -m uinet_tap`."""
    if os.environ.get("UINET_TAP_CMD"):
        return os.environ["UINET_TAP_CMD"].split()
    script = Path(sys.executable).parent / "uinet-tap"
    if script.exists():
        return [str(script)]
    found = shutil.which("uinet-tap")
    if found:
        return [found]
    return [sys.executable, "-m", "uinet_tap"]


def endpoint(text: str) -> Endpoint:
    """Parse "ip:port" or "[v6]:port" into a normalised (address, port)."""
    host, _, port = text.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")), int(port)


def fact_bytes(text: str) -> bytes:
    """Fact strings are bytes as code points (e.g. "\u00feSMB" is b"\\xfeSMB")."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def merged(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted gaps with touching or overlapping ones joined, so split holes compare equal."""
    out: list[tuple[int, int]] = []
    for off, length in sorted(gaps):
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_len = out[-1]
            out[-1] = (last_off, max(last_len, off + length - last_off))
        else:
            out.append((off, length))
    return out


def shown(data: bytes, limit: int = 48) -> str:
    """The corpus's `head` notation: printable ASCII, the rest as \\r, \\n, \\xNN."""
    parts = []
    for b in data[:limit]:
        if b == 0x0D:
            parts.append("\\r")
        elif b == 0x0A:
            parts.append("\\n")
        elif 0x20 <= b < 0x7F and b != 0x5C:
            parts.append(chr(b))
        else:
            parts.append(f"\\x{b:02x}")
    return "".join(parts) + ("..." if len(data) > limit else "")


@dataclass
class Direction:
    """One direction of one tool record, with its exported bytes."""

    record: dict[str, Any]
    filled: bytes | None  # the exported stream, gap bytes as NULs (None: not exported)

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return merged([(int(o), int(n)) for o, n in self.record.get("gaps") or []])

    @property
    def delivered(self) -> bytes | None:
        """The stream with the gap bytes cut out: what the corpus's text facts are about."""
        if self.filled is None:
            return None
        out, pos = bytearray(), 0
        for off, length in self.gaps:
            out += self.filled[pos:off]
            pos = off + length
        out += self.filled[pos:]
        return bytes(out)


def replay(
    pcap: Path, flows: Path, export: Path, ignore_vlan: bool, policy: str | None,
    env: dict[str, str],
) -> list[dict[str, Any]]:  # fmt: skip
    """Run the CLI once; return its flow records, each direction's `file` filled in."""
    cmd = [*tool_command(), "replay", str(pcap), "--flows", str(flows), "--export", str(export)]
    cmd += ["-q", *(["--ignore-vlan"] if ignore_vlan else [])]
    cmd += ["--overlap-policy", policy] if policy else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    records = [json.loads(line) for line in flows.read_text().splitlines() if line.strip()]
    # the stream files are named in the records; fall back to the export's own flows.jsonl
    exported = export / "flows.jsonl"
    if exported.is_file():
        files = {}
        for line in exported.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                files[rec["id"]] = {d: (rec.get(d) or {}).get("file") for d in DIRECTIONS}
        for rec in records:
            for d in DIRECTIONS:
                if rec.get(d) is not None and not rec[d].get("file"):
                    rec[d]["file"] = files.get(rec["id"], {}).get(d)
    return records


def direction(rec: dict[str, Any], d: str, export: Path) -> Direction:
    body = rec.get(d) or {}
    name = body.get("file")
    path = export / name if name else None
    if path and path.is_file():
        return Direction(body, path.read_bytes())
    # an empty stream need not have a file
    return Direction(body, b"" if body.get("bytes") == 0 else None)


def match(
    conns: list[dict[str, Any]], records: list[dict[str, Any]], vlan_key: bool
) -> tuple[dict[int, tuple[dict[str, Any], bool]], list[str]]:
    """Map corpus conn number -> (tool record, swapped); problems for unmatched conns.

    swapped: the tool's client is the corpus's server."""

    def key(a: str, b: str, vlan: Any) -> tuple[Any, ...]:
        pair = tuple(sorted((endpoint(a), endpoint(b)), key=lambda e: (e[0].version, e)))
        return (*pair, tuple(vlan or ()) if vlan_key else ())

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in sorted(records, key=lambda r: (r.get("start", 0.0), r["id"])):
        groups.setdefault(key(rec["client"], rec["server"], rec.get("vlan")), []).append(rec)
    wanted: dict[tuple[Any, ...], int] = {}
    for c in conns:
        k = key(c["client"], c["server"], c.get("vlan_key"))
        wanted[k] = wanted.get(k, 0) + 1

    found: dict[int, tuple[dict[str, Any], bool]] = {}
    problems: list[str] = []
    for c in conns:
        k = key(c["client"], c["server"], c.get("vlan_key"))
        cands = groups.get(k, [])
        label = f"conn {c['conn']} {c['client']} -> {c['server']}" + (
            f" vlan {c.get('vlan_key')}" if vlan_key else ""
        )
        note = (
            ""
            if len(cands) == wanted[k]
            else (f" (the tool has {len(cands)} records for this key, the corpus {wanted[k]})")
        )
        if c["index"] >= len(cands):
            problems.append(f"{label}: no matching flow record{note}")
            continue
        rec = cands[c["index"]]
        swapped = endpoint(rec["client"]) != endpoint(c["client"])
        if swapped and c["role_basis"] == "syn":
            problems.append(
                f"{label}: the tool made {rec['client']} the client, but it sent the SYN"
                f" to {rec['server']}"
            )
        if note:
            problems.append(f"{label}: record {rec['id']} chosen by index {c['index']}{note}")
        found[c["conn"]] = (rec, swapped)
    return found, problems


def check_direction(label: str, exp: dict[str, Any], got: Direction) -> list[str]:
    problems = []
    rec = got.record
    want_gaps = merged([(g["offset"], g["length"]) for g in exp["gaps"]])
    if rec.get("bytes") != exp["filled_length"]:
        problems.append(f"{label}: bytes {rec.get('bytes')}, expected {exp['filled_length']}")
    if exp.get("filled_sha256") and rec.get("sha256") != exp["filled_sha256"]:
        problems.append(f"{label}: sha256 differs from the expected stream")
    if got.gaps != want_gaps:
        problems.append(f"{label}: gaps {got.gaps}, expected {want_gaps}")
    if got.filled is None:
        problems.append(f"{label}: no exported stream file ({rec.get('file')!r})")
    else:
        if hashlib.sha256(got.filled).hexdigest() != rec.get("sha256"):
            problems.append(f"{label}: exported file does not hash to the record's sha256")
        delivered = got.delivered or b""
        if not exp.get("filled_sha256") and hashlib.sha256(delivered).hexdigest() != exp["sha256"]:
            problems.append(f"{label}: delivered bytes (gaps cut out) differ from the expected")
    if problems and got.filled is not None:
        problems.append(f"{label}:   tool head     '{shown(got.delivered or b'')}'")
        problems.append(f"{label}:   expected head '{exp.get('head', '')}'")
    return problems


TEXT_FACTS: dict[str, Callable[[bytes, bytes], bool]] = {
    "equals": lambda data, v: data == v,
    "prefix": lambda data, v: data.startswith(v),
    "suffix": lambda data, v: data.endswith(v),
    "contains": lambda data, v: v in data,
    "not_contains": lambda data, v: v not in data,
}


def check_fact(fact: dict[str, Any], got: Direction) -> str | None:
    """A problem description if the fact's truth differs from expected_holds, else None."""
    want = fact["expected_holds"]
    desc = next(f"{k} {fact[k]!r}" for k in (*TEXT_FACTS, "length", "sha256", "gap") if k in fact)
    policy = f" [policy {fact['policy']}]" if "policy" in fact else ""
    if "gap" in fact:
        gap = (fact["gap"]["offset"], fact["gap"]["length"])
        holds = gap in got.gaps
        seen = f"tool gaps {got.gaps}"
    else:
        data = got.delivered
        if data is None:
            return f"fact {desc}: no exported stream to check it on"
        if "length" in fact:
            holds = len(data) == fact["length"]
        elif "sha256" in fact:
            holds = hashlib.sha256(data).hexdigest() == fact["sha256"]
        else:
            kind = next(k for k in TEXT_FACTS if k in fact)
            holds = TEXT_FACTS[kind](data, fact_bytes(fact[kind]))
        seen = f"tool has {len(data)} bytes '{shown(data)}'"
    if holds == want:
        return None
    return (
        f"fact {desc}{policy} should {'hold' if want else 'not hold'} but "
        f"{'does' if holds else 'does not'}; {seen} (upstream: {fact['source']})"
    )


@dataclass
class Replay:
    spec: dict[str, Any]
    records: list[dict[str, Any]]
    export: Path


def replay_case(case: Path, tmp: Path, policy: str | None, env: dict[str, str]) -> Replay:
    spec = json.loads(case.read_text())
    pcap = CORPUS / spec["pcap"]
    vlan_key = bool(spec.get("vlan_key"))
    export = tmp / "export"
    records = replay(pcap, tmp / "flows.jsonl", export, not vlan_key, policy, env)
    return Replay(spec, records, export)


# The expectations are the two observer oracles' (tshark, tcpflow): the tool's `first` policy
# reads like them. Under the default, the `linux` receiver, these directions deliberately
# differ (README "Receiver policies"): what the application read, as the upstream tests'
# own facts for a receiver (Suricata's urgent oob policy, its RST handling) say.
RECEIVER_DIFFERS: dict[tuple[str, int, str], str] = {
    ("sv-urgent-1byte", 0, "c2s"): "the urgent byte is read out of band",
    ("sv-urgent-2byte", 0, "c2s"): "the urgent byte is read out of band",
    ("sv-rst-unacked-raw", 0, "c2s"): "no application reads a RST's payload",
    ("sv-rst-with-data", 0, "c2s"): "no application reads a RST's payload",
}
# Where no upstream fact speaks for a receiver: the bytes it read (the RST carried them all).
RECEIVER_READS: dict[tuple[str, int, str], bytes] = {("sv-rst-unacked-raw", 0, "c2s"): b""}
# Facts stated for another reader: under the default they hold, and "inline" ones do not.
RECEIVER_FACT_POLICIES = {"urgent-oob": True, "suricata": True, "inline": False}
POLICIES = ["first", "default"]


@pytest.fixture(scope="module")
def replays(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Path, Future[Replay]]]:
    """Start the replays of every selected corpus case at once, a few in parallel: each run
    is mostly interpreter start-up, so this is what keeps the module fast."""
    ids = {
        item.callspec.id
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_corpus_streams"
    }
    selected = [
        (case, policy) for case in CASES for policy in POLICIES if f"{case.stem}-{policy}" in ids
    ]
    # The children get a copy of the environment made here: they are spawned on the pool's
    # threads while pytest sets PYTEST_CURRENT_TEST for the tests on the main thread, and a
    # child spawned with the process's own environ (vfork: memory shared until exec) can
    # read that array while setenv moves it; exec then fails with EFAULT ("Bad address").
    env = dict(os.environ)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        yield {
            (case, policy): pool.submit(
                replay_case,
                case,
                tmp_path_factory.mktemp(case.stem),
                None if policy == "default" else policy,
                env,
            )  # fmt: skip
            for case, policy in selected
            if (CORPUS / json.loads(case.read_text())["pcap"]).is_file()
        }
        pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_corpus_streams(
    case: Path, policy: str, replays: dict[tuple[Path, str], Future[Replay]]
) -> None:
    if (case, policy) not in replays:
        pytest.skip(f"the capture named in {case.name} is not in the corpus directory")
    run = replays[case, policy].result()
    receiver = policy == "default"
    spec, records, export = run.spec, run.records, run.export
    vlan_key = bool(spec.get("vlan_key"))
    conns = spec["connections"]
    found, problems = match(conns, records, vlan_key)

    for c in conns:
        if c["conn"] not in found:
            continue
        rec, swapped = found[c["conn"]]
        for d in DIRECTIONS:
            exp = c[d].get("expected")
            if not exp:
                continue  # unresolved dispute: nothing settled to compare with
            label = f"conn {c['conn']} {d} ({c[d]['status']}, record {rec['id']})"
            if receiver and (case.stem, c["conn"], d) in RECEIVER_DIFFERS:
                want = RECEIVER_READS.get((case.stem, c["conn"], d))
                got = direction(rec, OTHER[d] if swapped else d, export).delivered
                if want is not None and got != want:
                    problems.append(f"{label}: a receiver reads {want!r}, the tool has {got!r}")
                continue  # else its facts below say what a receiver reads
            problems += check_direction(
                label, exp, direction(rec, OTHER[d] if swapped else d, export)
            )

    for fact in spec.get("facts", []):
        if "expected_holds" not in fact or "dir" not in fact or fact["conn"] not in found:
            continue  # not a statement about one direction's bytes (or conn already reported)
        rec, swapped = found[fact["conn"]]
        d = fact["dir"]
        if receiver and (case.stem, fact["conn"], d) in RECEIVER_DIFFERS:
            if fact.get("policy") not in RECEIVER_FACT_POLICIES:
                continue
            fact = dict(fact, expected_holds=RECEIVER_FACT_POLICIES[fact["policy"]])
        problem = check_fact(fact, direction(rec, OTHER[d] if swapped else d, export))
        if problem:
            problems.append(f"conn {fact['conn']} {d}: {problem}")

    if problems:  # the diagnosis is the message; the test's own traceback adds nothing
        pytest.fail(f"{case.stem} ({spec['tests']}):\n  " + "\n  ".join(problems), pytrace=False)
