# `sipdeflect run`: the daemon in the foreground (systemd runs it this way).
from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import typer

from sipdeflect import config as cfgmod


def run(
    config: Path = typer.Option(
        Path("/etc/sipdeflect/sipdeflect.toml"),
        "--config",
        help="TOML configuration (see `sipdeflect config example`).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Learning mode: detect and decide, never touch the firewall."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
) -> None:
    """Run the daemon: follow PBX logs and SIP on the wire, deflect attackers to the decoy,
    block them once they give up. Logs to stdout (journald under systemd); SIGHUP reloads the
    allowlist and policy; SIGTERM stops. Decisions survive restarts (the store)."""
    from sipdeflect.service import build  # noqa: PLC0415 - heavy imports only when running

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    cfg = cfgmod.load(config)
    daemon = build(cfg, dry_run=dry_run)

    def reload() -> None:
        try:
            daemon.reload(cfgmod.load(config))
        except Exception:  # a bad edit must not stop a running daemon
            logging.getLogger("sipdeflect").exception("reload failed, keeping the old config")

    daemon.on_reload = reload
    asyncio.run(daemon.run())


def register(app: typer.Typer) -> None:
    app.command("run")(run)
