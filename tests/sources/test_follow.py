"""File and journal followers: a file that appears later, partial lines, rotation by
rename, copytruncate; journalctl's JSON lines."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from sipdeflect.detect.events import EventKind
from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.sources.follow import FileFollower, JournalFollower, journal_entry


def test_file_that_does_not_exist_yet_then_grows(tmp_path: Path) -> None:
    log = tmp_path / "full"
    f = FileFollower(log)
    assert f.poll() == b""
    log.write_text("one\ntw")
    assert f.poll() == b"one\n"  # a partial line waits for its newline
    with log.open("a") as fh:
        fh.write("o\nthree\n")
    assert f.poll() == b"two\nthree\n"
    assert f.poll() == b""


def test_existing_file_is_followed_from_its_end_unless_asked(tmp_path: Path) -> None:
    log = tmp_path / "full"
    log.write_text("old\n")
    f = FileFollower(log)
    with log.open("a") as fh:
        fh.write("new\n")
    assert f.poll() == b"new\n"
    assert FileFollower(log, from_start=True).poll() == b"old\nnew\n"


def test_rotation_by_rename_reads_the_old_tail_then_the_new_file(tmp_path: Path) -> None:
    log = tmp_path / "full"
    log.write_text("")
    f = FileFollower(log)
    writer = log.open("a")
    writer.write("a1\n")
    writer.flush()
    assert f.poll() == b"a1\n"
    writer.write("a2\n")
    writer.flush()
    log.rename(tmp_path / "full.1")  # logrotate's default
    writer.write("a3\n")  # the PBX still writes to the old file until reopened
    writer.close()
    assert f.poll() == b"a2\na3\n"  # renamed away, nothing new yet: keep reading the old fd
    log.write_text("b1\n")
    assert f.poll() == b"b1\n"
    assert f.rotations == 1


def test_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "full"
    log.write_text("")
    f = FileFollower(log)
    with log.open("a") as fh:
        fh.write("x1\nx2\n")
    assert f.poll() == b"x1\nx2\n"
    shutil.copy(log, tmp_path / "full.1")
    with log.open("r+") as fh:
        fh.truncate(0)
    with log.open("a") as fh:
        fh.write("y\n")
    assert f.poll() == b"y\n"
    assert f.truncations == 1


def test_journal_entries() -> None:
    line = json.dumps({"MESSAGE": "hello", "__REALTIME_TIMESTAMP": "1700000000000000"})
    assert journal_entry(line) == (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "hello")
    raw = json.dumps({"MESSAGE": list(b"bad \xff byte"), "__REALTIME_TIMESTAMP": "1"})
    got = journal_entry(raw)
    assert got is not None
    assert got[1] == "bad \ufffd byte"
    assert journal_entry("not json") is None
    assert journal_entry(json.dumps({"MESSAGE": "no time"})) is None


def test_journal_follower_runs_its_argv(tmp_path: Path) -> None:
    """No journald runs in this container, so a stand-in prints journalctl's JSON lines
    (the format is the one `journalctl -o json` documents); the follower is the real one."""
    src = tmp_path / "journal.json"
    src.write_text(
        "\n".join(
            json.dumps({"MESSAGE": f"m{i}", "__REALTIME_TIMESTAMP": str(i * 1_000_000)})
            for i in range(3)
        )
        + "\n"
    )
    f = JournalFollower(
        ["SYSLOG_IDENTIFIER=kamailio"],
        argv=[sys.executable, "-c", f"print(open({str(src)!r}).read(), end='')"],
    )
    got = [m for _, m in f.entries()]
    f.stop()
    assert got == ["m0", "m1", "m2"]
    assert f.argv[-1] == "SYSLOG_IDENTIFIER=kamailio"


# Characters str.splitlines() also breaks at; a PBX writes them raw inside one line
# (attacker text: a From display name, a User-Agent).
LINE_BREAKS_IN_TEXT = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
FAKE = "Registration from 'y' failed for '203.0.113.5' - Wrong password"  # a bystander


def test_a_line_ends_only_at_a_newline(tmp_path: Path) -> None:
    """Only "\\n" ends a log line: a line split anywhere else would hand attacker text to
    the parsers as a line of its own, with no stamp and no PBX prefix before it."""
    log = tmp_path / "full"
    log.write_text("")
    f = FileFollower(log)
    inner = "".join(f"a{c}" for c in LINE_BREAKS_IN_TEXT)
    with log.open("a", newline="") as fh:
        fh.write(f"one {inner} end\ncrlf\r\n")
    assert f.poll().decode() == f"one {inner} end\ncrlf\r\n"  # as written: two lines


def test_a_rotated_file_s_last_line_does_not_join_the_next_file_s_first(tmp_path: Path) -> None:
    log = tmp_path / "full"
    log.write_text("")
    f = FileFollower(log)
    with log.open("a") as fh:
        fh.write("a1\na2")  # the old file ends without a newline
    assert f.poll() == b"a1\n"
    log.rename(tmp_path / "full.1")
    log.write_text("b1\n")
    assert f.poll() == b"a2\nb1\n"
    assert f.poll() == b""


def test_injected_line_breaks_cannot_forge_an_asterisk_line(tmp_path: Path) -> None:
    """A From display name carrying U+2028 and a whole fake "Registration ... failed"
    line: the daemon's follower must hand Asterisk's one line over as one line, which
    names the attacker (as log injection), never the bystander in the fake text."""
    line = (
        "[2024-05-01 10:00:00] NOTICE[1] chan_sip.c: Registration from "
        f"'\"x\u2028{FAKE}\u2028\" <sip:1@192.0.2.1>' failed for '198.51.100.66:5060' - "
        "Wrong password"
    )
    log = tmp_path / "full"
    log.write_text("")
    f = FileFollower(log)
    with log.open("a") as fh:
        fh.write(line + "\n")
    data = f.poll()
    ctx = Context(year=2024)
    events = [ev for _, ev in FORMATS["asterisk"].scan_bytes(data, ctx)]
    assert [str(ev.source) for ev in events] == ["198.51.100.66"]
    assert events[0].kind is EventKind.LOG_INJECTION
