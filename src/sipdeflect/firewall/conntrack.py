# Kill stale flows (FIELD-NOTES "Stale flows"): a NAT redirect is chosen when a conntrack
# entry is created and a host ruleset may accept `ct state established` early, so after
# deflect/block/release we delete every entry whose original tuple has a target at
# either end. Done over ctnetlink with pyroute2 (one dump, then one delete message per
# matching entry; no process per address), inside the runner's namespace when set. The
# dump comes first: the table is usually small, and when it is empty a million targets
# cost nothing. Sockets are kept open per thread, namespace and family: making and
# closing pyroute2's sockets was ~12 ms of each flush, the flush ~0.5 ms.
from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
from collections.abc import Iterable

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError

from sipdeflect.errors import FirewallError
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


_open: dict[tuple[int, str | None, int], Conntrack] = {}


def _sock(netns: str | None, family: int) -> Conntrack:
    """A conntrack socket for this thread (pyroute2 sockets are not shared across threads)."""
    key = (threading.get_ident(), netns, family)
    sock = _open.get(key)
    if sock is None:
        kwargs: dict[str, object] = {"nfgen_family": family}
        if netns:
            kwargs["netns"] = netns
        sock = _open[key] = Conntrack(**kwargs)
    return sock


def _discard(netns: str | None, family: int) -> None:
    sock = _open.pop((threading.get_ident(), netns, family), None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def close_all() -> None:
    """Close this thread's cached sockets (tests, and a namespace about to go away)."""
    for key in [k for k in _open if k[0] == threading.get_ident()]:
        _discard(key[1], key[2])


def flush_flows(targets: Iterable[Network], netns: str | None = None) -> int:
    """Delete conntrack entries to or from any target; returns how many were deleted."""
    try:
        entries = list(_sock(netns, socket.AF_UNSPEC).dump_entries())
    except NetlinkError as exc:
        _discard(netns, socket.AF_UNSPEC)
        if exc.code in _IGNORED:  # conntrack not loaded: there are no flows to forget
            return 0
        raise FirewallError(f"conntrack dump failed: {exc}") from None
    except OSError as exc:
        _discard(netns, socket.AF_UNSPEC)
        raise FirewallError(f"conntrack netlink socket: {exc.strerror or exc}") from None
    if not entries:
        return 0
    present = {a for e in entries for a in (e.tuple_orig.saddr, e.tuple_orig.daddr) if a}
    gone = _doomed_addresses(targets, present)
    doomed = [e for e in entries if e.tuple_orig.saddr in gone or e.tuple_orig.daddr in gone]
    deleted = 0
    for entry in doomed:
        fam = socket.AF_INET6 if ":" in entry.tuple_orig.saddr else socket.AF_INET
        try:
            _sock(netns, fam).delete(entry)
            deleted += 1
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:  # already gone: fine
                _discard(netns, fam)
                raise FirewallError(f"conntrack delete failed: {exc}") from None
        except OSError as exc:
            _discard(netns, fam)
            raise FirewallError(f"conntrack netlink socket: {exc.strerror or exc}") from None
    return deleted
