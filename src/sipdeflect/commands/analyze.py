# `sipdeflect analyze CAPTURE.pcap`: the wire detector and the default policy run over a
# capture file (packet timestamps are the clock), then who would have been flagged, when
# and why. --json prints one object per flag (a source reaching a level), one per line.
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from sipdeflect.commands.logscan import print_flags
from sipdeflect.detect.verdict import Verdicts


def analyze(
    capture: Path = typer.Argument(..., help="pcap or pcapng file", exists=True, dir_okay=False),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per flag per line"),
    port: list[int] = typer.Option([5060, 5061], "--port", help="the PBX's SIP ports"),
) -> None:
    """Replay a capture through the wire detector: who would have been flagged, when, why.

    Only failed logins that answered the PBX's own challenge (seen in the capture) make an
    "attacker"; floods, scanner User-Agents and enumeration over UDP stay at "watch".
    """
    # Imported here: dpkt and the SIP core would cost every other command ~0.1 s of start-up.
    from sipdeflect.detect.wire import WireDetector, WirePolicy  # noqa: PLC0415
    from sipdeflect.sources.data import default_fingerprints  # noqa: PLC0415
    from sipdeflect.sources.pcapfile import read_pcap  # noqa: PLC0415

    det = WireDetector(default_fingerprints(), WirePolicy(ports=frozenset(port)))
    verdicts = Verdicts()
    err = Console(stderr=True, highlight=False)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not sys.stderr.isatty(),
        transient=True,
    ) as bar:
        task = bar.add_task("analyzing", total=capture.stat().st_size)
        for ts, seg in read_pcap(capture, lambda k: bar.advance(task, k)):
            events = det.packet(
                seg.src, seg.sport, seg.dst, seg.dport, seg.payload, now=ts, tcp=seg.tcp
            )
            for ev in events:
                flag = verdicts.feed(ev)
                if flag is not None and as_json:
                    sys.stdout.write(
                        json.dumps(
                            {
                                "time": dt.datetime.fromtimestamp(flag.time, dt.UTC).isoformat(),
                                "source": str(flag.source),
                                "level": flag.level.name.lower(),
                                "why": flag.reason,
                                "event": ev.as_json(),
                            }
                        )
                        + "\n"
                    )
    stats = ", ".join(f"{k} {v}" for k, v in det.stats.items())
    if as_json:
        err.print(stats)
        return
    con = Console(highlight=False, markup=False, width=200)
    con.print(stats)
    con.file.flush()
    print_flags(verdicts, con.file)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
