"""cffi build script for the C fast path (``uinet_tap.stack._fast``); see _fast.c."""

import re
from pathlib import Path

from cffi import FFI

_here = Path(__file__).parent
MARKER = "/* ---- cffi interface"


def cdef_of(header: str) -> str:
    """The interface part of _fast.h as cffi's cdef takes it: a constant that is not a plain
    number is left to the compiler ("..."); other preprocessor lines are dropped."""
    out = []
    for line in header[header.index(MARKER) :].splitlines():
        m = re.match(r"#define (\w+)\s+(\S+)", line)
        if m:
            value = m.group(2) if m.group(2).isdigit() else "..."
            out.append(f"#define {m.group(1)} {value}")
        elif not line.startswith("#"):
            out.append(line)
    return "\n".join(out)


ffibuilder = FFI()
ffibuilder.cdef(cdef_of((_here / "_fast.h").read_text()))
# _hashq.c (the hashing thread), _detect.c (first-bytes detection) and _follow.c (HTTP
# framing) come first: _fast.c's run loop calls them. _record.c writes the record of a flow
# that ended plain (uinet_tap/records.py is its reference). _pcap.c reads pcap files for replay.
# _offload.c finishes what a sender's offloads left undone (partial checksums, GSO
# super-frames) in the frames inline forwards.
# uinet_tap/_ports.c moves inline mode's frames: the one part of the C that does I/O, kept
# with the application (only uinet_tap/ does I/O).
_SOURCES = (
    "_hashq.c", "_detect.c", "_follow.c", "_fast.c", "_record.c", "_pcap.c", "_offload.c",
    "../uinet_tap/_ports.c",
)  # fmt: skip
_src = "".join((_here / name).read_text() for name in _SOURCES)
ffibuilder.set_source(
    "uinet_tap.stack._fast",
    _src,
    include_dirs=[str(_here)],
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
    define_macros=[("_GNU_SOURCE", None)],
    libraries=["crypto", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
