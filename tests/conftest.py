"""Shared fixtures.  ``topology``: factory for the inline-tool test topology
(tests/inlinelib.py), skipped with a reason where network namespaces are unavailable."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: a wall-clock limit on a shared 2-core machine is a timed test, and
# it flakes (a property example that took 250 ms under load failed a run).
settings.register_profile("uinet-tap", deadline=None)
settings.load_profile("uinet-tap")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inlinelib import (  # noqa: E402
    NS_TAG,
    Topology,
    build_topology,
    sweep_stale_namespaces,
    teardown,
)
from netnslib import NetnsSession, netns_available  # noqa: E402

TOPOLOGY_NEEDS = ("ip", "ethtool", "ss", "tcpdump")


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Callable[..., Topology]]:
    """``topology(**build_topology_kwargs) -> Topology``; every topology built is torn
    down (processes by PID, namespaces) after the test, and teardown fails if a namespace
    survived."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"inline topology needs network namespaces: {why}")
    missing = [p for p in TOPOLOGY_NEEDS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"inline topology needs {', '.join(missing)}")
    sweep_stale_namespaces()
    sessions: list[NetnsSession] = []

    def make(**kw) -> Topology:
        s = NetnsSession(f"{NS_TAG}{len(sessions)}")
        sessions.append(s)
        kw.setdefault("workdir", tmp_path / f"topo{len(sessions)}")
        return build_topology(s, **kw)

    try:
        yield make
    finally:
        left = []
        for s in reversed(sessions):
            left += teardown(s)
        assert not left, f"namespaces survived teardown: {left}"
