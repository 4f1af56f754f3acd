# pf backend (FreeBSD/OpenBSD): our own anchor holding three persistent tables, a block
# rule, an rdr-to rule and a rule dropping the PBX's answers to deflected hosts, loaded
# with `pfctl -a ANCHOR -f -` (rules on stdin, argv never through a shell); elements
# change with `pfctl -T add/delete`, and `pfctl -k` kills the states of deflected/blocked
# hosts (pf's stale-flow trap). pf tables have no per-address timeout, so deadlines are
# kept in a small JSON file and lapsed entries are removed on the next apply or list. The
# main ruleset must contain `anchor "sipdeflect"` (and on FreeBSD `rdr-anchor
# "sipdeflect"`); we never edit it. UNTESTED on a live pf: only the argv and rule text
# are covered by tests here.
from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from sipdeflect.firewall.backend import Runner, register
from sipdeflect.firewall.model import FirewallSettings, Listed, Network, SetName
from sipdeflect.firewall.plan import FlushFlows, Plan, Put, Remove, Setup, Teardown

CHUNK = 500  # addresses per pfctl argv
Argv = tuple[list[str], str | None]  # argv and what goes to its stdin


def table_name(st: FirewallSettings, s: SetName) -> str:
    return f"{st.table}_{s}"


def anchor_rules(st: FirewallSettings, dialect: str = "openbsd") -> str:
    allow, deflect, block = (table_name(st, s) for s in SetName)
    ports = "{ " + " ".join(map(str, st.sip_ports)) + " }"
    lines = [f"table <{t}> persist" for t in (allow, deflect, block)]
    if dialect == "openbsd":
        lines.append(
            f"match in proto {{ udp tcp }} from <{deflect}> to any port {ports} "
            f"rdr-to 127.0.0.1 port {st.decoy_port}"
        )
    else:  # FreeBSD's translation rules come before filter rules
        lines.append(
            f"rdr proto {{ udp tcp }} from <{deflect}> to any port {ports} "
            f"-> 127.0.0.1 port {st.decoy_port}"
        )
    # allow wins through the plan (block/deflect of allowlisted addresses is refused and
    # allowing removes them); a `pass quick` here would override the user's own rules.
    lines.append(f"block drop in quick from <{block}>")
    # The PBX's own late answer to a deflected host (one sent after its states were
    # killed) would create a state whose reverse the host's next packets match, past the
    # rdr (nftables.py: the same race). The decoy's answers match the rdr's state and are
    # passed without reaching this rule. (Rule text only: no live pf here.)
    lines.append(f"block drop out quick proto {{ udp tcp }} from any port {ports} to <{deflect}>")
    return "\n".join(lines) + "\n"


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def plan_argv(plan: Plan, st: FirewallSettings, dialect: str = "openbsd") -> list[Argv]:
    """Every pfctl call the plan needs, in order (pure)."""
    anchor = st.table
    out: list[Argv] = []
    for op in plan.ops:
        if isinstance(op, Setup):
            out.append((["pfctl", "-a", anchor, "-f", "-"], anchor_rules(op.settings, dialect)))
        elif isinstance(op, Teardown):
            out.append((["pfctl", "-a", anchor, "-F", "all"], None))
        elif isinstance(op, Put | Remove):
            verb = "add" if isinstance(op, Put) else "delete"
            targets = [e.target for e in op.elements] if isinstance(op, Put) else op.targets
            base = ["pfctl", "-a", anchor, "-t", table_name(st, op.set), "-T", verb]
            out += [([*base, *chunk], None) for chunk in _chunks([str(t) for t in targets])]
        elif isinstance(op, FlushFlows):
            for t in op.targets:
                anyaddr = "0.0.0.0/0" if t.version == 4 else "::/0"
                out.append((["pfctl", "-k", str(t)], None))  # states from the host
                out.append((["pfctl", "-k", anyaddr, "-k", str(t)], None))  # and to it
    return out


def due(deadlines: dict[str, dict[str, float]], now: float) -> list[Remove]:
    """Removals for entries whose deadline has passed (pure)."""
    out = []
    for s in SetName:
        lapsed = [t for t, when in deadlines.get(s, {}).items() if when <= now]
        if lapsed:
            out.append(Remove(s, tuple(ipaddress.ip_network(t) for t in sorted(lapsed))))
    return out


def record(deadlines: dict[str, dict[str, float]], plan: Plan, now: float) -> None:
    for op in plan.ops:
        if isinstance(op, Teardown):
            deadlines.clear()
        elif isinstance(op, Put):
            for e in op.elements:
                book = deadlines.setdefault(op.set, {})
                if e.timeout:
                    book[str(e.target)] = now + e.timeout
                else:
                    book.pop(str(e.target), None)
        elif isinstance(op, Remove):
            for t in op.targets:
                deadlines.get(op.set, {}).pop(str(t), None)


class PfBackend:
    name = "pf"

    def __init__(
        self, settings: FirewallSettings, runner: Runner, dialect: str | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.dialect = dialect or ("freebsd" if os.uname().sysname == "FreeBSD" else "openbsd")
        base = Path(os.environ.get("SIPDEFLECT_STATE_DIR", "/var/lib/sipdeflect"))
        self.deadlines_path = base / f"pf-{settings.table}-deadlines.json"

    def _load(self) -> dict[str, dict[str, float]]:
        try:
            data: dict[str, dict[str, float]] = json.loads(self.deadlines_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def apply(self, plan: Plan) -> None:
        now = time.time()
        deadlines = self._load()
        full = Plan((*due(deadlines, now), *plan.ops))
        for argv, stdin in plan_argv(full, self.settings, self.dialect):
            self.runner.run(argv, input_=stdin)
        record(deadlines, full, now)
        self.deadlines_path.parent.mkdir(parents=True, exist_ok=True)
        self.deadlines_path.write_text(json.dumps(deadlines))

    def installed(self) -> bool:
        out = self.runner.run(["pfctl", "-a", self.settings.table, "-s", "rules"], ok=(0, 1))
        return bool(out.strip())

    def dropped(self) -> list[Listed]:
        """The block set's members with their counters (a full listing: cheap enough here)."""
        return self.list([SetName.BLOCK])

    def list(self, sets: Iterable[SetName] | None = None) -> list[Listed]:
        self.apply(Plan(()))  # drop lapsed entries first
        now = time.time()
        deadlines = self._load()
        out: list[Listed] = []
        for s in sets if sets is not None else SetName:
            argv = ["pfctl", "-a", self.settings.table, "-t", table_name(self.settings, s)]
            text = self.runner.run([*argv, "-T", "show"], ok=(0, 1))
            for line in text.split():
                target: Network = ipaddress.ip_network(line)
                when = deadlines.get(s, {}).get(str(target))
                left = None if when is None else max(0, int(when - now))
                out.append(Listed(set=s, target=target, expires=left))
        return out

    def show(self) -> str:
        return self.runner.run(["pfctl", "-a", self.settings.table, "-s", "rules"], ok=(0, 1))


@register("pf")
def _make(settings: FirewallSettings, runner: Runner) -> PfBackend:
    return PfBackend(settings, runner)
