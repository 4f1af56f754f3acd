"""etc/sipdeflect.service run for real: systemd 252 as PID 1 of a throwaway container
(sipdeflect.lab.container: an overlay of this machine's root, in a network namespace of
its own). sipdeflect is installed from the wheel as README "Install on a PBX" says (step 2:
`uv tool install` with UV_TOOL_DIR=/opt/sipdeflect, here a directory of the test's bound
read-only at /opt/sipdeflect, and the /usr/local/bin/sipdeflect link made in the container's
upper layer only); steps 3 and 5 run inside: `config example`, `config check`, `config unit >
/etc/systemd/system/sipdeflect.service` (checked equal to etc/sipdeflect.service; no drop-in).

One boot, the unit's whole life: start -> active with only the unit's capabilities, its
table in the namespace's nftables, the control socket answering; a manual block over the
control socket and a deflect the daemon decides itself from a PBX log only
CAP_DAC_READ_SEARCH lets it read; reload (SIGHUP) with a changed [allow] list, in the
kernel too; stop (the kernel keeps what was decided, as the README says; the decoy is gone);
the table deleted by hand, start again -> every decision is back from the StateDirectory;
stop and `sipdeflect firewall teardown` -> nothing left. The host's /tmp and /var/tmp are
checked untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipdeflect.lab.container import (
    BOOT_TARGET,
    Bind,
    BootPlan,
    Container,
    Link,
    base_layer,
    boot_script,
    cgroup2_root,
    container_unavailable,
)
from tests.test_install import ROOT, UV, _build, _env, _run, dist  # noqa: F401

# The distribution's interpreter: one under /root or /home (pyenv, uv's own) is hidden from
# the service by ProtectHome=yes.
SYSTEM_PYTHON = "/usr/bin/python3"
_REASON = container_unavailable() or (
    f"needs the distribution's {SYSTEM_PYTHON} and uv"
    if not Path(SYSTEM_PYTHON).is_file() or shutil.which("uv") is None
    else None
)
needs_container = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

UNIT = ROOT / "etc" / "sipdeflect.service"
CONFIG = "/etc/sipdeflect/sipdeflect.toml"
SOCKET = "/run/sipdeflect/control.sock"
PBX_LOG = "/var/log/pbx/kamailio.log"
PYTHON_IN = "/opt/sipdeflect/sipdeflect/bin/python"  # the tool's interpreter, in the container
TMPS = ("/tmp", "/var/tmp")  # the host's, checked untouched
NOBODY = 65534  # the PBX's log belongs to someone else, mode 0600 in a 0700 directory
# CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_NET_RAW (13): the unit's bounding set.
UNIT_CAPS = (1 << 2) | (1 << 12) | (1 << 13)
BLOCKED, ATTACKER, TRUNK, OFFICE = "203.0.113.9", "198.51.100.7", "192.0.2.10", "192.0.2.20"


@dataclass(frozen=True)
class Installed:
    tool_dir: Path  # the host directory that is /opt/sipdeflect in the container
    link: str  # what /usr/local/bin/sipdeflect points to


# README "Install on a PBX", step 2, with its /opt/sipdeflect a private mount of a directory
# of ours (an overlay on the host's /opt, in a mount namespace of uv's own): the tool gets
# the absolute paths a PBX gets, and the host's /opt and /usr/local/bin do not change.
_AT_OPT = (
    'mount -t tmpfs -o mode=0755 sdf-opt "$1" && mkdir "$1/u" "$1/w" && '
    'mount -t overlay -o lowerdir=/opt,upperdir="$1/u",workdir="$1/w" sdf-opt /opt && '
    'mkdir /opt/sipdeflect && mount --bind "$0" /opt/sipdeflect && shift && exec "$@"'
)


@pytest.fixture(scope="module")
def installed(dist: Path) -> Installed:  # noqa: F811 - the fixture imported from test_install
    out = dist / "systemd"
    wheel, _ = _build(out, _env())
    tool_dir, bin_dir, scratch = out / "opt-sipdeflect", out / "bin", out / "opt-layer"
    for d in (tool_dir, bin_dir, scratch):
        d.mkdir()
    _run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _AT_OPT,
         str(tool_dir), str(scratch),
         UV, "tool", "install", "-q", "--python", SYSTEM_PYTHON, "-c",
         str(dist / "constraints.txt"), str(wheel)],
        cwd=out,
        env=_env(UV_TOOL_DIR="/opt/sipdeflect", UV_TOOL_BIN_DIR=str(bin_dir)),
    )  # fmt: skip
    command = bin_dir / "sipdeflect"
    link = os.readlink(command)
    assert link == "/opt/sipdeflect/sipdeflect/bin/sipdeflect", link
    python = os.readlink(tool_dir / "sipdeflect" / "bin" / "python")
    assert not python.startswith(("/root/", "/home/")), python  # ProtectHome=yes hides those
    return Installed(tool_dir, link)


def _config(example: str, allow: list[str]) -> str:
    """`sipdeflect config example` with the allowlist and a followed Kamailio log."""
    addresses = "addresses = " + json.dumps(allow)
    assert "\naddresses = []\n" in example
    text = example.replace("\naddresses = []\n", f"\n{addresses}\n")
    # A deflected source that goes quiet is blocked after quiet_after: not during this test.
    assert '\nquiet_after = "15s"\n' in text
    text = text.replace('\nquiet_after = "15s"\n', '\nquiet_after = "10m"\n')
    return text + f'\n[[detect.logs]]\npath = "{PBX_LOG}"\nformat = "kamailio"\n'


@pytest.fixture
def container(installed: Installed) -> Iterator[Container]:
    # What an escaped systemd-tmpfiles would wipe first: the host's /tmp and /var/tmp.
    markers = []
    for d in TMPS:
        fd, name = tempfile.mkstemp(prefix="sdf-systemd-marker-", dir=d)
        os.close(fd)
        markers.append(Path(name))
    ct = Container(binds=[Bind(installed.tool_dir, "/opt/sipdeflect")])
    try:
        ct.link("usr/local/bin/sipdeflect", installed.link)  # UV_TOOL_BIN_DIR=/usr/local/bin
        log = ct.put(PBX_LOG, "", mode=0o600)
        log.parent.chmod(0o700)
        for p in (log, log.parent):
            os.chown(p, NOBODY, NOBODY)
        ct.boot()
        yield ct
    finally:
        ct.stop()
        survived = [m.exists() for m in markers]
        for m in markers:
            m.unlink(missing_ok=True)
    assert all(survived), f"the container touched the host: {markers}"


def _install_unit_and_config(ct: Container) -> None:
    """README "Install on a PBX", steps 3 and 5, inside the container."""
    sh = ["/bin/sh", "-c"]
    ct.run([*sh, "mkdir -p /etc/sipdeflect && sipdeflect config example > " + CONFIG])
    ct.path(CONFIG).write_text(_config(ct.path(CONFIG).read_text(), [TRUNK]))
    ct.run(["sipdeflect", "config", "check", CONFIG])
    ct.run([*sh, "sipdeflect config unit > /etc/systemd/system/sipdeflect.service"])
    installed = ct.path("/etc/systemd/system/sipdeflect.service").read_text()
    assert installed == UNIT.read_text()  # the repository's unit, unmodified, no drop-in
    ct.run(["systemctl", "daemon-reload"])


def _wait(ct: Container, what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            state = ct.run(
                ["systemctl", "status", "--no-pager", "-n", "0", "sipdeflect"], check=False
            )
            pytest.fail(f"timed out waiting for {what}: {state.stdout}\n{_journal(ct)}")
        time.sleep(0.1)


def _kernel(ct: Container) -> dict[str, set[str]] | None:
    """The table's sets in the namespace's kernel: allow/deflect/block -> addresses."""
    res = ct.run(["nft", "-j", "list", "table", "inet", "sipdeflect"], check=False)
    if res.returncode != 0:
        return None
    out: dict[str, set[str]] = {"allow": set(), "deflect": set(), "block": set()}
    for obj in json.loads(res.stdout)["nftables"]:
        s = obj.get("set")
        if s is None:
            continue
        m = re.match(r"[a-z]+", s["name"])
        assert m is not None, s["name"]
        if m.group() == "dropped":
            continue  # the meters of what the blocks drop (accounting), not a policy set
        assert m.group() in out, s["name"]
        for e in s.get("elem", []):
            v = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            if isinstance(v, dict) and "prefix" in v:
                v = f"{v['prefix']['addr']}/{v['prefix']['len']}"
            elif isinstance(v, dict) and "range" in v:
                v = "-".join(v["range"])
            out[m.group()].add(str(v))
    return out


def _sipdeflect(ct: Container, *argv: str) -> str:
    return ct.run(["/usr/local/bin/sipdeflect", *argv]).stdout


def _control(ct: Container, cmd: str, **args: str) -> dict[str, Any]:
    """One request over the control socket, from the installed package inside."""
    code = (
        "import json, sys; from sipdeflect.control import ControlClient; "
        f"print(json.dumps(ControlClient({SOCKET!r}).call(sys.argv[1], **json.loads(sys.argv[2]))))"
    )
    res = ct.run([PYTHON_IN, "-c", code, cmd, json.dumps(args)])
    reply: dict[str, Any] = json.loads(res.stdout)
    return reply


def _status(ct: Container) -> dict[str, Any] | None:
    res = ct.run(["/usr/local/bin/sipdeflect", "status", "--json"], check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def _main_pid(ct: Container) -> int:
    return int(ct.run(["systemctl", "show", "-p", "MainPID", "--value", "sipdeflect"]).stdout)


def _journal(ct: Container) -> str:
    return ct.run(["journalctl", "-u", "sipdeflect", "-o", "cat", "--no-pager"]).stdout


def _active(ct: Container) -> str:
    return ct.run(["systemctl", "is-active", "sipdeflect"], check=False).stdout.strip()


def _decoy(ct: Container) -> str:
    """UDP sockets bound to the decoy port (5070) in the namespace."""
    return ct.run(["ss", "-Hlun", "sport = :5070"]).stdout.strip()


def _kamailio_failures(source: str, n: int) -> str:
    """Failed logins after Kamailio's challenge, as its stderr logs them (README's xlog)."""
    return "".join(
        f" 1(7) WARNING: <script>: sipdeflect: auth-failed src={source} port=5060 "
        f"proto=tcp reason=wrong-password user=100{i} ua=pbx-guesser\n"
        for i in range(n)
    )


@pytest.mark.root
@needs_container
def test_the_unit_runs_under_systemd(netns_ok: None, container: Container) -> None:
    ct = container
    _install_unit_and_config(ct)
    # -- start ---------------------------------------------------------------------------
    ct.run(["systemctl", "start", "sipdeflect"])
    status = _wait(ct, "the control socket", lambda: _status(ct))
    assert _active(ct) == "active", _journal(ct)
    assert status["dry_run"] is False
    kernel = _kernel(ct)
    assert kernel is not None, _journal(ct)
    assert TRUNK in kernel["allow"], kernel

    # Only the unit's capabilities, no new privileges, a seccomp filter.
    pid = _main_pid(ct)
    fields = dict(
        line.split(":\t", 1) for line in ct.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines()
    )
    cmdline = ct.path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:3] == [PYTHON_IN.encode(), b"/usr/local/bin/sipdeflect", b"run"], cmdline
    where = ct.run([PYTHON_IN, "-c", "import sipdeflect; print(sipdeflect.__file__)"]).stdout
    assert where.startswith("/opt/sipdeflect/sipdeflect/lib/"), where  # not the checkout
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[cap], 16) == UNIT_CAPS, (cap, fields[cap])
    assert int(fields["CapInh"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    # ... in the test's network namespace, with the unit's directories.
    netns = ct.run(["readlink", f"/proc/{pid}/ns/net"]).stdout.strip()
    assert netns == f"net:[{os.stat(f'/run/netns/{ct.netns.name}').st_ino}]", netns
    assert ct.path("/var/lib/sipdeflect").stat().st_mode & 0o7777 == 0o750
    assert ct.path("/run/sipdeflect").stat().st_mode & 0o7777 == 0o700

    # -- decisions -------------------------------------------------------------------------
    reply = _control(ct, "block", target=BLOCKED, duration="1h", reason="systemd test")
    assert [d["action"] for d in reply["decisions"]] == ["block"], reply
    _wait(ct, "the block in the kernel", lambda: BLOCKED in (_kernel(ct) or {}).get("block", ()))
    # The daemon's own decision, from a log only CAP_DAC_READ_SEARCH lets it read.
    denied = ct.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "cat", PBX_LOG],
        check=False,
    )
    assert denied.returncode != 0, "root without DAC capabilities read the PBX log"
    assert "Permission denied" in denied.stderr, denied.stderr
    with ct.path(PBX_LOG).open("a") as f:
        f.write(_kamailio_failures(ATTACKER, 5))
    _wait(
        ct, "the deflect in the kernel", lambda: ATTACKER in (_kernel(ct) or {}).get("deflect", ())
    )
    shown = json.loads(_sipdeflect(ct, "show", ATTACKER, "--json"))
    assert shown["source"]["state"] == "deflected", shown

    # -- reload ----------------------------------------------------------------------------
    example = ct.path(CONFIG).read_text()
    ct.path(CONFIG).write_text(example.replace(json.dumps([TRUNK]), json.dumps([TRUNK, OFFICE])))
    ct.run(["systemctl", "reload", "sipdeflect"])
    _wait(ct, "the reload in the journal", lambda: "configuration reloaded" in _journal(ct))
    assert json.loads(_sipdeflect(ct, "show", OFFICE, "--json"))["protected"], "not allowlisted"
    _wait(
        ct,
        "the new allowlist in the kernel",
        lambda: OFFICE in (_kernel(ct) or {}).get("allow", ()),
    )
    assert _main_pid(ct) == pid  # reloaded, not restarted

    # -- stop: the kernel keeps the decisions (they lapse by their kernel timeouts), but the
    # decoy ran inside the daemon: a deflected source's SIP now meets a closed port.
    assert ":5070" in _decoy(ct)
    ct.run(["systemctl", "stop", "sipdeflect"])
    assert _active(ct) == "inactive", _journal(ct)
    assert not ct.path(SOCKET).exists()
    assert _decoy(ct) == ""
    kept = _kernel(ct)
    assert kept is not None, "stop removed the table"
    assert BLOCKED in kept["block"], kept
    assert ATTACKER in kept["deflect"], kept

    # -- restart from the StateDirectory alone ---------------------------------------------
    ct.run(["nft", "delete", "table", "inet", "sipdeflect"])
    assert ct.path("/var/lib/sipdeflect/state.db").is_file()
    ct.run(["systemctl", "start", "sipdeflect"])
    status = _wait(ct, "the control socket after the restart", lambda: _status(ct))
    assert status["active"]["block"] == 1, status
    assert status["active"]["deflect"] == 1, status
    back = _kernel(ct)
    assert back is not None
    assert BLOCKED in back["block"], back
    assert ATTACKER in back["deflect"], back
    assert {TRUNK, OFFICE} <= back["allow"], back

    # -- what the README says undoes everything: stop, then `sipdeflect firewall teardown`
    ct.run(["systemctl", "stop", "sipdeflect"])
    assert _kernel(ct) is not None
    _sipdeflect(ct, "firewall", "teardown")
    assert _kernel(ct) is None

    log = _journal(ct)  # journald inside: the unit's stdout and systemd's lines about it
    assert log.count("Started sipdeflect.service") == 2, log
    assert "Reloaded sipdeflect.service" in log, log
    assert "configuration reloaded" in log, log
    assert "Traceback" not in log, log


# -- the container's pure parts (run everywhere) ---------------------------------------------
def test_the_boot_script_leaves_the_host_alone() -> None:
    plan = BootPlan(
        base=Path("/var/tmp/sdf-ct-x"),
        console=Path("/var/tmp/sdf-ct-x/console.log"),
        binds=(Bind(Path("/srv/venv dir"), "/opt/sipdeflect"),),
    )
    script = boot_script(plan)
    lines = script.splitlines()
    assert lines[0] == "set -eu"
    # Writes go to a tmpfs upper layer over the host's root, in the container's mounts only.
    assert "mount -t tmpfs -o mode=0755 sdf-layer /var/tmp/sdf-ct-x/layer" in lines
    assert any(x.startswith("mount -t overlay -o lowerdir=/,upperdir=/var/tmp/sdf-ct-x/layer/")
               for x in lines)  # fmt: skip
    assert "mount -o remount,bind,ro /var/tmp/sdf-ct-x/root/proc/sys" in lines
    assert "mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /var/tmp/sdf-ct-x/root/sys" in lines
    for fresh in ("dev", "run", "tmp"):
        assert any(x.startswith("mount -t tmpfs") and x.endswith(f"/root/{fresh}") for x in lines)
    assert "mount --bind /dev/kmsg" not in script  # only the harmless device nodes
    # The bind is read-only, its path quoted.
    assert (
        "mount --bind '/srv/venv dir' /var/tmp/sdf-ct-x/root/opt/sipdeflect && "
        "mount -o remount,bind,ro /var/tmp/sdf-ct-x/root/opt/sipdeflect"
    ) in lines
    # No way back to the host's root, and PID 1 without the capabilities that reach past it.
    assert lines.index("pivot_root . .sdf-oldroot") < lines.index("umount -l /.sdf-oldroot")
    last = lines[-1]
    assert last.startswith("exec setpriv --bounding-set -sys_module,-sys_time,")
    assert last.endswith(f"/lib/systemd/systemd --unit={BOOT_TARGET}")
    assert "container=sipdeflect-test" in last


def test_the_base_layer_masks_what_the_host_enabled() -> None:
    files = base_layer(
        enabled=["kamailio.service", "fail2ban.service", "apt-daily.timer"],
        generators=["systemd-fstab-generator"],
        machine_id="ab" * 16,
        target=BOOT_TARGET,
    )
    for unit in ("kamailio.service", "fail2ban.service", "apt-daily.timer"):
        assert files[f"etc/systemd/system/{unit}"] == Link("/dev/null")
    assert files["etc/systemd/system-generators/systemd-fstab-generator"] == Link("/dev/null")
    assert files["etc/machine-id"] == "ab" * 16 + "\n"
    assert "Storage=volatile" in str(files["etc/systemd/journald.conf.d/sdf-test.conf"])
    assert "[Unit]" in str(files[f"etc/systemd/system/{BOOT_TARGET}"])


def test_cgroup2_root_hybrid_and_unified() -> None:
    hybrid = (
        "35 24 0:30 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755\n"
        "36 35 0:31 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n"
        "37 35 0:32 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd\n"
    )
    assert cgroup2_root(hybrid) == Path("/sys/fs/cgroup/unified")
    unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroup2_root(unified) == Path("/sys/fs/cgroup")
    assert cgroup2_root("30 24 0:26 / /sys/fs/cgroup rw - cgroup cgroup rw,cpu\n") is None
