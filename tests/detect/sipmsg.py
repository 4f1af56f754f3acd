"""SIP message builders for detector tests (the shapes SIPVicious and Kamailio send)."""

from __future__ import annotations


def register(
    user: str,
    call_id: str,
    cseq: int,
    *,
    nonce: str | None = None,
    ua: str = "friendly-scanner",
    host: str = "203.0.113.1",
) -> bytes:
    auth = (
        ""
        if nonce is None
        else f'Authorization: Digest username="{user}",realm="lab",nonce="{nonce}",'
        f'uri="sip:{host}",response="00000000000000000000000000000000",algorithm=MD5\r\n'
    )
    return (
        f"REGISTER sip:{host} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK-{call_id}-{cseq};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f'To: "{user}" <sip:{user}@{host}>\r\n'
        f'From: "{user}" <sip:{user}@{host}>;tag=abc{call_id}\r\n'
        f"User-Agent: {ua}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{auth}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def invite(ext: str, call_id: str, host: str = "203.0.113.1") -> bytes:
    return (
        f"INVITE sip:{ext}@{host} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK-{call_id};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"To: <sip:{ext}@{host}>\r\n"
        f"From: <sip:100@{host}>;tag=x{call_id}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def response(
    status: int,
    reason: str,
    user: str,
    call_id: str,
    cseq: int,
    *,
    nonce: str | None = None,
    method: str = "REGISTER",
    host: str = "203.0.113.1",
) -> bytes:
    chal = (
        ""
        if nonce is None
        else f'WWW-Authenticate: Digest realm="lab", nonce="{nonce}", qop="auth"\r\n'
    )
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK-{call_id}-{cseq};rport=5062\r\n"
        f'To: "{user}" <sip:{user}@{host}>;tag=srv\r\n'
        f'From: "{user}" <sip:{user}@{host}>;tag=abc{call_id}\r\n'
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{chal}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
