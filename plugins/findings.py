"""Findings as JSON: what a flow record may hold, whatever a plugin put in its findings.

The rule (README, "Protocol plugins"):

* an object's keys are strings; a key of another kind becomes the JSON text of its value
  (``1`` -> ``"1"``, ``True`` -> ``"true"``), bytes as below; if two keys become the same
  text the first is kept;
* values are strings, integers (64-bit; a larger one becomes its decimal text), finite
  floats (NaN and the infinities become ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), booleans,
  null, lists (tuples too) and objects; subclasses (a StrEnum, an IntEnum) count as their base;
* bytes and bytearrays become text: UTF-8, each byte that is not UTF-8 written ``\\xNN``
  (Python's backslashreplace); a string with lone surrogates is escaped the same way;
* sets become lists sorted by their JSON text; anything else becomes ``"<TypeName>"`` (no
  ``repr()``: it would run the plugin's code, and object addresses would differ run to run);
* limits: 1,024 characters a string, 256 entries a list or object, 8 levels of nesting (the
  findings object is the first; a deeper container becomes ``"<nested too deep>"``), 8 KiB
  for the whole object as compact JSON; values are kept in order until the next would pass
  that, the rest is dropped. A record whose findings were cut says ``findings_truncated``.

Sans-I/O, and it never runs code of the objects it reads: types are checked with ``type()``,
containers read through the base type's own methods (``dict.items``), so a hostile subclass's
overrides do not run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Limits:
    string: int | None = 1024  # characters a string (keys too)
    items: int | None = 256  # entries a list or object
    depth: int = 8  # nesting levels, the findings object being the first
    size: int | None = 8192  # bytes of the whole value as compact JSON


FINDINGS = Limits()


@dataclass(frozen=True, slots=True)
class Sanitized:
    value: Any
    truncated: bool  # something was cut or dropped to keep within the limits
    problem: str | None  # the first thing that was not JSON as it was, or was cut; None: clean


_DROP = object()  # a value that did not fit in what was left of the size limit
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_QUALNAME = vars(type)["__qualname__"]  # read the type's own name: no metaclass override runs


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, read without running any of its code."""
    name = _QUALNAME.__get__(type(value), type)
    return name if type(name) is str else "object"


def sanitize(value: Any, limits: Limits = FINDINGS) -> Sanitized:
    """Any Python value as a JSON-serializable one within ``limits`` (see the module doc)."""
    walk = _Walk(limits)
    out = walk.value(value, 1)
    if out is _DROP:
        out = None
    return Sanitized(out, walk.truncated, walk.problem)


def sanitize_findings(findings: Any, limits: Limits = FINDINGS) -> Sanitized:
    """Findings are an object: anything else becomes ``{}`` (and is a problem)."""
    if not issubclass(type(findings), dict):
        return Sanitized({}, True, f"findings are of type {type_name(findings)}, not dict")
    return sanitize(findings, limits)


def record_findings(findings: Any, plain: bool = False) -> tuple[dict[str, Any], bool]:
    """The findings a record carries, and whether they were cut. Once a flow: findings that
    are already plain and small (every built-in detector's) are returned as they are,
    without a copy; the rest go through :func:`sanitize_findings`. ``plain``: the caller
    built them and knows they are (uinet_tap/native.py checks as it builds)."""
    if plain or _plain(findings):
        try:
            if len(orjson.dumps(findings)) <= FINDINGS.size:  # type: ignore[operator]
                return findings, False
        except orjson.JSONEncodeError:
            pass  # a surrogate or a 65-bit integer: the slow way converts it
    clean = sanitize_findings(findings)
    return clean.value, clean.truncated


def _plain(findings: Any) -> bool:
    """Exact dict of str keys to short strings, 64-bit-ish ints, finite floats, booleans,
    None, or short lists of those: the shapes every built-in detector gives."""
    if type(findings) is not dict or len(findings) > FINDINGS.items:  # type: ignore[operator]
        return False
    for k, v in findings.items():
        if type(k) is not str or len(k) > FINDINGS.string:  # type: ignore[operator]
            return False
        if type(v) is list:
            if len(v) > FINDINGS.items or not all(map(_plain_scalar, v)):  # type: ignore[operator]
                return False
        elif not _plain_scalar(v):
            return False
    return True


def _plain_scalar(v: Any) -> bool:
    t = type(v)
    if t is str:
        return len(v) <= FINDINGS.string  # type: ignore[operator]
    if t is float:
        return math.isfinite(v)
    return t is int or t is bool or v is None


class _Walk:
    """One sanitizing pass: the size left, whether it ran out, what was cut."""

    __slots__ = ("limits", "left", "full", "truncated", "problem", "path")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.left = limits.size  # None: unbounded
        self.full = False
        self.truncated = False
        self.problem: str | None = None
        self.path: list[str | int] = []

    # -- bookkeeping -----------------------------------------------------------------------

    def note(self, what: str, cut: bool = False) -> None:
        if cut:
            self.truncated = True
        if self.problem is None:
            where = "findings" + "".join(
                f"[{p!r}]" if len(str(p)) <= 40 else "[...]" for p in self.path
            )
            self.problem = f"{where} {what}"

    def take(self, n: int) -> bool:
        """Reserve n bytes of the size limit; False (and from then on) when they do not fit."""
        if self.left is None:
            return True
        if self.full or n > self.left:
            if not self.full:
                self.full = True
                self.note(f"is past the {self.limits.size:,}-byte limit", cut=True)
            return False
        self.left -= n
        return True

    def give(self, n: int) -> None:
        if self.left is not None:
            self.left += n

    def size(self, v: Any) -> int:
        return len(orjson.dumps(v)) if self.left is not None else 0

    # -- values ----------------------------------------------------------------------------

    def value(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:
            return self.fit(self.text(v))
        if v is None or t is bool:
            return v if self.take(5 if v is False else 4) else _DROP
        if issubclass(t, int):
            return self.fit(self.integer(v))
        if issubclass(t, float):
            return self.fit(self.real(v))
        if issubclass(t, str):
            return self.fit(self.text(str.__str__(v)))
        if issubclass(t, bytes | bytearray):
            self.note(f"is of type {type_name(v)}, not JSON")
            return self.fit(self.text(self.decode(v)))
        if issubclass(t, dict | list | tuple | set | frozenset):
            if depth > self.limits.depth:
                self.note("is nested too deep", cut=True)
                return self.fit("<nested too deep>")
            if issubclass(t, dict):
                return self.mapping(v, depth)
            return self.sequence(v, depth, t)
        self.note(f"is of type {type_name(v)}, not JSON")
        return self.fit(self.text(f"<{type_name(v)}>"))

    def fit(self, v: Any) -> Any:
        return v if self.take(self.size(v)) else _DROP

    def text(self, s: str) -> str:
        cap = self.limits.string
        if cap is not None and len(s) > cap:
            s = s[:cap]
            self.note(f"is a string over {cap:,} characters", cut=True)
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: not UTF-8, orjson refuses them
                s = s.encode("utf-8", "backslashreplace").decode("utf-8")
                self.note("is a string with lone surrogates, not UTF-8")
                if cap is not None and len(s) > cap:
                    s = s[:cap]
                    self.truncated = True
        return s

    def decode(self, b: bytes | bytearray) -> str:
        cap = self.limits.string
        stop = None if cap is None else 4 * cap + 4  # enough bytes for more than cap characters
        base: Any = bytes if issubclass(type(b), bytes) else bytearray
        head = base.__getitem__(b, slice(0, stop))  # the base type's own slicing: no override
        return base.decode(head, "utf-8", "backslashreplace")  # type: ignore[no-any-return]

    def integer(self, v: int) -> int | str:
        v = int.__int__(v)  # an IntEnum's value, not its overrides
        if _I64_MIN <= v <= _U64_MAX:
            return v
        self.note("is an integer past 64 bits")
        if v.bit_length() > 3000:  # str() refuses past 4,300 digits; say what it was
            return f"<int of {v.bit_length():,} bits>"
        return self.text(str(v))

    def real(self, v: float) -> float | str:
        v = float.__float__(v)
        if math.isfinite(v):
            return v
        self.note(f"is {v!r}, not JSON")
        return _NON_FINITE.get(v, "NaN")

    def key(self, k: Any) -> str:
        t = type(k)
        if t is str:
            return self.text(k)
        if issubclass(t, str):
            return self.text(str.__str__(k))
        self.note(f"has a key of type {type_name(k)}, not str")
        if issubclass(t, bytes | bytearray):
            return self.text(self.decode(k))
        if k is None or t is bool:
            return orjson.dumps(k).decode()
        if issubclass(t, int):
            v = int.__int__(k)
            return str(v) if v.bit_length() <= 3000 else f"<int of {v.bit_length():,} bits>"
        if issubclass(t, float):
            f = float.__float__(k)
            return orjson.dumps(f).decode() if math.isfinite(f) else _NON_FINITE.get(f, "NaN")
        return f"<{type_name(k)}>"

    def mapping(self, v: dict, depth: int) -> Any:
        if not self.take(2):
            return _DROP
        out: dict[str, Any] = {}
        cap = self.limits.items
        for i, (k, item) in enumerate(dict.items(v)):  # the dict's own storage: no overrides
            if cap is not None and i >= cap:
                self.note(f"has over {cap} entries", cut=True)
                break
            if self.full:
                break
            key = self.key(k)
            if key in out:
                self.note(f"has two keys written {key[:40]!r}", cut=True)
                continue
            head = self.size(key) + 1 + (1 if out else 0)  # "key": and the comma before it
            if not self.take(head):
                break
            self.path.append(key)
            x = self.value(item, depth + 1)
            self.path.pop()
            if x is _DROP:
                self.give(head)
                break
            out[key] = x
        return out

    def sequence(self, v: Any, depth: int, t: type) -> Any:
        cap = self.limits.items
        stop = None if cap is None else cap + 1
        is_set = issubclass(t, set | frozenset)
        base: Any
        if is_set:
            base = set if issubclass(t, set) else frozenset
            items = list(itertools.islice(base.__iter__(v), stop))
            self.note(f"is of type {type_name(v)}, not JSON")
        else:
            base = list if issubclass(t, list) else tuple
            items = list(base.__getitem__(v, slice(0, stop)))
        if cap is not None and len(items) > cap:
            del items[cap:]
            self.note(f"has over {cap} entries", cut=True)
        if not self.take(2):
            return _DROP
        out: list[Any] = []
        for i, item in enumerate(items):
            if self.full:
                break
            comma = 1 if out else 0
            if not self.take(comma):
                break
            self.path.append(i)
            x = self.value(item, depth + 1)
            self.path.pop()
            if x is _DROP:
                self.give(comma)
                break
            out.append(x)
        if is_set:
            out.sort(key=orjson.dumps)
        return out
