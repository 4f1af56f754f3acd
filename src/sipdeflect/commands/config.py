# `sipdeflect config check|example|unit`: validate a configuration before any daemon touches
# the firewall, print the documented defaults, and print the systemd unit the package ships
# (so an install from a wheel needs no checkout).
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import typer

from sipdeflect import config as cfg

app = typer.Typer(help="Check a configuration file or print the defaults.", no_args_is_help=True)


@app.command("check")
def check(
    file: Path = typer.Argument(..., help="TOML file to validate (see `config example`)."),
    as_json: bool = typer.Option(False, "--json", help="Print {ok, errors} as JSON."),
) -> None:
    """Validate FILE: every error names its field and line. Exit 0 when valid, 2 when not."""
    try:
        text = file.read_text()
    except OSError as exc:
        errors = [f"{file}: cannot read: {exc.strerror}"]
    else:
        _, errors = cfg.check_text(text, str(file))
    if as_json:
        typer.echo(json.dumps({"ok": not errors, "file": str(file), "errors": errors}))
    elif errors:
        for e in errors:
            typer.echo(e, err=True)
    else:
        typer.echo(f"{file}: ok")
    if errors:
        sys.exit(2)


@app.command("example")
def example() -> None:
    """Print the default configuration as commented TOML (a starting point for your file)."""
    typer.echo(cfg.example(), nl=False)


@app.command("unit")
def unit() -> None:
    """Print the systemd unit (ExecStart=/usr/local/bin/sipdeflect; only CAP_NET_ADMIN,
    CAP_NET_RAW and CAP_DAC_READ_SEARCH). Install it with:
    `sipdeflect config unit > /etc/systemd/system/sipdeflect.service`."""
    text = resources.files("sipdeflect").joinpath("data/sipdeflect.service").read_text()
    typer.echo(text, nl=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")
