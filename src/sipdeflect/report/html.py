# Renders the report: PNG graphs with matplotlib (Agg, no display needed) and one
# self-contained HTML page that embeds them as data URIs next to plain tables. Every
# attacker-supplied string is HTML-escaped; nothing is fetched from the network.
from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sipdeflect.decisions import Action, Decision
from sipdeflect.render import escape
from sipdeflect.report.traffic import Model, width_label

COLORS = {"pbx": "#4c72b0", "decoy": "#dd8452", "dropped": "#8c8c8c"}
LABELS = {"pbx": "reached the PBX", "decoy": "answered by the decoy", "dropped": "dropped"}
MARK = {Action.DEFLECT: ("#dd8452", "--"), Action.BLOCK: ("#c44e52", "-")}


def _t(ts: float) -> float:
    """Matplotlib's date number for an epoch time."""
    return float(mdates.date2num(dt.datetime.fromtimestamp(ts, dt.UTC)))  # type: ignore[no-untyped-call]


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _time_axis(ax: Axes, label: bool = True) -> None:
    locator = mdates.AutoDateLocator(tz=dt.UTC, minticks=5, maxticks=12)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    fmt = mdates.ConciseDateFormatter(locator, tz=dt.UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(fmt)
    if label:
        ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)


def _marks(ax: Axes, decisions: list[Decision], legend: bool) -> None:
    seen: set[Action] = set()
    for d in decisions:
        if d.action not in MARK:
            continue
        color, style = MARK[d.action]
        label = f"{d.action.value} decision" if legend and d.action not in seen else None
        ax.axvline(_t(d.at), color=color, linestyle=style, linewidth=1.2, label=label)
        seen.add(d.action)


def _stacked(ax: Axes, buckets: list[int], series: dict[str, list[int]], width: int) -> None:
    """One filled step band per place, stacked (one more edge than buckets, so the last
    bar is as wide as the others); empty buckets between are drawn as zero."""
    if not buckets:
        return
    full = list(range(buckets[0], buckets[-1] + width, width))
    index = {b: i for i, b in enumerate(buckets)}
    xs = [_t(b) for b in [*full, full[-1] + width]]
    bottom = [0] * len(full)
    for place, color in COLORS.items():
        vals = series.get(place, [])
        per = [vals[index[b]] if b in index and vals else 0 for b in full]
        if not any(per):
            continue
        tops = [a + b for a, b in zip(bottom, per, strict=True)]
        ax.stairs(tops, xs, baseline=bottom, fill=True, color=color, label=LABELS[place])
        bottom = tops


def traffic_figure(m: Model) -> Figure:
    fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
    _stacked(ax, m.buckets, m.series, m.width)
    _marks(ax, m.marks, legend=True)
    ax.set_ylabel(f"SIP packets per {width_label(m.width)}")
    ax.set_title("SIP traffic by where it went, with deflect and block moments")
    _time_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


def top_figure(m: Model, n: int = 10) -> Figure:
    top = [s for s in m.sources if s.packets][:n]
    fig, ax = plt.subplots(figsize=(11, 0.45 * max(len(top), 2) + 1.2), layout="constrained")
    left = [0] * len(top)
    for place, color in COLORS.items():
        vals = [s.by_place.get(place, 0) for s in top]
        ax.barh([s.source for s in top], vals, left=left, color=color, label=LABELS[place])
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("packets")
    ax.set_title(f"Top {len(top)} sources")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def timelines_figure(m: Model, n: int = 5) -> Figure:
    acted = [s for s in m.sources if s.packets and s.decisions]
    top = (acted or [s for s in m.sources if s.packets])[:n]
    rows = max(len(top), 1)
    fig, axes = plt.subplots(
        rows, 1, figsize=(11, 1.9 * rows + 0.6), sharex=True, layout="constrained", squeeze=False
    )
    for i, (ax, s) in enumerate(zip(axes[:, 0], top, strict=False)):
        places = m.per_source.get(s.source, {})
        buckets = sorted({b for per in places.values() for b in per})
        series = {p: [per.get(b, 0) for b in buckets] for p, per in places.items()}
        _stacked(ax, buckets, series, m.width)
        _marks(ax, s.decisions, legend=False)
        ax.set_ylabel(f"pkts/{width_label(m.width)}", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{s.source}: last decision {s.final_action}", fontsize=9, loc="left")
        _time_axis(ax, label=i == len(top) - 1)
    handles = [Patch(color=c, label=LABELS[p]) for p, c in COLORS.items()]
    fig.legend(handles=handles, loc="outside upper right", ncols=3, fontsize=8)
    return fig


def _png(fig: Figure, path: Path) -> bytes:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.read_bytes()


def write_report(m: Model, out: Path, title: str = "sipdeflect report") -> Path:
    """Write traffic.png, top.png, timelines.png and report.html into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    images = {
        name: _png(fig, out / f"{name}.png")
        for name, fig in (
            ("traffic", traffic_figure(m)),
            ("top", top_figure(m)),
            ("timelines", timelines_figure(m)),
        )
    }
    rows = []
    for s in m.sources[:50]:
        accounts = (
            ", ".join(f"{html.escape(escape(a))} ({n})" for a, n in s.accounts.most_common(5))
            or "-"
        )
        uas = (
            ", ".join(f"{html.escape(escape(u))} ({n})" for u, n in s.user_agents.most_common(3))
            or "-"
        )
        acts = "<br>".join(f"{_utc(d.at)} {d.action.value}" for d in s.decisions) or "-"
        rows.append(
            f"<tr><td>{html.escape(s.source)}</td><td>{_utc(s.first)}</td>"
            f"<td>{_utc(s.last)}</td><td>{s.packets}</td><td>{s.replies}</td>"
            f"<td>{accounts}</td><td>{uas}</td><td>{acts}</td></tr>"
        )
    span = (
        f"{_utc(m.buckets[0])} to {_utc(m.buckets[-1] + m.width)}"
        if m.buckets
        else "no traffic recorded"
    )
    imgs = "\n".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for name, data in images.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1250px}}img{{max-width:100%;
display:block;margin:1em 0}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px
solid #ccc;padding:4px 6px;vertical-align:top}}th{{background:#f3f3f3}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{span}. {len(m.sources)} sources, {sum(s.packets for s in m.sources)} packets,
{len(m.marks)} deflect/block decisions.</p>
{imgs}
<h2>What each source tried</h2>
<table><tr><th>source</th><th>first seen</th><th>last seen</th><th>packets</th>
<th>replies</th><th>accounts tried</th><th>User-Agents</th><th>decisions</th></tr>
{"".join(rows)}
</table></body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
