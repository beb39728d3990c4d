"""The live view waits while the capture is behind its traffic: a snapshot and a draw take
tens of milliseconds, and taken as often as the view is due they cost the capture frames
(the bench at 850 k frames/s: 6-25 % dropped with the view, none without it). Behind, the
view is updated once a second; caught up, whenever it is due."""

from __future__ import annotations

import io
import time

import pytest

from uinet_tap.snapshot import Snapshot
from uinet_tap.watch import VIEW_WAITS_BEHIND, Watch


class Backend:
    iface = "fake0"

    def __init__(self, behind: bool) -> None:
        self._behind = behind

    def step(self) -> None:
        time.sleep(0.005)

    def behind(self) -> bool:
        return self._behind

    def snapshot(self) -> Snapshot:
        return Snapshot(0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ())

    def finish(self) -> dict:
        return {}


class View:
    """Always due; counts the updates."""

    def __init__(self) -> None:
        self.updates: list[float] = []

    def due(self) -> bool:
        return True

    def update(self, snapshot: Snapshot) -> None:
        self.updates.append(time.monotonic())

    def poll_keys(self) -> bool:
        return False


@pytest.mark.parametrize("behind", [True, False], ids=["behind", "caught-up"])
def test_the_view_waits_while_the_capture_is_behind(behind: bool):
    view = View()
    runner = Watch(Backend(behind), tui=True, duration=2.5, err=io.StringIO())
    runner._loop(view)
    if behind:
        assert len(view.updates) == 2, view.updates  # at 1 s and 2 s
        gaps = [b - a for a, b in zip(view.updates, view.updates[1:], strict=False)]
        assert all(g >= VIEW_WAITS_BEHIND - 0.01 for g in gaps), gaps
    else:
        assert len(view.updates) > 100, len(view.updates)
