# Prometheus metrics on a private registry (so tests and several daemons never collide),
# served over HTTP only when [metrics] listen is set. Counters are incremented where things
# happen; set sizes are gauges the daemon refreshes. Names follow Prometheus conventions.
from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from sipdeflect.errors import ConfigError


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter(
            "sipdeflect_sip_messages", "SIP messages seen", ["where", "method"], registry=r
        )
        self.events = Counter("sipdeflect_events", "detection events", ["kind"], registry=r)
        self.decisions = Counter(
            "sipdeflect_decisions", "decisions made", ["action", "origin"], registry=r
        )
        self.active = Gauge(
            "sipdeflect_active_elements", "addresses/prefixes in force", ["set"], registry=r
        )
        self.decoy_answers = Counter(
            "sipdeflect_decoy_answers", "decoy replies by kind", ["answer"], registry=r
        )
        self.sources_quit = Counter(
            "sipdeflect_sources_quit", "deflected sources that went quiet in the decoy", registry=r
        )
        # Increments of the block set's per-element counters, read every [store]
        # counters_every (so a rate over a few minutes is what to graph).
        self.dropped_packets = Counter(
            "sipdeflect_dropped_packets",
            "packets dropped by the block set (firewall counters)",
            registry=r,
        )
        self.dropped_bytes = Counter(
            "sipdeflect_dropped_bytes",
            "bytes dropped by the block set (firewall counters)",
            registry=r,
        )
        self.under_attack = Gauge(
            "sipdeflect_under_attack",
            "accounts and prefixes under distributed brute force (many failing addresses)",
            ["kind"],
            registry=r,
        )
        # [fleet]: seconds from a shared decision's commit to this node taking it in (the
        # last one), decisions waiting to be published, shared rows not yet read.
        self.fleet_lag = Gauge(
            "sipdeflect_fleet_lag_seconds", "shared store commit -> taken in here", registry=r
        )
        self.fleet_queued = Gauge(
            "sipdeflect_fleet_queued", "own decisions not yet in the shared store", registry=r
        )
        self.fleet_behind = Gauge(
            "sipdeflect_fleet_behind", "shared decisions not yet read", registry=r
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, listen: str) -> tuple[str, int]:
        """Start the HTTP endpoint on "host:port" ("[::1]:9560" for IPv6); returns it."""
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"metrics.listen: expected HOST:PORT, got {listen!r}")
        host = host.strip("[]")
        try:
            self._server, self._thread = start_http_server(
                int(port), addr=host, registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(f"metrics.listen {listen}: {exc.strerror}") from None
        return self.address or ("", 0)

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) being served, or None."""
        if self._server is None:
            return None
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
