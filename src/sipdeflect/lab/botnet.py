# A distributed password guesser for the lab (issue 19): many source addresses, each
# trying one account a few times with a wrong password, the way a botnet avoids per-address
# thresholds. Each attempt is a real digest login: REGISTER, the PBX's 401 challenge, then
# REGISTER with Authorization computed from that challenge (RFC 2617 / RFC 3261 22.4,
# qop=auth when offered), then the final answer. One thread drives every bot with
# non-blocking sockets and a timer heap; everything is bounded (attempts, per-step
# timeouts, an overall deadline). `rtt` is how long a bot takes to answer a challenge: the
# network round trip a real bot has (this kernel has no netem to add it on the link).
from __future__ import annotations

import hashlib
import heapq
import re
import secrets
import selectors
import socket
import time
from dataclasses import dataclass, field

from sipdeflect.errors import SipParseError
from sipdeflect.lab.netns import Netns
from sipdeflect.sip import Response, parse

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


@dataclass
class Attempt:
    bot: str
    started: float  # epoch
    challenge: int | None = None  # status of the answer to the plain REGISTER
    final: int | None = None  # status of the answer to the credentialed one
    credentialed_at: float | None = None  # when the credentialed REGISTER left


@dataclass
class _Bot:
    addr: str
    sock: socket.socket
    attempt: Attempt | None = None
    step: str = ""  # "plain" (waiting for a 401) or "auth" (waiting for the verdict)
    call_id: str = ""
    cseq: int = 1
    deadline: float = 0.0
    challenge: dict[str, str] = field(default_factory=dict)  # the 401's digest parameters


def digest(user: str, password: str, uri: str, challenge: dict[str, str]) -> str:
    """The Authorization value answering a challenge (MD5; qop=auth when offered)."""
    realm, nonce, qop = challenge.get("realm", ""), challenge.get("nonce", ""), challenge.get("qop")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 - SIP digest
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()  # noqa: S324
    head = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if qop is not None and "auth" in qop.split(","):
        cnonce, nc = secrets.token_hex(8), "00000001"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
        return f'{head}, response="{resp}", qop=auth, nc={nc}, cnonce="{cnonce}", algorithm=MD5'
    resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
    return f'{head}, response="{resp}", algorithm=MD5'


def register(bot: _Bot, pbx: str, user: str, auth: str | None) -> bytes:
    host, port = bot.sock.getsockname()[:2]
    lines = [
        f"REGISTER sip:{pbx} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{pbx}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@{pbx}>",
        f"Call-ID: {bot.call_id}",
        f"CSeq: {bot.cseq} REGISTER",
        f"Contact: <sip:{user}@{host}:{port}>",
        "User-Agent: Linphone/3.6.1",  # bots hide behind an ordinary phone's name
        "Expires: 3600",
    ]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


@dataclass
class Botnet:
    """Bots on ``addrs`` (addresses already on ``ns``'s interface) attacking ``user`` at
    ``pbx``:5060, each ``tries`` times; bot i starts at i * spread / len(addrs) and tries
    again every ``gap`` seconds."""

    ns: Netns
    addrs: list[str]
    pbx: str
    user: str
    tries: int = 2
    spread: float = 60.0
    gap: float = 5.0
    rtt: float = 0.04
    step_timeout: float = 2.0
    password: str = "wrong-guess"  # noqa: S105 - the guess that fails, by design
    attempts: list[Attempt] = field(default_factory=list)

    def run(self, deadline: float = 180.0) -> list[Attempt]:
        sel = selectors.DefaultSelector()
        timers: list[tuple[float, int, str]] = []  # (when, bot index, what)
        bots: list[_Bot] = []
        t0 = time.monotonic()
        for i, addr in enumerate(self.addrs):
            s = self.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((addr, 0))
            s.setblocking(False)
            bot = _Bot(addr, s)
            bots.append(bot)
            sel.register(s, selectors.EVENT_READ, i)
            start = i * self.spread / max(1, len(self.addrs))
            for k in range(self.tries):
                heapq.heappush(timers, (t0 + start + k * self.gap, i, "start"))
        try:
            self._loop(sel, timers, bots, t0 + deadline)
        finally:
            for bot in bots:
                sel.unregister(bot.sock)
                bot.sock.close()
            sel.close()
        return self.attempts

    def _loop(
        self,
        sel: selectors.BaseSelector,
        timers: list[tuple[float, int, str]],
        bots: list[_Bot],
        end: float,
    ) -> None:
        # Timers: "start" an attempt, send its "auth" after the round trip, "expire" a
        # step that got no answer in time. The loop ends when none is left.
        while timers and time.monotonic() < end:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _, i, what = heapq.heappop(timers)
                bot = bots[i]
                if what == "start":
                    if bot.attempt is not None:  # still busy: try right after it
                        heapq.heappush(timers, (bot.deadline, i, "start"))
                    else:
                        self._start(bot, now)
                        heapq.heappush(timers, (bot.deadline, i, "expire"))
                elif what == "auth" and bot.attempt is not None and bot.step == "rtt":
                    self._send_auth(bot, now)
                    heapq.heappush(timers, (bot.deadline, i, "expire"))
                elif what == "expire" and bot.attempt is not None and now >= bot.deadline:
                    bot.attempt = None  # no answer in time: this attempt is over
            wait = timers[0][0] - now if timers else 0.0
            for key, _ in sel.select(max(0.0, min(wait, 0.05))):
                self._receive(bots[key.data], timers, key.data)

    def _start(self, bot: _Bot, now: float) -> None:
        bot.attempt = Attempt(bot.addr, time.time())
        self.attempts.append(bot.attempt)
        bot.call_id, bot.cseq, bot.step = secrets.token_hex(8), 1, "plain"
        bot.deadline = now + self.step_timeout
        try:
            bot.sock.sendto(register(bot, self.pbx, self.user, None), (self.pbx, 5060))
        except OSError:  # e.g. EPERM once blocked on our own side: nothing was sent
            bot.attempt = None

    def _receive(self, bot: _Bot, timers: list[tuple[float, int, str]], i: int) -> None:
        try:
            data = bot.sock.recv(65536)
        except OSError:
            return
        try:
            msg = parse(data)
        except SipParseError:
            return
        att = bot.attempt
        if att is None or not isinstance(msg, Response) or msg.status < 200:
            return
        if bot.step == "plain":
            att.challenge = msg.status
            chal = msg.headers.get("www-authenticate")
            if msg.status != 401 or chal is None:
                bot.attempt = None
                return
            text = chal.decode(errors="replace")
            bot.challenge = {m[0].lower(): m[1] or m[2] for m in _PARAM.findall(text)}
            bot.step = "rtt"
            heapq.heappush(timers, (time.monotonic() + self.rtt, i, "auth"))
        elif bot.step == "auth":
            att.final = msg.status
            bot.attempt = None

    def _send_auth(self, bot: _Bot, now: float) -> None:
        att = bot.attempt
        assert att is not None
        auth = digest(self.user, self.password, f"sip:{self.pbx}", bot.challenge)
        bot.cseq, bot.step, bot.deadline = 2, "auth", now + self.step_timeout
        att.credentialed_at = time.time()
        try:
            bot.sock.sendto(register(bot, self.pbx, self.user, auth), (self.pbx, 5060))
        except OSError:
            bot.attempt = None
