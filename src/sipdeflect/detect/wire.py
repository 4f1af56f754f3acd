# SIP seen on the wire -> Events. Pure: the capture adapter hands over addresses (packed
# bytes), ports, the payload and `now`; we decode with the SIP core and keep per-source
# features in capped tables. The one signal a spoofer cannot fake is correlated here: a
# request whose Authorization nonce matches a challenge we saw the PBX send to that same
# address (and to no other), then answered 401/403/407, is AUTH_FAILED_WITH_CREDENTIALS,
# verified.
# Everything else (rate, enumeration, scanner User-Agent, 404s, challenges ignored) is
# verified only over TCP. A 2xx to such credentials is AUTH_SUCCEEDED (a proven customer).
# A request for an account under distributed attack (the verdict's swarm table, shared as
# `hot`) is ATTACKED_ACCOUNT, once per source and bucket: one dict lookup per request.
#
# Memory bound: three dicts capped by count (sources, challenges, pending credentialed
# requests), each an LRU (dict order = recency; touch = pop + re-insert; evict = the first
# key). LRU rather than Space-Saving: the state we need is recent (a challenge is answered
# within seconds) and a busy attacker refreshes its own entry with every packet, while a
# flood of one-packet spoofed sources only churns the cold end. Per-entry cost is measured
# in bench/bench_wire.py; the caps keep a million-source flood under 64 MB.
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sipdeflect.detect.events import Address, Event, EventKind, clean
from sipdeflect.detect.fingerprints import Fingerprints
from sipdeflect.errors import SipParseError
from sipdeflect.sip import Request, Response, parse
from sipdeflect.sip.fields import parse_name_addr, parse_uri

if TYPE_CHECKING:
    from sipdeflect.accounting import Tally


@dataclass(frozen=True, slots=True)
class WirePolicy:
    ports: frozenset[int] = frozenset({5060, 5061})  # the PBX's SIP ports
    bucket: float = 10.0  # seconds per rate bucket
    flood_requests: int = 50  # requests from one source in one bucket = a flood
    enumeration_step: int = 10  # every this many distinct accounts/extensions: an event
    # Challenges the PBX sent a source in one bucket that it did not answer with
    # credentials: at this many, an event (and again after as many more). A phone answers
    # each challenge at once; the write-up's flooder never does.
    ignored_challenges: int = 4
    max_accounts: int = 64  # distinct accounts remembered per source
    max_sources: int = 32_768  # ~200 B each with the key
    max_challenges: int = 32_768  # ~250 B each; under a 1M-source/min flood ~2 s of history
    max_pending: int = 8_192
    nonce_ttl: float = 300.0  # a challenge older than this no longer proves anything


_METHODS = {"REGISTER": 0, "INVITE": 1, "OPTIONS": 2}
_METHOD_NAMES = ("REGISTER", "INVITE", "OPTIONS", "other")


class _Src:
    """Per-source features, kept small (about 200 bytes with its key): a flood of spoofed
    sources creates one per address. The account set is created at the second account."""

    __slots__ = (
        "account",
        "accounts",
        "bucket_start",
        "count",
        "hot_done",
        "methods",
        "ua_done",
        "unanswered",
    )

    def __init__(self, now: float) -> None:
        self.bucket_start = now
        self.count = 0
        self.methods = [0, 0, 0, 0]  # REGISTER, INVITE, OPTIONS, other in this bucket
        self.account: str | None = None  # the first account tried
        self.accounts: set[str] | None = None  # every distinct one, from the second on
        self.ua_done = False
        self.unanswered = 0  # challenges sent to it this bucket, not answered with credentials
        self.hot_done = False  # an ATTACKED_ACCOUNT event was given this bucket

    def distinct(self, account: str, cap: int) -> int:
        """Record an account; how many distinct ones so far (0: nothing new)."""
        if self.account is None:
            self.account = account
            return 1
        if self.accounts is None:
            if account == self.account:
                return 0
            self.accounts = {self.account, account}
            return 2
        if account in self.accounts or len(self.accounts) >= cap:
            return 0
        self.accounts.add(account)
        return len(self.accounts)


# Not cnonce (sipp, like many phones, sends cnonce= before nonce=).
_NONCE = re.compile(rb'(?<![\w-])nonce\s*=\s*"([^"]{1,256})"', re.I)
_USERNAME = re.compile(rb'username\s*=\s*"([^"]{0,128})"', re.I)
_RESPONSE_STATUS = frozenset({401, 403, 407})


def _addr(packed: bytes) -> Address:
    return ipaddress.ip_address(packed)


class WireDetector:
    def __init__(
        self,
        fingerprints: Fingerprints,
        policy: WirePolicy | None = None,
        hot: dict[str, float] | None = None,
    ) -> None:
        self.policy = policy or WirePolicy()
        self.fingerprints = fingerprints
        # account -> under distributed attack until (epoch), kept by detect.swarm.Swarm
        self.hot: dict[str, float] = {} if hot is None else hot
        self.sources: dict[bytes, _Src] = {}
        # nonce -> (address, when) it was sent to; None once the PBX sent the same nonce
        # to a second address (time-based nonces repeat within a second, so an attacker who
        # got one could replay it "from" a bystander challenged in that second). The port
        # is not part of the proof: whoever answers from another port of the address that
        # received the challenge can receive there too (same host or same NAT).
        self.challenges: dict[bytes, tuple[bytes, float] | None] = {}
        self.pending: dict[tuple[bytes, int, bytes, bytes], tuple[str, float]] = {}
        self.stats = {"packets": 0, "unparsable": 0, "requests": 0, "responses": 0, "evicted": 0}
        # Traffic accounting (the daemon sets one): requests counted per sender, the PBX's
        # answers per receiver. None: not counted.
        self.tally: Tally | None = None

    # -- entry point --------------------------------------------------------------------
    def packet(
        self,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        payload: bytes,
        *,
        now: float,
        tcp: bool = False,
    ) -> list[Event]:
        """One UDP payload (or one framed TCP message) between src and dst."""
        self.stats["packets"] += 1
        ports = self.policy.ports
        if dport not in ports and sport not in ports:
            return []
        tally = self.tally
        try:
            msg = parse(payload)
        except SipParseError:
            self.stats["unparsable"] += 1
            if tally is not None and dport in ports:  # garbage at the PBX is traffic too
                tally.add(src, len(payload), False)
            return []
        if isinstance(msg, Request):
            if dport not in ports:
                return []
            self.stats["requests"] += 1
            if tally is not None:  # (Tally.add inlined: this runs for every packet)
                acc = tally.rows.get(src) or tally.row(src)
                acc[0] += 1
                acc[1] += len(payload)
            return self._request(msg, src, sport, now, tcp)
        if sport not in ports:
            return []
        self.stats["responses"] += 1
        if tally is not None:
            (tally.rows.get(dst) or tally.row(dst))[2] += 1
        return self._response(msg, dst, dport, now, tcp)

    # -- requests towards the PBX -----------------------------------------------------------
    def _request(self, msg: Request, src: bytes, sport: int, now: float, tcp: bool) -> list[Event]:
        p = self.policy
        out: list[Event] = []
        st = self.sources.pop(src, None)
        if st is None:
            st = _Src(now)
            if len(self.sources) >= p.max_sources:
                del self.sources[next(iter(self.sources))]
                self.stats["evicted"] += 1
        self.sources[src] = st
        if now - st.bucket_start >= p.bucket:
            st.bucket_start, st.count, st.unanswered = now, 0, 0
            st.methods = [0, 0, 0, 0]
            st.hot_done = False
        st.count += 1
        st.methods[_METHODS.get(msg.method, 3)] += 1
        if st.count == p.flood_requests:
            mix = ", ".join(f"{m} {n}" for m, n in zip(_METHOD_NAMES, st.methods, strict=True) if n)
            out.append(
                self._event(
                    EventKind.REQUEST_FLOOD,
                    src,
                    sport,
                    None,
                    now,
                    tcp,
                    f"{st.count} requests in {p.bucket:g}s ({mix})",
                )
            )
        account = _target(msg)
        if account is not None and not st.hot_done and self.hot.get(account, 0.0) > now:
            st.hot_done = True
            why = f"{msg.method} for {account!r}, an account under distributed attack"
            out.append(self._event(EventKind.ATTACKED_ACCOUNT, src, sport, account, now, tcp, why))
        distinct = 0 if account is None else st.distinct(account, p.max_accounts)
        if distinct and distinct % p.enumeration_step == 0:
            out.append(
                self._event(
                    EventKind.ENUMERATION,
                    src,
                    sport,
                    account,
                    now,
                    tcp,
                    f"{distinct} distinct accounts/extensions tried",
                )
            )
        if not st.ua_done:
            st.ua_done = True
            ua = msg.headers.get("user-agent")
            name = None if ua is None else self.fingerprints.match(ua.decode("utf-8", "replace"))
            if name is not None:
                assert ua is not None
                out.append(
                    self._event(
                        EventKind.SCANNER_USER_AGENT,
                        src,
                        sport,
                        account,
                        now,
                        tcp,
                        f"User-Agent {clean(ua.decode('utf-8', 'replace'))!r} ({name})",
                    )
                )
        auth = msg.headers.get("authorization") or msg.headers.get("proxy-authorization")
        if auth is not None:
            m = _NONCE.search(auth)
            if m is not None:
                seen = self.challenges.get(m.group(1))
                if seen is not None and seen[0] == src and now - seen[1] <= p.nonce_ttl:
                    st.unanswered = max(0, st.unanswered - 1)
                    u = _USERNAME.search(auth)
                    user = clean(u.group(1).decode("utf-8", "replace")) if u else ""
                    key = (src, sport, msg.headers.get("call-id") or b"", _cseq(msg))
                    self.pending.pop(key, None)
                    if len(self.pending) >= p.max_pending:
                        del self.pending[next(iter(self.pending))]
                    self.pending[key] = (user, now)
        return out

    # -- the PBX's answers --------------------------------------------------------------------
    def _response(
        self, msg: Response, dst: bytes, dport: int, now: float, tcp: bool
    ) -> list[Event]:
        p = self.policy
        status = msg.status
        key = (dst, dport, msg.headers.get("call-id") or b"", _cseq(msg))
        out: list[Event] = []
        if status in _RESPONSE_STATUS:
            failed = self._settle(key, EventKind.AUTH_FAILED_WITH_CREDENTIALS, msg, now)
            if failed is not None:
                out.append(failed)
            if status != 403:
                chal = msg.headers.get("www-authenticate") or msg.headers.get("proxy-authenticate")
                m = None if chal is None else _NONCE.search(chal)
                if m is not None:
                    nonce = m.group(1)
                    before = self.challenges.pop(nonce, (dst, now))
                    if len(self.challenges) >= p.max_challenges:
                        del self.challenges[next(iter(self.challenges))]
                    same = before is not None and before[0] == dst
                    self.challenges[nonce] = (dst, now) if same else None
                    ignored = self._challenged(dst, dport, now, tcp)
                    if ignored is not None:
                        out.append(ignored)
        elif status == 404:
            kind = (
                EventKind.UNKNOWN_EXTENSION
                if _cseq(msg).endswith(b"INVITE")
                else EventKind.UNKNOWN_ACCOUNT
            )
            user = _user(msg.headers.get("to"))
            out.append(self._event(kind, dst, dport, user, now, tcp, f"404 {clean(msg.reason)}"))
        elif 200 <= status < 300:
            accepted = self._settle(key, EventKind.AUTH_SUCCEEDED, msg, now)
            if accepted is not None:
                out.append(accepted)
        return out

    def _settle(
        self, key: tuple[bytes, int, bytes, bytes], kind: EventKind, msg: Response, now: float
    ) -> Event | None:
        """The PBX's final answer to credentials that answered its challenge (if ``key`` is
        such a request): verified, since only the challenged address could send them."""
        pend = self.pending.pop(key, None)
        if pend is None:
            return None
        detail = f"{msg.status} {clean(msg.reason)} to credentials that answered our challenge"
        return Event(_time(now), kind, _addr(key[0]), key[1], pend[0], "wire", detail, True)

    def _challenged(self, dst: bytes, dport: int, now: float, tcp: bool) -> Event | None:
        """The PBX challenged ``dst``; an event when it has ignored enough challenges."""
        st = self.sources.get(dst)  # only sources we saw sending: never created here
        if st is None or now - st.bucket_start >= self.policy.bucket:
            return None
        st.unanswered += 1
        n = self.policy.ignored_challenges
        if st.unanswered < n:
            return None
        st.unanswered = 0
        return self._event(
            EventKind.CHALLENGES_IGNORED,
            dst,
            dport,
            st.account,
            now,
            tcp,
            f"{n} challenges not answered with credentials within {self.policy.bucket:g}s",
        )

    def _event(  # noqa: PLR0917 - private helper, every argument is needed
        self,
        kind: EventKind,
        src: bytes,
        port: int,
        account: str | None,
        now: float,
        tcp: bool,
        detail: str,
    ) -> Event:
        return Event(_time(now), kind, _addr(src), port, account, "wire", detail, tcp)


def _time(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _cseq(msg: Request | Response) -> bytes:
    return b" ".join((msg.headers.get("cseq") or b"").split())


def _user(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        user = parse_name_addr(value).uri.user
    except SipParseError:
        return None
    return None if user is None else clean(user, 64)


def _target(msg: Request) -> str | None:
    """The account or extension a request tries: To user for REGISTER, else R-URI user."""
    if msg.method == "REGISTER":
        return _user(msg.headers.get("to"))
    try:
        user = parse_uri(msg.uri.encode("utf-8", "replace")).user
    except SipParseError:
        return None
    return None if user is None else clean(user, 64)
