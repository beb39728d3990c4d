"""Finding plugins: the built-in detectors, the entry-point group ``uinet_tap.plugins``,
``--plugin module:Class`` and ``--plugin-file path.py``.

Loading runs third-party code (the import, the class body, the constructor, attribute
properties): all of it under the guard, so whatever it raises, SystemExit from
``sys.exit(0)`` at import included, is one :class:`PluginError` naming the plugin. Only
KeyboardInterrupt goes through. A plugin's ``name``, ``ports`` and ``protocol`` are checked
here, once, and kept in :class:`Loaded`; the inspector never reads them off the plugin again.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from .api import Plugin
from .findings import type_name
from .guard import GUARD, PluginFailed

ENTRY_POINT_GROUP = "uinet_tap.plugins"
BUILT_IN = "built-in"
NAME_LIMIT = 64  # characters of a plugin's name or protocol: they go into records and lines
# decided_by says "default" or "rule N" for the policy: a plugin may not take those names.
_RESERVED = re.compile(r"default|rule \d+")


class PluginError(Exception):
    """A plugin that cannot be loaded: one line for the user."""


@dataclass(frozen=True, slots=True, eq=False)  # by identity: never the plugin's __eq__/__hash__
class Loaded:
    """A plugin as the inspector uses it. Its attributes are checked when this is made
    (PluginError if wrong) and its hooks looked up once."""

    plugin: Plugin
    origin: str  # "built-in", "entry point NAME (DIST)", "--plugin X", "--plugin-file F"
    name: str = field(init=False)
    ports: frozenset[int] = field(init=False)
    protocol: str = field(init=False)  # what a guess by port names (the plugin's name by default)
    detect: Callable[..., Any] | None = field(init=False)  # None: not overridden
    decide: Callable[..., Any] | None = field(init=False)
    intercept: Callable[..., Any] = field(init=False)
    custom_intercept: bool = field(init=False)
    # Its own code, for where a failure was (absolute paths): the file of its class's module,
    # or the directory of the package the module is in (a plugin's helpers are its code too).
    home: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        for key, value in _checked(self.plugin).items():
            object.__setattr__(self, key, value)

    @property
    def trusted(self) -> bool:
        """Built-in detectors: not timed, not watched for changes to the view."""
        return self.origin == BUILT_IN


class _Invalid(Exception):
    """An attribute with a wrong value (the plugin's own errors are the guard's)."""


def _checked(plugin: Plugin) -> dict[str, Any]:
    """The attributes Loaded keeps, checked; PluginError (without the origin) if wrong."""
    try:
        found = GUARD.call("?", _attributes, plugin, limit=None)
    except PluginFailed as failed:
        raise PluginError(f"reading its attributes failed: {failed.reason}") from None
    if isinstance(found, str):
        raise PluginError(found)
    return found


def _attributes(plugin: Plugin) -> dict[str, Any] | str:
    """Run under the guard: reading them may run the plugin's code (properties)."""
    try:
        return _read(plugin)
    except _Invalid as bad:
        return str(bad)


def _read(plugin: Plugin) -> dict[str, Any]:
    cls = type(plugin)
    label = type_name(plugin)
    name = plugin.name
    if type(name) is not str:
        raise _Invalid(f"{label}.name must be a string, not {_shown(name)}")
    name = name or label
    _check_name(label, "name", name)
    protocol = plugin.protocol
    if protocol is not None:
        if type(protocol) is not str or not protocol:
            raise _Invalid(f"{label}.protocol must be a non-empty string or None, "
                           f"not {_shown(protocol)}")  # fmt: skip
        _check_name(label, "protocol", protocol)
    hooks: dict[str, Any] = {}
    for hook in ("detect", "decide", "intercept"):
        method = getattr(plugin, hook)
        if not callable(method):
            raise _Invalid(f"{label}.{hook} must be a method, not {_shown(method)}")
        overridden = getattr(cls, hook, None) is not getattr(Plugin, hook)
        hooks[hook] = (method, overridden)
    return {
        "name": name,
        "ports": _ports(plugin.ports, label),
        "protocol": protocol or name,
        "detect": hooks["detect"][0] if hooks["detect"][1] else None,
        "decide": hooks["decide"][0] if hooks["decide"][1] else None,
        "intercept": hooks["intercept"][0],
        "custom_intercept": hooks["intercept"][1],
        "home": _home(cls),
    }


def _home(cls: type) -> tuple[str, ...]:
    """The files or directories holding the plugin's code (read from dictionaries, so no
    property or module ``__getattr__`` of the plugin's runs)."""
    module_name = cls.__dict__.get("__module__")
    if type(module_name) is not str:
        return ()
    module = sys.modules.get(module_name)
    own = vars(module).get("__file__") if module is not None else None
    top = module_name.partition(".")[0]
    package = sys.modules.get(top) if top != module_name else None
    paths = vars(package).get("__path__") if package is not None else None
    if top != "uinet_tap" and paths is not None:  # a built-in detector's file is its own
        return tuple(os.path.abspath(str(p)) for p in paths)
    return (os.path.abspath(own),) if type(own) is str else ()


def _check_name(label: str, attr: str, value: str) -> None:
    if len(value) > NAME_LIMIT or not value.isprintable() or value != value.strip():
        raise _Invalid(f"{label}.{attr} must be at most {NAME_LIMIT} printable characters, "
                       f"without surrounding spaces: {value[:NAME_LIMIT]!r}")  # fmt: skip
    if attr == "name" and _RESERVED.fullmatch(value):
        raise _Invalid(f"{label}.name {value!r} is reserved (records use it for the "
                       "policy's decisions)")  # fmt: skip


def _ports(raw: Any, label: str) -> frozenset[int]:
    what = f"{label}.ports must be a set of port numbers 0-65535"
    if raw is None or issubclass(type(raw), str | bytes | bytearray):
        raise _Invalid(f"{what}, not {_shown(raw)}")
    try:
        items = list(itertools.islice(iter(raw), 65537))
    except TypeError:
        raise _Invalid(f"{what}, not {_shown(raw)}") from None
    if len(items) > 65536:
        raise _Invalid(f"{what}: it holds more than 65536 values")
    for port in items:
        if type(port) is not int or not 0 <= port <= 65535:
            raise _Invalid(f"{what}; it holds {_shown(port)}")
    return frozenset(items)


def _shown(value: Any) -> str:
    """A value in an error message without running its code: plain values as repr."""
    if value is None or type(value) in (bool, int, float):
        return repr(value)
    if type(value) is str:
        return repr(value[:40])
    return f"a {type_name(value)}"


def builtin_detectors() -> list[Loaded]:
    from .detectors import DETECTORS

    return [Loaded(cls(), BUILT_IN) for cls in DETECTORS]


def _run(origin: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Third-party code at load: any failure is a PluginError naming the plugin."""
    try:
        return GUARD.call(origin, fn, *args, limit=None)
    except PluginFailed as failed:
        at = f" ({failed.where})" if failed.where else ""
        raise PluginError(f"{origin}: {what} failed{at}: {failed.reason}") from None


def _instantiate(obj: object, origin: str) -> Loaded:
    kind, label = _run(origin, "checking it", _kind, obj)
    if kind == "class":
        plugin = _run(origin, f"{label}()", obj)  # type: ignore[arg-type]
        if not issubclass(type(plugin), Plugin):
            raise PluginError(f"{origin}: {label}() made a {type_name(plugin)}, not a plugin")
    elif kind == "instance":
        plugin = obj
    else:
        raise PluginError(f"{origin}: {_shown(obj)} is not a uinet_tap.plugins.Plugin subclass")
    try:
        return Loaded(plugin, origin)
    except PluginError as exc:
        raise PluginError(f"{origin}: {exc}") from None


def _kind(obj: object) -> tuple[str, str]:
    """("class", its name) for a Plugin subclass, ("instance", ...) for a plugin object."""
    if isinstance(obj, type) and issubclass(obj, Plugin):
        return "class", str(obj.__qualname__)
    if issubclass(type(obj), Plugin):
        return "instance", type_name(obj)
    return "other", type_name(obj)


def from_entry_points() -> list[Loaded]:
    try:
        eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    except Exception as exc:  # broken package metadata: say so, in one line
        raise PluginError(f"cannot read the {ENTRY_POINT_GROUP} entry points: {exc}") from exc
    out = []
    for ep in eps:
        dist = getattr(ep.dist, "name", "?")
        origin = f"entry point {ep.name} ({dist})"
        obj = _run(origin, f"loading {ep.value}", ep.load)
        out.append(_instantiate(obj, origin))
    return out


def from_spec(spec: str) -> Loaded:
    """``module:Class`` (or ``module:object``)."""
    origin = f"--plugin {spec}"
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{origin}: expected module:Class")
    try:
        module = GUARD.call(origin, importlib.import_module, module_name, limit=None)
    except PluginFailed as failed:
        raise PluginError(f"{origin}: cannot import {module_name}: {failed.reason}") from None
    found, obj = _run(origin, f"reading {attr}", _lookup, module, attr)
    if not found:
        raise PluginError(f"{origin}: {module_name} has no {attr}")
    return _instantiate(obj, origin)


def _lookup(module: ModuleType, attr: str) -> tuple[bool, Any]:
    try:
        return True, getattr(module, attr)
    except AttributeError:
        return False, None


def from_file(path: str) -> list[Loaded]:
    """Every Plugin subclass defined in the file, in the order the file defines them (the
    module namespace's order: a class made with ``type()`` has no source lines to sort by)."""
    origin = f"--plugin-file {path}"
    p = Path(path)
    if not p.is_file():
        raise PluginError(f"{origin}: no such file")
    name = f"uinet_tap_plugin_file_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise PluginError(f"{origin}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        _run(origin, "importing it", spec.loader.exec_module, module)
        classes = _run(origin, "reading its classes", _defined_classes, module, name)
    except PluginError:
        sys.modules.pop(name, None)
        raise
    if not classes:
        raise PluginError(f"{origin}: defines no Plugin subclass")
    return [_instantiate(c, origin) for c in classes]


def _defined_classes(module: ModuleType, name: str) -> list[type]:
    seen: list[type] = []
    for obj in list(vars(module).values()):
        if (isinstance(obj, type) and issubclass(obj, Plugin) and obj.__module__ == name
                and obj not in seen):  # fmt: skip
            seen.append(obj)
    return seen


def load_all(
    specs: list[str],
    files: list[str],
    builtins: bool = True,
    entry_points: bool = True,
    options: list[str] | None = None,
) -> list[Loaded]:
    """The plugins in the order they are asked: command-line ones (in order given), then
    entry points (by name; ``entry_points`` False: none), then the built-in detectors;
    ``options`` (``NAME.KEY=VALUE``) given to the plugins they name."""
    loaded: list[Loaded] = []
    for spec in specs:
        loaded.append(from_spec(spec))
    for f in files:
        loaded.extend(from_file(f))
    if entry_points:
        loaded.extend(from_entry_points())
    if builtins:
        loaded.extend(builtin_detectors())
    set_options(loaded, options or [])
    return loaded


def set_options(loaded: list[Loaded], options: list[str]) -> None:
    """``NAME.KEY=VALUE``: the option KEY of plugin NAME (declared in its option_defaults),
    as mitmproxy's ``--set``. Anything else is a PluginError naming the option."""
    given: dict[str, dict[str, str]] = {}
    for option in options:
        target, eq, value = option.partition("=")
        name, dot, key = target.rpartition(".")
        if not eq or not dot or not name or not key:
            raise PluginError(f"--plugin-option {option!r}: expected NAME.KEY=VALUE")
        given.setdefault(name, {})[key] = value
    by_name = {p.name: p for p in loaded}
    for name, values in given.items():
        plugin = by_name.get(name)
        if plugin is None:
            raise PluginError(f"--plugin-option: no plugin named {name!r} is loaded")
        declared = getattr(type(plugin.plugin), "option_defaults", None) or {}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise PluginError(f"--plugin-option: plugin {name!r} has no option "
                              f"{unknown[0]!r} (it takes: {known})")  # fmt: skip
        plugin.plugin.__dict__["_options"] = {**declared, **values}
