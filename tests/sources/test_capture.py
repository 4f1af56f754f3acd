"""AF_PACKET capture for real, inside network namespaces: the kernel filter passes only
SIP ports, both IPv4 and IPv6 reach the detector, and other traffic never does."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sipdeflect.accounting import Diverted, Row, Tally
from sipdeflect.decisions import Action, Decision, parse_target
from sipdeflect.detect.events import Event, EventKind
from sipdeflect.detect.wire import WireDetector
from sipdeflect.lab.netns import Netns, hosts, link
from sipdeflect.sources.capture import ETH_P_ALL, open_capture, run_capture
from sipdeflect.sources.data import default_fingerprints
from tests.detect.sipmsg import register

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def _lab() -> Iterator[tuple[Netns, socket.socket]]:
    """A PBX and an attacker on one link (IPv4 and IPv6); the PBX side's capture socket."""
    with hosts("pbx", "atk") as (pbx, atk):
        pbx_if, _ = link(
            pbx, ["203.0.113.1/24", "2001:db8::1/64"], atk, ["203.0.113.66/24", "2001:db8::66/64"]
        )
        raw = pbx.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        yield atk, open_capture(pbx_if, [5060], raw)


def test_capture_sees_sip_on_v4_and_v6_and_nothing_else(netns_ok: None) -> None:
    with _lab() as (atk, cap):
        det = WireDetector(default_fingerprints())
        events: list[Event] = []
        stop = threading.Event()
        frames: list[int] = []
        t = threading.Thread(
            target=lambda: frames.append(run_capture(cap, det, events.append, stop, poll=0.05))
        )
        t.start()
        try:
            v4 = atk.socket(socket.AF_INET, socket.SOCK_DGRAM)
            v6 = atk.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            for i in range(3):
                v4.sendto(register("100", f"a{i}", 1), ("203.0.113.1", 5060))
                v6.sendto(register("200", f"b{i}", 1), ("2001:db8::1", 5060))
                v4.sendto(b"not sip, not our port", ("203.0.113.1", 9999))
                v6.sendto(b"not sip, not our port", ("2001:db8::1", 9999))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and det.stats["requests"] < 6:
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(5)
            cap.close()
        assert det.stats["requests"] == 6
        # The filter let through only port 5060 (and the ICMP errors for 9999 are not UDP).
        assert det.stats["packets"] == 6
        ua = {str(e.source) for e in events if e.kind is EventKind.SCANNER_USER_AGENT}
        assert ua == {"203.0.113.66", "2001:db8::66"}


def test_capture_accounts_traffic_and_skips_diverted_sources(netns_ok: None) -> None:
    """A diverted (deflected/blocked) source is neither evidence nor traffic that reached
    the PBX; everything else is tallied and handed over from the capture thread."""
    with _lab() as (atk, cap):
        det = WireDetector(default_fingerprints())
        det.tally = Tally()
        diverted = Diverted()
        diverted.apply([Decision(parse_target("203.0.113.66"), Action.DEFLECT, None, "t", "", 0)])
        rows: list[Row] = []
        events: list[Event] = []
        stop = threading.Event()
        t = threading.Thread(
            target=run_capture,
            args=(cap, det, events.append, stop),
            kwargs={"poll": 0.05, "diverted": diverted, "on_traffic": rows.extend, "every": 0.1},
        )
        t.start()
        try:
            v4 = atk.socket(socket.AF_INET, socket.SOCK_DGRAM)
            v6 = atk.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sent = 0
            for i in range(4):
                v4.sendto(register("100", f"a{i}", 1), ("203.0.113.1", 5060))
                msg = register("200", f"b{i}", 1)
                v6.sendto(msg, ("2001:db8::1", 5060))
                sent += len(msg)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(r[3] for r in rows) < 4:
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(5)
            cap.close()
        assert {r[0] for r in rows} == {"2001:db8::66"}
        assert (sum(r[3] for r in rows), sum(r[4] for r in rows)) == (4, sent)
        assert det.stats["requests"] == 4
        assert {str(e.source) for e in events} == {"2001:db8::66"}
