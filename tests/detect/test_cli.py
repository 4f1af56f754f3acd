"""The logscan and analyze commands end to end (CLI in-process via typer's runner)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from sipdeflect.cli import app
from sipdeflect.pcapsink import PcapSink
from tests.detect.sipmsg import invite, register, response

runner = CliRunner()
PBX, ATK, BYS = "2001:db8::1", "2001:db8::66", "192.0.2.7"


def test_logscan_json_has_the_contract_fields(tmp_path: Path) -> None:
    log = tmp_path / "full.log"
    line = (
        "[2024-03-01 10:00:{s:02d}] NOTICE[1] chan_sip.c: Registration from "
        "'\"x\" <sip:1{s}@192.0.2.200>' failed for '198.51.100.{h}:5060' - Wrong password"
    )
    log.write_text(
        "noise line\n" + "\n".join(line.format(s=s, h=s % 2 + 1) for s in range(12)) + "\n"
    )
    res = runner.invoke(app, ["logscan", "--json", str(log)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(rows) == 12
    assert rows[0]["line"] == 2
    assert rows[0]["file"] == str(log)
    assert rows[0]["time"] == "2024-03-01T10:00:00+00:00"
    assert rows[0]["kind"] == "auth_failed_with_credentials"
    assert rows[0]["source"] == "198.51.100.1"
    assert rows[0]["port"] == 5060
    assert rows[0]["account"] == "10"
    text = runner.invoke(app, ["logscan", str(log)])
    assert "attacker" in text.stdout
    assert "198.51.100.2" in text.stdout


def test_logscan_refuses_an_unknown_format(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("hello\nworld\n")
    res = runner.invoke(app, ["logscan", str(log)])
    assert res.exit_code != 0


def test_analyze_flags_the_cracker_not_the_spoofed_bystander(tmp_path: Path) -> None:
    cap = tmp_path / "cap.pcap"
    with cap.open("wb") as fh:
        sink = PcapSink(fh)
        t = 1_700_000_000.0
        for i in range(8):  # svcrack over IPv6 UDP
            cid, nonce = f"c{i}", f"n{i}"
            sink.write(t, (ATK, 5062), (PBX, 5060), register("1001", cid, 1))
            sink.write(t, (PBX, 5060), (ATK, 5062), response(401, "U", "1001", cid, 1, nonce=nonce))
            sink.write(t, (ATK, 5062), (PBX, 5060), register("1001", cid, 2, nonce=nonce))
            sink.write(t, (PBX, 5060), (ATK, 5062), response(403, "Forbidden", "1001", cid, 2))
            t += 0.5
        for i in range(300):  # forged flood "from" a bystander (UDP), guessed nonces
            sink.write(t, (BYS, 5060), (PBX, 5060), invite(str(i), f"i{i}"))
            sink.write(t, (BYS, 5060), (PBX, 5060), register(str(i), f"r{i}", 2, nonce="guess"))
            t += 0.01
    res = runner.invoke(app, ["analyze", "--json", str(cap)])
    assert res.exit_code == 0, res.output
    flags = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    top = {}
    for f in flags:
        top[f["source"]] = f["level"]
    assert top[ATK] == "attacker"
    assert top[BYS] == "watch"
    when = next(f for f in flags if f["source"] == ATK and f["level"] == "attacker")
    # The first failed login proves the address, so its friendly-scanner User-Agent counts.
    assert when["time"].startswith("2023-11-14T22:13:20")
    human = runner.invoke(app, ["analyze", str(cap)])
    assert "attacker" in human.stdout


def test_json_lines_equal_the_event_contract_even_for_hostile_text(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    hostile = 'a"b\\\\c\x1b[31m\u2028'
    log.write_text(
        f"[2024-03-01 10:00:00] NOTICE[1] chan_sip.c: Registration from '<sip:{hostile}@h>'"
        " failed for '2001:db8::9' - Peer is not supposed to register\n"
    )
    res = runner.invoke(app, ["logscan", "--json", str(log)])
    row = json.loads(res.stdout.split("\n")[0])
    from sipdeflect.detect.logs import FORMATS, Context

    ev = FORMATS["asterisk"].parse(log.read_text().split("\n")[0], Context(year=2024))
    assert ev is not None
    assert row == {"file": str(log), "line": 1, **ev.as_json()}
    assert "\x1b" not in res.stdout


def test_the_command_table_names_every_command_and_its_module() -> None:
    # `sipdeflect CMD` imports only COMMANDS[CMD]; the table must match what the modules
    # register, or a command would vanish (or lose its siblings) when run by name.
    import typer

    from sipdeflect import cli

    seen: dict[str, str] = {}
    for module in cli.command_modules():
        for name in typer.main.get_command(cli.build_app([module])).commands:  # type: ignore[attr-defined]
            seen[name] = module
    assert seen == cli.COMMANDS
    assert sorted(typer.main.get_command(cli.app).commands) == sorted(cli.COMMANDS)  # type: ignore[attr-defined]


def test_a_command_run_by_name_imports_only_its_module(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "[2024-03-01 10:00:00] NOTICE[1] chan_sip.c: Registration from '<sip:1@h>' failed "
        "for '198.51.100.1:5060' - Wrong password\n"
    )
    script = (
        "import sys\n"
        "from sipdeflect.cli import main\n"
        f"sys.argv = ['sipdeflect', 'logscan', '--json', {str(log)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "others = [m for m in sys.modules if m.startswith('sipdeflect.commands.')]\n"
        "print(sorted(others), file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[0])["source"] == "198.51.100.1"
    assert "['sipdeflect.commands.logscan']" in res.stderr


def test_json_lines_are_valid_json_for_every_event_of_a_hostile_log(tmp_path: Path) -> None:
    # The JSON is formatted by hand for speed: every line must still be exactly the
    # contract, across many events (control characters, quotes, backslashes, U+2028).
    import random

    from sipdeflect.detect.logs import FORMATS, Context
    from tests.detect.test_scan import SEEDS, mutate

    rnd = random.Random(5)
    hostile = ['"', "\\", "\x00", "\x1b[2J", "\u2028", "\u00e9", "'"]
    lines = []
    for _ in range(2000):
        line = mutate(rnd, rnd.choice(SEEDS[:8]))
        i = rnd.randrange(len(line) + 1)
        lines.append(line[:i] + rnd.choice(hostile) + line[i:])
    log = tmp_path / 'a "log".txt'
    log.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["logscan", "--json", "--format", "asterisk", str(log)])
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in res.stdout.splitlines()]
    ctx = Context(year=2024, default=datetime.fromtimestamp(log.stat().st_mtime, UTC))
    want = [
        {"file": str(log), "line": n, **ev.as_json()}
        for n, ev in FORMATS["asterisk"].scan(log.read_bytes().decode(), ctx)
    ]
    assert len(want) > 500
    assert got == want


def test_json_lines_are_byte_for_byte_json_dumps_of_the_contract(tmp_path: Path) -> None:
    # The hand-formatted line must be exactly what json.dumps gives for the same object
    # (key order, separators, escapes), not merely JSON that parses to it.
    from sipdeflect.detect.logs import FORMATS, Context
    from tests.detect.test_scan import SEEDS

    log = tmp_path / 'l\u00f6g "x".txt'
    hostile = ['"', "\\", "\x00", "\x1b[2J", "\u2028", "\u00e9", "'", "\U0001f600"]
    lines = [seed[:40] + h + seed[40:] for seed in SEEDS[:8] for h in hostile] + SEEDS
    log.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["logscan", "--json", "--format", "asterisk", str(log)])
    assert res.exit_code == 0, res.output
    ctx = Context(year=2024, default=datetime.fromtimestamp(log.stat().st_mtime, UTC))
    want = "".join(
        json.dumps({"file": str(log), "line": n, **ev.as_json()}) + "\n"
        for n, ev in FORMATS["asterisk"].scan(log.read_text(), ctx)
    )
    assert want.count("\n") > 20
    assert res.stdout == want


def test_help_joins_a_paragraph_s_lines() -> None:
    """Docstrings are wrapped at 90 columns in the source; help rewraps them to the
    terminal instead of keeping each line break (which broke lines mid-sentence)."""
    res = runner.invoke(app, ["logscan", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Levels: watch (any evidence, including forgeable UDP), suspect" in res.output
