# Small frozen values for structured header fields (RFC 3261 19-20): URIs, name-addrs,
# Via and CSeq. Parameters keep wire order as (lower-case name, value or None).
from __future__ import annotations

from dataclasses import dataclass

Params = tuple[tuple[str, str | None], ...]


def text(value: bytes) -> str:
    """Wire bytes as text for display and comparison; never raises."""
    return value.decode("utf-8", "replace")


def param(params: Params, name: str) -> str | None:
    """Value of a parameter (lower-case name); '' when present without a value."""
    for k, v in params:
        if k == name:
            return "" if v is None else v
    return None


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:/sips:/tel: URI (RFC 3261 19.1). IPv6 hosts are kept in brackets."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: Params
    headers: str | None

    def __str__(self) -> str:
        s = f"{self.scheme}:"
        if self.user is not None:
            s += self.user
            if self.password is not None:
                s += f":{self.password}"
            s += "@"
        s += self.host
        if self.port is not None:
            s += f":{self.port}"
        for k, v in self.params:
            s += f";{k}" if v is None else f";{k}={v}"
        if self.headers is not None:
            s += f"?{self.headers}"
        return s


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact value: optional display name, URI, header parameters (tag...)."""

    display: str | None
    uri: SipUri
    params: Params

    @property
    def tag(self) -> str | None:
        return param(self.params, "tag")


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 20.42) with its parameters in order."""

    transport: str
    host: str
    port: int | None
    params: Params

    @property
    def branch(self) -> str | None:
        return param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return param(self.params, "received")

    @property
    def maddr(self) -> str | None:
        return param(self.params, "maddr")

    @property
    def rport(self) -> int | bool | None:
        """None: absent; True: present without value (RFC 3581 asks to fill it); int: filled."""
        v = param(self.params, "rport")
        if v is None:
            return None
        return int(v) if v.isdigit() else True


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str
