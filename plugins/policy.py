"""Operator policy without code: ``--policy rules.toml``.

    default = "pass"                 # when nothing decides within the budget
    [budget]                         # per direction, when no plugin asks for more
    bytes = 8192
    packets = 20
    seconds = 5

    [[rule]]                         # first matching rule wins; every key optional
    protocol = "http"
    host = "*.example.com"           # glob on the HTTP Host or the TLS SNI
    server = "10.0.0.0/8"            # CIDR; also client
    port = [80, 8080]                # the server port: a number or a list
    vlan = 100                       # a VLAN ID anywhere in the tag stack
    action = "intercept"             # pass | intercept | block | watch
    handler = "rewrite"              # for intercept: relay | rewrite | respond | tee
    options = { direction = "s2c", pattern = "Hello", replace = "HELLO" }

    [target-os]                      # whose receiver reads each direction (host-os-policy)
    default = "linux"                # hosts no prefix names (else --overlap-policy)
    windows = ["10.1.0.0/16", "2001:db8:1::/48"]
    bsd = "192.0.2.0/24"             # linux | bsd | windows | first | last

A rule is checked against what is known: address, port and VLAN keys at once (so such a rule
can act at the SYN), protocol and host once detection has an answer. Rules are checked in
order and the first that matches wins; a rule that cannot be told yet holds back the rules
after it. ``watch`` ends the rules and leaves the flow to the plugins.

``[target-os]`` maps address prefixes to receiver policies, the most specific prefix winning
(Suricata's ``host-os-policy``): each direction of a connection is read as the host that
receives it would read it (README "Receiving as the endpoint does").
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..reassembly.policy import OverlapPolicy
from .api import FlowView, Verdict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(Exception):
    """A bad policy file: the message names the file, the line and the key."""


class Action(StrEnum):
    PASS = "pass"
    INTERCEPT = "intercept"
    BLOCK = "block"
    WATCH = "watch"

    @property
    def verdict(self) -> Verdict | None:
        return {
            Action.PASS: Verdict.PASS,
            Action.INTERCEPT: Verdict.INTERCEPT,
            Action.BLOCK: Verdict.BLOCK,
        }.get(self)


HANDLERS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "relay": {},
    "rewrite": {"direction": str, "pattern": str, "replace": str},
    "respond": {"data": str, "data_hex": str},
    "tee": {"dir": str},
    "forward": {"to": str, "both": bool, "proxy_protocol": bool},
}
_REQUIRED = {"rewrite": ("pattern", "replace"), "respond": (), "tee": ("dir",), "forward": ("to",)}
_MAY_BE_EMPTY = frozenset(("replace",))  # rewrite to nothing: delete the pattern
_RULE_KEYS = frozenset(
    ("protocol", "host", "server", "client", "port", "vlan", "action", "handler", "options")
)
_ACTIONS = "pass, intercept, block or watch"


@dataclass(frozen=True, slots=True)
class Budget:
    bytes: int = 8192
    packets: int = 20
    seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Rule:
    index: int  # 1-based, as the operator counts them
    action: Action
    protocol: str | None = None
    host: str | None = None
    server: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    client: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ports: frozenset[int] = frozenset()
    vlan: int | None = None
    handler: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"rule {self.index}"

    def matches(self, flow: FlowView, detection_done: bool) -> bool | None:
        """True / False, or None while it depends on a detection still under way."""
        if self.ports and flow.server_port not in self.ports:
            return False
        if self.vlan is not None and self.vlan not in flow.vlan:
            return False
        if self.server and not _in(flow.server[0], self.server):
            return False
        if self.client and not _in(flow.client[0], self.client):
            return False
        if self.protocol is not None or self.host is not None:
            if flow.protocol is None and not detection_done:
                return None
            if self.protocol is not None and flow.protocol != self.protocol:
                return False
            if self.host is not None:
                name = flow.findings.get("host") or flow.findings.get("sni")
                if name is None and not detection_done:
                    return None
                if not isinstance(name, str) or not fnmatchcase(
                    name.split(":")[0].lower(), self.host.lower()
                ):
                    return False
        return True


def _in(addr: str, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    ip = ipaddress.ip_address(addr)
    return any(ip.version == n.version and ip in n for n in nets)


@dataclass(frozen=True, slots=True)
class Policy:
    default: Verdict = Verdict.PASS
    budget: Budget = Budget()
    rules: tuple[Rule, ...] = ()
    # [target-os]: (prefix, policy) pairs, and the policy of hosts none names (None: the
    # command line's --overlap-policy).
    target_os: tuple[tuple[Network, OverlapPolicy], ...] = ()
    target_os_default: OverlapPolicy | None = None

    def evaluate(self, flow: FlowView, detection_done: bool) -> tuple[Rule | None, bool]:
        """(the rule that decides, or None; whether the rules are settled). Settled and no
        rule: the plugins decide."""
        for rule in self.rules:
            m = rule.matches(flow, detection_done)
            if m is None:
                return None, False
            if m:
                return (None, True) if rule.action is Action.WATCH else (rule, True)
        return None, True


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read it ({exc})") from exc
    return parse_policy(text, str(path))


def parse_policy(text: str, name: str = "policy") -> Policy:
    """Every value is checked: its type, numbers finite and positive, lists and strings not
    empty, keys that contradict each other. A bad one is one PolicyError naming the file,
    the line and the key."""
    try:
        doc = tomllib.loads(text)  # also refuses a key or a table given twice, with its line
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(_syntax_error(str(exc), text, name)) from exc
    where = _Locator(text, name)
    fields: dict[str, Any] = {}
    for key, raw in doc.items():
        reader = _SECTIONS.get(key)
        if reader is None:
            raise where.error(key, None, f"unknown key {key!r} ({', '.join(_SECTIONS)})")
        fields.update(reader(raw, where))
    return Policy(**fields)


def _syntax_error(message: str, text: str, name: str) -> str:
    """tomllib says "... (at line 3, column 8)" or "(at end of document)": lead with the
    line, as the other policy errors do."""
    m = re.search(r"\(at line (\d+), column (\d+)\)$", message)
    if m:
        return f"{name}:{m[1]}: {message[: m.start()].strip()} (column {m[2]})"
    if message.endswith("(at end of document)"):
        last = len(text.splitlines()) or 1
        return f"{name}:{last}: {message[: -len('(at end of document)')].strip()} (at the end)"
    return f"{name}: {message}"


# -- the top-level keys: each reads its value into Policy fields ----------------------------


def _default(raw: Any, where: _Locator) -> dict[str, Any]:
    value = _choice(raw, "default", None, where, ("pass", "intercept", "block"))
    return {"default": Verdict(value)}


def _budget(raw: Any, where: _Locator) -> dict[str, Any]:
    if type(raw) is not dict:
        raise where.error("budget", None, f"budget must be a table ([budget]), not {_kind(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in ("bytes", "packets", "seconds"):
            raise where.error(key, "budget", f"unknown key {key!r} (bytes, packets, seconds)")
        values[key] = _positive(value, key, "budget", where, whole=key != "seconds")
    return {"budget": Budget(**values)}


def _rules(raw: Any, where: _Locator) -> dict[str, Any]:
    if type(raw) is not list or not raw:
        raise where.error("rule", None, "rules are written [[rule]], each a table of keys")
    return {"rules": tuple(_rule(i + 1, r, where) for i, r in enumerate(raw))}


# One entry a top-level key: a new section is a reader here and a field of Policy.
def _target_os(raw: Any, where: _Locator) -> dict[str, Any]:
    section = "target-os"
    if type(raw) is not dict:
        raise where.error(
            section, None, f"target-os must be a table ([target-os]), not {_kind(raw)}"
        )
    names = tuple(p.value for p in OverlapPolicy)
    seen: dict[Network, str] = {}
    pairs: list[tuple[Network, OverlapPolicy]] = []
    default = None
    for key, value in raw.items():
        if key == "default":
            default = OverlapPolicy(_choice(value, "default", section, where, names))
            continue
        if key not in names:
            raise where.error(key, section, f"unknown key {key!r} (default, {', '.join(names)})")
        for item in _one_or_more(value, key, section, where):
            net = _network(item, key, section, where)
            if net in seen:
                raise where.error(key, section, f"{net} is given to both {seen[net]} and {key}")
            seen[net] = key
            pairs.append((net, OverlapPolicy(key)))
    return {"target_os": tuple(pairs), "target_os_default": default}


_SECTIONS: dict[str, Callable[[Any, _Locator], dict[str, Any]]] = {
    "default": _default,
    "budget": _budget,
    "rule": _rules,
    "target-os": _target_os,
}


# -- a rule ---------------------------------------------------------------------------------


def _rule(index: int, raw: Any, where: _Locator) -> Rule:
    section = ("rule", index)
    if type(raw) is not dict:
        raise where.error("rule", None, "each [[rule]] is a table of keys")
    for key in raw:
        if key not in _RULE_KEYS:
            raise where.error(key, section, f"unknown rule key {key!r}")
    if "action" not in raw:
        raise where.error("action", section, f"a rule needs an action: {_ACTIONS}")
    action = Action(_choice(raw["action"], "action", section, where, tuple(Action)))
    kw: dict[str, Any] = {}
    for key in ("protocol", "host"):
        if key in raw:
            kw[key] = _string(raw[key], key, section, where)
    for key in ("server", "client"):
        if key in raw:
            kw[key] = tuple(_network(v, key, section, where)
                            for v in _one_or_more(raw[key], key, section, where))  # fmt: skip
    if "port" in raw:
        ports = _one_or_more(raw["port"], "port", section, where)
        kw["ports"] = frozenset(_whole(v, "port", section, where, 1, 65535) for v in ports)
    if "vlan" in raw:
        kw["vlan"] = _whole(raw["vlan"], "vlan", section, where, 0, 4095)
    handler = None
    if "handler" in raw:
        handler = _choice(raw["handler"], "handler", section, where, tuple(HANDLERS))
        if action is not Action.INTERCEPT:
            raise where.error("handler", section, 'handler applies to action = "intercept" only')
    raw_options = raw.get("options", {})
    if "options" in raw:
        if type(raw_options) is not dict:
            raise where.error("options", section, "options must be a table (options = { ... }), "
                              f"not {_kind(raw_options)}")  # fmt: skip
        if action is not Action.INTERCEPT:
            raise where.error("options", section, 'options apply to action = "intercept" only')
    options: dict[str, Any] = {}
    if action is Action.INTERCEPT:
        options = _options(raw_options, handler or "relay", section, where)
    return Rule(index, action, handler=handler, options=options, **kw)


def _options(raw: dict[str, Any], handler: str, section: tuple[str, int],
             where: _Locator) -> dict[str, Any]:  # fmt: skip
    allowed = HANDLERS[handler]
    for k, v in raw.items():
        if k not in allowed:
            raise where.error("options", section,
                              f"option {k!r} does not apply to handler {handler!r}")  # fmt: skip
        want = allowed[k]
        if type(v) is not want:
            what = "true or false" if want is bool else "a string"
            raise where.error("options", section, f"option {k!r} must be {what}, not {_kind(v)}")
        if want is str and not v and k not in _MAY_BE_EMPTY:
            raise where.error("options", section, f"option {k!r} must not be empty")
    if raw.get("direction", "s2c") not in ("c2s", "s2c"):
        raise where.error("options", section, 'direction must be "c2s" or "s2c"')
    if "data_hex" in raw:
        try:
            bytes.fromhex(raw["data_hex"])
        except ValueError:
            raise where.error("options", section, "data_hex is not hexadecimal") from None
    if "to" in raw:
        from .handlers import parse_target  # the handler's own reading of it

        try:
            parse_target(raw["to"])
        except ValueError as exc:
            raise where.error("options", section, str(exc)) from None
    for k in _REQUIRED.get(handler, ()):
        if k not in raw:
            raise where.error("options", section, f"handler {handler!r} needs option {k!r}")
    if handler == "respond" and len({"data", "data_hex"} & set(raw)) != 1:
        raise where.error(
            "options", section, "handler 'respond' needs option 'data' or 'data_hex' (one of them)"
        )
    return dict(raw)


# -- values ---------------------------------------------------------------------------------

Section = str | tuple[str, int] | None


def _kind(v: Any) -> str:
    """A TOML value as the operator wrote it, for messages."""
    if type(v) is bool:
        return f"a boolean ({str(v).lower()})"
    if type(v) is int:
        return f"an integer ({v})"
    if type(v) is float:
        return f"a number ({v})"
    if type(v) is str:
        return f"a string ({v[:40]!r})"
    if type(v) is list:
        return "an array"
    if type(v) is dict:
        return "a table"
    return "a date or time"


def _string(raw: Any, key: str, section: Section, where: _Locator) -> str:
    if type(raw) is not str:
        raise where.error(key, section, f"{key} must be a string, not {_kind(raw)}")
    if not raw.strip():
        raise where.error(key, section, f"{key} must not be empty")
    return raw


def _choice(raw: Any, key: str, section: Section, where: _Locator,
            choices: tuple[str, ...]) -> str:  # fmt: skip
    one_of = f"{', '.join(choices[:-1])} or {choices[-1]}"
    if type(raw) is not str or raw not in choices:
        raise where.error(key, section, f"{key} must be {one_of}, not {_kind(raw)}")
    return raw


def _whole(raw: Any, key: str, section: Section, where: _Locator, low: int, high: int) -> int:
    if type(raw) is not int or not low <= raw <= high:
        raise where.error(key, section, f"{key} must be a whole number {low}-{high} "
                          f"(or a list of them), not {_kind(raw)}")  # fmt: skip
    return raw


def _positive(raw: Any, key: str, section: Section, where: _Locator, whole: bool) -> int | float:
    what = "a whole number" if whole else "a number"
    if type(raw) not in (int, float) or (whole and type(raw) is not int):
        raise where.error(key, section, f"{section} {key} must be {what}, not {_kind(raw)}")
    if not math.isfinite(raw) or raw <= 0:
        raise where.error(key, section, f"{section} {key} must be finite and positive, "
                          f"not {_kind(raw)}")  # fmt: skip
    return raw  # type: ignore[no-any-return]


def _one_or_more(raw: Any, key: str, section: Section, where: _Locator) -> list[Any]:
    if type(raw) is not list:
        return [raw]
    if not raw:
        raise where.error(key, section, f"{key} is an empty list: give at least one value, "
                          f"or leave {key} out to match any")  # fmt: skip
    return raw


def _network(raw: Any, key: str, section: Section,
             where: _Locator) -> ipaddress.IPv4Network | ipaddress.IPv6Network:  # fmt: skip
    if type(raw) is not str or not raw.strip():
        raise where.error(key, section, f"{key} must be an address or CIDR string (or a list "
                          f"of them), not {_kind(raw)}")  # fmt: skip
    try:
        return ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise where.error(key, section, f"{key} {raw!r} is not an address or CIDR") from None


class _Locator:
    """Finds the line of a key for error messages (tomllib reports syntax errors only)."""

    def __init__(self, text: str, name: str) -> None:
        self.lines = text.splitlines()
        self.name = name

    def error(self, key: str, section: Section, message: str) -> PolicyError:
        line = self._find(key, section)
        where = f"{self.name}:{line}" if line else self.name
        return PolicyError(f"{where}: {message}")

    def _find(self, key: str, section: Section) -> int | None:
        start, stop = 0, len(self.lines)
        if isinstance(section, tuple):  # the n-th [[rule]]
            headers = [
                i for i, ln in enumerate(self.lines) if re.match(r"\s*\[\[\s*rule\s*\]\]", ln)
            ]
            n = section[1]
            if n <= len(headers):
                start = headers[n - 1]
                stop = headers[n] if n < len(headers) else len(self.lines)
        elif section is not None:
            for i, ln in enumerate(self.lines):
                if re.match(rf"\s*\[\s*{re.escape(section)}\s*\]", ln):
                    start = i
                    break
            else:  # written inline (budget = { ... }) or dotted (budget.bytes = ...)
                line = self._line_of(section, 0, stop) or self._line_of(f"{section}.{key}", 0, stop)
                if line is not None:
                    return line
        line = self._line_of(key, start, stop)
        if line is not None:
            return line
        return start + 1 if isinstance(section, tuple) else None

    def _line_of(self, key: str, start: int, stop: int) -> int | None:
        pattern = re.compile(rf"""\s*["']?{re.escape(key)}["']?\s*=""")
        for i in range(start, stop):
            if pattern.match(self.lines[i]):
                return i + 1
        return None
