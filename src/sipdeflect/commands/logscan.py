# `sipdeflect logscan FILE...`: run the PBX log parsers over files and print the events
# and who the default policy would flag. Text goes through the Event's escaping; JSON is
# one object per event per line on stdout (the flag summary then goes to stderr).
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Event
from sipdeflect.detect.logs import Context, LogFormat, detect_format, get_format
from sipdeflect.detect.verdict import Verdicts
from sipdeflect.errors import UsageError
from sipdeflect.sources.chunks import read_chunks

BIG = 8 << 20  # files above this get a progress bar (on a terminal)


class Fmt(StrEnum):
    AUTO = "auto"
    ASTERISK = "asterisk"
    FREESWITCH = "freeswitch"
    KAMAILIO = "kamailio"


def scan_file(
    path: Path, fmt: LogFormat | None, ctx: Context, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, Event]]:
    """(line number, event) for one file; the format is sniffed from its first chunk."""
    lineno = 1
    for buf in read_chunks(path, progress=progress):
        if fmt is None:
            fmt = detect_format(buf[:65536])
        yield from fmt.scan(buf, ctx, lineno)
        lineno += buf.count("\n")


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


TABLE_ROWS = 50  # a rich table for the first rows; plain lines after (rich is slow)


def print_flags(verdicts: Verdicts, con: Console) -> int:
    """Who would be flagged, highest level first; returns how many are at least suspect."""
    t = Table("source", "level", "since", "why", "events", box=None, title="who would be flagged")
    rest: list[str] = []
    n = 0
    for i, s in enumerate(verdicts.summaries()):
        n += s.level >= Level.SUSPECT
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
        row = (str(s.source), s.level.name.lower(), _when(s.since), s.reason, counts)
        if i < TABLE_ROWS:
            t.add_row(*row)
        else:
            rest.append("  ".join(row))
    con.print(t)
    if rest:
        con.file.write("\n".join(rest) + "\n")
    return n


class _JsonLines:
    """One JSON object per event. Fields we produce (time, kind, address, numbers) are
    formatted directly; attacker text (account, detail) and the path go through json."""

    def __init__(self) -> None:
        self._iso: dict[dt.datetime, str] = {}

    def line(self, path_json: str, n: int, ev: Event) -> str:
        iso = self._iso.get(ev.time)
        if iso is None:
            if len(self._iso) > 4096:
                self._iso.clear()
            iso = self._iso[ev.time] = ev.time.isoformat()
        port = "null" if ev.port is None else str(ev.port)
        account = "null" if ev.account is None else json.dumps(ev.account)
        return (
            f'{{"file": {path_json}, "line": {n}, "time": "{iso}", "kind": "{ev.kind}", '
            f'"source": "{ev.source}", "port": {port}, "account": {account}, '
            f'"origin": "{ev.origin}", "verified": {"true" if ev.verified else "false"}, '
            f'"detail": {json.dumps(ev.detail)}}}\n'
        )


def logscan(
    files: list[Path] = typer.Argument(..., help="PBX log files", exists=True, dir_okay=False),
    fmt: Fmt = typer.Option(Fmt.AUTO, "--format", help="log format (auto: sniff each file)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per event per line"),
    year: int | None = typer.Option(None, help="year of year-less stamps (default: this year)"),
) -> None:
    """Print the failures found in PBX logs and who the default policy would flag.

    The source address is taken only from fields the PBX fills in. Levels: watch (any
    evidence, including forgeable UDP), suspect, attacker (failed logins that answered the
    PBX's own challenge). See docs/detection.md.
    """
    now = dt.datetime.now(dt.UTC)
    verdicts = Verdicts()
    jl = _JsonLines()
    out = sys.stdout
    err = Console(stderr=True, highlight=False)
    total = sum(f.stat().st_size for f in files)
    show_bar = sys.stderr.isatty() and total > BIG
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show_bar,
        transient=True,
    ) as bar:
        task = bar.add_task("scanning", total=total)
        for path in files:
            mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            ctx = Context(year=year or now.year, default=mtime, now=None if year else now)
            chosen = None if fmt is Fmt.AUTO else get_format(fmt.value)
            path_json = json.dumps(str(path))
            try:
                for n, ev in scan_file(path, chosen, ctx, lambda k: bar.advance(task, k)):
                    verdicts.feed(ev)
                    if as_json:
                        out.write(jl.line(path_json, n, ev))
                    else:
                        port = "" if ev.port is None else f":{ev.port}"
                        out.write(
                            f"{path}:{n} {ev.time.isoformat()} {ev.kind} {ev.source}{port}"
                            f" account={ev.account!r} verified={ev.verified} {ev.detail}\n"
                        )
            except BrokenPipeError:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(0) from None
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    out.flush()
    con = err if as_json else Console(highlight=False, markup=False, width=200)
    print_flags(verdicts, con)


def register(app: typer.Typer) -> None:
    app.command("logscan")(logscan)
