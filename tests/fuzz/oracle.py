"""The differential oracle: one capture file through both paths (``c``: the C data plane
where it takes a frame; ``off``: the general path only) under every inspection mode and a few
option sets; any difference in the records or the stats, or any exception, is a
:class:`Failure`. The general path (``off``) is the reference. Also: ``uinet-tap replay`` on a
file (exit status 0 or 2 only, no traceback, JSON lines), and a minimizer for failing
captures.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from uinet_tap.plugins.policy import parse_policy
from uinet_tap.plugins.registry import builtin_detectors
from uinet_tap.stack import fastpath

from uinet_tap import pcapfile
from uinet_tap.engine import Engine, Options
from uinet_tap.pcapfile import CaptureError, PcapFile
from uinet_tap.records import DirectionSink

from .gen import Capture

MODES = ["off"] + (["c"] if fastpath.AVAILABLE else [])
REPO = Path(__file__).resolve().parents[2]

# None: no inspection; "plugins": the built-in detectors (C names HTTP/TLS itself);
# "bypass": and --bypass; "policy": rules and a small budget, and "budget": only a short
# time budget, so the Python inspector runs under every path (C hands each undecided payload
# back) and the budget's seconds decide.
INSPECTS: list[str | None] = [None, "plugins", "bypass", "policy", "budget"]
POLICIES = {
    "budget": parse_policy(
        'default = "block"\n[budget]\nbytes = 4096\npackets = 12\nseconds = 0.3\n', "fuzz-budget"
    ),
}
POLICIES["policy"] = parse_policy(
    """
default = "pass"
[budget]
bytes = 300
packets = 3
seconds = 0.5
[[rule]]
protocol = "ssh"
action = "block"
[[rule]]
host = "*.example"
action = "intercept"
[[rule]]
port = 6379
action = "block"
""",
    "fuzz-policy",
)
# Option sets: the defaults, then small limits and timeouts so that every limit bites, under
# each overlap policy (C carries a stream only under the two final on arrival: first, windows).
OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"max_flows": 3, "max_flow_buffer": 600, "max_buffer": 2000, "timeout_half_open": 2.0,
     "timeout_established": 5.0, "timeout_closing": 1.0},
    {"overlap_policy": "bsd", "ignore_vlan": True, "max_flows": 8, "timeout_half_open": 1.0,
     "timeout_established": 20.0, "timeout_closing": 0.5},
    {"overlap_policy": "linux", "max_flow_buffer": 100, "max_buffer": 300,
     "timeout_established": 2.0},
    {"overlap_policy": "windows", "ignore_vlan": True, "max_flows": 2, "timeout_closing": 3.0},
    {"max_flow_buffer": 1, "max_buffer": 1, "timeout_half_open": 0.5,
     "timeout_established": 1.0, "timeout_closing": 0.1},
    {"overlap_policy": "last", "max_flows": 4, "max_flow_buffer": 600, "max_buffer": 2000,
     "timeout_established": 3.0},
    # watch's and inline's: closed tuples remembered (their stragglers swallowed), records
    # soon after the close; then the same with a memory short enough to run out
    {"timeout_closing": 3.0, "closed_memory": 60.0},
    {"max_flows": 4, "timeout_half_open": 1.0, "timeout_established": 2.0,
     "timeout_closing": 0.2, "closed_memory": 0.7},
]  # fmt: skip
BATCHES = [4096, 1, 3, 7, 64]


@dataclass(frozen=True)
class Config:
    inspect: str | None
    options: int  # index into OPTION_SETS
    batch: int  # packets per batch from the file reader

    def __str__(self) -> str:
        return f"inspect={self.inspect} options={OPTION_SETS[self.options]} batch={self.batch}"


@dataclass
class Failure:
    kind: str  # "exception", "records", "stats", "cli"
    mode: str
    config: Config | None
    detail: str
    key: str  # what differed or where it raised, without values: the dedup signature

    @property
    def signature(self) -> str:
        return f"{self.kind}:{self.key}"

    def __str__(self) -> str:
        return f"[{self.signature}] mode={self.mode} {self.config or ''}\n  {self.detail}"


def full_configs() -> list[Config]:
    """Every inspection mode under every option set, in one batch and in small batches."""
    return [
        Config(inspect, opts, batch)
        for inspect in INSPECTS
        for opts in range(len(OPTION_SETS))
        for batch in (4096, 3)
    ]


def sample_configs(rng: Any) -> list[Config]:
    """A campaign's configs for one input: every inspection mode under the defaults and under
    one other option set, at one batch size."""
    other = rng.randrange(1, len(OPTION_SETS))
    batch = rng.choice(BATCHES)
    return [Config(i, o, batch) for i in INSPECTS for o in (0, other)]


@contextlib.contextmanager
def _batch_size(n: int) -> Iterator[None]:
    saved = pcapfile.BATCH
    pcapfile.BATCH = n
    try:
        yield
    finally:
        pcapfile.BATCH = saved


# A few forged numbers open gigabyte gaps, and hashing their zeros would spend minutes of a
# campaign on one input: the oracle hashes a gap above this size as a short marker instead.
# Every path goes through the same DirectionSink.gap, so the comparison is unchanged (and
# smaller gaps still hash real zeros, in C and in hashlib).
BIG_GAP = 1 << 20
_real_gap = DirectionSink.gap


class _GapMarker:
    """Stands in for a sink's hash during one big gap: one short update instead of zeros."""

    def __init__(self, sha: Any, length: int) -> None:
        sha.update(b"<gap %d>" % length)

    def update(self, data: bytes) -> None:
        pass


def _cheap_gap(self: DirectionSink, offset: int, length: int, hashed: bool = True) -> None:
    if length <= BIG_GAP or not hashed:
        _real_gap(self, offset, length, hashed)
        return
    sha = self.sha
    self.sha = _GapMarker(sha, length)
    try:
        _real_gap(self, offset, length)
    finally:
        self.sha = sha


@contextlib.contextmanager
def _cheap_gaps() -> Iterator[None]:
    DirectionSink.gap = _cheap_gap  # type: ignore[method-assign]
    try:
        yield
    finally:
        DirectionSink.gap = _real_gap  # type: ignore[method-assign]


def run_path(path: Path, mode: str, config: Config) -> tuple[list[dict], dict] | None:
    """Records (by id) and stats of one run; None when the file is refused at open (a
    CaptureError, as the CLI's exit status 2)."""
    try:
        source = PcapFile(str(path))
    except CaptureError:
        return None
    records: list[dict] = []
    inspect = config.inspect
    engine = Engine(
        source.linktype,
        Options.from_kwargs(fastpath=mode, **OPTION_SETS[config.options]),
        records.append,
        plugins=builtin_detectors() if inspect else None,
        policy=POLICIES.get(inspect or ""),
        bypass=inspect == "bypass",
    )
    if mode == "c":  # records C writes as lines (a light flow's), as replay writes them
        engine.on_line = functools.partial(_line, records)
    with _batch_size(config.batch), _cheap_gaps():
        for batch in source.batches():
            _check_batch(batch)
            engine.feed_batch(batch)
        engine.truncated_file = source.truncated is not None
        engine.finish()
    return records, engine.stats()  # records in the order they were written


def _line(records: list[dict], line: bytes, close: str) -> None:
    """A record made as its JSON line (Engine.on_line): its object compared as any other's,
    the line being what orjson writes of that object (keys, numbers, escapes; the keys'
    order against records.py is tests/test_record_line.py's)."""
    rec = orjson.loads(line)
    assert orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE) == line, f"not orjson's: {line!r}"
    assert rec["close"] == close, (rec["close"], close)
    records.append(rec)


def _check_batch(batch: pcapfile.Batch) -> None:
    """What the engine relies on from a reader."""
    n = len(batch.lengths)
    assert len(batch.times) == n and len(batch.offsets) == n, "batch arrays differ in length"
    for off, length in zip(batch.offsets, batch.lengths, strict=True):
        assert off >= 0 and off + length <= len(batch.data), "a packet outside the batch"
    if batch.wirelens is not None:
        assert len(batch.wirelens) == n, "wire lengths differ in length"


def _where(exc: BaseException) -> str:
    """The innermost frame of the project's own code in a traceback: file:function."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/tests/" not in f.filename and "site-packages" not in f.filename]
    f = (ours or frames)[-1]
    return f"{type(exc).__name__}@{Path(f.filename).name}:{f.name}"


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (without list indices) where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}.{k}")
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and path.endswith("records"):
        if len(a) != len(b):
            return [f"{path}.count"]
        out = []
        for x, y in zip(a, b, strict=True):
            out += _diff(x, y, path)
        return out
    return [] if a == b else [path]


def check(path: Path, configs: list[Config]) -> list[Failure]:
    """Every config through every path; the failures (empty: all agree, nothing raised)."""
    failures: list[Failure] = []
    for config in configs:
        results: dict[str, Any] = {}
        for mode in MODES:
            try:
                results[mode] = run_path(path, mode, config)
            except Exception as exc:  # the oracle's point: any exception is a finding
                where = _where(exc)
                detail = "".join(traceback.format_exception(exc)[-6:]).strip()
                failures.append(Failure("exception", mode, config, detail, where))
        ref = results.get("off")
        if "off" not in results:
            continue
        for mode in MODES[1:]:
            if mode not in results:
                continue
            got = results[mode]
            if got == ref:
                continue
            if got is None or ref is None:
                failures.append(Failure("records", mode, config, "opened by one path only", "open"))
                continue
            mine, theirs = (sorted(r[0], key=lambda rec: rec["id"]) for r in (got, ref))
            rec_diff = sorted(set(_diff(mine, theirs, "records")))
            if rec_diff:
                first = _first_record_diff(mine, theirs)
                failures.append(Failure("records", mode, config, first, ",".join(rec_diff)))
            elif got[0] != ref[0]:  # the same records, written in another order
                order = [r["id"] for r in got[0]], [r["id"] for r in ref[0]]
                detail = f"ids in the order written: {order[0]} vs {order[1]}"
                failures.append(Failure("records", mode, config, detail, "records.order"))
            stat_diff = sorted(set(_diff(got[1], ref[1], "stats")))
            if stat_diff and not rec_diff:
                detail = "; ".join(
                    f"{k}: {_get(got[1], k)} != {_get(ref[1], k)}" for k in stat_diff
                )
                failures.append(Failure("stats", mode, config, detail, ",".join(stat_diff)))
    return failures


def _get(stats: dict, key: str) -> Any:
    value: Any = stats
    for part in key.split(".")[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _first_record_diff(got: list[dict], ref: list[dict]) -> str:
    if len(got) != len(ref):
        ids = [r["id"] for r in got], [r["id"] for r in ref]
        return f"{len(got)} records, the general path {len(ref)}: ids {ids[0]} vs {ids[1]}"
    for a, b in zip(got, ref, strict=True):
        if a != b:
            parts = []
            for k in _diff(a, b, "record")[:4]:
                mine, theirs = _get({"record": a}, "x." + k), _get({"record": b}, "x." + k)
                parts.append(f"{k}: {mine!r:.120} != {theirs!r:.120}")
            return f"connection {b['id']} ({b['client']} -> {b['server']}): " + "; ".join(parts)
    return "?"


# -- the command line ---------------------------------------------------------------------


def check_cli(path: Path, args: tuple[str, ...] = ()) -> list[Failure]:
    """``uinet-tap replay FILE --flows - --stats FILE -q``: exit 0 or 2, no traceback, every
    stdout line a JSON object, the stats JSON when it ran."""
    exe = Path(sys.executable).with_name("uinet-tap")
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        cmd = [str(exe), "replay", str(path), "--flows", "-", "--stats", str(stats), "-q", *args]
        env = dict(os.environ)
        env.pop("UINET_TAP_FASTPATH", None)
        proc = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
        problems = []
        err = proc.stderr.decode(errors="replace")
        where = _stderr_where(err)
        if proc.returncode not in (0, 2):
            problems.append(
                (f"exit{proc.returncode}:{where}", f"exit status {proc.returncode}: {err[-300:]}")
            )
        if "Traceback" in err:
            problems.append((f"traceback:{where}", err.strip()[-600:]))
        for line in proc.stdout.splitlines():
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("not an object")
            except ValueError:
                problems.append(("json", f"not a JSON object on stdout: {line[:120]!r}"))
                break
        if proc.returncode == 0:
            try:
                json.loads(stats.read_text())
            except (OSError, ValueError) as exc:
                problems.append(("stats", f"--stats: {exc}"))
        elif proc.returncode == 2 and not err.startswith("error:"):
            problems.append(("exit", f"status 2 without one error line: {err[:200]!r}"))
    return [Failure("cli", " ".join(args) or "default", None, d, k) for k, d in problems]


def _stderr_where(err: str) -> str:
    """Where a failed run broke, from its stderr: the exception and the innermost frame of a
    traceback, or the exception an internal-error line names."""
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', err)
    lines = err.strip().splitlines()
    exc = lines[-1].split(":")[0].strip() if lines else ""
    if frames:
        return f"{exc}@{Path(frames[-1][0]).name}:{frames[-1][1]}"
    m = re.search(r"internal error after \d+ packets: (\w+)", err)
    return m.group(1) if m else exc[:40]


def reported_inputs() -> list[Path]:
    where = Path(__file__).parent / "reported"
    return sorted(p for p in where.iterdir() if p.suffix in (".pcap", ".pcapng"))


def known_signatures() -> set[str]:
    """The failures of the inputs reported for another branch to fix (fuzz/reported/): a
    campaign or a test counts them apart, the strict xfail tests keep them honest."""
    return {
        f.signature
        for path in reported_inputs()
        for f in check(path, [Config(None, 0, 4096)]) + check_cli(path)
    }


# -- minimizing ----------------------------------------------------------------------------


def write(capture: Capture, directory: Path, stem: str) -> Path:
    path = directory / (stem + capture.suffix)
    path.write_bytes(capture.to_bytes())
    return path


def minimize(
    capture: Capture,
    failing: Callable[[Capture], bool],
    max_tries: int = 400,
) -> Capture:
    """Delta debugging over the packets: the smallest capture found (within ``max_tries``
    checks) that still fails the same way."""
    packets = list(capture.packets)
    tries = 0
    n = 2
    while len(packets) >= 2 and tries < max_tries:
        chunk = max(1, len(packets) // n)
        reduced = False
        for start in range(0, len(packets), chunk):
            candidate = packets[:start] + packets[start + chunk :]
            tries += 1
            if candidate and failing(capture.with_packets(candidate)):
                packets = candidate
                n = max(n - 1, 2)
                reduced = True
                break
            if tries >= max_tries:
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(packets), n * 2)
    return capture.with_packets(packets)


def signature_name(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()[:10]
