"""Abuse reports validate with the xarf library and leak neither credentials nor our IPs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import xarf

from sipdeflect.decisions import Action, Decision, parse_target
from sipdeflect.report.abuse import Incident, Reporter, ReportError, build, redact_sample

VECTORS = Path(__file__).parents[1] / "vectors" / "sip" / "captured"
ME = Reporter("Example PBX Ltd", "abuse@pbx.example", "pbx.example")
T0 = 1_764_000_000.0


def _incident(**kw: object) -> Incident:
    sample = (VECTORS / "register-sv-auth.sip").read_text().replace("127.0.0.1", "192.0.2.10")
    base: dict[str, object] = {
        "source": "203.0.113.66",
        "protocol": "udp",
        "first_seen": T0,
        "last_seen": T0 + 3600,
        "counts": {"REGISTER": 4200, "auth-failed": 3900},
        "samples": [sample] * 7,
        "decisions": [
            Decision(parse_target("203.0.113.66"), Action.DEFLECT, T0 + 400, "engine", "x", T0 + 5),
            Decision(
                parse_target("203.0.113.66"), Action.BLOCK, T0 + 7200, "engine", "quiet", T0 + 20
            ),
        ],
        "source_port": 5060,
        "destination_port": 5060,
        "own": ["192.0.2.10"],
    }
    base.update(kw)
    return Incident(**base)  # type: ignore[arg-type]


def test_report_validates_with_the_library() -> None:
    report, email = build(_incident(), ME)
    parsed = xarf.parse(json.dumps(report))
    assert parsed.errors == []
    assert parsed.report is not None
    assert (report["category"], report["type"]) == ("connection", "login_attack")
    assert report["source_identifier"] == "203.0.113.66"
    assert report["first_seen"] == "2025-11-24T16:00:00Z"
    assert len(report["evidence"]) == 5
    assert "time range (UTC): 2025-11-24T16:00:00Z to 2025-11-24T17:00:00Z" in email
    assert "requests seen:    8100" in email
    assert "block until 2025-11-24T18:00:00Z" in email


def test_nothing_secret_leaves() -> None:
    report, email = build(_incident(), ME)
    blob = json.dumps(report) + email
    assert "192.0.2.10" not in email
    assert 'response="' not in email
    assert "[our-address]" in email
    for ev in report["evidence"]:
        text = base64.b64decode(ev["payload"]).decode()
        assert "192.0.2.10" not in text
        assert "Authorization: Digest <redacted>" in text
    assert "192.0.2.10" not in blob


def test_invalid_input_is_a_report_error() -> None:
    with pytest.raises(ReportError):
        build(_incident(source_port=70000), ME)


def test_redact_sample_bounds_size_and_escapes() -> None:
    out = redact_sample("INVITE sip:x\x1b[2J" + "A" * 5000, ["10.0.0.1"])
    assert "\x1b" not in out
    assert out.endswith("[truncated]")
