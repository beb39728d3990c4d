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

A rule is checked against what is known: address, port and VLAN keys at once (so such a rule
can act at the SYN), protocol and host once detection has an answer. Rules are checked in
order and the first that matches wins; a rule that cannot be told yet holds back the rules
after it. ``watch`` ends the rules and leaves the flow to the plugins.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .api import FlowView, Verdict


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
}
_REQUIRED = {"rewrite": ("pattern", "replace"), "respond": (), "tee": ("dir",)}
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
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(_syntax_error(str(exc), text, name)) from exc
    where = _Locator(text, name)
    unknown = set(doc) - {"default", "budget", "rule"}
    for key in sorted(unknown):
        raise where.error(key, None, f"unknown key {key!r} (default, budget, rule)")
    default = doc.get("default", "pass")
    if default not in ("pass", "intercept", "block"):
        raise where.error("default", None, f"default must be pass, intercept or block: {default!r}")
    budget = _budget(doc.get("budget", {}), where)
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise where.error("rule", None, "rules are written [[rule]]")
    rules = tuple(_rule(i + 1, r, where) for i, r in enumerate(raw_rules))
    return Policy(Verdict(default), budget, rules)


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


def _budget(raw: Any, where: _Locator) -> Budget:
    if not isinstance(raw, dict):
        raise where.error("budget", None, "budget is a table: [budget]")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in ("bytes", "packets", "seconds"):
            raise where.error(key, "budget", f"unknown key {key!r} (bytes, packets, seconds)")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise where.error(key, "budget", f"budget {key} must be a positive number")
        if key != "seconds" and not isinstance(value, int):
            raise where.error(key, "budget", f"budget {key} must be a whole number")
        values[key] = value
    return Budget(**values)


def _rule(index: int, raw: Any, where: _Locator) -> Rule:
    if not isinstance(raw, dict):
        raise where.error("rule", None, "each [[rule]] is a table")
    section = ("rule", index)
    for key in raw:
        if key not in _RULE_KEYS:
            raise where.error(key, section, f"unknown rule key {key!r}")
    action_raw = raw.get("action")
    if action_raw is None:
        raise where.error("action", section, f"a rule needs an action: {_ACTIONS}")
    try:
        action = Action(action_raw)
    except ValueError:
        raise where.error(
            "action", section, f"action must be {_ACTIONS}, not {action_raw!r}"
        ) from None
    kw: dict[str, Any] = {}
    for key in ("protocol", "host"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise where.error(key, section, f"{key} must be a non-empty string")
            kw[key] = raw[key]
    for key in ("server", "client"):
        if key in raw:
            values = raw[key] if isinstance(raw[key], list) else [raw[key]]
            nets = []
            for v in values:
                try:
                    nets.append(ipaddress.ip_network(str(v), strict=False))
                except ValueError:
                    raise where.error(
                        key, section, f"{key} {v!r} is not an address or CIDR"
                    ) from None
            kw[key] = tuple(nets)
    if "port" in raw:
        ports = raw["port"] if isinstance(raw["port"], list) else [raw["port"]]
        if not ports or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
        ):
            raise where.error("port", section, "port must be a number 1-65535 or a list of them")
        kw["ports"] = frozenset(ports)
    if "vlan" in raw:
        v = raw["vlan"]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 4096:
            raise where.error("vlan", section, "vlan must be a VLAN ID 0-4095")
        kw["vlan"] = v
    handler = raw.get("handler")
    options = raw.get("options", {})
    if handler is not None:
        if action is not Action.INTERCEPT:
            raise where.error("handler", section, 'handler applies to action = "intercept" only')
        if handler not in HANDLERS:
            raise where.error(
                "handler", section, f"handler must be one of {', '.join(HANDLERS)}, not {handler!r}"
            )
    if options:
        if not isinstance(options, dict):
            raise where.error("options", section, "options is a table: options = { ... }")
        allowed = HANDLERS.get(handler or "relay", {})
        for k, v in options.items():
            if k not in allowed:
                raise where.error(
                    "options",
                    section,
                    f"option {k!r} does not apply to handler {handler or 'relay'!r}",
                )
            if not isinstance(v, allowed[k]):
                raise where.error("options", section, f"option {k!r} must be a string")
        if options.get("direction", "s2c") not in ("c2s", "s2c"):
            raise where.error("options", section, 'direction must be "c2s" or "s2c"')
        if "data_hex" in options:
            try:
                bytes.fromhex(options["data_hex"])
            except ValueError:
                raise where.error("options", section, "data_hex is not hexadecimal") from None
    for k in _REQUIRED.get(handler or "", ()):
        if k not in options:
            raise where.error("options", section, f"handler {handler!r} needs option {k!r}")
    if handler == "respond" and len({"data", "data_hex"} & set(options)) != 1:
        raise where.error(
            "options", section, "handler 'respond' needs option 'data' or 'data_hex' (one of them)"
        )
    if handler == "rewrite" and not options["pattern"]:
        raise where.error("options", section, "handler 'rewrite' needs a non-empty pattern")
    return Rule(index, action, handler=handler, options=dict(options), **kw)


class _Locator:
    """Finds the line of a key for error messages (tomllib reports syntax errors only)."""

    def __init__(self, text: str, name: str) -> None:
        self.lines = text.splitlines()
        self.name = name

    def error(self, key: str, section: str | tuple[str, int] | None, message: str) -> PolicyError:
        line = self._find(key, section)
        where = f"{self.name}:{line}" if line else self.name
        return PolicyError(f"{where}: {message}")

    def _find(self, key: str, section: str | tuple[str, int] | None) -> int | None:
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
        pattern = re.compile(rf"\s*{re.escape(key)}\s*=")
        for i in range(start, stop):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1 if isinstance(section, tuple) else None
