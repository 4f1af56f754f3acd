# TOML -> validated, typed Config, checked before any I/O. The pydantic models below are the
# one place where defaults and their meaning are written down: `sipdeflect config example`
# renders them as a commented TOML file (etc/sipdeflect.toml is that output), and
# `sipdeflect config check` reports each error with its field and line.
from __future__ import annotations

import ipaddress
import textwrap
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sipdeflect.control import DEFAULT_SOCKET
from sipdeflect.decisions import Level, parse_target
from sipdeflect.detect.swarm import SwarmPolicy
from sipdeflect.detect.verdict import Policy as VerdictPolicy
from sipdeflect.duration import format_duration, parse_duration
from sipdeflect.engine import Policy
from sipdeflect.errors import ConfigError, UsageError
from sipdeflect.firewall.model import DEFAULT_DECOY_PORT, DEFAULT_SIP_PORTS
from sipdeflect.fleet.rules import Rules


def _duration(v: Any) -> float:
    try:
        return parse_duration(v)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sip(_Section):
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        list(DEFAULT_SIP_PORTS),
        description="the PBX's SIP ports (UDP and TCP) that are watched and deflected",
    )


class Decoy(_Section):
    port: int = Field(
        DEFAULT_DECOY_PORT,
        ge=1,
        le=65535,
        description="local port the decoy listens on; deflected SIP goes here",
    )
    reply_budget: float = Field(
        20.0,
        ge=0,
        description="replies per second to one destination (0: unlimited); "
        "caps what spoofed requests can bounce at a victim",
    )
    pcap: str = Field(
        "",
        description="also write every message the decoy receives to this pcap file "
        "(Wireshark, tshark, sngrep); empty: off",
    )


class Firewall(_Section):
    backend: Literal["nftables", "iptables", "pf", "dry-run"] = Field(
        "nftables", description="nftables | iptables | pf | dry-run"
    )
    table: str = Field(
        "sipdeflect",
        pattern=r"^[a-z][a-z0-9_]{0,23}$",
        description="name of sipdeflect's own table/chains/anchor",
    )


class LogSource(_Section):
    path: str = Field(description="log file to follow, or journal:UNIT for the systemd journal")
    format: Literal["auto", "asterisk", "freeswitch", "kamailio"] = Field(
        "auto", description="auto | asterisk | freeswitch | kamailio"
    )


class Detect(_Section):
    logs: list[LogSource] = Field([], description="PBX logs to follow ([[detect.logs]] tables)")
    wire: bool = Field(True, description="watch SIP on the wire to the PBX's ports")
    probe_at: int = Field(
        4,
        ge=0,
        description="forgeable (UDP) evidence weight in a minute that starts a probe "
        "(a short deflect; 0 = never)",
    )
    trust_for: Duration = Field(
        86400.0,
        description="after the PBX accepts a source's login, forgeable evidence "
        "against it is ignored this long",
    )

    account_sources: int = Field(
        10,
        ge=2,
        description="distributed brute force: distinct addresses failing a login (after the "
        "PBX's challenge) on one account within swarm_window put it under attack; then a "
        "failure there from an address that never logged in is deflected at once, and a "
        "request for it is probed",
    )
    prefix_sources: int = Field(
        10,
        ge=0,
        description="the same per /24 (IPv4) or /48 (IPv6) of the failing addresses (0 = off)",
    )
    swarm_window: Duration = Field(
        600.0, description="window of the two counts above; an attack lasts this long after"
    )

    def to_verdict_policy(self) -> VerdictPolicy:
        swarm = SwarmPolicy(
            account_sources=self.account_sources,
            prefix_sources=self.prefix_sources,
            window=self.swarm_window,
            login_for=self.trust_for,
        )
        return VerdictPolicy(probe_at=self.probe_at, trust_for=self.trust_for, swarm=swarm)


class PolicySection(_Section):
    act_at: Literal["watch", "suspect", "attacker"] = Field(
        "attacker", description="level at which a source is deflected: watch | suspect | attacker"
    )
    quiet_after: Duration = Field(
        15.0,
        description="silence in the decoy after which a "
        "deflected source counts as gone and is blocked",
    )
    max_deflect: Duration = Field(
        300.0,
        description="time in the decoy after which a source that keeps sending is blocked anyway",
    )
    block_base: Duration = Field(3600.0, description="first block's length")
    block_factor: float = Field(4.0, ge=1, description="each repeat offence multiplies the block")
    block_max: Duration = Field(30 * 86400.0, description="longest block")
    spread: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="+- fraction that block lengths are "
        "spread by, so mass bans do not lapse at once",
    )
    max_sources: int = Field(100_000, ge=100, description="source records kept in memory")
    probe_for: Duration = Field(
        10.0, description="longest probe; a source that keeps sending through it is released"
    )
    probe_every: Duration = Field(3600.0, description="at most one probe per source this often")

    def to_policy(self) -> Policy:
        return Policy(
            act_at=Level[self.act_at.upper()],
            quiet_after=self.quiet_after,
            max_deflect=self.max_deflect,
            block_base=self.block_base,
            block_factor=self.block_factor,
            block_max=self.block_max,
            spread=self.spread,
            max_sources=self.max_sources,
            probe_for=self.probe_for,
            probe_every=self.probe_every,
        )


class Allow(_Section):
    addresses: list[str] = Field(
        [],
        description="addresses and prefixes never deflected or "
        "blocked (your SIP trunks, offices, monitoring)",
    )
    own_addresses: bool = Field(True, description="also allowlist every address of this host")

    @field_validator("addresses")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                parse_target(item, widest_v4=0, widest_v6=0)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [parse_target(a, widest_v4=0, widest_v6=0) for a in self.addresses]


class Store(_Section):
    path: str = Field("/var/lib/sipdeflect/state.db", description="SQLite database (WAL)")
    retention: Duration = Field(30 * 86400.0, description="history older than this is pruned")
    counters_every: Duration = Field(
        10.0,
        description="how often the block set's per-element counters are read into the "
        "traffic history and metrics (0: never)",
    )


class Control(_Section):
    socket: str = Field(DEFAULT_SOCKET, description="unix socket for the CLI (root only)")


class Metrics(_Section):
    listen: str = Field("", description='Prometheus endpoint, e.g. "127.0.0.1:9560"; empty: off')


class ReportSection(_Section):
    org: str = Field("", description="your organisation, as abuse reports name it")
    contact: str = Field("", description="the address abuse desks should reply to")
    domain: str = Field("", description="your domain, for the XARF reporter block")


class BorderSection(_Section):
    enabled: bool = Field(
        False,
        description="announce qualifying blocks upstream over BGP (docs/border.md); "
        "blocks only, never deflects: the decoy needs the packets",
    )
    mode: Literal["rtbh", "flowspec", "both"] = Field(
        "rtbh",
        description="rtbh: the source's /32 with the communities (source-based RTBH, "
        "the router needs strict uRPF) | flowspec: discard UDP from it to the SIP ports "
        "(IPv4) | both",
    )
    evidence: list[Literal["quiet", "quit", "deflect-timeout", "manual"]] = Field(
        ["quiet", "quit"],
        description="blocks that qualify: quiet (gave up in the decoy), quit (quit on a "
        "probe's answer), deflect-timeout (kept sending in the decoy), manual (operator)",
    )
    max_prefixes: int = Field(100, ge=1, description="most prefixes announced at once")
    widest_v4: int = Field(32, ge=8, le=32, description="widest IPv4 prefix announced")
    widest_v6: int = Field(128, ge=32, le=128, description="widest IPv6 prefix announced")
    communities: list[str] = Field(
        ["65535:666"],
        description="communities on RTBH routes (65535:666 is BLACKHOLE, RFC 7999)",
    )
    next_hop: str = Field("self", description='next hop of RTBH routes: "self" or an address')
    peer: str = Field("", description="the upstream router's address (BGP neighbor)")
    peer_as: int = Field(0, ge=0, le=4294967295, description="the router's AS")
    local_address: str = Field("", description="this host's address for the session")
    local_as: int = Field(0, ge=0, le=4294967295, description="this host's AS")
    router_id: str = Field("", description="BGP router id (empty: local_address)")
    speaker: str = Field("exabgp", description="the ExaBGP executable run as the speaker")
    workdir: str = Field(
        "/run/sipdeflect/border", description="ExaBGP's config, command FIFO and log"
    )

    @field_validator("communities")
    @classmethod
    def _communities(cls, v: list[str]) -> list[str]:
        for c in v:
            parts = c.split(":")
            if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
                raise ValueError(f"{c!r} is not a community (ASN:VALUE or large A:B:C)")
        return v

    @field_validator("peer", "local_address", "router_id")
    @classmethod
    def _address(cls, v: str) -> str:
        if v:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an IP address") from None
        return v

    @field_validator("next_hop")
    @classmethod
    def _next_hop(cls, v: str) -> str:
        return v if v == "self" else cls._address(v)

    @model_validator(mode="after")
    def _session(self) -> BorderSection:
        session = (self.peer, self.peer_as, self.local_address, self.local_as)
        if self.enabled and not all(session):
            raise ValueError("enabled needs peer, peer_as, local_address and local_as")
        return self


class Fleet(_Section):
    enabled: bool = Field(
        False, description="share decisions with other nodes through PostgreSQL (docs/fleet.md)"
    )
    dsn: str = Field(
        "",
        description='libpq connection string, URI ("postgresql://sipdeflect@db/fleet'
        '?sslmode=verify-full") or key/value ("host=db dbname=fleet user=sipdeflect")',
    )
    password_file: str = Field(
        "", description="read the password from this file (first line); empty: not used"
    )
    password_env: str = Field(
        "", description="read the password from this environment variable; empty: not used"
    )
    tls: dict[str, str] = Field(
        {},
        description="libpq TLS keywords passed through as they are (sslmode, sslrootcert, "
        "sslcert, sslkey, sslcrl, ...)",
    )
    node: str = Field(
        "",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})?$",
        description="this node's name in the fleet; empty: the host name",
    )
    share: list[Literal["attacker", "suspect", "watch", "quit", "operator"]] = Field(
        ["attacker", "quit", "operator"],
        description="decisions this node publishes, by how they were proven: attacker "
        "(a credentialed failure after our challenge), quit (left on the decoy's answer "
        "in a probe), operator (block/deflect from the CLI), suspect/watch (weaker "
        "detection levels); releases of what was shared are always published",
    )
    accept: list[Literal["attacker", "suspect", "watch", "quit", "operator"]] = Field(
        ["attacker", "quit", "operator"],
        description="shared decisions this node enforces (as blocks), by the same names",
    )
    accept_from: list[str] = Field(
        [], description="nodes whose decisions are accepted; empty: every other node"
    )
    max_ttl: Duration = Field(
        30 * 86400.0, description="shared blocks longer than this are refused as hostile"
    )
    widest_v4: int = Field(24, ge=0, le=32, description="widest IPv4 prefix accepted")
    widest_v6: int = Field(48, ge=0, le=128, description="widest IPv6 prefix accepted")
    outbox: str = Field(
        "",
        description="SQLite file queueing what is not yet published (a partition) and "
        "how far this node has read; empty: fleet.db next to [store] path",
    )
    max_queue: int = Field(
        100_000, ge=100, description="decisions queued while the database is away; oldest go"
    )

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        if v:
            from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - only with a DSN

            try:
                conninfo_to_dict(v)
            except Exception as exc:
                raise ValueError(f"not a libpq connection string: {exc}") from None
        return v

    @model_validator(mode="after")
    def _complete(self) -> Fleet:
        if self.enabled and not self.dsn:
            raise ValueError("fleet.enabled needs fleet.dsn")
        return self

    def rules(self, node: str) -> Rules:
        return Rules(
            node=node,
            share=frozenset(self.share),
            accept=frozenset(self.accept),
            accept_from=frozenset(self.accept_from),
            max_ttl=self.max_ttl,
            widest_v4=self.widest_v4,
            widest_v6=self.widest_v6,
        )


class Config(_Section):
    sip: Sip = Sip()
    decoy: Decoy = Decoy()
    firewall: Firewall = Firewall()
    detect: Detect = Detect()
    policy: PolicySection = PolicySection()
    allow: Allow = Allow()
    store: Store = Store()
    control: Control = Control()
    metrics: Metrics = Metrics()
    report: ReportSection = ReportSection()
    border: BorderSection = BorderSection()
    fleet: Fleet = Fleet()


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line of a field in the TOML text: the key after its [section] header."""
    lines = text.splitlines()
    section, key = [str(p) for p in loc if isinstance(p, str)][:-1], str(loc[-1]) if loc else ""
    start = 0
    if section:
        header = ".".join(section)
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped in (f"[{header}]", f"[[{header}]]"):
                start = i
                break
    for i in range(start, len(lines)):
        left = lines[i].split("=", 1)[0].strip()
        if "=" in lines[i] and left == key:
            return i + 1
    return start + 1 if section else None


def check_text(text: str, name: str = "config") -> tuple[Config | None, list[str]]:
    """Validate TOML text; returns (config, []) or (None, ["name:line: field: message", ...])."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{name}: TOML syntax: {exc}"]
    try:
        return Config.model_validate(data), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc)
            line = _line_of(text, loc)
            where = f"{name}:{line}" if line else name
            errors.append(f"{where}: {field}: {err['msg']}")
        return None, errors


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    cfg, errors = check_text(text, str(p))
    if cfg is None:
        raise ConfigError("; ".join(errors))
    return cfg


def example() -> str:
    """The default configuration as commented TOML, generated from the models."""
    out = [
        "# sipdeflect configuration. Every value shown is the default;",
        "# `sipdeflect config check FILE` validates a file.",
        "",
    ]
    for section_name, section_field in Config.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        out.append(f"[{section_name}]")
        for key, f in model.model_fields.items():
            if f.description:
                out += [f"# {line}" for line in textwrap.wrap(f.description, 86)]
            default = f.get_default(call_default_factory=True)
            if key == "logs":
                out += [
                    "# [[detect.logs]]",
                    '# path = "/var/log/asterisk/full"',
                    '# format = "auto"',
                ]
                continue
            out.append(f"{key} = {_toml_value(key, default)}")
        out.append("")
    return "\n".join(out)


def _toml_value(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and key in {
        "quiet_after",
        "max_deflect",
        "block_base",
        "block_max",
        "retention",
        "max_ttl",
    }:
        return f'"{format_duration(v)}"'
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(key, x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(k, x)}" for k, x in v.items()) + "}"
    return repr(v)
