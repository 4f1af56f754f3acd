# iptables + ipset backend: ipset sets (hash:ip for single addresses, hash:net for
# prefixes, each with `timeout` and `counters`) filled by one `ipset restore -exist`
# batch, and our own chains (SIPDEFLECT-RAW in raw and SIPDEFLECT-NAT in nat, jumped to
# from PREROUTING position 1, SIPDEFLECT-OUT in raw from OUTPUT position 1; IPv4 and
# IPv6), written by one `iptables-restore --noflush` per family. The raw chain drops
# blocked sources before conntrack, so an accepted `ESTABLISHED` flow cannot bypass it.
# Packets to a deflected address from the SIP ports (the real PBX answering) are dropped
# before conntrack as well (nftables.py says why: a late answer pulls the flow back).
# `-exist` makes re-adding refresh the timeout and deleting an absent member a no-op. The
# plan is validated before any of this runs, so the only failures left are environmental
# and hit on the first line of a batch.
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from sipdeflect.errors import FirewallError
from sipdeflect.firewall import conntrack
from sipdeflect.firewall.backend import Runner, register
from sipdeflect.firewall.model import FirewallSettings, Listed, Network, SetName, is_single
from sipdeflect.firewall.plan import FlushFlows, Plan, Put, Remove, Setup, Teardown

RAW_CHAIN, NAT_CHAIN, OUT_CHAIN = "SIPDEFLECT-RAW", "SIPDEFLECT-NAT", "SIPDEFLECT-OUT"
# (table, our chain, the built-in chain that jumps to it at position 1)
CHAINS = (
    ("raw", RAW_CHAIN, "PREROUTING"),
    ("raw", OUT_CHAIN, "OUTPUT"),
    ("nat", NAT_CHAIN, "PREROUTING"),
)
VARIANTS = {"": "", "nft": "-nft", "legacy": "-legacy"}


def ipset_name(table: str, s: SetName, version: int, single: bool) -> str:
    if s is SetName.ALLOW:
        return f"{table}-allow{version}"
    return f"{table}-{s}{version}" + ("" if single else "n")


def all_ipsets(table: str) -> list[tuple[str, SetName, int, bool]]:
    out = [(ipset_name(table, SetName.ALLOW, v, False), SetName.ALLOW, v, False) for v in (4, 6)]
    for s in (SetName.DEFLECT, SetName.BLOCK):
        for v in (4, 6):
            out += [(ipset_name(table, s, v, True), s, v, True)]
            out += [(ipset_name(table, s, v, False), s, v, False)]
    return out


def ipset_create_lines(table: str) -> list[str]:
    lines = []
    for name, _, v, single in all_ipsets(table):
        kind = "hash:ip" if single else "hash:net"
        fam = "inet" if v == 4 else "inet6"
        lines.append(f"create {name} {kind} family {fam} timeout 0 counters")
    return lines


def _member(t: Network) -> str:
    return str(t.network_address) if is_single(t) else str(t)


def element_lines(table: str, op: Put | Remove) -> list[str]:
    lines = []
    if isinstance(op, Put):
        for e in op.elements:
            name = ipset_name(table, op.set, e.target.version, is_single(e.target))
            lines.append(f"add {name} {_member(e.target)} timeout {e.timeout or 0}")
    else:
        for t in op.targets:
            name = ipset_name(table, op.set, t.version, is_single(t))
            lines.append(f"del {name} {_member(t)}")
    return lines


def chain_rules(st: FirewallSettings, version: int) -> dict[str, list[str]]:
    """Our chain -> its rules (iptables-restore syntax, no jumps)."""
    t = st.table
    allow = ipset_name(t, SetName.ALLOW, version, False)
    ports = ",".join(map(str, st.sip_ports))
    raw = [f"-A {RAW_CHAIN} -m set --match-set {allow} src -j RETURN"]
    out = [f"-A {OUT_CHAIN} -m set --match-set {allow} dst -j RETURN"]
    nat = [f"-A {NAT_CHAIN} -m set --match-set {allow} src -j RETURN"]
    for single in (True, False):
        block = ipset_name(t, SetName.BLOCK, version, single)
        raw.append(f"-A {RAW_CHAIN} -m set --match-set {block} src -j DROP")
        deflect = ipset_name(t, SetName.DEFLECT, version, single)
        nat += [
            f"-A {NAT_CHAIN} -p {proto} -m multiport --dports {ports} "
            f"-m set --match-set {deflect} src -j REDIRECT --to-ports {st.decoy_port}"
            for proto in ("udp", "tcp")
        ]
        for chain, rules in ((RAW_CHAIN, raw), (OUT_CHAIN, out)):
            rules += [
                f"-A {chain} -p {proto} -m multiport --sports {ports} "
                f"-m set --match-set {deflect} dst -j DROP"
                for proto in ("udp", "tcp")
            ]
    return {RAW_CHAIN: raw, OUT_CHAIN: out, NAT_CHAIN: nat}


def parse_save(text: str) -> dict[str, tuple[set[str], set[tuple[str, str]]]]:
    """iptables-save output -> table -> (chains declared, (built-in, target) jumps)."""
    out: dict[str, tuple[set[str], set[tuple[str, str]]]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("*"):
            current = line[1:].strip()
            out[current] = (set(), set())
        elif line.startswith(":") and current:
            out[current][0].add(line[1:].split()[0])
        elif current and (m := re.fullmatch(r"-A (PREROUTING|OUTPUT) -j (\S+)", line.strip())):
            out[current][1].add((m.group(1), m.group(2)))
    return out


def restore_setup(st: FirewallSettings, version: int, saved: str) -> str:
    state = parse_save(saved)
    rules = chain_rules(st, version)
    chunks = []
    for table in dict.fromkeys(t for t, _, _ in CHAINS):
        chains, jumps = state.get(table, (set(), set()))
        lines = [f"*{table}"]
        for t, chain, hook in CHAINS:
            if t != table:
                continue
            lines.append(f"-F {chain}" if chain in chains else f":{chain} - [0:0]")
            lines += rules[chain]
            if (hook, chain) not in jumps:
                lines.append(f"-I {hook} 1 -j {chain}")
        chunks.append("\n".join([*lines, "COMMIT"]))
    return "\n".join(chunks) + "\n"


def restore_teardown(saved: str) -> str:
    state = parse_save(saved)
    chunks = []
    for table in dict.fromkeys(t for t, _, _ in CHAINS):
        chains, jumps = state.get(table, (set(), set()))
        lines = []
        for t, chain, hook in CHAINS:
            if t != table:
                continue
            if (hook, chain) in jumps:
                lines.append(f"-D {hook} -j {chain}")
            if chain in chains:
                lines += [f"-F {chain}", f"-X {chain}"]
        if lines:
            chunks.append("\n".join([f"*{table}", *lines]) + "\nCOMMIT")
    return "\n".join(chunks) + "\n" if chunks else ""


_SAVE_ADD = re.compile(r"add (\S+) (\S+)(.*)")


def parse_ipset_save(text: str, names: dict[str, SetName]) -> list[Listed]:
    out = []
    for line in text.splitlines():
        m = _SAVE_ADD.fullmatch(line.strip())
        if not m or m.group(1) not in names:
            continue
        words = m.group(3).split()
        opts = dict(zip(words[::2], words[1::2], strict=False))
        left = int(opts.get("timeout", "0"))
        out.append(
            Listed(
                set=names[m.group(1)],
                target=ipaddress.ip_network(m.group(2)),
                expires=left or None,
                packets=int(opts["packets"]) if "packets" in opts else None,
                bytes=int(opts["bytes"]) if "bytes" in opts else None,
            )
        )
    return out


class IptablesBackend:
    def __init__(self, settings: FirewallSettings, runner: Runner, variant: str = "") -> None:
        self.settings = settings
        self.runner = runner
        self.suffix = VARIANTS[variant]
        self.name = "iptables" + self.suffix

    def _tool(self, version: int, what: str) -> str:
        return f"{'ip6' if version == 6 else 'ip'}tables{self.suffix}-{what}"

    def _save(self, version: int) -> str:
        return self.runner.run([self._tool(version, "save")])

    def _our_ipsets(self) -> set[str]:
        out = self.runner.run(["ipset", "list", "-n"])
        ours = {n for n, _, _, _ in all_ipsets(self.settings.table)}
        return ours & set(out.split())

    def installed(self) -> bool:
        return bool(self._our_ipsets())

    def apply(self, plan: Plan) -> None:
        self.runner.require("ipset")
        ipset_lines: list[str] = []
        for op in plan.ops:
            if isinstance(op, Put | Remove):
                ipset_lines += element_lines(self.settings.table, op)
        for op in plan.ops:
            if isinstance(op, Teardown):
                self._teardown()
            elif isinstance(op, Setup):
                self._setup(op.settings)
        if ipset_lines:
            if len(self._our_ipsets()) < len(all_ipsets(self.settings.table)):
                raise FirewallError("ipsets are missing; run `sipdeflect firewall setup` first")
            self.runner.run(["ipset", "restore", "-exist"], input_="\n".join(ipset_lines) + "\n")
        for op in plan.ops:
            if isinstance(op, FlushFlows):
                conntrack.flush_flows(op.targets, self.runner.netns)

    def _setup(self, st: FirewallSettings) -> None:
        self.runner.run(
            ["ipset", "restore", "-exist"], input_="\n".join(ipset_create_lines(st.table)) + "\n"
        )
        done: list[int] = []
        try:
            for v in (4, 6):
                text = restore_setup(st, v, self._save(v))
                self.runner.run([self._tool(v, "restore"), "--noflush"], input_=text)
                done.append(v)
        except FirewallError:
            self._teardown()  # leave nothing half-applied
            raise

    def _teardown(self) -> None:
        for v in (4, 6):
            text = restore_teardown(self._save(v))
            if text:
                self.runner.run([self._tool(v, "restore"), "--noflush"], input_=text)
        ours = self._our_ipsets()
        if ours:
            self.runner.run(
                ["ipset", "restore"], input_="".join(f"destroy {n}\n" for n in sorted(ours))
            )

    def dropped(self) -> list[Listed]:
        """The block set's members with their counters (a full listing: cheap enough here)."""
        return self.list([SetName.BLOCK])

    def list(self, sets: Iterable[SetName] | None = None) -> list[Listed]:
        wanted = set(sets) if sets is not None else set(SetName)
        names = {n: s for n, s, _, _ in all_ipsets(self.settings.table) if s in wanted}
        present = self._our_ipsets() & set(names)
        out: list[Listed] = []
        for n in sorted(present):
            out += parse_ipset_save(self.runner.run(["ipset", "save", n]), names)
        return out

    def show(self) -> str:
        parts = []
        for v in (4, 6):
            lines = [
                ln
                for ln in self._save(v).splitlines()
                if ln.startswith("*") or RAW_CHAIN in ln or NAT_CHAIN in ln
            ]
            parts.append(f"# {self._tool(v, 'save')}\n" + "\n".join(lines))
        parts += [
            self.runner.run(["ipset", "list", "-t", n]).strip() for n in sorted(self._our_ipsets())
        ]
        return "\n".join(parts) + "\n"


for _variant, _suffix in VARIANTS.items():

    def _factory(settings: FirewallSettings, runner: Runner, _v: str = _variant) -> IptablesBackend:
        return IptablesBackend(settings, runner, _v)

    register("iptables" + _suffix)(_factory)
