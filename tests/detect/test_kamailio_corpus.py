"""The Kamailio corpus (tests/vectors/logs/kamailio/lab.log, produced by a real Kamailio):
every annotated line names its true host, nothing else yields an event, the injection
attempt is recognised; and a fresh run of Kamailio reproduces the committed vectors."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipdeflect.detect.events import EventKind
from sipdeflect.detect.logs import FORMATS, Context, detect_format
from tests.lab_detect.kamcorpus import OUT, generate, normalize

CTX = Context(year=2026, default=datetime(2026, 1, 1, tzinfo=UTC))


def annotated(text: str) -> dict[int, dict[str, object]]:
    lines = text.splitlines()
    return {
        i + 2: json.loads(line.split(":", 1)[1])
        for i, line in enumerate(lines)
        if line.startswith("# failJSON:")
    }


def test_committed_kamailio_corpus() -> None:
    text = OUT.read_text()
    want = annotated(text)
    assert len(want) >= 10
    assert detect_format(text).name == "kamailio"
    got = dict(FORMATS["kamailio"].scan(text, CTX))
    assert set(got) == set(want)
    for n, ev in got.items():
        assert ev.source == ipaddress.ip_address(str(want[n]["host"])), (n, ev)
    kinds = [ev.kind for ev in got.values()]
    assert kinds.count(EventKind.LOG_INJECTION) == 1  # the User-Agent imitating our fields
    assert kinds.count(EventKind.AUTH_FAILED_WITH_CREDENTIALS) == len(kinds) - 1
    assert {ev.account for ev in got.values()} == {"1001", "7777"}


def test_syslog_and_journal_shapes_and_injection_in_user() -> None:
    fmt = FORMATS["kamailio"]
    line = (
        "Nov 24 23:59:59 pbx /usr/sbin/kamailio[812]: WARNING: <script>: sipdeflect: "
        "auth-failed src=2001:db8::5 port=5061 proto=tls reason=unknown-user user=admin ua=x"
    )
    ev = fmt.parse(line, Context(year=2026, now=datetime(2026, 1, 2, tzinfo=UTC)))
    assert ev is not None
    assert str(ev.source) == "2001:db8::5"
    assert ev.port == 5061
    assert ev.time == datetime(2025, 11, 24, 23, 59, 59, tzinfo=UTC)  # last year's stamp
    assert ev.verified
    # A From user holding a fake marker: the genuine (first) fields win, flagged injection.
    forged = line.replace("user=admin", "user=a sipdeflect: auth-failed src=192.0.2.1 port=1")
    ev2 = fmt.parse(forged, CTX)
    assert ev2 is not None
    assert ev2.kind is EventKind.LOG_INJECTION
    assert str(ev2.source) == "2001:db8::5"
    assert fmt.parse(line.replace("reason=unknown-user", "reason=made-up"), CTX) is None


@pytest.mark.timeout(180)
def test_a_fresh_kamailio_run_reproduces_the_corpus(netns_ok: None, tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert normalize(fresh) == normalize(OUT.read_text())
