"""Hypothesis strategies for well-formed SIP requests, built independently of the parser."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=20)
users = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
    lambda g: "[" + ":".join(f"{x:x}" for x in g) + "]"
)
hostnames = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8), min_size=1, max_size=3
).map(".".join)
hosts = st.one_of(ipv4, ipv6, hostnames)
ports = st.one_of(st.none(), st.integers(1, 65535))
methods = st.sampled_from(
    [
        "REGISTER",
        "INVITE",
        "OPTIONS",
        "BYE",
        "CANCEL",
        "MESSAGE",
        "SUBSCRIBE",
        "NOTIFY",
        "INFO",
        "PUBLISH",
        "X-CUSTOM",
    ]
)
LONG_TO_COMPACT = {
    "Via": "v",
    "From": "f",
    "To": "t",
    "Call-ID": "i",
    "Contact": "m",
    "Content-Length": "l",
    "User-Agent": "User-Agent",
    "CSeq": "CSeq",
}


@dataclass(frozen=True)
class GenRequest:
    method: str
    ruri_user: str
    ruri_host: str
    via_host: str
    via_port: int | None
    branch: str
    rport: bool
    from_user: str
    from_tag: str
    to_tag: str | None
    call_id: str
    cseq: int
    user_agent: str | None
    body: bytes
    compact: bool
    ws: str  # whitespace after the colon

    def encode(self) -> bytes:
        def name(n: str) -> str:
            return LONG_TO_COMPACT[n] if self.compact else n

        hp = self.via_host + (f":{self.via_port}" if self.via_port else "")
        via = f"SIP/2.0/UDP {hp};branch=z9hG4bK-{self.branch}" + (";rport" if self.rport else "")
        to = f"<sip:{self.ruri_user}@{self.ruri_host}>" + (
            f";tag={self.to_tag}" if self.to_tag else ""
        )
        lines = [
            f"{self.method} sip:{self.ruri_user}@{self.ruri_host} SIP/2.0",
            f"{name('Via')}:{self.ws}{via}",
            f"{name('From')}:{self.ws}<sip:{self.from_user}@{self.ruri_host}>;tag={self.from_tag}",
            f"{name('To')}:{self.ws}{to}",
            f"{name('Call-ID')}:{self.ws}{self.call_id}",
            f"CSeq:{self.ws}{self.cseq} {self.method}",
        ]
        if self.user_agent is not None:
            lines.append(f"User-Agent:{self.ws}{self.user_agent}")
        lines.append(f"{name('Content-Length')}:{self.ws}{len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


requests = st.builds(
    GenRequest,
    method=methods,
    ruri_user=users,
    ruri_host=hosts,
    via_host=hosts,
    via_port=ports,
    branch=tokens,
    rport=st.booleans(),
    from_user=users,
    from_tag=tokens,
    to_tag=st.one_of(st.none(), tokens),
    call_id=tokens,
    cseq=st.integers(0, 2**31 - 1),
    user_agent=st.one_of(
        st.none(),
        st.sampled_from(
            ["friendly-scanner", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "Z 5.5", "pplsip"]
        ),
    ),
    body=st.binary(max_size=64),
    compact=st.booleans(),
    ws=st.sampled_from([" ", "", "\t", "  "]),
)
