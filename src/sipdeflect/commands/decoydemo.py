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
from sipdeflect.render import escape_line, paragraph, text_table

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


SUMMARY_HEADER = ("tool", "requests to decoy", "seconds")


def closing_lines(results: list[ToolRun], width: int = 80) -> list[str]:
    """The closing table for an 80-column terminal or a log: requests counted by nftables,
    then each tool's conclusion as a wrapped line of its own."""
    names = []
    for r in results:
        mode = next((a for i, a in enumerate(r.argv) if i and r.argv[i - 1] == "-m"), "")
        names.append(f"{r.tool} {mode}".strip())
    rows = [[n, str(r.sent), f"{r.seconds:.2f}"] for n, r in zip(names, results, strict=True)]
    lines = [
        "What each scanner did against the decoy (requests counted by nftables):",
        "",
        *text_table(SUMMARY_HEADER, rows, right=(1, 2)),
        "",
        "What each tool concluded:",
    ]
    for n, r in zip(names, results, strict=True):
        lines += paragraph(n, escape_line(r.conclusion), width)
    return lines


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
    con.print()
    for line in closing_lines(results, min(con.width, 100)):
        con.print(line, markup=False, soft_wrap=True)
    con.print(
        f"Decoy: {summary.messages} messages, answers {dict(summary.answers)}; "
        f"none of it true of any PBX. Lab removed; {time.monotonic() - started:.1f} s in all."
    )
