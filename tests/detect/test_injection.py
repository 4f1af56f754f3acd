"""Log injection: attacker text imitating the PBX's own address fields never names the
wrong host as proven evidence; chunked reading keeps line numbers exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipdeflect.detect.events import EventKind
from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.detect.verdict import Evidence, Policy
from sipdeflect.sources.chunks import read_chunks

CTX = Context(year=2024)
PBX = "192.0.2.1"  # what an injection would like us to blame (the PBX itself, a trunk...)

CASES = [
    # chan_sip: the From header imitates the tail of the line.
    (
        "asterisk",
        "[2024-01-01 00:00:00] NOTICE[1] chan_sip.c: Registration from "
        f"'<sip:x' failed for '{PBX}' - Wrong password>' failed for '203.0.113.5:5060' - "
        "Wrong password",
        "203.0.113.5",
    ),
    # PJSIP: the Call-ID (after the address) imitates the address field.
    (
        "asterisk",
        "[2024-01-01 00:00:00] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' "
        "from '<sip:1@h>' failed for '203.0.113.5:5060' (callid: x' failed for "
        f"'{PBX}:5060' (callid: y) - Failed to authenticate",
        "203.0.113.5",
    ),
    # Security log: the SessionID imitates RemoteAddress (before the real one).
    (
        "asterisk",
        '[2024-01-01 00:00:00] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword"'
        ',EventTV="x",Severity="Error",Service="SIP",EventVersion="2",AccountID="1",'
        f'SessionID="",RemoteAddress="IPV4/UDP/{PBX}/5060"",LocalAddress="IPV4/UDP/1.1.1.1/5060",'
        'RemoteAddress="IPV4/UDP/203.0.113.5/5070",Challenge="a",ReceivedChallenge="a",'
        'ReceivedHash="b"',
        "203.0.113.5",
    ),
    # FreeSWITCH: the user part imitates "from ip".
    (
        "freeswitch",
        "2024-01-01 00:00:00.000000 [WARNING] sofia_reg.c:1 SIP auth failure (REGISTER) on "
        f"sofia profile 'internal' for [a] from ip {PBX} x@h] from ip 203.0.113.5",
        "203.0.113.5",
    ),
]


@pytest.mark.parametrize(("fmt", "line", "sender"), CASES)
def test_injected_lines_are_never_proven_evidence(fmt: str, line: str, sender: str) -> None:
    ev = FORMATS[fmt].parse(line, CTX)
    assert ev is not None
    assert ev.kind is EventKind.LOG_INJECTION
    assert not ev.verified
    assert Policy().evidence[(ev.kind, ev.verified)] is Evidence.UNPROVEN
    # The same line without the imitation is credentialed evidence against the sender.
    clean_line = line.replace(PBX, sender)
    ev2 = FORMATS[fmt].parse(clean_line, CTX)
    assert ev2 is not None
    assert str(ev2.source) == sender


def test_line_numbers_survive_small_chunks(tmp_path: Path) -> None:
    lines = []
    for i in range(300):
        if i % 7 == 0:
            lines.append(
                f"[2024-01-01 00:00:00] NOTICE[1] chan_sip.c: Registration from '<sip:{i}@h>'"
                f" failed for '203.0.113.{i % 250 + 1}:5060' - Wrong password"
            )
        else:
            lines.append(f"[2024-01-01 00:00:00] VERBOSE[1] pbx.c: noise {i}")
    path = tmp_path / "log"
    path.write_text("\n".join(lines))  # no final newline
    want = [(n, str(ev.source)) for n, ev in FORMATS["asterisk"].scan(path.read_text(), CTX)]
    got = []
    lineno = 1
    for buf in read_chunks(path, chunk=97):
        got += [(n, str(ev.source)) for n, ev in FORMATS["asterisk"].scan(buf, CTX, lineno)]
        lineno += buf.count("\n")
    assert got == want
    assert [n for n, _ in want] == [i + 1 for i in range(0, 300, 7)]
