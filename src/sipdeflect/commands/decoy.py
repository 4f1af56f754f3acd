# `sipdeflect decoy`: run the decoy in the foreground. Output is sinks on the event hub (a
# rate-limited line per message, or whole escaped messages with --show, JSON lines with
# --events); Ctrl-C stops the loops and prints the summary.
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import IO, Any

import typer
from rich.console import Console
from rich.table import Table

from sipdeflect.decoy.events import DropLog, JsonLines, LinePrinter, Summary
from sipdeflect.decoy.guard import DEFAULT_BUDGET, DEFAULT_CAP
from sipdeflect.decoy.runner import parse_listen, start
from sipdeflect.decoy.server import BATCH, DEFAULT_RCVBUF
from sipdeflect.decoy.strategy import Persona
from sipdeflect.errors import UsageError
from sipdeflect.pcapsink import PcapSink, decoy_sink, open_pcap


def summary_table(summary: Summary) -> Table:
    table = Table(title="decoy summary", show_header=False)
    table.add_row("messages", str(summary.messages))
    table.add_row("answered", str(summary.answered))
    table.add_row("dropped", str(summary.dropped))
    table.add_row("sources", str(summary.sources))
    table.add_row("sources that stopped", str(summary.stopped))
    if summary.evicted:
        table.add_row("sources evicted (table full)", str(summary.evicted))
    for name, n in sorted(summary.answers.items(), key=lambda kv: -kv[1]):
        table.add_row(f"answer {name}", str(n))
    for name, n in summary.drops.most_common():
        table.add_row(f"drop {name}", str(n))
    return table


def run(
    listen: list[str] = typer.Option(
        ...,
        "--listen",
        "-l",
        help="ADDR:PORT or [V6ADDR]:PORT; repeatable. UDP, and TCP on the same port.",
    ),
    show: bool = typer.Option(False, "--show", help="Print whole messages (escaped, redacted)."),
    events: str | None = typer.Option(
        None, "--events", help="Write one JSON object per message to FILE, or - for stdout."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-message lines."),
    reply_budget: float = typer.Option(
        DEFAULT_BUDGET,
        "--reply-budget",
        help="Replies per second to any one address (burst: one second's worth); 0 = unlimited.",
    ),
    max_sources: int = typer.Option(
        DEFAULT_CAP, "--max-sources", help="Per-source state cap; the oldest entry is evicted."
    ),
    workers: int = typer.Option(1, "--workers", help="SO_REUSEPORT UDP worker processes."),
    no_tcp: bool = typer.Option(False, "--no-tcp", help="UDP only."),
    pcap: str | None = typer.Option(
        None,
        "--pcap",
        metavar="FILE",
        help="Also write every message received to FILE (pcap; Wireshark, tshark, sngrep).",
    ),
    rcvbuf: int = typer.Option(
        DEFAULT_RCVBUF,
        "--rcvbuf",
        help="UDP receive buffer in bytes (absorbs bursts); 0 = the kernel default.",
    ),
    batch: int = typer.Option(
        BATCH,
        "--batch",
        help="UDP datagrams per recvmmsg/sendmmsg call (Linux); 0 = one recvmsg/sendto each.",
    ),
    realm: str = typer.Option("asterisk", "--realm", help="Realm in the decoy's challenges."),
    server: str | None = typer.Option(
        None, "--server", help="Server header to claim (default: none; never the real one)."
    ),
    lines_per_second: int = typer.Option(
        20, "--lines-per-second", help="Terminal lines per second before summarising."
    ),
) -> None:
    """Answer SIP scanners so that they give up (runs in the foreground; Ctrl-C to stop)."""
    if reply_budget < 0 or max_sources < 1 or workers < 1 or rcvbuf < 0 or batch < 0:
        raise UsageError(
            "need --reply-budget >= 0, --max-sources >= 1, --workers >= 1, --rcvbuf >= 0, "
            "--batch >= 0"
        )
    listens = [parse_listen(x) for x in listen]
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    sinks: list[Any] = []
    to_stdout = events == "-"
    if not quiet and not to_stdout:
        sinks.append(LinePrinter(out.out, per_second=lines_per_second, whole=show))
    sinks.append(DropLog(err.out))
    ev_file: IO[str] | None = None
    if events:
        ev_file = sys.stdout if to_stdout else open(events, "a", encoding="utf-8")  # noqa: SIM115
        sinks.append(JsonLines(ev_file))
    pcap_out: PcapSink | None = None
    if pcap:
        try:
            pcap_out = open_pcap(pcap)
        except OSError as exc:
            raise UsageError(f"cannot write {pcap}: {exc.strerror or exc}") from None
        sinks.append(decoy_sink(pcap_out, listens[0].port))
    running = start(
        listens,
        budget=reply_budget,
        cap=max_sources,
        persona=Persona(realm=realm, server=server),
        sinks=sinks,
        workers=workers,
        tcp=not no_tcp,
        rcvbuf=rcvbuf,
        batch=batch,
    )
    err.print(
        f"decoy listening on {', '.join(str(x) for x in listens)} "
        f"({'udp' if no_tcp else 'udp+tcp'}); Ctrl-C for the summary"
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        while not done.wait(0.5):
            pass
    summary = running.stop()
    for sink in sinks:
        if isinstance(sink, LinePrinter):
            sink.flush()
    if ev_file is not None and ev_file is not sys.stdout:
        ev_file.close()
    if pcap_out is not None:
        pcap_out.close()
    err.print(summary_table(summary))


def register(app: typer.Typer) -> None:
    app.command("decoy")(run)
