# `sipdeflect demo --border`: the border scene. The lab of pbxlab with a BIRD 2 router
# between the attacker/customer and the PBX; sipdeflect's ExaBGP peers with it. svcrack
# attacks, gets deflected, quits and is blocked; the block goes upstream as a blackhole
# route (RFC 7999) and a FlowSpec discard (RFC 8955); the scanner's next flood dies on
# the router (strict uRPF) while the customer keeps registering through it. Every figure
# comes from the router's CLI and kernel counters or nftables on the PBX, not sipdeflect.
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape as markup_escape

from sipdeflect.lab.decoylab import flood_register
from sipdeflect.lab.pbxlab import ATTACKERS, CUSTOMER, PBX_ATK, PbxLab, pbx_lab
from sipdeflect.render import escape, text_table

FLOOD = 500


def _until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.25)
    return False


def _routes(lab: PbxLab) -> dict[str, tuple[str, ...]]:
    assert lab.router is not None
    return {p: r.communities for p, r in lab.router.bird.routes().items() if r.dest == "blackhole"}


def run(con: Console) -> int:
    started = time.monotonic()
    scanner = ATTACKERS["svcrack"]
    con.rule("[bold]sipdeflect demo --border: drop the flood before it reaches the link")
    con.print(
        "Lab: attacker and customer reach the PBX through a router (BIRD 2, strict uRPF on "
        "its attacker-facing interface); sipdeflect's ExaBGP child peers with it over eBGP "
        "(\\[border] mode = both: RTBH with 65535:666, and FlowSpec)."
    )
    with tempfile.TemporaryDirectory() as tmp, pbx_lab(Path(tmp), router=True) as lab:
        router = lab.router
        assert router is not None
        lab.start_daemon()
        _until(lambda: router.bird.session() == "Established", 30)
        con.print(f"    router: BGP session with the PBX {router.bird.session()}")
        lab.customer.start()
        con.print(f"\n[bold cyan]svcrack[/] from {scanner} against the PBX")
        a = lab.svcrack()
        con.print(f"    svcrack concluded: {markup_escape(escape(a.conclusion))}")
        blocked = lab.wait_state(scanner, {"blocked"}, 30)
        con.print(f"    sipdeflect: {'blocked' if blocked else 'NOT blocked'} {scanner}")
        _until(lambda: f"{scanner}/32" in _routes(lab), 15)
        con.print("\n[bold cyan]The router's CLI[/] (birdc show route all):")
        for line in router.bird.birdc("show", "route", "all").splitlines()[1:]:
            con.print(f"    [dim]{markup_escape(line)}[/]")
        con.print("\n[bold cyan]sipdeflect border status[/] on the PBX:")
        status = lab.pbx.run(
            [
                sys.executable,
                "-m",
                "sipdeflect",
                "border",
                "status",
                "--socket",
                str(lab.control.path),
            ],
            check=False,
        )
        for line in (status.stdout + status.stderr).splitlines():
            con.print(f"    {markup_escape(line)}")
        con.print(f"\n[bold cyan]The scanner floods again[/]: {FLOOD} REGISTERs")
        sent0, rpf0 = lab.counter("sent_svcrack"), router.rp_filter_drops()
        rx0 = router.rx_packets(router.atk_if)
        lab.send_raw(scanner, [flood_register(scanner, 5099, PBX_ATK)] * FLOOD)
        time.sleep(0.5)
        rx = router.rx_packets(router.atk_if) - rx0
        rpf = router.rp_filter_drops() - rpf0
        crossed = lab.counter("sent_svcrack") - sent0
        lab.control.call("release", target=scanner)
        gone = _until(lambda: f"{scanner}/32" not in _routes(lab), 15)
        con.print(
            f"\n[bold cyan]Released[/] {scanner}: the router "
            f"{'withdrew' if gone else 'still holds'} the route"
        )
        time.sleep(1)
        lab.customer.stop()
        ok = len(lab.customer.results) - lab.customer.failures
        total = len(lab.customer.results)
    rows = [
        ["sent by the scanner", str(FLOOD)],
        ["received on the router's attacker-facing interface", str(rx)],
        ["dropped by the router (uRPF against the blackhole route)", str(rpf)],
        ["arrived at the PBX", str(crossed)],
    ]
    con.print()
    con.print("The flood, counted by the router's kernel and nftables on the PBX:", markup=False)
    con.print()
    for line in text_table(["what", "packets"], rows, right=(1,)):
        con.print(line, markup=False, soft_wrap=True)
    con.print()
    con.print(
        f"Customer ({CUSTOMER}), through the same router: {ok} of {total} registrations "
        f"succeeded. Lab removed; {time.monotonic() - started:.1f} s."
    )
    return 0 if ok == total and crossed == 0 and gone else 1
