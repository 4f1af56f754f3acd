# Kill stale flows (FIELD-NOTES "Stale flows"): a NAT redirect is chosen when a conntrack
# entry is created and a host ruleset may accept `ct state established` early, so after
# deflect/block/release we delete every entry whose original tuple has a target at
# either end. Done over ctnetlink (ctnl.py: one dump, then one delete message per
# matching entry; no process per address), inside the runner's namespace when set. The
# dump comes first: the table is usually small, and when it is empty a million targets
# cost nothing.
from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable

from sipdeflect.errors import FirewallError
from sipdeflect.firewall.ctnl import Ctnl, CtnlError
from sipdeflect.firewall.model import Network

_IGNORED = {errno.ENOENT, errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


def _doomed_addresses(targets: Iterable[Network], present: set[str]) -> set[str]:
    """Which of the addresses seen in conntrack (few) fall in a target (maybe a million).

    Walks the targets once with integer keys (int(address) is cheap; str() and hashing
    ipaddress objects were most of a million-block apply); prefixes are checked against the
    few present addresses directly.
    """
    by_key = {}
    for a in present:
        ip = ipaddress.ip_address(a)
        by_key[(ip.version, int(ip))] = a
    doomed: set[str] = set()
    nets: list[Network] = []
    for t in targets:
        if t.prefixlen == t.max_prefixlen:
            hit = by_key.get((t.version, int(t.network_address)))
            if hit is not None:
                doomed.add(hit)
        else:
            nets.append(t)
    for (version, _), a in by_key.items():
        if any(n.version == version and ipaddress.ip_address(a) in n for n in nets):
            doomed.add(a)
    return doomed


def flush_flows(targets: Iterable[Network], netns: str | None = None) -> int:
    """Delete conntrack entries to or from any target; returns how many were deleted."""
    try:
        ct = Ctnl(netns)
    except CtnlError as exc:
        raise FirewallError(f"conntrack netlink socket: {exc}") from None
    try:
        try:
            entries = ct.dump()
        except CtnlError as exc:
            if exc.code in _IGNORED:  # conntrack not loaded: there are no flows to forget
                return 0
            raise FirewallError(f"conntrack dump failed: {exc}") from None
        if not entries:
            return 0
        gone = _doomed_addresses(targets, {a for e in entries for a in (e.src, e.dst)})
        doomed = [e for e in entries if e.src in gone or e.dst in gone]
        try:
            return ct.delete(doomed)
        except CtnlError as exc:
            raise FirewallError(f"conntrack delete failed: {exc}") from None
    finally:
        ct.close()
