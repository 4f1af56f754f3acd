# Listing set elements over netlink (sipdeflect.firewall.nfnl.list_set, used by
# NftablesBackend.list for the hash sets): the reply parser on datagrams captured from the
# kernel (tests/vectors/nft/setelem-dump.txt), cut short and garbled, which must only ever
# raise FirewallError; and against the real kernel in throwaway namespaces, where the
# netlink listing must equal what `nft -j list set` + parse_elements gives, counters
# included after real packets were dropped.
from __future__ import annotations

import errno
import ipaddress
import random
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipdeflect.errors import FirewallError
from sipdeflect.firewall import nfnl
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import Element, FirewallSettings, Listed, Network, SetName
from sipdeflect.firewall.nftables import NftablesBackend, listed_rows
from sipdeflect.firewall.plan import Plan, Put, plan_block, plan_setup
from sipdeflect.lab.netns import Netns, hosts

from .conftest import SRC4, SRC6, Lab

net = ipaddress.ip_network
VECTOR = Path(__file__).parent.parent / "vectors" / "nft" / "setelem-dump.txt"
SETTINGS = FirewallSettings()


def captured() -> dict[str, tuple[int, list[bytes]]]:
    """set name -> (dump sequence number, the datagrams the kernel sent)."""
    out: dict[str, tuple[int, list[bytes]]] = {}
    current = ""
    for line in VECTOR.read_text().splitlines():
        if line.startswith("# set "):
            name, seq = line[len("# set ") :].split(", seq ")
            current = name
            out[name] = (int(seq), [])
        elif line and not line.startswith("#"):
            out[current][1].append(bytes.fromhex(line))
    return out


def parse_all(seq: int, datagrams: list[bytes]) -> nfnl.Elements:
    out = nfnl.Elements()
    done = [nfnl.parse_dump(d, seq, out) for d in datagrams]
    assert done == [False] * (len(datagrams) - 1) + [True]
    return out


def ms_to_s(values: list[int | None]) -> list[int | None]:
    return [None if v is None else v // 1000 for v in values]


def test_parse_captured_dumps() -> None:
    dumps = captured()
    ip = ipaddress.ip_address

    # block4 mixes an element without a timeout: walked element by element.
    b4 = parse_all(*dumps["block4"])
    assert b4.key_len == 4
    rows = dict(zip([ip(k) for k in b4.keys], zip(*_columns(b4), strict=True), strict=True))
    assert rows.keys() == {ip("198.51.100.7"), ip("203.0.113.9"), ip("198.51.100.8")}
    assert rows[ip("198.51.100.7")][0] == 3_600_000
    assert rows[ip("198.51.100.7")][2:] == (3, 114)
    assert rows[ip("203.0.113.9")][0] == 90_000
    assert rows[ip("203.0.113.9")][2:] == (0, 0)
    assert rows[ip("198.51.100.8")] == (None, None, 0, 0)
    # time left, in whole seconds as nft printed it at the time
    assert {ip(k): e for k, e in zip(b4.keys, ms_to_s(b4.expires), strict=True)} == {
        ip("198.51.100.7"): 3599,
        ip("203.0.113.9"): 89,
        ip("198.51.100.8"): None,
    }

    # block6 and deflect4: one layout, read as columns.
    b6 = parse_all(*dumps["block6"])
    assert b6.key_len == 16
    assert [ip(k) for k in b6.keys] == [ip("2001:db8::7"), ip("2001:db8::8")]
    assert (b6.timeouts, ms_to_s(b6.expires)) == ([60_000, 60_000], [59, 59])
    assert (b6.packets, b6.bytes) == ([2, 0], [116, 0])
    d4 = parse_all(*dumps["deflect4"])
    assert sorted(ip(k) for k in d4.keys) == [ip("192.0.2.50"), ip("192.0.2.51")]
    assert (d4.timeouts, ms_to_s(d4.expires)) == ([600_000] * 2, [599] * 2)
    assert (d4.packets, d4.bytes) == ([0, 0], [0, 0])
    assert not any(x.interrupted for x in (b4, b6, d4))

    rows6 = listed_rows(SetName.BLOCK, b6)
    assert rows6[0] == Listed(SetName.BLOCK, net("2001:db8::7/128"), 60, 59, 2, 116)


def _columns(e: nfnl.Elements) -> list[list[int | None]]:
    return [e.timeouts, e.expires, e.packets, e.bytes]


def test_columns_equal_the_element_walk() -> None:
    # The column reader and the element-by-element walk agree on a uniform message.
    for name in ("block6", "deflect4"):
        seq, (first, *_) = captured()[name]
        fast = nfnl.Elements()
        nfnl.parse_dump(first, seq, fast)
        slow = nfnl.Elements(key_len=fast.key_len)
        elems = next(s for t, s, _ in nfnl._attrs(first, 20, len(first)) if t == 3)
        end = next(e for t, _, e in nfnl._attrs(first, 20, len(first)) if t == 3)
        for _, s, e in nfnl._attrs(first, elems, end):
            nfnl._one(first, nfnl._element(first, s, e), slow)
        assert len(fast) == 2
        assert (fast.keys, *_columns(fast)) == (slow.keys, *_columns(slow))


def test_kernel_error_in_a_dump() -> None:
    seq, (reply,) = captured()["nosuchset"]
    with pytest.raises(nfnl.DumpError, match="no such table or set") as info:
        nfnl.parse_dump(reply, seq, nfnl.Elements())
    assert info.value.errno == errno.ENOENT


def test_other_sequence_numbers_are_skipped() -> None:
    seq, datagrams = captured()["block6"]
    out = nfnl.Elements()
    assert not any(nfnl.parse_dump(d, seq + 1, out) for d in datagrams)
    assert len(out) == 0


def test_truncated_or_garbled_replies_raise_firewall_error_only() -> None:
    dumps = captured()
    cases = 0
    for seq, datagrams in dumps.values():
        for d in datagrams:
            ends = {0}
            off = 0
            while off < len(d):  # cutting between messages is not an error
                off += (int.from_bytes(d[off : off + 4], sys.byteorder) + 3) & ~3
                ends.add(off)
            for cut in range(len(d)):
                if cut in ends:
                    continue
                with pytest.raises(nfnl.DumpError, match="malformed set element dump"):
                    nfnl.parse_dump(d[:cut], seq, nfnl.Elements())
                cases += 1
    # A key claiming more than its element holds, and a value shorter than a header: the
    # first element of block6 starts at 52 (after the table and set names), its key at 56.
    seq, (first, _) = dumps["block6"]
    assert first[52:64] == bytes.fromhex("600001001800010014000100")
    for at, value in ((56, b"\xff\x00"), (60, b"\x02\x00")):
        bad = first[:at] + value + first[at + 2 :]
        with pytest.raises(FirewallError, match="malformed"):
            nfnl.parse_dump(bad, seq, nfnl.Elements())
    # Random garbling: whatever happens, nothing but FirewallError escapes.
    rng = random.Random(1)
    all_datagrams = [(seq, d) for seq, ds in dumps.values() for d in ds]
    for _ in range(3000):
        seq, d = rng.choice(all_datagrams)
        raw = bytearray(d)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        try:
            nfnl.parse_dump(bytes(raw), seq, nfnl.Elements())
        except FirewallError:
            cases += 1
    assert cases > 1000


# -- against the kernel -------------------------------------------------------------------


@pytest.fixture
def ns(netns_ok: None) -> Iterator[Netns]:
    with hosts("nflist") as (host,):
        yield host


def backend(
    name: str, *, netlink: bool = True, log: list[list[str]] | None = None
) -> NftablesBackend:
    be = get_backend("nftables", SETTINGS, Runner(netns=name, netlink=netlink, log=log))
    assert isinstance(be, NftablesBackend)
    return be


def by_target(rows: list[Listed]) -> dict[tuple[SetName, Network], Listed]:
    out = {(x.set, x.target): x for x in rows}
    assert len(out) == len(rows)
    return out


def assert_same(ours: list[Listed], nfts: list[Listed]) -> None:
    a, b = by_target(ours), by_target(nfts)
    assert a.keys() == b.keys()
    for k, x in a.items():
        y = b[k]
        assert (x.timeout, x.packets, x.bytes) == (y.timeout, y.packets, y.bytes), k
        assert (x.expires is None) == (y.expires is None), k
        if x.expires is not None and y.expires is not None:
            assert abs(x.expires - y.expires) <= 1, k


def test_netlink_listing_equals_nft_with_counters(lab: Lab) -> None:
    name = lab.pbx.name
    ran: list[list[str]] = []
    be, ref = backend(name, log=ran), backend(name, netlink=False)
    be.apply(plan_setup(SETTINGS))
    # Neighbour discovery first: it would use a blocked source, be dropped and counted.
    assert lab.probe(lab.sender(SRC6[5])) == "pbx"
    # Blocked sources that will send, some that will not, one without a timeout, a
    # deflected pair, and a prefix (an interval set, still listed by nft).
    be.apply(plan_block([net(a) for a in (*SRC4[:3], *SRC6[:3])], 600))
    extra = (
        Element(net("198.51.100.7/32"), None),
        Element(net("2001:db8:1::7/128"), 90),
        Element(net("203.0.113.0/24"), 300),
    )
    be.apply(Plan((Put.of(SetName.BLOCK, extra),)))
    deflected = (Element(net(SRC4[4]), 120), Element(net(SRC6[4]), None))
    be.apply(Plan((Put.of(SetName.DEFLECT, deflected),)))
    # (The deflect rule is in a nat chain, which sees only a flow's first packet.)
    sent = {SRC4[0]: 3, SRC4[1]: 1, SRC6[0]: 2, SRC4[4]: 1}
    for src, count in sent.items():
        sock = lab.sender(src)
        dst = "2001:db8::1" if ":" in src else "192.0.2.1"
        for i in range(count):
            sock.sendto(b"x" * (20 + i), (dst, 5060))
    # The drops happen on the way in; the deflected ones reach the decoy.
    # Free sources, sent after the rest.
    assert lab.probe(lab.sender(SRC4[5])) == "pbx"
    assert lab.probe(lab.sender(SRC6[5])) == "pbx"

    ran.clear()
    ours, nfts = be.list(), ref.list()
    # nft listed the interval sets only: the hash sets came over netlink
    assert {argv[-1] for argv in ran if argv[:2] == ["nft", "-j"]} == {
        "allow4",
        "allow6",
        "block4_net",
        "block6_net",
        "deflect4_net",
        "deflect6_net",
    }
    assert_same(ours, nfts)
    rows = by_target(ours)
    for src, count in sent.items():
        s = SetName.DEFLECT if src == SRC4[4] else SetName.BLOCK
        assert rows[s, net(src)].packets == count
        assert (rows[s, net(src)].bytes or 0) > 0
    assert rows[SetName.BLOCK, net(SRC4[2])].packets == 0
    assert rows[SetName.BLOCK, net("198.51.100.7/32")].timeout is None
    assert rows[SetName.DEFLECT, net(SRC6[4])].expires is None
    assert rows[SetName.BLOCK, net("203.0.113.0/24")].timeout == 300
    assert_same(be.list([SetName.BLOCK]), ref.list([SetName.BLOCK]))


def test_many_elements_over_several_messages(ns: Netns) -> None:
    be, ref = backend(ns.name), backend(ns.name, netlink=False)
    be.apply(plan_setup(SETTINGS))
    v4 = [net(f"10.1.{i // 256}.{i % 256}/32") for i in range(3000)]
    v6 = [net(f"2001:db8::{i:x}/128") for i in range(2000)]
    be.apply(plan_block([*v4, *v6], 900))
    be.apply(plan_block([net("10.2.0.1/32")], 60))
    # one element without a timeout: its message is walked element by element
    be.apply(Plan((Put.of(SetName.BLOCK, (Element(net("10.2.0.2/32"), None),)),)))
    found = nfnl.list_set(SETTINGS.table, "block4", ns.name)
    assert len(found) == 3002
    ours = be.list([SetName.BLOCK])
    assert_same(ours, ref.list([SetName.BLOCK]))
    assert {x.target for x in ours} == {*v4, *v6, net("10.2.0.1/32"), net("10.2.0.2/32")}


def test_empty_and_missing(ns: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    be = backend(ns.name)
    assert be.list() == []  # no table: nothing, as with nft
    be.apply(plan_setup(SETTINGS))
    assert len(nfnl.list_set(SETTINGS.table, "block6", ns.name)) == 0
    assert be.list() == []
    with pytest.raises(FirewallError, match="listing set inet sipdeflect nosuchset failed: no"):
        nfnl.list_set(SETTINGS.table, "nosuchset", ns.name)
    with pytest.raises(nfnl.DumpError, match="listing set inet nosuchtable block4") as info:
        nfnl.list_set("nosuchtable", "block4", ns.name)
    assert info.value.errno == errno.ENOENT

    # Without a netlink socket the listing goes through nft, with the same result.
    be.apply(plan_block([net("198.51.100.7/32")], 60))
    via_netlink = be.list()

    def refuse(netns: str | None) -> socket.socket:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(nfnl, "_open", refuse)
    with pytest.raises(nfnl.Unavailable):
        nfnl.list_set(SETTINGS.table, "block4", ns.name)
    assert_same(be.list(), via_netlink)


KEPT_SOCKET = """
import ipaddress, threading
from sipdeflect.errors import FirewallError
from sipdeflect.firewall import nfnl
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import FirewallSettings, SetName
from sipdeflect.firewall.plan import plan_block, plan_setup
s = FirewallSettings()
be = get_backend("nftables", s, Runner())
be.apply(plan_setup(s))
a, b = ipaddress.ip_network("198.51.100.7/32"), ipaddress.ip_network("198.51.100.8/32")
be.apply(plan_block([a], 600))
print(sorted(str(x.target.network_address) for x in be.list([SetName.BLOCK])))
try:
    nfnl.list_set(s.table, "nosuchset")
except FirewallError as exc:
    print("refused:", exc)
be.apply(plan_block([b], 600))
print(sorted(str(x.target.network_address) for x in be.list([SetName.BLOCK])))
print(nfnl._mine.get(threading.get_ident()) is not None)
"""


def test_listing_on_the_daemons_kept_socket(ns: Netns) -> None:
    # The daemon (netns None) keeps one socket per thread for batches and dumps alike;
    # a refused dump between them must not confuse what comes next.
    out = ns.run([sys.executable, "-c", KEPT_SOCKET]).stdout.splitlines()
    assert out == [
        "['198.51.100.7']",
        "refused: nftables netlink: listing set inet sipdeflect nosuchset failed: "
        "no such table or set",
        "['198.51.100.7', '198.51.100.8']",
        "True",
    ]
