"""The border (issue 17's must-show), in namespaces, as root, with real parts only.

attacker -- router (BIRD 2, strict uRPF facing the attacker) -- PBX (Kamailio + `sipdeflect
run`, whose ExaBGP child peers with the router); the customer's phone registers through
the router every second. What the router received is read from its own CLI (`birdc show
route all`), what it dropped from its kernel (TcpExt IPReversePathFilter, interface
counters), what crossed to the PBX from nftables counters in the PBX's namespace.
The tests share one lab and run in order (each leaves the daemon running).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipdeflect.lab.decoylab import flood_register
from sipdeflect.lab.pbxlab import (
    ATTACKERS,
    PBX_ATK,
    PbxLab,
    Router,
    border_text,
    config_text,
    pbx_lab,
)

pytestmark = pytest.mark.timeout(600)

SCANNER = ATTACKERS["svcrack"]
OTHER = ATTACKERS["svwar"]  # not blocked while the scanner floods: the witnesses' control


def until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def host(prefix: str) -> str:
    return prefix.removesuffix("/32")


@pytest.fixture(scope="module")
def lab(netns_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxLab]:
    for tool in ("bird", "birdc", "exabgp"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian bird2 and exabgp: ./dev setup installs them)")
    with pbx_lab(tmp_path_factory.mktemp("border"), router=True) as lab:
        lab.start_daemon()
        yield lab


def rtr(lab: PbxLab) -> Router:
    assert lab.router is not None
    return lab.router


def announced(lab: PbxLab) -> set[str]:
    """Blackhole routes the router holds from the PBX (its CLI's view)."""
    return {p for p, r in rtr(lab).bird.routes().items() if r.dest == "blackhole"}


def established(lab: PbxLab) -> bool:
    return rtr(lab).bird.session() == "Established"


def border_status(lab: PbxLab) -> dict[str, object]:
    out = lab.pbx.run(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "border",
            "status",
            "--json",
            "--socket",
            str(lab.workdir / "run" / "ctl.sock"),
        ]
    ).stdout
    return dict(json.loads(out))


def send(lab: PbxLab, src: str, n: int) -> None:
    lab.send_raw(src, [flood_register(src, 5099, PBX_ATK)] * n)
    time.sleep(0.5)


def test_the_scanner_is_blackholed_at_the_router_and_never_reaches_the_pbx(lab: PbxLab) -> None:
    router = rtr(lab)
    assert until(lambda: established(lab), 30), router.bird.birdc("show", "protocols", "all")
    lab.customer.start()
    attack = lab.svcrack()
    assert attack.deflected_at is not None, attack.output[-1500:]
    assert lab.wait_state(SCANNER, {"blocked"}, 30)
    # The router receives the route with the configured communities and installs it.
    assert until(lambda: f"{SCANNER}/32" in announced(lab), 15), router.bird.routes()
    route = router.bird.routes()[f"{SCANNER}/32"]
    assert set(route.communities) == {"65535:666", "64513:666"}
    assert SCANNER in router.blackholes()
    assert any(f"src {SCANNER}/32" in f for f in router.bird.flows()), router.bird.flows()
    st = border_status(lab)
    [entry] = [a for a in st["announced"] if a["target"] == f"{SCANNER}/32"]  # type: ignore[attr-defined]
    assert entry["evidence"] == "quiet"
    assert st["session"] == "up"

    # The witnesses count: a source that is not blocked gets through to the PBX...
    before_other = lab.counter("sent_svwar")
    send(lab, OTHER, 50)
    assert lab.counter("sent_svwar") - before_other == 50
    # ...and the blackholed scanner's flood dies on the router: none crosses the PBX link.
    sent0, rpf0 = lab.counter("sent_svcrack"), router.rp_filter_drops()
    rx0 = router.rx_packets(router.atk_if)
    customer0 = len(lab.customer.results)
    send(lab, SCANNER, 500)
    rx = router.rx_packets(router.atk_if) - rx0
    rpf = router.rp_filter_drops() - rpf0
    crossed = lab.counter("sent_svcrack") - sent0
    print(f"border: flood 500, router rx {rx}, router uRPF drops {rpf}, crossed to PBX {crossed}")
    assert rx >= 500
    assert rpf >= 500
    assert crossed == 0
    # The customer keeps registering through the same router all along.
    time.sleep(2.5)
    lab.customer.stop()
    assert len(lab.customer.results) > customer0
    assert lab.customer.failures == 0, lab.customer.results


def test_expiry_and_release_withdraw_the_route(lab: PbxLab) -> None:
    short = ATTACKERS["flooder"]
    lab.control.call("block", target=short, duration="5s", reason="border expiry test")
    assert until(lambda: f"{short}/32" in announced(lab), 15)
    assert until(lambda: f"{short}/32" not in announced(lab), 20)  # expired: withdrawn
    assert short not in rtr(lab).blackholes()
    lab.control.call("release", target=SCANNER)
    assert until(lambda: f"{SCANNER}/32" not in announced(lab), 15)
    assert SCANNER not in rtr(lab).blackholes()
    assert not any(SCANNER in f for f in rtr(lab).bird.flows())
    assert border_status(lab)["announced"] == []


def test_kill9_and_restart_leave_no_stale_and_no_missing_route(lab: PbxLab) -> None:
    keep, lapse = ATTACKERS["flooder"], ATTACKERS["late"]
    lab.control.call("block", target=keep, reason="stays in force")
    lab.control.call("block", target=lapse, duration="6s", reason="lapses while we are down")
    assert until(lambda: announced(lab) == {f"{keep}/32", f"{lapse}/32"}, 15)
    t_lapse = time.time() + 6
    lab.kill_daemon()
    # The speaker dies with the daemon (PR_SET_PDEATHSIG): the session drops, no orphan.
    assert until(lambda: not established(lab), 15)
    assert until(lambda: "exabgp" not in _commands_in(lab), 5), _commands_in(lab)
    time.sleep(max(0.0, t_lapse + 1 - time.time()))
    lab.start_daemon()
    assert until(lambda: established(lab) and bool(announced(lab)), 30)
    time.sleep(2)  # anything stale would be announced in the same batch as the rest
    assert announced(lab) == {f"{keep}/32"}
    assert {a["target"] for a in border_status(lab)["announced"]} == {f"{keep}/32"}  # type: ignore[attr-defined]


def test_a_session_flap_reannounces_exactly_what_is_in_force(lab: PbxLab) -> None:
    before = announced(lab)
    assert before == {f"{ATTACKERS['flooder']}/32"}
    rtr(lab).bird.restart()  # a new BIRD: its BGP state and kernel routes start empty
    assert until(lambda: established(lab) and announced(lab) == before, 30)
    in_force = {
        d["target"] for d in lab.control.call("list")["decisions"] if d["action"] == "block"
    }
    assert announced(lab) == in_force
    assert border_status(lab)["session"] == "up"


def test_a_speaker_killed_under_the_daemon_is_restarted_with_what_is_in_force(
    lab: PbxLab,
) -> None:
    before = announced(lab)
    assert before
    st = border_status(lab)
    old_pid = int(str(st["pid"]))
    os.kill(old_pid, signal.SIGKILL)  # ExaBGP only; the daemon lives on
    assert until(lambda: border_status(lab)["pid"] not in (old_pid, None), 15)
    assert until(lambda: established(lab) and announced(lab) == before, 30)
    assert border_status(lab)["restarts"] == 1


def _commands_in(lab: PbxLab) -> list[str]:
    pids = lab.pbx.run(["ip", "netns", "pids", lab.pbx.name], check=False).stdout.split()
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return names


def _restart_with(lab: PbxLab, **border: object) -> str:
    lab.stop_daemon()
    mark = lab.daemon_log.stat().st_size
    text = config_text(lab.workdir, lab.kam.log) + border_text(lab.workdir, **border)
    lab.config.write_text(text)
    lab.start_daemon()
    return lab.daemon_log.read_text()[mark:]


@pytest.mark.parametrize(
    ("border", "expect", "status"),
    [
        ({"speaker": "/nonexistent/exabgp"}, "border: no BGP speaker", {"enabled": False}),
        (
            {"peer": "192.0.2.99"},
            "border: BGP peer 192.0.2.99:179 unreachable",
            {"enabled": True, "running": True, "session": "down"},
        ),
    ],
)
def test_bad_border_config_is_one_line_and_the_host_still_blocks(
    lab: PbxLab, border: dict[str, object], expect: str, status: dict[str, object]
) -> None:
    log = _restart_with(lab, **border)
    errors = [ln for ln in log.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, log[-3000:]
    assert expect in errors[0]
    st = border_status(lab)
    assert {k: st[k] for k in status} == status
    target = ATTACKERS["svwar"]
    lab.control.call("block", target=target, duration="30s", reason="host enforcement")
    assert until(lambda: lab.element_count("block4", target) == 1, 10), lab.ruleset()
    lab.control.call("release", target=target)


def test_restored_config_announces_again(lab: PbxLab) -> None:
    _restart_with(lab)
    want = {f"{ATTACKERS['flooder']}/32"}
    assert until(lambda: established(lab) and announced(lab) == want, 30)
