# Builds the running daemon from a Config: the firewall backend (set up idempotently), the
# enforcer, the store, and one supervised source per PBX log plus the wire capture. Each
# source turns what it reads into detection Events handed to Daemon.event on the loop
# thread; a source that fails is restarted by the supervisor and shown in `status`.
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from sipdeflect.accounting import Row, Tally
from sipdeflect.border.announcer import Announcer
from sipdeflect.border.exabgp import BorderError, probe_peer
from sipdeflect.config import Config, LogSource
from sipdeflect.daemon import Daemon
from sipdeflect.decisions import Address
from sipdeflect.decoy.events import DecoyEvent
from sipdeflect.detect.events import Event
from sipdeflect.detect.logs import Context, LogFormat, UnknownFormatError, detect_format, get_format
from sipdeflect.detect.wire import WireDetector, WirePolicy
from sipdeflect.enforce import FirewallEnforcer
from sipdeflect.firewall import state as fstate
from sipdeflect.firewall.backend import Runner, get_backend, own_addresses
from sipdeflect.firewall.model import FirewallSettings
from sipdeflect.firewall.plan import plan_setup
from sipdeflect.pcapsink import decoy_sink, open_pcap
from sipdeflect.sources.capture import open_capture, run_capture
from sipdeflect.sources.data import default_fingerprints
from sipdeflect.sources.follow import FileFollower
from sipdeflect.store.sqlite import SqliteStore

log = logging.getLogger("sipdeflect")
POLL = 0.2  # seconds between log polls
SNIFF_LINES = 200  # lines buffered to recognise an "auto" log's format


def settings_of(cfg: Config) -> FirewallSettings:
    return FirewallSettings(
        sip_ports=tuple(cfg.sip.ports), decoy_port=cfg.decoy.port, table=cfg.firewall.table
    )


def build(cfg: Config, *, dry_run: bool = False) -> Daemon:
    settings = settings_of(cfg)
    backend = get_backend(cfg.firewall.backend, settings, Runner(inproc=True))
    own = [n.network_address for n in own_addresses(Runner())] if cfg.allow.own_addresses else []
    if not dry_run:
        backend.apply(plan_setup(settings))
        # What `firewall setup` remembers, next to the store: `sipdeflect list`, `firewall
        # show` and `firewall teardown` then work on the daemon's table as on their own.
        fstate.save(
            Path(cfg.store.path).parent, fstate.FirewallState(cfg.firewall.backend, settings)
        )
    daemon = Daemon(
        cfg,
        FirewallEnforcer(backend),
        SqliteStore(cfg.store.path),
        own=own,
        dry_run=dry_run,
        border=None if dry_run or not cfg.border.enabled else start_border(cfg, own),
    )
    if cfg.fleet.enabled:
        _join_fleet(cfg, daemon)
    for spec in cfg.detect.logs:
        daemon.add_source(f"log {spec.path}", follow_log(spec))
    if cfg.detect.wire:
        daemon.add_source("wire", follow_wire(cfg))
    daemon.add_source("decoy", run_decoy(cfg))
    return daemon


def start_border(cfg: Config, own: list[Address]) -> Announcer | None:
    """The BGP speaker, started here on the main thread (its child dies with the thread
    that started it). Any problem is one line in the log and no border: the host's own
    enforcement never depends on it. An unreachable peer is reported, and ExaBGP keeps
    trying: announcements go out when the session comes up."""
    announcer = Announcer(cfg, own)
    try:
        announcer.start()
    except (BorderError, OSError) as exc:
        log.error("%s; border disabled, host enforcement goes on", exc)  # noqa: TRY400
        return None
    why = probe_peer(announcer.settings)
    if why is not None:
        s = announcer.settings
        log.error(
            "border: BGP peer %s:179 unreachable from %s (%s); exabgp keeps trying",
            s.peer,
            s.local_address,
            why,
        )
    return announcer


def _join_fleet(cfg: Config, daemon: Daemon) -> None:
    """[fleet]: share decisions through PostgreSQL (fleet/link.py), as one supervised part."""
    from sipdeflect.fleet.link import FleetLink, conninfo, node_name  # noqa: PLC0415
    from sipdeflect.fleet.outbox import Outbox  # noqa: PLC0415 - psycopg only when on

    f = cfg.fleet
    path = Path(f.outbox) if f.outbox else Path(cfg.store.path).with_name("fleet.db")
    link = FleetLink(
        conninfo(f),
        f.rules(node_name(f)),
        Outbox(path, f.max_queue),
        daemon.fleet_decisions,
        clock=daemon.clock,
    )
    daemon.fleet = link
    daemon.add_source("fleet", link.run)


def run_decoy(cfg: Config) -> Callable[[Daemon], Awaitable[None]]:
    """The decoy on the decoy port (both families), its events hopping onto the loop."""

    async def run(daemon: Daemon) -> None:
        from sipdeflect.decoy import runner  # noqa: PLC0415 - only when the daemon runs
        from sipdeflect.decoy.server import Listen  # noqa: PLC0415
        from sipdeflect.decoy.strategy import Persona  # noqa: PLC0415

        loop = asyncio.get_running_loop()

        def sink(ev: DecoyEvent) -> None:  # the decoy's writer thread -> the loop's thread
            loop.call_soon_threadsafe(daemon.decoy_event, ev)

        port = cfg.decoy.port
        sinks: list[Callable[[DecoyEvent], None]] = [sink]
        pcap = open_pcap(cfg.decoy.pcap, append=True) if cfg.decoy.pcap else None
        if pcap is not None:
            sinks.append(decoy_sink(pcap, port))
        running = await asyncio.to_thread(  # pyroute2 inside runs its own event loop
            runner.start,
            # All interfaces on purpose: nftables `redirect` delivers a deflected packet to
            # the address of the interface it came in on.
            [Listen("0.0.0.0", port), Listen("::", port)],  # noqa: S104
            budget=cfg.decoy.reply_budget,
            cap=65_536,
            persona=Persona(),
            sinks=sinks,
        )
        try:
            await asyncio.Event().wait()  # until cancelled by the supervisor's stop
        finally:
            running.stop()
            if pcap is not None:
                pcap.close()

    return run


def follow_log(spec: LogSource) -> Callable[[Daemon], Awaitable[None]]:
    async def run(daemon: Daemon) -> None:
        follower = FileFollower(Path(spec.path))
        fmt: LogFormat | None = None if spec.format == "auto" else get_format(spec.format)
        waiting = b""
        try:
            while True:
                data = follower.poll()  # whole lines: "\n" ends a line, nothing else
                if fmt is None and data:
                    waiting += data
                    head = b"\n".join(waiting.split(b"\n", SNIFF_LINES)[:SNIFF_LINES])
                    try:
                        fmt = detect_format(head.decode("utf-8", "replace"))
                    except UnknownFormatError:
                        if waiting.count(b"\n") < SNIFF_LINES:
                            await asyncio.sleep(POLL)
                            continue
                        raise
                    data, waiting = waiting, b""
                if fmt is not None and data:
                    now = dt.datetime.now(dt.UTC)
                    ctx = Context(year=now.year, default=now, now=now)
                    for _, ev in fmt.scan_bytes(data, ctx):  # in C when built
                        daemon.event(ev)
                await asyncio.sleep(POLL)
        finally:
            follower.close()

    return run


def follow_wire(cfg: Config) -> Callable[[Daemon], Awaitable[None]]:
    async def run(daemon: Daemon) -> None:
        loop = asyncio.get_running_loop()
        detector = WireDetector(
            default_fingerprints(),
            WirePolicy(ports=frozenset(cfg.sip.ports)),
            hot=daemon.verdicts.swarm.hot,
        )
        detector.tally = Tally()
        sock = open_capture(None, list(cfg.sip.ports))
        stop = threading.Event()
        try:

            def hop(ev: Event) -> None:  # capture thread -> the loop's thread
                loop.call_soon_threadsafe(daemon.event, ev)

            def traffic(rows: list[Row]) -> None:
                loop.call_soon_threadsafe(daemon.account, rows)

            await asyncio.to_thread(
                run_capture,
                sock,
                detector,
                hop,
                stop,
                diverted=daemon.diverted,
                on_traffic=traffic,
            )
        finally:
            stop.set()
            sock.close()

    return run
