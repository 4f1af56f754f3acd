# Shapes store rows into what the report draws: series by place, top sources, per-source
# timelines and what each source tried. Pure: rows in, plain values out. The store keeps
# 10 s buckets (5 min after a day); the report re-bins them to a width that gives at most
# MAX_BINS bars over the time covered, so a 30 s lab and a month both read well.
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import gcd

from sipdeflect.decisions import Action, Decision
from sipdeflect.store.sqlite import PLACES, TRAFFIC_BUCKET, StoredEvent, TrafficRow

WIDTHS = (10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400)  # seconds per bar
MAX_BINS = 200


def bin_width(first: float, last: float, step: int = TRAFFIC_BUCKET) -> int:
    """The narrowest width in WIDTHS, no finer than the rows' own ``step``, that covers
    first..last in at most MAX_BINS bars."""
    span = last - first + step
    for w in WIDTHS:
        if w >= step and span / w <= MAX_BINS:
            return w
    return WIDTHS[-1]


def _step(buckets: Iterable[int]) -> int:
    """The resolution rows were written at: the gcd of their distances (coarse old rows,
    or a writer with wider buckets, must not be drawn as spikes with gaps between)."""
    first, g = None, 0
    for b in buckets:
        if first is None:
            first = b
        g = gcd(g, b - first)
    return max(g, TRAFFIC_BUCKET)


def width_label(width: int) -> str:
    if width % 3600 == 0:
        return "hour" if width == 3600 else f"{width // 3600} h"
    if width % 60 == 0:
        return "minute" if width == 60 else f"{width // 60} min"
    return f"{width} s"


@dataclass(slots=True)
class SourceSummary:
    source: str
    packets: int = 0
    bytes: int = 0
    replies: int = 0
    by_place: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None
    accounts: Counter[str] = field(default_factory=Counter)
    user_agents: Counter[str] = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def final_action(self) -> str:
        return self.decisions[-1].action.value if self.decisions else "watched"


@dataclass(frozen=True, slots=True)
class Model:
    width: int  # seconds per bucket (bar)
    buckets: list[int]  # sorted bucket starts
    series: dict[str, list[int]]  # place -> packets per bucket
    sources: list[SourceSummary]  # most packets first
    per_source: dict[str, dict[str, dict[int, int]]]  # source -> place -> bucket -> packets
    marks: list[Decision]  # deflect/block decisions, in time order


def build_model(
    traffic: Iterable[TrafficRow],
    events: Iterable[StoredEvent],
    decisions: Sequence[Decision],
    width: int | None = None,
) -> Model:
    rows = list(traffic)
    if width is None and rows:
        starts = {int(r.bucket) for r in rows}
        width = bin_width(min(starts), max(starts), _step(starts))
    width = width or 60
    by_bucket: dict[str, dict[int, int]] = {p: defaultdict(int) for p in PLACES}
    per_source: dict[str, dict[str, dict[int, int]]] = defaultdict(
        lambda: {p: defaultdict(int) for p in PLACES}
    )
    summaries: dict[str, SourceSummary] = {}
    for row in rows:
        b = int(row.bucket) // width * width
        by_bucket[row.place][b] += row.packets
        per_source[row.source][row.place][b] += row.packets
        s = summaries.setdefault(row.source, SourceSummary(row.source))
        s.packets += row.packets
        s.bytes += row.bytes
        s.replies += row.replies
        s.by_place[row.place] += row.packets
        s.first = row.bucket if s.first is None else min(s.first, row.bucket)
        s.last = row.bucket if s.last is None else max(s.last, row.bucket)
    for ev in events:
        s = summaries.setdefault(ev.source, SourceSummary(ev.source))
        if ev.account:
            s.accounts[ev.account] += 1
        if ev.user_agent:
            s.user_agents[ev.user_agent] += 1
        s.first = ev.at if s.first is None else min(s.first, ev.at)
        s.last = ev.at if s.last is None else max(s.last, ev.at)
    marks = []
    for d in decisions:
        if d.target.num_addresses == 1:
            key = str(d.target.network_address)
            summaries.setdefault(key, SourceSummary(key)).decisions.append(d)
        if d.action in (Action.DEFLECT, Action.BLOCK):
            marks.append(d)
    buckets = sorted({b for place in by_bucket.values() for b in place})
    series = {p: [by_bucket[p].get(b, 0) for b in buckets] for p in PLACES}
    ranked = sorted(summaries.values(), key=lambda s: (-s.packets, s.source))
    return Model(
        width,
        buckets,
        series,
        ranked,
        {k: {p: dict(v) for p, v in places.items()} for k, places in per_source.items()},
        sorted(marks, key=lambda d: d.at),
    )
