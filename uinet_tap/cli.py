"""Command line: ``uinet-tap replay CAPTURE``."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

import click
import orjson

from . import logs
from .ended import KEEP_BYTES, KEEP_ENDED_REPLAY, KEEP_ENDED_WATCH
from .engine import Engine, Options
from .eve import EveWriter
from .flowpcap import FlowPcaps, SelectorError, parse_selector
from .inputs import Capture
from .live import CAPTURE_BUFFER
from .logs import log
from .pcapfile import CaptureError
from .plugins.findings import Limits, sanitize
from .plugins.policy import Policy, PolicyError, load_policy
from .plugins.registry import Loaded, PluginError, load_all
from .privileges import Identity, PrivilegeError, drop_privileges, resolve_identity
from .reassembly.policy import OverlapPolicy
from .stack import fastpath


def _error(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# Records and EVE lines are written in 1 MiB pieces, not the file's 4 KiB blocks: a replay's
# 28 MB of records took some 7,000 write calls (watch still flushes every second).
OUTPUT_BUFFER = 1 << 20


def _open_output(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb", buffering=OUTPUT_BUFFER)  # noqa: SIM115 (closed by the caller)
    except OSError as exc:
        _error(f"cannot write {path}: {exc.strerror}")
        raise  # unreachable


# A record that orjson refuses is written anyway, its odd values converted by the findings
# rule (findings.py) without the findings' size limits.
_RECORD_LIMITS = Limits(string=None, items=None, depth=32, size=None)


class _RecordWriter:
    """One JSON object per line. orjson: a flow record is encoded about ten times faster
    than with the standard json module, which matters at 20,000 records a second.

    It never fails on a record: findings are made JSON when the record is made, and should
    anything else in one not be (a bug), it is converted, said once on stderr, and written."""

    def __init__(self, outputs: list[IO[bytes]], eve: list[IO[bytes]] | None = None) -> None:
        self.outputs = outputs
        self.eve = [EveWriter(out) for out in eve or []]
        self.converted = 0
        self.closes: Counter[str] = Counter()  # records by close reason, for the log

    def __call__(self, record: dict) -> None:
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError as exc:
            line = self._converted(record, exc)
            record = orjson.loads(line)  # the EVE lines are made from the converted record
        self.closes[str(record.get("close"))] += 1
        for out in self.outputs:
            out.write(line)
        for eve in self.eve:
            eve(record)

    def line(self, line: bytes, close: str) -> None:
        """A record made as its JSON line (Engine.on_line): written as it is. Only where no
        EVE output needs its object."""
        assert not self.eve
        self.closes[close] += 1
        for out in self.outputs:
            out.write(line)

    def lines(self, text: bytes, closes: dict[str, int]) -> None:
        """Many records made as their JSON lines (Engine.on_lines), ``closes`` of them
        closed for each reason: written as they are."""
        assert not self.eve
        self.closes.update(closes)
        for out in self.outputs:
            out.write(text)

    def _converted(self, record: dict, exc: Exception) -> bytes:
        self.converted += 1
        if self.converted == 1:
            log.warning("a flow record held a value that is not JSON (%s); it is written "
                        "converted (later ones are too, without a warning)", exc)  # fmt: skip
        clean = sanitize(record, _RECORD_LIMITS).value
        return orjson.dumps(clean, option=orjson.OPT_APPEND_NEWLINE)

    def flush(self) -> None:
        for out in self.outputs:
            out.flush()
        for eve in self.eve:
            eve.out.flush()


async def _flushed_each_second(run: Coroutine[Any, Any, None], flush: Callable[[], None]) -> None:
    """Await ``run`` while flushing the outputs once a second, as watch does: otherwise a
    record sits in the file's buffer until the buffer fills or the run ends, and a closed
    connection's record is not in the file within the 5 s promised."""
    import asyncio

    async def flusher() -> None:
        while True:
            await asyncio.sleep(1.0)
            flush()

    task = asyncio.get_running_loop().create_task(flusher())
    try:
        await run
    finally:
        task.cancel()


DATA_PLANE = "C" if fastpath.AVAILABLE else "pure Python (the C data plane is not built)"


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        logs.set_level(logging.DEBUG)


def _set_log_level(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    level = logs.LEVELS.get(value.lower())
    if level is None:
        _error(f"--log-level: unknown level {value!r} (debug, info, warning or error)")
    else:
        logs.set_level(level)


# On the group and on every command, so before or after the command's name alike:
# `uinet-tap -v replay X` and `uinet-tap replay X -v` (the last one given wins).
_verbose_option = click.option(
    "-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
    help="Diagnostics on stderr: as --log-level debug.",
)  # fmt: skip
_log_level_option = click.option(
    "--log-level", metavar="LEVEL", expose_value=False, is_eager=True, callback=_set_log_level,
    help="Diagnostics on stderr from LEVEL up: debug, info, warning (default), error.",
)  # fmt: skip


def _log_options(fn: Any) -> Any:
    return _verbose_option(_log_level_option(fn))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="uinet-tap", message=f"%(prog)s, version %(version)s, data plane: {DATA_PLANE}"
)
@_log_options
def main() -> None:
    """Passive TCP stream reconstruction and inspection."""
    if not fastpath.AVAILABLE:
        # Installed without a C compiler (setup.py goes on without the extension): everything
        # works, about four times slower; said once, so nobody benchmarks the fallback unaware.
        click.echo(
            "uinet-tap: warning: the C data plane is not built (installed without a C compiler "
            "or OpenSSL headers); running the pure-Python path, about four times slower",
            err=True,
        )


class _PluginErrors:
    """The first failure of each plugin, one line on stderr; later ones are only counted.
    Once a run: watch's capture workers report theirs here too."""

    def __init__(self) -> None:
        self.reported: set[str] = set()

    def __call__(self, name: str, message: str) -> None:
        if name in self.reported:
            return
        self.reported.add(name)
        # message: "plugin 'foo' failed in detect (foo.py:42): KeyError: 'nope'". Logged:
        # the line is "warning: ..." as before, and held while the live view is open.
        log.warning("%s (its flows get the default verdict; later errors are counted in the "
                    "summary)", message)  # fmt: skip


_plugin_error = _PluginErrors()


def _load_inspection(
    policy_path: str | None,
    specs: tuple[str, ...],
    files: tuple[str, ...],
    off: bool,
    plugin_options: tuple[str, ...] = (),
    entry_points: bool = True,
) -> tuple[list[Loaded] | None, Policy | None]:
    if off:
        if policy_path or specs or files or plugin_options:
            _error(
                "--no-inspect cannot be combined with --policy, --plugin, --plugin-file or "
                "--plugin-option"
            )
        return None, None
    try:
        policy = load_policy(policy_path) if policy_path else None
        plugins = load_all(
            list(specs), list(files), entry_points=entry_points, options=list(plugin_options)
        )
    except (PolicyError, PluginError) as exc:
        _error(str(exc))
    if policy is not None:
        log.info("policy %s: %d rules, default %s", policy_path, len(policy.rules),
                 policy.default.value)  # fmt: skip
    builtin = [p.name for p in plugins if p.origin == "built-in"]
    log.info("plugins: %d loaded (%d built-in detectors)", len(plugins), len(builtin))
    for p in plugins:
        if p.origin != "built-in":
            log.info("plugin %s from %s", p.name, p.origin)
    log.debug("built-in detectors: %s", ", ".join(builtin))
    return plugins, policy


@main.command()
@click.option("--plugin", "plugin_specs", metavar="MODULE:CLASS", multiple=True)
@click.option("--plugin-file", "plugin_files", metavar="FILE", multiple=True)
@_log_options
def plugins(plugin_specs: tuple[str, ...], plugin_files: tuple[str, ...]) -> None:
    """List the plugins that would be loaded, in the order they are asked."""
    try:
        loaded = load_all(list(plugin_specs), list(plugin_files))
    except PluginError as exc:
        _error(str(exc))
    width = max(len(p.name) for p in loaded)
    for i, p in enumerate(loaded, 1):
        ports = ",".join(str(x) for x in sorted(p.ports)) or "-"
        kind = "+".join(k for k, hook in (("detect", p.detect), ("decide", p.decide))
                        if hook is not None) or "-"  # fmt: skip
        click.echo(f"{i:3d}  {p.name:<{width}}  {kind:<13}  ports {ports:<24}  {p.origin}")


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _live_timeouts(options: dict[str, Any]) -> dict[str, Any]:
    """watch and inline: a connection closed by FIN or RST has its record within seconds of
    its last packet (as Zeek writes), and its tuple then swallows stragglers for a minute
    (counted as stragglers, never a second record)."""
    # 3 s of quiet, then the once-a-second expiry pass and file flush: written within 5 s.
    return {**options, "timeout_closing": _or(options["timeout_closing"], 3.0),
            "closed_memory": 60.0}  # fmt: skip


def _options(*options: Any) -> Any:
    """Apply a group of click options, in the order written."""

    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


_reassembly_options = _options(
    click.option(
        "--overlap-policy",
        "--target-os",
        "overlap_policy",
        type=click.Choice([p.value for p in OverlapPolicy]),
        default="linux",
        show_default=True,
        help="Whose receiver to read the streams as (overlaps, urgent data); see README.",
    ),
    click.option("--ignore-vlan", is_flag=True, help="Leave VLAN tags out of the flow key."),
    click.option("--verify-checksums", is_flag=True, help="Drop TCP segments with a bad checksum."),
    click.option("--max-flows", type=click.IntRange(1), default=1_000_000, show_default=True),
    click.option(
        "--max-flow-memory",
        type=click.IntRange(1 << 20),
        default=1 << 30,
        show_default=True,
        help="Estimated memory of the connections tracked (held bytes aside).",
    ),
    click.option(
        "--max-flow-buffer",
        type=click.IntRange(1024),
        default=4 << 20,
        show_default=True,
        help="Out-of-order bytes held per direction.",
    ),
    click.option(
        "--max-buffer",
        type=click.IntRange(1024),
        default=512 << 20,
        show_default=True,
        help="Out-of-order bytes held in total.",
    ),
    click.option("--timeout-half-open", type=click.FloatRange(0), default=60.0, show_default=True),
    click.option(
        "--timeout-established", type=click.FloatRange(0), default=600.0, show_default=True
    ),
    click.option(
        "--timeout-closing",
        type=click.FloatRange(0),
        default=None,
        help="Seconds a connection closed by FIN or RST stays tracked before its record "
        "[replay: 60 of capture time; watch and inline: 3 (the record within 5 s of the last "
        "packet), later stragglers only counted].",
    ),
    click.option(
        "--transactions/--no-transactions",
        default=True,
        show_default=True,
        help="Record every HTTP/1.x request and response (off: faster, first exchange only).",
    ),
    click.option(
        "--community-id-seed",
        type=click.IntRange(0, 65535),
        default=0,
        show_default=True,
        help="Seed of the records' Community ID (as Zeek's and Suricata's own setting).",
    ),
)

_inspection_options = _options(
    click.option("--policy", "policy_path", metavar="FILE", help="Rules in TOML (see README)."),
    click.option(
        "--plugin",
        "plugin_specs",
        metavar="MODULE:CLASS",
        multiple=True,
        help="Load a plugin class; repeatable.",
    ),
    click.option(
        "--plugin-file",
        "plugin_files",
        metavar="FILE",
        multiple=True,
        help="Load the plugins defined in a Python file; repeatable.",
    ),
    click.option(
        "--plugin-option",
        "plugin_options",
        metavar="NAME.KEY=VALUE",
        multiple=True,
        help="Set an option a plugin declares (its option_defaults); repeatable.",
    ),
    click.option(
        "--no-entry-points",
        is_flag=True,
        help="Load no plugins from installed packages: only built-ins and the command line's.",
    ),
    click.option(
        "--no-inspect", is_flag=True, help="No protocol detection or verdicts: reconstruction only."
    ),
)

_flows_option = _options(
    click.option(
        "--flows", "flows_path", metavar="PATH",
        help="Write flow records (JSON lines); - for stdout.",
    ),
    click.option(
        "--eve", "eve_path", metavar="PATH",
        help="Write Suricata-EVE JSON lines (flow and app-layer events); - for stdout.",
    ),
)  # fmt: skip
_stats_option = click.option(
    "--stats", "stats_path", metavar="PATH", help="Write the run summary as JSON; - for stdout."
)


def _prepare_run() -> None:
    """SIGTERM ends a run as Ctrl-C does (every record written); and the collector is tuned:
    the engine allocates per packet and per connection but keeps no reference cycles, so the
    cyclic collector's frequent passes over a large heap are mostly waste (15-20% of a run):
    collect rarely, and leave the start-up objects out of it altogether."""

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C too, also when the run was started with SIGINT ignored (a background job of a
    # non-interactive shell inherits that, and Python then leaves it ignored): the run must
    # still end cleanly on it, as the README says.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _close_outputs(outputs: list[IO[bytes]]) -> None:
    for out in outputs:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()


def _run_context(stats: dict, plugins: list[Loaded] | None, policy_path: str | None) -> dict:
    """What ran: the version, the policy file and every plugin loaded with where it came from
    (--stats and the summary), so a record set can be traced to the code that made it."""
    stats["version"] = _version()
    stats["policy"] = policy_path
    stats["plugins"] = [{"name": p.name, "origin": p.origin} for p in plugins or []]
    return stats


@functools.lru_cache(maxsize=1)
def _version() -> str:
    """Read once, before any privilege drop (importlib.metadata imports more of the standard
    library on first use, which the user dropped to may not be able to read)."""
    import importlib.metadata  # 18 ms: only for a run that reports its version

    try:
        return importlib.metadata.version("uinet-tap")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _write_stats(stats_path: str | None, stats: dict) -> None:
    _write_stats_to(_open_output(stats_path) if stats_path else None, stats)


def _write_stats_to(out: IO[bytes] | None, stats: dict) -> None:
    if out is not None:
        out.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        if out is not sys.stdout.buffer:
            out.close()


_privilege_options = _options(
    click.option(
        "--user",
        "run_as",
        metavar="NAME",
        help="Start as root; drop to this user for good once the interfaces and outputs are "
        "open, before any plugin is loaded.",
    ),
    click.option(
        "--group",
        "run_group",
        metavar="NAME",
        help="With --user: this group instead of the user's primary group.",
    ),
)


def _identity(user: str | None, group: str | None) -> Identity | None:
    """Who ``--user``/``--group`` name, checked before anything is opened."""
    if user is None:
        if group is not None:
            _error("--group needs --user")
        return None
    try:
        return resolve_identity(user, group)
    except PrivilegeError as exc:
        _error(str(exc))
        raise  # unreachable


def _import_before_drop(summary: bool, view: bool, extra: tuple[str, ...] = ()) -> None:
    """Import what the run would import later (the summary, the live view, ``extra``): after
    the drop the user may not be able to read the interpreter's own library (one installed
    in root's home, say), and a module failing to import then would cost the run its end."""
    _version()  # for --stats and the summary: read now, see _version
    names = (["summary"] if summary else []) + (["live_view_data", "tui"] if view else [])
    for name in [f"{__package__}.{n}" for n in names] + list(extra):
        importlib.import_module(name)


def _drop(who: Identity | None) -> None:
    """The end of the privileged set-up: from here on nothing runs as root."""
    if who is None:
        log.info("no --user: running on as uid %d", os.geteuid())
        return
    try:
        drop_privileges(who)
    except PrivilegeError as exc:
        _error(str(exc))
    log.info("privileges dropped to %s (uid %d, gid %d, groups %s)", who.name, who.uid,
             who.gid, ",".join(map(str, who.groups)) or "none")  # fmt: skip


def _flow_pcaps(directory: Path | None, selector: str | None) -> FlowPcaps | None:
    if directory is None:
        if selector is not None:
            _error("--pcap-for needs --export-pcap")
        return None
    try:
        keep = parse_selector(selector) if selector is not None else None
    except SelectorError as exc:
        _error(f"--pcap-for: {exc}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"cannot create {directory}: {exc.strerror}")
    return FlowPcaps(directory, keep)


@main.command()
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
@click.option(
    "--filter",
    "bpf",
    metavar="BPF",
    help="Read only the frames this capture filter keeps (as tcpdump -r FILE BPF).",
)
@_flows_option
@click.option(
    "--export",
    "export_dir",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each direction's stream to its own file, and DIR/flows.jsonl.",
)
@click.option(
    "--export-pcap",
    "pcap_dir",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each connection's frames to its own pcap file in DIR.",
)
@click.option(
    "--pcap-for",
    "pcap_for",
    metavar="EXPR",
    help="With --export-pcap: keep only connections matching, e.g. 'proto:tls port:443'.",
)
@_stats_option
@_reassembly_options
@_inspection_options
@click.option(
    "--bypass/--no-bypass",
    default=False,
    show_default=True,
    help="Stop reassembling a flow once it is passed (only its counters move).",
)
@click.option("--tui", is_flag=True, help="Show the flows in the live view while reading.")
@click.option("--speed", type=click.FloatRange(0), default=0.0, show_default=True,
              help="With --tui: 1 paces by capture time, 2 twice as fast, 0 not.")  # fmt: skip
@click.option("--keep-ended", type=click.IntRange(0), default=KEEP_ENDED_REPLAY,
              show_default=True,
              help="With --tui: ended flows listed (the oldest leave first).")  # fmt: skip
@click.option("--keep-bytes", type=click.IntRange(0), default=KEEP_BYTES, show_default=True,
              help="With --tui: early bytes kept per direction of a flow (hex view).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@_log_options
def replay(
    captures: tuple[str, ...],
    bpf: str | None,
    flows_path: str | None,
    eve_path: str | None,
    export_dir: Path | None,
    pcap_dir: Path | None,
    pcap_for: str | None,
    stats_path: str | None,
    policy_path: str | None,
    plugin_specs: tuple[str, ...],
    plugin_files: tuple[str, ...],
    plugin_options: tuple[str, ...],
    no_entry_points: bool,
    bypass: bool,
    no_inspect: bool,
    tui: bool,
    speed: float,
    keep_ended: int,
    keep_bytes: int,
    quiet: bool,
    **options: Any,
) -> None:
    """Rebuild both byte streams of every TCP connection in the captures (pcap or pcapng files,
    directories of them, - for stdin; gzip, xz, bzip2 or zstd compressed or not), read as one
    capture in time order; detect each connection's protocol and record the verdict the
    policy and plugins give it."""
    try:
        source = Capture(captures, bpf)
    except CaptureError as exc:
        _error(str(exc))
    capture = source.name
    for path in source.paths:
        log.debug("input %s", path)
    log.info("input %s: %d file(s), link type %d, %s bytes", capture, len(source.paths),
             source.linktype, f"{source.size:,}" if source.size else "unknown")  # fmt: skip
    plugins, policy = _load_inspection(
        policy_path, plugin_specs, plugin_files, no_inspect, plugin_options, not no_entry_points
    )
    outputs: list[IO[bytes]] = []
    if flows_path:
        outputs.append(_open_output(flows_path))
    eves = [_open_output(eve_path)] if eve_path else []
    if export_dir is not None:
        try:
            export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _error(f"cannot create {export_dir}: {exc.strerror}")
        outputs.append(_open_output(str(export_dir / "flows.jsonl")))
    writer = _RecordWriter(outputs, eves)
    engine = Engine(
        source.linktype,
        Options.from_kwargs(**{**options, "timeout_closing": _or(options["timeout_closing"], 60)}),
        writer, export_dir,
        plugins=plugins, policy=policy, bypass=bypass, on_plugin_error=_plugin_error,
        flow_pcaps=_flow_pcaps(pcap_dir, pcap_for),
    )  # fmt: skip
    if not eves:  # records only written out: those C writes whole go as they are
        engine.on_line = writer.line
        engine.on_lines = writer.lines
    _log_outputs(flows_path, eve_path, stats_path, export_dir)
    log.debug("data plane: %s", engine.fastpath)
    exit_code = 0
    _prepare_run()
    progress: Any = contextlib.nullcontext(_NoProgress())
    if not quiet:
        from .summary import Progress  # rich costs 20 ms to import: only when shown

        progress = Progress(source.size, enabled=not tui)
    started = time.perf_counter()
    stopped: str | None = None  # why the run ended before the end of the input
    view_run = None
    try:
        if tui:
            from .replay_view import ViewEnd, replay_with_view

            with logs.held_while_view():
                view_run = replay_with_view(
                    engine, source.batches(), capture, speed, keep_ended, keep_bytes
                )
            if view_run.end is ViewEnd.QUIT:
                stopped = "stopped at q"
            elif view_run.end is ViewEnd.INTERRUPTED:
                stopped = "interrupted"
        else:
            with progress as bar:
                for batch in source.batches():
                    engine.feed_batch(batch)
                    bar.update(source.bytes_read, source.packets)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Exception as exc:  # a bug must not lose the records of everything read so far
        click.echo(
            f"error: internal error after {source.packets} packets: {type(exc).__name__}: {exc}",
            err=True,
        )
        exit_code = 1
    engine.truncated_file = source.truncated is not None
    # Ctrl-C and q mid-file end alike: the connections still open end as at the end of the
    # file (close "eof"), every record is written and flushed, then one line says how far
    # the run got, and exit status 130.
    engine.finish()
    _close_outputs(outputs + eves)
    stats = engine.stats()
    if stopped is not None:
        click.echo(f"{stopped}: {_how_far(stats, source)}; every record written", err=True)
        exit_code = 130
    if bpf is not None:
        stats["filter"] = bpf
        stats["filtered_out"] = source.filtered
    if len(source.paths) > 1:
        stats["inputs"] = len(source.paths)
    if source.truncated:
        click.echo(
            f"warning: {capture} is truncated ({source.truncated}); "
            f"results cover the {source.packets} packets read",
            err=True,
        )
    if stats_path or not quiet:
        _run_context(stats, plugins, policy_path)
    _log_end(stats, writer.closes)
    _write_stats(stats_path, stats)
    if not quiet:
        from .summary import render_summary

        if view_run is not None:  # the user's time in the view is not reading time
            render_summary(stats, capture, view_run.read, viewing=view_run.view)
        else:
            render_summary(stats, capture, time.perf_counter() - started)
    sys.exit(exit_code)


class _NoProgress:
    """The progress bar of a quiet run."""

    def update(self, done: int, packets: int) -> None:
        pass


def _log_outputs(flows: str | None, eve: str | None, stats: str | None,
                 export: Path | None = None) -> None:  # fmt: skip
    for what, path in (("flow records", flows), ("EVE", eve), ("the run summary", stats),
                       ("streams", export)):  # fmt: skip
        if path is not None:
            log.info("writing %s to %s", what, "stdout" if path == "-" else path)


def _log_end(stats: dict, closes: Counter[str]) -> None:
    """Why connections ended (timeouts, evictions) and which limits bit, at info."""
    if closes:
        log.info("connections closed by reason: %s",
                 ", ".join(f"{k} {v:,}" for k, v in closes.most_common()))  # fmt: skip
    limits = stats.get("limits") or {}
    log.info("limits: %s evicted, %s forced past a hole%s", f"{stats['evicted']:,}",
             f"{stats['buffer_forced']:,}",
             "".join(f", {k} {v:,}" for k, v in limits.items()))  # fmt: skip


def _how_far(stats: dict, source: Capture) -> str:
    """``774 connections, 12,345 packets read (41% of the file)``: where a run stopped."""
    text = f"{stats['connections']:,} connections, {stats['packets']:,} packets read"
    if source.size and source.packets:  # size 0: not known (stdin)
        # The reader is up to a batch (4,096 packets) ahead of the engine: the share of the
        # bytes read that the frames fed make up, counting the frames as of equal size.
        fed = min(stats["packets"] + source.filtered, source.packets) / source.packets
        share = min(source.bytes_read / source.size, 1.0) * fed
        text += f" ({share:.0%} of the {'file' if len(source.paths) == 1 else 'input'})"
    return text


@main.command()
@click.argument("interface")
@click.option("--filter", "--bpf", "bpf", metavar="BPF",
              help="A capture filter, e.g. 'tcp port 443' (--bpf: the older name).")  # fmt: skip
@_flows_option
@_stats_option
@_reassembly_options
@_inspection_options
@click.option(
    "--bypass/--no-bypass",
    default=True,
    show_default=True,
    help="Stop reassembling a flow once it is passed (only its counters move).",
)
@click.option("--buffer-size", type=click.IntRange(1 << 16, (1 << 31) - 1), default=CAPTURE_BUFFER,
              show_default=True,
              help="Kernel capture ring, bytes (per worker): what absorbs a burst.")  # fmt: skip
@click.option("--snaplen", type=click.IntRange(64), default=262144, show_default=True)
@click.option("--tui/--no-tui", default=None,
              help="The live view (default: when stdout and stdin are a terminal).")  # fmt: skip
@click.option("--keep-ended", type=click.IntRange(0), default=KEEP_ENDED_WATCH,
              show_default=True,
              help="Ended flows the live view lists (the oldest leave first).")  # fmt: skip
@click.option("--keep-bytes", type=click.IntRange(0), default=KEEP_BYTES, show_default=True,
              help="Early bytes the live view keeps per direction of each flow.")  # fmt: skip
@click.option("--status-interval", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between status lines when there is no live view.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0), default=None,
              help="Stop after this many seconds.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Capture processes sharing the interface (PACKET_FANOUT hash).")  # fmt: skip
@_privilege_options
@click.option("-q", "--quiet", is_flag=True, help="No summary at the end.")
@_log_options
def watch(
    interface: str,
    bpf: str | None,
    flows_path: str | None,
    eve_path: str | None,
    stats_path: str | None,
    policy_path: str | None,
    plugin_specs: tuple[str, ...],
    plugin_files: tuple[str, ...],
    plugin_options: tuple[str, ...],
    no_entry_points: bool,
    no_inspect: bool,
    bypass: bool,
    buffer_size: int,
    snaplen: int,
    tui: bool | None,
    keep_ended: int,
    keep_bytes: int,
    status_interval: float,
    duration: float | None,
    workers: int,
    run_as: str | None,
    run_group: str | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Capture on INTERFACE and show its TCP flows live: protocol, verdict, bytes and rates.
    Watch only listens: it never sends a frame."""
    from .watch import WORKER_MODULES, SingleBackend, ViewLimits, Watch, WorkerPool, open_captures

    # Set-up order (README, "Privileges"): what needs root first, then the drop, then the
    # plugins, so no plugin code (not even its import) runs as root.
    who = _identity(run_as, run_group)
    capture_args: dict[str, Any] = {"iface": interface, "bpf": bpf, "snaplen": snaplen,
                                    "buffer_size": buffer_size}  # fmt: skip
    try:
        captures = open_captures(capture_args, workers)
    except CaptureError as exc:
        _error(str(exc))
    log.info("capture on %s: %d handle(s), link type %d, snap length %d, buffer %s bytes",
             interface, len(captures), captures[0].linktype, snaplen,
             f"{buffer_size:,}")  # fmt: skip
    outputs: list[IO[bytes]] = [_open_output(flows_path)] if flows_path else []
    eves = [_open_output(eve_path)] if eve_path else []
    stats_out = _open_output(stats_path) if stats_path else None
    _log_outputs(flows_path, eve_path, stats_path)
    if tui is None:
        tui = sys.stdout.isatty() and sys.stdin.isatty()
    _import_before_drop(not quiet, tui, WORKER_MODULES if workers > 1 else ())
    _drop(who)
    plugins, policy = _load_inspection(
        policy_path, plugin_specs, plugin_files, no_inspect, plugin_options, not no_entry_points
    )
    writer = _RecordWriter(outputs, eves)
    engine_options = Options.from_kwargs(**_live_timeouts(options))

    def make_engine(
        linktype: int,
        on_record: Callable[[dict], None],
        on_plugin_error: Callable[[str, str], None] = _plugin_error,
    ) -> Engine:
        return Engine(
            linktype, engine_options, on_record, plugins=plugins, policy=policy,
            bypass=bypass, on_plugin_error=on_plugin_error,
        )  # fmt: skip

    backend: SingleBackend | WorkerPool
    limits = ViewLimits(keep_ended, keep_bytes)
    # Without the live view no flow is listed, and records only written out go as the lines
    # C writes whole (as replay's): C keeps its flows light.
    lines = not tui and not eves
    try:
        if workers > 1:
            backend = WorkerPool(
                interface, captures, make_engine, writer, _plugin_error, limits=limits,
                lines=writer.lines if lines else None,
            )  # fmt: skip
        else:
            (capture,) = captures
            single = SingleBackend(capture, make_engine(capture.linktype, writer), limits,
                                   rows=tui)  # fmt: skip
            if tui:
                single.engine.on_record = single.on_record(writer)
            if lines:
                single.engine.on_line = writer.line
                single.engine.on_lines = writer.lines
            backend = single
    except CaptureError as exc:
        _error(str(exc))
    runner = Watch(backend, tui, status_interval, duration, flush=writer.flush)
    _prepare_run()
    exit_code = 0
    started = time.perf_counter()
    try:
        with logs.held_while_view() if tui else contextlib.nullcontext():
            runner.run()
    except KeyboardInterrupt:
        pass
    except CaptureError as exc:
        click.echo(f"error: {exc}", err=True)
        exit_code = 1
    except Exception as exc:  # a bug must not lose the records of everything seen so far
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
        exit_code = 1
    try:
        stats = backend.finish()
    except KeyboardInterrupt:  # a second Ctrl-C while finishing: finish anyway
        stats = backend.finish()
    if getattr(backend, "failed", False):  # a capture worker met a bug (said on stderr)
        exit_code = 1
    _close_outputs(outputs + eves)
    _log_end(stats, writer.closes)
    _write_stats_to(stats_out, _run_context(stats, plugins, policy_path))
    if not quiet:
        from .summary import render_summary

        render_summary(stats, interface, time.perf_counter() - started, "watch")
    sys.exit(exit_code)


@main.command()
@click.argument("if_a", metavar="IF_A")
@click.argument("if_b", metavar="IF_B")
@click.option("--filter", "bpf", metavar="BPF",
              help="Inspect only connections whose frames this filter keeps; the rest are "
                   "forwarded untouched and not tracked.")  # fmt: skip
@_flows_option
@_stats_option
@_reassembly_options
@_inspection_options
@click.option("--tui/--no-tui", default=None,
              help="The live view (default: when stdout and stdin are a terminal).")  # fmt: skip
@click.option("--status-interval", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between status lines when there is no live view.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0), default=None,
              help="Stop after this many seconds.")  # fmt: skip
@click.option("--max-new-flows", "new_flow_rate", type=click.FloatRange(0), default=1000.0,
              show_default=True,
              help="New connections a second the tool starts tracking at most (0: no "
                   "limit); beyond, and while frames pile up unread, a new connection's "
                   "frames are dropped and counted (shed_new): its client sends them again, "
                   "and a flood does not starve the passed flows.")  # fmt: skip
@click.option("--shed/--no-shed", default=True, show_default=True,
              help="--no-shed: never drop a new connection's frames (under a flood, the "
                   "kernel then drops frames of any flow).")  # fmt: skip
@_privilege_options
@click.option("-q", "--quiet", is_flag=True, help="No summary at the end.")
@_log_options
def inline(
    if_a: str,
    if_b: str,
    bpf: str | None,
    flows_path: str | None,
    eve_path: str | None,
    stats_path: str | None,
    policy_path: str | None,
    plugin_specs: tuple[str, ...],
    plugin_files: tuple[str, ...],
    plugin_options: tuple[str, ...],
    no_entry_points: bool,
    no_inspect: bool,
    tui: bool | None,
    status_interval: float,
    duration: float | None,
    new_flow_rate: float,
    shed: bool,
    run_as: str | None,
    run_group: str | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Bridge every frame between IF_A and IF_B unchanged, and act on the verdicts: PASS flows
    take the shortest path, BLOCK resets both ends, INTERCEPT cuts in (the tool's own TCP
    takes over both halves of the connection and hands it to the handler)."""
    import asyncio

    from .inline import Inline, log_stderr, open_ports, run_inline
    from .ports import PortError

    if no_inspect:
        _error("inline needs the plugins: --no-inspect does not apply")
    # Set-up order (README, "Privileges"): the packet sockets and offloads need root, then
    # the outputs are opened, then the drop; plugins and handlers only ever run as the user.
    who = _identity(run_as, run_group)
    try:
        ports = open_ports((if_a, if_b), log_stderr)
    except PortError as exc:
        _error(str(exc))
    log.info("inline ports open: %s and %s", if_a, if_b)
    outputs: list[IO[bytes]] = [_open_output(flows_path)] if flows_path else []
    eves = [_open_output(eve_path)] if eve_path else []
    stats_out = _open_output(stats_path) if stats_path else None
    _log_outputs(flows_path, eve_path, stats_path)
    if tui is None:
        tui = sys.stdout.isatty() and sys.stdin.isatty()
    _import_before_drop(not quiet, tui)
    _drop(who)
    plugins, policy = _load_inspection(
        policy_path, plugin_specs, plugin_files, False, plugin_options, not no_entry_points
    )
    assert plugins is not None
    writer = _RecordWriter(outputs, eves)
    engine_options = Options.from_kwargs(**_live_timeouts(options))
    try:
        bridge = Inline(ports, plugins, policy, engine_options, writer, _plugin_error, bpf,
                        shed, new_flow_rate)  # fmt: skip
    except CaptureError as exc:
        _error(str(exc))
    _prepare_run()
    started = time.perf_counter()

    def ready() -> None:
        log_stderr(f"inline {if_a} <-> {if_b}: ready")

    view: Any = None
    if tui:
        from .tui import LiveView

        view = LiveView(title=f"{if_a} <-> {if_b} (inline)")
    exit_code = 0
    hold = logs.held_while_view() if view is not None else contextlib.nullcontext()
    try:
        with hold:
            try:
                if view is not None:
                    view.start()
                status = None if view is not None else log_stderr
                bridging = run_inline(bridge, duration, ready, view, status, status_interval)
                asyncio.run(_flushed_each_second(bridging, writer.flush))
            finally:
                if view is not None:
                    view.stop()  # before the held log lines are written
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a bug must not lose the records of everything seen so far
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
        exit_code = 1
    try:
        stats = bridge.finish()
    except KeyboardInterrupt:
        stats = bridge.finish()
    for p in ports:
        p.close()
    writer.flush()
    _close_outputs(outputs + eves)
    _log_end(stats, writer.closes)
    _write_stats_to(stats_out, _run_context(stats, plugins, policy_path))
    if not quiet:
        from .summary import render_summary

        render_summary(stats, f"{if_a} <-> {if_b}", time.perf_counter() - started, "inline")
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
