"""Properties of the fast paths in LogFormat.scan and the compiled rules, on generated
text: a buffer scan gives exactly what parse() gives line by line (hostile lines too:
address fields repeated, CRLF, IPv6, brackets), the per-Context stamp cache never changes
a result, and the address field's quick split agrees with split_hostport()."""

from __future__ import annotations

import random
import re
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from bench.bench_logscan import make_log
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sipdeflect.detect.events import address
from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.detect.logs.asterisk import _HOSTPORT
from sipdeflect.detect.logs.base import _port, split_hostport
from tests.detect.test_scan import SEEDS

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def fresh() -> Context:
    return Context(year=2024, default=NOW, now=NOW)


def per_line(name: str, text: str, ctx: Context) -> list[tuple[int, object]]:
    fmt = FORMATS[name]
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        ev = fmt.parse(line.rstrip("\r"), ctx)
        if ev is not None:
            out.append((i, ev))
    return out


def assert_scan_is_parse(name: str, text: str) -> None:
    want = per_line(name, text, fresh())
    assert list(FORMATS[name].scan(text, fresh())) == want
    # and the C scanner, when built, on the same text as bytes
    data = text.encode("utf-8", "surrogatepass")
    assert list(FORMATS[name].scan_bytes(data, fresh())) == want
    # One Context per line: nothing cached from another line.
    lines = text.split("\n")
    alone = [(n, FORMATS[name].parse(lines[n - 1].rstrip("\r"), fresh())) for n, _ in want]
    assert alone == want


# Pieces that real and hostile lines are made of: every marker, address fields with
# IPv4, IPv6, brackets and ports, the stamp forms, separators and line ends.
HOSTS = ["198.51.100.7", "203.0.113.9:5060", "[2001:db8::1]:5061", "2001:db8::2", "[192.0.2.8]"]
PIECES = sorted(
    {m for f in FORMATS.values() for m in f.markers}
    | {f"' failed for '{h}' - " for h in HOSTS}
    | {f"' failed for '{h}' (callid: " for h in HOSTS}
    | {f'RemoteAddress="IPV4/UDP/{h}/5060"' for h in HOSTS[:2]}
    | {f"({h}) to extension '" for h in HOSTS}
    | {f"from ip {h}" for h in HOSTS}
    | {f"] from {h}" for h in HOSTS}
    | {f"src={h} port=5060 " for h in HOSTS}
    | {"Wrong password", "Failed to authenticate", "No matching peer found", ".", "'", '"'}
    | {"[2024-05-01 10:00:00] ", "Jan  2 03:04:05 ", "2024-05-01 10:00:07.000000 ", "\r", " "}
    | {'SecurityEvent="InvalidPassword",', ',Challenge="a",ReceivedChallenge="a"', "x\u2028"}
)
line_st = st.one_of(
    st.sampled_from(SEEDS),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join),
    st.tuples(st.sampled_from(SEEDS), st.sampled_from(PIECES), st.integers(0, 400)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
)


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line_st, min_size=1, max_size=40), final_newline=st.booleans())
def test_scan_of_generated_lines_is_parse_line_by_line(
    name: str, lines: list[str], final_newline: bool
) -> None:
    assert_scan_is_parse(name, "\n".join(lines) + ("\n" if final_newline else ""))


def test_scan_of_the_bench_log_is_parse_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "asterisk.log"
    for attack in (0.5, 0.1):
        make_log(path, 3000, attack, seed=11)
        text = path.read_text()
        assert_scan_is_parse("asterisk", text)
        assert_scan_is_parse("asterisk", text.replace("\n", "\r\n"))


def _fail2ban_logs() -> list[Path]:
    try:
        out = subprocess.run(
            ["dpkg", "-L", "fail2ban"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [Path(p) for p in out.splitlines() if p.endswith(("/logs/asterisk", "/logs/freeswitch"))]


@pytest.mark.skipif(not _fail2ban_logs(), reason="Debian fail2ban is not installed")
def test_scan_of_the_fail2ban_corpus_is_parse_line_by_line() -> None:
    for path in _fail2ban_logs():
        text = path.read_text()
        for name in ("asterisk", "freeswitch"):
            assert_scan_is_parse(name, text)


@settings(max_examples=400, deadline=None)
@given(hostport=st.text(alphabet="0123456789abcdef:.[]", min_size=1, max_size=24))
def test_the_address_field_splits_as_split_hostport(hostport: str) -> None:
    assume(re.fullmatch(_HOSTPORT, hostport))  # what the rule's group can hold
    line = f"Registration from '<sip:1@h>' failed for '{hostport}' - Wrong password"
    ev = FORMATS["asterisk"].parse(line, fresh())
    host, port = split_hostport(hostport)
    want = address(host)
    if want is None:
        assert ev is None
    else:
        assert ev is not None
        assert (ev.source, ev.port) == (want, _port(port))


def test_mutated_hostile_lines_scan_like_parse() -> None:
    rnd = random.Random(5)
    for name in sorted(FORMATS):
        lines = []
        for _ in range(500):
            line = rnd.choice(SEEDS)
            for _ in range(rnd.randrange(3)):
                i = rnd.randrange(len(line) + 1)
                line = line[:i] + rnd.choice(PIECES) + line[i:]
            lines.append(line)
        assert_scan_is_parse(name, "\n".join(lines))


def test_each_context_keeps_its_own_stamps() -> None:
    """Year-less stamps under two Contexts, interleaved: each keeps its own year."""
    fmt = FORMATS["asterisk"]
    line = (
        "Jan  2 03:04:05 pbx asterisk[1]: NOTICE[1] chan_sip.c: Registration from "
        "'<sip:1@h>' failed for '198.51.100.7:5060' - Wrong password"
    )
    bracketed = "[2024-01-02 03:04:05] " + line.split(": ", 1)[1]
    older = Context(year=2020, default=NOW)
    newer = Context(year=2024, default=NOW)
    for _ in range(3):
        for ctx, year in ((older, 2020), (newer, 2024)):
            ev = fmt.parse(line, ctx)
            assert ev is not None
            assert ev.time == datetime(year, 1, 2, 3, 4, 5, tzinfo=UTC)
    zone = Context(year=2024, tz=timezone(timedelta(hours=2)))
    for ctx in (newer, zone, newer):
        ev = fmt.parse(bracketed, ctx)
        assert ev is not None
        assert ev.time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=ctx.tz).astimezone(UTC)
