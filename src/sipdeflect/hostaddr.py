# The host's own addresses, read over netlink (pyroute2), for the default allowlist: a
# forged packet "from" one of our own addresses must never get us to block ourselves.
from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from sipdeflect.decisions import Address


def own_addresses() -> set[Address]:
    out: set[Address] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if addr:
                out.add(ipaddress.ip_address(addr.split("%")[0]))
    return out
