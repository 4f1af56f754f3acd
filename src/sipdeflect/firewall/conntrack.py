# Kill stale flows (FIELD-NOTES "Stale flows"): a NAT redirect is chosen when a conntrack
# entry is created and a host ruleset may accept `ct state established` early, so after
# deflect/block/release we delete every entry whose original tuple has a target at
# either end. Done over ctnetlink with pyroute2 (one dump, then one delete message per
# matching entry; no process per address), inside the runner's namespace when set.
from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError

from sipdeflect.errors import FirewallError
from sipdeflect.firewall.model import Network, is_single

_IGNORED = {errno.ENOENT, errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


class _Matcher:
    """Fast membership: a hash for single addresses, a list for the (few) prefixes."""

    def __init__(self, targets: Iterable[Network]) -> None:
        self.singles: set[str] = set()
        self.nets: list[Network] = []
        for t in targets:
            if is_single(t):
                self.singles.add(str(t.network_address))
            else:
                self.nets.append(t)

    def __call__(self, addr: str | None) -> bool:
        if not addr:
            return False
        if addr in self.singles:
            return True
        if not self.nets:
            return False
        ip = ipaddress.ip_address(addr)
        return any(ip.version == n.version and ip in n for n in self.nets)


def _sock(netns: str | None, family: int) -> Conntrack:
    kwargs: dict[str, object] = {"nfgen_family": family}
    if netns:
        kwargs["netns"] = netns
    return Conntrack(**kwargs)


def flush_flows(targets: Iterable[Network], netns: str | None = None) -> int:
    """Delete conntrack entries to or from any target; returns how many were deleted."""
    match = _Matcher(targets)
    if not match.singles and not match.nets:
        return 0
    try:
        dump = _sock(netns, socket.AF_UNSPEC)
        try:
            doomed = [
                e
                for e in dump.dump_entries()
                if match(e.tuple_orig.saddr) or match(e.tuple_orig.daddr)
            ]
        finally:
            dump.close()
    except NetlinkError as exc:
        if exc.code in _IGNORED:  # conntrack not loaded: there are no flows to forget
            return 0
        raise FirewallError(f"conntrack dump failed: {exc}") from None
    except OSError as exc:
        raise FirewallError(f"conntrack netlink socket: {exc.strerror or exc}") from None
    deleted = 0
    socks: dict[int, Conntrack] = {}
    try:
        for entry in doomed:
            fam = socket.AF_INET6 if ":" in entry.tuple_orig.saddr else socket.AF_INET
            if fam not in socks:
                socks[fam] = _sock(netns, fam)
            try:
                socks[fam].delete(entry)
                deleted += 1
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:  # already gone: fine
                    raise FirewallError(f"conntrack delete failed: {exc}") from None
    finally:
        for s in socks.values():
            s.close()
    return deleted
