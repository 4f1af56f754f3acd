# The plug point (house rule 7): a Backend applies one Plan atomically and lists set
# members; backends are chosen by name from REGISTRY. Every external program runs via a
# Runner, an argv prefix (e.g. ["ip", "netns", "exec", NAME]) plus failure handling that
# turns any trouble into a one-line FirewallError; tests inject the namespace this way.
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sipdeflect.errors import FirewallError
from sipdeflect.firewall.model import FirewallSettings, Listed, Network, SetName
from sipdeflect.firewall.plan import Plan

PACKAGES = {
    "nft": "nftables",
    "ipset": "ipset",
    "ip": "iproute2",
    "pfctl": "pf is FreeBSD/OpenBSD only",
}


@dataclass(frozen=True)
class Runner:
    """Runs argv lists, optionally inside a network namespace; never through a shell."""

    netns: str | None = None
    timeout: float = 120.0
    path: str | None = None  # PATH used to find binaries (None: the process's PATH)
    log: list[list[str]] | None = field(default=None, compare=False)
    # Run `nft -f -` scripts through libnftables in this process when it loads (the
    # daemon: a decision reaches the kernel in under a millisecond, not ~20 ms).
    inproc: bool = False
    # nftables: send single-address element changes straight to the kernel over netlink
    # (sipdeflect.firewall.nfnl) instead of through nft's parser; falls back to nft
    # when that route is unavailable. False: always nft (the reference in benchmarks).
    netlink: bool = True

    def require(self, binary: str) -> str:
        found = shutil.which(binary, path=self.path)
        if found is None:
            hint = PACKAGES.get(binary.rsplit("/", 1)[-1], binary)
            raise FirewallError(f"{binary} not found on PATH (install {hint})")
        return found

    def run(
        self, argv: Sequence[str], *, input_: str | None = None, ok: Iterable[int] = (0,)
    ) -> str:
        if self.log is not None:
            self.log.append(list(argv))
        if self.inproc and self.netns is None and list(argv) == ["nft", "-f", "-"]:
            from sipdeflect.firewall import libnft  # noqa: PLC0415 - only when asked for

            if libnft.available():
                return libnft.run(input_ or "")
        head = [self.require("ip"), "netns", "exec", self.netns] if self.netns else []
        full = [*head, self.require(argv[0]), *argv[1:]]
        env = {**os.environ, "PATH": self.path} if self.path is not None else None
        try:
            res = subprocess.run(
                full,
                input=input_,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=env,
                check=False,
            )
        except OSError as exc:
            raise FirewallError(f"{argv[0]}: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise FirewallError(f"{argv[0]} did not finish within {self.timeout:.0f} s") from None
        if res.returncode not in set(ok):
            raise FirewallError(f"{argv[0]} failed: {first_line(res.stderr or res.stdout)}")
        return res.stdout

    def run_json(self, argv: Sequence[str]) -> Any:
        out = self.run(argv)
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise FirewallError(f"{argv[0]} printed invalid JSON: {exc}") from None


def first_line(text: str) -> str:
    """The most telling line of a tool's error output, for a one-line message."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "no error message"
    for ln in lines:  # nft prints "Error: ..." after context lines
        if ln.startswith(("Error", "ipset v", "iptables", "ip6tables")) or "error" in ln.lower():
            return ln[:300]
    return lines[0][:300]


class Backend(Protocol):
    name: str

    def apply(self, plan: Plan) -> None:
        """Apply the whole plan at once, or raise FirewallError having changed nothing."""

    def dropped(self) -> list[Listed]:
        """What the block sets dropped, per element or source, with the kernel's counters
        (traffic accounting): as cheap to read as the backend allows."""

    def list(self, sets: Iterable[SetName] | None = None) -> list[Listed]:
        """Current members of our sets (all sets when None)."""

    def show(self) -> str:
        """Our part of the live ruleset, in the backend's own notation."""

    def installed(self) -> bool:
        """Whether our table/chains/anchor exist."""


BackendFactory = Callable[[FirewallSettings, Runner], Backend]
REGISTRY: dict[str, BackendFactory] = {}


def register(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def deco(factory: BackendFactory) -> BackendFactory:
        REGISTRY[name] = factory
        return factory

    return deco


def get_backend(name: str, settings: FirewallSettings, runner: Runner | None = None) -> Backend:
    # Import for side effects: each module registers itself.
    from sipdeflect.firewall import dryrun, iptables, nftables, pf  # noqa: F401, PLC0415

    try:
        factory = REGISTRY[name]
    except KeyError:
        raise FirewallError(
            f"unknown backend {name!r}; choose from {', '.join(sorted(REGISTRY))}"
        ) from None
    return factory(settings, runner or Runner())


def own_addresses(runner: Runner) -> list[Network]:
    """This host's (or namespace's) own addresses, as /32 and /128 networks."""
    import ipaddress  # noqa: PLC0415

    data = runner.run_json(["ip", "-j", "addr", "show"])
    out: list[Network] = []
    for link in data:
        for info in link.get("addr_info", []):
            local = info.get("local")
            if local:
                out.append(ipaddress.ip_network(local.split("%")[0]))
    return out
