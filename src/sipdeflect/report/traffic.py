# Shapes store rows into what the report draws: per-minute series by place, top sources,
# per-source timelines and what each source tried. Pure: rows in, plain values out.
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sipdeflect.decisions import Action, Decision
from sipdeflect.store.sqlite import PLACES, StoredEvent, TrafficRow


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
    buckets: list[int]  # sorted bucket starts
    series: dict[str, list[int]]  # place -> packets per bucket
    sources: list[SourceSummary]  # most packets first
    per_source: dict[str, dict[int, int]]  # source -> bucket -> packets (all places)
    marks: list[Decision]  # deflect/block decisions, in time order


def build_model(
    traffic: Iterable[TrafficRow], events: Iterable[StoredEvent], decisions: Sequence[Decision]
) -> Model:
    by_bucket: dict[str, dict[int, int]] = {p: defaultdict(int) for p in PLACES}
    per_source: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    summaries: dict[str, SourceSummary] = {}
    for row in traffic:
        by_bucket[row.place][row.bucket] += row.packets
        per_source[row.source][row.bucket] += row.packets
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
        buckets,
        series,
        ranked,
        {k: dict(v) for k, v in per_source.items()},
        sorted(marks, key=lambda d: d.at),
    )
