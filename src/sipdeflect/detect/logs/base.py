# Table-driven PBX log parsing shared by every format. A format is a tuple of Rules; each
# Rule has a cheap literal marker (tested with `in`, or searched with str.find over a whole
# buffer), one regex, and a table from the PBX's reason wording to (EventKind, verified).
# The source address comes only from the regex group bound to the field the PBX fills in;
# when the line holds several different candidates for that field (attacker text imitating
# it) the event becomes LOG_INJECTION, which the policy never escalates. Pure: no I/O, time
# comes from the line or from the caller's Context.
#
# A Rule may also carry a template (``fast``): its regex's common shape as literals and
# typed fields, which the optional C scanner (_clog.c) reads without the regex, handing
# every line it cannot read with certainty back to the Python path; scan_bytes() uses it.
from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from types import ModuleType
from typing import TYPE_CHECKING

from sipdeflect.detect import events
from sipdeflect.detect.events import Address, Event, EventKind, address, clean

if TYPE_CHECKING:
    from sipdeflect.detect.logs._clog import Scanner

Outcome = tuple[EventKind, bool]  # kind, verified

# -- templates for the C scanner (see _clog.c for what each step means) -------------------
Step = tuple[object, ...]


def lit(text: str, where: str = "first") -> Step:
    """A literal the regex has to find: the "first" one from here on, the "unique" one
    (the line must hold it exactly once) or the "last" one in the line."""
    return ("lit", text.encode(), where)


def fld(group: str, cls: str) -> Step:
    """The text up to the next literal (or the end) is a field of class ``cls`` (a regex
    character class, see _clog.c's CLASS_NAMES), captured as ``group`` ("" = not kept)."""
    return ("field", group, cls)


def end(strip_dot: bool = False) -> Step:
    """The pending field runs to the end of the line; with ``strip_dot``, less one final
    "." (a lazy ``...+?\\.?$``)."""
    return ("end", strip_dot)


def oneof(*texts: str) -> Step:
    """``(?:A|B|...)`` right here (none may begin another: the regex tries them in order)."""
    return ("oneof", tuple(t.encode() for t in texts))


def opt(text: str, group: str, close: str) -> Step:
    """``(?:.*?TEXT(?P<group>[^CLOSE]*)CLOSE)?``: the first TEXT from here on, if any."""
    return ("opt", text.encode(), group, close.encode())


@dataclass(frozen=True, slots=True)
class Context:
    """What a line cannot say about itself: the year of year-less stamps, the zone the PBX
    logs in, and the time to use when a line has no stamp at all (journal, stderr). With
    ``now``, a year-less stamp more than a day after it is taken from the year before
    (a December line read in January), as syslog readers and fail2ban do. It also holds
    the stamps already converted under it (a cache, not part of its value)."""

    year: int
    tz: tzinfo = UTC
    default: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    now: datetime | None = None
    # stamp text (or "[stamp]" head) -> UTC time; stamp text without seconds -> UTC at :00
    stamps: dict[str, datetime] = field(default_factory=dict, init=False, repr=False, compare=False)
    minutes: dict[str, datetime | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )


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
    fast: tuple[Step, ...] = ()  # the regex's common shape, for the C scanner (optional)


Apply = Callable[[str, Context], Event | None]


@dataclass(frozen=True, slots=True)
class LogFormat:
    name: str
    rules: tuple[Rule, ...]
    sniff: re.Pattern[str]  # lines typical of this PBX, for format detection
    markers: tuple[str, ...] = field(init=False)
    # rule index -> (marker, compiled rule) for that rule and every later one
    _from: tuple[tuple[tuple[str, Apply], ...], ...] = field(init=False, repr=False, compare=False)
    _first: dict[str, int] = field(init=False, repr=False, compare=False)
    _scanner: Scanner | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "markers", tuple(dict.fromkeys(r.marker for r in self.rules)))
        # What scan() searches for: each marker, except that a marker containing another
        # one needs no pass of its own (every line holding it holds the shorter one, and
        # the per-line loop tests each rule's own marker) -> the first rule to try.
        first: dict[str, int] = {}
        for i, r in enumerate(self.rules):
            key = min((m for m in self.markers if m in r.marker), key=len)
            first[key] = min(first.get(key, i), i)
        object.__setattr__(self, "_first", first)
        compiled = tuple((r.marker, _compile(self.name, r)) for r in self.rules)
        tails = tuple(compiled[i:] for i in range(len(compiled)))
        object.__setattr__(self, "_from", tails)
        object.__setattr__(self, "_scanner", _scanner(self))

    def parse(self, line: str, ctx: Context) -> Event | None:
        """One log line -> an Event, or None when it is not a failure we know: the first
        rule whose marker the line holds and whose regex gives an event."""
        return self._parse_from(0, line, ctx) if self.rules else None

    def _parse_from(self, first: int, line: str, ctx: Context) -> Event | None:
        """parse(), knowing no rule before index ``first`` has its marker in the line."""
        for marker, apply in self._from[first]:
            if marker in line:
                ev = apply(line, ctx)
                if ev is not None:
                    return ev
        return None

    @property
    def accelerated(self) -> bool:
        return self._scanner is not None

    def scan_bytes(
        self, data: bytes | memoryview, ctx: Context, first_line: int = 1
    ) -> Iterable[tuple[int, Event]]:
        """scan() of ``str(data, "utf-8", "replace")`` (whole lines), in C when the
        accelerator is built: the same events, line for line."""
        if self._scanner is None:
            return self.scan(str(data, "utf-8", "replace"), ctx, first_line)
        return self._scanner.scan(data, ctx, first_line)

    def scan(self, buf: str, ctx: Context, first_line: int = 1) -> Iterator[tuple[int, Event]]:
        """Events of a buffer of whole lines with their 1-based line numbers: for each line,
        what parse() gives.

        Only lines holding a marker are looked at: str.find runs at C speed over the
        buffer, so the regexes see a small fraction of a quiet log. Each hit is packed
        into one int (line start, first rule) so that one sort of ints orders the lines
        and puts each line's lowest rule first.
        """
        find, rfind = buf.find, buf.rfind
        hits: list[int] = []
        add = hits.append
        shift = max(len(self.rules), 1).bit_length()
        for marker, first in self._first.items():
            step = len(marker)
            pos = find(marker)
            while pos >= 0:
                add((rfind("\n", 0, pos) + 1) << shift | first)
                pos = find(marker, pos + step)
        if not hits:
            return
        hits.sort()
        mask = (1 << shift) - 1
        crlf = "\r" in buf
        count = buf.count
        tails = self._from
        lineno, prev = first_line, 0
        for hit in hits:
            start = hit >> shift
            if start < prev:
                continue  # the same line again, for a later rule
            lineno += count("\n", prev, start)
            end = find("\n", start)
            prev = start + 1 if end < 0 else end  # the next hit is on a later line
            line = buf[start:] if end < 0 else buf[start:end]
            if crlf:
                line = line.rstrip("\r")
            for marker, apply in tails[hit & mask]:
                if marker in line:
                    ev = apply(line, ctx)
                    if ev is not None:
                        yield lineno, ev
                        break


def _load_c() -> ModuleType | None:
    if os.environ.get("SIPDEFLECT_NO_C"):
        return None
    try:
        return importlib.import_module("sipdeflect.detect.logs._clog")
    except ImportError:
        return None


_CLOG = _load_c()
# logscan --json's line formatter in C (see commands/logscan.py), or None:
# (line head, [(line, Event)], time texts, address texts) -> the lines, or None.
JsonLines = Callable[
    [str, list[tuple[int, Event]], dict[object, str], dict[int, object]], str | None
]
JSON_LINES: JsonLines | None = None if _CLOG is None else _CLOG.json_lines


def count_newlines(data: bytes | memoryview) -> int:
    """data.count(b"\\n"), in C (SIMD) when the accelerator is built."""
    if _CLOG is None:
        return bytes(data).count(b"\n")
    return int(_CLOG.count_newlines(data))


_GROUPS = ("reason", "hostport", "addr", "port", "proto", "account")


def _template_groups(rule: Rule) -> set[str]:
    """The regex groups a template fills; a template that cannot stand for its regex is
    a programming error, reported when the format is built."""
    groups: set[str] = set()
    for i, step in enumerate(rule.fast):
        if i == 0 and (step[0] != "lit" or step[2] == "last"):
            raise ValueError(f"{rule.marker!r}: a template starts with a first/unique literal")
        if step[0] == "opt" and rule.fast[i - 1][0] != "lit":
            raise ValueError(f"{rule.marker!r}: opt() skips a .*? gap: it follows a literal")
        if step[0] == "field" and step[1]:
            groups.add(str(step[1]))
        if step[0] == "field" and step[2] == "proto_hostport":
            groups |= {"proto", "hostport"}
        if step[0] == "opt":
            groups.add(str(step[2]))
    return groups


def _scanner(fmt: LogFormat) -> Scanner | None:
    """The C scanner for a format (None without the accelerator): each rule's marker,
    template and the tables its apply() reads. Templates are checked against their
    regexes either way."""
    rules = []
    for r in fmt.rules:
        regex_groups = set(r.regex.groupindex) & set(_GROUPS)
        if r.fast and _template_groups(r) != regex_groups:
            raise ValueError(f"{fmt.name} rule {r.marker!r}: its template and regex differ")
        rules.append(
            (
                r.marker.encode(),
                r.fast,
                dict(r.outcomes),
                r.outcomes.get("", r.default),
                r.default,
                (r.repeat or r.marker).encode() if r.candidates is not None else b"",
                r.tcp_verifies,
                r.account_in_uri,
                "reason" in regex_groups,
                "proto" in regex_groups,
                _UNANSWERED if r.challenge_check else None,
            )
        )
    if _CLOG is None:
        return None
    return _CLOG.Scanner(  # type: ignore[no-any-return]
        tuple((m.encode(), first) for m, first in fmt._first.items()),
        tuple(rules),
        fmt.name,
        Event,
        address,
        events._ADDR_CACHE,
        stamp,
        fmt._parse_from,
        _SECONDS,
        _STAMPS_MAX,
    )


_STREAM = frozenset({"TCP", "TLS", "WS", "WSS"})
_new_event = tuple.__new__  # Event(...) without NamedTuple's Python-level __new__


def _compile(origin: str, rule: Rule) -> Apply:
    """The rule as one function from a line to an Event (or None). Group positions are
    looked up once here; the function does per line what the Rule's fields say."""
    search = rule.regex.search
    pos = {name: i - 1 for name, i in rule.regex.groupindex.items()}  # index in m.groups()
    i_reason = pos.get("reason", -1)
    i_hostport = pos.get("hostport", -1)
    i_addr = pos.get("addr", -1)
    i_port = pos.get("port", -1)
    i_proto = pos.get("proto", -1)
    i_account = pos.get("account", -1)
    outcomes, default = rule.outcomes, rule.default
    only = outcomes.get("", default)
    tcp_verifies, challenge_check = rule.tcp_verifies, rule.challenge_check
    candidates, pick = rule.candidates, rule.pick
    repeat = rule.repeat or rule.marker
    account_of = _uri_account if rule.account_in_uri else clean

    def apply(line: str, ctx: Context) -> Event | None:
        m = search(line)
        if m is None:
            return None
        gs = m.groups()
        reason = gs[i_reason] if i_reason >= 0 else None
        if reason is None:
            outcome, detail = only, clean(m.group())
        else:
            outcome = outcomes.get(reason)
            detail = reason  # a key of our own table: plain text
            if outcome is None:
                outcome, detail = default, clean(reason)
        if outcome is None:
            return None
        kind, verified = outcome
        hostport = gs[i_hostport] if i_hostport >= 0 else None
        if hostport is not None:
            host, _, port_text = hostport.partition(":")  # split_hostport's common case
            if ":" in port_text or host[:1] == "[":
                host, port_text = split_hostport(hostport)
        else:
            host = (gs[i_addr] if i_addr >= 0 else None) or ""
            port_text = gs[i_port] if i_port >= 0 else None
        src = address(host)
        if src is None:
            return None
        port = _port(port_text)
        if i_proto >= 0 and tcp_verifies:
            proto = gs[i_proto]
            if proto is not None and proto.upper() in _STREAM:
                verified = True
        if challenge_check and not _challenge_answered(line):
            kind, verified = _UNANSWERED
        if candidates is not None and line.count(repeat) > 1:
            found = [a for a in (_cand(c) for c in candidates.finditer(line)) if a is not None]
            if len(set(found)) > 1:
                kind, verified, src, port = EventKind.LOG_INJECTION, False, found[pick], None
        account = gs[i_account] if i_account >= 0 else None
        if account is not None:
            account = account_of(account)
        # A cached "[...]" stamp head (Asterisk) needs no regex; see stamp().
        when = ctx.stamps.get(line[:21])
        if when is None:
            when = stamp(line, ctx)
        return _new_event(Event, (when, kind, src, port, account, origin, detail, verified))

    return apply


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


def _uri_account(raw: str) -> str:
    """A From header's user part (the whole text when it has no SIP URI), printable."""
    u = _URI_USER.search(raw)
    return clean(raw if u is None else u.group(1))


# Asterisk's InvalidPassword without our challenge answered: a plain failure (the C scanner
# reads the same outcome and makes the same check, _clog.c's challenge_answered()).
_UNANSWERED: Outcome = (EventKind.AUTH_FAILED, False)
_CHALLENGE = re.compile(r',Challenge="([^"]*)",ReceivedChallenge="([^"]*)"')
_REMOTE = ',RemoteAddress="'


def _challenge_answered(line: str) -> bool:
    """Asterisk answered its own challenge: the Challenge/ReceivedChallenge pair that
    res_security_log writes after the RemoteAddress field (the last one, the one the rule
    reads), the first value non-empty and equal to the second. Asterisk escapes nothing in
    the values (AccountID, SessionID, the received nonce and hash are attacker text and may
    hold '",Challenge="a'), so no key="value" split is certain; instead a line with any
    "Challenge=" besides that one pair (2 in all: Challenge= and ReceivedChallenge=) is not
    answered. Attacker text can then only take the proof away, never add it: a forged pair
    ahead of RemoteAddress is not after it, one in a field after it is a third and fourth
    "Challenge=". See docs/detection.md."""
    at = line.rfind(_REMOTE)
    if at < 0 or line.count("Challenge=") != 2:
        return False
    m = _CHALLENGE.search(line, at + len(_REMOTE))
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
_SECONDS = tuple(timedelta(seconds=i) for i in range(60))
_STAMPS_MAX = 4096  # entries per cache (cleared when full: a big dict costs more than misses)


def stamp(line: str, ctx: Context) -> datetime:
    """The line's leading timestamp as UTC, or ctx.default when it has none. Converted
    stamps are kept in ctx.stamps under their text and, for "[stamp]" heads (Asterisk),
    under the 21-character head too: no other key has that length, so a lookup of a
    line's first 21 characters hits only for such a head."""
    stamps = ctx.stamps
    head = line[:21] if line[:1] == "[" else None
    got = None if head is None else stamps.get(head)
    if got is not None:
        return got
    m = _STAMP.match(line)
    if m is None:
        return ctx.default
    if len(stamps) >= _STAMPS_MAX:
        stamps.clear()
    key = m.group()
    got = stamps.get(key)
    if got is None:
        got = stamps[key] = _stamp_of(m, ctx)
    if head is not None and head == key + "]":
        stamps[head] = got
    return got


def _stamp_of(m: re.Match[str], ctx: Context) -> datetime:
    """A new stamp: its minute is converted once (a busy log has a new second on nearly
    every line), then the seconds are added. A zone's offset changes only on a whole
    minute, so this equals converting the full local time."""
    kind = m.lastgroup or ""
    text = m.group(kind)
    minute = text[:-2]
    minutes = ctx.minutes
    if minute in minutes:
        base = minutes[minute]
    else:
        if len(minutes) >= _STAMPS_MAX:
            minutes.clear()
        base = minutes[minute] = _to_datetime(kind, minute + "00", ctx.year, ctx)
    sec = int(text[-2:])
    if base is None or sec > 59:
        return ctx.default
    out = base + _SECONDS[sec]
    if kind != "iso" and ctx.now is not None and out > ctx.now + _DAY:
        return _to_datetime(kind, text, ctx.year - 1, ctx) or ctx.default  # (syslog readers)
    return out


def _to_datetime(kind: str, t: str, year: int, ctx: Context) -> datetime | None:
    """Stamp text of one kind (year-less ones in ``year``) as UTC; None if invalid."""
    try:
        if kind == "iso":
            d = datetime(int(t[:4]), int(t[5:7]), int(t[8:10]), *_hms(t[11:]))
        elif kind == "md":
            d = datetime(year, int(t[:2]), int(t[3:5]), *_hms(t[6:]))
        else:
            mon, day, hms = t.split()
            d = datetime(year, _MONTHS[mon], int(day), *_hms(hms))
    except (ValueError, KeyError):
        return None
    return d.replace(tzinfo=ctx.tz).astimezone(UTC)


def _hms(t: str) -> tuple[int, int, int]:
    return int(t[:2]), int(t[3:5]), int(t[6:8])
