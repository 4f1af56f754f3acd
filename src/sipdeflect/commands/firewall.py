# CLI for firewall enforcement: `firewall setup|teardown|show` and the element commands
# `block`, `deflect`, `allow`, `release`, `list`. Each command parses and validates all
# of its input, builds one plan with the pure planner and applies it once; any
# SipDeflectError becomes a one-line message and exit status 2 (see sipdeflect.cli).
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

import typer
from rich.console import Console
from rich.table import Table

from sipdeflect.control import DEFAULT_SOCKET, ControlClient, ControlError
from sipdeflect.errors import SipDeflectError, UsageError
from sipdeflect.firewall import plan as planner
from sipdeflect.firewall import state as fstate
from sipdeflect.firewall.backend import Backend, Runner, get_backend, own_addresses
from sipdeflect.firewall.model import (
    DEFAULT_DECOY_PORT,
    DEFAULT_SIP_PORTS,
    FirewallSettings,
    Network,
    SetName,
    parse_duration,
    parse_target,
    show_target,
)

P = ParamSpec("P")
DEFAULT_BACKEND = "nftables"
DEFAULT_BLOCK_FOR = "1h"
DEFAULT_DEFLECT_FOR = "10m"

BackendOpt = typer.Option(
    None,
    "--backend",
    help="nftables (default), iptables (also iptables-nft, iptables-legacy), pf or dry-run. "
    "Defaults to the one chosen at setup.",
)
StateDirOpt = typer.Option(
    None,
    "--state-dir",
    envvar="SIPDEFLECT_STATE_DIR",
    help="Where setup remembers its settings [default: /var/lib/sipdeflect].",
)
NetnsOpt = typer.Option(None, "--netns", help="Act inside this network namespace (labs and tests).")
SocketOpt = typer.Option(
    DEFAULT_SOCKET,
    "--socket",
    help="Control socket of a running daemon: when it answers, the decision goes to the "
    "daemon (stored, enforced, kept across its restarts) instead of straight to the kernel.",
)


def _daemon(path: str, netns: str | None) -> ControlClient | None:
    """The running daemon's control client, or None (none runs: act on the kernel)."""
    client = ControlClient(path)
    if netns is not None or not client.available():
        return None
    try:
        client.call("status")
    except ControlError:
        return None  # a socket left by a daemon that is gone
    return client


def _ask_daemon(
    client: ControlClient, action: str, targets: list[Network], duration: str | None
) -> None:
    for t in targets:
        got = client.call(action, target=str(t), duration=duration or "")
        for d in got["decisions"]:
            until = "" if d["until"] is None else f" until {d['until']:.0f}"
            typer.echo(f"{d['action']}: {d['target']}{until} (by the daemon)")


def _one_line(fn: Callable[P, None]) -> Callable[P, None]:
    """Print our errors unwrapped (rich would wrap a long message at the terminal
    width) as the one line `sipdeflect: ...`, exit status 2, like sipdeflect.cli."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except SipDeflectError as exc:
            msg = " ".join(str(exc).split())
            typer.echo(f"sipdeflect: {msg}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _context(
    backend: str | None, state_dir: Path | None, netns: str | None, *, need_setup: bool = True
) -> tuple[Backend, fstate.FirewallState | None]:
    st = fstate.load(fstate.state_dir(state_dir))
    if st is None and need_setup:
        raise UsageError("the firewall is not set up; run `sipdeflect firewall setup` first")
    name = backend or (st.backend if st else DEFAULT_BACKEND)
    settings = st.settings if st else FirewallSettings()
    runner = Runner(netns=netns or (st.netns if st else None))
    return get_backend(name, settings, runner), st


def _targets(addrs: list[str]) -> list[Network]:
    if not addrs:
        raise UsageError("give at least one address or prefix")
    return [parse_target(a) for a in addrs]


def _enforce(
    kind: SetName,
    *,
    addrs: list[str],
    duration: str,
    backend: str | None,
    sd: Path | None,
    netns: str | None,
    socket: str = DEFAULT_SOCKET,
) -> None:
    targets = _targets(addrs)
    timeout = parse_duration(duration)
    client = _daemon(socket, netns)
    if client is not None:
        _ask_daemon(client, str(kind), targets, duration)
        return
    be, st = _context(backend, sd, netns)
    allow = [x.target for x in be.list([SetName.ALLOW])]
    own = own_addresses(Runner(netns=netns or (st.netns if st else None)))
    build = planner.plan_block if kind is SetName.BLOCK else planner.plan_deflect
    be.apply(build(targets, timeout, allow=allow, own=own))
    for t in targets:
        typer.echo(f"{kind}: {show_target(t)} for {timeout} s")


def register(app: typer.Typer) -> None:
    fw = typer.Typer(help="Install, remove or show sipdeflect's own firewall table/anchor.")
    app.add_typer(fw, name="firewall")

    @fw.command("setup")
    @_one_line
    def setup(
        backend: str | None = BackendOpt,
        sip_port: list[int] = typer.Option(
            list(DEFAULT_SIP_PORTS), "--sip-port", help="PBX SIP port (UDP and TCP); repeatable."
        ),
        decoy_port: int = typer.Option(
            DEFAULT_DECOY_PORT, "--decoy-port", help="Local port deflected packets go to."
        ),
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
    ) -> None:
        """Create sipdeflect's own table (idempotent; existing elements are kept)."""
        settings = FirewallSettings(sip_ports=tuple(dict.fromkeys(sip_port)), decoy_port=decoy_port)
        name = backend or DEFAULT_BACKEND
        be = get_backend(name, settings, Runner(netns=netns))
        be.apply(planner.plan_setup(settings))
        if name != "dry-run":
            fstate.save(fstate.state_dir(state_dir), fstate.FirewallState(name, settings, netns))
        ports = ",".join(map(str, settings.sip_ports))
        typer.echo(f"{be.name}: set up (SIP ports {ports} -> decoy port {settings.decoy_port})")

    @fw.command("teardown")
    @_one_line
    def teardown(
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
    ) -> None:
        """Remove sipdeflect's table/chains/sets and nothing else (idempotent)."""
        be, st = _context(backend, state_dir, netns, need_setup=False)
        be.apply(planner.plan_teardown(st.settings if st else FirewallSettings()))
        if be.name != "dry-run":
            fstate.forget(fstate.state_dir(state_dir))
        typer.echo(f"{be.name}: removed")

    @fw.command("show")
    @_one_line
    def show(
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
    ) -> None:
        """Print the remembered settings and our part of the live ruleset."""
        be, st = _context(backend, state_dir, netns, need_setup=False)
        if st is not None:
            ports = ",".join(map(str, st.settings.sip_ports))
            typer.echo(f"# backend {st.backend}, SIP ports {ports}, decoy {st.settings.decoy_port}")
        typer.echo(be.show().rstrip())

    @app.command("block")
    @_one_line
    def block(
        addrs: list[str] = typer.Argument(None, help="Addresses or prefixes."),
        for_: str = typer.Option(DEFAULT_BLOCK_FOR, "--for", help="How long, e.g. 90s, 1h, 2d."),
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
        socket: str = SocketOpt,
    ) -> None:
        """Drop everything from these sources until the timeout lapses."""
        _enforce(
            SetName.BLOCK,
            addrs=addrs,
            duration=for_,
            backend=backend,
            sd=state_dir,
            netns=netns,
            socket=socket,
        )

    @app.command("deflect")
    @_one_line
    def deflect(
        addrs: list[str] = typer.Argument(None, help="Addresses or prefixes."),
        for_: str = typer.Option(DEFAULT_DEFLECT_FOR, "--for", help="How long, e.g. 10m."),
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
        socket: str = SocketOpt,
    ) -> None:
        """Send these sources' packets for the SIP ports to the decoy port."""
        _enforce(
            SetName.DEFLECT,
            addrs=addrs,
            duration=for_,
            backend=backend,
            sd=state_dir,
            netns=netns,
            socket=socket,
        )

    @app.command("allow")
    @_one_line
    def allow(
        addrs: list[str] = typer.Argument(None, help="Addresses or prefixes."),
        for_: str | None = typer.Option(None, "--for", help="Expire after this long."),
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
        socket: str = SocketOpt,
    ) -> None:
        """Never deflect or block these sources (removes them from block and deflect)."""
        targets = _targets(addrs)
        timeout = parse_duration(for_) if for_ else None
        client = _daemon(socket, netns)
        if client is not None:
            _ask_daemon(client, "allow", targets, for_)
            return
        be, _ = _context(backend, state_dir, netns)
        be.apply(planner.plan_allow(targets, timeout))
        for t in targets:
            typer.echo(f"allow: {show_target(t)}")

    @app.command("release")
    @_one_line
    def release(
        addrs: list[str] = typer.Argument(None, help="Addresses or prefixes."),
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
        socket: str = SocketOpt,
    ) -> None:
        """Take these sources out of every set."""
        targets = _targets(addrs)
        client = _daemon(socket, netns)
        if client is not None:
            _ask_daemon(client, "release", targets, None)
            return
        be, _ = _context(backend, state_dir, netns)
        be.apply(planner.plan_release(targets))
        for t in targets:
            typer.echo(f"released: {show_target(t)}")

    @app.command("list")
    @_one_line
    def list_(
        as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
        backend: str | None = BackendOpt,
        state_dir: Path | None = StateDirOpt,
        netns: str | None = NetnsOpt,
    ) -> None:
        """Members of allow/deflect/block with remaining time and counters."""
        be, _ = _context(backend, state_dir, netns)
        rows = sorted(be.list(), key=lambda r: (r.set, r.target.version, r.target))
        if as_json:
            doc = [
                {
                    "set": str(r.set),
                    "target": show_target(r.target),
                    "expires": r.expires,
                    "timeout": r.timeout,
                    "packets": r.packets,
                    "bytes": r.bytes,
                }
                for r in rows
            ]
            typer.echo(json.dumps(doc))
            return
        table = Table("set", "address", "expires in", "packets", "bytes")
        for r in rows:
            table.add_row(
                str(r.set),
                show_target(r.target),
                "never" if r.expires is None else f"{r.expires} s",
                "-" if r.packets is None else str(r.packets),
                "-" if r.bytes is None else str(r.bytes),
            )
        Console().print(table)
