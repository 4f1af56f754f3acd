# Frozen SIP messages. A message keeps its raw bytes and its header fields as raw byte
# values; structured views (Via, From/To, CSeq, URI) are parsed only when asked for, because
# the decoy's hot path needs almost none of them. Structured accessors raise only
# SipParseError.
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sipdeflect.sip.fields import (
    COMPACT,
    LIST_HEADERS,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_list,
)
from sipdeflect.sip.values import CSeq, NameAddr, SipUri, Via, text


def _canon(name: str) -> str:
    low = name.lower()
    return COMPACT.get(low, low)


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields in wire order as (canonical lower-case long name, raw value bytes).

    Compact forms are expanded (``v`` -> ``via``), folded lines unfolded, values stripped.
    Repeated fields stay separate entries, in order. ``index`` maps each name to its first
    value, so lookups are one dict access.
    """

    fields: tuple[tuple[str, bytes], ...]
    index: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.index and self.fields:
            self.index.update(reversed(self.fields))  # first occurrence wins

    @classmethod
    def of(cls, *pairs: tuple[str, bytes]) -> Headers:
        """Headers from (name, value) pairs; names may be any case or compact."""
        return cls(tuple((canonical_name(n.encode()), v) for n, v in pairs))

    def get(self, name: str) -> bytes | None:
        """The first field's value, or None. ``name`` is case-insensitive; compact ok."""
        v = self.index.get(name)
        if v is None:
            canon = _canon(name)
            if canon != name:
                v = self.index.get(canon)
        return v

    def get_all(self, name: str) -> list[bytes]:
        """Every value of a header, list headers split on top-level commas (RFC 3261 7.3.1)."""

        name = _canon(name)
        out: list[bytes] = []
        for k, v in self.fields:
            if k == name:
                if name in LIST_HEADERS:
                    out.extend(split_list(v))
                else:
                    out.append(v)
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)


@dataclass(frozen=True, slots=True)
class _Message:
    headers: Headers
    body: bytes
    raw: bytes

    # Structured views, computed on access. They raise only SipParseError.
    @property
    def vias(self) -> tuple[Via, ...]:
        return tuple(parse_via(v) for v in self.headers.get_all("via"))

    @property
    def from_(self) -> NameAddr:
        return _name_addr(self.headers, "from")

    @property
    def to(self) -> NameAddr:
        return _name_addr(self.headers, "to")

    @property
    def call_id(self) -> str:
        return text(self.headers.get("call-id") or b"")

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("cseq") or b"")

    @property
    def user_agent(self) -> str | None:
        v = self.headers.get("user-agent")
        return None if v is None else text(v)


def _name_addr(headers: Headers, name: str) -> NameAddr:
    return parse_name_addr(headers.get(name) or b"")


@dataclass(frozen=True, slots=True)
class Request(_Message):
    method: str
    uri: str
    version: str = "SIP/2.0"

    @property
    def request_uri(self) -> SipUri:
        return parse_uri(self.uri.encode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Response(_Message):
    status: int
    reason: str
    version: str = "SIP/2.0"
