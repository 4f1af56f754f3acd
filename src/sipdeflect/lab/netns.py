# Throwaway hosts in Linux network namespaces (ip-netns(8)) joined by veth pairs, for the
# tests, the demo and the benchmarks. Every name carries the creating pid so parallel runs
# never collide; every namespace is deleted on exit, killing whatever still runs in it.
# Addresses come from the documentation ranges (RFC 5737, RFC 3849) only.
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from sipdeflect.errors import SipDeflectError
from sipdeflect.nsocket import socket_in

_counter = itertools.count()


class LabError(SipDeflectError):
    """A namespace could not be created or driven."""


def netns_unavailable() -> str | None:
    """Why this process cannot build a lab, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"sdfprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return f"`ip netns add` failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input_: str | None = None
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input_, check=False
    )
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


class Netns:
    """One network namespace: a host with its own interfaces, firewall and counters."""

    def __init__(self, role: str) -> None:
        # Interface-safe, unique: role + pid + counter (ip netns names are paths).
        self.name = f"sdf-{role}-{os.getpid()}-{next(_counter)}"
        self.role = role
        self._created = False

    # -- lifecycle -------------------------------------------------------------------
    def create(self) -> Netns:
        _run(["ip", "netns", "add", self.name])
        self._created = True
        self.run(["ip", "link", "set", "lo", "up"])
        return self

    def delete(self) -> None:
        if not self._created:
            return
        pids = _run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "del", self.name], check=False)
        self._created = False

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    # -- running things inside ---------------------------------------------------------
    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input_: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(argv), check=check, timeout=timeout, input_=input_)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.argv(argv), **kwargs)  # argv list, no shell

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def socket(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        """A socket created inside this namespace, usable from the calling process.

        setns(2) moves only the calling thread, and a socket stays in the namespace it was
        created in, so a short-lived thread enters the namespace and makes the socket.
        """
        try:
            return socket_in(self.name, family, type_, proto)
        except Exception as exc:
            raise LabError(f"socket in {self.name}: {exc}") from exc

    def snmp_counter(self, proto: str, field: str) -> int:
        """A counter from /proc/net/snmp (e.g. ("Udp", "RcvbufErrors")) inside the namespace."""
        text = self.run(["cat", "/proc/net/snmp"]).stdout
        return parse_snmp(text)[proto][field]


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for head, vals in itertools.pairwise(lines):
        hk, _, hnames = head.partition(":")
        vk, _, hvals = vals.partition(":")
        if hk == vk and hk not in out:
            out[hk] = dict(zip(hnames.split(), map(int, hvals.split()), strict=False))
    return out


def link(a: Netns, a_addrs: Sequence[str], b: Netns, b_addrs: Sequence[str]) -> tuple[str, str]:
    """Join two namespaces with a veth pair; addresses are CIDR strings. Returns the if names."""
    n = next(_counter)
    a_if, b_if = f"v{os.getpid() % 100000}a{n}", f"v{os.getpid() % 100000}b{n}"
    _run(
        [
            "ip",
            "link",
            "add",
            a_if,
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name,
        ]
    )
    for ns, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
        for addr in addrs:
            # nodad: IPv6 addresses are usable at once instead of after duplicate detection
            extra = ["nodad"] if ":" in addr else []
            ns.run(["ip", "addr", "add", addr, "dev", ifname, *extra])
        ns.run(["ip", "link", "set", ifname, "up"])
    return a_if, b_if


@contextlib.contextmanager
def hosts(*roles: str) -> Iterator[list[Netns]]:
    """Create one namespace per role; all are deleted on exit, whatever happened."""
    made: list[Netns] = []
    try:
        for role in roles:
            made.append(Netns(role).create())  # noqa: PERF401 - keep what was made on failure
        yield made
    finally:
        for ns in reversed(made):
            ns.delete()


def leftover_namespaces(pid: int | None = None) -> list[str]:
    """Namespaces this process (or pid) created and did not delete: for test hygiene."""
    tag = f"-{pid if pid is not None else os.getpid()}-"
    base = Path("/var/run/netns")
    return (
        sorted(p.name for p in base.iterdir() if p.name.startswith("sdf-") and tag in p.name)
        if base.is_dir()
        else []
    )
