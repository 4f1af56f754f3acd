# The daemon: one engine, fed by supervised sources, writing every decision to the store
# before the firewall sees it, and serving the control socket. All engine access happens on
# the event loop's thread (sources in other threads hop over with call_soon_threadsafe), so
# the engine needs no locks. On start the engine is rebuilt from the store and the firewall
# reconciled in one transaction; kill -9 at any point therefore loses nothing and leaves no
# duplicate. SIGHUP reloads the allowlist and policy; SIGTERM/SIGINT stop cleanly.
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from sipdeflect import accel
from sipdeflect.accounting import CounterDeltas, Diverted, Row
from sipdeflect.config import Config
from sipdeflect.control import ControlServer
from sipdeflect.decisions import Action, Address, Decision, Level, parse_target
from sipdeflect.decoy.events import DecoyEvent, show
from sipdeflect.decoy.strategy import CLOSING
from sipdeflect.detect.events import Event
from sipdeflect.detect.verdict import Verdicts
from sipdeflect.duration import parse_duration
from sipdeflect.engine import Engine, Source, address
from sipdeflect.errors import SipDeflectError, UsageError
from sipdeflect.firewall.model import Listed
from sipdeflect.metrics import Metrics
from sipdeflect.store.sqlite import TRAFFIC_BUCKET, SqliteStore
from sipdeflect.supervise import Supervisor

log = logging.getLogger("sipdeflect")
PRUNE_EVERY = 3600.0  # seconds between retention passes
WATCH_QUEUE = 1000
# per watcher; a slow `watch` client loses lines, never slows the daemon


class Enforcer(Protocol):
    """What the daemon needs from a firewall backend (adapted from firewall/)."""

    def enforce(self, decisions: Sequence[Decision]) -> None:
        """Apply these changes atomically (one transaction), killing stale flows."""

    def reconcile(self, active: Sequence[Decision]) -> None:
        """Make the firewall hold exactly ``active`` (one transaction)."""

    def counters(self) -> list[Listed]:
        """Block-set elements with what each dropped so far (per-element counters)."""


class Border(Protocol):
    """What the daemon needs from the border (adapted from border/): planning on the loop
    thread returns a batch, sending it happens on the firewall's I/O thread, in order."""

    def update(self, decisions: Sequence[Decision], now: float) -> Any:
        """Decisions just taken -> a batch for send() (falsy: nothing to send)."""

    def reset(self, active: Iterable[Decision], now: float) -> Any:
        """Announce exactly what is in force (a fresh speaker)."""

    def tick(self, now: float, active: Callable[[], Iterable[Decision]]) -> Any:
        """Time passing (and a dead speaker rebuilt)."""

    def reload(self, config: Config, active: Iterable[Decision], now: float) -> Any:
        """A reloaded configuration re-judges what is in force."""

    def send(self, batch: Any) -> None:
        """Drive the speaker (I/O thread); errors are logged and counted, never raised."""

    def status(self, now: float) -> dict[str, Any]:
        """What is announced, with age and why (`sipdeflect border status`)."""

    def close(self) -> None:
        """Stop the speaker (its session drops; the router withdraws everything)."""


class FleetPart(Protocol):
    """What the daemon needs from fleet sharing (fleet/link.py), when [fleet] is on."""

    def offer(self, decisions: Sequence[Decision], levels: Mapping[Address, Level]) -> None:
        """Queue this node's own decisions for the shared store (after the local commit)."""

    def status(self) -> dict[str, Any]:
        """Connected, queued, published, received, refused, lag, ..."""


class Daemon:
    def __init__(
        self,
        config: Config,
        enforcer: Enforcer,
        store: SqliteStore,
        *,
        own: Iterable[Address] = (),
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        border: Border | None = None,
    ) -> None:
        self.config = config
        self.border = border
        self.enforcer = enforcer
        self.store = store
        self.own = set(own)
        self.dry_run = dry_run
        self.clock = clock
        self.engine = Engine(config.policy.to_policy(), allow=config.allow.networks(), own=self.own)
        self.verdicts = Verdicts(config.detect.to_verdict_policy())
        self.supervisor = Supervisor(self._report)
        self.control = ControlServer(config.control.socket)
        self.metrics = Metrics()
        self.started = clock()
        self.counters: dict[str, int] = {
            "signals": 0,
            "probes": 0,
            "decisions": 0,
            "decoy_packets": 0,
        }
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._stop = asyncio.Event()
        self._sources: dict[str, Callable[[Daemon], Awaitable[None]]] = {}
        self.on_reload: Callable[[], None] = self.reload  # SIGHUP: `run` reloads the file
        # One thread applies firewall plans, in order, off the loop: an nft transaction can
        # take seconds.
        self._fw = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="firewall")
        self._fw_pending: list[Decision] = []  # decisions waiting for the firewall thread
        self._fw_lock = threading.Lock()
        self.firewall_errors = 0
        self._traffic: dict[tuple[str, int, str], list[int]] = {}
        self._last_prune = float("-inf")
        # Who the firewall diverts, for the wire capture (accounting.Diverted), and the
        # block set's counters turned into "dropped" traffic every [store] counters_every.
        self.diverted = Diverted()
        # The reading runs on its own thread: listing a big set takes long (a kernel dump
        # of a million elements ~60 s), and decisions must never wait behind it. The next
        # reading is due counters_every later, or ten times as long as this one took,
        # whichever is later, so reading costs at most ~10% of a core. The first reading
        # after a start is a baseline (the previous run accounted what came before).
        self._drops = CounterDeltas()
        self._counter_thread: threading.Thread | None = None  # a daemon thread: exit never waits
        self._counters_due = float("-inf")
        self._counting = False
        self._baseline = True
        self._counters_took = 0.0
        self.fleet: FleetPart | None = None  # set by service.build when [fleet] is on
        self._register_control()

    # -- inputs (call on the loop thread) ---------------------------------------------------
    def signal(self, source: Address, level: Level, reason: str) -> list[Decision]:
        self.counters["signals"] += 1
        out = self.engine.signal(source, level, reason, self.clock())
        self._apply(out)
        return out

    def event(self, ev: Event) -> list[Decision]:
        """A detection event (PBX log line or wire observation): stored (sampled), counted,
        and judged by the verdict policy; a source that reaches a new level is signalled."""
        self.metrics.events.labels(str(ev.kind)).inc()
        self.store.record_event(
            ev.time.timestamp(),
            str(ev.source),
            str(ev.kind),
            ev.detail,
            account=ev.account,
            port=ev.port,
        )
        self.publish({"type": "event", **ev.as_json()})
        flag = self.verdicts.feed(ev)
        if flag is None:
            return []
        if flag.probe:
            return self.probe(flag.source, flag.reason)
        return self.signal(flag.source, flag.level, flag.reason)

    def probe(self, source: Address, reason: str) -> list[Decision]:
        """Forgeable evidence: deflect briefly and see whether it quits (engine.probe)."""
        self.counters["probes"] += 1
        out = self.engine.probe(source, reason, self.clock())
        self._apply(out)
        return out

    def fleet_decisions(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Decisions other nodes shared (judged by fleet.rules), through this node's own
        engine: its allowlist, own addresses, operator decisions and the shields of
        customers whose logins the PBX accepted win here whatever the fleet says."""
        now = self.clock()
        out: list[Decision] = []
        for d in decisions:
            if d.action is not Action.RELEASE and d.target.num_addresses == 1:
                addr = d.target.network_address
                if not self.engine.protected(addr) and self.verdicts.trusted(addr, now):
                    why = "shielded here (the PBX accepted its login)"
                    log.info("fleet: %s %s from %s not taken: %s", d.action, addr, d.origin, why)
                    continue
            taken = self.engine.remote_decision(d, now)
            if not taken and d.action is not Action.RELEASE:
                why = self.engine.protected(d.target.network_address) or "held locally"
                log.info("fleet: %s %s from %s not taken: %s", d.action, d.target, d.origin, why)
            out += taken
        self._apply(out)
        return out

    def decoy_event(self, ev: DecoyEvent) -> None:
        """One message the decoy handled: the source is still trying (so not quiet yet)."""
        try:
            source = address(ev.source[0])
        except ValueError:
            return
        self.decoy_seen(source, closes=ev.answer in CLOSING)
        method = ev.method
        self.metrics.messages.labels("decoy", method).inc()
        self.metrics.decoy_answers.labels(ev.answer).inc()
        self._count((str(source), ev.time, "decoy", 1, len(ev.raw), int(ev.status is not None)))
        self.store.record_event(
            ev.time,
            str(source),
            "sip",
            show(ev.raw),
            account=ev.from_user or None,
            user_agent=ev.user_agent or None,
            port=ev.source[1],
        )
        self.publish({"type": "sip", "line": ev.line()})

    def account(self, rows: Iterable[Row]) -> None:
        """Traffic rows (source, time, place, packets, bytes, replies) from the wire capture
        or the firewall's counters, summed in memory until the next tick writes them. This
        host's own addresses (the PBX talking to its trunks) are not sources."""
        for row in rows:
            with contextlib.suppress(ValueError):  # (OTHER, the pooled row, is no address)
                if address(row[0]) in self.own:
                    continue
            self._count(row)

    def _count(self, row: Row) -> None:
        """One row into the in-memory sums. The decoy's rows come here directly, without
        the own-address check: the firewall sends it only deflected sources, never this
        host, and it runs once per decoy message."""
        source, at, place, packets, nbytes, replies = row
        key = (source, int(at // TRAFFIC_BUCKET) * TRAFFIC_BUCKET, place)
        acc = self._traffic.setdefault(key, [0, 0, 0])
        acc[0] += packets
        acc[1] += nbytes
        acc[2] += replies

    def _poll_counters(self, now: float) -> None:
        """Read the block set's counters off the loop and account what each element
        dropped since the last reading (see __init__ for when)."""
        every = self.config.store.counters_every
        if self.dry_run or not every or self._counting or now < self._counters_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # tick() driven by a test without a loop
            return
        self._counting = True

        def read() -> None:
            t0 = time.monotonic()
            try:
                got: list[Listed] | Exception = self.enforcer.counters()
            except Exception as exc:  # reported on the loop; never leaves readings stuck
                got = exc
            loop.call_soon_threadsafe(self._dropped, got, time.monotonic() - t0)

        self._counter_thread = threading.Thread(target=read, name="counters", daemon=True)
        self._counter_thread.start()

    def _dropped(self, got: list[Listed] | Exception, took: float) -> None:
        self._counting = False
        self._counters_took = took
        now = self.clock()
        self._counters_due = now + max(self.config.store.counters_every, 10 * took)
        if isinstance(got, Exception):
            log.warning("reading the firewall's counters failed: %s", got)
            return
        self._account_drops(got, now)

    def wait_counters(self) -> None:
        """Block until a counter reading in flight is done (tests)."""
        if self._counter_thread is not None:
            self._counter_thread.join()

    def _account_drops(self, listed: list[Listed], now: float) -> None:
        if self._baseline:
            self._baseline = False
            self._drops.update(listed)
            return
        rows: list[Row] = []
        for e, packets, nbytes in self._drops.update(listed):
            self.metrics.dropped_packets.inc(packets)
            self.metrics.dropped_bytes.inc(nbytes)
            t = e.target
            name = str(t.network_address) if t.num_addresses == 1 else str(t)
            rows.append((name, now, "dropped", packets, nbytes, 0))
        self.account(rows)

    def flush_traffic(self) -> None:
        """Traffic accumulated in memory, written once a tick (not per packet)."""
        if self._traffic:
            rows = [
                (s, float(b), place, p, n, r) for (s, b, place), (p, n, r) in self._traffic.items()
            ]
            self._traffic.clear()
            self.store.account(rows)

    def decoy_seen(self, source: Address, *, closes: bool = False) -> None:
        self.counters["decoy_packets"] += 1
        self.engine.decoy_seen(source, self.clock(), closes=closes)

    def tick(self) -> list[Decision]:
        self.flush_traffic()
        self.store.flush_events()
        now = self.clock()
        self._poll_counters(now)
        if now - self._last_prune >= PRUNE_EVERY:  # [store] retention, applied hourly
            self._last_prune = now
            removed = self.store.prune(now, self.config.store.retention)
            if removed:
                log.info("pruned %d rows older than the retention", removed)
        out = self.engine.tick(now)
        self._apply(out)
        accounts, prefixes = self.verdicts.swarm.counts(now)
        self.metrics.under_attack.labels("account").set(accounts)
        self.metrics.under_attack.labels("prefix").set(prefixes)
        if self.border is not None:
            self._to_border(self.border.tick(now, self.engine.active))
        self._refresh_fleet()
        return out

    def publish(self, event: dict[str, Any]) -> None:
        """Send an event (a SIP message seen, a decision) to every `watch` client."""
        for q in list(self._watchers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)

    def restore(self) -> None:
        self.engine.restore(self.store.load_sources(), self.store.load_manual())
        self.diverted.reset(self.engine.active())
        if not self.dry_run:
            # The kernel's allow set holds the config allowlist too, so no element added
            # by hand elsewhere can ever catch an allowlisted source.
            self.enforcer.reconcile(list(self.engine.active()))
        if self.border is not None:  # (on the I/O thread: run() calls restore there)
            self.border.send(self.border.reset(self.engine.active(), self.clock()))

    def _apply(self, decisions: list[Decision]) -> None:
        if not decisions:
            return
        touched: list[Source] = []
        for d in decisions:
            if d.target.num_addresses == 1:
                src = self.engine.sources.get(d.target.network_address)
                if src is not None:
                    touched.append(src)
        self.store.commit(decisions, touched)  # durable before the firewall changes
        if self.fleet is not None:  # then shared (queued on disk, published off the loop)
            self.fleet.offer(decisions, {s.address: s.level for s in touched})
        # A release clears its target from every set, and a deflect takes it out of the
        # block set: what else still holds it (the engine's own block, an operator's or
        # another node's) follows to the firewall, so the strongest hold stays in force.
        fw = list(decisions)
        for d in decisions:
            if d.action is Action.RELEASE:
                fw += self.engine.holding(d.target)
            elif d.action is Action.DEFLECT:
                fw += [h for h in self.engine.holding(d.target) if h.action is not d.action]
        self.diverted.apply(fw)
        if not self.dry_run:
            self._enforce(fw)
        if self.border is not None:  # after the host's firewall, on the same thread
            self._to_border(self.border.update(decisions, self.clock()))
        self.counters["decisions"] += len(decisions)
        self._refresh_gauges()
        for d in decisions:
            self.metrics.decisions.labels(d.action.value, d.origin).inc()
            if d.reason.startswith(("quiet", "quit")):
                self.metrics.sources_quit.inc()
            log.info("%s %s until=%s (%s; %s)", d.action, d.target, d.until, d.origin, d.reason)
            self.publish({"type": "decision", **_decision_json(d, self.clock())})

    def _enforce(self, fw: list[Decision]) -> None:
        """Hand decisions to the firewall thread. Those arriving while it is busy are
        applied together, as one plan: one transaction and one conntrack dump, which
        walks the kernel's whole conntrack hash (~1 ms) however few entries it holds.
        Under a flood of new sources that dump per decision was most of the daemon's CPU."""
        with self._fw_lock:
            first = not self._fw_pending
            self._fw_pending.extend(fw)
        if first:
            self._fw.submit(self._drain_fw).add_done_callback(self._fw_done)

    def _drain_fw(self) -> None:
        with self._fw_lock:
            batch, self._fw_pending = self._fw_pending, []
        self.enforcer.enforce(batch)

    def _to_border(self, batch: Any) -> None:
        if batch and self.border is not None:
            self._fw.submit(self.border.send, batch)

    def _fw_done(self, fut: concurrent.futures.Future[None]) -> None:
        exc = fut.exception()
        if exc is not None:  # the store has it: the next start's reconcile applies it
            self.firewall_errors += 1
            log.error("firewall apply failed: %s", exc)

    def wait_firewall(self) -> None:
        """Block until every submitted firewall change is applied (tests, shutdown)."""
        self._fw.submit(lambda: None).result()

    def _refresh_fleet(self) -> None:
        if self.fleet is not None:
            st = self.fleet.status()
            self.metrics.fleet_lag.set(st["lag"] or 0.0)
            self.metrics.fleet_queued.set(st["queued"])
            self.metrics.fleet_behind.set(st["behind"])

    def _refresh_gauges(self) -> None:
        for action, n in self.engine.counts().items():  # kept by the engine: no walk
            self.metrics.active.labels(action.value).set(n)

    def _report(self, name: str, message: str) -> None:
        log.warning("source %s %s", name, message)
        self.publish({"type": "supervisor", "source": name, "message": message})

    # -- running ----------------------------------------------------------------------------
    def add_source(self, name: str, run: Callable[[Daemon], Awaitable[None]]) -> None:
        self._sources[name] = run

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until stop() or SIGTERM/SIGINT; signals need the main thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._fw, self.restore)
        self._refresh_gauges()
        if self.config.metrics.listen:
            host, port = self.metrics.serve(self.config.metrics.listen)
            log.info("metrics on http://%s:%d/metrics", host, port)
        await self.control.start()  # last: a reachable socket means the daemon is up
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._sighup)

        for name, run in self._sources.items():
            self.supervisor.start(name, lambda run=run: run(self))  # type: ignore[misc]
        ticker = asyncio.create_task(self._ticker())
        try:
            await self._stop.wait()
        finally:
            ticker.cancel()
            await self.supervisor.stop()
            await self.control.close()
            self.metrics.close()
            await loop.run_in_executor(None, self.wait_firewall)
            await self._last_traffic()
            if self.border is not None:
                await loop.run_in_executor(None, self.border.close)

    async def _last_traffic(self) -> None:
        """On the way out: a last reading of the block set's counters, and every traffic
        row still in memory (the capture's last hand-over included) into the store."""
        await asyncio.sleep(0)  # run what the stopped sources handed over
        # (Not when a reading is under way or readings are slow: a huge set would hold up
        # the exit. Then up to one interval of drops goes unaccounted.)
        quick = self._counters_took < 1.0 and not self._counting
        if not self.dry_run and self.config.store.counters_every and quick:
            loop = asyncio.get_running_loop()
            try:
                listed = await loop.run_in_executor(None, self.enforcer.counters)
            except SipDeflectError as exc:
                log.warning("reading the firewall's counters failed: %s", exc)
            else:
                self._account_drops(listed, self.clock())
        self.flush_traffic()

    def _sighup(self) -> None:
        self.on_reload()  # looked up at signal time: `run` replaces it to reread the file

    def stop(self) -> None:

        self._stop.set()

    def reload(self, config: Config | None = None) -> None:
        """SIGHUP: take the new allowlist and policy; engine state is kept."""
        if config is not None:
            self.config = config
        self.engine.policy = self.config.policy.to_policy()
        self.verdicts.retune(self.config.detect.to_verdict_policy())
        manual_allow = [d.target for d in self.engine.manual.values() if d.action is Action.ALLOW]
        before = set(self.engine.allow)
        self.engine.allow = [*self.config.allow.networks(), *manual_allow]
        if set(self.engine.allow) != before and not self.dry_run:
            # The kernel's allow set follows (restore() put the old list there). A full
            # reconcile lists the kernel's sets, so only when the allowlist changed.
            self._fw.submit(self.enforcer.reconcile, list(self.engine.active())).add_done_callback(
                self._fw_done
            )
        if self.border is not None:
            self._to_border(self.border.reload(self.config, self.engine.active(), self.clock()))
        log.info("configuration reloaded")

    async def _ticker(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(1.0)

    # -- control ----------------------------------------------------------------------------
    def _register_control(self) -> None:
        c = self.control
        c.handler("status", self._status)
        c.handler("list", self._list)
        c.handler("show", self._show)
        c.handler("border", self._border)
        for action in (Action.BLOCK, Action.DEFLECT, Action.ALLOW, Action.RELEASE):
            c.handler(action.value, self._manual_handler(action))
        c.streamer("watch", self._watch)

    async def _status(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        states = {s.value: n for s, n in self.engine.states.items()}
        active = {a.value: n for a, n in self.engine.counts().items()}
        attacked = [
            {"kind": u.kind, "key": u.key, "sources": u.sources, "until": round(u.until, 1)}
            for u in self.verdicts.swarm.under_attack(now)
        ]
        return {
            "uptime": round(now - self.started, 1),
            "dry_run": self.dry_run,
            "sources": states,
            "active": active,
            "under_attack": attacked[:50],
            "counters": self.counters,
            "parts": self.supervisor.status(),
            "accelerators": accel.loaded(),
            "fleet": None if self.fleet is None else self.fleet.status(),
        }

    async def _border(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.border is None:
            return {"enabled": False, "announced": []}
        return self.border.status(self.clock())

    async def _list(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        return {"decisions": [_decision_json(d, now) for d in self.engine.active()]}

    async def _show(self, req: dict[str, Any]) -> dict[str, Any]:
        addr_text = str(req.get("address", ""))
        try:
            addr = address(addr_text)
        except ValueError:
            raise UsageError(f"not an IP address: {addr_text!r}") from None
        src = self.engine.sources.get(addr)
        now = self.clock()
        return {
            "address": str(addr),
            "protected": self.engine.protected(addr),
            "node": None if self.fleet is None else self.fleet.status()["node"],
            "source": None
            if src is None
            else {
                "state": src.state.value,
                "level": src.level.name.lower(),
                "first_seen": src.first_seen,
                "last_seen": src.last_seen,
                "since": src.since,
                "until": src.until,
                "offences": src.offences,
                "reasons": src.reasons,
            },
            "history": [_decision_json(d, now) for d in self.store.history(str(addr))],
            "events": [
                e.__dict__
                if hasattr(e, "__dict__")
                else {"at": e.at, "kind": e.kind, "detail": e.detail}
                for e in self.store.events(str(addr))[-50:]
            ],
        }

    def _manual_handler(
        self, action: Action
    ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        async def handle(req: dict[str, Any]) -> dict[str, Any]:
            target = parse_target(str(req.get("target", "")))
            duration = req.get("duration")
            secs = None if duration in (None, "") else parse_duration(duration)
            out = self.engine.manual_decision(
                action,
                target,
                self.clock(),
                duration=secs,
                reason=str(req.get("reason") or ""),
                origin="cli",
            )
            self._apply(out)
            return {"decisions": [_decision_json(d, self.clock()) for d in out]}

        return handle

    async def _watch(self, req: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(WATCH_QUEUE)
        self._watchers.add(q)
        try:
            yield {"type": "hello", "dry_run": self.dry_run}
            while True:
                yield await q.get()
        finally:
            self._watchers.discard(q)


def _decision_json(d: Decision, now: float) -> dict[str, Any]:
    return {
        "target": str(d.target),
        "action": d.action.value,
        "until": d.until,
        "remaining": d.remaining(now),
        "origin": d.origin,
        "reason": d.reason,
        "at": d.at,
    }
