"""Community ID flow hashing, version 1 (the spec Zeek, Suricata and Arkime share), for TCP:
the same connection gets the same ID in every tool's output, whichever side a record names
first. https://github.com/corelight/community-id-spec"""

from __future__ import annotations

import base64
import hashlib

TCP = 6


def community_id(
    saddr: bytes, sport: int, daddr: bytes, dport: int, seed: int = 0, proto: int = TCP
) -> str:
    """``1:`` and the base64 SHA-1 of seed, the endpoints in order (the lower address first,
    the lower port first between equal addresses), protocol and one byte of padding."""
    if (daddr, dport) < (saddr, sport):
        saddr, sport, daddr, dport = daddr, dport, saddr, sport
    digest = hashlib.sha1(
        seed.to_bytes(2, "big") + saddr + daddr + bytes((proto, 0))
        + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"),
        usedforsecurity=False,
    ).digest()  # fmt: skip
    return "1:" + base64.b64encode(digest).decode()
