"""`sipdeflect run` in a lab: Kamailio as the PBX, real svcrack as the attacker.

The daemon runs inside the PBX namespace with the nftables backend, following Kamailio's
log and the wire, with the decoy on its port. svcrack is detected from its failed logins,
deflected to the decoy (which makes it quit), blocked once quiet; a kill -9 and restart
brings every decision back with no duplicate; the allowlisted customer keeps registering.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipdeflect.lab.kamailio import Kamailio, register_customer, svcrack
from sipdeflect.lab.netns import Netns, hosts, link

pytestmark = pytest.mark.timeout(300)
PBX_ATK, ATK = "203.0.113.1", "203.0.113.66"
PBX_CUST, CUST = "198.51.100.1", "198.51.100.20"
PASSWORD = "correct-horse-battery"


def _config(tmp: Path, kamlog: Path) -> Path:
    cfg = tmp / "sipdeflect.toml"
    cfg.write_text(f"""
[sip]
ports = [5060]
[decoy]
port = 5070
[firewall]
backend = "nftables"
[detect]
wire = true
[[detect.logs]]
path = "{kamlog}"
format = "kamailio"
[policy]
quiet_after = "3s"
max_deflect = "60s"
[allow]
addresses = ["{CUST}"]
[store]
path = "{tmp / "state.db"}"
[control]
socket = "{tmp / "run" / "ctl.sock"}"
""")
    return cfg


def _status(pbx: Netns, tmp: Path) -> dict[str, Any] | None:
    res = pbx.run(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "status",
            "--json",
            "--socket",
            str(tmp / "run" / "ctl.sock"),
        ],
        check=False,
        timeout=30,
    )
    return json.loads(res.stdout) if res.returncode == 0 else None


def _wait(what: str, cond: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for: {what}")


def _rules(listing: str) -> int:
    return sum(ln.strip().startswith(("ip ", "ip6 ")) for ln in listing.splitlines())


def _customer_registers(cust: Netns) -> bool:
    return register_customer(cust, PBX_CUST, "1001", PASSWORD).returncode == 0


def test_svcrack_is_deflected_quits_and_is_blocked(netns_ok: None, tmp_path: Path) -> None:
    with hosts("pbx", "atk", "cust") as (pbx, atk, cust):
        link(pbx, [f"{PBX_ATK}/24"], atk, [f"{ATK}/24"])
        link(pbx, [f"{PBX_CUST}/24"], cust, [f"{CUST}/24"])
        kam = Kamailio(
            pbx, tmp_path, [f"udp:{PBX_ATK}:5060", f"udp:{PBX_CUST}:5060"], {"1001": PASSWORD}
        ).start()
        cfg = _config(tmp_path, kam.log)
        argv = [sys.executable, "-m", "sipdeflect", "run", "--config", str(cfg)]
        daemon_log = (tmp_path / "daemon.log").open("wb")
        daemon = pbx.popen(argv, stdout=daemon_log, stderr=subprocess.STDOUT)
        try:
            _wait("the daemon's control socket", lambda: _status(pbx, tmp_path) is not None, 60)
            assert _customer_registers(cust)

            words = tmp_path / "words.txt"
            words.write_text("\n".join(f"guess{i}" for i in range(1000)) + "\n")
            crack = svcrack(atk, PBX_ATK, "1001", words)
            # It quit well before trying the whole dictionary, and found nothing real.
            assert PASSWORD not in crack.stdout + crack.stderr
            failures = len(kam.auth_failures())
            assert 5 <= failures < 1000
            print(f"failed logins that reached Kamailio before the deflect: {failures}")

            def blocked() -> bool:
                st = _status(pbx, tmp_path)
                return st is not None and st["sources"]["blocked"] == 1

            _wait("the attacker to be blocked after going quiet", blocked, 60)
            nft = pbx.run(["nft", "list", "set", "inet", "sipdeflect", "block4"]).stdout
            assert ATK in nft
            show = pbx.run(
                [
                    sys.executable,
                    "-m",
                    "sipdeflect",
                    "show",
                    ATK,
                    "--json",
                    "--socket",
                    str(tmp_path / "run" / "ctl.sock"),
                ]
            ).stdout
            story = json.loads(show)
            assert [h["action"] for h in story["history"]][:2] == ["deflect", "block"]
            assert any(e["kind"] == "sip" for e in story["events"])  # the decoy heard it

            # kill -9 mid-life, restart: decisions come back, no duplicate rules or elements.
            rules_before = pbx.run(["nft", "-a", "list", "table", "inet", "sipdeflect"]).stdout
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(30)
            daemon = pbx.popen(argv, stdout=daemon_log, stderr=subprocess.STDOUT)
            _wait("the restarted daemon", blocked, 60)
            rules_after = pbx.run(["nft", "-a", "list", "table", "inet", "sipdeflect"]).stdout
            assert _rules(rules_after) == _rules(rules_before) > 0
            assert (
                pbx.run(["nft", "list", "set", "inet", "sipdeflect", "block4"]).stdout.count(ATK)
                == 1
            )

            # Blocked: nothing from the attacker reaches Kamailio any more.
            before = len(kam.auth_failures())
            svcrack(atk, PBX_ATK, "1001", words)
            assert len(kam.auth_failures()) == before
            assert _customer_registers(cust)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
            kam.stop()
            daemon_log.close()
