"""Finding plugins: the built-in detectors, the entry-point group ``uinet_tap.plugins``,
``--plugin module:Class`` and ``--plugin-file path.py``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .api import Plugin

ENTRY_POINT_GROUP = "uinet_tap.plugins"


class PluginError(Exception):
    """A plugin that cannot be loaded: one line for the user."""


@dataclass(frozen=True, slots=True)
class Loaded:
    plugin: Plugin
    origin: str  # "built-in", "entry point NAME (DIST)", "--plugin X", "--plugin-file F"

    @property
    def name(self) -> str:
        return self.plugin.name or type(self.plugin).__name__


def builtin_detectors() -> list[Loaded]:
    from .detectors import DETECTORS

    return [Loaded(cls(), "built-in") for cls in DETECTORS]


def _instantiate(obj: object, origin: str) -> Plugin:
    if isinstance(obj, Plugin):
        return obj
    if inspect.isclass(obj) and issubclass(obj, Plugin):
        try:
            return obj()
        except Exception as exc:  # a third party's constructor: say which and why
            raise PluginError(f"{origin}: {obj.__name__}() failed: {exc}") from exc
    raise PluginError(f"{origin}: {obj!r} is not a uinet_tap.plugins.Plugin subclass")


def from_entry_points() -> list[Loaded]:
    out = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep.dist, "name", "?")
        origin = f"entry point {ep.name} ({dist})"
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"{origin}: cannot load {ep.value}: {exc}") from exc
        out.append(Loaded(_instantiate(obj, origin), origin))
    return out


def from_spec(spec: str) -> Loaded:
    """``module:Class`` (or ``module:object``)."""
    origin = f"--plugin {spec}"
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{origin}: expected module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"{origin}: cannot import {module_name}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise PluginError(f"{origin}: {module_name} has no {attr}") from None
    return Loaded(_instantiate(obj, origin), origin)


def from_file(path: str) -> list[Loaded]:
    """Every Plugin subclass defined in the file, in the order written."""
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
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"{origin}: {type(exc).__name__}: {exc}") from exc
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Plugin) and obj.__module__ == name
    ]
    if not classes:
        raise PluginError(f"{origin}: defines no Plugin subclass")
    classes.sort(key=lambda c: inspect.getsourcelines(c)[1])
    return [Loaded(_instantiate(c, origin), origin) for c in classes]


def load_all(specs: list[str], files: list[str], builtins: bool = True) -> list[Loaded]:
    """The plugins in the order they are asked: command-line ones (in order given), then
    entry points (by name), then the built-in detectors."""
    loaded: list[Loaded] = []
    for spec in specs:
        loaded.append(from_spec(spec))
    for f in files:
        loaded.extend(from_file(f))
    loaded.extend(from_entry_points())
    if builtins:
        loaded.extend(builtin_detectors())
    return loaded
