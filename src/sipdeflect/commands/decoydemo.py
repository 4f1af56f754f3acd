# `sipdeflect demo --decoy`: the decoy alone. Builds a throwaway two-host lab in network
# namespaces (sipdeflect.lab.decoylab), runs the decoy on the PBX host behind an nftables
# redirect, points the real SIPVicious tools and a write-up style flooder at it, narrates
# each step and ends with a table: tool, requests that reached the decoy (counted by nftables,
# not by the decoy), what the tool concluded, seconds. Needs root; no input; under a minute.
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from sipdeflect.decoy.events import DecoyEvent, escape
from sipdeflect.lab.decoylab import (
    ATTACKER,
    DECOY_PORT,
    PBX,
    SIP_PORT,
    ToolRun,
    decoy_lab,
    dictionary,
)

STEPS: tuple[tuple[str, str, list[str]], ...] = (
    (
        "svcrack",
        "password cracker, 1000-word dictionary against extension 100",
        ["-u", "100", "-d", "{dictionary}", "-x", ATTACKER, f"udp://{PBX}:{SIP_PORT}"],
    ),
    (
        "svwar",
        "extension enumerator, REGISTER over 100-999",
        ["-e", "100-999", "-m", "REGISTER", "-x", ATTACKER, PBX],
    ),
    (
        "svwar",
        "extension enumerator, INVITE over 100-999",
        ["-e", "100-999", "-m", "INVITE", "-x", ATTACKER, PBX],
    ),
    (
        "svwar",
        "extension enumerator, OPTIONS over 100-999",
        ["-e", "100-999", "-m", "OPTIONS", "-x", ATTACKER, PBX],
    ),
    ("svmap", "SIP device sweep (OPTIONS)", ["-x", ATTACKER, PBX]),
)


def run(con: Console) -> None:
    """Watch real SIPVicious scanners give up against the decoy, in a throwaway lab."""
    started = time.monotonic()

    def narrate(event: DecoyEvent) -> None:
        got = event.status if event.status is not None else "silence"
        what = markup_escape(f"{escape(event.method)} -> {got}")
        con.print(f"    [dim]decoy:[/] {what}  [dim]({markup_escape(escape(event.why))})[/]")

    con.rule("[bold]sipdeflect demo: the decoy")
    con.print(
        f"Lab: attacker [bold]{ATTACKER}[/] and PBX [bold]{PBX}[/] in network namespaces. "
        f"On the PBX, nftables redirects the attacker's SIP ({SIP_PORT}) to the decoy "
        f"({DECOY_PORT}) and counts every packet that reaches it."
    )
    results: list[ToolRun] = []
    with tempfile.TemporaryDirectory() as tmp, decoy_lab(sinks=[narrate]) as lab:
        words = str(dictionary(Path(tmp) / "words.txt"))
        for tool, what, args in STEPS:
            con.print(f"\n[bold cyan]{tool}[/] {what}")
            result = lab.run_tool(tool, [a.replace("{dictionary}", words) for a in args])
            lab.running.decoy.hub.drain()
            time.sleep(0.2)  # let the event thread print before the verdict
            con.print(f"    [bold]{tool} concluded:[/] {markup_escape(escape(result.conclusion))}")
            results.append(result)
        con.print(
            "\n[bold cyan]flooder[/] the write-up's scanner: one REGISTER, resent until liked"
        )
        results.append(lab.flood())
        time.sleep(0.2)
        con.print(f"    [bold]flooder concluded:[/] {markup_escape(results[-1].conclusion)}")
        summary = lab.running.decoy.totals()
    table = Table(title="What each scanner did against the decoy")
    table.add_column("tool")
    table.add_column("requests to decoy\n(nftables counter)", justify="right")
    table.add_column("what the tool concluded")
    table.add_column("seconds", justify="right")
    for r in results:
        mode = next((a for i, a in enumerate(r.argv) if i and r.argv[i - 1] == "-m"), "")
        table.add_row(f"{r.tool} {mode}".strip(), str(r.sent), r.conclusion, f"{r.seconds:.2f}")
    con.print()
    con.print(table)
    con.print(
        f"Decoy: {summary.messages} messages, answers {dict(summary.answers)}; "
        f"none of it true of any PBX. Lab removed; {time.monotonic() - started:.1f} s in all."
    )
