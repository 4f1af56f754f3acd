"""AF_PACKET capture for real, inside network namespaces: the kernel filter passes only
SIP ports, both IPv4 and IPv6 reach the detector, and other traffic never does."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from sipdeflect.detect.events import Event, EventKind
from sipdeflect.detect.wire import WireDetector
from sipdeflect.lab.netns import hosts, link
from sipdeflect.sources.capture import ETH_P_ALL, open_capture, run_capture
from sipdeflect.sources.data import default_fingerprints
from tests.detect.sipmsg import register

pytestmark = pytest.mark.timeout(60)


def test_capture_sees_sip_on_v4_and_v6_and_nothing_else(netns_ok: None) -> None:
    with hosts("pbx", "atk") as (pbx, atk):
        pbx_if, _ = link(
            pbx, ["203.0.113.1/24", "2001:db8::1/64"], atk, ["203.0.113.66/24", "2001:db8::66/64"]
        )
        raw = pbx.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        cap = open_capture(pbx_if, [5060], raw)
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
