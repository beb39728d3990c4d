"""Findings as JSON (plugins/findings.py): whatever a plugin put in its findings, a record gets
something orjson writes, within the limits, and plain findings pass through unchanged."""

from __future__ import annotations

import datetime
import decimal
import enum
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uinet_tap.plugins.findings import (
    FINDINGS,
    record_findings,
    sanitize,
    sanitize_findings,
)


def depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(depth, v), default=0)
    return 0


def within_limits(v: Any) -> None:
    """Exactly what the rule promises: JSON types only, and every limit kept."""
    if isinstance(v, dict):
        assert type(v) is dict and len(v) <= FINDINGS.items
        for k, x in v.items():
            assert type(k) is str and len(k) <= FINDINGS.string
            within_limits(x)
    elif isinstance(v, list):
        assert type(v) is list and len(v) <= FINDINGS.items
        for x in v:
            within_limits(x)
    elif isinstance(v, str):
        assert type(v) is str and len(v) <= FINDINGS.string
    elif isinstance(v, float):
        assert math.isfinite(v)
    elif isinstance(v, int) and not isinstance(v, bool):
        assert type(v) is int and -(1 << 63) <= v < (1 << 64)
    else:
        assert v is None or type(v) is bool, v


class Label(enum.StrEnum):
    A = "a"


class Level(enum.IntEnum):
    HIGH = 7


class LoudStr(str):
    """Its overrides must never run: the sanitizer reads the base type's value."""

    def __str__(self) -> str:
        raise AssertionError("ran a str subclass's __str__")

    def __len__(self) -> int:
        raise AssertionError("ran a str subclass's __len__")


class LoudDict(dict):
    def items(self):  # type: ignore[no-untyped-def,override]
        raise AssertionError("ran a dict subclass's items()")

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("ran a dict subclass's __iter__")


class LoudList(list):
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("ran a list subclass's __iter__")

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        raise AssertionError("ran a list subclass's __getitem__")


class Opaque:
    """Counts the calls of its repr (the sanitizer must make none; hypothesis may make some
    to show a strategy or an example)."""

    calls = 0

    def __repr__(self) -> str:
        Opaque.calls += 1
        return "Opaque()"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(),  # NaN and the infinities included
    st.text(st.characters(blacklist_categories=())),  # lone surrogates included
    st.text(min_size=1000, max_size=3000),
    st.binary(),
    st.binary(min_size=4000, max_size=5000),
    st.builds(bytearray, st.binary()),
    st.builds(LoudStr, st.text()),
    st.sampled_from(
        [
            Label.A,
            Level.HIGH,
            complex(1, 2),
            decimal.Decimal("1.5"),
            datetime.date(2026, 1, 1),
            Opaque(),
            object(),
            Ellipsis,
        ]
    ),  # fmt: skip
)
hashables = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(),
    st.tuples(st.integers(), st.text()),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(st.integers(), min_size=250, max_size=300),
        st.builds(tuple, st.lists(inner, max_size=4)),
        st.frozensets(hashables, max_size=5),
        st.sets(hashables, max_size=5),
        st.dictionaries(hashables, inner, max_size=6),
        st.builds(LoudDict, st.dictionaries(st.text(), inner, max_size=4)),
        st.builds(LoudList, st.lists(inner, max_size=4)),
    ),
    max_leaves=60,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_any_value_sanitizes_to_json_within_the_limits(value: Any) -> None:
    calls = Opaque.calls
    clean = sanitize(value)
    assert Opaque.calls == calls, "the sanitizer ran an object's __repr__"
    text = orjson.dumps(clean.value)
    assert len(text) <= FINDINGS.size  # type: ignore[operator]
    assert depth(clean.value) <= FINDINGS.depth
    within_limits(clean.value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(hashables, values, max_size=4))
def test_sanitized_findings_are_clean_for_a_second_pass(findings: dict) -> None:
    """What comes out is JSON within the limits as it is: sanitizing it again changes
    nothing and finds no problem. (A plugin's findings are checked exactly so.)"""
    once = sanitize_findings(findings)
    twice = sanitize_findings(once.value)
    assert twice.problem is None and not twice.truncated
    assert twice.value == once.value
    assert type(once.value) is dict


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=1024),
)  # fmt: skip
plain_findings = st.dictionaries(
    st.text(max_size=30),
    st.one_of(json_scalars, st.lists(json_scalars, max_size=10)),
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(plain_findings)
def test_plain_findings_pass_unchanged_the_fast_way_and_the_slow_way(findings: dict) -> None:
    """A record's findings are made the fast way when they are plain (every built-in
    detector's): it must give what the full rule gives."""
    fast, cut = record_findings(findings)
    slow = sanitize_findings(findings)
    assert fast == slow.value and cut == slow.truncated
    if len(orjson.dumps(findings)) <= FINDINGS.size:  # type: ignore[operator]
        assert fast is findings and not cut and slow.problem is None


def test_built_in_shapes_are_not_copied() -> None:
    tls = {"sni": "example.com", "alpn": ["h2", "http/1.1"], "client_versions": ["TLS 1.3"],
           "ja3": "0" * 32, "ja4": "t13d", "tls_version": "TLS 1.3",
           "cipher": "0x1301"}  # fmt: skip
    http = {"method": "GET", "path": "/", "host": "h", "user_agent": "curl", "status": 200}
    for f in (tls, http, {}):
        assert record_findings(f) == (f, False) and record_findings(f)[0] is f


@pytest.mark.parametrize(
    ("value", "expected", "problem"),
    [
        ({"raw": b"ab\xff\xfe\x00c"}, {"raw": "ab\\xff\\xfe\x00c"}, "findings['raw'] is of type"),
        ({"raw": bytearray(b"caf\xc3\xa9")}, {"raw": "café"}, "bytearray"),
        (
            {1: "a", None: "b", False: "c", 2.5: "d", b"k": "e"},
            {"1": "a", "null": "b", "false": "c", "2.5": "d", "k": "e"},
            "key of type",
        ),
        ({"1": "first", 1: "second"}, {"1": "first"}, "key of type int"),
        ({"s": {"b", "a", "c"}}, {"s": ["a", "b", "c"]}, "of type set"),
        (
            {"n": math.nan, "i": math.inf, "m": -math.inf},
            {"n": "NaN", "i": "Infinity", "m": "-Infinity"},
            "nan",
        ),
        ({"big": 1 << 64}, {"big": str(1 << 64)}, "past 64 bits"),
        ({"huge": 1 << 20000}, {"huge": "<int of 20,001 bits>"}, "past 64 bits"),
        ({"o": Opaque(), "d": decimal.Decimal("1")}, {"o": "<Opaque>", "d": "<Decimal>"}, "Opaque"),
        ({"t": (1, "x")}, {"t": [1, "x"]}, None),
        ({"e": Label.A, "l": Level.HIGH}, {"e": "a", "l": 7}, None),
        ({"s": LoudStr("quiet")}, {"s": "quiet"}, None),
        ({"d": LoudDict(a=1), "l": LoudList([1, 2])}, {"d": {"a": 1}, "l": [1, 2]}, None),
        ({"sur": "a\udcff"}, {"sur": "a\\udcff"}, "lone surrogates"),
    ],
)
def test_conversions(value: dict, expected: dict, problem: str | None) -> None:
    clean = sanitize_findings(value)
    assert clean.value == expected
    assert clean.truncated == (len(clean.value) < len(value))  # only a key clash drops one
    if problem is None:
        assert clean.problem is None
    else:
        assert clean.problem is not None and problem in clean.problem, clean.problem


def test_limits_cut_and_say_so() -> None:
    big = sanitize_findings({"s": "x" * 50_000_000, "after": 1})
    assert big.value == {"s": "x" * 1024, "after": 1} and big.truncated
    assert "over 1,024 characters" in (big.problem or "")
    many = sanitize_findings({"l": list(range(100_000))})
    assert many.value == {"l": list(range(256))} and many.truncated
    nested: Any = []
    nested.append(nested)  # a cycle: cut by depth, never followed for ever
    deep = sanitize_findings({"n": nested})
    assert depth(deep.value) == FINDINGS.depth and deep.truncated
    assert "nested too deep" in orjson.dumps(deep.value).decode()
    wide = sanitize_findings({f"k{i}": "v" * 1000 for i in range(50)})
    size = len(orjson.dumps(wide.value))
    assert wide.truncated and size <= 8192 and len(wide.value) == 8  # whole entries, in order
    assert list(wide.value) == [f"k{i}" for i in range(8)]


def test_what_is_not_a_dict_is_empty_findings() -> None:
    for bad in (None, [1], "x", b"y"):
        clean = sanitize_findings(bad)
        assert clean.value == {} and clean.problem is not None and "not dict" in clean.problem


def test_a_record_of_hostile_findings_is_cut_and_flagged() -> None:
    findings, cut = record_findings({"alpn": ["h2"] * 3000})
    assert cut and findings == {"alpn": ["h2"] * 256}
    findings, cut = record_findings({"raw": b"\x00\xff"})
    assert not cut and findings == {"raw": "\x00\\xff"}
