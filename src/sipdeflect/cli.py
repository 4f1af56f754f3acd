# Thin command line: every feature registers its subcommands from its own module
# (sipdeflect.commands.*), so the CLI stays a table, not a long file. Errors that are
# ours (SipDeflectError) become one line on stderr and exit status 2.
from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console
from rich.markup import escape as markup_escape

import sipdeflect
from sipdeflect import commands
from sipdeflect.errors import SipDeflectError

app = typer.Typer(
    name="sipdeflect",
    help=(
        "Stop SIP scanners and brute-force floods. Detect attackers from PBX logs and SIP "
        "traffic, deflect them at the firewall to a decoy that makes each scanner quit, "
        "then block them with expiry. Allowlists always win."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sipdeflect {sipdeflect.__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """sipdeflect command line."""


def _register_commands() -> None:
    # Each command module in sipdeflect.commands exposes register(app); helpers do not.
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except SipDeflectError as exc:
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]sipdeflect:[/] {markup_escape(str(exc))}", highlight=False
        )
        sys.exit(2)
