# The CLI as a user runs it (a real process): setup remembers its settings, bad input
# and missing tools give one line and exit 2 with nothing changed.
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Lab

EXE = [sys.executable, "-m", "sipdeflect"]


def cli(*args: str, state: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIPDEFLECT_STATE_DIR": str(state)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def ruleset(lab: Lab) -> str:
    """The namespace's ruleset without the ticking `expires` countdowns."""
    return re.sub(r" expires \S+", "", lab.pbx.run(["nft", "list", "ruleset"]).stdout)


def test_dry_run_setup_prints_plan(tmp_path: Path) -> None:
    res = cli("firewall", "setup", "--backend", "dry-run", "--sip-port", "5080", state=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dry-run: setup table=sipdeflect sip_ports=5080 decoy_port=5070" in res.stdout
    assert not (tmp_path / "firewall.json").exists()  # a dry run remembers nothing


def test_block_before_setup_is_a_clear_error(tmp_path: Path) -> None:
    res = cli("block", "192.0.2.9", state=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "sipdeflect: the firewall is not set up; run `sipdeflect firewall setup` first"
    ]


def test_cli_end_to_end_and_bad_input_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    ns = ["--netns", lab.pbx.name]
    res = cli(
        "firewall", "setup", *ns, "--sip-port", "5060", "--decoy-port", "5070", state=tmp_path
    )
    assert res.returncode == 0, res.stderr
    saved = json.loads((tmp_path / "firewall.json").read_text())
    assert saved["backend"] == "nftables"
    assert saved["sip_ports"] == [5060]
    assert cli("allow", "203.0.113.0/24", state=tmp_path).returncode == 0
    assert cli("block", "198.51.100.7", "--for", "2m", state=tmp_path).returncode == 0
    assert cli("deflect", "2001:db8::10", "--for", "30s", state=tmp_path).returncode == 0
    before = ruleset(lab)
    bad = [
        (["block", "0.0.0.0/0"], "too wide"),
        (["block", "not-an-ip"], "not an IP address"),
        (["block", "198.51.100.8", "203.0.113.5"], "overlaps allowlisted 203.0.113.0/24"),
        (["deflect", "192.0.2.1"], "own address"),
        (["block", "198.51.100.9", "--for", "soon"], "not a duration"),
        (["firewall", "setup", *ns, "--decoy-port", "5060"], "also a SIP port"),
        (["block", "198.51.100.9", "--backend", "nope"], "unknown backend"),
    ]
    for args, why in bad:
        res = cli(*args, state=tmp_path)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert why in lines[0]
    assert ruleset(lab) == before
    res = cli("list", "--json", state=tmp_path)
    rows = {(r["set"], r["target"]): r for r in json.loads(res.stdout)}
    assert set(rows) == {
        ("allow", "203.0.113.0/24"),
        ("block", "198.51.100.7"),
        ("deflect", "2001:db8::10"),
    }
    assert 0 < rows[("block", "198.51.100.7")]["expires"] <= 120
    assert rows[("block", "198.51.100.7")]["packets"] == 0
    assert cli("release", "198.51.100.7", state=tmp_path).returncode == 0
    assert "198.51.100.7" not in cli("list", state=tmp_path).stdout
    assert "sipdeflect" in cli("firewall", "show", state=tmp_path).stdout
    assert cli("firewall", "teardown", state=tmp_path).returncode == 0
    assert "sipdeflect" not in ruleset(lab)
    assert not (tmp_path / "firewall.json").exists()


def test_missing_nft_binary_is_one_line(lab: Lab, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ip = shutil.which("ip")
    assert ip is not None
    (bindir / "ip").symlink_to(ip)  # ip is there, nft is not
    res = cli("firewall", "setup", "--netns", lab.pbx.name, state=tmp_path, path=str(bindir))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "sipdeflect: nft not found on PATH (install nftables)"
    ]
    assert ruleset(lab) == ""
    assert not (tmp_path / "firewall.json").exists()


def test_nft_failure_is_one_line_and_atomic(lab: Lab, tmp_path: Path) -> None:
    # A user set of the same name with another type makes our batch fail part-way:
    # nft rejects the whole transaction, so nothing of ours is left behind.
    lab.pbx.run(["nft", "add", "table", "inet", "sipdeflect"])
    lab.pbx.run(["nft", "add", "set", "inet", "sipdeflect", "block6", "{ type inet_service; }"])
    before = ruleset(lab)
    res = cli("firewall", "setup", "--netns", lab.pbx.name, state=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("sipdeflect: nft failed:")
    assert "Error: datatype mismatch" in lines[0]
    assert ruleset(lab) == before


@pytest.mark.parametrize("backend", ["iptables"])
def test_cli_iptables_backend_round_trip(lab: Lab, tmp_path: Path, backend: str) -> None:
    ns = ["--netns", lab.pbx.name, "--backend", backend]
    assert cli("firewall", "setup", *ns, state=tmp_path).returncode == 0
    assert cli("block", "198.51.100.7", "--for", "1m", state=tmp_path).returncode == 0
    rows = json.loads(cli("list", "--json", state=tmp_path).stdout)
    assert [(r["set"], r["target"]) for r in rows] == [("block", "198.51.100.7")]
    assert cli("firewall", "teardown", state=tmp_path).returncode == 0
    assert lab.pbx.run(["ipset", "list", "-n"]).stdout.strip() == ""
