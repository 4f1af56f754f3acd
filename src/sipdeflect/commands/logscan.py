# `sipdeflect logscan FILE...`: run the PBX log parsers over files and print the events
# and who the default policy would flag. Text goes through the Event's escaping; JSON is
# one object per event per line on stdout (the flag summary then goes to stderr). Output
# is written in blocks of lines, not one write per event (with PYTHONUNBUFFERED, or to a
# terminal, each write is a system call).
from __future__ import annotations

import datetime as dt
import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from json.encoder import encode_basestring_ascii as json_str  # = json.dumps(str)
from pathlib import Path
from typing import IO

import typer

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Event, EventKind
from sipdeflect.detect.logs import Context, LogFormat, detect_format, get_format
from sipdeflect.detect.logs.base import JSON_LINES, count_newlines
from sipdeflect.detect.verdict import Verdicts
from sipdeflect.errors import UsageError
from sipdeflect.sources.chunks import read_byte_chunks

BIG = 8 << 20  # files above this get a progress bar (on a terminal)


class Fmt(StrEnum):
    AUTO = "auto"
    ASTERISK = "asterisk"
    FREESWITCH = "freeswitch"
    KAMAILIO = "kamailio"


def scan_file(
    path: Path, fmt: LogFormat | None, ctx: Context, progress: Callable[[int], None] | None = None
) -> Iterator[list[tuple[int, Event]]]:
    """[(line number, event)] per chunk of one file; the format is sniffed from the first."""
    lineno = 1
    for data in read_byte_chunks(path, progress=progress):
        if fmt is None:
            fmt = detect_format(str(data[:65536], "utf-8", "replace"))
        yield list(fmt.scan_bytes(data, ctx, lineno))
        lineno += count_newlines(data)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


TABLE_ROWS = 50  # on a terminal, a rich table for the first rows; plain lines after
FLAG_COLUMNS = ("source", "level", "since", "why", "events")


def print_flags(verdicts: Verdicts, file: IO[str]) -> int:
    """Who would be flagged, highest level first; returns how many are at least suspect.
    On a terminal the first rows are a rich table; elsewhere (a pipe, a file) every row
    is plain aligned columns: rich took ~30 ms for 50 rows, a tenth of a big logscan."""
    rows: list[tuple[str, ...]] = []
    n = 0
    for s in verdicts.summaries():
        n += s.level >= Level.SUSPECT
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
        rows.append((str(s.source), s.level.name.lower(), _when(s.since), s.reason, counts))
    if not file.isatty():
        widths = [max(map(len, col)) for col in zip(FLAG_COLUMNS, *rows, strict=False)]
        lines = ["who would be flagged"] + [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (FLAG_COLUMNS, *rows)
        ]
        file.write("\n".join(lines) + "\n")
        return n
    from rich.console import Console  # noqa: PLC0415 - only for a terminal
    from rich.table import Table  # noqa: PLC0415

    con = Console(file=file, highlight=False, markup=False)
    t = Table(*FLAG_COLUMNS, box=None, title="who would be flagged")
    for row in rows[:TABLE_ROWS]:
        t.add_row(*row)
    con.print(t)
    if len(rows) > TABLE_ROWS:
        file.write("\n".join("  ".join(row) for row in rows[TABLE_ROWS:]) + "\n")
    return n


class _Lines:
    """Event lines, text or JSON. JSON fields we produce (time, kind, address, numbers)
    are formatted directly, each line in one f-string with the file's part made once;
    attacker text (account, detail) and the path go through json's own string encoder.
    Times and addresses repeat in a flood: their text is cached (an address's str()
    costs a microsecond)."""

    def __init__(self) -> None:
        self._iso: dict[dt.datetime, str] = {}
        self._src: dict[int, tuple[object, str]] = {}

    def json_block(self, path: Path) -> Callable[[list[tuple[int, Event]]], str]:
        """json() for a list of events at once: in C when the log accelerator is built
        (the same text, from the same caches)."""
        line = self.json(path)
        head = _json_head(path)
        iso, src = self._iso, self._src

        def block(items: list[tuple[int, Event]]) -> str:
            if JSON_LINES is not None:
                text = JSON_LINES(head, items, iso, src)  # type: ignore[arg-type]
                if text is not None:
                    return text
            return "".join([line(n, ev) for n, ev in items])

        return block

    def text_block(self, path: Path) -> Callable[[list[tuple[int, Event]]], str]:
        line = self.text(path)
        return lambda items: "".join([line(n, ev) for n, ev in items])

    def _texts(self, ev: Event) -> tuple[str, str]:
        iso = self._iso.get(ev.time)
        if iso is None:
            if len(self._iso) > 4096:
                self._iso.clear()
            iso = self._iso[ev.time] = ev.time.isoformat()
        # By id(): hashing an ip_address runs Python code. The entry holds the address,
        # so no other object can take its id while the entry exists.
        got = self._src.get(id(ev.source))
        if got is None:
            if len(self._src) > 65536:
                self._src.clear()
            got = self._src[id(ev.source)] = (ev.source, str(ev.source))
        return iso, got[1]

    def json(self, path: Path) -> Callable[[int, Event], str]:
        """The JSON line maker for one file: json.dumps({"file": path, "line": n,
        **ev.as_json()}) plus a newline, byte for byte."""
        head = _json_head(path)
        texts = self._texts

        def line(n: int, ev: Event) -> str:
            iso, src = texts(ev)
            port = "null" if ev.port is None else ev.port
            account = "null" if ev.account is None else json_str(ev.account)
            return (
                f'{head}{n}, "time": "{iso}", "kind": "{_KIND[ev.kind]}", '
                f'"source": "{src}", "port": {port}, "account": {account}, '
                f'"origin": "{ev.origin}", "verified": {"true" if ev.verified else "false"}, '
                f'"detail": {json_str(ev.detail)}}}\n'
            )

        return line

    def text(self, path: Path) -> Callable[[int, Event], str]:
        name, texts = str(path), self._texts

        def line(n: int, ev: Event) -> str:
            iso, src = texts(ev)
            port = "" if ev.port is None else f":{ev.port}"
            return (
                f"{name}:{n} {iso} {ev.kind} {src}{port}"
                f" account={ev.account!r} verified={ev.verified} {ev.detail}\n"
            )

        return line


def _json_head(path: Path) -> str:
    """What every JSON line of a file starts with (its line number follows)."""
    return f'{{"file": {json_str(str(path))}, "line": '


_KIND = {k: k.value for k in EventKind}  # (an f-string of a StrEnum runs Enum.__format__)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress callback drawing a bar on stderr for big scans on a terminal, else None."""
    if not (sys.stderr.isatty() and total > BIG):
        yield None
        return
    from rich.console import Console  # noqa: PLC0415 - rich only for a terminal
    from rich.progress import (  # noqa: PLC0415 - 50 ms of imports, only for a bar
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("scanning", total=total)
        yield lambda k: bar.advance(task, k)


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
    # The objects of the imported modules are never garbage: frozen, the collector stops
    # walking them on every pass while a big log's events come and go (~4% of a scan).
    gc.freeze()
    now = dt.datetime.now(dt.UTC)
    verdicts = Verdicts()
    feed = verdicts.feed
    lines = _Lines()
    out = sys.stdout
    total = sum(f.stat().st_size for f in files)
    with _progress(total) as progress:
        for path in files:
            mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            ctx = Context(year=year or now.year, default=mtime, now=None if year else now)
            chosen = None if fmt is Fmt.AUTO else get_format(fmt.value)
            text = lines.json_block(path) if as_json else lines.text_block(path)
            try:
                for items in scan_file(path, chosen, ctx, progress):
                    for _, ev in items:
                        feed(ev)
                    out.write(text(items))
            except BrokenPipeError:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(0) from None
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    out.flush()
    print_flags(verdicts, sys.stderr if as_json else out)


def register(app: typer.Typer) -> None:
    app.command("logscan")(logscan)
