"""fail2ban's annotated sample logs (Debian package) as a corpus: every line fail2ban
matches must give an event naming the same host, and no event may name another host."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipdeflect.detect.events import EventKind
from sipdeflect.detect.logs import FORMATS, Context, detect_format


def _corpus_dir() -> Path | None:
    try:
        out = subprocess.run(
            ["dpkg", "-L", "fail2ban"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        if line.endswith("/tests/files/logs/asterisk"):
            return Path(line).parent
    return None


CORPUS = _corpus_dir()
needs_corpus = pytest.mark.skipif(CORPUS is None, reason="Debian fail2ban is not installed")
# fail2ban's tests run at 2005-08-14 10:00 UTC; year-less stamps after that are from 2004.
NOW = datetime(2005, 8, 14, 10, 0, tzinfo=UTC)
CTX = Context(year=2005, default=datetime(2030, 1, 1, tzinfo=UTC), now=NOW)


def annotated(path: Path) -> list[tuple[int, dict[str, object], str]]:
    """(line number, failJSON, log line) for each annotated line."""
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# failJSON:") and i + 1 < len(lines):
            out.append((i + 2, json.loads(line.split(":", 1)[1]), lines[i + 1]))
    return out


@needs_corpus
@pytest.mark.parametrize("name", ["asterisk", "freeswitch"])
def test_every_fail2ban_match_gives_the_same_host(name: str) -> None:
    assert CORPUS is not None
    fmt = FORMATS[name]
    cases = annotated(CORPUS / name)
    assert len(cases) >= 20 if name == "asterisk" else len(cases) >= 8
    matched = 0
    for lineno, want, line in cases:
        ev = fmt.parse(line, CTX)
        if not want["match"]:
            assert ev is None, (lineno, line, ev)
            continue
        matched += 1
        assert ev is not None, (lineno, line)
        assert ev.source == ipaddress.ip_address(str(want["host"])), (lineno, line, ev)
        if "time" in want:
            assert ev.time == datetime.fromisoformat(str(want["time"])).replace(tzinfo=UTC)
        elif not line[0].isdigit() and not line.startswith("["):
            assert ev.time == CTX.default  # no stamp at all: the caller's time
    assert matched >= 8


@needs_corpus
@pytest.mark.parametrize("name", ["asterisk", "freeswitch"])
def test_scan_of_the_whole_file_agrees_and_names_no_other_host(name: str) -> None:
    assert CORPUS is not None
    path = CORPUS / name
    text = path.read_text()
    fmt = detect_format(text)
    assert fmt.name == name
    want = {lineno: w for lineno, w, _ in annotated(path)}
    got = dict(fmt.scan(text, CTX))
    for lineno, ev in got.items():
        # No event on an unannotated line (comments, disabled samples) or a wrong host.
        assert lineno in want, (lineno, ev)
        assert want[lineno]["match"], (lineno, ev)
        assert ev.source == ipaddress.ip_address(str(want[lineno]["host"]))
    assert {n for n, w in want.items() if w["match"]} == set(got)


@needs_corpus
def test_known_corpus_lines_get_the_right_kind() -> None:
    assert CORPUS is not None
    text = (CORPUS / "asterisk").read_text()
    kinds = {ev.kind for _, ev in FORMATS["asterisk"].scan(text, CTX)}
    assert {
        EventKind.AUTH_FAILED_WITH_CREDENTIALS,
        EventKind.UNKNOWN_ACCOUNT,
        EventKind.ACL_REJECT,
        EventKind.UNKNOWN_EXTENSION,
        EventKind.LOG_INJECTION,  # the SessionID sample imitating RemoteAddress
    } <= kinds
