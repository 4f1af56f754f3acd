# One record per message the decoy saw (DecoyEvent), shared by the terminal line, --show,
# the JSON lines of --events and, later, the daemon and pcap output. The hot loop only builds
# the record and hands it to a Hub, which queues it (bounded; overflow is counted) for a
# writer thread that calls the sinks, so a slow terminal never slows the answers. Fields
# that cost a parse (From user, User-Agent) are computed only when a sink asks. Attacker
# bytes are data: control characters are escaped and Authorization values redacted before
# anything is written (house rule 9).
from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

from sipdeflect.errors import SipParseError
from sipdeflect.render import escape_line, redact_bytes
from sipdeflect.sip.message import Request
from sipdeflect.sip.parse import parse

# One implementation for every printer (sipdeflect.render); these names are the decoy's API.
escape = escape_line
redact = redact_bytes


def show(raw: bytes) -> str:
    """A whole message for --show: redacted, decoded leniently, escaped line by line."""
    text = redact(raw).decode("utf-8", "replace")
    return "\n".join(escape(line) for line in text.replace("\r\n", "\n").split("\n"))


class DecoyEvent(NamedTuple):
    """One message seen by the decoy and what it did about it.

    A NamedTuple rather than a frozen dataclass: it is built once per datagram on the hot
    path, where a frozen dataclass's __init__ costs several times more. ``request`` is None
    when the hot path answered without building a Request (or the message did not parse);
    ``message`` parses ``raw`` on demand for the sinks.
    """

    time: float
    source: tuple[str, int]
    transport: str
    raw: bytes
    request: Request | None
    answer: str  # strategy answer name, or "drop"
    status: int | None  # status sent, None when nothing was sent
    why: str
    sent: int = 0  # bytes sent
    method_hint: str = ""  # the method, when known without a parse

    @property
    def message(self) -> Request | None:
        if self.request is not None or self.answer == "drop":
            return self.request
        try:
            msg = parse(self.raw)
        except SipParseError:
            return None
        return msg if isinstance(msg, Request) else None

    @property
    def method(self) -> str:
        if self.method_hint:
            return self.method_hint
        msg = self.message
        return "?" if msg is None else msg.method

    def fields(self) -> tuple[str, str, str]:
        """(method, From user, User-Agent), escaped; one parse at most."""
        msg = self.message
        if msg is None:
            return (escape(self.method_hint) or "?", "", "")
        try:
            user = escape(msg.from_.uri.user or "")
        except SipParseError:
            user = "?"
        return (escape(msg.method), user, escape(msg.user_agent or ""))

    @property
    def from_user(self) -> str:
        return self.fields()[1]

    @property
    def user_agent(self) -> str:
        return self.fields()[2]

    def line(self) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{self.time % 1:.3f}"[2:]
        got = str(self.status) if self.status is not None else "-"
        host, port = self.source
        src = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        method, user, agent = self.fields()
        return (
            f"{ts} {src} {self.transport} {method} from={user!r} "
            f"ua={agent!r} -> {got} {self.answer}: {escape(self.why)}"
        )

    def to_json(self) -> dict[str, Any]:
        method, user, agent = self.fields()
        return {
            "time": self.time,
            "source": self.source[0],
            "port": self.source[1],
            "transport": self.transport,
            "method": method,
            "from_user": user,
            "user_agent": agent,
            "status": self.status,
            "answer": self.answer,
            "why": escape(self.why),
            "size": len(self.raw),
            "sent": self.sent,
        }


Sink = Callable[[DecoyEvent], None]


@dataclass
class Summary:
    """Counters kept by the hot loop; merged across workers; printed at Ctrl-C."""

    messages: int = 0
    answered: int = 0
    dropped: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # a plain dict: the hot loop
    # adds to it for every message, and a Counter's += costs twice a dict's
    drops: Counter[str] = field(default_factory=Counter)
    sources: int = 0
    stopped: int = 0
    evicted: int = 0

    def merge(self, other: Summary) -> None:
        self.messages += other.messages
        self.answered += other.answered
        self.dropped += other.dropped
        for name, n in other.answers.items():
            self.answers[name] = self.answers.get(name, 0) + n
        self.drops.update(other.drops)
        self.sources += other.sources
        self.stopped += other.stopped
        self.evicted += other.evicted

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "answered": self.answered,
            "dropped": self.dropped,
            "answers": dict(self.answers),
            "drops": dict(self.drops),
            "sources": self.sources,
            "stopped": self.stopped,
            "evicted": self.evicted,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Summary:
        return cls(
            d["messages"],
            d["answered"],
            d["dropped"],
            dict(d["answers"]),
            Counter(d["drops"]),
            d["sources"],
            d["stopped"],
            d["evicted"],
        )


CHUNK = 256  # events the writer hands on between two yields of the GIL
HELD_CAP = 4096  # sources counted per second by a summary (the flood is spoofed: bound it)


class Hub:
    """Bounded queue between the hot loop and the sinks, drained by one writer thread.

    Besides events it carries per-source counts ("held": messages the hot loop did not make
    records for, see ``sample_cap``), which go to the sinks that take them."""

    def __init__(self, sinks: list[Sink], maxlen: int = 65_536) -> None:
        self.sinks = sinks
        self._q: deque[DecoyEvent | dict[str, int]] = deque(maxlen=maxlen)
        self.maxlen = maxlen
        self.lost = 0  # events overwritten because the sinks fell behind
        self.pull: Callable[[], None] | None = None  # called by the writer before each drain
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def __bool__(self) -> bool:
        """True when some sink wants every event (not only drops)."""
        return self.wants_all

    @property
    def wants_all(self) -> bool:
        return any(not getattr(sink, "drops_only", False) for sink in self.sinks)

    @property
    def wants_drops(self) -> bool:
        return bool(self.sinks)

    @property
    def sample_cap(self) -> int:
        """Records per second that are enough for every sink, or 0 for all of them. When
        each sink that wants messages only prints ``per_second`` lines and summarises the
        rest per source (LinePrinter), the hot loop builds that many records a second and
        counts the rest per source: a flood costs a dict increment per message instead of
        a record, a queue slot and a writer-thread call."""
        caps = [
            getattr(sink, "per_second", 0) if hasattr(sink, "held") else 0
            for sink in self.sinks
            if not getattr(sink, "drops_only", False)
        ]
        return min(caps) if caps and all(caps) else 0

    def put(self, event: DecoyEvent) -> None:
        q = self._q
        if len(q) >= self.maxlen:
            self.lost += 1
        q.append(event)

    def put_held(self, counts: dict[str, int]) -> None:
        """Messages per source address that got no record (see sample_cap)."""
        q = self._q
        if len(q) >= self.maxlen:
            self.lost += 1
        q.append(counts)

    def drain(self) -> None:
        """Hand every queued item to the sinks, yielding the GIL every ``CHUNK`` items:
        otherwise a long drain holds it for a whole switch interval (5 ms) while the UDP
        loop waits with its datagrams piling up in the kernel's receive queue."""
        q = self._q
        sinks = self.sinks
        done = 0
        while q:
            item = q.popleft()
            if type(item) is dict:
                for sink in sinks:
                    held = getattr(sink, "held", None)
                    if held is not None:
                        held(item)
            else:
                for sink in sinks:
                    sink(item)  # type: ignore[arg-type]
            done += 1
            if done % CHUNK == 0:
                time.sleep(0)

    def start(self) -> None:
        def run() -> None:
            while not self._stop:
                self._wake.wait(0.1)
                if self.pull is not None:
                    self.pull()
                self.drain()
            if self.pull is not None:
                self.pull()
            self.drain()

        self._thread = threading.Thread(target=run, name="decoy-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)


class LinePrinter:
    """One line per message, at most ``per_second`` lines; the rest become, once a second,
    'N more messages from X' per source (the few busiest), so a flood cannot flood the
    terminal."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        per_second: int = 20,
        whole: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write
        self.per_second = per_second
        self.whole = whole
        self.clock = clock
        self._window = clock()
        self._lines = 0
        self._held: Counter[str] = Counter()

    def _tick(self) -> None:
        now = self.clock()
        if now - self._window >= 1.0:
            self.flush()
            self._window = now
            self._lines = 0

    def __call__(self, event: DecoyEvent) -> None:
        self._tick()
        if self._lines < self.per_second:
            self._lines += 1
            self.write(event.line())
            if self.whole:
                self.write(show(event.raw))
        elif len(self._held) < HELD_CAP or event.source[0] in self._held:
            self._held[event.source[0]] += 1

    def held(self, counts: Mapping[str, int]) -> None:
        """Messages the hot loop counted per source instead of recording them."""
        self._tick()
        mine = self._held
        for ip, n in counts.items():
            if len(mine) < HELD_CAP or ip in mine:
                mine[ip] += n

    def flush(self) -> None:
        if not self._held:
            return
        busiest = self._held.most_common(5)
        for ip, n in busiest:
            self.write(f"... {n} more messages from {escape(ip)}")
        rest = sum(self._held.values()) - sum(n for _, n in busiest)
        if rest:
            self.write(f"... {rest} more messages from {len(self._held) - len(busiest)} others")
        self._held.clear()


class JsonLines:
    """--events: one JSON object per message."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: DecoyEvent) -> None:
        self.out.write(json.dumps(event.to_json()) + "\n")
        self.out.flush()


class DropLog:
    """A log line per dropped packet, at most ``per_second``; the rest are counted and
    reported as one line per second."""

    drops_only = True  # the hub need not build events for answered messages for this sink

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        per_second: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write
        self.per_second = per_second
        self.clock = clock
        self._window = clock()
        self._lines = 0
        self.suppressed = 0

    def __call__(self, event: DecoyEvent) -> None:
        if event.status is not None or event.answer != "drop":
            return
        now = self.clock()
        if now - self._window >= 1.0:
            if self.suppressed:
                self.write(f"dropped {self.suppressed} more packets (log rate-limited)")
            self._window, self._lines, self.suppressed = now, 0, 0
        if self._lines < self.per_second:
            self._lines += 1
            host, port = event.source
            self.write(
                f"dropped {len(event.raw)} bytes from {escape(host)}:{port}: {escape(event.why)}"
            )
        else:
            self.suppressed += 1
