"""`sipdeflect demo`: the README's first command, run for real (root), and its refusal off-root."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sipdeflect.commands import demo
from sipdeflect.errors import UsageError


def test_demo_explains_in_one_line_when_it_cannot_build_a_lab(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        demo, "netns_unavailable", lambda: "needs root to create network namespaces"
    )
    with pytest.raises(UsageError, match="needs root") as err:
        demo.run(decoy=False)
    assert "\n" not in str(err.value)


def test_decoy_demo_runs_every_scanner_and_ends_with_the_table(netns_ok: None) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sipdeflect", "demo", "--decoy"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"COLUMNS": "80", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    head = lines.index(next(line for line in lines if line.startswith("tool ")))
    rows = {}
    for line in lines[head + 2 :]:
        if not line.strip():
            break
        name, sent, _seconds = line.rsplit(None, 2)
        rows[name.strip()] = sent
    assert set(rows) == {
        "svcrack",
        "svwar REGISTER",
        "svwar INVITE",
        "svwar OPTIONS",
        "svmap",
        "flooder",
    }
    assert all(1 <= int(sent) <= 2 for sent in rows.values()), rows
    assert "Lab removed" in res.stdout


def test_demo_cleans_up_on_ctrl_c(netns_ok: None) -> None:
    import os
    import signal
    import time

    from sipdeflect.lab.netns import leftover_namespaces

    patterns = ("sipvicious_svwar", "kamailio -DD", "sipdeflect run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipdeflect", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:  # interrupt in the middle: while svwar runs against the PBX
        if line.startswith("svwar") or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert leftover_namespaces(proc.pid) == []
    for p in patterns:
        # Only what this demo started counts (its session: it was started in a new one);
        # another lab on the machine may be running.
        left = subprocess.run(
            ["pgrep", "-s", str(proc.pid), "-f", p], capture_output=True, check=False
        )
        assert left.stdout.split() == [], p


def test_demo_runs_the_whole_lab_and_every_attacker_ends_blocked(netns_ok: None) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sipdeflect", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"COLUMNS": "80", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    head = lines.index(next(line for line in lines if line.startswith("attacker ")))
    rows = {}
    for line in lines[head + 2 :]:
        if not line.strip():
            break
        name, to_pbx, *_when, to_decoy, now = line.split()
        rows[name] = (to_pbx, to_decoy, now)
    assert set(rows) == {"svcrack", "svwar", "flooder"}
    for name, (to_pbx, to_decoy, now) in rows.items():
        assert int(to_pbx) <= 10, name
        assert int(to_decoy) >= 1, name
        assert now == "blocked", name
    assert "packets that reached any socket on the PBX host: 0" in res.stdout
    assert "Lab removed" in res.stdout


def test_the_closing_tables_fit_80_columns_and_never_cut_an_address() -> None:
    from sipdeflect.commands.demo import closing_lines
    from sipdeflect.lab.pbxlab import Attack

    long = "reported '1001 voip2' as a cracked password " * 4 + "\x1b[31m"
    attacks = [
        Attack("svcrack", "203.0.113.111", long, to_pbx=4, to_decoy=3,
               first_packet=10.0, deflected_at=10.0109),
        Attack("svwar", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "102 reqauth", to_pbx=6),
    ]  # fmt: skip
    lines = closing_lines(attacks, {"svcrack": "blocked", "svwar": "deflected"})
    assert max(len(line) for line in lines) <= 80, lines
    text = "\n".join(lines)
    assert "203.0.113.111" in text
    assert "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff" in text
    assert "\x1b" not in text  # attacker-influenced text is escaped
    row = next(line for line in lines if line.startswith("svcrack "))
    assert row.split() == ["svcrack", "4", "11", "ms", "3", "blocked"]
    assert "  svcrack from 203.0.113.111: reported '1001 voip2'" in text
