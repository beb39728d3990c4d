"""A fuzz campaign: ``python -m tests.fuzz.run --minutes 30 --seed 1 --out DIR``.

Inputs, until the time is up: mostly captures from the structured generator (gen.py), and
now and then a shipped capture (captures/, the public corpus in ../shared/corpus) mutated
packet by packet or byte by byte in the file itself (headers, block lengths, truncation).
Each goes through the oracle (oracle.py: three paths, every inspection mode, the defaults
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
    return "file", None, mutate_file(rng, src.to_bytes()), src.suffix


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
            if failure.signature not in self.found:
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
        "failures": campaign.found,
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for old in args.out.glob("current.*"):
        old.unlink()
    print(
        f"campaign seed {args.seed}: {campaign.inputs} inputs ({campaign.by_kind}, "
        f"{campaign.cli_runs} through the CLI), {cpu / 3600:.3f} CPU hours, "
        f"{len(campaign.found)} distinct failures"
    )
    return 1 if campaign.found else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CaptureError as exc:  # a source capture the campaign cannot read
        sys.exit(f"error: {exc}")
