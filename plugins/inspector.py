"""Per-flow inspection: detection from the early bytes, the operator's rules, the plugins'
verdicts, the budget, and containment of plugin errors. Sans-I/O: bytes and times in,
verdicts out through a callback.

Order of a decision, each time data arrives while the flow is undecided:
1. detection: every plugin's ``detect`` (those whose ``ports`` hold the server port first),
   until one matches, all decline, or the budget is spent (then a port guess, ``guessed``);
2. the operator's rules, in order (address and port rules can decide at the SYN);
3. the plugins' ``decide``, in order: the first that does not abstain wins, and NEED_MORE
   keeps the flow open (beyond the budget: that is how a plugin waits for a later request);
4. nobody decides and nobody waits: the default verdict, once detection is done and both
   sides have spoken, or once the budget is spent.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from .api import Detection, FlowView, Match, Plugin, Verdict
from .policy import Policy
from .registry import Loaded

CALL_LIMIT = 1.0  # seconds one inspection step may spend in plugin code


class PluginTimeout(Exception):
    pass


class Inspection:
    """One flow's inspection state (a plain slotted class: one is made per connection)."""

    __slots__ = (
        "view",
        "pending",
        "early",
        "segments",
        "first_data",
        "detection_done",
        "matched",
        "verdict",
        "decided_by",
        "decider",
        "offsets",
        "errors",
        "waiting",
        "complete",
        "frozen",
        "context",
    )

    def __init__(self, view: FlowView, pending: list[Loaded]) -> None:
        self.view = view
        self.pending = pending  # detectors still to answer
        self.early = (bytearray(), bytearray())
        self.segments = [0, 0]
        self.first_data: float | None = None
        self.detection_done = False
        self.matched: Loaded | None = None
        self.verdict: Verdict | None = None
        self.decided_by: str | None = None
        self.decider: Any = None  # the Rule or Loaded plugin that decided (None: the default)
        self.offsets = (0, 0)
        self.errors: list[str] = []
        self.waiting = False  # a plugin asked for more
        self.complete = True  # the match's findings are all in
        self.frozen = [False, False]  # a direction's early bytes stopped at a gap
        self.context: Any = None  # the application's handle on the flow

    @property
    def decided(self) -> bool:
        return self.verdict is not None


class Inspector:
    def __init__(
        self,
        plugins: list[Loaded],
        policy: Policy | None = None,
        on_verdict: Callable[[Inspection], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.plugins = plugins
        self.policy = policy or Policy()
        self.on_verdict = on_verdict or (lambda insp: None)
        self.on_error = on_error or (lambda name, message: None)
        self.deciders = [p for p in plugins if type(p.plugin).decide is not Plugin.decide]
        self.detectors = [p for p in plugins if type(p.plugin).detect is not Plugin.detect]
        self.errors: Counter[str] = Counter()
        self._reported: set[str] = set()
        self._current: str | None = None
        self._timer = threading.current_thread() is threading.main_thread()
        self._untrusted = any(p.origin != "built-in" for p in plugins)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, view: FlowView) -> Inspection:
        return Inspection(view, self.order(view.server_port))

    def order(self, port: int) -> list[Loaded]:
        """The detectors in the order a flow to this server port asks them."""
        hinted = [d for d in self.detectors if port in d.plugin.ports]
        return hinted + [d for d in self.detectors if port not in d.plugin.ports]

    def started(self, insp: Inspection) -> None:
        """The flow's first packet was seen: rules on addresses and ports may act now."""
        if self.policy.rules or self.deciders:  # else nothing can decide before data
            self._step(insp)

    def data(self, insp: Inspection, direction: int, data: bytes, now: float) -> None:
        """In-order bytes of one direction (0 = c2s, 1 = s2c) while undecided."""
        view = insp.view
        cap = self.policy.budget.bytes
        early = insp.early[direction]
        if len(early) < cap and not insp.frozen[direction]:
            early += data[: cap - len(early)]
            if direction == 0:
                view.c2s = bytes(early)
            else:
                view.s2c = bytes(early)
        if direction == 0:
            view.c2s_bytes += len(data)
        else:
            view.s2c_bytes += len(data)
        if view.first_speaker is None:
            view.first_speaker = "client" if direction == 0 else "server"
        insp.segments[direction] += 1
        if insp.first_data is None:
            insp.first_data = now
        self._step(insp, now, direction)

    def gap(self, insp: Inspection, direction: int) -> None:
        """A hole in a direction: its early bytes stop there (bytes after a hole would be
        read as if they followed on), its totals go on counting."""
        insp.view.gaps = True
        insp.frozen[direction] = True

    def close(self, insp: Inspection) -> None:
        """The flow ended undecided: detection settles and the default applies."""
        if insp.decided:
            return
        if not insp.detection_done:
            self._finish_detection(insp)
        self._decide(insp, self.policy.default, "default")

    # -- the decision --------------------------------------------------------------------------

    def _budget_spent(self, insp: Inspection, now: float) -> bool:
        b = self.policy.budget
        return (
            max(len(insp.early[0]), len(insp.early[1])) >= b.bytes
            or all(insp.frozen)
            or max(insp.segments) >= b.packets
            or (insp.first_data is not None and now - insp.first_data >= b.seconds)
        )

    def _step(self, insp: Inspection, now: float | None = None, direction: int = -1) -> None:
        if insp.decided:
            return
        # Built-in detectors are trusted not to hang (and tested for it); a timer costs two
        # system calls a step, so it is armed only where third-party code may run.
        timer = self._timer and self._untrusted
        if timer:
            previous = signal.signal(signal.SIGALRM, self._alarm)
            signal.setitimer(signal.ITIMER_REAL, CALL_LIMIT)
        try:
            self._step_inner(insp, now, direction)
        except _PluginFailed as failed:
            insp.errors.append(failed.plugin)
            self._decide(insp, self.policy.default, "default")
        finally:
            if timer:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)

    def _step_inner(self, insp: Inspection, now: float | None, direction: int) -> None:
        view = insp.view
        spent = now is not None and self._budget_spent(insp, now)
        if not insp.detection_done and (view.c2s or view.s2c):
            self._detect(insp)
            if not insp.detection_done and spent:
                self._finish_detection(insp)
        elif insp.matched is not None and not insp.complete and direction >= 0:
            self._refine(insp)  # the findings still to come: a ServerHello, a status line
        rule, settled = self.policy.evaluate(view, insp.detection_done)
        if rule is not None:
            self._decide(insp, rule.action.verdict, rule.name, rule)  # type: ignore[arg-type]
            return
        if not settled:
            return
        insp.waiting = False
        for loaded in self.deciders:
            verdict = self._call(loaded, loaded.plugin.decide, view)
            if verdict is None:
                continue
            if verdict is Verdict.NEED_MORE:
                insp.waiting = True
                return
            if not isinstance(verdict, Verdict):
                raise self._fail(loaded.name, f"decide() returned {verdict!r}, not a Verdict")
            self._decide(insp, verdict, loaded.name, loaded)
            return
        both_spoke = bool(view.c2s) and bool(view.s2c)
        if (insp.detection_done and both_spoke and insp.complete) or spent:
            if not insp.detection_done:
                self._finish_detection(insp)
            self._decide(insp, self.policy.default, "default")

    def _detect(self, insp: Inspection) -> None:
        view = insp.view
        still: list[Loaded] = []
        for loaded in insp.pending:
            result = self._call(loaded, loaded.plugin.detect, view)
            if isinstance(result, Match):
                self._matched(insp, loaded, result)
                return
            if result is Detection.NEED_MORE:
                still.append(loaded)
            elif result is not Detection.NO_MATCH:
                raise self._fail(loaded.name, f"detect() returned {result!r}")
        insp.pending = still
        if not still:
            self._guess(insp)

    def _matched(self, insp: Inspection, loaded: Loaded, match: Match) -> None:
        view = insp.view
        insp.matched = loaded
        insp.detection_done = True
        insp.pending = []
        view.protocol = match.protocol
        view.confidence = "detected"
        view.findings = dict(match.findings)
        insp.complete = match.complete

    def _refine(self, insp: Inspection) -> None:
        """The matching detector sees the later bytes too (a ServerHello, a status line)."""
        assert insp.matched is not None
        result = self._call(insp.matched, insp.matched.plugin.detect, insp.view)
        if isinstance(result, Match) and result.protocol == insp.view.protocol:
            insp.view.findings.update(result.findings)
            insp.complete = result.complete

    def _finish_detection(self, insp: Inspection) -> None:
        """Out of budget (or the flow ended): the detectors still waiting get a last call,
        with ``flow.budget_spent`` set, to match on what there is; else a guess by port."""
        view = insp.view
        view.budget_spent = True
        for loaded in insp.pending:
            result = self._call(loaded, loaded.plugin.detect, view)
            if isinstance(result, Match):
                self._matched(insp, loaded, result)
                return
        self._guess(insp)

    def _guess(self, insp: Inspection) -> None:
        """No detector matched: name the protocol by the server port, as a guess (nDPI's
        MATCH_BY_PORT), or unknown."""
        view = insp.view
        insp.detection_done = True
        insp.pending = []
        for loaded in self.detectors:
            if view.server_port in loaded.plugin.ports:
                view.protocol = loaded.plugin.protocol or loaded.plugin.name
                view.confidence = "guessed"
                return
        view.protocol = "unknown"

    def _decide(self, insp: Inspection, verdict: Verdict, by: str, decider: Any = None) -> None:
        v = insp.view
        insp.verdict = verdict
        insp.decided_by = by
        insp.decider = decider
        insp.offsets = (v.c2s_bytes, v.s2c_bytes)
        self.on_verdict(insp)

    # -- containment ---------------------------------------------------------------------------

    def _call(self, loaded: Loaded, fn: Callable[[FlowView], Any], view: FlowView) -> Any:
        self._current = loaded.name
        try:
            return fn(view)
        except PluginTimeout:
            raise self._fail(loaded.name, f"ran longer than {CALL_LIMIT:g} s") from None
        except _PluginFailed:
            raise
        except Exception as exc:  # third-party code: contained, counted, reported once
            raise self._fail(loaded.name, f"{type(exc).__name__}: {exc}") from None
        finally:
            self._current = None

    def _fail(self, name: str, message: str) -> _PluginFailed:
        self.errors[name] += 1
        if name not in self._reported:
            self._reported.add(name)
            self.on_error(name, message)
        return _PluginFailed(name)

    def _alarm(self, signum: int, frame: object) -> None:
        if self._current is not None:
            raise PluginTimeout()


class _PluginFailed(Exception):
    def __init__(self, plugin: str) -> None:
        super().__init__(plugin)
        self.plugin = plugin
