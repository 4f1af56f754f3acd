# Thin command line: every feature registers its subcommands from its own module
# (sipdeflect.commands.*), so the CLI stays a table, not a long file. `sipdeflect CMD`
# imports only the module of CMD (COMMANDS): importing all of them (pydantic, pyroute2,
# dpkt, xarf...) costs about a second of CPU, more than a whole logscan of a big log.
# Errors that are ours (SipDeflectError) become one line on stderr and exit status 2.
from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterable

import typer

import sipdeflect
from sipdeflect import commands
from sipdeflect.errors import SipDeflectError

# Top-level command -> the module in sipdeflect.commands that registers it. Checked
# against what the modules register by tests/test_cli.py.
COMMANDS: dict[str, str] = {
    "abuse-report": "report",
    "allow": "firewall",
    "analyze": "analyze",
    "block": "firewall",
    "border": "border",
    "config": "config",
    "decoy": "decoy",
    "deflect": "firewall",
    "demo": "demo",
    "firewall": "firewall",
    "fleet": "fleet",
    "list": "firewall",
    "logscan": "logscan",
    "release": "firewall",
    "report": "report",
    "run": "run",
    "show": "daemon",
    "status": "daemon",
    "watch": "daemon",
}


def _version(value: bool) -> None:
    if value:
        from sipdeflect import accel  # noqa: PLC0415 - imports the decoy and log scanner

        typer.echo(f"sipdeflect {sipdeflect.__version__}")
        typer.echo(accel.summary())
        raise typer.Exit


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """sipdeflect command line."""


def command_modules() -> list[str]:
    """Every module in sipdeflect.commands (those with register(app) add commands)."""
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__))


def build_app(modules: Iterable[str] | None = None) -> typer.Typer:
    """The CLI with the commands of ``modules`` (default: all of them)."""
    app = typer.Typer(
        name="sipdeflect",
        help=(
            "Stop SIP scanners and brute-force floods. Detect attackers from PBX logs and SIP "
            "traffic, deflect them at the firewall to a decoy that makes each scanner quit, "
            "then block them with expiry. Allowlists always win."
        ),
        no_args_is_help=True,
        add_completion=False,
        # Markdown joins a paragraph's lines (rich mode keeps every line break of the
        # docstring, so help text broke mid-sentence on an 80-column terminal).
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name in command_modules() if modules is None else modules:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    return app


_APP: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    """``sipdeflect.cli.app``: the whole CLI, built on first use."""
    global _APP  # noqa: PLW0603 - built once, on demand
    if name != "app":
        raise AttributeError(name)
    if _APP is None:
        _APP = build_app()
    return _APP


def main() -> None:
    # `sipdeflect CMD ...` needs CMD's module only; anything else (--help, --version, no
    # command, a typo) gets the whole CLI and its full help.
    module = COMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
    app = build_app(None if module is None else [module])
    try:
        app()
    except SipDeflectError as exc:
        from rich.console import Console  # noqa: PLC0415 - 20 ms of imports, for errors only
        from rich.markup import escape as markup_escape  # noqa: PLC0415

        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]sipdeflect:[/] {markup_escape(str(exc))}", highlight=False
        )
        sys.exit(2)
