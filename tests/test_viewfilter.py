"""The live view's filter language (uinet_tap/viewfilter.py), on the driver's five flows:
1 tls 93.184.216.34:443 SNI secure.example.org would-intercept EST; 2 http 10.0.0.80:80 Host
shop.example.com pass EST; 3 ssh? (guessed) :22 undecided EST mid-stream; 4 undetected
[2001:db8::1]:5432 SYN; 5 smtp :25 would-block FIN."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uinet_tap.viewfilter import FilterError, parse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tui_driver import base_flows  # noqa: E402

FLOWS = base_flows()


def ids(text: str) -> list[int]:
    f = parse(text)
    return [r.id for r in FLOWS if f(r)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [1, 2, 3, 4, 5]),
        ("proto:tls", [1]),
        ("proto:TLS", [1]),
        ("proto:s*", [3, 5]),
        ("proto:none", [4]),
        ("port:443", [1]),
        ("port:51002", [2]),  # the client's side counts too
        ("port:5432", [4]),
        ("host:*.example.com", [2]),
        ("host:*.example.*", [1, 2]),
        ("host:10.0.0.80", [2]),  # an address is a host as well
        ("host:2001:db8::7", [4]),
        ("sni:secure.example.org", [1]),
        ("sni:shop.example.com", []),  # a Host header is not an SNI
        ("verdict:block", [5]),
        ("verdict:would-block", [5]),
        ("verdict:intercept", [1]),
        ("verdict:pass", [2]),
        ("verdict:none", [3, 4]),
        ("state:EST", [1, 2, 3]),
        ("state:fin", [5]),
        ("client:10.0.0.5:*", [1, 2]),
        ("server:*:22", [3]),
        ("proto:http port:80", [2]),
        ("proto:http port:443", []),  # every term must match
        ("example", [1, 2, 5]),  # a plain word: substring, as before (info "mail.example.net")
        ("10.0.0.80:80", [2]),  # an address with a port is a plain word
        ("[2001:db8::1]:5432", [4]),
        ("openssh", [3]),
        ("verdict:pass shop", [2]),
    ],
)
def test_terms(text: str, expected: list[int]) -> None:
    assert ids(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour:red", "unknown field 'colour'"),
        ("proto:", "proto: needs a value"),
        ("port:https", "not a port number"),
        ("port:70000", "not a port number"),
    ],
)
def test_bad_terms_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError) as exc:
        parse(text)
    assert message in str(exc.value) and "\n" not in str(exc.value)
