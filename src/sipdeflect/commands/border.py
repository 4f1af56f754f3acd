# `sipdeflect border status`: what the daemon announces upstream, with age and why.
from __future__ import annotations

import json

import typer
from rich.console import Console

from sipdeflect.commands.daemon import _DEFAULT_SOCKET, SOCKET_HELP, _when
from sipdeflect.control import ControlClient
from sipdeflect.duration import format_duration
from sipdeflect.render import escape_line, paragraph, text_table

app = typer.Typer(help="The border: blocks announced upstream over BGP (docs/border.md).")


@app.command("status")
def status(
    socket: str = typer.Option(_DEFAULT_SOCKET, "--socket", help=SOCKET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the raw status as JSON."),
) -> None:
    """The BGP speaker, its session and every announced prefix with its age and evidence."""
    st = ControlClient(socket).call("border")
    if as_json:
        typer.echo(json.dumps(st))
        return
    con = Console(highlight=False)
    if not st.get("enabled"):
        con.print("border: off ([border] enabled = false, or the speaker failed to start)")
        return
    run = "running" if st["running"] else "[red]not running[/]"
    con.print(
        f"border: {st['speaker']} (pid {st['pid']}) {run}, session {st['session']} with "
        f"{st['peer']} AS{st['peer_as']}; {st['mode']}, communities "
        f"{' '.join(st['communities']) or '-'}, next hop {st['next_hop']}"
    )
    con.print(
        f"{len(st['announced'])} announced (at most {st['max_prefixes']}), "
        f"{st['waiting']} waiting for room, {st['errors']} speaker errors"
    )
    if st["last_error"]:
        con.print(f"  last error: {escape_line(st['last_error'])}", markup=False)
    if not st["announced"]:
        return
    rows = [
        [a["target"], format_duration(a["age"]), _when(a["until"]), a["evidence"]]
        for a in st["announced"]
    ]
    width = min(con.width, 100)
    for line in text_table(["prefix", "age", "until", "evidence"], rows, right=(1,)):
        con.print(line, markup=False, soft_wrap=True)
    con.print("why:", markup=False)
    for a in st["announced"]:
        for line in paragraph(a["target"], escape_line(a["reason"]), width):
            con.print(line, markup=False, soft_wrap=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="border")
