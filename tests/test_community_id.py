"""Community ID v1 (uinet_tap/community_id.py) against the spec's reference implementation, the
`communityid` package, on generated tuples and on the records of real captures (IPv4, IPv6,
VLAN); records' ISO timestamps. Suricata's own community_id for the same flows is compared in
tests/test_eve.py."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import communityid
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uinet_tap.community_id import community_id
from uinet_tap.records import iso_time

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
EXE = Path(sys.executable).parent / "uinet-tap"


def reference(saddr: bytes, sport: int, daddr: bytes, dport: int, seed: int) -> str:
    tpl = communityid.FlowTuple.make_tcp(
        str(ipaddress.ip_address(saddr)), str(ipaddress.ip_address(daddr)), sport, dport
    )
    return communityid.CommunityID(seed).calc(tpl)  # type: ignore[no-any-return]


ports = st.integers(0, 65535)


@given(
    st.sampled_from([4, 16]).flatmap(
        lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n))
    ),
    ports,
    ports,
    st.integers(0, 65535),
    st.booleans(),
)
def test_matches_the_reference_implementation(addrs, sport, dport, seed, same_host):
    saddr, daddr = addrs
    if same_host:
        daddr = saddr  # the ports decide the order
    assert community_id(saddr, sport, daddr, dport, seed) == reference(
        saddr, sport, daddr, dport, seed
    )
    # Either side first: one ID.
    assert community_id(daddr, dport, saddr, sport, seed) == community_id(
        saddr, sport, daddr, dport, seed
    )


def split(endpoint: str) -> tuple[bytes, int]:
    host, _, port = endpoint.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")).packed, int(port)


@pytest.mark.parametrize("capture", ["ipv6.pcap", "vlan.pcap", "many-short.pcap"])
@pytest.mark.parametrize("seed", [0, 1, 65535])
def test_records_carry_the_reference_id(capture: str, seed: int):
    p = subprocess.run(
        [str(EXE), "replay", "-q", "--flows", "-", "--community-id-seed", str(seed),
         str(CAPTURES / capture)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert recs
    for rec in recs:
        (ca, cp), (sa, sp) = split(rec["client"]), split(rec["server"])
        assert rec["community_id"] == reference(ca, cp, sa, sp, seed)
        # The ISO time is the start time, in UTC, to the microsecond.
        parsed = datetime.strptime(rec["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert abs(parsed.timestamp() - rec["start"]) < 1e-6


def test_seed_out_of_range_is_a_usage_error():
    p = subprocess.run(
        [str(EXE), "replay", "--community-id-seed", "65536", str(CAPTURES / "vlan.pcap")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "65536" in p.stderr


@pytest.mark.parametrize(
    "ts, text",
    [
        (0.0, "1970-01-01T00:00:00.000000+0000"),
        (1795745141.377311, "2026-11-27T02:05:41.377311+0000"),
        (1.9999996, "1970-01-01T00:00:02.000000+0000"),  # rounds up into the next second
    ],
)
def test_iso_time(ts: float, text: str):
    assert iso_time(ts) == text
