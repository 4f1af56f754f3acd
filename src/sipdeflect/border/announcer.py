# The daemon's side of the border: the pure Border state (touched on the event loop's
# thread only) turned into ExaBGP lines, and a Batch the daemon hands to its I/O thread.
# A speaker found dead is restarted with a reset from what is in force, so its RIB is
# rebuilt from the store's truth, never from memory of what the old one was told.
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipdeflect.border.exabgp import BorderError, Process, SpeakerSettings, commands
from sipdeflect.border.plan import Border, BorderPolicy, Changes, Evidence, Mode
from sipdeflect.config import Config
from sipdeflect.decisions import Address, Decision, single

log = logging.getLogger("sipdeflect")
RESTART_EVERY = 30.0  # seconds between attempts to restart a dead speaker


@dataclass(frozen=True, slots=True)
class Batch:
    lines: tuple[str, ...]
    restart: bool = False  # start a new speaker before sending (the old one died)

    def __bool__(self) -> bool:
        return bool(self.lines or self.restart)


def policy_of(cfg: Config, own: Iterable[Address]) -> BorderPolicy:
    b = cfg.border
    return BorderPolicy(
        evidence=frozenset(Evidence(e) for e in b.evidence),
        max_prefixes=b.max_prefixes,
        widest_v4=b.widest_v4,
        widest_v6=b.widest_v6,
        allow=tuple(cfg.allow.networks()),
        own=tuple(single(a) for a in own),
        versions=frozenset({ipaddress.ip_address(b.peer).version}),
    )


def settings_of(cfg: Config) -> SpeakerSettings:
    b = cfg.border
    return SpeakerSettings(
        peer=b.peer,
        peer_as=b.peer_as,
        local_address=b.local_address,
        local_as=b.local_as,
        router_id=b.router_id or b.local_address,
        next_hop=b.next_hop,
        communities=tuple(b.communities),
        mode=Mode(b.mode),
        sip_ports=tuple(cfg.sip.ports),
        workdir=Path(b.workdir),
        exabgp=b.speaker,
    )


class Announcer:
    def __init__(self, cfg: Config, own: Iterable[Address] = ()) -> None:
        self.own = tuple(own)
        self.border = Border(policy_of(cfg, self.own))
        speaker = settings_of(cfg)
        self.settings = speaker
        self.process = Process(speaker)
        self.errors = 0
        self.last_error = ""
        self.restarts = 0
        self.broken = False  # a send failed: the speaker's RIB is unknown, rebuild it
        self._next_restart = 0.0  # a speaker that keeps dying is retried this often at most

    # -- loop thread: pure planning --------------------------------------------------------
    def _batch(self, changes: Changes, *, restart: bool = False) -> Batch:
        return Batch(tuple(commands(changes, self.settings)), restart)

    def update(self, decisions: Sequence[Decision], now: float) -> Batch:
        return self._batch(self.border.update(decisions, now))

    def reset(self, active: Iterable[Decision], now: float) -> Batch:
        return self._batch(self.border.reset(active, now))

    def reload(self, cfg: Config, active: Iterable[Decision], now: float) -> Batch:
        """SIGHUP: a new allowlist, evidence or cap re-judges what is in force (a change of
        peer or speaker needs a restart)."""
        return self._batch(self.border.retune(policy_of(cfg, self.own), active, now))

    def tick(self, now: float, active: Callable[[], Iterable[Decision]]) -> Batch:
        dead = self.process.proc is not None and not self.process.alive()
        if dead or self.broken:
            if now < self._next_restart:
                return Batch(())
            self._next_restart = now + RESTART_EVERY
            self.restarts += 1
            self.broken = False
            why = self.process.last_log_line() if dead else self.last_error
            log.error("border: exabgp %s (%s); restarting it", "died" if dead else "stuck", why)
            return self._batch(self.border.reset(active(), now), restart=True)
        return self._batch(self.border.tick(now))

    # -- I/O thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self.process.start()

    def send(self, batch: Batch) -> None:
        try:
            if batch.restart:
                self.process.restart()
            self.process.send(batch.lines)
        except BorderError as exc:  # the next tick rebuilds the speaker from the store
            self.errors += 1
            self.last_error = str(exc)
            self.broken = True
            log.error("%s", exc)  # noqa: TRY400 - one line, no traceback

    def close(self) -> None:
        self.process.stop()

    def status(self, now: float) -> dict[str, Any]:
        b = self.border
        s = self.settings
        return {
            "enabled": True,
            "speaker": "exabgp",
            "running": self.process.alive(),
            "pid": None if self.process.proc is None else self.process.proc.pid,
            "session": self.process.session(),
            "peer": s.peer,
            "peer_as": s.peer_as,
            "mode": s.mode.value,
            "communities": list(s.communities),
            "next_hop": s.next_hop,
            "max_prefixes": b.policy.max_prefixes,
            "waiting": b.waiting(),
            "errors": self.errors,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "announced": [
                {
                    "target": str(e.target),
                    "since": e.since,
                    "age": round(now - e.since, 1),
                    "until": e.until,
                    "evidence": e.evidence.value,
                    "reason": e.reason,
                }
                for e in sorted(b.announced.values(), key=lambda e: e.since)
            ],
        }
