# Distributed brute force: per-account and per-prefix aggregation of the one piece of
# evidence a spoofer cannot forge, a credentialed login that answered the PBX's own
# challenge and failed. fail2ban and CrowdSec count per address, so a botnet whose every
# address tries an account two or three times never trips a threshold of five. Here an
# account (or a /24, /48) that sees such failures from `account_sources` (`prefix_sources`)
# distinct addresses within `window` is *under attack* until `window` after its last one;
# while it is, a source that has never logged in successfully is flagged at its first
# failure there (verdict.py), and its mere request for that account asks for a probe
# (wire.py marks it: forgeable, so only the decoy's short, self-proving deflect).
# Pure: `now` is a parameter. Memory is bounded whatever the traffic: at most
# `max_accounts` accounts and `max_prefixes` prefixes (LRU dicts, the least recently
# failed forgotten first), each remembering at most its threshold's worth of
# (address -> last failure) pairs, and `max_logins` addresses that logged in
# (~100-200 B an entry: ~1 MB per 4,096 accounts, ~3 MB per 16,384 prefixes).
from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sipdeflect.detect.events import Address


@dataclass(frozen=True, slots=True)
class SwarmPolicy:
    account_sources: int = 10  # distinct failing addresses on one account: under attack
    prefix_sources: int = 10  # ... within one /v4_prefix or /v6_prefix (0: off)
    window: float = 600.0  # seconds; also how long "under attack" lasts after the last one
    v4_prefix: int = 24
    v6_prefix: int = 48
    max_accounts: int = 4096
    max_prefixes: int = 16_384
    max_logins: int = 65_536
    login_for: float = 86_400.0  # a successful login keeps an address "known" this long


class _Hot:
    """One account's or prefix's recent failing addresses, capped at the threshold."""

    __slots__ = ("last", "seen", "until", "why")

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}  # address (_key) -> its last failure, oldest first
        self.until = 0.0  # under attack until then (0: not under attack)
        self.last = 0.0
        self.why = ""  # the flag's reason, made when it came under attack


@dataclass(frozen=True, slots=True)
class UnderAttack:
    kind: str  # "account" or "prefix"
    key: str
    sources: int  # distinct failing addresses within the window (at most the threshold)
    until: float


class Swarm:
    def __init__(self, policy: SwarmPolicy | None = None) -> None:
        self.policy = policy or SwarmPolicy()
        self._accounts: dict[str, _Hot] = {}
        self._prefixes: dict[int, _Hot] = {}  # keyed by prefix_key(): no string per event
        self._logins: dict[int, float] = {}  # address (_key) -> last successful login
        # Account -> under attack until (epoch): read by the wire detector on every
        # request, so a plain dict it can hold a reference to (kept equal to _accounts).
        self.hot: dict[str, float] = {}

    def retune(self, policy: SwarmPolicy) -> None:
        self.policy = policy

    # -- inputs ------------------------------------------------------------------------------
    def logged_in(self, source: Address, now: float) -> None:
        """The PBX accepted credentials from ``source`` (verified: it saw the challenge)."""
        key = _key(source)
        self._logins.pop(key, None)
        self._logins[key] = now
        if len(self._logins) > self.policy.max_logins:
            del self._logins[next(iter(self._logins))]

    def failed(self, account: str | None, source: Address, now: float) -> str | None:
        """A verified credentialed failure. Returns why ``source`` should be flagged at once
        (its account or prefix is under attack and it never logged in), else None.
        Runs for every such failure (logscan: ~0.5 us), so no string is made per event."""
        p = self.policy
        why = ""
        ip = _key(source)
        if account:
            hot = self._note(self._accounts, account, ip, now, p.account_sources)
            if hot is not None:
                if not hot.why:
                    hot.why = (
                        f"failed login on account {account!r}, under distributed attack "
                        f"({p.account_sources}+ addresses in {p.window:g}s)"
                    )
                self.hot[account] = hot.until
                why = hot.why
            if len(self._accounts) > p.max_accounts:
                self.hot.pop(_evict(self._accounts), None)
        if p.prefix_sources:
            key = self.prefix_key(source)
            hot = self._note(self._prefixes, key, ip, now, p.prefix_sources)
            if hot is not None and not why:
                if not hot.why:
                    hot.why = (
                        f"failed login from {self.prefix(source)}, under distributed attack "
                        f"({p.prefix_sources}+ addresses in {p.window:g}s)"
                    )
                why = hot.why
            if len(self._prefixes) > p.max_prefixes:
                _evict(self._prefixes)
        if not why:
            return None
        at = self._logins.get(ip)
        return why if at is None or now - at >= p.login_for else None

    # -- questions ---------------------------------------------------------------------------
    def known(self, source: Address, now: float) -> bool:
        """Did ``source`` log in successfully within login_for?"""
        at = self._logins.get(_key(source))
        return at is not None and now - at < self.policy.login_for

    def account_hot(self, account: str | None, now: float) -> bool:
        return account is not None and self.hot.get(account, 0.0) > now

    def counts(self, now: float) -> tuple[int, int]:
        """(accounts, prefixes) under attack at ``now``."""
        accounts = sum(1 for until in self.hot.values() if until > now)
        return accounts, sum(1 for h in self._prefixes.values() if h.until > now)

    def prefix(self, source: Address) -> str:
        bits = self.policy.v4_prefix if source.version == 4 else self.policy.v6_prefix
        return str(ipaddress.ip_network(f"{source}/{bits}", strict=False))

    def prefix_key(self, source: Address) -> int:
        """The source's prefix as one int (IPv6 ones above 2**128, apart from IPv4's)."""
        if source.version == 4:
            return int(source) >> (32 - self.policy.v4_prefix)
        return (1 << 128) | (int(source) >> (128 - self.policy.v6_prefix))

    @staticmethod
    def _show_key(key: int, p: SwarmPolicy) -> str:
        if key >> 128:
            bits = p.v6_prefix
            net = ipaddress.IPv6Network(((key & ((1 << 128) - 1)) << (128 - bits), bits))
            return str(net)
        return str(ipaddress.IPv4Network((key << (32 - p.v4_prefix), p.v4_prefix)))

    def under_attack(self, now: float) -> Iterator[UnderAttack]:
        """Accounts, then prefixes, under attack at ``now`` (most recent first)."""
        tables: tuple[tuple[str, dict[Any, _Hot]], ...] = (
            ("account", self._accounts),
            ("prefix", self._prefixes),
        )
        for kind, table in tables:
            live = [(k, h) for k, h in table.items() if h.until > now]
            for key, hot in sorted(live, key=lambda kv: -kv[1].last):
                recent = sum(1 for t in hot.seen.values() if now - t < self.policy.window)
                name = key if kind == "account" else self._show_key(key, self.policy)
                yield UnderAttack(kind, name, recent, hot.until)

    # -- tables ------------------------------------------------------------------------------
    def _note(
        self, table: dict[Any, _Hot], key: Any, source: int, now: float, need: int
    ) -> _Hot | None:
        """Record a failure on ``key``; the entry when ``key`` is (now) under attack."""
        hot = table.get(key)
        if hot is None:
            hot = table[key] = _Hot()
        elif next(reversed(table)) != key:  # most recently failed last: the LRU end
            del table[key]
            table[key] = hot
        hot.last = now
        seen = hot.seen
        if seen.pop(source, None) is None and len(seen) >= need:
            del seen[next(iter(seen))]  # full: the oldest makes room
        seen[source] = now
        if len(seen) >= need and now - next(iter(seen.values())) < self.policy.window:
            hot.until = now + self.policy.window
        return hot if hot.until > now else None


def _key(source: Address) -> int:
    """An address as a dict key: ipaddress objects hash through hex() (~0.6 us each)."""
    return int(source) if source.version == 4 else int(source) | _V6


_V6 = 1 << 128


def _evict(table: dict[Any, _Hot]) -> Any:
    """Forget the least recently failed key; returns it."""
    key = next(iter(table))
    del table[key]
    return key
