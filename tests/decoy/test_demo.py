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
        env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in res.stdout.splitlines()
        if line.startswith("│") and line.count("│") >= 5
    }
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

    def running(pattern: str) -> set[bytes]:
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False)
        return set(out.stdout.split())

    patterns = ("sipvicious_svwar", "kamailio -DD", "sipdeflect run")
    # Only what this demo started counts: another lab on the machine may be running.
    before = {p: running(p) for p in patterns}
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
        assert running(p) - before[p] == set(), p


def test_demo_runs_the_whole_lab_and_every_attacker_ends_blocked(netns_ok: None) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sipdeflect", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = {
        cells[1]: cells[2:8]
        for line in res.stdout.splitlines()
        if line.startswith("│") and (cells := [c.strip() for c in line.split("│")])
    }
    assert set(rows) == {"svcrack", "svwar", "flooder"}
    for name, (_, to_pbx, _, to_decoy, _, now) in rows.items():
        assert int(to_pbx) <= 10, name
        assert int(to_decoy) >= 1, name
        assert now == "blocked", name
    assert "packets that reached any socket on the PBX host: 0" in res.stdout
    assert "Lab removed" in res.stdout
