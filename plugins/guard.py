"""Running third-party plugin code so that nothing it does ends the run.

``GUARD.call(name, fn, *args)`` runs ``fn`` (a plugin's detect or decide, a step of its
intercept handler, its import or constructor) and returns its value or raises
:class:`PluginFailed` with one line saying why; only KeyboardInterrupt goes through.

* Whatever it raises is caught, BaseException included (SystemExit, GeneratorExit, ...).
* On the main thread it runs under a time limit, by SIGALRM. :class:`PluginTimeout` is a
  BaseException, so a plugin's ``except Exception`` does not swallow it. A plugin that
  swallows it anyway (a bare ``except:``) gets it again every 50 ms, and from the second time
  on also at the first line it runs inside a handler that caught it (a trace function), which
  ends even ``while True: try: ... except: pass``. Once past its limit the call has failed,
  whatever it returns.
* Ctrl-C and SIGTERM that arrive while it runs are held back and delivered as soon as it
  returns, so a bare ``except:`` cannot swallow them either: the run still ends cleanly.
* Where it failed: :class:`PluginFailed` carries the ``file:line`` of the last frame of the
  traceback inside the plugin's own code (``home``: its files or package directories), and
  with ``keep_traces`` the traceback as text, made without running the plugin's code.

Containment of mistakes, not a sandbox: plugins are trusted code in our process (one can still
ignore SIGALRM or call os._exit). The handlers are installed on the first timed call and
checked on each (a test harness may have put its own back); while no call runs they hand
signals to the handlers they replaced, and a timer someone else had set is given back.
"""

from __future__ import annotations

import _signal
import contextlib
import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Generator
from types import FrameType, TracebackType
from typing import Any, TypeVar

from .findings import type_name

# signal.getsignal converts the handler to an enum through a caught ValueError: 4 µs a call,
# and the handlers are checked on every call into a plugin. Its C function costs 0.1 µs.
_getsignal = getattr(_signal, "getsignal", signal.getsignal)

CALL_LIMIT = 1.0  # seconds one call into a plugin may run
AGAIN = 0.05  # seconds between timeouts for a plugin that swallowed the first
_HELD = (signal.SIGINT, signal.SIGTERM)
_CLOSE_TRIES = 10

T = TypeVar("T")


class PluginTimeout(BaseException):
    """Raised into plugin code past its time limit. Not an Exception: a plugin's
    ``except Exception`` lets it through."""


class PluginFailed(Exception):
    """A plugin call failed; ``reason`` is one line, ``where`` the ``file:line`` it raised at
    (None: not known, or it did not raise), ``trace`` the traceback (with ``keep_traces``)."""

    def __init__(self, plugin: str, reason: str, where: str | None = None,
                 trace: str | None = None) -> None:  # fmt: skip
        super().__init__(f"{plugin}: {reason}")
        self.plugin = plugin
        self.reason = reason
        self.where = where
        self.trace = trace


class _Raised(Exception):
    """The plugin raised: its description, made while the timer still ran (``__str__`` is
    the plugin's code too), and where."""

    def __init__(self, reason: str, where: str | None, trace: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where
        self.trace = trace


_GUARD_FILE = os.path.abspath(__file__)


def _inside(path: str, home: tuple[str, ...]) -> bool:
    return any(path == h or path.startswith(h + os.sep) for h in home)


def shown_path(path: str) -> str:
    """A source file as a message names it: relative to the working directory when inside
    it (``plugins/foo.py``), else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith(os.pardir) else rel


def locate(tb: TracebackType | None, home: tuple[str, ...] = ()) -> str | None:
    """``file:line`` of the last frame in ``tb`` inside ``home`` (absolute paths: the plugin's
    files or package directories); without one there, of the last frame that is neither the
    guard's nor the interpreter's own (``<frozen importlib._bootstrap>``)."""
    in_home = anywhere = None
    while tb is not None:
        path = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if _inside(path, home):
            in_home = (path, tb.tb_lineno)
        elif path != _GUARD_FILE and not tb.tb_frame.f_code.co_filename.startswith("<"):
            anywhere = (path, tb.tb_lineno)
        tb = tb.tb_next
    found = in_home or anywhere
    return f"{shown_path(found[0])}:{found[1]}" if found else None


def failure_line(plugin: str, hook: str, where: str | None, reason: str) -> str:
    """``plugin 'foo' failed in detect (plugins/foo.py:42): KeyError: 'nope'``"""
    at = f" ({where})" if where else ""
    return f"plugin {plugin!r} failed in {hook}{at}: {reason}"


def trace_text(exc: BaseException, reason: str) -> str:
    """The traceback of ``exc`` as Python prints it, its last line ``reason`` (``describe``'s:
    ``str(exc)`` would run the plugin's code); the guard's own frames left out."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename) != _GUARD_FILE]  # fmt: skip
    return "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + reason


def one_line(text: str, limit: int = 200) -> str:
    """Text for a one-line message: whitespace runs as one space, other control characters as
    ``?``, at most ``limit`` characters."""
    text = " ".join(str.__str__(text)[: limit * 2].split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """``Type: message`` in one line; never raises (a plugin's ``__str__`` may)."""
    name = type_name(exc)
    try:
        text = str(exc)
        text = str.__str__(text)  # a str subclass's overrides do not run past here
    except KeyboardInterrupt:
        raise
    except BaseException:
        text = ""
    return one_line(f"{name}: {text}" if text.strip() else name)


class Guard:
    """The process's one guard: signal handlers and the interval timer are per process."""

    def __init__(self) -> None:
        self._current: str | None = None  # the plugin whose code runs now (timed calls)
        self.keep_traces = False  # PluginFailed.trace made (-v: the application logs it)
        self._armed = False  # our timer is set (a SIGALRM now is ours)
        self._timed_out = False
        self._enforcing = False
        self._only_in: str | None = None
        self._saved_trace: Any = None
        self._held: list[int] = []
        self._previous: dict[int, Any] = {}
        self._other_timer = (0.0, 0.0)
        self._armed_at = 0.0
        # Bound once: installed handlers are recognised by identity.
        self._alarm_handler = self._on_alarm
        self._interrupt_handler = self._on_interrupt
        self._enforcer_fn = self._enforcer

    def call(self, name: str, fn: Callable[..., T], *args: Any,
             limit: float | None = CALL_LIMIT, home: tuple[str, ...] = ()) -> T:  # fmt: skip
        """``fn(*args)`` as plugin ``name``'s code: its value, or PluginFailed. ``home``: the
        plugin's files or package directories (absolute), for where it failed."""
        if limit is None or self._current is not None or not _on_main_thread():
            # Untimed (loading), nested in a timed call, or off the main thread, where no
            # signal arrives: contained, but not timed.
            try:
                return fn(*args)
            except (KeyboardInterrupt, PluginTimeout):
                raise
            except BaseException as exc:
                raised = self._raised(exc, home)
                raise PluginFailed(name, raised.reason, raised.where, raised.trace) from None
        self._arm(limit)
        reason: str | None = None
        where = trace = None
        try:
            try:
                result = self._invoke(name, fn, args, home)
            except _Raised as raised:
                reason, where, trace = raised.reason, raised.where, raised.trace
            except PluginTimeout as timeout:
                self._timed_out = True
                where = locate(timeout.__traceback__, home)  # where it was when stopped
            if self._timed_out:
                reason = f"ran longer than {limit:g} s"
        finally:
            self._disarm()  # may raise KeyboardInterrupt: a Ctrl-C held back during the call
        if reason is not None:
            raise PluginFailed(name, reason, where, trace)
        return result

    def _raised(self, exc: BaseException, home: tuple[str, ...]) -> _Raised:
        reason = describe(exc)
        trace = trace_text(exc, reason) if self.keep_traces else None
        return _Raised(reason, locate(exc.__traceback__, home), trace)

    def close(self, name: str, coro: Coroutine[Any, Any, Any], limit: float = CALL_LIMIT) -> None:
        """End a plugin's coroutine for good. ``close()`` first; one that ignores it (catches
        GeneratorExit and awaits again) is thrown the timeout with the trace function on, so
        it leaves even a handler that catches everything; a few tries, each timed. Left
        suspended, it would run again when collected, outside any guard."""
        for attempt in range(_CLOSE_TRIES):
            if coro.cr_frame is None:  # type: ignore[attr-defined]
                return
            fn = coro.close if attempt == 0 else functools.partial(self._throw, coro)
            with contextlib.suppress(PluginFailed):
                self.call(name, fn, limit=limit)

    def _throw(self, coro: Coroutine[Any, Any, Any]) -> None:
        if _on_main_thread() and self._current is not None:
            # Only in the handler's own file: raised in a library's finally (asyncio.sleep
            # has one) it would switch tracing off before it reached the handler.
            self._enforce(coro.cr_frame, coro.cr_code.co_filename)  # type: ignore[attr-defined]
        coro.throw(PluginTimeout(f"plugin {self._current} is being stopped"))

    def _invoke(self, name: str, fn: Callable[..., T], args: tuple[Any, ...],
                home: tuple[str, ...] = ()) -> T:  # fmt: skip
        # The frame the trace function stops at; _current is set and cleared inside it, so
        # no timeout is raised into the guard's own code.
        try:
            self._current = name
            return fn(*args)
        except (KeyboardInterrupt, PluginTimeout):
            raise
        except BaseException as exc:
            raise self._raised(exc, home) from None
        finally:
            self._current = None

    # -- the timer and the handlers ----------------------------------------------------------

    def _arm(self, limit: float) -> None:
        self._install()
        self._timed_out = False
        self._armed = True
        self._armed_at = time.monotonic()
        # Repeating: a plugin that swallows the first timeout gets the next one.
        self._other_timer = signal.setitimer(signal.ITIMER_REAL, limit, AGAIN)

    def _disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._armed = False
        if self._enforcing:
            self._enforcing = False
            sys.settrace(self._saved_trace)
            self._saved_trace = None
        delay, interval = self._other_timer
        if delay > 0:  # someone else's timer (a test harness's): what was left of it
            left = delay - (time.monotonic() - self._armed_at)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), interval)
        if self._held:
            held, self._held = self._held, []
            for signum in held:
                self._pass_on(signum, None)

    def _install(self) -> None:
        if _getsignal(signal.SIGALRM) is not self._alarm_handler:
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._alarm_handler)
        for sig in _HELD:
            current = _getsignal(sig)
            if current is not self._interrupt_handler and callable(current):
                self._previous[sig] = current
                signal.signal(sig, self._interrupt_handler)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        handler = self._previous.get(signum)
        if callable(handler):
            handler(signum, frame)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._current is None:
            if not self._armed:
                self._pass_on(signum, frame)  # not ours: someone else's timer
            return
        if self._timed_out:
            self._enforce(frame)  # it swallowed the last one
        self._timed_out = True
        raise PluginTimeout(f"plugin {self._current} ran past its time limit")

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self._current is not None:
            if signum not in self._held:
                self._held.append(signum)  # delivered when the call returns
            return
        self._pass_on(signum, frame)

    def _enforce(self, frame: FrameType | None, only_in: str | None = None) -> None:
        """Trace the plugin's frames: a line run inside a handler that caught the timeout
        raises it again, out of that handler (``only_in``: in that file's code only)."""
        self._only_in = only_in
        if not self._enforcing:
            self._enforcing = True
            self._saved_trace = sys.gettrace()
        sys.settrace(self._enforcer_fn)
        while frame is not None and frame.f_code is not _INVOKE_CODE:
            frame.f_trace = self._enforcer_fn
            frame = frame.f_back

    def _enforcer(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self._current is None:
            return None
        if (event == "line" and type(sys.exc_info()[1]) is PluginTimeout
                and self._only_in in (None, frame.f_code.co_filename)):  # fmt: skip
            raise PluginTimeout(f"plugin {self._current} ran past its time limit")
        return self._enforcer_fn


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


GUARD = Guard()
_INVOKE_CODE = Guard._invoke.__code__


class GuardedCoroutine(Coroutine[Any, Any, Any]):
    """A plugin's coroutine (an intercept handler) run step by step under the guard: a step
    that holds the event loop past the limit fails the handler. Exceptions it raises pass
    through as they are (a reset, a cancellation), for the caller to sort out. After
    :meth:`stop` it is not resumed again: its next step closes it and raises CancelledError,
    so a handler that swallows cancellation cannot outlive the run."""

    def __init__(self, name: str, coro: Coroutine[Any, Any, Any],
                 limit: float = CALL_LIMIT) -> None:  # fmt: skip
        self.name = name
        self._coro = coro
        self._limit = limit
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def send(self, value: Any) -> Any:
        return self._step(self._coro.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:  # type: ignore[override]
        exc = typ if val is None else val
        return self._step(self._coro.throw, exc)

    def __next__(self) -> Any:
        return self.send(None)

    def close(self) -> None:
        GUARD.close(self.name, self._coro, self._limit)

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]

    def _step(self, method: Callable[[Any], Any], arg: Any) -> Any:
        if self._stopped:
            import asyncio  # only intercept handlers get here: replay need not load asyncio

            self.close()
            raise asyncio.CancelledError(f"intercept handler {self.name} stopped")
        ok, out = GUARD.call(self.name, _resume, method, arg, limit=self._limit)
        if ok:
            return out
        raise out


def _resume(method: Callable[[Any], Any], arg: Any) -> tuple[bool, Any]:
    try:
        return True, method(arg)
    except (KeyboardInterrupt, PluginTimeout):
        raise
    except BaseException as exc:  # StopIteration (done), a reset, a cancellation, a bug
        return False, exc
