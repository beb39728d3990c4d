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

Containment: a call into a third-party plugin runs under the guard (guard.py: anything it
raises, a time limit, Ctrl-C held back) and is then checked: detect() must give NEED_MORE,
NO_MATCH or a Match whose findings are JSON within the limits as they are (findings.py),
decide() a Verdict or None, and the view must come back as it was given (every attribute,
and the findings' JSON text; a changed view is put back). Any failure costs the plugin its
say on the flow: the flow gets the default verdict, the failure is counted per plugin and on
the flow, and the first failure of each plugin is reported (``on_error``, one line). The
built-in detectors are trusted: their calls are contained but not timed or checked.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
from collections import Counter
from collections.abc import Callable
from types import FunctionType, MethodType
from typing import Any

import orjson

from .api import MAX_REASON, Decision, Detection, FlowView, Match, Verdict
from .findings import sanitize_findings, type_name
from .guard import (
    GUARD,
    PluginFailed,
    describe,
    failure_line,
    locate,
    one_line,
    shown_path,
    trace_text,
)
from .policy import Policy
from .registry import NAME_LIMIT, Loaded

# Every attribute of the view, read in one call: compared by identity after each
# third-party call, put back if changed.
_SLOTS = tuple(f.name for f in dataclasses.fields(FlowView))
_FIELDS = operator.attrgetter(*_SLOTS)
# A failure's traceback is a log record (debug): the application decides where it goes.
_log = logging.getLogger("uinet_tap.plugins")


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
        "reason",
        "offsets",
        "errors",
        "failures",
        "waiting",
        "complete",
        "frozen",
        "context",
        "findings_json",
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
        self.reason: str | None = None  # the deciding plugin's, when it gave one
        self.offsets = (0, 0)
        self.errors: list[str] = []
        self.failures: list[dict] = []  # each failure here: plugin, hook, at (file:line), error
        self.waiting = False  # a plugin asked for more
        self.complete = True  # the match's findings are all in
        self.frozen = [False, False]  # a direction's early bytes stopped at a gap
        self.context: Any = None  # the application's handle on the flow
        # The view's findings as JSON, kept while third-party plugins run: one changed in
        # place is told by its text (None: not JSON, not compared).
        self.findings_json: bytes | None = b"{}"

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
        self.deciders = [p for p in plugins if p.decide is not None]
        self.detectors = [p for p in plugins if p.detect is not None]
        self.errors: Counter[str] = Counter()
        self.first_failures: dict[str, dict] = {}  # each plugin's first failure (--stats)
        self._untrusted = any(not p.trusted for p in plugins)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, view: FlowView) -> Inspection:
        return Inspection(view, self.order(view.server_port))

    def order(self, port: int) -> list[Loaded]:
        """The detectors in the order a flow to this server port asks them."""
        hinted = [d for d in self.detectors if port in d.ports]
        return hinted + [d for d in self.detectors if port not in d.ports]

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
            try:
                self._finish_detection(insp)
            except _PluginFailed as failed:  # its last call failed: the default all the same
                insp.errors.append(failed.plugin)
                insp.failures.append(failed.failure)
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
        try:
            self._step_inner(insp, now, direction)
        except _PluginFailed as failed:
            insp.errors.append(failed.plugin)
            insp.failures.append(failed.failure)
            self._decide(insp, self.policy.default, "default")

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
            answer: Any = self._call(insp, loaded, loaded.decide, "decide")  # type: ignore[arg-type]
            if answer is None:
                continue
            reason = None
            if type(answer) is Decision:
                if type(answer.reason) is not str:
                    raise self._fail(loaded.name, f"a Decision's reason is {_a(answer.reason)}",
                                     "decide", _defined_at(loaded.decide))  # fmt: skip
                answer, reason = answer.verdict, answer.reason[:MAX_REASON]
            if type(answer) is not Verdict:
                raise self._fail(
                    loaded.name,
                    f"decide() returned {_a(answer)}, not a Verdict, Decision or None",
                    "decide",
                    _defined_at(loaded.decide),
                )
            verdict: Verdict = answer
            if verdict is Verdict.NEED_MORE:
                insp.waiting = True
                return
            insp.reason = reason
            self._decide(insp, verdict, loaded.name, loaded)
            return
        both_spoke = bool(view.c2s) and bool(view.s2c)
        if (insp.detection_done and both_spoke and insp.complete) or spent:
            if not insp.detection_done:
                self._finish_detection(insp)
            self._decide(insp, self.policy.default, "default")

    def _detect(self, insp: Inspection) -> None:
        still: list[Loaded] = []
        for loaded in insp.pending:
            result = self._detect_call(insp, loaded)
            if type(result) is Match:
                self._matched(insp, loaded, result)
                return
            if result is Detection.NEED_MORE:
                still.append(loaded)
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
        self._keep_findings(insp)

    def _refine(self, insp: Inspection) -> None:
        """The matching detector sees the later bytes too (a ServerHello, a status line)."""
        assert insp.matched is not None
        result = self._detect_call(insp, insp.matched)
        if type(result) is Match and result.protocol == insp.view.protocol:
            insp.view.findings.update(result.findings)
            insp.complete = result.complete
            if not insp.matched.trusted:  # the findings together must stay within the limits
                merged = sanitize_findings(insp.view.findings)
                if merged.problem is not None:
                    raise self._fail(insp.matched.name, f"detect() gave findings that, with "
                                     f"the earlier ones, are not JSON within the limits: "
                                     f"{merged.problem}", "detect",
                                     _defined_at(insp.matched.detect))  # fmt: skip
            self._keep_findings(insp)

    def _finish_detection(self, insp: Inspection) -> None:
        """Out of budget (or the flow ended): the detectors still waiting get a last call,
        with ``flow.budget_spent`` set, to match on what there is; else a guess by port."""
        view = insp.view
        view.budget_spent = True
        for loaded in insp.pending:
            result = self._detect_call(insp, loaded)
            if type(result) is Match:
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
            if view.server_port in loaded.ports:
                view.protocol = loaded.protocol
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

    def _detect_call(self, insp: Inspection, loaded: Loaded) -> Match | Detection:
        """detect(), its answer checked: NEED_MORE, NO_MATCH or a Match (a third party's with
        a short protocol name and findings that are JSON within the limits as they are)."""
        result = self._call(insp, loaded, loaded.detect, "detect")  # type: ignore[arg-type]
        if result is Detection.NEED_MORE or result is Detection.NO_MATCH:
            return result  # type: ignore[no-any-return]
        # A wrong answer raised nothing: the place named is the hook's definition.
        if type(result) is not Match:
            raise self._fail(loaded.name, f"detect() returned {_a(result)}, "
                             "not a Match, NEED_MORE or NO_MATCH", "detect",
                             _defined_at(loaded.detect))  # fmt: skip
        if loaded.trusted:
            return result
        protocol, complete = result.protocol, result.complete
        if (type(protocol) is not str or not protocol or len(protocol) > NAME_LIMIT
                or not protocol.isprintable()):  # fmt: skip
            raise self._fail(loaded.name, f"detect() named the protocol {_a(protocol)}, not a "
                             f"printable string of 1 to {NAME_LIMIT} characters", "detect",
                             _defined_at(loaded.detect))  # fmt: skip
        if type(complete) is not bool:
            raise self._fail(loaded.name, f"detect() gave complete={_a(complete)}, not a bool",
                             "detect", _defined_at(loaded.detect))  # fmt: skip
        clean = sanitize_findings(result.findings)
        if clean.problem is not None:
            raise self._fail(loaded.name, "detect() gave findings that are not JSON within the "
                             f"limits: {clean.problem}", "detect",
                             _defined_at(loaded.detect))  # fmt: skip
        return Match(protocol, clean.value, loaded.name, complete)

    def _call(self, insp: Inspection, loaded: Loaded, fn: Callable[[FlowView], Any],
              hook: str) -> Any:  # fmt: skip
        view = insp.view
        if loaded.trusted:
            try:
                return fn(view)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a bug in a built-in detector: contained the same way
                reason = describe(exc)
                trace = trace_text(exc, reason) if GUARD.keep_traces else None
                raise self._fail(
                    loaded.name, reason, hook, locate(exc.__traceback__, loaded.home), trace
                ) from None
        before = _FIELDS(view)
        try:
            result = GUARD.call(loaded.name, fn, view, home=loaded.home)
        except PluginFailed as failed:
            self._put_back(insp, before)  # the failure says why; the view must still be right
            raise self._fail(
                loaded.name, failed.reason, hook, failed.where or _defined_at(fn), failed.trace
            ) from None
        changed = self._put_back(insp, before)
        if changed is not None:
            raise self._fail(loaded.name, f"changed {changed} of the flow view it was given "
                             "(the view is read-only)", hook, _defined_at(fn))  # fmt: skip
        return result

    def _put_back(self, insp: Inspection, before: tuple[Any, ...]) -> str | None:
        """What a third-party call changed in the view (None: nothing), put back."""
        view = insp.view
        try:
            after = _FIELDS(view)
        except AttributeError:  # an attribute deleted
            after = ()
        changed = None
        if len(after) != len(before) or not all(map(operator.is_, before, after)):
            changed = next((f"flow.{name}" for name, old, new in zip(_SLOTS, before, after,
                            strict=False) if old is not new), "an attribute")  # fmt: skip
        if changed is not None:
            for name, old in zip(_SLOTS, before, strict=True):
                setattr(view, name, old)
        kept = insp.findings_json
        if kept is not None and _json(view.findings) != kept:
            view.findings = orjson.loads(kept)
            changed = changed or "flow.findings"
        return changed

    def _keep_findings(self, insp: Inspection) -> None:
        if self._untrusted:
            insp.findings_json = _json(insp.view.findings)

    def count_failure(self, name: str, failure: dict, trace: str | None = None) -> None:
        """Count a plugin's failure (``failure``: hook, at, error); report the first of each
        plugin: one line, and at debug level its traceback (``trace``, when there is one)."""
        self.errors[name] += 1
        if name not in self.first_failures:
            self.first_failures[name] = {k: failure[k] for k in ("hook", "at", "error")}
            self.on_error(name, failure_line(name, failure["hook"], failure["at"],
                                             failure["error"]))  # fmt: skip
            if trace is not None:
                # Logged, not printed: the application puts it on stderr with -v (logs.py).
                _log.debug("plugin %r failed in %s:\n%s", name, failure["hook"], trace)

    def _fail(self, name: str, message: str, hook: str, where: str | None = None,
              trace: str | None = None) -> _PluginFailed:  # fmt: skip
        failure = {"plugin": name, "hook": hook, "at": where, "error": one_line(message)}
        self.count_failure(name, failure, trace)
        return _PluginFailed(name, failure)


def _json(findings: Any) -> bytes | None:
    try:
        return orjson.dumps(findings)
    except orjson.JSONEncodeError:
        return None


def _a(value: Any) -> str:
    """A returned value in a message, without running its code."""
    if value is None or type(value) is bool:
        return repr(value)
    if type(value) is str:
        return repr(one_line(value, 40))
    return f"a {type_name(value)}"


class _PluginFailed(Exception):
    def __init__(self, plugin: str, failure: dict) -> None:
        super().__init__(plugin)
        self.plugin = plugin
        self.failure = failure


def _defined_at(fn: Any) -> str | None:
    """``file:line`` of a hook's ``def`` (a wrong answer raises nothing to point at); read
    off the function object, so none of the plugin's code runs. None for other callables."""
    func = fn.__func__ if type(fn) is MethodType else fn
    if type(func) is not FunctionType:
        return None
    code = func.__code__
    return f"{shown_path(os.path.abspath(code.co_filename))}:{code.co_firstlineno}"
