# Abuse reports ready to send to the owner of an attacking address: an XARF v4 report
# (category connection, type login_attack) built and validated with the `xarf` library,
# and a plain-text email body. Pure: the caller gathers the incident from the store; no
# network is needed. Samples are redacted: Authorization credentials and every one of our
# own addresses are removed before anything leaves the machine.
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import xarf

from sipdeflect.decisions import Decision
from sipdeflect.errors import SipDeflectError
from sipdeflect.render import escape, redact

MAX_SAMPLES = 5
MAX_SAMPLE_BYTES = 1500


class ReportError(SipDeflectError):
    """The report could not be built or did not validate."""


@dataclass(frozen=True, slots=True)
class Reporter:
    org: str
    contact: str  # the abuse-desk reply address
    domain: str


@dataclass(frozen=True, slots=True)
class Incident:
    source: str
    protocol: str  # "udp" or "tcp"
    first_seen: float
    last_seen: float
    counts: Mapping[str, int]  # e.g. {"REGISTER": 4200, "auth-failed": 3900}
    samples: Sequence[str] = ()  # raw SIP text as received
    decisions: Sequence[Decision] = ()
    source_port: int | None = None
    destination_port: int | None = None
    own: Iterable[str] = field(default_factory=tuple)  # our addresses, to redact


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def redact_sample(text: str, own: Iterable[str]) -> str:
    """Credentials and our own addresses out; control characters escaped; bounded size."""
    out = redact(text)
    for addr in sorted(set(own), key=len, reverse=True):  # longest first: no partial hits
        out = out.replace(addr, "[our-address]")
    out = escape(out)
    if len(out.encode()) > MAX_SAMPLE_BYTES:
        out = out.encode()[:MAX_SAMPLE_BYTES].decode("utf-8", "ignore") + "\n[truncated]"
    return out


def build(incident: Incident, reporter: Reporter) -> tuple[dict[str, Any], str]:
    """(XARF report as a dict, email body). Raises ReportError if it does not validate."""
    own = list(incident.own)
    samples = [redact_sample(s, own) for s in incident.samples[:MAX_SAMPLES]]
    total = sum(incident.counts.values())
    contact = {"org": reporter.org, "contact": reporter.contact, "domain": reporter.domain}
    extra: dict[str, Any] = {
        "protocol": incident.protocol,
        "first_seen": _iso(incident.first_seen),
        "last_seen": _iso(incident.last_seen),
        "evidence_source": "firewall_logs",
        # No "confidence": xarf 1.0.0's schema allows 0..1 but its model wants an int, so a
        # fraction fails model validation (silently: report None, no errors).
        "description": (
            f"SIP brute-force/scanning from {incident.source}: {total} requests "
            f"between {_iso(incident.first_seen)} and {_iso(incident.last_seen)}"
        )[:1000],
        "tags": ["protocol:sip", "attack:brute_force"],
        "evidence": [
            xarf.create_evidence("text/plain", s, description="SIP request (redacted)")
            for s in samples
        ],
    }
    if incident.source_port is not None:
        extra["source_port"] = incident.source_port
    if incident.destination_port is not None:
        extra["destination_port"] = incident.destination_port
    result = xarf.create_report(
        category="connection",
        type="login_attack",
        source_identifier=incident.source,
        reporter=contact,
        sender=contact,
        **extra,
    )
    if result.report is None or result.errors:
        raise ReportError(f"XARF report did not validate: {result.errors}")
    report = json.loads(result.report.model_dump_json(by_alias=True, exclude_none=True))
    return report, _email(incident, reporter, samples, total, report["report_id"])


def _email(
    incident: Incident, reporter: Reporter, samples: list[str], total: int, report_id: str
) -> str:
    lines = [
        f"Subject: SIP brute-force attack from {incident.source}",
        "",
        "Hello,",
        "",
        f"the address {incident.source}, which your network announces, attacked our SIP",
        "(VoIP) service: it tried extension numbers and passwords in a brute-force manner.",
        "",
        f"  time range (UTC): {_iso(incident.first_seen)} to {_iso(incident.last_seen)}",
        f"  protocol:         SIP over {incident.protocol.upper()}"
        + (f", source port {incident.source_port}" if incident.source_port else ""),
        f"  requests seen:    {total}",
    ]
    lines += [f"    {k}: {v}" for k, v in sorted(incident.counts.items())]
    if incident.decisions:
        lines += ["", "What we did (UTC):"]
        lines += [
            f"  {_iso(d.at)}  {d.action.value}" + (f" until {_iso(d.until)}" if d.until else "")
            for d in incident.decisions
        ]
    lines += ["", f"Sample requests ({len(samples)}; our addresses and any credentials redacted):"]
    for s in samples:
        lines += ["", *("  " + ln for ln in s.splitlines())]
    lines += [
        "",
        f"A machine-readable XARF v4 report is attached (report id {report_id}).",
        "",
        "Please stop this traffic and check the host for compromise.",
        "",
        "Regards,",
        f"{reporter.org} <{reporter.contact}>",
        "",
    ]
    return "\n".join(lines)
