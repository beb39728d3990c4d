"""Differential fuzzing of the two paths (the C data plane, the general path):
``gen`` makes hostile captures, ``oracle`` runs them through every path and option set and
reports any difference or exception, ``run`` drives long campaigns
(``python -m tests.fuzz.run --minutes 30 --seed 1 --out DIR``); ``crashers/`` holds every
input that ever failed, replayed by tests/test_differential.py."""

from __future__ import annotations

import sys
from pathlib import Path

# The frame builders (tests/frames.py) and the TLS samples live next to the tests.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
