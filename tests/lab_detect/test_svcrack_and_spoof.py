"""Must-show: forged UDP "from" a bystander (never answering a challenge) keeps it at
"watch" or below, while a real SIPVicious svcrack run against a real Kamailio is flagged
"attacker" within its first 10 credentialed attempts, from the wire and from the log."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Event, EventKind
from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.detect.verdict import Flag, Verdicts
from tests.lab_detect.kamlab import ATK, BYS, lab

pytestmark = [pytest.mark.timeout(240), pytest.mark.root]


def credentialed_until_attacker(events: list[Event], source: str) -> int | None:
    """How many credentialed failures of ``source`` it took to reach attacker."""
    verdicts, n = Verdicts(), 0
    for ev in events:
        flag: Flag | None = verdicts.feed(ev)
        if str(ev.source) == source and ev.kind is EventKind.AUTH_FAILED_WITH_CREDENTIALS:
            n += 1
        if flag is not None and flag.level is Level.ATTACKER and str(flag.source) == source:
            return n
    return None


def test_spoofed_bystander_stays_watch_and_svcrack_is_attacker(
    netns_ok: None, tmp_path: Path
) -> None:
    with lab(tmp_path) as the_lab:
        sent = the_lab.spoof(400)
        the_lab.svcrack("1001", 20)
    events = list(the_lab.events)
    assert sent == 400
    # The wire observer saw the forged flood and judged it only as forgeable evidence.
    bys = [e for e in events if str(e.source) == BYS]
    kinds = {e.kind for e in bys}
    assert {EventKind.SCANNER_USER_AGENT, EventKind.REQUEST_FLOOD, EventKind.ENUMERATION} <= kinds
    assert EventKind.AUTH_FAILED_WITH_CREDENTIALS not in kinds
    verdicts = Verdicts()
    for ev in events:
        verdicts.feed(ev)
    assert verdicts.level(ipaddress.ip_address(BYS)) <= Level.WATCH
    assert verdicts.level(ipaddress.ip_address(ATK)) == Level.ATTACKER
    n = credentialed_until_attacker(events, ATK)
    assert n is not None
    assert n <= 10, n

    # Kamailio's own log, through the documented xlog line: same verdicts.
    log = the_lab.kam.log.read_text(errors="replace")
    ctx = Context(year=2026)
    log_events = [ev for _, ev in FORMATS["kamailio"].scan(log, ctx)]
    assert log_events, log[-2000:]
    assert {str(e.source) for e in log_events} == {ATK}  # nonce binding: no bystander lines
    n_log = credentialed_until_attacker(log_events, ATK)
    assert n_log is not None
    assert n_log <= 10, n_log


def test_without_nonce_binding_kamailio_logs_a_replayed_nonce_but_the_wire_does_not(
    netns_ok: None, tmp_path: Path
) -> None:
    """Why docs/detection.md requires auth_checks_register=8: Kamailio's default nonces are
    not tied to an address, so an attacker replays its own nonce "from" a bystander and
    Kamailio logs a failed login for the bystander. The wire detector does not fall for it:
    the nonce was never sent to the bystander."""
    with lab(tmp_path, bind_nonce=False) as the_lab:
        the_lab.spoof(40)
    log = the_lab.kam.log.read_text(errors="replace")
    framed = [ev for _, ev in FORMATS["kamailio"].scan(log, Context(year=2026))]
    assert framed
    assert {str(e.source) for e in framed} == {BYS}
    wire_cred = [e for e in the_lab.events if e.kind is EventKind.AUTH_FAILED_WITH_CREDENTIALS]
    assert wire_cred == []
