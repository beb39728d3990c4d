"""A fuzz campaign: ``python -m tests.fuzz.run --minutes 30 --seed 1 --out DIR``.

Inputs, until the time is up: mostly captures from the structured generator (gen.py), and
now and then a shipped capture (captures/, the public corpus in ../shared/corpus) mutated
packet by packet or byte by byte in the file itself (headers, block lengths, truncation).
Each goes through the oracle (oracle.py: both paths, every inspection mode, the defaults
and one other option set, one batch size); some also through ``uinet-tap replay``.

Each new failure (by signature: what differed, or where it raised) is minimized and written
to ``DIR/crashers/`` as a capture plus a .txt saying what failed; the input being checked is
always in ``DIR/current.*`` (should the process itself die). At the end the figures (inputs,
CPU hours, distinct failures) are printed and written to ``DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

from uinet_tap.pcapfile import CaptureError, PcapFile

from . import gen, oracle
from .gen import Capture

SOURCES = [
    *sorted((oracle.REPO / "captures" / "app").glob("*.pcap")),
    *sorted((oracle.REPO / "captures").glob("*.pcap")),
    *sorted((oracle.REPO.parent / "shared" / "corpus").glob("*.pcap*")),
]
MAX_SOURCE_PACKETS = 300


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_loaded: dict[Path, Capture] = {}


def load(path: Path) -> Capture:
    """The first packets of a shipped capture, as a Capture (cached)."""
    cap = _loaded.get(path)
    if cap is None:
        source = PcapFile(str(path))
        packets: list[tuple[int, float, bytes, int]] = []
        linktypes: list[int] = []
        for batch in source.batches():
            if batch.linktype not in linktypes:
                linktypes.append(batch.linktype)
            iface = linktypes.index(batch.linktype)
            for k, (ts, off, n) in enumerate(
                zip(batch.times, batch.offsets, batch.lengths, strict=True)
            ):
                wl = batch.wirelens[k] if batch.wirelens else n
                packets.append((iface, ts, batch.data[off : off + n], wl))
            if len(packets) >= MAX_SOURCE_PACKETS:
                break
        cap = _loaded[path] = Capture(linktypes, packets[:MAX_SOURCE_PACKETS], len(linktypes) > 1)
    return cap


_WORDS = [0, 1, 4, 12, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x0A0D0D0A, 0xA1B2C3D4, 0x1A2B3C4D]


def mutate_file(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage to a whole file: header fields, lengths, truncation, splices."""
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not b:
            break
        k = rng.randrange(6)
        if k == 0:  # flip bits in the file or first record header
            pos = rng.randrange(min(len(b), 64))
            b[pos] ^= 1 << rng.randrange(8)
        elif k == 1:  # an aligned 32-bit word (lengths, magic, interface ids)
            pos = rng.randrange(0, max(1, len(b) - 4), 4)
            near = int.from_bytes(b[pos : pos + 4], "little") + rng.choice([-1, 1, 4])
            word = rng.choice([*_WORDS, near])
            b[pos : pos + 4] = (word % (1 << 32)).to_bytes(4, rng.choice(["little", "big"]))
        elif k == 2:  # the file ends early
            del b[rng.randrange(len(b)) :]
        elif k == 3:  # a piece repeated
            a = rng.randrange(len(b))
            b[a:a] = b[a : a + rng.randrange(1, 200)]
        elif k == 4:  # a piece cut out
            a = rng.randrange(len(b))
            del b[a : a + rng.randrange(1, 200)]
        else:  # a random byte anywhere
            b[rng.randrange(len(b))] = rng.getrandbits(8)
    return bytes(b)


def _records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, header size, total size) of each record or block, as far as the file parses;
    the byte order from the magic numbers."""
    out = []
    if data[:4] == b"\x0a\x0d\x0d\x0a":  # pcapng: type, length, body, length
        order = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
        pos = 0
        while pos + 12 <= len(data):
            n = int.from_bytes(data[pos + 4 : pos + 8], order)
            if n < 12 or pos + n > len(data):
                break
            out.append((pos, 8, n))
            pos += n
        return out
    order = "little" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
    pos = 24
    while pos + 16 <= len(data):
        n = int.from_bytes(data[pos + 8 : pos + 12], order)
        out.append((pos, 16, 16 + n))
        pos += 16 + n
    return out


def _u(value: int, width: int, order: str) -> bytes:
    return (value % (1 << (8 * width))).to_bytes(width, order)


def _block(btype: bytes, body: bytes, order: str) -> bytes:
    n = _u(12 + len(body), 4, order)
    return btype + n + body + n


def mutate_structure(rng: random.Random, data: bytes) -> bytes:
    """Damage that keeps the file parseable up to one record or block: its length fields,
    its type, a body cut short with consistent lengths, an interface's link type or time
    resolution, a packet's interface or captured length."""
    records = _records(data)
    if not records:
        return mutate_file(rng, data)
    ng = data[:4] == b"\x0a\x0d\x0d\x0a"
    order = "little"
    if ng:
        order = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
    elif data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "big"
    b = bytearray(data)
    pos, head, size = rng.choice(records)

    def put(at: int, value: int, width: int = 4) -> None:
        b[at : at + width] = _u(value, width, order)

    k = rng.randrange(6)
    if not ng:  # pcap: ts_sec, ts_usec, caplen, len
        if k <= 2:
            caplen = int.from_bytes(b[pos + 8 : pos + 12], order)
            put(pos + 8 + 4 * (k == 2), rng.choice([0, 1, 13, 14, 53, 54, caplen - 1, caplen + 1,
                                                   65535, 262145, 0xFFFFFFFF]))  # fmt: skip
        elif k == 3:
            put(pos + 4, rng.choice([1_000_000, 999_999_999, 0xFFFFFFFF]))
        elif k == 4:
            put(pos, rng.choice([0, 0xFFFFFFFF, 1]))
        else:
            del b[pos + rng.randrange(size) :]
        return bytes(b)
    btype = int.from_bytes(b[pos : pos + 4], order)
    body = bytes(b[pos + 8 : pos + size - 4])
    if k == 0:  # one or both length fields
        n = rng.choice([12, 16, 20, 24, 28, 32, size - 4, size + 4, size + 1, 0xFFFFFFFC])
        put(pos + 4, n)
        if rng.random() < 0.5:
            put(pos + size - 4, n)
    elif k == 1:  # another block type
        put(pos, rng.choice([1, 2, 3, 5, 6, 0x0A0D0D0A, 0x80000001, rng.getrandbits(32)]))
    elif k == 2:  # the body cut short, lengths consistent
        keep = rng.randrange(0, len(body) + 1) & ~3
        n = 12 + keep
        b[pos : pos + size] = _block(b[pos : pos + 4], body[:keep], order)
    elif k == 3 and btype == 1 and len(body) >= 4:  # interface: link type, time resolution
        if rng.random() < 0.5:
            put(pos + 8, rng.choice([0, 1, 12, 101, 113, 147, 228, 229, 276, 65535]), 2)
        else:
            resolution = bytes([rng.choice([0, 9, 63, 0x80 | 63, 255])]) + b"\0\0\0"
            opt = rng.choice([
                _u(9, 2, order) + _u(1, 2, order) + resolution,  # if_tsresol
                _u(14, 2, order) + _u(8, 2, order) + _u(rng.getrandbits(64), 8, order),
                _u(9, 2, order) + _u(0xFFFF, 2, order),  # an option longer than the block
            ])  # fmt: skip
            b[pos : pos + size] = _block(b[pos : pos + 4], body[:8] + opt + body[8:], order)
    elif k == 4 and btype in (6, 2) and len(body) >= 20:  # a packet: interface, caplen
        if rng.random() < 0.5:
            put(pos + 8, rng.choice([1, 2, 99, 0xFFFFFFFF]), 4 if btype == 6 else 2)
        else:
            at = pos + 8 + (12 if btype == 6 else 12)
            put(at, rng.choice([0, len(body), len(body) - 19, 0xFFFFFFFF]))
    else:
        del b[pos + rng.randrange(size) :]
    return bytes(b)


def make_input(rng: random.Random, max_conns: int) -> tuple[str, Capture | None, bytes, str]:
    """(kind, the Capture when the input is one, the file's bytes, its suffix)."""
    if not SOURCES or rng.random() < 0.85:
        cap = gen.capture(rng, max_conns)
        return "gen", cap, cap.to_bytes(), cap.suffix
    return make_input_from_sources(rng)


def make_input_from_sources(rng: random.Random) -> tuple[str, Capture | None, bytes, str]:
    """A shipped capture's first packets, mutated packet by packet or in the file's bytes."""
    src = load(rng.choice(SOURCES))
    if rng.random() < 0.3:  # as a pcapng, whatever it was
        src = Capture(src.linktypes, src.packets, True)
    if rng.random() < 0.5:
        cap = src.with_packets(gen.mutate_packets(rng, src.packets))
        return "packets", cap, cap.to_bytes(), cap.suffix
    data = src.to_bytes()
    for _ in range(rng.randrange(1, 3)):
        data = mutate_structure(rng, data) if rng.random() < 0.6 else mutate_file(rng, data)
    return "file", None, data, src.suffix


class Campaign:
    def __init__(self, out: Path, seed: int, cli_rate: float, max_conns: int) -> None:
        self.out = out
        self.crashers = out / "crashers"
        self.crashers.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.cli_rate = cli_rate
        self.max_conns = max_conns
        self.inputs = 0
        self.cli_runs = 0
        self.by_kind: dict[str, int] = {}
        self.found: dict[str, dict[str, Any]] = {}
        # Failures of the inputs reported for another branch to fix: counted, not new.
        self.known = oracle.known_signatures()
        self.known_hits = 0

    def one(self, i: int) -> None:
        rng = random.Random(f"{self.seed}:{i}")
        kind, cap, data, suffix = make_input(rng, self.max_conns)
        for old in self.out.glob("current.*"):
            old.unlink()
        path = self.out / f"current{suffix}"
        path.write_bytes(data)
        failures = oracle.check(path, oracle.sample_configs(rng))
        if kind == "file" or rng.random() < self.cli_rate:
            self.cli_runs += 1
            failures += oracle.check_cli(path, rng.choice([(), ("--no-inspect",), ("--bypass",)]))
        self.inputs += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        for failure in failures:
            if failure.signature in self.known:
                self.known_hits += 1
            elif failure.signature not in self.found:
                self.record(failure, cap, data, suffix, f"{self.seed}:{i}")

    def record(self, failure: oracle.Failure, cap: Capture | None, data: bytes, suffix: str,
               origin: str) -> None:  # fmt: skip
        name = oracle.signature_name(failure.signature)
        print(f"\nnew failure {name} (input {origin}):\n{failure}", flush=True)
        packets_before = len(cap.packets) if cap else None
        if cap is not None and failure.config is not None:
            cap = self.minimize(cap, failure)
            data = cap.to_bytes()
        path = self.crashers / f"{name}{suffix}"
        path.write_bytes(data)
        if failure.config is not None:
            again = oracle.check(path, [failure.config])
            confirmed = any(f.signature == failure.signature for f in again)
        else:
            args = () if failure.mode == "default" else tuple(failure.mode.split())
            confirmed = bool(oracle.check_cli(path, args))
        (self.crashers / f"{name}.txt").write_text(
            f"{failure}\n\ninput: seed {origin}; packets {packets_before} -> "
            f"{len(cap.packets) if cap else '?'} after minimizing\n"
            f"the written file still fails the same way: {confirmed}\n"
        )
        self.found[failure.signature] = {
            "file": f"{name}{suffix}", "origin": origin, "kind": failure.kind,
            "mode": failure.mode, "config": str(failure.config), "detail": failure.detail[:400],
        }  # fmt: skip

    def minimize(self, cap: Capture, failure: oracle.Failure) -> Capture:
        assert failure.config is not None
        scratch = self.out / "minimizing"
        scratch.mkdir(exist_ok=True)

        def failing(candidate: Capture) -> bool:
            path = oracle.write(candidate, scratch, "candidate")
            return any(
                f.signature == failure.signature
                for f in oracle.check(path, [failure.config])  # type: ignore[list-item]
            )

        return oracle.minimize(cap, failing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description="A fuzz campaign.")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cli-rate", type=float, default=0.02,
                    help="share of generated inputs also run through uinet-tap replay")  # fmt: skip
    ap.add_argument("--max-conns", type=int, default=6)
    ap.add_argument("--max-inputs", type=int, default=0, help="stop after this many (0: time)")
    args = ap.parse_args(argv)
    campaign = Campaign(args.out, args.seed, args.cli_rate, args.max_conns)
    start, cpu0 = time.monotonic(), cpu_seconds()
    deadline = start + 60 * args.minutes
    last_report = start
    i = 0
    while time.monotonic() < deadline and (not args.max_inputs or i < args.max_inputs):
        campaign.one(i)
        i += 1
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            print(f"{campaign.inputs} inputs, {len(campaign.found)} distinct failures", flush=True)
    cpu = cpu_seconds() - cpu0
    summary = {
        "seed": args.seed, "inputs": campaign.inputs, "by_kind": campaign.by_kind,
        "cli_runs": campaign.cli_runs, "wall_hours": round((time.monotonic() - start) / 3600, 4),
        "cpu_hours": round(cpu / 3600, 4), "distinct_failures": len(campaign.found),
        "known_failures": campaign.known_hits,
        "failures": campaign.found,
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for old in args.out.glob("current.*"):
        old.unlink()
    print(
        f"campaign seed {args.seed}: {campaign.inputs} inputs ({campaign.by_kind}, "
        f"{campaign.cli_runs} through the CLI), {cpu / 3600:.3f} CPU hours, "
        f"{len(campaign.found)} distinct failures ({campaign.known_hits} inputs hit a reported one)"
    )
    return 1 if campaign.found else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CaptureError as exc:  # a source capture the campaign cannot read
        sys.exit(f"error: {exc}")
