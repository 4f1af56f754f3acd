"""Writes handmade/*.sip (exact bytes, CRLF line ends) and handmade/expected.json.

Legal but unusual messages that the capture tools do not produce: compact forms, IPv6,
several Vias (one field with commas and repeated fields), folded headers, odd whitespace,
PBX-style responses (Kamailio and Asterisk wording). Run: uv run python make_handmade.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "handmade"

V: dict[str, tuple[list[str], str, dict[str, object]]] = {
    "compact-register": (
        [
            "REGISTER sip:192.0.2.10 SIP/2.0",
            "v: SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bK-1;rport",
            "f: <sip:alice@192.0.2.10>;tag=a1",
            "t: <sip:alice@192.0.2.10>",
            "i: c1@203.0.113.7",
            "CSeq: 7 REGISTER",
            "m: <sip:alice@203.0.113.7:5070>",
            "l: 0",
        ],
        "",
        {
            "method": "REGISTER",
            "call_id": "c1@203.0.113.7",
            "cseq": [7, "REGISTER"],
            "vias": [["UDP", "203.0.113.7", 5070]],
            "from_user": "alice",
            "to_user": "alice",
            "from_tag": "a1",
            "to_tag": None,
            "user_agent": None,
            "body": 0,
        },
    ),
    "ipv6-options": (
        [
            "OPTIONS sip:100@[2001:db8::10]:5060 SIP/2.0",
            "Via: SIP/2.0/UDP [2001:db8::66]:5062;branch=z9hG4bK-v6;rport",
            'From: "Scan" <sip:100@[2001:db8::10]>;tag=6',
            "To: <sip:100@[2001:db8::10]>",
            "Call-ID: v6call",
            "CSeq: 1 OPTIONS",
            "User-Agent: sipcli/v1.8",
            "Content-Length: 0",
        ],
        "",
        {
            "method": "OPTIONS",
            "call_id": "v6call",
            "cseq": [1, "OPTIONS"],
            "vias": [["UDP", "[2001:db8::66]", 5062]],
            "from_user": "100",
            "to_user": "100",
            "from_tag": "6",
            "to_tag": None,
            "user_agent": "sipcli/v1.8",
            "body": 0,
            "ruri_host": "[2001:db8::10]",
            "ruri_port": 5060,
        },
    ),
    "multi-via-invite": (
        [
            "INVITE sip:200@192.0.2.10;transport=udp SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-p2, "
            "SIP/2.0/TCP 198.51.100.2;branch=z9hG4bK-p1",
            "Via: SIP/2.0/UDP 203.0.113.9:5099;received=203.0.113.99;branch=z9hG4bK-ua;rport=5099",
            "Max-Forwards: 68",
            'From: "Comma, Name" <sip:bob@example.invalid>;tag=b2',
            "To: sip:200@192.0.2.10",
            "Call-ID: mv@203.0.113.9",
            "CSeq: 314159 INVITE",
            "Contact: <sip:bob@203.0.113.9:5099>, <sip:bob@198.51.100.77>",
            "Content-Type: application/sdp",
            "Content-Length: 4",
        ],
        "v=0\n",
        {
            "method": "INVITE",
            "call_id": "mv@203.0.113.9",
            "cseq": [314159, "INVITE"],
            "vias": [
                ["UDP", "198.51.100.1", 5060],
                ["TCP", "198.51.100.2", None],
                ["UDP", "203.0.113.9", 5099],
            ],
            "from_user": "bob",
            "to_user": "200",
            "from_tag": "b2",
            "to_tag": None,
            "from_display": "Comma, Name",
            "user_agent": None,
            "body": 4,
            "contacts": 2,
        },
    ),
    "folded-odd-whitespace": (
        [
            "MESSAGE   sip:300@192.0.2.10  SIP/2.0",
            "Via :  SIP / 2.0 / UDP 192.0.2.50:5060 ;branch=z9hG4bK-ws ",
            "From:\t<sip:carol@192.0.2.50>;tag=c3",
            "To: <sip:300@192.0.2.10>",
            "Subject: a long subject",
            "  folded onto a second line",
            "Call-ID: ws1",
            "cseq: 2 MESSAGE",
            "User-Agent: VaxSIPUserAgent/3.1",
            "Content-Length: 5",
        ],
        "hello",
        {
            "method": "MESSAGE",
            "call_id": "ws1",
            "cseq": [2, "MESSAGE"],
            "vias": [["UDP", "192.0.2.50", 5060]],
            "from_user": "carol",
            "to_user": "300",
            "from_tag": "c3",
            "to_tag": None,
            "user_agent": "VaxSIPUserAgent/3.1",
            "body": 5,
            "subject": "a long subject folded onto a second line",
        },
    ),
    "kamailio-401": (
        [
            "SIP/2.0 401 Unauthorized",
            "Via: SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bK-1;rport=5070;received=203.0.113.7",
            "From: <sip:alice@192.0.2.10>;tag=a1",
            "To: <sip:alice@192.0.2.10>;tag=1c8ac47a6f9c8b6b0bcc3d4a2f1f4a1b.0b2d",
            "Call-ID: c1@203.0.113.7",
            "CSeq: 7 REGISTER",
            'WWW-Authenticate: Digest realm="192.0.2.10", nonce="Z2UcwGdlG5S9Nqdk", qop="auth"',
            "Server: kamailio (5.6.3 (x86_64/linux))",
            "Content-Length: 0",
        ],
        "",
        {
            "status": 401,
            "reason": "Unauthorized",
            "call_id": "c1@203.0.113.7",
            "cseq": [7, "REGISTER"],
            "vias": [["UDP", "203.0.113.7", 5070]],
            "from_user": "alice",
            "to_user": "alice",
            "from_tag": "a1",
            "to_tag": "1c8ac47a6f9c8b6b0bcc3d4a2f1f4a1b.0b2d",
            "user_agent": None,
            "body": 0,
        },
    ),
    "asterisk-404": (
        [
            "SIP/2.0 404 Not Found",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-4;received=198.51.100.23;"
            "rport=5060",
            'From: "1001" <sip:1001@192.0.2.10>;tag=3130',
            "To: <sip:1001@192.0.2.10>;tag=as5d1b2c3e",
            "Call-ID: 9f8e7d",
            "CSeq: 1 INVITE",
            "Server: Asterisk PBX 18.10.0",
            "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO",
            "Supported: replaces, timer",
            "Content-Length: 0",
        ],
        "",
        {
            "status": 404,
            "reason": "Not Found",
            "call_id": "9f8e7d",
            "cseq": [1, "INVITE"],
            "vias": [["UDP", "198.51.100.23", 5060]],
            "from_user": "1001",
            "to_user": "1001",
            "from_tag": "3130",
            "to_tag": "as5d1b2c3e",
            "user_agent": None,
            "body": 0,
            "allow": 9,
        },
    ),
    "bare-lf-lowercase": (
        [
            "register sip:192.0.2.10 SIP/2.0",
            "via: SIP/2.0/UDP 192.0.2.77:5060;branch=z9hG4bK-lf",
            "from: <sip:9999@192.0.2.10>;tag=lf",
            "to: <sip:9999@192.0.2.10>",
            "call-id: lf1",
            "cseq: 1 register",
            "user-agent: friendly-scanner",
        ],
        "",
        {
            "method": "register",
            "call_id": "lf1",
            "cseq": [1, "register"],
            "vias": [["UDP", "192.0.2.77", 5060]],
            "from_user": "9999",
            "to_user": "9999",
            "from_tag": "lf",
            "to_tag": None,
            "user_agent": "friendly-scanner",
            "body": 0,
            "line_end": "\n",
        },
    ),
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    expected = {}
    for name, (lines, body, exp) in V.items():
        eol = str(exp.pop("line_end", "\r\n"))
        (OUT / f"{name}.sip").write_bytes((eol.join(lines) + eol + eol + body).encode())
        expected[name] = exp
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
