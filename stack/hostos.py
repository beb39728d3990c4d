"""Which receiver policy a host gets: address prefixes mapped to target OSes, the most specific
prefix winning (Suricata's ``host-os-policy``). Each direction of a connection is reassembled as
its *receiver* would: the client-to-server stream by the server's policy, the other by the
client's."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..reassembly.policy import OverlapPolicy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE = 65536  # addresses remembered; cleared when full (a flood of addresses cannot grow it)


class HostPolicies:
    def __init__(
        self, default: OverlapPolicy, prefixes: Iterable[tuple[Network, OverlapPolicy]] = ()
    ) -> None:
        self.default = default
        # Longest prefix first: the first that contains an address is the most specific.
        self.prefixes = sorted(prefixes, key=lambda p: -p[0].prefixlen)
        self._cache: dict[bytes, OverlapPolicy] = {}

    def lookup(self, addr: bytes) -> OverlapPolicy:
        """The policy of the host at ``addr`` (4 or 16 packed bytes)."""
        if not self.prefixes:
            return self.default
        hit = self._cache.get(addr)
        if hit is not None:
            return hit
        ip = ipaddress.ip_address(addr)
        found = self.default
        for net, policy in self.prefixes:
            if net.version == ip.version and ip in net:
                found = policy
                break
        if len(self._cache) >= _CACHE:
            self._cache.clear()
        self._cache[addr] = found
        return found
