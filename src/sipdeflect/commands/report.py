# `sipdeflect report` (HTML page and PNG graphs) and `sipdeflect abuse-report ADDR` (XARF v4
# plus an email body). Both read the store directly: no daemon and no network needed.
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from collections import Counter
from pathlib import Path

import typer

from sipdeflect import config as cfgmod
from sipdeflect.duration import parse_duration
from sipdeflect.errors import UsageError
from sipdeflect.report.abuse import Incident, Reporter, build
from sipdeflect.store.sqlite import SqliteStore

CONFIG_HELP = "configuration file (for the store path and reporter details)"


def _since(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return time.time() - parse_duration(text)


def _store(db: Path | None, config: Path | None) -> SqliteStore:
    path = db or Path(cfgmod.load(config).store.path if config else cfgmod.Store().path)
    if not path.exists():
        raise UsageError(f"no store at {path} (the daemon creates it; or pass --db)")
    return SqliteStore(path)


def report(
    out: Path = typer.Option(..., "--out", help="directory for report.html and the PNGs"),
    since: str = typer.Option("", "--since", help="a duration back (24h) or a UTC ISO time"),
    db: Path | None = typer.Option(None, "--db", help="store to read (default: from config)"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    title: str = typer.Option("sipdeflect report", "--title"),
) -> None:
    """Write a self-contained HTML report with traffic, top attackers and timelines."""
    from sipdeflect.report.html import write_report  # noqa: PLC0415 - matplotlib is slow
    from sipdeflect.report.traffic import build_model  # noqa: PLC0415

    store = _store(db, config)
    t0 = _since(since)
    model = build_model(store.traffic(since=t0), store.events(since=t0), store.decisions(t0))
    path = write_report(model, out, title)
    typer.echo(f"wrote {path} ({len(model.sources)} sources)")


def abuse_report(
    address: str = typer.Argument(..., help="the attacking address"),
    out: Path = typer.Option(Path("."), "--out", help="directory for the two files"),
    db: Path | None = typer.Option(None, "--db", help="store to read (default: from config)"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    org: str = typer.Option("", "--org", help="your organisation (default: [report] org)"),
    contact: str = typer.Option("", "--contact", help="reply address (default: config)"),
    domain: str = typer.Option("", "--domain", help="your domain (default: config)"),
    own: list[str] = typer.Option([], "--own", help="extra own address to redact"),
) -> None:
    """Write ADDR.xarf.json (XARF v4, validated) and ADDR.email.txt, ready to send.

    Our own addresses (this host's, plus --own) and any credentials are redacted.
    """
    try:
        addr = str(ipaddress.ip_address(address))
    except ValueError:
        raise UsageError(f"not an IP address: {address!r}") from None
    cfg = cfgmod.load(config) if config else cfgmod.Config()
    who = Reporter(
        org or cfg.report.org, contact or cfg.report.contact, domain or cfg.report.domain
    )
    if not (who.org and who.contact and who.domain):
        raise UsageError(
            "reporter unknown: pass --org, --contact and --domain, or set [report] in the config"
        )
    store = _store(db, config)
    events = store.events(addr)
    traffic = store.traffic(source=addr)
    if not events and not traffic:
        raise UsageError(f"nothing recorded about {addr}")
    counts: Counter[str] = Counter()
    for row in traffic:
        counts[f"packets ({row.place})"] += row.packets
    for ev in events:
        counts[ev.kind] += 1
    times = [e.at for e in events] + [float(r.bucket) for r in traffic]
    from sipdeflect.hostaddr import own_addresses  # noqa: PLC0415 - netlink only here

    mine = [str(a) for a in own_addresses()] + list(own)
    ports = Counter(e.port for e in events if e.port)
    if not ports:
        raise UsageError(
            f"no source port recorded for {addr}; XARF requires one for an IP source (CGNAT)"
        )

    incident = Incident(
        source=addr,
        protocol="udp",
        first_seen=min(times),
        last_seen=max(times),
        counts=dict(counts),
        samples=[e.detail for e in events if e.kind == "sip"],
        decisions=store.history(addr),
        source_port=ports.most_common(1)[0][0],
        destination_port=cfg.sip.ports[0],
        own=mine,
    )
    xarf_doc, email = build(incident, who)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{addr}.xarf.json").write_text(json.dumps(xarf_doc, indent=2) + "\n")
    (out / f"{addr}.email.txt").write_text(email)
    typer.echo(f"wrote {out / (addr + '.xarf.json')} and {out / (addr + '.email.txt')}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("abuse-report")(abuse_report)
