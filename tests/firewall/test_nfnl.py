# The netlink route for element changes (sipdeflect.firewall.nfnl): the encoding against
# what nft itself sends (a strace capture), the splitting of big runs into messages, and
# against the real kernel in a throwaway namespace: both families with their timeouts,
# deletions, atomicity when a message in the middle of a batch fails, and the fallback.
from __future__ import annotations

import errno
import ipaddress
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipdeflect.errors import FirewallError
from sipdeflect.firewall import nfnl, nftables
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import Element, FirewallSettings, Network, SetName
from sipdeflect.firewall.nftables import NftablesBackend
from sipdeflect.firewall.plan import (
    Plan,
    Put,
    Remove,
    plan_allow,
    plan_block,
    plan_deflect,
    plan_setup,
)
from sipdeflect.lab.netns import Netns, hosts

net = ipaddress.ip_network
VECTOR = Path(__file__).parent.parent / "vectors" / "nft" / "setelem-batch.strace"
SETTINGS = FirewallSettings()


def strace_bytes(path: Path) -> bytes:
    hexdump = re.findall(r"^ \| [0-9a-f]{5}  ((?:[0-9a-f]{2} {1,2}){1,16})", path.read_text(), re.M)
    return bytes.fromhex("".join(line.replace(" ", "") for line in hexdump))


def messages(data: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(data):
        (length,) = struct.unpack_from("=I", data, off)
        out.append(data[off : off + length])
        off += (length + 3) & ~3
    return out


def attrs(data: bytes, off: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each netlink attribute in data[off:]."""
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        yield kind & 0x3FFF, data[off + 4 : off + length]
        off += (length + 3) & ~3


def without_set_id(msg: bytes) -> bytes:
    """nft also names the set by its transaction id (NFTA_SET_ELEM_LIST_SET_ID, 4), which
    only matters for a set created in the same batch; we send the name alone."""
    body = b""
    off = 20
    while off < len(msg):
        length, kind = struct.unpack_from("=HH", msg, off)
        step = (length + 3) & ~3
        if kind != 4:
            body += msg[off : off + step]
        off += step
    return struct.pack("=I", 20 + len(body)) + msg[4:20] + body


def without_ack(msg: bytes) -> bytes:
    """We ask for an ACK on the last element message (nft reads errors only)."""
    (flags,) = struct.unpack_from("=H", msg, 6)
    return msg[:6] + struct.pack("=H", flags & ~nfnl.NLM_F_ACK) + msg[8:]


def test_batch_matches_what_nft_sends() -> None:
    theirs = [without_set_id(m) for m in messages(strace_bytes(VECTOR))]
    keys4 = ipaddress.ip_address("198.51.100.7").packed + ipaddress.ip_address("203.0.113.9").packed
    runs = [
        nfnl.ElemRun(False, "block4", 4, keys4, struct.pack(">2Q", 3_600_000, 90_000)),
        nfnl.ElemRun(False, "block6", 16, ipaddress.ip_address("2001:db8::7").packed, 60_000),
        nfnl.ElemRun(True, "block4", 4, ipaddress.ip_address("198.51.100.7").packed),
    ]
    ours = messages(nfnl.encode_batch("sipdeflect", runs, seq=0).data)
    assert len(ours) == len(theirs) == 5
    assert struct.unpack_from("=H", ours[3], 6)[0] & nfnl.NLM_F_ACK
    assert [without_ack(m) for m in ours] == theirs


def test_plan_to_runs_matches_the_same_capture() -> None:
    a = net("198.51.100.7/32")
    put4 = Put.of(SetName.BLOCK, (Element(a, 3600), Element(net("203.0.113.9/32"), 90)))
    put6 = Put.of(SetName.BLOCK, (Element(net("2001:db8::7/128"), 60),))
    runs = nftables.netlink_runs(Plan((put4, put6)))
    assert runs is not None
    theirs = messages(strace_bytes(VECTOR))
    ours = messages(nfnl.encode_batch("sipdeflect", runs, seq=0).data)
    assert [without_ack(m) for m in ours[1:3]] == [without_set_id(m) for m in theirs[1:3]]


def test_big_runs_are_split_into_messages_the_kernel_accepts() -> None:
    n = 5000
    keys = b"".join(struct.pack(">I", 0x0A000000 + i) for i in range(n))
    tmos = struct.pack(f">{n}Q", *(1000 * (i % 7 + 1) for i in range(n)))
    batch = nfnl.encode_batch("t", [nfnl.ElemRun(False, "block4", 4, keys, tmos)], seq=40)
    msgs = messages(batch.data)
    begin, *body, end = msgs
    assert struct.unpack_from("=HH", begin, 4) == (nfnl.NFNL_MSG_BATCH_BEGIN, nfnl.NLM_F_REQUEST)
    assert struct.unpack_from("=H", end, 4)[0] == nfnl.NFNL_MSG_BATCH_END
    assert len(body) == 3  # 28-byte elements, at most 64 KiB of them per message
    seen_keys, seen_tmos = b"", b""
    for i, msg in enumerate(body):
        _, _, flags, seq = struct.unpack_from("=IHHI", msg)
        assert seq == 41 + i
        assert batch.runs[seq].set == "block4"
        assert bool(flags & nfnl.NLM_F_ACK) == (i == len(body) - 1)
        top = dict(attrs(msg, 20))
        assert (top[1], top[2]) == (b"t\0", b"block4\0")
        assert len(top[3]) + 4 <= 0xFFFF
        for index, (kind, elem) in enumerate(attrs(top[3]), start=1):
            assert kind == index  # numbered per message, as libnftnl does
            inner = dict(attrs(elem))
            seen_tmos += inner[nfnl.NFTA_SET_ELEM_TIMEOUT]
            seen_keys += dict(attrs(inner[nfnl.NFTA_SET_ELEM_KEY]))[nfnl.NFTA_DATA_VALUE]
    assert seen_keys == keys
    assert seen_tmos == tmos
    assert (batch.first_seq, batch.last_seq) == (40, 43)


def test_runs_from_plans() -> None:
    a, b, c = net("198.51.100.7/32"), net("198.51.100.8/32"), net("2001:db8::9/128")
    put = Put.of(SetName.DEFLECT, (Element(a, 60), Element(b, None), Element(c, 5)))
    runs = nftables.netlink_runs(Plan((Remove(SetName.BLOCK, (a, c)), put)))
    assert runs == [
        nfnl.ElemRun(False, "block4", 4, a.network_address.packed),
        nfnl.ElemRun(False, "block6", 16, c.network_address.packed),
        nfnl.ElemRun(True, "block4", 4, a.network_address.packed),
        nfnl.ElemRun(True, "block6", 16, c.network_address.packed),
        nfnl.ElemRun(False, "deflect4", 4, a.network_address.packed, 60_000),
        nfnl.ElemRun(False, "deflect4", 4, b.network_address.packed, None),
        nfnl.ElemRun(False, "deflect6", 16, c.network_address.packed, 5_000),
    ]
    # Anything an interval set holds stays with nft: prefixes, and the allow sets.
    assert nftables.netlink_runs(plan_block([a, net("203.0.113.0/24")], 60)) is None
    assert nftables.netlink_runs(plan_allow([a])) is None
    assert nftables.netlink_runs(plan_setup(SETTINGS)) == []


def test_kernel_error_reply_is_read() -> None:
    # The kernel's answer to a NEWSETELEM (seq 3) for a set that does not exist, captured
    # with strace -e read=all from a real send (NETLINK_CAP_ACK, NETLINK_EXT_ACK).
    captured = bytes.fromhex(
        "2c00000002000003030000008b460000feffffff540000000c0a050403000000000000000800020024000000"
    )
    assert list(nfnl.parse_replies(captured)) == [nfnl.Reply(3, errno.ENOENT, "")]
    run = nfnl.ElemRun(False, "nosuchset", 4, bytes(4))
    assert nfnl.explain(nfnl.Reply(3, errno.ENOENT, ""), run, "sipdeflect") == (
        "nftables netlink: adding elements to set inet sipdeflect nosuchset failed: "
        "no such table or set; nothing was changed"
    )


# -- against the kernel -------------------------------------------------------------------


@pytest.fixture
def ns(netns_ok: None) -> Iterator[Netns]:
    with hosts("nfnl") as (host,):
        yield host


def backend(ns: Netns, *, netlink: bool = True) -> NftablesBackend:
    be = get_backend("nftables", SETTINGS, Runner(netns=ns.name, netlink=netlink))
    assert isinstance(be, NftablesBackend)
    return be


def members(be: NftablesBackend, s: SetName) -> dict[Network, int | None]:
    return {x.target: x.timeout for x in be.list([s])}


def test_elements_reach_the_kernel_with_their_timeouts(ns: Netns) -> None:
    be = backend(ns)
    be.apply(plan_setup(SETTINGS))
    a4, b4, c4 = net("198.51.100.7/32"), net("198.51.100.8/32"), net("203.0.113.9/32")
    a6, b6 = net("2001:db8::7/128"), net("2001:db8::8/128")
    be.apply(plan_block([a4, b4, a6], 600))
    assert be.last_route == "netlink"
    elems = (Element(c4, 60), Element(b6, 3600), Element(net("198.51.100.9/32"), None))
    be.apply(Plan((Put.of(SetName.DEFLECT, elems),)))
    assert be.last_route == "netlink"
    assert members(be, SetName.BLOCK) == {a4: 600, b4: 600, a6: 600}
    assert members(be, SetName.DEFLECT) == {c4: 60, b6: 3600, net("198.51.100.9/32"): None}
    expires = {x.target: x.expires for x in be.list([SetName.BLOCK])}
    assert all(e is not None and 590 <= e <= 600 for e in expires.values())

    be.apply(plan_deflect([a4, a6], 120))  # removes from block, adds to deflect
    assert be.last_route == "netlink"
    assert members(be, SetName.BLOCK) == {b4: 600}
    assert members(be, SetName.DEFLECT)[a6] == 120
    be.apply(Plan((Remove(SetName.BLOCK, (b4, net("192.0.2.99/32"))),)))  # one is absent
    assert members(be, SetName.BLOCK) == {}


def test_many_elements_in_one_batch(ns: Netns) -> None:
    be = backend(ns)
    be.apply(plan_setup(SETTINGS))
    v4 = [net(f"10.1.{i // 256}.{i % 256}/32") for i in range(5000)]
    v6 = [net(f"2001:db8::{i:x}/128") for i in range(3000)]
    be.apply(plan_block([*v4, *v6], 900))
    assert be.last_route == "netlink"
    got = members(be, SetName.BLOCK)
    assert set(got) == {*v4, *v6}
    assert set(got.values()) == {900}


def test_a_failing_message_mid_batch_changes_nothing(ns: Netns) -> None:
    be = backend(ns)
    be.apply(plan_setup(SETTINGS))
    before = net("192.0.2.50/32")
    be.apply(plan_block([before], 600))
    many = b"".join(struct.pack(">I", 0x0A020000 + i) for i in range(5000))  # 3 messages
    runs = [
        nfnl.ElemRun(False, "block4", 4, many, 60_000),
        nfnl.ElemRun(False, "nosuchset", 4, many[:4], 60_000),
        nfnl.ElemRun(True, "block4", 4, before.network_address.packed),
        nfnl.ElemRun(False, "deflect4", 4, many[4:8], 60_000),
    ]
    with pytest.raises(
        FirewallError, match=r"set inet sipdeflect nosuchset .*no such table or set"
    ):
        nfnl.send(nfnl.encode_batch(SETTINGS.table, runs), SETTINGS.table, ns.name)
    assert members(be, SetName.BLOCK) == {before: 600}
    assert members(be, SetName.DEFLECT) == {}


def test_missing_table_is_a_clear_error(ns: Netns) -> None:
    be = backend(ns)
    with pytest.raises(FirewallError, match="is missing; run `sipdeflect firewall setup` first"):
        be.apply(plan_block([net("198.51.100.7/32")], 60))
    runs = nftables.netlink_runs(plan_block([net("198.51.100.7/32")], 60))
    batch = nfnl.encode_batch(SETTINGS.table, runs or [])
    with pytest.raises(FirewallError, match="block4 failed: no such table or set"):
        nfnl.send(batch, SETTINGS.table, ns.name)


def test_nft_route_when_asked_or_needed(ns: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    be = backend(ns, netlink=False)
    be.apply(plan_setup(SETTINGS))
    be.apply(plan_block([net("198.51.100.7/32")], 60))
    assert be.last_route == "nft"
    be = backend(ns)
    be.apply(plan_block([net("198.51.100.8/32"), net("203.0.113.0/24")], 60))  # a prefix
    assert be.last_route == "nft"

    # A kernel or sandbox without nf_tables netlink cannot be had here, so the socket is
    # refused by a stand-in; the apply must then go through nft and still land.
    def refuse(netns: str | None) -> object:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(nfnl, "_open", refuse)
    be.apply(plan_block([net("198.51.100.9/32")], 60))
    assert be.last_route == "nft"
    assert set(members(be, SetName.BLOCK)) == {
        net("198.51.100.7/32"),
        net("198.51.100.8/32"),
        net("198.51.100.9/32"),
        net("203.0.113.0/24"),
    }


KEPT_SOCKET = """
import ipaddress, threading
from sipdeflect.errors import FirewallError
from sipdeflect.firewall import nfnl
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import FirewallSettings
from sipdeflect.firewall.plan import plan_block, plan_deflect, plan_setup
s = FirewallSettings()
be = get_backend("nftables", s, Runner())
be.apply(plan_setup(s))
a, b = ipaddress.ip_network("198.51.100.7/32"), ipaddress.ip_network("198.51.100.8/32")
be.apply(plan_block([a, b], 600))
sock = nfnl._mine.get(threading.get_ident())
be.apply(plan_deflect([a], 60))  # deletes from block: closing would wait ~10 ms
assert sock is not None
assert nfnl._mine.get(threading.get_ident()) is sock
bad = nfnl.encode_batch(s.table, [nfnl.ElemRun(False, "nosuchset", 4, a.network_address.packed)])
try:
    nfnl.send(bad, s.table)
except FirewallError as exc:
    print("refused:", exc)
be.apply(plan_deflect([b], 60))
print(be.last_route)
"""


def test_the_daemons_kept_socket_survives_errors(ns: Netns) -> None:
    # The daemon runs inside its namespace (netns None): one socket per thread is kept
    # open between decisions; a refused batch must not leave replies that confuse the next.
    out = ns.run([sys.executable, "-c", KEPT_SOCKET]).stdout
    assert "refused: nftables netlink: adding elements to set inet sipdeflect nosuchset" in out
    assert out.splitlines()[-1] == "netlink"
    be = backend(ns)
    assert members(be, SetName.BLOCK) == {}
    assert set(members(be, SetName.DEFLECT)) == {net("198.51.100.7/32"), net("198.51.100.8/32")}
