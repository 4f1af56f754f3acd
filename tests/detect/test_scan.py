"""LogFormat.scan (markers searched over a whole buffer, hits sorted as packed ints) must
give exactly what parse() gives line by line, on hostile text too: several markers and
rules on one line, a marker repeated, markers that contain other markers, CRLF endings,
chunk edges and a last line without its newline."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.sources.chunks import read_chunks
from tests.detect.test_injection import CASES

CTX = Context(
    year=2024, default=datetime(2024, 6, 1, tzinfo=UTC), now=datetime(2024, 6, 1, tzinfo=UTC)
)
KAMAILIO = Path(__file__).parent.parent / "vectors" / "logs" / "kamailio" / "lab.log"
SEEDS = [line for _, line, _ in CASES] + [
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from '<sip:7@h>' failed for "
    "'198.51.100.7:5060' - Wrong password",
    "[2024-05-01 10:00:02] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from "
    "'<sip:8@h>' failed for '[2001:db8::8]:5060' (callid: c) - No matching endpoint found",
    "[2024-05-01 10:00:03] NOTICE[1][C-1] chan_sip.c: Call from '' (TCP:198.51.100.9:5060) to "
    "extension '1' rejected because extension not found in context 'x'.",
    '[2024-05-01 10:00:04] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword",'
    'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.3/5060",Challenge="a",'
    'ReceivedChallenge="a"',
    "[2024-05-01 10:00:05] NOTICE[1] manager.c: 198.51.100.4 failed to authenticate as 'x'",
    "[2024-05-01 10:00:06] NOTICE[1] chan_iax2.c: Host 198.51.100.5 failed MD5 "
    "authentication for 'x' (1 != 2)",
    "2024-05-01 10:00:07.000000 [WARNING] sofia_reg.c:1 Can't find user [1@h] from 198.51.100.6",
    "[2024-05-01 10:00:08] VERBOSE[1] pbx.c: nothing to see",
    *KAMAILIO.read_text().splitlines()[:40],
]


def mutate(rnd: random.Random, line: str) -> str:
    markers = [m for f in FORMATS.values() for m in f.markers]
    for _ in range(rnd.randrange(4)):
        i = rnd.randrange(len(line) + 1)
        line = line[:i] + rnd.choice([*markers, line[i:], "\r"]) + line[i:]
    return line + rnd.choice(["", "", "\r"])


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_scan_gives_what_parse_gives_line_by_line(name: str, tmp_path: Path) -> None:
    fmt = FORMATS[name]
    rnd = random.Random(name)
    lines = [mutate(rnd, rnd.choice(SEEDS)) for _ in range(3000)]
    text = "\n".join(lines)  # no final newline
    want = [(i + 1, fmt.parse(x.rstrip("\r"), CTX)) for i, x in enumerate(lines)]
    want = [(n, ev) for n, ev in want if ev is not None]
    assert len(want) > 50
    assert list(fmt.scan(text, CTX)) == want
    path = tmp_path / "log"
    path.write_bytes(text.encode())
    for chunk in (61, 4096):
        got, lineno = [], 1
        for buf in read_chunks(path, chunk=chunk):
            got += fmt.scan(buf, CTX, lineno)
            lineno += buf.count("\n")
        assert got == want
