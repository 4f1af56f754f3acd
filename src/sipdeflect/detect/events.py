# The detection contract: every detector (PBX log parsers, the wire observer) emits these
# frozen Event values and nothing else. An Event says what a source did, when, and whether
# the address is proven to be the sender's (`verified`): a TCP/TLS connection or a reply
# to a challenge the PBX sent to that address. Only verified evidence can escalate a
# source beyond "watch" (see verdict.py); UDP source addresses are otherwise forgeable.
from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EventKind(StrEnum):
    # Credentials sent in answer to a challenge, and still wrong (wrong password, or an
    # account that does not exist). The sender had to see the challenge.
    AUTH_FAILED_WITH_CREDENTIALS = "auth_failed_with_credentials"
    # Authentication failed, but the log gives no proof credentials answered a challenge.
    AUTH_FAILED = "auth_failed"
    UNKNOWN_ACCOUNT = "unknown_account"  # no such user / endpoint / peer
    ACL_REJECT = "acl_reject"  # refused by an ACL, domain or "not allowed to register"
    UNKNOWN_EXTENSION = "unknown_extension"  # call to an extension that does not exist
    REJECTED = "rejected"  # the PBX refused the source for another reason it names
    # The line carries more than one candidate source address (attacker text imitating
    # the PBX's own fields): kept as evidence, never trusted for escalation.
    LOG_INJECTION = "log_injection"
    # Wire-only kinds.
    CHALLENGE_SENT = "challenge_sent"  # the PBX answered 401/407 with a nonce
    REQUEST_SEEN = "request_seen"  # a request towards the PBX (rate features)
    REQUEST_FLOOD = "request_flood"  # request rate above the policy's threshold
    ENUMERATION = "enumeration"  # many distinct accounts/extensions tried
    SCANNER_USER_AGENT = "scanner_user_agent"  # User-Agent matches fingerprints.toml
    # The source kept sending requests without credentials after being challenged: the
    # write-up's flooder (a legitimate client answers the challenge with credentials).
    CHALLENGES_IGNORED = "challenges_ignored"
    # Credentials that answered our challenge were accepted (2xx): a customer, proven to
    # be at this address. Not evidence against anyone: forgeable evidence is then ignored.
    AUTH_SUCCEEDED = "auth_succeeded"
    # A request for an account under distributed attack (swarm.py) from a source the wire
    # detector saw: forgeable, so it can only ask for a probe.
    ATTACKED_ACCOUNT = "attacked_account"


class Event(NamedTuple):
    """What a source did (see the module comment). A NamedTuple rather than a frozen
    dataclass, like DecoyEvent: a log flood builds one per failure line, and a frozen
    dataclass's __init__ costs several times more (about 1 us against 0.3 us)."""

    time: datetime  # UTC-aware
    kind: EventKind
    source: Address  # taken only from a field the PBX (or the kernel) fills in
    port: int | None
    account: str | None  # attacker-controlled text, escaped
    origin: str  # "asterisk", "freeswitch", "kamailio", "wire"
    detail: str  # the PBX's own wording (escaped); for the wire, what was seen
    verified: bool = False  # the address is proven to be the sender's

    def as_json(self) -> dict[str, object]:
        return {
            "time": self.time.isoformat(),
            "kind": str(self.kind),
            "source": str(self.source),
            "port": self.port,
            "account": self.account,
            "origin": self.origin,
            "verified": self.verified,
            "detail": self.detail,
        }


_CTRL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def clean(text: str, limit: int = 200) -> str:
    """Attacker text made safe to print: control chars as \\xNN, length capped."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable() or _CTRL.search(text) is None:
        return text
    return _CTRL.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


_ADDR_CACHE: dict[str, Address | None] = {}


def address(text: str) -> Address | None:
    """An IP address from a PBX field ('1.2.3.4', '[2001:db8::1]', '::ffff:1.2.3.4'), or None.

    Cached: a flood repeats the same few sources, and ip_address() costs a microsecond.
    """
    got = _ADDR_CACHE.get(text, _ADDR_CACHE)
    if got is not _ADDR_CACHE:
        return got  # type: ignore[return-value]
    try:
        addr: Address | None = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        addr = None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if len(_ADDR_CACHE) > 65536:
        _ADDR_CACHE.clear()
    _ADDR_CACHE[text] = addr
    return addr
