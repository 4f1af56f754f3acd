# Table-driven PBX log parsing shared by every format. A format is a tuple of Rules; each
# Rule has a cheap literal marker (tested with `in`, or searched with str.find over a whole
# buffer), one regex, and a table from the PBX's reason wording to (EventKind, verified).
# The source address comes only from the regex group bound to the field the PBX fills in;
# when the line holds several different candidates for that field (attacker text imitating
# it) the event becomes LOG_INJECTION, which the policy never escalates. Pure: no I/O, time
# comes from the line or from the caller's Context.
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from sipdeflect.detect.events import Address, Event, EventKind, address, clean

Outcome = tuple[EventKind, bool]  # kind, verified


@dataclass(frozen=True, slots=True)
class Context:
    """What a line cannot say about itself: the year of year-less stamps, the zone the PBX
    logs in, and the time to use when a line has no stamp at all (journal, stderr). With
    ``now``, a year-less stamp more than a day after it is taken from the year before
    (a December line read in January), as syslog readers and fail2ban do."""

    year: int
    tz: tzinfo = UTC
    default: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    now: datetime | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    marker: str  # literal that every matching line contains
    regex: re.Pattern[str]  # groups: hostport or addr (+port), optional account/reason/proto
    outcomes: Mapping[str, Outcome]  # reason text -> outcome ("" = the only outcome)
    default: Outcome | None = None  # for reasons not in the table; None: no event
    candidates: re.Pattern[str] | None = None  # every place the address field could be
    pick: int = -1  # which candidate the PBX filled in when they disagree (0 first, -1 last)
    repeat: str = ""  # literal that appears once per candidate (default: the marker)
    tcp_verifies: bool = True  # a TCP/TLS transport proves the address
    challenge_check: bool = False  # Asterisk: ReceivedChallenge must equal Challenge
    account_in_uri: bool = False  # the account group is a From header: keep its user part


@dataclass(frozen=True, slots=True)
class LogFormat:
    name: str
    rules: tuple[Rule, ...]
    sniff: re.Pattern[str]  # lines typical of this PBX, for format detection
    markers: tuple[str, ...] = field(init=False)
    _first: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "markers", tuple(dict.fromkeys(r.marker for r in self.rules)))
        first: dict[str, int] = {}
        for i, r in enumerate(self.rules):
            first.setdefault(r.marker, i)
        object.__setattr__(self, "_first", first)

    def parse(self, line: str, ctx: Context) -> Event | None:
        """One log line -> an Event, or None when it is not a failure we know."""
        for rule in self.rules:
            if rule.marker in line:
                ev = _apply(self.name, rule, line, ctx)
                if ev is not None:
                    return ev
        return None

    def _parse_from(self, first: int, line: str, ctx: Context) -> Event | None:
        """parse(), knowing no rule before index ``first`` has its marker in the line."""
        for rule in self.rules[first:]:
            if rule.marker in line:
                ev = _apply(self.name, rule, line, ctx)
                if ev is not None:
                    return ev
        return None

    def scan(self, buf: str, ctx: Context, first_line: int = 1) -> Iterator[tuple[int, Event]]:
        """Events of a buffer of whole lines with their 1-based line numbers.

        Only lines holding a marker are looked at: str.find runs at memchr speed over the
        buffer, so the regexes see a small fraction of a quiet log.
        """
        starts: dict[int, int] = {}  # line start -> first rule whose marker it holds
        for marker, first in self._first.items():
            pos = buf.find(marker)
            while pos >= 0:
                start = buf.rfind("\n", 0, pos) + 1
                if starts.get(start, first) >= first:
                    starts[start] = first
                end = buf.find("\n", pos)
                if end < 0:
                    break
                pos = buf.find(marker, end)
        lineno, prev = first_line, 0
        parse = self._parse_from
        for start in sorted(starts):
            lineno += buf.count("\n", prev, start)
            prev = start
            end = buf.find("\n", start)
            line = buf[start:] if end < 0 else buf[start:end]
            ev = parse(starts[start], line.rstrip("\r"), ctx)
            if ev is not None:
                yield lineno, ev


_STREAM = frozenset({"TCP", "TLS", "WS", "WSS"})


def _apply(origin: str, rule: Rule, line: str, ctx: Context) -> Event | None:
    m = rule.regex.search(line)
    if m is None:
        return None
    groups = m.groupdict()
    reason = groups.get("reason")
    if reason is None:
        outcome, detail = rule.outcomes.get("", rule.default), clean(m.group())
    else:
        outcome = rule.outcomes.get(reason)
        detail = reason  # a key of our own table: plain text
        if outcome is None:
            outcome, detail = rule.default, clean(reason)
    if outcome is None:
        return None
    kind, verified = outcome
    src, port = _source(groups)
    if src is None:
        return None
    proto = groups.get("proto")
    if proto is not None and rule.tcp_verifies and proto.upper() in _STREAM:
        verified = True
    if rule.challenge_check and not _challenge_answered(line):
        kind, verified = EventKind.AUTH_FAILED, False
    if rule.candidates is not None and line.count(rule.repeat or rule.marker) > 1:
        found = [a for a in (_cand(c) for c in rule.candidates.finditer(line)) if a is not None]
        if len(set(found)) > 1:
            kind, verified, src, port = EventKind.LOG_INJECTION, False, found[rule.pick], None
    account = groups.get("account")
    if account is not None:
        if rule.account_in_uri:
            u = _URI_USER.search(account)
            if u is not None:
                account = u.group(1)
        account = clean(account)
    return Event(stamp(line, ctx), kind, src, port, account, origin, detail, verified)


def _cand(m: re.Match[str]) -> Address | None:
    return _source(m.groupdict())[0]


def _source(groups: Mapping[str, str | None]) -> tuple[Address | None, int | None]:
    hostport = groups.get("hostport")
    if hostport is not None:
        host, port_text = split_hostport(hostport)
        return address(host), _port(port_text)
    return address(groups.get("addr") or ""), _port(groups.get("port"))


def _port(text: str | None) -> int | None:
    if not text or not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def split_hostport(text: str) -> tuple[str, str | None]:
    """'1.2.3.4', '1.2.3.4:5060', '2001:db8::1', '[2001:db8::1]:5060' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, colon, port = text.partition(":")
    if not colon:
        return text, None
    if ":" not in port:
        return host, port
    return text, None  # a bare IPv6 address


_URI_USER = re.compile(r"sips?:([^@;>]*)@")
_CHALLENGE = re.compile(r',Challenge="([^"]*)",ReceivedChallenge="([^"]*)"')


def _challenge_answered(line: str) -> bool:
    m = _CHALLENGE.search(line)
    return m is not None and m.group(1) != "" and m.group(1) == m.group(2)


# -- timestamps: parsed only for lines that produced an event, cached per stamp text -----
_STAMP = re.compile(
    r"\[?(?:(?P<iso>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)"
    r"|(?P<md>\d\d-\d\d \d\d:\d\d:\d\d)"
    r"|(?P<syslog>[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d))"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_DAY = timedelta(days=1)
_STAMPS: dict[str, datetime] = {}
_STAMPS_CTX: Context | None = None


def stamp(line: str, ctx: Context) -> datetime:
    """The line's leading timestamp as UTC, or ctx.default when it has none."""
    global _STAMPS_CTX  # noqa: PLW0603 - the cache belongs to one Context at a time
    if _STAMPS_CTX is not ctx or len(_STAMPS) > 4096:
        _STAMPS.clear()
        _STAMPS_CTX = ctx
    # Fast path: a cached "[...]" stamp (Asterisk) needs no regex.
    head = line[:21] if line[:1] == "[" else None
    got = None if head is None else _STAMPS.get(head)
    if got is not None:
        return got
    m = _STAMP.match(line)
    if m is None:
        return ctx.default
    key = m.group()
    got = _STAMPS.get(key)
    if got is None:
        got = _STAMPS[key] = _to_datetime(m, ctx)
    if head is not None and head == key + "]":
        _STAMPS[head] = got
    return got


def _to_datetime(m: re.Match[str], ctx: Context) -> datetime:
    try:
        if m.group("iso"):
            t = m.group("iso")
            d = datetime(int(t[:4]), int(t[5:7]), int(t[8:10]), *_hms(t[11:]))
        elif m.group("md"):
            t = m.group("md")
            d = datetime(ctx.year, int(t[:2]), int(t[3:5]), *_hms(t[6:]))
        else:
            mon, day, hms = m.group("syslog").split()
            d = datetime(ctx.year, _MONTHS[mon], int(day), *_hms(hms))
        out = d.replace(tzinfo=ctx.tz).astimezone(UTC)
        if not m.group("iso") and ctx.now is not None and out > ctx.now + _DAY:
            out = d.replace(year=ctx.year - 1, tzinfo=ctx.tz).astimezone(UTC)
    except (ValueError, KeyError):
        return ctx.default
    return out


def _hms(t: str) -> tuple[int, int, int]:
    return int(t[:2]), int(t[3:5]), int(t[6:8])
