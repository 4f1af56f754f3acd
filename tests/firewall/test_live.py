# Real kernel behaviour, per Linux backend, in throwaway namespaces: deflect reaches the
# decoy, block reaches nothing, allow always reaches the PBX (both families); elements
# expire; teardown leaves the user's ruleset as found; stale flows are killed.
from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from sipdeflect.firewall.backend import Runner, get_backend, own_addresses
from sipdeflect.firewall.model import Element, SetName
from sipdeflect.firewall.plan import (
    Plan,
    Put,
    plan_allow,
    plan_block,
    plan_deflect,
    plan_release,
    plan_setup,
    plan_teardown,
)

from .conftest import LINUX_BACKENDS, SETTINGS, SRC4, SRC6, Lab

net = ipaddress.ip_network

USER_NFT = """table inet userfw {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto ipv6-icmp accept
    udp dport { 5060, 5070 } accept
  }
}
"""


def ruleset(lab: Lab) -> str:
    return lab.pbx.run(["nft", "list", "ruleset"]).stdout


def iptables_rules(lab: Lab) -> list[str]:
    """Rules and user chains of both families; empty built-in tables are ignored."""
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        out += [
            f"{tool} {line}"
            for line in lab.pbx.run([tool]).stdout.splitlines()
            if line.startswith("-A") or (line.startswith(":") and "ACCEPT" not in line)
        ]
    return out


@pytest.mark.parametrize("backend", LINUX_BACKENDS)
def test_deflect_block_allow_both_families(lab: Lab, backend: str) -> None:
    be = lab.backend(backend)
    be.apply(plan_setup(SETTINGS))
    own = own_addresses(lab.runner())
    d4, b4, a4, n4 = SRC4[:4]
    d6, b6, a6, n6 = SRC6[:4]
    be.apply(plan_allow([net(a4), net(a6)]))
    be.apply(plan_deflect([net(d4), net(d6)], 60, own=own))
    be.apply(plan_block([net(b4), net(b6)], 60, own=own))
    # Force the allowlisted hosts into block and deflect behind the planner's back:
    # the kernel rules themselves must let allow win.
    for s in (SetName.BLOCK, SetName.DEFLECT):
        be.apply(Plan((Put.of(s, (Element(net(a4), 60), Element(net(a6), 60))),)))
    seen = {src: lab.probe(lab.sender(src)) for src in (d4, b4, a4, n4, d6, b6, a6, n6)}
    assert seen == {
        d4: "decoy",
        d6: "decoy",
        b4: None,
        b6: None,
        a4: "pbx",
        a6: "pbx",
        n4: "pbx",
        n6: "pbx",
    }
    listed = {(x.set, str(x.target.network_address)) for x in be.list()}
    assert {(SetName.DEFLECT, d4), (SetName.BLOCK, b6), (SetName.ALLOW, a4)} <= listed
    blocked = [x for x in be.list([SetName.BLOCK]) if str(x.target.network_address) == b4]
    assert blocked[0].packets == 1  # per-element counter saw the dropped probe
    be.apply(plan_release([net(d4), net(b4)]))
    assert lab.probe(lab.sender(d4)) == "pbx"
    assert lab.probe(lab.sender(b4)) == "pbx"
    be.apply(plan_teardown(SETTINGS))


@pytest.mark.parametrize("backend", LINUX_BACKENDS)
def test_prefix_block_and_deflect(lab: Lab, backend: str) -> None:
    be = lab.backend(backend)
    be.apply(plan_setup(SETTINGS))
    be.apply(plan_block([net("192.0.2.12/30")], 60))  # .12-.15
    be.apply(plan_deflect([net("2001:db8::10/126")], 60))  # ::10-::13
    assert lab.probe(lab.sender(SRC4[3])) is None  # .13
    assert lab.probe(lab.sender(SRC4[0])) == "pbx"  # .10
    assert lab.probe(lab.sender("2001:db8::12")) == "decoy"
    assert lab.probe(lab.sender("2001:db8::14")) == "pbx"
    be.apply(plan_teardown(SETTINGS))


@pytest.mark.parametrize("backend", LINUX_BACKENDS)
def test_elements_expire_on_time(lab: Lab, backend: str) -> None:
    be = lab.backend(backend)
    be.apply(plan_setup(SETTINGS))
    be.apply(plan_deflect([net(SRC4[0]), net(SRC6[0])], 2))
    be.apply(plan_block([net(SRC4[1])], 2))
    start = time.monotonic()
    assert lab.probe(lab.sender(SRC4[0])) == "decoy"
    assert lab.probe(lab.sender(SRC6[0])) == "decoy"
    assert lab.probe(lab.sender(SRC4[1])) is None
    while be.list() and time.monotonic() - start < 10:
        time.sleep(0.25)
    assert be.list() == []
    assert 1.5 < time.monotonic() - start < 10
    assert lab.probe(lab.sender(SRC4[0])) == "pbx"
    assert lab.probe(lab.sender(SRC6[0])) == "pbx"
    assert lab.probe(lab.sender(SRC4[1])) == "pbx"
    be.apply(plan_teardown(SETTINGS))


@pytest.mark.parametrize("backend", LINUX_BACKENDS)
def test_setup_teardown_idempotent_and_leave_user_rules(lab: Lab, backend: str) -> None:
    lab.pbx.run(["nft", "-f", "-"], input_=USER_NFT)
    lab.pbx.run(["iptables", "-A", "INPUT", "-s", "198.51.100.7", "-j", "DROP"])
    before_nft, before_ipt = ruleset(lab), iptables_rules(lab)
    be = lab.backend(backend)
    be.apply(plan_teardown(SETTINGS))  # nothing there yet: a no-op
    be.apply(plan_setup(SETTINGS))
    be.apply(plan_block([net(SRC4[0])], 60))
    first = be.show()
    be.apply(plan_setup(SETTINGS))  # again: same rules, elements kept
    assert be.show().count("SIPDEFLECT") == first.count("SIPDEFLECT")
    assert [x.target for x in be.list()] == [net(SRC4[0])]
    assert be.installed()
    be.apply(plan_teardown(SETTINGS))
    be.apply(plan_teardown(SETTINGS))
    assert not be.installed()
    assert iptables_rules(lab) == before_ipt
    if backend == "nftables":
        assert ruleset(lab) == before_nft
    else:  # iptables-nft leaves its (empty, ACCEPT) raw and nat tables registered
        assert "table inet userfw" in ruleset(lab)


@pytest.mark.parametrize("backend", LINUX_BACKENDS)
def test_stale_flow_is_cut_on_deflect_and_block(lab: Lab, backend: str) -> None:
    # The PBX namespace's own ruleset accepts `ct state established` first.
    lab.pbx.run(["nft", "-f", "-"], input_=USER_NFT)
    be = lab.backend(backend)
    be.apply(plan_setup(SETTINGS))
    for src in (SRC4[0], SRC6[0]):
        fam = socket.AF_INET6 if ":" in src else socket.AF_INET
        scanner = lab.sender(src, 40000)  # one fixed source port, like a real flood
        assert lab.probe(scanner) == "pbx"
        # The PBX answers: the flow is now established in conntrack.
        pbx_sock = lab.listeners[(fam, 5060)]
        pbx_sock.sendto(b"SIP/2.0 401 Unauthorized", (src, 40000))
        scanner.settimeout(5)
        assert scanner.recvfrom(2048)[0].startswith(b"SIP/2.0 401")
        assert lab.probe(scanner) == "pbx"
        flows = lab.pbx.run(["conntrack", "-L", "-s", src]).stdout
        assert "sport=40000" in flows
        assert "UNREPLIED" not in flows
        # The trap: adding to the deflect set alone does not touch the established flow.
        be.apply(Plan((Put.of(SetName.DEFLECT, (Element(net(src), 60),)),)))
        assert lab.probe(scanner) == "pbx"
        # The real deflect kills the flow: the very next packet goes to the decoy.
        be.apply(plan_deflect([net(src)], 60))
        assert lab.probe(scanner) == "decoy"
        # Block: nothing reaches either socket, established or not.
        be.apply(plan_block([net(src)], 60))
        assert lab.probe(scanner) is None
        assert lab.probe(scanner) is None
    be.apply(plan_teardown(SETTINGS))


@pytest.mark.parametrize("backend", LINUX_BACKENDS)
def test_a_pbx_answer_in_flight_cannot_pull_a_deflected_flow_back(lab: Lab, backend: str) -> None:
    """The race the end-to-end lab hit (svcrack kept reaching Kamailio after its deflect):
    the PBX answers a request that arrived just before the flow was flushed, and its
    answer creates a new conntrack entry PBX -> scanner, whose reply direction the
    scanner's next packets then match, un-NATed, to the PBX. Answers from the SIP ports
    to a deflected address are dropped before conntrack, so no such entry appears."""
    be = lab.backend(backend)
    be.apply(plan_setup(SETTINGS))
    for src in (SRC4[0], SRC6[0]):
        fam = socket.AF_INET6 if ":" in src else socket.AF_INET
        scanner = lab.sender(src, 40001)
        assert lab.probe(scanner) == "pbx"
        be.apply(plan_deflect([net(src)], 60))
        with pytest.raises(PermissionError):  # dropped on output: the kernel says EPERM
            lab.listeners[(fam, 5060)].sendto(b"SIP/2.0 401 Unauthorized", (src, 40001))
        scanner.settimeout(0.5)
        with pytest.raises(TimeoutError):
            scanner.recvfrom(2048)  # the late answer never leaves the PBX
        for _ in range(3):
            assert lab.probe(scanner) == "decoy"
        flows = lab.pbx.run(["conntrack", "-L", "-d", src]).stdout
        assert "sport=5060 dport=40001" not in flows, flows
    be.apply(plan_teardown(SETTINGS))


def test_iptables_legacy_variant_blocks_and_deflects(lab: Lab) -> None:
    be = lab.backend("iptables-legacy")
    be.apply(plan_setup(SETTINGS))
    be.apply(plan_deflect([net(SRC4[0])], 60))
    be.apply(plan_block([net(SRC6[1])], 60))
    assert lab.probe(lab.sender(SRC4[0])) == "decoy"
    assert lab.probe(lab.sender(SRC6[1])) is None
    assert lab.probe(lab.sender(SRC4[2])) == "pbx"
    be.apply(plan_teardown(SETTINGS))
    assert "SIPDEFLECT" not in lab.pbx.run(["iptables-legacy-save"]).stdout


def test_nft_apply_never_lists_the_whole_table(lab: Lab) -> None:
    # `nft list tables/ruleset/table` fetch every set element: with a million blocks that
    # took over a minute per call. Applying must only ever read the small sets it needs.
    log: list[list[str]] = []
    be = get_backend("nftables", SETTINGS, Runner(netns=lab.pbx.name, log=log))
    be.apply(plan_setup(SETTINGS))
    targets = [net(f"198.51.{i // 256}.{i % 256}") for i in range(2000)]
    be.apply(plan_block(targets, 600))
    be.apply(plan_deflect([net("203.0.113.0/24")], 60))
    assert be.installed()
    listings = [argv for argv in log if "list" in argv]
    assert listings, "expected the cheap per-set existence check"
    for argv in listings:
        assert argv[argv.index("list") + 1] == "set", argv
        # allow4 / dropped4 (existence checks; the meter holds at most DROPPED_SIZE) or an
        # interval set of prefixes, never a hash set of single addresses (the millions)
        assert argv[-1] in {"allow4", "dropped4"} or argv[-1].endswith("_net"), argv

    be.apply(plan_teardown(SETTINGS))
    assert not be.installed()
