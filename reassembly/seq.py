"""TCP sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4).

Every comparison of raw sequence numbers in the project goes through this module; a bare ``<``
on two sequence numbers is a bug, because the space wraps.
"""

from __future__ import annotations

MOD = 1 << 32
HALF = 1 << 31
MASK = MOD - 1


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` in sequence space."""
    return (seq + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in the range [-2**31, 2**31)."""
    return ((a - b + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def unwrap(seq: int, ref_seq: int, ref_offset: int) -> int:
    """Map a 32-bit ``seq`` to a stream offset, given that ``ref_seq`` is at ``ref_offset``.

    Offsets are unbounded Python ints, so a stream longer than 4 GiB keeps counting (the
    64-bit offsets of Suricata and Zeek); the nearest interpretation of ``seq`` wins.
    """
    return ref_offset + seq_diff(seq, ref_seq)
