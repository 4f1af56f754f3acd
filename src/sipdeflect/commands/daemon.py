# Talking to the running daemon over its control socket: status, show ADDR, watch.
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sipdeflect.config import Control
from sipdeflect.control import ControlClient
from sipdeflect.duration import format_duration
from sipdeflect.render import escape

SOCKET_HELP = "control socket of the running daemon"
_DEFAULT_SOCKET = Control().socket


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def status(
    socket: str = typer.Option(_DEFAULT_SOCKET, "--socket", help=SOCKET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the raw status as JSON."),
) -> None:
    """What the daemon is doing: sources by state, active decisions, counters, parts.

    Sources move watched -> deflected -> blocked -> released; `active` counts what the
    firewall holds now; a part in `backoff` failed and is being restarted.
    """
    st = ControlClient(socket).call("status")
    if as_json:
        typer.echo(json.dumps(st))
        return
    con = Console(highlight=False)
    mode = " [yellow](dry run: deciding, not enforcing)[/]" if st["dry_run"] else ""
    con.print(f"sipdeflect up {format_duration(st['uptime'])}{mode}")
    t = Table("sources", "n", "active", "n", "counters", "n", box=None)
    rows = max(len(st["sources"]), len(st["active"]), len(st["counters"]))
    cols = [list(st["sources"].items()), list(st["active"].items()), list(st["counters"].items())]
    for i in range(rows):
        cells: list[str] = []
        for col in cols:
            k, v = col[i] if i < len(col) else ("", "")
            cells += [str(k), str(v)]
        t.add_row(*cells)
    con.print(t)
    fleet = st.get("fleet")
    if fleet:
        state = "connected" if fleet["connected"] else "[red]shared store unreachable[/]"
        lag = "-" if fleet["lag"] is None else f"{fleet['lag'] * 1000:.0f} ms"
        con.print(
            f"fleet node {escape(fleet['node'])}: {state}; queued {fleet['queued']}, "
            f"published {fleet['published']}, taken {fleet['accepted']} of "
            f"{fleet['received']}, refused {fleet['refused']}, lag {lag}"
        )
    parts = Table("part", "state", "restarts", "last error", box=None)
    for name, p in st["parts"].items():
        parts.add_row(name, p["state"], str(p["restarts"]), escape(p["last_error"] or ""))
    if st["parts"]:
        con.print(parts)
    attacked = st.get("under_attack", [])
    if attacked:
        hot = Table("under distributed attack", "failing addresses", "until", box=None)
        for u in attacked:
            hot.add_row(f"{u['kind']} {escape(u['key'])}", f"{u['sources']}+", _when(u["until"]))
        con.print(hot)
    accel = st.get("accelerators", {})  # absent from a daemon older than 0.1
    if accel:
        con.print("accelerators: " + ", ".join(f"{k} {v}" for k, v in accel.items()), markup=False)


def show(
    address: str = typer.Argument(..., help="the source address to explain"),
    socket: str = typer.Option(_DEFAULT_SOCKET, "--socket", help=SOCKET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the raw record as JSON."),
) -> None:
    """One source's whole story: state, evidence, every decision, sampled events."""
    rec = ControlClient(socket).call("show", address=address)
    if as_json:
        typer.echo(json.dumps(rec))
        return
    con = Console(highlight=False)
    con.print(f"[bold]{rec['address']}[/]", end="")
    if rec["protected"]:
        con.print(f"  never acted on: {rec['protected']}", markup=False)
    else:
        con.print()
    if rec.get("node"):
        con.print(f"this node: {escape(rec['node'])} (origin fleet:NODE = decided by NODE)")
    src: dict[str, Any] | None = rec["source"]
    if src is None:
        con.print("not seen by detection")
    else:
        con.print(
            f"state {src['state']} (level {src['level']}, offences {src['offences']}), "
            f"first seen {_when(src['first_seen'])}, last seen {_when(src['last_seen'])}"
        )
        for r in src["reasons"]:
            con.print(f"  evidence: {escape(r)}", markup=False)
    hist = Table("when", "action", "until", "origin", "reason", box=None)
    for h in rec["history"]:
        hist.add_row(
            _when(h["at"]), h["action"], _when(h["until"]), h["origin"], escape(h["reason"])
        )
    if rec["history"]:
        con.print(hist)
    for e in rec["events"]:
        con.print(f"  {_when(e['at'])} {e['kind']}: {escape(e['detail'])}", markup=False)


def watch(
    socket: str = typer.Option(_DEFAULT_SOCKET, "--socket", help=SOCKET_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Stream SIP messages and decisions live (Ctrl-C to stop). Wire text is escaped."""
    con = Console(highlight=False)
    try:
        for ev in ControlClient(socket).stream("watch"):
            if as_json:
                typer.echo(json.dumps(ev))
                continue
            kind = ev.get("type")
            if kind == "decision":
                con.print(f"[bold]{ev['action']:>8}[/] {ev['target']} ({escape(ev['reason'])})")
            elif kind == "sip":
                con.print(escape(str(ev.get("line", ""))), markup=False)
            elif kind == "supervisor":
                con.print(f"[red]{ev['source']}[/] {escape(ev['message'])}")
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("show")(show)
    app.command("watch")(watch)
