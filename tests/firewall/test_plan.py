# Pure code: input parsing, planner validation, and the exact batches each backend
# would send (nftables JSON, ipset/iptables-restore text, pfctl argv). pf cannot run
# here, so these argv tests are all the coverage it has.
from __future__ import annotations

import io
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipdeflect.errors import UsageError
from sipdeflect.firewall import iptables, nftables, pf
from sipdeflect.firewall.dryrun import DryRunBackend
from sipdeflect.firewall.model import (
    Element,
    FirewallSettings,
    SetName,
    parse_duration,
    parse_target,
)
from sipdeflect.firewall.plan import (
    FlushFlows,
    Plan,
    Put,
    Remove,
    plan_allow,
    plan_block,
    plan_deflect,
    plan_release,
    plan_setup,
)

net = ipaddress.ip_network
ST = FirewallSettings(sip_ports=(5060, 5080), decoy_port=5070)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("192.0.2.5", "192.0.2.5/32"),
        (" 2001:DB8::5 ", "2001:db8::5/128"),
        ("198.51.100.0/24", "198.51.100.0/24"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_parse_target_normalises(text: str, want: str) -> None:
    assert parse_target(text) == net(want)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0.0.0.0/0", "too wide"),
        ("10.0.0.0/7", "too wide"),
        ("2001:db8::/31", "too wide"),
        ("example.org", "not an IP"),
        ("192.0.2.5/24", "did you mean 192.0.2.0/24"),
        ("", "not an IP"),
    ],
)
def test_parse_target_rejects(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_target(text)


def test_parse_duration() -> None:
    assert [parse_duration(x) for x in ("90", "90s", "15m", "1h30m", "2d")] == [
        90,
        90,
        900,
        5400,
        172800,
    ]
    for bad in ("", "0", "1x", "h", "-5", "30d"):
        with pytest.raises(UsageError):
            parse_duration(bad)


@given(st.ip_addresses())
def test_any_single_address_round_trips(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert parse_target(str(addr)).network_address == addr


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("203.0.113.9", "overlaps allowlisted 203.0.113.0/24"),
        ("203.0.0.0/16", "overlaps allowlisted"),
        ("192.0.2.1", "own address"),
        ("192.0.2.0/24", "own address"),
        ("127.0.0.1", "not a routable unicast"),
        ("::1", "not a routable unicast"),
        ("224.0.0.1", "not a routable unicast"),
        ("fe80::1", "not a routable unicast"),
    ],
)
def test_block_and_deflect_refuse(target: str, why: str) -> None:
    kw = {"allow": [net("203.0.113.0/24")], "own": [net("192.0.2.1/32")]}
    for build in (plan_block, plan_deflect):
        with pytest.raises(UsageError, match=why):
            build([net(target)], 60, **kw)


def test_plans_keep_allow_winning() -> None:
    a, b = net("198.51.100.7/32"), net("2001:db8::7/128")
    assert plan_block([a, b, a], 30).ops == (
        Put.of(SetName.BLOCK, (Element(a, 30), Element(b, 30))),
        FlushFlows((a, b)),
    )
    assert plan_deflect([a], 30).ops == (
        Remove(SetName.BLOCK, (a,)),
        Put.of(SetName.DEFLECT, (Element(a, 30),)),
        FlushFlows((a,)),
    )
    assert [type(op) for op in plan_allow([a]).ops] == [Remove, Remove, Put, FlushFlows]
    assert {op.set for op in plan_release([a]).ops if isinstance(op, Remove)} == set(SetName)


def test_nft_element_script_exact_text() -> None:
    a, p = net("198.51.100.7/32"), net("2001:db8:1::/48")
    plan = plan_block([a, p], 30)
    assert nftables.element_script(plan, "sipdeflect") == (
        "add element inet sipdeflect block4 { 198.51.100.7 timeout 30s }\n"
        "add element inet sipdeflect block6_net { 2001:db8:1::/48 timeout 30s }\n"
    )
    assert nftables.batch(plan) == {"nftables": []}  # elements never go through JSON
    mixed = Put.of(SetName.DEFLECT, (Element(a, None), Element(net("203.0.113.9/32"), 5)))
    assert nftables.element_script(Plan((mixed,)), "t") == (
        "add element inet t deflect4 { 198.51.100.7, 203.0.113.9 timeout 5s }\n"
    )


def test_nft_remove_is_safe_for_absent_elements() -> None:
    a, p, q = net("198.51.100.7/32"), net("203.0.113.0/24"), net("198.51.100.0/25")
    plan = Plan((Remove(SetName.DEFLECT, (a, p, q)),))
    assert nftables.interval_sets_touched(plan) == {"deflect4_net"}
    # hash set: add-then-delete; interval set: delete only what is present (q, not p)
    assert nftables.element_script(plan, "t", {"deflect4_net": {q}}).splitlines() == [
        "add element inet t deflect4 { 198.51.100.7 }",
        "delete element inet t deflect4 { 198.51.100.7 }",
        "delete element inet t deflect4_net { 198.51.100.0/25 }",
    ]


def test_nft_setup_hooks_before_conntrack_and_redirects_sip_ports() -> None:
    cmds = nftables.setup_cmds(ST)
    chains = {
        c["add"]["chain"]["name"]: c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})
    }
    assert chains["pre_filter"]["prio"] == -300  # raw: before conntrack (-200)
    assert chains["pre_nat"]["type"] == "nat"
    sets = [c["add"]["set"] for c in cmds if "set" in c.get("add", {})]
    assert len(sets) == 12
    assert all("timeout" in s["flags"] and s["stmt"] == [{"counter": None}] for s in sets)
    assert {s["name"] for s in sets if "interval" not in s["flags"]} == {
        "deflect4",
        "deflect6",
        "block4",
        "block6",
        "dropped4",  # the meters of what the blocks drop (bounded: see nftables.py)
        "dropped6",
    }
    assert {s["name"]: s["size"] for s in sets if "size" in s} == {
        "dropped4": nftables.DROPPED_SIZE,
        "dropped6": nftables.DROPPED_SIZE,
    }
    # Setting up again must not add them (they are `dynamic` by then: EEXIST).
    again = [c for c in nftables.setup_cmds(ST, meters=False) if "set" in c.get("add", {})]
    assert len(again) == 10
    # A blocked packet is counted in a chain of its own, then dropped by its own rule.
    drop4 = [
        c["add"]["rule"]["expr"]
        for c in cmds
        if c.get("add", {}).get("rule", {}).get("chain") == "drop4"
    ]
    assert drop4[0][0]["set"]["op"] == "update"
    assert drop4[1] == [{"drop": None}]
    redirects = [c for c in cmds if "rule" in c.get("add", {}) and "redirect" in str(c)]
    assert len(redirects) == 4
    assert redirects[0]["add"]["rule"]["expr"][2]["match"]["right"] == {"set": [5060, 5080]}
    assert redirects[0]["add"]["rule"]["expr"][3] == {"redirect": {"port": 5070}}
    assert nftables.teardown_cmds(ST) == [
        {"add": {"table": {"family": "inet", "name": "sipdeflect"}}},
        {"delete": {"table": {"family": "inet", "name": "sipdeflect"}}},
    ]


def test_nft_parse_listing() -> None:
    doc = {
        "nftables": [
            {"metainfo": {}},
            {
                "set": {
                    "name": "block4",
                    "elem": [
                        {
                            "elem": {
                                "val": "192.0.2.9",
                                "timeout": 60,
                                "expires": 42,
                                "counter": {"packets": 3, "bytes": 120},
                            }
                        },
                        "192.0.2.10",
                    ],
                }
            },
        ]
    }
    rows = nftables.parse_elements(doc, {"block4": SetName.BLOCK})
    assert [(r.target, r.expires, r.packets) for r in rows] == [
        (net("192.0.2.9/32"), 42, 3),
        (net("192.0.2.10/32"), None, None),
    ]


def test_ipset_and_iptables_restore_text() -> None:
    a, p = net("198.51.100.7/32"), net("2001:db8:1::/48")
    put = Put.of(SetName.BLOCK, (Element(a, 30), Element(p, None)))
    assert iptables.element_lines("sipdeflect", put) == [
        "add sipdeflect-block4 198.51.100.7 timeout 30",
        "add sipdeflect-block6n 2001:db8:1::/48 timeout 0",
    ]
    assert iptables.element_lines("sipdeflect", Remove(SetName.ALLOW, (a,))) == [
        "del sipdeflect-allow4 198.51.100.7"
    ]
    text = iptables.restore_setup(ST, 4, "*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    lines = text.splitlines()
    assert lines[:4] == [
        "*raw",
        ":SIPDEFLECT-RAW - [0:0]",
        "-A SIPDEFLECT-RAW -m set --match-set sipdeflect-allow4 src -j RETURN",
        "-A SIPDEFLECT-RAW -m set --match-set sipdeflect-block4 src -j DROP",
    ]
    assert "-A SIPDEFLECT-RAW -m set --match-set sipdeflect-block4n src -j DROP" in lines
    assert lines.index("-I PREROUTING 1 -j SIPDEFLECT-RAW") < lines.index(":SIPDEFLECT-OUT - [0:0]")
    assert "-I OUTPUT 1 -j SIPDEFLECT-OUT" in lines
    # The PBX's own answers to a deflected address stop before conntrack (on output and,
    # for a PBX behind this host, on prerouting).
    for chain in ("SIPDEFLECT-RAW", "SIPDEFLECT-OUT"):
        assert (
            f"-A {chain} -p udp -m multiport --sports 5060,5080 -m set --match-set "
            "sipdeflect-deflect4 dst -j DROP"
        ) in lines
    assert "-A SIPDEFLECT-OUT -m set --match-set sipdeflect-allow4 dst -j RETURN" in lines
    assert (
        "-A SIPDEFLECT-NAT -p udp -m multiport --dports 5060,5080 -m set --match-set "
        "sipdeflect-deflect4 src -j REDIRECT --to-ports 5070"
    ) in text
    # Already installed: flush our chain instead of declaring it, no second jump.
    saved = "*raw\n:SIPDEFLECT-RAW - [0:0]\n-A PREROUTING -j SIPDEFLECT-RAW\nCOMMIT\n"
    again = iptables.restore_setup(ST, 4, saved)
    assert "-F SIPDEFLECT-RAW" in again
    assert again.count("-I PREROUTING 1 -j SIPDEFLECT-RAW") == 0
    assert iptables.restore_teardown(saved) == (
        "*raw\n-D PREROUTING -j SIPDEFLECT-RAW\n-F SIPDEFLECT-RAW\n-X SIPDEFLECT-RAW\nCOMMIT\n"
    )
    assert iptables.restore_teardown("*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == ""


def test_ipset_save_parsing() -> None:
    text = (
        "create sipdeflect-block4 hash:ip family inet timeout 0 counters\n"
        "add sipdeflect-block4 192.0.2.9 timeout 57 packets 4 bytes 160\n"
        "add sipdeflect-block4 192.0.2.10 timeout 0 packets 0 bytes 0\n"
        "add other-set 192.0.2.11 timeout 5\n"
    )
    rows = iptables.parse_ipset_save(text, {"sipdeflect-block4": SetName.BLOCK})
    assert [(str(r.target), r.expires, r.packets, r.bytes) for r in rows] == [
        ("192.0.2.9/32", 57, 4, 160),
        ("192.0.2.10/32", None, 0, 0),
    ]


def test_pf_anchor_rules_and_argv() -> None:
    assert pf.anchor_rules(ST) == (
        "table <sipdeflect_allow> persist\n"
        "table <sipdeflect_deflect> persist\n"
        "table <sipdeflect_block> persist\n"
        "match in proto { udp tcp } from <sipdeflect_deflect> to any port { 5060 5080 } "
        "rdr-to 127.0.0.1 port 5070\n"
        "block drop in quick from <sipdeflect_block>\n"
        "block drop out quick proto { udp tcp } from any port { 5060 5080 } "
        "to <sipdeflect_deflect>\n"
    )
    assert "-> 127.0.0.1 port 5070" in pf.anchor_rules(ST, "freebsd")
    a, p = net("198.51.100.7/32"), net("2001:db8:1::/48")
    argv = pf.plan_argv(Plan((*plan_setup(ST).ops, *plan_deflect([a, p], 30).ops)), ST)
    assert argv == [
        (["pfctl", "-a", "sipdeflect", "-f", "-"], pf.anchor_rules(ST)),
        (
            [
                "pfctl",
                "-a",
                "sipdeflect",
                "-t",
                "sipdeflect_block",
                "-T",
                "delete",
                "198.51.100.7/32",
                "2001:db8:1::/48",
            ],
            None,
        ),
        (
            [
                "pfctl",
                "-a",
                "sipdeflect",
                "-t",
                "sipdeflect_deflect",
                "-T",
                "add",
                "198.51.100.7/32",
                "2001:db8:1::/48",
            ],
            None,
        ),
        (["pfctl", "-k", "198.51.100.7/32"], None),
        (["pfctl", "-k", "0.0.0.0/0", "-k", "198.51.100.7/32"], None),
        (["pfctl", "-k", "2001:db8:1::/48"], None),
        (["pfctl", "-k", "::/0", "-k", "2001:db8:1::/48"], None),
    ]
    many = [net(f"10.0.{i // 256}.{i % 256}/32") for i in range(1200)]
    chunks = pf.plan_argv(Plan((Put.of(SetName.BLOCK, (Element(t) for t in many)),)), ST)
    assert [len(a) - 7 for a, _ in chunks] == [500, 500, 200]


def test_pf_deadlines_expire_entries() -> None:
    a, b = net("198.51.100.7/32"), net("198.51.100.8/32")
    book: dict[str, dict[str, float]] = {}
    pf.record(book, plan_block([a], 10), now=100.0)
    pf.record(book, plan_block([b], None), now=100.0)
    assert pf.due(book, now=109.0) == []
    assert pf.due(book, now=110.0) == [Remove(SetName.BLOCK, (a,))]
    pf.record(book, plan_release([a]), now=111.0)
    assert pf.due(book, now=1e9) == []


def test_dry_run_prints_plan_and_changes_nothing() -> None:
    out = io.StringIO()
    DryRunBackend(ST, out).apply(
        Plan((*plan_setup(ST).ops, *plan_block([net("192.0.2.9/32")], 60).ops))
    )
    assert out.getvalue().splitlines() == [
        "dry-run: setup table=sipdeflect sip_ports=5060,5080 decoy_port=5070",
        "dry-run: put block 192.0.2.9 timeout=60s",
        "dry-run: flush-flows 192.0.2.9",
    ]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"sip_ports": ()}, "at least one"),
        ({"decoy_port": 5060}, "also a SIP port"),
        ({"decoy_port": 70000}, "not in 1-65535"),
        ({"table": "Bad Name"}, "table name"),
    ],
)
def test_settings_validation(kw: dict[str, object], why: str) -> None:
    with pytest.raises(UsageError, match=why):
        FirewallSettings(**kw)  # type: ignore[arg-type]


def test_conntrack_matching_singles_prefixes_and_families() -> None:
    from sipdeflect.firewall.conntrack import _doomed_addresses

    targets = [net("203.0.113.5/32"), net("198.51.100.0/24"), net("2001:db8::5/128")]
    present = {
        "203.0.113.5",
        "198.51.100.77",
        "192.0.2.1",
        "2001:db8::5",
        "2001:db8::6",
        "::ffff:203.0.113.5",
    }
    assert _doomed_addresses(targets, present) == {"203.0.113.5", "198.51.100.77", "2001:db8::5"}
    assert _doomed_addresses([], present) == set()
