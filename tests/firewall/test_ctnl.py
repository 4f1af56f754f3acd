"""ctnetlink without pyroute2 (firewall/ctnl.py): the dump agrees with conntrack(8) on a
real table in a namespace, a delete removes exactly the entries asked for (both
families, the zone kept), and a hostile or truncated answer raises CtnlError instead of
reading past the buffer."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

import pytest

from sipdeflect.firewall import conntrack
from sipdeflect.firewall.ctnl import Ctnl, CtnlError, Entry, parse_dump, parse_entry
from sipdeflect.firewall.model import parse_target
from sipdeflect.lab.netns import Netns, hosts, link

A4, B4, C4 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
A6, B6 = "2001:db8::1", "2001:db8::2"
# conntrack tracks only where a netfilter hook asks for it
TRACK = """table inet t {
  chain c {
    type filter hook input priority 0
    ct state new counter
  }
}
"""
ZONE = """table inet t {
  chain z {
    type filter hook prerouting priority -300
    ct zone set 7
  }
}
"""


def _flows(ns: Netns) -> set[tuple[str, str, str]]:
    """(src, dst, sport) of the original tuples, as conntrack(8) prints them."""
    out = ns.run(["conntrack", "-L"], check=False).stdout
    flows = set()
    for line in out.splitlines():
        words = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if "src" in words:
            first = line.split("src=", 1)[1].split()
            src, dst = first[0], first[1].removeprefix("dst=")
            sport = line.split("sport=", 1)[1].split()[0]
            flows.add((src, dst, sport))
    return flows


@pytest.fixture
def pair(netns_ok: None) -> Iterator[tuple[Netns, Netns]]:
    with hosts("cta", "ctb") as (a, b):
        link(a, [f"{A4}/24", f"{A6}/64"], b, [f"{B4}/24", f"{C4}/24", f"{B6}/64"])
        a.run(["nft", "-f", "-"], input_=TRACK)
        yield a, b


def _send(b: Netns, src: str, dst: str, sport: int) -> None:
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    s = b.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, sport))
    s.sendto(b"x", (dst, 5060))
    s.close()


def test_the_dump_matches_conntrack_and_a_delete_takes_only_its_targets(
    pair: tuple[Netns, Netns],
) -> None:
    a, b = pair
    _send(b, B4, A4, 40000)
    _send(b, C4, A4, 40001)
    _send(b, B6, A6, 40002)
    want = {(B4, A4, "40000"), (C4, A4, "40001"), (B6, A6, "40002")}
    assert want <= _flows(a)
    ct = Ctnl(a.name)
    try:
        got = {(e.src, e.dst) for e in ct.dump()}
    finally:
        ct.close()
    assert {(B4, A4), (C4, A4), (B6, A6)} <= got
    deleted = conntrack.flush_flows([parse_target(B4), parse_target("2001:db8::/64")], a.name)
    assert deleted >= 2
    left = _flows(a)
    assert (C4, A4, "40001") in left
    assert not {f for f in left if f[0] in (B4, B6)}
    # again: nothing left to delete, no error
    assert conntrack.flush_flows([parse_target(B4)], a.name) == 0


def test_a_zone_is_sent_back_with_the_tuple(pair: tuple[Netns, Netns]) -> None:
    a, b = pair
    a.run(["nft", "-f", "-"], input_=ZONE)
    _send(b, B4, A4, 40010)
    assert "zone=7" in a.run(["conntrack", "-L", "-s", B4]).stdout
    assert conntrack.flush_flows([parse_target(B4)], a.name) == 1
    assert B4 not in a.run(["conntrack", "-L"], check=False).stdout


def _msg(body: bytes, kind: int = 0x100, seq: int = 5) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 0) + body


def test_truncated_or_hostile_answers_never_read_past_the_buffer() -> None:
    ip = struct.pack("=HH", 8, 1) + bytes([192, 0, 2, 1])
    tuple_ip = struct.pack("=HH", 4 + len(ip), 0x8001) + ip
    orig = struct.pack("=HH", 4 + len(tuple_ip), 0x8001) + tuple_ip
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + orig
    assert parse_entry(body, 0, len(body)) is None  # no destination: not an entry
    dst = struct.pack("=HH", 8, 2) + bytes([192, 0, 2, 9])
    tuple_ip = struct.pack("=HH", 4 + len(ip + dst), 0x8001) + ip + dst
    orig = struct.pack("=HH", 4 + len(tuple_ip), 0x8001) + tuple_ip
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + orig
    entry = parse_entry(body, 0, len(body))
    assert entry == Entry(socket.AF_INET, "192.0.2.1", "192.0.2.9", orig)
    out: list[Entry] = []
    assert not parse_dump(_msg(body), 5, out)
    assert out == [entry]
    for cut in range(1, len(body)):  # every truncation: an entry, None or nothing, no crash
        parse_entry(body[:cut], 0, cut)
    bad = bytearray(_msg(body))
    struct.pack_into("=I", bad, 0, len(bad) + 100)  # claims more than the datagram holds
    with pytest.raises(CtnlError):
        parse_dump(bytes(bad), 5, [])
    err = _msg(struct.pack("=i", -errno.EPERM) + b"\0" * 16, kind=2)
    with pytest.raises(CtnlError) as exc:
        parse_dump(err, 5, [])
    assert exc.value.code == errno.EPERM
    assert parse_dump(_msg(b"", kind=3), 5, [])  # NLMSG_DONE
