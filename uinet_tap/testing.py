"""A test helper for plugin authors: run a plugin over two byte strings or a capture and get
back what it found and decided.

    from uinet_tap.testing import run_bytes, run_capture

    r = run_bytes(MyPlugin(), c2s=b"*1\\r\\n$4\\r\\nPING\\r\\n", s2c=b"+PONG\\r\\n",
                  server_port=6379)
    assert r.protocol == "redis" and r.verdict == "pass"

    for r in run_capture(MyPlugin(), "captures/app/redis.pcap"):
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import Engine, Options
from .inspection import PASSIVE_NAMES
from .pcapfile import PcapFile
from .plugins.api import FlowView, Plugin
from .plugins.inspector import Inspector
from .plugins.policy import Policy, parse_policy
from .plugins.registry import Loaded, builtin_detectors


@dataclass(frozen=True, slots=True)
class Result:
    protocol: str
    confidence: str | None
    findings: dict[str, Any]
    verdict: str
    decided_by: str | None
    verdict_offset: dict[str, int]
    errors: tuple[str, ...] = ()
    client: str = ""
    server: str = ""
    reason: str | None = None  # the deciding plugin's (Plugin.decision)


def _plugins(plugins: Plugin | Sequence[Plugin], builtins: bool) -> list[Loaded]:
    if isinstance(plugins, Plugin):
        plugins = [plugins]
    loaded = [Loaded(p, "test") for p in plugins]
    return loaded + (builtin_detectors() if builtins else [])


def _policy(policy: Policy | str | None) -> Policy | None:
    return parse_policy(policy) if isinstance(policy, str) else policy


def run_bytes(
    plugins: Plugin | Sequence[Plugin],
    c2s: bytes | Iterable[bytes] = b"",
    s2c: bytes | Iterable[bytes] = b"",
    *,
    server_port: int = 80,
    client_port: int = 40000,
    server_first: bool = False,
    policy: Policy | str | None = None,
    builtins: bool = True,
) -> Result:
    """Feed the two directions (each one bytes object, or chunks as they would arrive) to the
    plugin(s): client chunks first unless ``server_first``, then alternating one by one."""
    chunks = [[c2s] if isinstance(c2s, bytes) else list(c2s),
              [s2c] if isinstance(s2c, bytes) else list(s2c)]  # fmt: skip
    errors: list[str] = []
    inspector = Inspector(
        _plugins(plugins, builtins), _policy(policy), on_error=lambda n, m: errors.append(n)
    )
    view = FlowView(0, ("10.0.0.1", client_port), ("10.0.0.2", server_port))
    insp = inspector.open(view)
    inspector.started(insp)
    order = (1, 0) if server_first else (0, 1)
    now = 0.0
    while any(chunks) and not insp.decided:
        for d in order:
            if chunks[d] and not insp.decided:
                chunk = chunks[d].pop(0)
                if chunk:
                    inspector.data(insp, d, chunk, now)
                now += 0.001
    inspector.close(insp)
    return Result(
        view.protocol or "unknown", view.confidence, dict(view.findings),
        PASSIVE_NAMES[insp.verdict], insp.decided_by,  # type: ignore[index]
        {"c2s": insp.offsets[0], "s2c": insp.offsets[1]}, tuple(errors),
        f"10.0.0.1:{client_port}", f"10.0.0.2:{server_port}", insp.reason,
    )  # fmt: skip


def run_capture(
    plugins: Plugin | Sequence[Plugin],
    capture: str | Path,
    *,
    policy: Policy | str | None = None,
    builtins: bool = True,
    **options: Any,
) -> list[Result]:
    """Every connection of a pcap/pcapng file through the plugin(s), as `replay` would."""
    records: list[dict] = []
    source = PcapFile(str(capture))
    engine = Engine(
        source.linktype, Options.from_kwargs(**options), records.append,
        plugins=_plugins(plugins, builtins), policy=_policy(policy),
    )  # fmt: skip
    for batch in source.batches():
        engine.feed_batch(batch)
    engine.finish()
    records.sort(key=lambda r: r["id"])
    return [
        Result(
            r["protocol"],
            r["confidence"],
            r["findings"],
            r["verdict"],
            r["decided_by"],
            r["verdict_offset"],
            tuple(r.get("plugin_errors", ())),
            r["client"],
            r["server"],
            r.get("reason"),
        )  # fmt: skip
        for r in records
    ]
