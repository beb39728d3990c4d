#!/usr/bin/env python3
"""Regenerate captures/evasion/: crafted TCP client segments against a REAL Linux receiver
(run as root).  For every case NAME it writes NAME.pcap (both directions, as the server's
veth saw them) and NAME.json (the truth: what the server application read with recv(), the
urgent byte it read with MSG_OOB, how the stream ended; schema in captures/README.md).

    sudo .venv/bin/python captures/make_evasion.py                       # named + random
    sudo .venv/bin/python captures/make_evasion.py --only urg-one-byte --out /tmp/x
    sudo .venv/bin/python captures/make_evasion.py --named no --random 100 --seed 3

The cases are in tests/evasion_cases.py, the machinery in tests/evasionlib.py.
Needs: iproute2, ethtool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from evasion_cases import named_cases, random_cases  # noqa: E402
from evasionlib import Topology, run_case  # noqa: E402
from frames import write_pcap  # noqa: E402
from netnslib import NetnsSession, netns_available  # noqa: E402

BASE_PORT = 41000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "evasion"))
    ap.add_argument("--only", action="append", default=[], help="case name (repeatable)")
    ap.add_argument("--named", choices=("yes", "no"), default="yes")
    ap.add_argument("--random", type=int, default=24, help="random cases (default 24)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    ok, why = netns_available()
    if not ok:
        print(f"make_evasion: {why}", file=sys.stderr)
        return 2
    cases = (named_cases() if a.named == "yes" else []) + random_cases(a.random, a.seed)
    if a.only:
        cases = [c for c in cases if c.name in a.only]
        missing = set(a.only) - {c.name for c in cases}
        if missing:
            print(f"make_evasion: unknown case(s) {sorted(missing)}", file=sys.stderr)
            return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with NetnsSession("eva") as session:
        topo = Topology(session)
        try:
            for i, case in enumerate(cases):
                frames, truth = run_case(topo, case, BASE_PORT + i)
                truth["capture"] = f"{case.name}.pcap"
                write_pcap(out / f"{case.name}.pcap", frames)
                (out / f"{case.name}.json").write_text(json.dumps(truth, indent=1) + "\n")
                oob = f" oob={','.join(truth['oob'])}" if truth["oob"] else ""
                note = f"  NOTES: {truth['notes']}" if truth["notes"] else ""
                print(f"{case.name:40} {truth['c2s']['ascii']!r} end={truth['end']}{oob}{note}")
        finally:
            topo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
