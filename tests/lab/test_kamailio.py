"""The lab's PBX is real: Kamailio registrar with digest auth, a sipp customer, svcrack."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sipdeflect.lab.kamailio import Kamailio, register_customer, svcrack
from sipdeflect.lab.netns import hosts, link

pytestmark = pytest.mark.timeout(120)


def test_registrar_accepts_customer_and_logs_attacker(netns_ok: None, tmp_path: Path) -> None:
    with hosts("pbx", "cust", "atk") as (pbx, cust, atk):
        link(pbx, ["198.51.100.1/24"], cust, ["198.51.100.20/24"])
        link(pbx, ["203.0.113.1/24"], atk, ["203.0.113.66/24"])
        kam = Kamailio(
            pbx,
            tmp_path,
            ["udp:198.51.100.1:5060", "udp:203.0.113.1:5060"],
            {"1001": "correct-horse-battery"},
        ).start()
        try:
            res = register_customer(cust, "198.51.100.1", "1001", "correct-horse-battery")
            assert res.returncode == 0, (res.stdout[-1500:], res.stderr[-1500:])
            words = tmp_path / "words.txt"
            words.write_text("\n".join(f"guess{i}" for i in range(20)) + "\n")
            for user in ("1001", "7777"):  # a real account, then one that does not exist
                svcrack(atk, "203.0.113.1", user, words)
            fails = kam.auth_failures()
            assert all("src=203.0.113.66 " in ln for ln in fails)
            assert sum("reason=wrong-password user=1001" in ln for ln in fails) >= 10
            assert sum("reason=unknown-user user=7777" in ln for ln in fails) >= 10
            assert not any("198.51.100.20" in ln for ln in fails)
            # A forged Authorization with a nonce we never issued is not logged.
            forged = Path(__file__).parents[1] / "vectors/sip/captured/register-sv-auth.sip"
            data = forged.read_bytes().replace(b"127.0.0.1", b"203.0.113.1")
            before = len(fails)
            sock = atk.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(5)
            sock.sendto(data, ("203.0.113.1", 5060))
            assert sock.recv(4096).startswith(b"SIP/2.0 401")
            assert len(kam.auth_failures()) == before
        finally:
            kam.stop()
