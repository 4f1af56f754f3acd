# `sipdeflect fleet status`: the fleet as the shared store sees it (docs/fleet.md).
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sipdeflect import config as cfgmod
from sipdeflect.errors import ConfigError
from sipdeflect.render import escape

app = typer.Typer(
    help="Fleet sharing through PostgreSQL (see docs/fleet.md).", no_args_is_help=True
)


@app.command("status")
def status(
    config: Path = typer.Option(
        Path("/etc/sipdeflect/sipdeflect.toml"), "--config", help="TOML with a [fleet] section."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the raw status as JSON."),
) -> None:
    """Every node: last seen, how far behind the shared sequence, lag, queue, and what it
    contributed (decisions by action)."""
    from sipdeflect.fleet.link import conninfo  # noqa: PLC0415 - psycopg only here
    from sipdeflect.fleet.status import fleet_status  # noqa: PLC0415

    cfg = cfgmod.load(config)
    if not cfg.fleet.dsn:
        raise ConfigError(f"{config}: no [fleet] dsn")
    st = fleet_status(conninfo(cfg.fleet))
    if as_json:
        typer.echo(json.dumps(st))
        return
    con = Console(highlight=False)
    con.print(f"shared sequence at {st['seq']}")
    t = Table("node", "last seen", "behind", "lag", "queued", "contributed", box=None)
    now = st["now"] or 0.0
    for n in st["nodes"]:
        seen = "-" if n["last_seen"] is None else f"{now - n['last_seen']:.0f}s ago"
        lag = "-" if n["lag"] is None else f"{n['lag'] * 1000:.0f} ms"
        made = ", ".join(f"{a} {c}" for a, c in sorted(n["contributed"].items())) or "-"
        t.add_row(escape(n["node"]), seen, str(n["behind"]), lag, str(n["queued"]), made)
    con.print(t)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="fleet")
