# `sipdeflect demo`: the README's first command. Builds the lab of sipdeflect.lab.pbxlab in
# network namespaces (Kamailio as the PBX, `sipdeflect run` with default settings next to
# it, an attacker host, a customer whose phone registers every second), points real
# SIPVicious and the write-up's flooder at the PBX, narrates sipdeflect's decisions live
# from its control socket, forges packets "from" the customer, and ends with a table whose
# figures come from witnesses outside sipdeflect (nftables counters, a packet socket, the
# tools' own output, sipp). `--decoy` runs the older decoy-only demo, `--border` the border
# scene (commands/borderdemo.py). Root; no input.
from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape as markup_escape

from sipdeflect.commands import decoydemo
from sipdeflect.control import ControlError
from sipdeflect.errors import UsageError
from sipdeflect.lab.decoylab import flood_register
from sipdeflect.lab.netns import netns_unavailable
from sipdeflect.lab.pbxlab import (
    ATTACKERS,
    BYSTANDER,
    CUSTOMER,
    PBX_ATK,
    PBX_CUST,
    QUIET_AFTER,
    Attack,
    PbxLab,
    forged_burst,
    pbx_lab,
)
from sipdeflect.render import escape, escape_line, paragraph, text_table

NAMES = {v: k for k, v in ATTACKERS.items()}


def _narrate(lab: PbxLab, con: Console, stop: threading.Event) -> None:
    """Print sipdeflect's decisions as they happen (its `watch` stream)."""
    with contextlib.suppress(ControlError, OSError, ValueError):
        for ev in lab.control.stream("watch"):
            if stop.is_set():
                return
            if ev.get("type") != "decision":
                continue
            target = str(ev.get("target", "")).removesuffix("/32")
            who = NAMES.get(target, "customer" if target == CUSTOMER else "bystander")
            at = dt.datetime.fromtimestamp(float(ev.get("at", 0))).strftime("%H:%M:%S.%f")[:-3]
            action = str(ev.get("action", ""))
            color = {"deflect": "yellow", "block": "red", "release": "green"}.get(action, "")
            reason = markup_escape(escape(str(ev.get("reason", ""))))
            con.print(
                f"    [dim]{at}[/] sipdeflect: [bold {color}]{action}[/] {target} "
                f"({who}) [dim]{reason}[/]"
            )


SUMMARY_HEADER = ("attacker", "packets to PBX", "deflected after", "to decoy", "now")


def closing_lines(attacks: list[Attack], states: dict[str, str], width: int = 80) -> list[str]:
    """The closing table, readable on an 80-column terminal and in a log: short columns
    (packets counted by nftables, the time from the first packet, seen by a packet socket,
    to sipdeflect's decision), then each attacker's address (an IPv6 one is 39 columns)
    and what the tool concluded, as a wrapped line of its own."""
    rows = [
        [
            a.name,
            str(a.to_pbx),
            "-" if a.to_deflect is None else f"{a.to_deflect * 1000:.0f} ms",
            str(a.to_decoy),
            states[a.name],
        ]
        for a in attacks
    ]
    lines = [
        "What happened (counted by nftables and a packet socket, not by sipdeflect):",
        "",
        *text_table(SUMMARY_HEADER, rows, right=(1, 2, 3)),
        "",
        "What each tool concluded:",
    ]
    for a in attacks:
        lines += paragraph(f"{a.name} from {a.source}", escape_line(a.conclusion), width)
    return lines


def run_lab(con: Console) -> int:
    started = time.monotonic()
    con.rule("[bold]sipdeflect demo: from first packet to a scanner that gives up")
    con.print(
        f"Lab in network namespaces: a PBX host (Kamailio from Debian, digest auth, on "
        f"{PBX_ATK} and {PBX_CUST}) running [bold]sipdeflect run[/] with default settings "
        f"(quiet_after shortened to {QUIET_AFTER:g} s); an attacker host with one address per "
        f"tool; a customer ({CUSTOMER}) whose phone registers every second."
    )
    attacks: list[Attack] = []
    with tempfile.TemporaryDirectory() as tmp, pbx_lab(Path(tmp)) as lab:
        lab.start_daemon()
        stop = threading.Event()
        narrator = threading.Thread(target=_narrate, args=(lab, con, stop), daemon=True)
        narrator.start()
        lab.customer.start()
        time.sleep(1.5)
        steps: list[tuple[str, str, Any]] = [
            ("svcrack", "password cracker, 1000-word dictionary against 1001", lab.svcrack),
            ("svwar", "extension enumerator, INVITE over 100-999", lab.svwar),
            (
                "flooder",
                "the write-up's: one REGISTER, resent until it likes the answer",
                lab.flood,
            ),
        ]
        for name, what, fn in steps:
            con.print(f"\n[bold cyan]{name}[/] from {ATTACKERS[name]}: {what}")
            a = fn()
            attacks.append(a)
            con.print(
                f"    [bold]{name} concluded:[/] {markup_escape(escape(a.conclusion))}  "
                f"[dim]({a.to_pbx} packets reached the PBX, {a.to_decoy} the decoy)[/]"
            )
        con.print(
            f"\nWaiting for each to fall quiet in the decoy ({QUIET_AFTER:g} s) and be blocked..."
        )
        for a in attacks:
            lab.wait_state(a.source, {"blocked"}, 30)
        con.print("\n[bold cyan]After the block[/]: each attacker sends 5 more REGISTERs")
        before = {a.name: lab.counts(a.name)[2] for a in attacks}
        for a in attacks:
            lab.send_raw(a.source, [flood_register(a.source, 5099, PBX_ATK)] * 5)
        time.sleep(0.5)
        reached = sum(lab.counts(a.name)[2] - before[a.name] for a in attacks)
        con.print(f"    packets that reached any socket on the PBX host: [bold]{reached}[/]")
        con.print(
            "\n[bold cyan]Forgery[/]: the attacker sends 60 scanner REGISTERs, an INVITE sweep "
            f"and a guessed login with the customer's address ({CUSTOMER}) as source, and "
            f"the same with a bystander's ({BYSTANDER}) that never logged in"
        )
        lab.send_raw(CUSTOMER, forged_burst(CUSTOMER))
        lab.send_raw(BYSTANDER, forged_burst(BYSTANDER))
        lab.wait_state(BYSTANDER, {"probing"}, 5)
        lab.wait_state(BYSTANDER, {"watched"}, 20)  # the probe lasts up to 10 s
        time.sleep(0.5)
        cust_state = lab.state(CUSTOMER).replace("unknown", "not even watched")
        cust_acts = [h["action"] for h in lab.show(CUSTOMER)["history"]] or ["none"]
        bys_acts = [h["action"] for h in lab.show(BYSTANDER)["history"]] or ["none"]
        con.print(
            f"    customer: decisions {', '.join(cust_acts)}, now {cust_state} (its logins "
            f"shield it); bystander: decisions {', '.join(bys_acts)}, now "
            f"{lab.state(BYSTANDER)} (a probe, and the burst did not stop on the decoy's answer)"
        )
        lab.customer.stop()
        states = {a.name: lab.state(a.source) for a in attacks}
        stop.set()
        ok = len(lab.customer.results) - lab.customer.failures
        total = len(lab.customer.results)
    con.print()
    for line in closing_lines(attacks, states, min(con.width, 100)):
        con.print(line, markup=False, soft_wrap=True)
    con.print(
        f"Customer: {ok} of {total} registrations succeeded; forged packets left it "
        f"{cust_state}. Nothing any tool reported is true of the PBX (svcrack's 'password' "
        f"is the decoy's yes to a guess). Lab removed; {time.monotonic() - started:.1f} s."
    )
    return 0 if ok == total else 1


def run(
    decoy: bool = typer.Option(
        False, "--decoy", help="only the decoy: every SIPVicious tool against it, no daemon"
    ),
    border: bool = typer.Option(
        False,
        "--border",
        help="the border scene: a BIRD router upstream drops the blocked scanner (BGP RTBH)",
    ),
) -> None:
    """Watch sipdeflect stop real scanners against a real PBX, in a throwaway lab.

    Builds network namespaces (nothing leaves them), runs Kamailio as the PBX with
    `sipdeflect run` beside it, attacks it with SIPVicious svcrack and svwar and a flooder,
    and prints each decision as it happens and a summary table. Needs root; about 30 s.
    """
    reason = netns_unavailable()
    if reason is not None:
        raise UsageError(f"demo {reason} (try: sudo ./dev demo)")
    con = Console(highlight=False)
    if decoy:
        decoydemo.run(con)
        return
    if border:
        from sipdeflect.commands import borderdemo  # noqa: PLC0415 - only for this scene

        raise typer.Exit(borderdemo.run(con))
    raise typer.Exit(run_lab(con))


def register(app: typer.Typer) -> None:
    app.command("demo")(run)
